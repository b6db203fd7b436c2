// kfuse needs Kokkos initialised. These initialise it only when the
// application has not already done so, and finalise only what they started.
#pragma once

namespace kfuse {

void initialize();
void finalize();
bool is_initialized();

// RAII: kfuse::ScopeGuard guard; at the top of main().
struct ScopeGuard {
  ScopeGuard() { initialize(); }
  ~ScopeGuard() { finalize(); }
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
};

}  // namespace kfuse
