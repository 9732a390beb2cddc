// bonsai/train/atomic_file.hpp — files that readers see whole or not at all: AtomicFile writes
// `<path>.tmp.<pid>.<n>`, fsyncs it, renames it over `path` and fsyncs the directory;
// publish_directory does the same for a directory. Also whole-file reads with errors that
// name the file.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"

namespace bonsai {

namespace detail {

[[noreturn]] inline void fail_errno(std::string_view what, const std::filesystem::path& path,
                                    int err) {
  fail(what, " '", path.string(), "': ", std::strerror(err));
}

/// fsync of a directory, so that a rename inside it survives a crash.
inline void fsync_directory(const std::filesystem::path& dir) {
  const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail_errno("cannot open directory", d, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  // Some file systems cannot fsync directories; they report EINVAL, and there is nothing to do.
  if (rc != 0 && err != EINVAL) fail_errno("cannot fsync directory", d, err);
}

inline std::filesystem::path parent_or_dot(const std::filesystem::path& p) {
  return p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
}

}  // namespace detail

/// A file written in full, then published under its final name in one rename. Until commit()
/// the bytes go to a unique temporary next to the target; if commit() is never reached (an
/// error, an exception in the caller) the destructor removes the temporary and the target is
/// untouched.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path path) : m_path(std::move(path)) {
    static std::atomic<unsigned> counter{0};
    m_tmp = m_path;
    m_tmp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    m_fd = ::open(m_tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (m_fd < 0) detail::fail_errno("cannot create", m_tmp, errno);
  }
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile() { discard(); }

  const std::filesystem::path& path() const noexcept { return m_path; }

  void write(const void* data, std::size_t bytes) {
    BONSAI_CHECK(m_fd >= 0, "AtomicFile '", m_path.string(), "': write after commit");
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      const ::ssize_t n = ::write(m_fd, p, bytes);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail_and_discard(errno, "write failed for");
      p += n;
      bytes -= static_cast<std::size_t>(n);
    }
  }
  void write(std::string_view text) { write(text.data(), text.size()); }

  /// fsync, close, rename over the target, fsync the directory.
  void commit() {
    BONSAI_CHECK(m_fd >= 0, "AtomicFile '", m_path.string(), "': commit called twice");
    if (::fsync(m_fd) != 0) fail_and_discard(errno, "fsync failed for");
    const int fd = m_fd;
    m_fd = -1;
    if (::close(fd) != 0) fail_and_discard(errno, "close failed for");
    if (std::rename(m_tmp.c_str(), m_path.c_str()) != 0) fail_and_discard(errno, "rename failed for");
    m_committed = true;
    detail::fsync_directory(detail::parent_or_dot(m_path));
  }

 private:
  [[noreturn]] void fail_and_discard(int err, std::string_view what) {
    discard();
    detail::fail(what, " '", m_path.string(), "' (temporary '", m_tmp.string(),
                 "'): ", std::strerror(err));
  }
  void discard() noexcept {
    if (m_fd >= 0) ::close(m_fd);
    m_fd = -1;
    if (!m_committed) ::unlink(m_tmp.c_str());
    m_committed = true;  // nothing left to clean up
  }

  std::filesystem::path m_path, m_tmp;
  int m_fd = -1;
  bool m_committed = false;
};

/// Replaces `path` with `content` atomically.
inline void write_file_atomic(const std::filesystem::path& path, std::string_view content) {
  AtomicFile f(path);
  f.write(content);
  f.commit();
}

/// Publishes a fully written directory `tmp_dir` as `final_dir` in one rename (fsyncing
/// `tmp_dir` first and the parent after). An existing `final_dir` is moved aside first and
/// removed after the rename. The files inside must already be fsynced (AtomicFile does it).
inline void publish_directory(const std::filesystem::path& tmp_dir,
                              const std::filesystem::path& final_dir) {
  namespace fs = std::filesystem;
  detail::fsync_directory(tmp_dir);
  std::error_code ec;
  fs::path old;
  if (fs::exists(final_dir, ec)) {
    old = final_dir;
    old += ".old." + std::to_string(::getpid());
    fs::remove_all(old, ec);
    if (std::rename(final_dir.c_str(), old.c_str()) != 0)
      detail::fail_errno("cannot move aside existing", final_dir, errno);
  }
  if (std::rename(tmp_dir.c_str(), final_dir.c_str()) != 0)
    detail::fail_errno(("cannot rename '" + tmp_dir.string() + "' to").c_str(), final_dir, errno);
  detail::fsync_directory(detail::parent_or_dot(final_dir));
  if (!old.empty()) fs::remove_all(old, ec);
}

/// The whole content of a regular file.
inline std::vector<std::byte> read_file_bytes(const std::filesystem::path& path) {
  std::error_code ec;
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  if (ec) detail::fail("cannot read '", path.string(), "': ", ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) detail::fail_errno("cannot open", path, errno);
  std::vector<std::byte> bytes(static_cast<std::size_t>(size));
  if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), std::streamsize(size));
  BONSAI_CHECK(!in.fail() && in.gcount() == std::streamsize(size), "cannot read '",
               path.string(), "': expected ", size, " bytes, got ", in.gcount());
  return bytes;
}

/// A JSON file parsed; a syntax error names the file.
inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  const std::vector<std::byte> bytes = read_file_bytes(path);
  const char* p = reinterpret_cast<const char*>(bytes.data());
  try {
    return nlohmann::json::parse(p, p + bytes.size());
  } catch (const nlohmann::json::exception& e) {
    detail::fail("'", path.string(), "' is not valid JSON: ", e.what());
  }
}

}  // namespace bonsai
