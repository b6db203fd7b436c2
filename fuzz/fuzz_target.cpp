// The libFuzzer entry points: one executable per harness (KFUSE_FUZZ_TARGET
// is check_spec, check_npy or check_pipeline). A harness's complaint is a
// crash: it is printed and the process aborts, so that libFuzzer saves the
// input (crash-<sha1>). Add every such input to fuzz/regressions/<target>/:
// the test suite replays them (tests/test_fuzz_corpus.cpp).
#include <cstdio>
#include <cstdlib>
#include <string>

#include "harness.hpp"

#ifndef KFUSE_FUZZ_TARGET
#error "define KFUSE_FUZZ_TARGET (check_spec, check_npy or check_pipeline)"
#endif

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  kfuse_fuzz::init();
  // How the inputs ended (with -print_final_stats=1, or KFUSE_FUZZ_STATS=1).
  std::atexit([] {
    const kfuse_fuzz::Stats& s = kfuse_fuzz::stats();
    std::fprintf(stderr,
                 "==kfuse fuzz== inputs %llu: clean errors %llu, plans %llu, runs %llu, compared with the reference %llu\n",
                 (unsigned long long)s.inputs, (unsigned long long)s.clean_errors, (unsigned long long)s.plans,
                 (unsigned long long)s.runs, (unsigned long long)s.compared);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bug = kfuse_fuzz::KFUSE_FUZZ_TARGET(data, size);
  if (!bug.empty()) {
    std::fprintf(stderr, "\n==kfuse fuzz== BUG: %s\n", bug.c_str());
    std::fflush(stderr);
    std::abort();
  }
  return 0;
}
