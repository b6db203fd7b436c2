# kfuse's spack recipe. Used from the environment at the repository root
# (spack.yaml: `repos: [./spack]`, kfuse@main developed from the checkout), or
# on its own: `spack repo add <kfuse>/spack && spack install kfuse+cuda cuda_arch=89`.
#
# Checked in CI without spack by spack/check_recipe.py: every variant must map
# to a CMake option of kfuse, and every option it sets must exist.
import os

from spack.package import *


class Kfuse(CMakePackage, CudaPackage):
    """Conv-transpose pipelines with fused reductions and epilogues at the
    memory floor: a C++17 library on Kokkos with hand-written CUDA kernels,
    a C API, a JSON pipeline format and the `kfuse` command."""

    # The checkout this recipe lives in (spack/packages/kfuse/ -> three levels up).
    git = "file://" + os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))

    version("main", branch="main")
    version("0.1.0", tag="v0.1.0")  # tag the release commit v0.1.0; the version is project() in CMakeLists.txt

    # cuda and cuda_arch come from CudaPackage.
    variant("cudnn", default=True, when="+cuda", description="Use cuDNN for conv_transpose2d on CUDA")
    variant("kokkos_kernels", default=True, description="The Kokkos path's conv_transpose2d as a GEMM (Kokkos Kernels)")
    variant("tests", default=False, description="Build the GoogleTest suite and the perf suites")
    variant("shared", default=True, description="Build libkfuse as a shared library")

    conflicts("cuda_arch=none", when="+cuda", msg="kfuse+cuda needs cuda_arch (89 for Ada, 90 for Hopper)")

    depends_on("cmake@3.20:", type="build")
    depends_on("cxx", type="build")
    depends_on("c", type="build")

    # Kokkos 3.4 (Debian 12's) through 4.x; 4.x built for C++17.
    depends_on("kokkos@3.4:4")
    depends_on("kokkos cxxstd=17", when="^kokkos@4:")
    # The Kokkos kernels run on the GPU with +cuda: Kokkos built for the same architectures.
    depends_on("kokkos+cuda", when="+cuda")
    depends_on("kokkos+cuda_lambda", when="+cuda ^kokkos@:3")
    for _arch in CudaPackage.cuda_arch_values:
        depends_on(f"kokkos cuda_arch={_arch}", when=f"+cuda cuda_arch={_arch}")

    # The GEMM through a BLAS on the host, through cuBLAS when Kokkos runs on CUDA.
    depends_on("kokkos-kernels@3.4:4+blas", when="+kokkos_kernels")
    depends_on("kokkos-kernels+cuda+cublas", when="+kokkos_kernels+cuda")

    depends_on("cuda@12:", when="+cuda")  # cudaLaunchKernelEx
    depends_on("cudnn@8:", when="+cudnn")  # the cuDNN 7/8 convolution API, kept in 9

    depends_on("nlohmann-json@3.11:", type="build")  # header-only, private to libkfuse
    depends_on("cli11@2.1:", type="build")  # header-only, the kfuse command only
    depends_on("googletest@1.12:", when="+tests")
    depends_on("benchmark@1.7:", when="+tests")

    def setup_build_environment(self, env):
        if self.spec.satisfies("+cudnn"):
            # backends/cuda/CMakeLists.txt looks for cudnn.h and libcudnn under CUDNN_ROOT.
            env.set("CUDNN_ROOT", self.spec["cudnn"].prefix)

    def cmake_args(self):
        spec = self.spec
        args = [
            # Kokkos code is compiled by the compiler Kokkos asks for (nvcc_wrapper for kokkos+cuda+wrapper).
            self.define("CMAKE_CXX_COMPILER", spec["kokkos"].kokkos_cxx),
            self.define_from_variant("KFUSE_ENABLE_CUDA", "cuda"),
            self.define_from_variant("KFUSE_ENABLE_CUDNN", "cudnn"),
            self.define_from_variant("KFUSE_ENABLE_KOKKOS_KERNELS", "kokkos_kernels"),
            self.define_from_variant("KFUSE_ENABLE_TESTS", "tests"),
            self.define_from_variant("KFUSE_ENABLE_PERF", "tests"),
            self.define_from_variant("KFUSE_ENABLE_GPU_PERF", "tests"),
            self.define_from_variant("BUILD_SHARED_LIBS", "shared"),
        ]
        if spec.satisfies("+cuda"):
            args.append(self.define("CMAKE_CUDA_ARCHITECTURES", ";".join(spec.variants["cuda_arch"].value)))
        return [a for a in args if a]  # define_from_variant gives "" for cudnn without +cuda
