// The tuning cache file (src/tuning/tuner.hpp): JSON, merged and replaced
// atomically under a lock file, so concurrent processes neither corrupt it nor
// lose each other's entries.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "kfuse/error.hpp"
#include "tuning/tuner.hpp"

namespace kfuse::tuning {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kFormat = "kfuse-tuning";
constexpr int kVersion = 1;

[[noreturn]] void fail_io(const std::string& path, const std::string& what, int err) {
  fail(ErrorCategory::backend, "tuning cache", "cannot ", what, " ", path, ": ", std::strerror(err));
}

// A file descriptor closed on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

// The whole of `fd`; false with errno set on a read error.
bool read_all(int fd, std::string& out) {
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
}

bool write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  return true;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// The table in `text`, or false and `why`.
bool parse_table(const std::string& text, CacheTable& table, std::string& why) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    why = text.empty() ? "empty file" : "not valid JSON";
    return false;
  }
  if (!j.is_object() || !j.contains("format") || j["format"] != kFormat) {
    why = detail::cat("not a kfuse tuning cache (no \"format\": \"", kFormat, "\")");
    return false;
  }
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"].get<int64_t>() != kVersion) {
    // Quoted only when a number: dump() of a nested value recurses as deep as
    // the file nests it (a stack overflow), and a string may be of any length.
    const json* v = j.contains("version") ? &j["version"] : nullptr;
    const std::string seen = !v ? "missing" : v->is_number() ? v->dump() : std::string("of type ") + v->type_name();
    why = detail::cat("version ", seen, ", this kfuse reads version ", kVersion);
    return false;
  }
  if (!j.contains("entries") || !j["entries"].is_array()) {
    why = "no \"entries\" array";
    return false;
  }
  const auto is_count = [](const json& v) {
    return v.is_number_integer() && v.get<int64_t>() > 0 && v.get<int64_t>() <= 1024;
  };
  std::size_t i = 0;
  for (const json& e : j["entries"]) {
    const bool ok = e.is_object() && e.contains("device") && e["device"].is_string() && e.contains("kernel") &&
                    e["kernel"].is_string() && e.contains("shape_class") && e["shape_class"].is_string() &&
                    e.contains("warps") && is_count(e["warps"]) && e.contains("depth") && is_count(e["depth"]) &&
                    e.contains("ms") && e["ms"].is_number() && e.contains("baseline_ms") &&
                    e["baseline_ms"].is_number() && (!e.contains("date") || e["date"].is_string());
    if (!ok) {
      why = detail::cat("entry ", i, " is not {device, kernel, shape_class: strings, warps, depth: counts, ms, "
                        "baseline_ms: numbers, date: a string}");
      return false;
    }
    CacheEntry c;
    c.config.warps = e["warps"].get<int>();
    c.config.depth = e["depth"].get<int>();
    c.ms = e["ms"].get<double>();
    c.baseline_ms = e["baseline_ms"].get<double>();
    if (e.contains("date")) c.date = e["date"].get<std::string>();
    table[CacheKey{e["device"].get<std::string>(), e["kernel"].get<std::string>(),
                   e["shape_class"].get<std::string>()}] = c;
    ++i;
  }
  return true;
}

std::string to_json(const CacheTable& table) {
  json entries = json::array();
  for (const auto& [k, e] : table)
    entries.push_back({{"device", k.device},
                       {"kernel", k.kernel},
                       {"shape_class", k.shape_class},
                       {"warps", e.config.warps},
                       {"depth", e.config.depth},
                       {"ms", e.ms},
                       {"baseline_ms", e.baseline_ms},
                       {"date", e.date}});
  return json{{"format", kFormat}, {"version", kVersion}, {"entries", entries}}.dump(2) + "\n";
}

// A name no other thread or process of this machine uses at the same time.
std::string temporary_name(const std::string& path) {
  thread_local std::mt19937_64 rng(std::random_device{}() ^ std::hash<std::thread::id>{}(std::this_thread::get_id()));
  return detail::cat(path, ".tmp.", ::getpid(), ".", std::hex, rng());
}

}  // namespace

CacheTable read_cache(const std::string& path, std::string* warning) {
  if (warning) warning->clear();
  const Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno != ENOENT && warning) *warning = detail::cat("cannot be read: ", std::strerror(errno));
    return {};
  }
  std::string text;
  if (!read_all(fd.get(), text)) {
    if (warning) *warning = detail::cat("cannot be read: ", std::strerror(errno));
    return {};
  }
  CacheTable table;
  std::string why;
  if (!parse_table(text, table, why)) {
    if (warning) *warning = why;
    return {};
  }
  return table;
}

void write_cache(const std::string& path, const CacheTable& entries) {
  const fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec) fail_io(target.parent_path().string(), "create the folder", ec.value());
  }
  // Read-merge-rename under an exclusive lock: without it, two writers that
  // read the same contents would each drop the other's new entry. flock()
  // locks belong to the open file description, so threads of one process
  // exclude each other too.
  const std::string lock_path = path + ".lock";
  const Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (lock.get() < 0) fail_io(lock_path, "open the lock file", errno);
  int rc;
  while ((rc = ::flock(lock.get(), LOCK_EX)) != 0 && errno == EINTR) {
  }
  if (rc != 0 && errno != ENOLCK && errno != EOPNOTSUPP) fail_io(lock_path, "lock", errno);
  // (ENOLCK, EOPNOTSUPP: no locks on this file system; the rename below still keeps the file whole.)

  CacheTable merged = read_cache(path, nullptr);  // a corrupt file counts as empty: this write repairs it
  const std::string now = utc_now();
  for (const auto& [k, e] : entries) {
    CacheEntry& m = merged[k] = e;
    m.config.why.clear();
    if (m.date.empty()) m.date = now;
  }

  write_file_atomically(path, to_json(merged));
}

void write_file_atomically(const std::string& path, const std::string& contents) {
  const fs::path target(path);
  if (target.has_parent_path()) {
    std::error_code ec;
    fs::create_directories(target.parent_path(), ec);
    if (ec) fail_io(target.parent_path().string(), "create the folder", ec.value());
  }
  const std::string tmp = temporary_name(path);
  {
    const Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (out.get() < 0) fail_io(tmp, "create", errno);
    if (!write_all(out.get(), contents)) {
      const int err = errno;
      ::unlink(tmp.c_str());
      fail_io(tmp, "write", err);
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_io(path, "replace", err);
  }
}

}  // namespace kfuse::tuning
