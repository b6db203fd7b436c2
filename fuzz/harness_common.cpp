// Kokkos and the scratch directory for the harnesses.
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>

#include <unistd.h>

#include "harness.hpp"
#include "harness_util.hpp"
#include "kfuse/kokkos.hpp"
#include "kfuse/npy.hpp"

namespace kfuse_fuzz {

Stats& stats() {
  static Stats s;
  return s;
}

namespace detail {
std::string& scratch_dir() {
  static std::string dir;
  return dir;
}
}  // namespace detail

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (!Kokkos::is_initialized()) {
      Kokkos::initialize();
      std::atexit([] {
        if (Kokkos::is_initialized()) Kokkos::finalize();
      });
    }
    // A per-process directory with a few small .npy files that spec inputs
    // may name ("x.npy", "w.npy", "b.npy", "bad.npy"); the .npy harness
    // writes its inputs here too.
    const std::filesystem::path base =
        std::filesystem::exists("/dev/shm") ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
    const std::filesystem::path dir = base / ("kfuse_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    detail::scratch_dir() = dir.string();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(detail::scratch_dir(), ec);
    });
    auto write = [&](const char* name, kfuse::Shape shape, double scale) {
      kfuse::Tensor t = kfuse::Tensor::empty(shape, kfuse::DType::f32, kfuse::Memory::host);
      for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(scale * double(i % 7 - 3));
      kfuse::write_npy((dir / name).string(), t.view());
    };
    write("x.npy", {1, 2, 3, 3}, 0.25);
    write("w.npy", {2, 3, 2, 2}, 0.125);
    write("b.npy", {3}, 0.5);
    std::FILE* f = std::fopen((dir / "bad.npy").string().c_str(), "wb");
    if (f) {
      std::fputs("\x93NUMPY\x01", f);
      std::fclose(f);
    }
  });
}

}  // namespace kfuse_fuzz
