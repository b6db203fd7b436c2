#include "kfuse/npy.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kfuse/error.hpp"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kfuse's .npy reader and writer assume a little-endian host"
#endif

namespace kfuse {

namespace {

constexpr unsigned char kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] void io_fail(const std::string& name, const std::string& what) {
  throw Error(ErrorCategory::io, "npy: " + name + ": " + what);
}

std::string describe_char(char c) {
  if (c >= 32 && c < 127) return std::string("'") + c + "'";
  char buf[16];
  std::snprintf(buf, sizeof buf, "byte 0x%02x", static_cast<unsigned char>(c));
  return buf;
}

// A recursive-descent parser for the Python literal NumPy writes as the
// header: {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
class HeaderParser {
 public:
  HeaderParser(std::string text, std::string name) : s_(std::move(text)), name_(std::move(name)) {}

  NpyInfo parse() {
    std::string descr;
    bool fortran = false;
    Shape shape;
    bool have_descr = false, have_fortran = false, have_shape = false;
    ws();
    expect('{');
    ws();
    while (peek() != '}') {
      const std::string key = string_literal();
      ws();
      expect(':');
      ws();
      if (key == "descr") {
        if (peek() != '\'' && peek() != '"') bad("'descr' must be a string such as '<f4'");
        descr = string_literal();
        have_descr = true;
      } else if (key == "fortran_order") {
        fortran = boolean();
        have_fortran = true;
      } else if (key == "shape") {
        shape = tuple();
        have_shape = true;
      } else {
        bad("unexpected key '" + key + "' (a .npy header has descr, fortran_order and shape)");
      }
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != '}') {
        bad("expected ',' or '}' at offset " + std::to_string(i_) + ", got " + got());
      }
    }
    ++i_;
    // Only padding may follow the dict.
    for (; i_ < s_.size(); ++i_)
      if (s_[i_] != ' ' && s_[i_] != '\n' && s_[i_] != '\t' && s_[i_] != '\r' && s_[i_] != '\0')
        bad("unexpected " + describe_char(s_[i_]) + " after the header dict at offset " + std::to_string(i_));
    if (!have_descr) bad("the header has no 'descr'");
    if (!have_fortran) bad("the header has no 'fortran_order'");
    if (!have_shape) bad("the header has no 'shape'");

    NpyInfo info;
    if (descr == "<f4") {
      info.dtype = DType::f32;
    } else if (descr == "<f8") {
      info.dtype = DType::f64;
    } else {
      io_fail(name_, "unsupported dtype '" + descr + "' (supported: '<f4' float32, '<f8' float64)");
    }
    if (fortran)
      io_fail(name_, "fortran_order is True; only C-order arrays are supported "
                     "(save with np.ascontiguousarray)");
    if (shape.size() > static_cast<std::size_t>(kMaxRank))  // no kfuse op takes it
      io_fail(name_, "rank " + std::to_string(shape.size()) + " exceeds kfuse's maximum rank " + std::to_string(kMaxRank));
    info.shape = std::move(shape);
    return info;
  }

 private:
  [[noreturn]] void bad(const std::string& what) { io_fail(name_, "malformed header: " + what); }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  std::string got() const { return i_ < s_.size() ? describe_char(s_[i_]) : std::string("the end"); }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  void expect(char c) {
    if (peek() != c) bad(std::string("expected '") + c + "' at offset " + std::to_string(i_) + ", got " + got());
    ++i_;
  }
  std::string string_literal() {
    const char q = peek();
    if (q != '\'' && q != '"') bad("expected a quoted key at offset " + std::to_string(i_) + ", got " + got());
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) {
      if (s_[i_] == '\\' && i_ + 1 < s_.size()) ++i_;
      out += s_[i_++];
    }
    if (i_ >= s_.size()) bad("unterminated string");
    ++i_;
    return out;
  }
  bool boolean() {
    if (s_.compare(i_, 4, "True") == 0) {
      i_ += 4;
      return true;
    }
    if (s_.compare(i_, 5, "False") == 0) {
      i_ += 5;
      return false;
    }
    bad("'fortran_order' must be True or False, got " + got());
  }
  Shape tuple() {
    expect('(');
    ws();
    Shape out;
    while (peek() != ')') {
      if (!(peek() >= '0' && peek() <= '9'))
        bad("expected a non-negative integer in 'shape' at offset " + std::to_string(i_) + ", got " + got());
      uint64_t v = 0;
      while (peek() >= '0' && peek() <= '9') {
        const uint64_t d = static_cast<uint64_t>(s_[i_] - '0');
        if (v > (static_cast<uint64_t>(INT64_MAX) - d) / 10) bad("an extent in 'shape' exceeds 2^63-1");
        v = v * 10 + d;
        ++i_;
      }
      if (peek() == 'L' || peek() == 'l') ++i_;  // Python 2 long
      out.push_back(static_cast<int64_t>(v));
      ws();
      if (peek() == ',') {
        ++i_;
        ws();
      } else if (peek() != ')') {
        bad("expected ',' or ')' in 'shape' at offset " + std::to_string(i_) + ", got " + got());
      }
    }
    ++i_;
    return out;
  }

  std::string s_;
  std::string name_;
  std::size_t i_ = 0;
};

struct FileCloser {
  void operator()(std::FILE* f) const { if (f) std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

File open_file(const std::string& path, const char* mode, const char* what) {
  errno = 0;
  File f(std::fopen(path.c_str(), mode));
  if (!f) io_fail(path, std::string("cannot open for ") + what + ": " + std::strerror(errno));
  // fopen opens a directory for reading; its reads then fail as if the file were empty.
  struct stat st;
  if (::fstat(::fileno(f.get()), &st) == 0 && S_ISDIR(st.st_mode)) io_fail(path, "is a directory, not a .npy file");
  return f;
}

uint64_t file_size(std::FILE* f, const std::string& path) {
  if (std::fseek(f, 0, SEEK_END) != 0) io_fail(path, std::string("cannot seek: ") + std::strerror(errno));
  const long long n = ftello(f);
  if (n < 0) io_fail(path, std::string("cannot tell the file size: ") + std::strerror(errno));
  if (std::fseek(f, 0, SEEK_SET) != 0) io_fail(path, std::string("cannot seek: ") + std::strerror(errno));
  return static_cast<uint64_t>(n);
}

void read_exact(std::FILE* f, void* dst, std::size_t n, const std::string& path) {
  std::size_t done = 0;
  auto* p = static_cast<unsigned char*>(dst);
  while (done < n) {
    const std::size_t chunk = std::min<std::size_t>(n - done, std::size_t(1) << 28);
    const std::size_t got = std::fread(p + done, 1, chunk, f);
    if (got == 0) {
      if (std::ferror(f)) io_fail(path, std::string("read error: ") + std::strerror(errno));
      io_fail(path, "truncated data: expected " + std::to_string(n) + " bytes, got " + std::to_string(done));
    }
    done += got;
  }
}

void write_exact(std::FILE* f, const void* src, std::size_t n, const std::string& path) {
  if (n == 0) return;
  if (std::fwrite(src, 1, n, f) != n) io_fail(path, std::string("write error: ") + std::strerror(errno));
}

// Reads the header; leaves `f` positioned at the data.
NpyInfo read_header(std::FILE* f, uint64_t size, const std::string& path) {
  unsigned char pre[12] = {};
  const std::size_t n = std::fread(pre, 1, std::min<uint64_t>(size, sizeof pre), f);
  if (n < 6 || std::memcmp(pre, kMagic, 6) != 0)
    io_fail(path, "not a .npy file (bad magic: the file must start with \\x93NUMPY)");
  if (n < 10) io_fail(path, "truncated header: the file has only " + std::to_string(size) + " bytes");
  const int major = pre[6];
  if (major < 1 || major > 3) parse_npy_header(pre, n, path);  // throws: unsupported version
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (major >= 2 && n < 12) io_fail(path, "truncated header: the file has only " + std::to_string(size) + " bytes");
  uint64_t header_len = pre[8] | (uint64_t(pre[9]) << 8);
  if (len_bytes == 4) header_len |= (uint64_t(pre[10]) << 16) | (uint64_t(pre[11]) << 24);
  const uint64_t total = 8 + len_bytes + header_len;
  if (total > size)
    io_fail(path, "truncated header: the header needs " + std::to_string(total) + " bytes, the file has " +
                      std::to_string(size));
  std::vector<unsigned char> buf(std::max<uint64_t>(total, n));
  std::memcpy(buf.data(), pre, n);
  if (total > n) read_exact(f, buf.data() + n, total - n, path);
  NpyInfo info = parse_npy_header(buf.data(), buf.size(), path);
  std::fseek(f, static_cast<long>(info.data_offset), SEEK_SET);
  return info;
}

uint64_t data_bytes(const NpyInfo& info, const std::string& path) {
  int64_t numel = 1;
  for (int64_t e : info.shape) {
    if (e != 0 && numel > INT64_MAX / e) io_fail(path, "shape " + to_string(info.shape) + " has more than 2^63-1 elements");
    numel *= e;
  }
  const uint64_t es = size_of(info.dtype);
  if (static_cast<uint64_t>(numel) > UINT64_MAX / es) io_fail(path, "shape " + to_string(info.shape) + " is too large");
  return static_cast<uint64_t>(numel) * es;
}

void check_data_length(const NpyInfo& info, uint64_t size, const std::string& path) {
  const uint64_t want = data_bytes(info, path);
  const uint64_t have = size - info.data_offset;
  if (have < want)
    io_fail(path, "truncated data: expected " + std::to_string(want) + " bytes for shape " + to_string(info.shape) +
                      " " + to_string(info.dtype) + ", got " + std::to_string(have));
}

std::string header_text(const TensorView& t) {
  std::string shape = "(";
  for (std::size_t i = 0; i < t.shape.size(); ++i) {
    shape += std::to_string(t.shape[i]);
    if (i + 1 < t.shape.size() || t.shape.size() == 1) shape += ",";
    if (i + 1 < t.shape.size()) shape += " ";
  }
  shape += ")";
  std::string h = std::string("{'descr': '") + (t.dtype == DType::f32 ? "<f4" : "<f8") +
                  "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Pad with spaces so that magic + version + length + header is a multiple of 64, ending in '\n'.
  const std::size_t pre = 10;
  const std::size_t total = ((pre + h.size() + 1 + 63) / 64) * 64;
  h.append(total - pre - h.size() - 1, ' ');
  h += '\n';
  return h;
}

// A new file beside `path` (same directory, so that rename() replaces `path`
// atomically), created with O_EXCL and the umask's permissions as fopen gives;
// removed on destruction unless `path` is cleared.
struct TempFile {
  std::string path;
  std::FILE* file = nullptr;
  explicit TempFile(const std::string& target) {
    for (int attempt = 0;; ++attempt) {
      path = target + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(attempt);
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
      if (fd < 0 && errno == EEXIST && attempt < 100) continue;
      if (fd < 0) {
        const std::string why = std::strerror(errno);
        path.clear();  // not ours to remove
        io_fail(target, "cannot create a temporary file beside it: " + why);
      }
      file = ::fdopen(fd, "wb");
      if (file) return;
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(path.c_str());
      path.clear();
      io_fail(target, "cannot open a temporary file beside it: " + why);
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    if (!path.empty()) ::unlink(path.c_str());
  }
};

}  // namespace

NpyInfo parse_npy_header(const unsigned char* bytes, std::size_t size, const std::string& name) {
  if (size < 6 || std::memcmp(bytes, kMagic, 6) != 0)
    io_fail(name, "not a .npy file (bad magic: the file must start with \\x93NUMPY)");
  if (size < 10) io_fail(name, "truncated header: only " + std::to_string(size) + " bytes");
  const int major = bytes[6], minor = bytes[7];
  if (major < 1 || major > 3)
    io_fail(name, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                      " (supported: 1.0, 2.0, 3.0)");
  const std::size_t len_bytes = major == 1 ? 2 : 4;
  if (size < 8 + len_bytes) io_fail(name, "truncated header: only " + std::to_string(size) + " bytes");
  uint64_t header_len = bytes[8] | (uint64_t(bytes[9]) << 8);
  if (len_bytes == 4) header_len |= (uint64_t(bytes[10]) << 16) | (uint64_t(bytes[11]) << 24);
  const uint64_t total = 8 + len_bytes + header_len;
  if (total > size)
    io_fail(name, "truncated header: the header needs " + std::to_string(total) + " bytes, got " + std::to_string(size));
  // Version 3.0 headers are UTF-8; the keys and values we accept are ASCII either way.
  std::string text(reinterpret_cast<const char*>(bytes) + 8 + len_bytes, header_len);
  NpyInfo info = HeaderParser(std::move(text), name).parse();
  info.major_version = major;
  info.data_offset = static_cast<std::size_t>(total);
  return info;
}

NpyInfo read_npy_info(const std::string& path) {
  File f = open_file(path, "rb", "reading");
  const uint64_t size = file_size(f.get(), path);
  NpyInfo info = read_header(f.get(), size, path);
  check_data_length(info, size, path);
  return info;
}

Tensor read_npy(const std::string& path) {
  File f = open_file(path, "rb", "reading");
  const uint64_t size = file_size(f.get(), path);
  const NpyInfo info = read_header(f.get(), size, path);
  check_data_length(info, size, path);
  Tensor t = Tensor::empty(info.shape, info.dtype, Memory::host);
  const uint64_t n = data_bytes(info, path);
  if (n > 0) read_exact(f.get(), t.view().data, static_cast<std::size_t>(n), path);
  return t;
}

Tensor read_npy_rows(const std::string& path, int64_t begin, int64_t end) {
  File f = open_file(path, "rb", "reading");
  const uint64_t size = file_size(f.get(), path);
  const NpyInfo info = read_header(f.get(), size, path);
  check_data_length(info, size, path);
  if (info.shape.empty()) io_fail(path, "a 0-d array has no rows to slice");
  if (begin < 0 || end < begin || end > info.shape[0])
    io_fail(path, "rows [" + std::to_string(begin) + ", " + std::to_string(end) + ") are outside [0, " +
                      std::to_string(info.shape[0]) + ") of shape " + to_string(info.shape));
  Shape shape = info.shape;
  shape[0] = end - begin;
  Tensor t = Tensor::empty(shape, info.dtype, Memory::host);
  const uint64_t row_bytes = info.shape[0] > 0 ? data_bytes(info, path) / static_cast<uint64_t>(info.shape[0]) : 0;
  const uint64_t n = row_bytes * static_cast<uint64_t>(end - begin);
  if (n > 0) {
    const uint64_t at = info.data_offset + row_bytes * static_cast<uint64_t>(begin);
    if (fseeko(f.get(), static_cast<off_t>(at), SEEK_SET) != 0)
      io_fail(path, std::string("cannot seek to byte ") + std::to_string(at) + ": " + std::strerror(errno));
    read_exact(f.get(), t.view().data, static_cast<std::size_t>(n), path);
  }
  return t;
}

void write_npy(const std::string& path, const TensorView& t) {
  check_view(t, "write_npy", path);
  if (t.dtype != DType::f32 && t.dtype != DType::f64)
    io_fail(path, std::string("cannot write dtype ") + to_string(t.dtype) + " (supported: float32, float64)");
  if (t.memory != Memory::host) {
    const Tensor host = Tensor::copy_of(t, Memory::host);
    return write_npy(path, host.view());
  }
  const std::string header = header_text(t);  // the dict, padded; without the 10-byte preamble
  if (header.size() > 65535) io_fail(path, "header too long for format 1.0");
  check_output_path(path);
  // Written to a new file beside `path`, renamed over it once complete: a
  // failed write leaves the previous file as it was.
  TempFile tmp(path);
  File f(tmp.file);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const unsigned char pre[10] = {kMagic[0], kMagic[1], kMagic[2], kMagic[3], kMagic[4], kMagic[5], 1, 0,
                                 static_cast<unsigned char>(len & 0xff), static_cast<unsigned char>(len >> 8)};
  write_exact(f.get(), pre, sizeof pre, path);
  write_exact(f.get(), header.data(), header.size(), path);
  const int64_t numel = t.numel();
  const std::size_t es = size_of(t.dtype);
  if (numel > 0) {
    if (t.is_contiguous()) {
      write_exact(f.get(), t.data, static_cast<std::size_t>(numel) * es, path);
    } else {
      // Strided: gather C-order chunks into a buffer.
      const Indexer ix = make_indexer(t.shape, t.strides);
      const auto* src = static_cast<const unsigned char*>(t.data);
      const int64_t chunk = 1 << 16;
      std::vector<unsigned char> buf(static_cast<std::size_t>(std::min(chunk, numel)) * es);
      for (int64_t b = 0; b < numel; b += chunk) {
        const int64_t e = std::min(numel, b + chunk);
        for (int64_t i = b; i < e; ++i)  // signed byte offsets: strides may be negative
          std::memcpy(buf.data() + (i - b) * es, src + ix.offset(i) * static_cast<int64_t>(es), es);
        write_exact(f.get(), buf.data(), static_cast<std::size_t>(e - b) * es, path);
      }
    }
  }
  if (std::fflush(f.get()) != 0 || ::fsync(::fileno(f.get())) != 0)
    io_fail(path, std::string("write error: ") + std::strerror(errno));
  std::FILE* raw = f.release();
  if (std::fclose(raw) != 0) io_fail(path, std::string("write error on close: ") + std::strerror(errno));
  if (std::rename(tmp.path.c_str(), path.c_str()) != 0)
    io_fail(path, "cannot rename " + tmp.path + " to it: " + std::strerror(errno));
  tmp.path.clear();
}

void check_output_path(const std::string& path) {
  if (path.empty()) io_fail("''", "an empty output path");
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) io_fail(path, "is a directory; give a file name");
  const fs::path dir = fs::path(path).has_parent_path() ? fs::path(path).parent_path() : fs::path(".");
  if (!fs::is_directory(dir, ec))
    io_fail(path, "cannot write: the directory " + dir.string() + (fs::exists(dir, ec) ? " is not a directory" : " does not exist"));
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    io_fail(path, "cannot write in the directory " + dir.string() + ": " + std::strerror(errno));
}

}  // namespace kfuse
