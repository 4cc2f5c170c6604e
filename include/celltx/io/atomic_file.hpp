#pragma once
// AtomicFile: every file celltx writes (safetensors, state dicts, checkpoints) is written under a
// temporary name in the destination's directory, fsync'ed, and renamed over the destination by
// commit(). A reader sees either the old file or the complete new one, never a half-written file;
// on any failure (full disk, a killed process, an exception) the destination is untouched.
//
// Policies (docs/reliability.md):
// - A destination that exists must be a regular file with a write permission bit: a read-only file
//   is never replaced (not even by root), a directory or a device is refused before anything is written.
// - The new file keeps the permission bits (and, where allowed, the owner) of the file it replaces;
//   a new file gets 0666 minus the umask, as open() gives.
// - A symbolic link is written through: the file it points to (followed to the end of the chain)
//   is replaced atomically in its own directory, and the link stays a link. A dangling link
//   creates its target, as shell redirection does.
// - Temporary names are ".<name>.celltx-tmp.<host>.<pid>.<n>". A save removes the temporary files
//   of earlier saves to the same name that a killed process left behind: those of this host whose
//   process no longer exists, and those of any host older than 24 hours.
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/io/posix_file.hpp"

namespace celltx::io {

namespace detail {

/// Test hook: when >= 0, every AtomicFile behaves as if the disk had this many bytes free for it
/// (a write beyond fails with ENOSPC, after writing what fits). Simulates a full disk in tests.
inline std::atomic<std::int64_t> simulated_free_bytes{-1};

/// This host's name with '.' replaced (temporary names split on '.').
inline std::string temp_host_name() {
    char buf[256] = {};
    if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "host";
    std::string h(buf);
    if (h.size() > 32) h.resize(32);
    for (char& c : h)
        if (c == '.' || c == '/' || static_cast<unsigned char>(c) < 0x20) c = '_';
    return h;
}

/// ".<name>.celltx-tmp." (long names shortened and made unique with a hash: the whole temporary
/// name must stay under the 255-byte limit of a file name).
inline std::string temp_prefix(const std::string& filename) {
    std::string name = filename;
    if (name.size() > 120) name = fmt::format("{}~{:016x}", name.substr(0, 100), std::hash<std::string>{}(filename));
    return "." + name + ".celltx-tmp.";
}

/// Follows a chain of symbolic links to the path that will be replaced (at most 40 hops).
inline std::filesystem::path resolve_links(const std::filesystem::path& dest) {
    std::filesystem::path p = dest;
    for (int hops = 0;; ++hops) {
        std::error_code ec;
        const auto st = std::filesystem::symlink_status(p, ec);
        if (ec || !std::filesystem::is_symlink(st)) return p;
        if (hops == 40) throw IoError(fmt::format("{}: cannot save: too many levels of symbolic links", dest.string()));
        const auto target = std::filesystem::read_symlink(p, ec);
        if (ec) throw IoError(fmt::format("{}: cannot save: cannot read the symbolic link {}: {}", dest.string(), p.string(), ec.message()));
        p = target.is_absolute() ? target : p.parent_path() / target;
    }
}

/// Removes the temporary files that killed saves to `prefix...` left in `dir` (see the header).
inline std::size_t remove_stale_temps(const std::filesystem::path& dir, const std::string& prefix, const std::string& host) {
    namespace fs = std::filesystem;
    std::size_t removed = 0;
    std::error_code ec;
    fs::directory_iterator it(dir.empty() ? fs::path(".") : dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (!name.starts_with(prefix)) continue;
        const std::string rest = name.substr(prefix.size());  // host.pid.n
        const auto last = rest.rfind('.');
        if (last == std::string::npos || last == 0) continue;
        const auto mid = rest.rfind('.', last - 1);
        if (mid == std::string::npos) continue;
        const std::string file_host = rest.substr(0, mid), pid_text = rest.substr(mid + 1, last - mid - 1);
        if (pid_text.empty() || pid_text.size() > 9 || !std::all_of(pid_text.begin(), pid_text.end(), [](char c) { return c >= '0' && c <= '9'; }))
            continue;
        const auto pid = static_cast<pid_t>(std::stol(pid_text));
        bool stale = file_host == host && pid != ::getpid() && pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
        if (!stale) {
            struct stat st {};
            if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
                const auto age = std::chrono::system_clock::now() - std::chrono::system_clock::from_time_t(st.st_mtime);
                stale = age > std::chrono::hours(24);
            }
        }
        if (stale && ::unlink(it->path().c_str()) == 0) ++removed;
    }
    return removed;
}

/// A file written under a temporary name in the destination's directory and renamed over the
/// destination by commit(); destroyed uncommitted, it removes the temporary file.
class AtomicFile {
public:
    explicit AtomicFile(std::filesystem::path dest) : dest_(std::move(dest)) {
        if (dest_.filename().empty() || dest_.filename() == "." || dest_.filename() == "..")
            throw IoError(fmt::format("{}: cannot save: not a file name", dest_.string()));
        target_ = resolve_links(dest_);
        check_existing_target();
        const std::string host = temp_host_name(), prefix = temp_prefix(target_.filename().string());
        stale_removed_ = remove_stale_temps(target_.parent_path(), prefix, host);
        static std::atomic<unsigned> counter{0};
        const mode_t create_mode = replaces_ ? (old_mode_ & 0777) : 0666;
        for (int attempt = 0; fd_ < 0; ++attempt) {
            tmp_ = target_.parent_path() / fmt::format("{}{}.{}.{}", prefix, host, ::getpid(), counter++);
            fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, create_mode);
            if (fd_ < 0 && (errno != EEXIST || attempt > 100))
                throw IoError(fmt::format("{}: cannot create the temporary file {}: {}", dest_.string(), tmp_.string(), errno_text(errno)));
        }
        buf_.reserve(buffer_bytes);
    }
    AtomicFile(const AtomicFile&) = delete;
    AtomicFile& operator=(const AtomicFile&) = delete;
    ~AtomicFile() {
        if (fd_ >= 0) ::close(fd_);
        if (!committed_) ::unlink(tmp_.c_str());
    }

    /// Buffers small pieces; large ones go straight to the file.
    void write(const void* p, std::size_t n) {
        if (buf_.size() + n > buffer_bytes) flush();
        if (n >= buffer_bytes) return write_fully(p, n);
        const auto* c = static_cast<const unsigned char*>(p);
        buf_.insert(buf_.end(), c, c + n);
    }

    /// flush + fsync + permissions + close + rename: the destination now holds the complete file.
    void commit() {
        flush();
        if (replaces_) {
            // Keep the owner where allowed (root replacing a user's file; elsewhere the new file is
            // ours), then the mode (chown may clear set-id bits).
            if (old_uid_ != ::geteuid() || old_gid_ != ::getegid()) (void)::fchown(fd_, old_uid_, old_gid_);
            if (::fchmod(fd_, old_mode_ & 07777) != 0) fail("chmod");
        }
        if (::fsync(fd_) != 0) fail("fsync");
        const int fd = fd_;
        fd_ = -1;
        if (::close(fd) != 0) fail("close");
        std::error_code ec;
        std::filesystem::rename(tmp_, target_, ec);
        if (ec) throw IoError(fmt::format("{}: cannot rename {} over it: {}", dest_.string(), tmp_.string(), ec.message()));
        committed_ = true;
        // Make the rename itself durable; the file is complete either way, so failures are ignored.
        const auto dir = target_.parent_path().empty() ? std::filesystem::path(".") : target_.parent_path();
        FdGuard d{::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)};
        if (d.fd >= 0) (void)::fsync(d.fd);
    }

    /// The path the file lands at (the destination, or the end of its chain of symlinks).
    const std::filesystem::path& target() const noexcept { return target_; }
    const std::filesystem::path& temporary() const noexcept { return tmp_; }
    /// Temporary files of killed saves removed when this one started.
    std::size_t stale_removed() const noexcept { return stale_removed_; }

private:
    static constexpr std::size_t buffer_bytes = std::size_t{1} << 20;

    void check_existing_target() {
        struct stat st {};
        if (::stat(target_.c_str(), &st) != 0) {
            if (errno == ENOENT) return;  // a new file (or a dangling link's target)
            throw IoError(fmt::format("{}: cannot save: {}", dest_.string(), errno_text(errno)));
        }
        const std::string via = target_ == dest_ ? std::string{} : fmt::format(" (the symbolic link points to {})", target_.string());
        if (!S_ISREG(st.st_mode))
            throw IoError(fmt::format("{}: cannot save: the path is {}, not a regular file{}; nothing was written", dest_.string(),
                                      file_kind(st.st_mode), via));
        if ((st.st_mode & 0222) == 0 || ::access(target_.c_str(), W_OK) != 0)
            throw IoError(fmt::format("{}: cannot save: the file is read-only (mode {:04o}){}; it was not replaced", dest_.string(),
                                      st.st_mode & 07777, via));
        replaces_ = true;
        old_mode_ = st.st_mode;
        old_uid_ = st.st_uid;
        old_gid_ = st.st_gid;
    }

    [[noreturn]] void fail(const char* what) const {
        throw IoError(fmt::format("{}: {} of the temporary file {} failed: {}", dest_.string(), what, tmp_.string(), errno_text(errno)));
    }
    void flush() {
        write_fully(buf_.data(), buf_.size());
        buf_.clear();
    }
    void write_fully(const void* p, std::size_t n) {
        const auto* c = static_cast<const unsigned char*>(p);
        bool disk_full = false;
        if (const std::int64_t free = simulated_free_bytes.load(); free >= 0 && written_ + n > static_cast<std::uint64_t>(free)) {
            n = static_cast<std::uint64_t>(free) > written_ ? static_cast<std::size_t>(static_cast<std::uint64_t>(free) - written_) : 0;
            disk_full = true;
        }
        while (n > 0) {
            const ssize_t w = ::write(fd_, c, std::min<std::size_t>(n, std::size_t{1} << 30));
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) fail("write");
            c += w;
            n -= static_cast<std::size_t>(w);
            written_ += static_cast<std::uint64_t>(w);
        }
        if (disk_full) {
            errno = ENOSPC;
            fail("write");
        }
    }

    std::filesystem::path dest_, target_, tmp_;
    int fd_ = -1;
    bool committed_ = false, replaces_ = false;
    mode_t old_mode_ = 0;
    uid_t old_uid_ = 0;
    gid_t old_gid_ = 0;
    std::uint64_t written_ = 0;
    std::size_t stale_removed_ = 0;
    std::vector<unsigned char> buf_;
};

} // namespace detail

} // namespace celltx::io
