// The fuzz harnesses: one function per target that takes the fuzzer's bytes
// and returns "" when the outcome is allowed, or a description of the bug.
//
// Allowed outcomes: a valid result, or a kfuse::Error (a clean error).
// Bugs: any other exception, a result that breaks the target's oracle (see
// each .cpp), and (caught by the sanitizers, not here) crashes, out-of-bounds
// accesses, leaks and undefined behaviour.
//
// The same functions are linked into libFuzzer targets (fuzz_target.cpp, built
// with clang under KFUSE_ENABLE_FUZZ) and into the GoogleTest suite, which
// replays the seed corpora and every saved crash (fuzz/corpus/<target>/,
// fuzz/regressions/<target>/) under any compiler, sanitizers included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kfuse_fuzz {

// Initialises Kokkos (once per process) and the scratch directory the spec and
// .npy harnesses use. Call before any check_*.
void init();

// The JSON spec parser: parse_spec on the bytes, then a plan and (when the
// pipeline is small) a run of it on the spec's own input.
std::string check_spec(const uint8_t* data, std::size_t size);

// The .npy reader: parse_npy_header on the bytes, then read_npy_info and
// read_npy on the bytes written to a file; a file that reads must give back
// exactly its data bytes, and write_npy of it must read back equal.
std::string check_npy(const uint8_t* data, std::size_t size);

// The pipeline builder: bytes -> an input shape, an optional
// conv_transpose2d, a chain of ops with parameters and operands, plan options
// and an input layout. Every step either succeeds or throws kfuse::Error; a
// small valid pipeline runs under every strategy that applies, fold and fused
// compared with the reference strategy (see harness_pipeline.cpp for the oracle).
std::string check_pipeline(const uint8_t* data, std::size_t size);

// Counters for the report (how many inputs reached each outcome).
struct Stats {
  uint64_t inputs = 0, clean_errors = 0, plans = 0, runs = 0, compared = 0;
};
Stats& stats();

}  // namespace kfuse_fuzz
