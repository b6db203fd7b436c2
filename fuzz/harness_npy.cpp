// The .npy harness: the bytes as a header in memory (parse_npy_header) and as
// a file (read_npy_info, read_npy), then write_npy of what was read.
//
// Oracle: every failure is kfuse::Error of category io; parse_npy_header
// gives a data offset inside the bytes and past the header it announces;
// read_npy_info and read_npy agree (both succeed or both fail) and agree
// with parse_npy_header; a tensor that reads has exactly the file's data
// bytes after the header, in the header's shape and dtype; read_npy_rows of a
// row range gives the same bytes and rejects rows past the end; writing the
// tensor back and reading that gives the same shape, dtype and bytes.
#include <cstdio>
#include <cstring>
#include <optional>
#include <typeinfo>

#include <unistd.h>

#include "harness.hpp"
#include "harness_util.hpp"
#include "kfuse/npy.hpp"

namespace kfuse_fuzz {

namespace detail {
std::string& scratch_dir();
}

namespace {

using namespace kfuse;

std::string bad_category(const char* what, const Error& e) {
  return std::string(what) + " threw category " + to_string(e.category()) + " (expected io): " + e.what();
}

std::string check_impl(const uint8_t* data, std::size_t size) {
  std::optional<NpyInfo> mem;
  try {
    mem = parse_npy_header(data, size, "fuzz");
  } catch (const Error& e) {
    if (e.category() != ErrorCategory::io) return bad_category("parse_npy_header", e);
  }
  if (mem) {
    const std::size_t len_bytes = mem->major_version == 1 ? 2 : 4;
    if (mem->data_offset > size || mem->data_offset < 8 + len_bytes) return "parse_npy_header: data offset outside the bytes";
    for (int64_t e : mem->shape)
      if (e < 0) return "parse_npy_header: a negative extent";
  }

  const std::string path = detail::scratch_dir() + "/in.npy";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return "";  // the scratch directory is gone: nothing to test
    if (size > 0 && std::fwrite(data, 1, size, f) != size) {
      std::fclose(f);
      return "";
    }
    std::fclose(f);
  }
  std::optional<NpyInfo> info;
  std::optional<Tensor> t;
  try {
    info = read_npy_info(path);
  } catch (const Error& e) {
    if (e.category() != ErrorCategory::io) return bad_category("read_npy_info", e);
  }
  try {
    t = read_npy(path);
  } catch (const Error& e) {
    if (e.category() != ErrorCategory::io) return bad_category("read_npy", e);
  }
  if (info.has_value() != t.has_value()) return "read_npy_info and read_npy disagree on whether the file is valid";
  if (!t) {
    ++stats().clean_errors;
    return "";
  }
  if (!mem) return "read_npy reads a file whose header parse_npy_header rejects";
  if (mem->shape != info->shape || mem->dtype != info->dtype || mem->data_offset != info->data_offset)
    return "parse_npy_header and read_npy_info disagree";
  if (t->shape() != info->shape || t->dtype() != info->dtype) return "read_npy's tensor differs from the header";
  const std::size_t bytes = static_cast<std::size_t>(t->numel()) * size_of(t->dtype());
  if (info->data_offset + bytes > size) return "read_npy read past the end of the file";
  if (bytes > 0 && std::memcmp(t->view().data, data + info->data_offset, bytes) != 0)
    return "read_npy's data differs from the file's bytes";
  ++stats().runs;

  // read_npy_rows: every row range reads the same bytes as the whole file.
  if (t->shape().size() >= 1) {
    const int64_t rows = t->shape()[0];
    const std::size_t row_bytes = rows > 0 ? bytes / static_cast<std::size_t>(rows) : 0;
    const int64_t begin = rows / 3, end = rows - rows / 4;
    try {
      const Tensor part = read_npy_rows(path, begin, end);
      Shape want = t->shape();
      want[0] = end - begin;
      if (part.shape() != want || part.dtype() != t->dtype()) return "read_npy_rows: wrong shape or dtype";
      const std::size_t n = row_bytes * static_cast<std::size_t>(end - begin);
      if (n > 0 && std::memcmp(part.view().data, static_cast<const char*>(t->view().data) + row_bytes * begin, n) != 0)
        return "read_npy_rows: the rows differ from read_npy's";
    } catch (const Error& e) {
      return std::string("read_npy_rows fails on a file read_npy reads: ") + e.what();
    }
    try {
      (void)read_npy_rows(path, 0, rows + 1);
      return "read_npy_rows reads past the last row";
    } catch (const Error& e) {
      if (e.category() != ErrorCategory::io) return bad_category("read_npy_rows", e);
    }
  }

  const std::string out = detail::scratch_dir() + "/out.npy";
  try {
    write_npy(out, t->view());
    const Tensor back = read_npy(out);
    if (back.shape() != t->shape() || back.dtype() != t->dtype()) return "write_npy/read_npy round trip changes the header";
    if (bytes > 0 && std::memcmp(back.view().data, t->view().data, bytes) != 0) return "write_npy/read_npy round trip changes the data";
  } catch (const Error& e) {
    return std::string("write_npy of a tensor read_npy returned fails: ") + e.what();
  }
  return "";
}

}  // namespace

std::string check_npy(const uint8_t* data, std::size_t size) {
  ++stats().inputs;
  return guarded([&] { return check_impl(data, size); });
}

}  // namespace kfuse_fuzz
