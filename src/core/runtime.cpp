#include "kfuse/runtime.hpp"

#include <mutex>

#include "kfuse/kokkos.hpp"

namespace kfuse {

namespace {
std::mutex g_mutex;
bool g_we_initialized = false;
}  // namespace

void initialize() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (Kokkos::is_initialized()) return;
  Kokkos::initialize();
  g_we_initialized = true;
}

void finalize() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_we_initialized && Kokkos::is_initialized()) Kokkos::finalize();
  g_we_initialized = false;
}

bool is_initialized() { return Kokkos::is_initialized(); }

}  // namespace kfuse
