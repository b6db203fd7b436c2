// The test binary's entry point: Kokkos is initialized once, around every test.
#include <gtest/gtest.h>

#include "kfuse/kokkos.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  Kokkos::ScopeGuard kokkos(argc, argv);
  return RUN_ALL_TESTS();
}
