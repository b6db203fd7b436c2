// NumPy .npy files: read format versions 1.0, 2.0 and 3.0, write 1.0.
// float32 ('<f4') and float64 ('<f8'), C order, host tensors.
//
//   kfuse::Tensor x = kfuse::read_npy("x.npy");
//   kfuse::write_npy("out.npy", out);   // any host view; strided views are written in C order
//
// Every failure is a kfuse::Error of category io whose message names the file:
// "npy: x.npy: truncated data: expected 4096 bytes, got 1000"; a directory
// given as a file is reported as one.
#pragma once

#include <cstdint>
#include <string>

#include "kfuse/tensor.hpp"

namespace kfuse {

// What a .npy header says, without the data.
struct NpyInfo {
  DType dtype = DType::f32;
  Shape shape;                  // () for a 0-d array
  int major_version = 1;        // 1, 2 or 3
  std::size_t data_offset = 0;  // bytes from the start of the file to the data
};

// Reads and checks the header only (the data's length is checked too).
NpyInfo read_npy_info(const std::string& path);

// Reads the whole array into a new row-major host tensor of the file's dtype.
Tensor read_npy(const std::string& path);

// Reads rows [begin, end) along axis 0 only (the bytes of that slice, not the
// whole file): shape [end - begin, shape[1:]...]. For one rank's part of a
// batch; 0 <= begin <= end <= shape[0], and the array must have rank >= 1.
Tensor read_npy_rows(const std::string& path, int64_t begin, int64_t end);

// Writes a host view (any strides) as a format 1.0 C-order .npy file.
// float32 and float64 only. A view in CUDA memory is copied to the host first.
// Atomic: the data go to a temporary file in the same directory, renamed to
// `path` once complete, so a failed write (a full disk) leaves a previous
// `path` as it was and no partial file.
void write_npy(const std::string& path, const TensorView& t);

// Whether write_npy could create `path`, checked without writing it: not
// empty, not a directory, in an existing directory this process may write.
// For checking an output before the work that produces it.
void check_output_path(const std::string& path);

// Parses a header from memory: `bytes` are the first `size` bytes of a file
// (at least the whole header). `name` is used in error messages. Exposed for tests.
NpyInfo parse_npy_header(const unsigned char* bytes, std::size_t size, const std::string& name);

}  // namespace kfuse
