// The test binary's entry point: Kokkos is initialized once, around every test,
// and every new tensor starts as NaN, so that an output element an op or a
// plan never writes fails its comparison.
#include <gtest/gtest.h>

#include "kfuse/kokkos.hpp"
#include "kfuse/tensor.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  Kokkos::ScopeGuard kokkos(argc, argv);
  kfuse::set_poison_new_tensors(true);
  return RUN_ALL_TESTS();
}
