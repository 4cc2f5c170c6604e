#pragma once
// Opening files for reading without surprises: every reader opens through open_for_reading, which
// opens with O_NONBLOCK (a FIFO or a device would otherwise block open() forever), checks with
// fstat that the path is a regular file, and only then clears O_NONBLOCK. Errors are IoError
// "path: what is wrong" (a missing file, a directory, a FIFO, a permission problem).
#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <system_error>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fmt/format.h>
#include "celltx/core/error.hpp"

namespace celltx::io {

namespace detail {

inline std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

/// Closes a file descriptor on scope exit.
struct FdGuard {
    int fd = -1;
    FdGuard() = default;
    explicit FdGuard(int f) : fd(f) {}
    FdGuard(FdGuard&& o) noexcept : fd(o.fd) { o.fd = -1; }
    FdGuard& operator=(FdGuard&& o) noexcept {
        if (this != &o) {
            reset();
            fd = o.fd;
            o.fd = -1;
        }
        return *this;
    }
    FdGuard(const FdGuard&) = delete;
    FdGuard& operator=(const FdGuard&) = delete;
    ~FdGuard() { reset(); }
    void reset() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
    /// Gives up ownership.
    int release() {
        const int f = fd;
        fd = -1;
        return f;
    }
};

/// "a directory", "a FIFO", ... for messages about a path that is not a regular file.
inline const char* file_kind(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISLNK(mode)) return "a symbolic link";
    return "not a regular file";
}

} // namespace detail

/// An open regular file and its size at the time it was opened.
struct ReadableFile {
    detail::FdGuard fd;
    std::uint64_t size = 0;
};

/// Opens `path` for reading; anything but a regular file (after following symlinks) throws IoError
/// "path: cannot open <what>: ..." without blocking.
inline ReadableFile open_for_reading(const std::filesystem::path& path, std::string_view what = "file") {
    const std::string p = path.string();
    ReadableFile f;
    f.fd.fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (f.fd.fd < 0) throw IoError(fmt::format("{}: cannot open {}: {}", p, what, detail::errno_text(errno)));
    struct stat st {};
    if (::fstat(f.fd.fd, &st) != 0) throw IoError(fmt::format("{}: cannot stat {}: {}", p, what, detail::errno_text(errno)));
    if (!S_ISREG(st.st_mode)) throw IoError(fmt::format("{}: cannot open {}: the path is {}, not a regular file", p, what, detail::file_kind(st.st_mode)));
    const int flags = ::fcntl(f.fd.fd, F_GETFL);
    if (flags >= 0) (void)::fcntl(f.fd.fd, F_SETFL, flags & ~O_NONBLOCK);
    f.size = static_cast<std::uint64_t>(st.st_size);
    return f;
}

/// Reads exactly n bytes at `offset` (pread, retried on EINTR and short reads); a file that ends
/// early throws IoError naming `path`.
inline void read_exactly(int fd, std::uint64_t offset, void* dst, std::size_t n, const std::filesystem::path& path) {
    auto* c = static_cast<unsigned char*>(dst);
    std::size_t got = 0;
    while (got < n) {
        const ssize_t r = ::pread(fd, c + got, std::min<std::size_t>(n - got, std::size_t{1} << 30), static_cast<off_t>(offset + got));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) throw IoError(fmt::format("{}: read failed at byte {}: {}", path.string(), offset + got, detail::errno_text(errno)));
        if (r == 0) throw IoError(fmt::format("{}: the file ended at byte {} while {} bytes were expected (it shrank while being read?)",
                                              path.string(), offset + got, offset + n));
        got += static_cast<std::size_t>(r);
    }
}

} // namespace celltx::io
