// .npy reading and writing: round trips (float32/float64, 0-d, 1-d, empty,
// strided views), the other format versions NumPy writes, and every error,
// each on files written into a temporary directory.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kfuse/npy.hpp"

namespace kfuse_test {
namespace {

namespace fs = std::filesystem;
using kfuse::DType;
using kfuse::ErrorCategory;
using kfuse::Shape;
using kfuse::Tensor;

class Npy : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("kfuse_test_npy_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes raw bytes.
  std::string raw(const std::string& name, const std::string& bytes) const {
    const std::string p = path(name);
    std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }

  // A file with the given header dict, format version and data bytes; the
  // header is padded to a multiple of 64 like NumPy's.
  std::string npy(const std::string& name, const std::string& dict, int major, std::size_t data_bytes,
                  int minor = 0) const {
    std::string h = dict;
    const std::size_t pre = major == 1 ? 10 : 12;
    while ((pre + h.size() + 1) % 64) h += ' ';
    h += '\n';
    std::string b = "\x93NUMPY";
    b += static_cast<char>(major);
    b += static_cast<char>(minor);
    const uint32_t len = static_cast<uint32_t>(h.size());
    b += static_cast<char>(len & 0xff);
    b += static_cast<char>((len >> 8) & 0xff);
    if (major != 1) {
      b += static_cast<char>((len >> 16) & 0xff);
      b += static_cast<char>((len >> 24) & 0xff);
    }
    b += h;
    for (std::size_t i = 0; i < data_bytes; ++i) b += static_cast<char>(i * 7 + 1);
    return raw(name, b);
  }

  fs::path dir_;
};

template <class T>
Tensor filled(const Shape& shape) {
  Tensor t = Tensor::empty(shape, kfuse::dtype_of<T>(), kfuse::Memory::host);
  T* p = t.data<T>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<T>(0.25 * static_cast<double>(i) - 3.0 + 1e-3 * (i % 7));
  return t;
}

template <class T>
void expect_equal(const Tensor& a, const Tensor& b) {
  ASSERT_EQ(a.shape(), b.shape());
  ASSERT_EQ(a.dtype(), b.dtype());
  for (int64_t i = 0; i < a.numel(); ++i) ASSERT_EQ(a.data<T>()[i], b.data<T>()[i]) << "element " << i;
}

// Expects read_npy(p) to throw io with every fragment in the message, and the file's name.
void expect_io_error(const std::string& p, const std::vector<std::string>& fragments) {
  try {
    kfuse::read_npy(p);
    FAIL() << "no error reading " << p;
  } catch (const kfuse::Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::io) << e.what();
    const std::string m = e.what();
    EXPECT_NE(m.find(p), std::string::npos) << "the message does not name the file: " << m;
    for (const auto& f : fragments) EXPECT_NE(m.find(f), std::string::npos) << "'" << f << "' not in: " << m;
  }
}

TEST_F(Npy, RoundTripFloat32AndFloat64AllRanks) {
  const std::vector<Shape> shapes = {{}, {1}, {7}, {2, 3}, {3, 1, 5}, {2, 3, 4, 5}, {1, 2, 1, 2, 1, 2, 1, 2}};
  for (const Shape& s : shapes) {
    const Tensor a = filled<float>(s);
    kfuse::write_npy(path("a.npy"), a);
    expect_equal<float>(a, kfuse::read_npy(path("a.npy")));
    const Tensor b = filled<double>(s);
    kfuse::write_npy(path("b.npy"), b);
    expect_equal<double>(b, kfuse::read_npy(path("b.npy")));
  }
}

TEST_F(Npy, RoundTripEmptyArrays) {
  for (const Shape& s : std::vector<Shape>{{0}, {3, 0}, {2, 0, 4}}) {
    const Tensor a = Tensor::empty(s, DType::f32, kfuse::Memory::host);
    kfuse::write_npy(path("e.npy"), a);
    const Tensor r = kfuse::read_npy(path("e.npy"));
    EXPECT_EQ(r.shape(), s);
    EXPECT_EQ(r.numel(), 0);
    EXPECT_EQ(fs::file_size(path("e.npy")), kfuse::read_npy_info(path("e.npy")).data_offset);
  }
}

TEST_F(Npy, WrittenHeaderIsNumpyFormat10Aligned) {
  kfuse::write_npy(path("h.npy"), filled<float>({5}));
  std::ifstream in(path("h.npy"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(bytes.substr(0, 6), std::string("\x93NUMPY"));
  EXPECT_EQ(bytes[6], 1);
  EXPECT_EQ(bytes[7], 0);
  const std::size_t len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  EXPECT_EQ((10 + len) % 64, 0u);
  const std::string header = bytes.substr(10, len);
  EXPECT_EQ(header.back(), '\n');
  EXPECT_NE(header.find("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"), std::string::npos) << header;
  EXPECT_EQ(bytes.size(), 10 + len + 5 * 4);

  kfuse::write_npy(path("s.npy"), filled<double>({}));
  const kfuse::NpyInfo info = kfuse::read_npy_info(path("s.npy"));
  EXPECT_EQ(info.shape, Shape{});
  EXPECT_EQ(info.dtype, DType::f64);
  EXPECT_EQ(info.major_version, 1);
  EXPECT_EQ(info.data_offset % 64, 0u);
}

TEST_F(Npy, StridedViewIsWrittenInCOrder) {
  // A transposed [3, 4] view of a [4, 3] tensor, and every other column.
  const Tensor base = filled<float>({4, 3});
  const kfuse::TensorView tv(base.view().data, DType::f32, {3, 4}, {1, 3}, kfuse::Memory::host);
  kfuse::write_npy(path("t.npy"), tv);
  const Tensor r = kfuse::read_npy(path("t.npy"));
  ASSERT_EQ(r.shape(), (Shape{3, 4}));
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) EXPECT_EQ(r.data<float>()[i * 4 + j], base.data<float>()[j * 3 + i]);

  const Tensor wide = filled<double>({2, 6});
  const kfuse::TensorView every_other(wide.view().data, DType::f64, {2, 3}, {6, 2}, kfuse::Memory::host);
  kfuse::write_npy(path("e.npy"), every_other);
  const Tensor r2 = kfuse::read_npy(path("e.npy"));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) EXPECT_EQ(r2.data<double>()[i * 3 + j], wide.data<double>()[i * 6 + 2 * j]);
}

TEST_F(Npy, ReadsFormatVersions2And3AndNumpyVariants) {
  // Version 2.0 (4-byte header length) and 3.0 (UTF-8 header).
  for (int major : {2, 3}) {
    const std::string p = npy("v.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", major, 48);
    const kfuse::NpyInfo info = kfuse::read_npy_info(p);
    EXPECT_EQ(info.major_version, major);
    EXPECT_EQ(info.shape, (Shape{2, 3}));
    EXPECT_EQ(info.dtype, DType::f64);
    EXPECT_EQ(kfuse::read_npy(p).numel(), 6);
  }
  // Keys in another order, double quotes, no trailing comma, Python 2 longs.
  const std::string p = npy("q.npy", "{\"shape\": (4L,), \"fortran_order\": False, \"descr\": \"<f4\"}", 1, 16);
  EXPECT_EQ(kfuse::read_npy(p).shape(), (Shape{4}));
  // Extra data after the array is ignored, as NumPy does.
  const std::string p2 = npy("x.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 1, 12);
  EXPECT_EQ(kfuse::read_npy(p2).numel(), 2);
}

TEST_F(Npy, ErrorMissingFile) { expect_io_error(path("nope.npy"), {"cannot open"}); }

TEST_F(Npy, ErrorBadMagic) {
  expect_io_error(raw("m.npy", "PK\x03\x04 this is a zip file, not an npy"), {"not a .npy file", "magic"});
  expect_io_error(raw("e.npy", ""), {"not a .npy file"});
  expect_io_error(raw("s.npy", "\x93NUM"), {"not a .npy file"});
}

TEST_F(Npy, ErrorUnsupportedVersion) {
  expect_io_error(npy("v.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", 4, 4),
                  {"unsupported .npy format version 4.0"});
}

TEST_F(Npy, ErrorUnsupportedDtypeNamesIt) {
  for (const char* d : {"<i4", ">f4", ">f8", "<f2", "|u1", "<c8"}) {
    const std::string dict = std::string("{'descr': '") + d + "', 'fortran_order': False, 'shape': (2,), }";
    expect_io_error(npy("d.npy", dict, 1, 16), {"unsupported dtype", std::string("'") + d + "'"});
  }
}

TEST_F(Npy, ErrorFortranOrder) {
  expect_io_error(npy("f.npy", "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 1, 24),
                  {"fortran_order is True"});
}

TEST_F(Npy, ErrorTruncatedHeader) {
  // Magic and version only.
  expect_io_error(raw("a.npy", std::string("\x93NUMPY\x01\x00", 8)), {"truncated header"});
  // The header length says 118 bytes, the file stops after 20.
  std::string b("\x93NUMPY\x01\x00\x76\x00", 10);
  b += "{'descr': '<f4";
  expect_io_error(raw("b.npy", b), {"truncated header", "needs 128 bytes", "has 24"});
  // Version 2.0 with its 4-byte length cut.
  expect_io_error(raw("c.npy", std::string("\x93NUMPY\x02\x00\x10\x00", 10)), {"truncated header"});
}

TEST_F(Npy, ErrorTruncatedDataSaysExpectedAndActual) {
  const std::string p = npy("t.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 1, 10);
  expect_io_error(p, {"truncated data", "expected 24 bytes", "got 10"});
  // read_npy_info checks the length too.
  EXPECT_THROW(kfuse::read_npy_info(p), kfuse::Error);
}

TEST_F(Npy, ErrorMalformedHeaderDict) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"not a dict", "expected '{'"},
      {"{'descr': '<f4', 'fortran_order': False}", "no 'shape'"},
      {"{'descr': '<f4', 'shape': (2,)}", "no 'fortran_order'"},
      {"{'fortran_order': False, 'shape': (2,)}", "no 'descr'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "unexpected key 'extra'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", "non-negative integer"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2; 3)}", "expected ',' or ')'"},
      {"{'descr': '<f4', 'fortran_order': maybe, 'shape': (2,)}", "True or False"},
      {"{'descr': <f4, 'fortran_order': False, 'shape': (2,)}", "'descr' must be a string"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} trailing", "after the header dict"},
      {"{'descr': '<f4', 'fortran_order': False 'shape': (2,)}", "expected ',' or '}'"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "exceeds"},
  };
  for (const auto& [dict, fragment] : cases) {
    SCOPED_TRACE(dict);
    expect_io_error(npy("h.npy", dict, 1, 64), {"malformed header", fragment});
  }
}

TEST_F(Npy, ParseHeaderFromMemory) {
  const std::string h = "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }     \n";
  const std::string b = std::string("\x93NUMPY\x01\x00", 8) + static_cast<char>(h.size()) + '\0' + h;
  const kfuse::NpyInfo info =
      kfuse::parse_npy_header(reinterpret_cast<const unsigned char*>(b.data()), b.size(), "mem");
  EXPECT_EQ(info.shape, Shape{3});
  EXPECT_EQ(info.dtype, DType::f64);
  EXPECT_EQ(info.data_offset, b.size());
  // A buffer that stops inside the header.
  EXPECT_THROW(kfuse::parse_npy_header(reinterpret_cast<const unsigned char*>(b.data()), 20, "mem"), kfuse::Error);
}

TEST_F(Npy, WriteErrors) {
  const Tensor h = Tensor::empty({2}, DType::f16, kfuse::Memory::host);
  try {
    kfuse::write_npy(path("h.npy"), h);
    FAIL();
  } catch (const kfuse::Error& e) {
    EXPECT_NE(std::string(e.what()).find("float16"), std::string::npos) << e.what();
  }
  try {
    kfuse::write_npy((dir_ / "no_such_dir" / "x.npy").string(), filled<float>({2}));
    FAIL();
  } catch (const kfuse::Error& e) {
    EXPECT_EQ(e.category(), ErrorCategory::io);
    EXPECT_NE(std::string(e.what()).find("no_such_dir"), std::string::npos) << e.what();
  }
}

TEST_F(Npy, DirectoryIsReportedAsOne) {
  expect_io_error(dir_.string(), {"is a directory"});
  try {
    kfuse::read_npy_info(dir_.string());
    FAIL();
  } catch (const kfuse::Error& e) {
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
}

TEST_F(Npy, OutputPathIsCheckedWithoutWriting) {
  kfuse::check_output_path(path("new.npy"));
  EXPECT_FALSE(fs::exists(path("new.npy")));
  const auto expect_refused = [](const std::string& p, const std::string& fragment) {
    try {
      kfuse::check_output_path(p);
      ADD_FAILURE() << "no error for '" << p << "'";
    } catch (const kfuse::Error& e) {
      EXPECT_EQ(e.category(), ErrorCategory::io);
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_refused("", "an empty output path");
  expect_refused(dir_.string(), "is a directory");
  expect_refused(path("missing/out.npy"), "the directory " + path("missing") + " does not exist");
}

// A write that fails part-way (here: past the file-size limit, as a full disk
// would) leaves the previous file as it was, and no partial file beside it.
TEST_F(Npy, FailedWriteKeepsThePreviousFile) {
  const std::string out = path("out.npy");
  kfuse::write_npy(out, filled<float>({3}));
  const Tensor big = filled<float>({4096});
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // a write past the limit then fails with EFBIG
    const struct rlimit limit = {4096, 4096};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      kfuse::write_npy(out, big);
    } catch (const kfuse::Error& e) {
      _exit(std::string(e.what()).find("write error") != std::string::npos ? 0 : 3);
    }
    _exit(4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "3: another error, 4: no error";
  expect_equal<float>(kfuse::read_npy(out), filled<float>({3}));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1) << "a temporary file was left";
  // A successful write replaces it, and leaves nothing else either.
  kfuse::write_npy(out, big);
  expect_equal<float>(kfuse::read_npy(out), big);
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
}

}  // namespace
}  // namespace kfuse_test
