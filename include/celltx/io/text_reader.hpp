#pragma once
// Line-by-line reading of a plain or gzip-compressed text file, with 1-based line numbers, so that
// every parse error can name the file, the line and what is wrong ("path:12: expected 7 fields").
// A file starting with the gzip magic bytes is inflated with zlib (link ZLIB::ZLIB / -lz);
// concatenated gzip members are read in turn, and anything else after the end of the stream, a
// truncated stream or corrupt data throws IoError naming the file and the line reached.
// Every line must be UTF-8 without NUL bytes (a binary file is an error, not garbage names) and at
// most max_line_bytes long (a 3 GB line in a 3 MB .gz is refused before it fills the memory).
// Lines come without their '\n' / "\r\n". The splitting helpers return views into the line, which
// stay valid until the next call of next_line.
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include <zlib.h>
#include "celltx/core/error.hpp"
#include "celltx/io/posix_file.hpp"

namespace celltx::io {

/// IoError "path:line: message" (line 0: "path: message").
inline IoError line_error(const std::filesystem::path& path, std::size_t line, std::string_view message) {
    if (line == 0) return IoError(fmt::format("{}: {}", path.string(), message));
    return IoError(fmt::format("{}:{}: {}", path.string(), line, message));
}

/// Byte offset of the first invalid UTF-8 sequence in `s` (overlong forms, surrogates and code
/// points above U+10FFFF are invalid), or npos.
inline std::size_t invalid_utf8_at(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = 0;
    while (i < n) {
        const unsigned char c = p[i];
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t len;
        std::uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1Fu;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0Fu;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07u;
        else return i;
        if (i + len > n) return i;
        for (std::size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3Fu);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return i;
        i += len;
    }
    return std::string_view::npos;
}

/// Sequential reader of the lines of a text file (plain or .gz).
class TextReader {
public:
    /// Longest line accepted by default (the longest line of the shared data is under 2 KB).
    static constexpr std::size_t default_max_line_bytes = std::size_t{1} << 20;

    explicit TextReader(std::filesystem::path path, std::size_t max_line_bytes = default_max_line_bytes)
        : path_(std::move(path)), max_line_(max_line_bytes) {
        ReadableFile f = open_for_reading(path_, "text file");
        fd_ = std::move(f.fd);
        buf_.resize(std::size_t{1} << 16);
        raw_.resize(std::size_t{1} << 17);
        // Plain or gzip: decided by the first two bytes.
        raw_len_ = read_raw(raw_.data(), raw_.size());
        if (raw_len_ >= 2 && static_cast<unsigned char>(raw_[0]) == 0x1f && static_cast<unsigned char>(raw_[1]) == 0x8b) {
            gzip_ = true;
            if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw line_error(path_, 0, "cannot initialise zlib");
            z_ready_ = true;
            z_.next_in = reinterpret_cast<Bytef*>(raw_.data());
            z_.avail_in = static_cast<uInt>(raw_len_);
        }
    }
    TextReader(const TextReader&) = delete;
    TextReader& operator=(const TextReader&) = delete;
    ~TextReader() {
        if (z_ready_) inflateEnd(&z_);
    }

    /// Reads the next line into `line` (without the newline); false at the end of the file.
    bool next_line(std::string_view& line) {
        line_.clear();
        bool any = false;
        for (;;) {
            if (pos_ == len_ && !fill()) {
                if (!any) return false;
                break;  // last line without a trailing newline
            }
            any = true;
            const char* begin = buf_.data() + pos_;
            const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', len_ - pos_));
            const std::size_t n = nl != nullptr ? static_cast<std::size_t>(nl - begin) : len_ - pos_;
            if (line_.size() + n > max_line_)
                throw line_error(path_, line_no_ + 1, fmt::format("line longer than {} bytes (a binary file, or a missing newline?)", max_line_));
            if (nl != nullptr) {
                pos_ += n + 1;
                if (line_.empty()) {  // the whole line lies in the buffer: no copy
                    line = checked(std::string_view(begin, n));
                    return true;
                }
                line_.append(begin, n);
                break;
            }
            line_.append(begin, n);
            pos_ = len_;
        }
        line = checked(std::string_view(line_));
        return true;
    }

    /// 1-based number of the line last returned (0 before the first).
    std::size_t line_number() const { return line_no_; }
    const std::filesystem::path& path() const { return path_; }
    bool compressed() const { return gzip_; }

    /// IoError naming this file and the current line.
    IoError error(std::string_view message) const { return line_error(path_, line_no_, message); }
    template <class... Args>
    [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
        throw error(fmt::format(f, std::forward<Args>(args)...));
    }

private:
    /// Counts the line, strips a trailing '\r', and rejects NUL bytes and invalid UTF-8.
    std::string_view checked(std::string_view s) {
        ++line_no_;
        if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
        if (const void* z = std::memchr(s.data(), '\0', s.size()); z != nullptr)
            fail("NUL byte at column {} (a binary file?)", static_cast<const char*>(z) - s.data() + 1);
        if (const std::size_t bad = invalid_utf8_at(s); bad != std::string_view::npos)
            fail("invalid UTF-8 at column {} (byte 0x{:02x}; text files must be UTF-8)", bad + 1, static_cast<unsigned char>(s[bad]));
        return s;
    }

    std::size_t read_raw(char* dst, std::size_t n) {
        for (;;) {
            const ssize_t r = ::read(fd_.fd, dst, n);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) throw line_error(path_, line_no_ + 1, fmt::format("read error: {}", detail::errno_text(errno)));
            raw_offset_ += static_cast<std::uint64_t>(r);
            return static_cast<std::size_t>(r);
        }
    }

    /// Refills buf_ with the next bytes of text; false at the end of the file.
    bool fill() {
        if (eof_) return false;
        pos_ = 0;
        if (!gzip_) {
            if (!first_used_) {  // the bytes read to sniff the format
                first_used_ = true;
                if (raw_len_ > 0) {
                    buf_.swap(raw_);
                    len_ = raw_len_;
                    return true;
                }
            }
            len_ = read_raw(buf_.data(), buf_.size());
            eof_ = len_ == 0;
            return !eof_;
        }
        z_.next_out = reinterpret_cast<Bytef*>(buf_.data());
        z_.avail_out = static_cast<uInt>(buf_.size());
        while (z_.avail_out == buf_.size()) {  // until some text comes out
            if (z_.avail_in == 0 && !raw_eof_) {
                raw_len_ = read_raw(raw_.data(), raw_.size());
                raw_eof_ = raw_len_ == 0;
                z_.next_in = reinterpret_cast<Bytef*>(raw_.data());
                z_.avail_in = static_cast<uInt>(raw_len_);
            }
            if (member_done_) {
                // After a complete member: the end of the file, or another gzip member.
                if (z_.avail_in == 0 && raw_eof_) {
                    eof_ = true;
                    len_ = 0;
                    return false;
                }
                if (z_.avail_in < 2 && !raw_eof_) {  // the magic bytes straddle two reads
                    std::memmove(raw_.data(), z_.next_in, z_.avail_in);
                    const std::size_t have = z_.avail_in;
                    raw_len_ = have + read_raw(raw_.data() + have, raw_.size() - have);
                    raw_eof_ = raw_len_ == have;
                    z_.next_in = reinterpret_cast<Bytef*>(raw_.data());
                    z_.avail_in = static_cast<uInt>(raw_len_);
                    continue;
                }
                if (z_.avail_in < 2 || z_.next_in[0] != 0x1f || z_.next_in[1] != 0x8b)
                    throw line_error(path_, line_no_ + 1,
                                     fmt::format("garbage after the end of the gzip stream (at byte {} of the file)",
                                                 raw_offset_ - z_.avail_in));
                inflateReset(&z_);
                member_done_ = false;
            }
            const bool no_input = z_.avail_in == 0;
            const int rc = inflate(&z_, Z_NO_FLUSH);
            if (rc == Z_STREAM_END) {
                member_done_ = true;
                continue;
            }
            if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT)
                throw line_error(path_, line_no_ + 1, fmt::format("corrupt gzip data ({})", z_.msg != nullptr ? z_.msg : "zlib"));
            if (rc == Z_MEM_ERROR) throw line_error(path_, line_no_ + 1, "zlib ran out of memory");
            if (rc == Z_BUF_ERROR && no_input && raw_eof_)
                throw line_error(path_, line_no_ + 1, "truncated gzip stream (the file ends inside compressed data)");
        }
        len_ = buf_.size() - z_.avail_out;
        return true;
    }

    std::filesystem::path path_;
    std::size_t max_line_;
    detail::FdGuard fd_;
    std::vector<char> buf_, raw_;  // text; compressed (or the first plain) bytes
    std::size_t raw_len_ = 0;
    std::uint64_t raw_offset_ = 0;  // bytes of the file read so far
    z_stream z_{};
    bool gzip_ = false, z_ready_ = false, raw_eof_ = false, member_done_ = false, first_used_ = false;
    std::size_t pos_ = 0, len_ = 0, line_no_ = 0;
    bool eof_ = false;
    std::string line_;  // a line that straddles two buffer fills
};

/// Fields separated by `sep`, empty fields kept ("a\t\tb" has 3 fields).
inline void split(std::string_view line, char sep, std::vector<std::string_view>& out) {
    out.clear();
    for (;;) {
        const std::size_t p = line.find(sep);
        out.push_back(line.substr(0, p));
        if (p == std::string_view::npos) return;
        line.remove_prefix(p + 1);
    }
}
inline std::vector<std::string_view> split(std::string_view line, char sep) {
    std::vector<std::string_view> out;
    split(line, sep, out);
    return out;
}

/// Tokens separated by runs of spaces and tabs; no empty tokens.
inline void split_whitespace(std::string_view line, std::vector<std::string_view>& out) {
    out.clear();
    std::size_t i = 0;
    while (i < line.size()) {
        while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
        const std::size_t b = i;
        while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
        if (i > b) out.push_back(line.substr(b, i - b));
    }
}
inline std::vector<std::string_view> split_whitespace(std::string_view line) {
    std::vector<std::string_view> out;
    split_whitespace(line, out);
    return out;
}

/// CSV-style fields separated by `sep`, where a field may be double-quoted ("" is a literal quote).
/// A malformed quote throws IoError at `at`'s current line.
inline std::vector<std::string> split_quoted(std::string_view line, char sep, const TextReader& at) {
    std::vector<std::string> out;
    std::size_t i = 0;
    for (;;) {
        std::string field;
        if (i < line.size() && line[i] == '"') {
            const std::size_t open = i++;
            for (;;) {
                if (i >= line.size()) throw at.error(fmt::format("unterminated quote opened at column {}", open + 1));
                if (line[i] == '"') {
                    if (i + 1 < line.size() && line[i + 1] == '"') {
                        field += '"';
                        i += 2;
                        continue;
                    }
                    ++i;
                    break;
                }
                field += line[i++];
            }
            if (i < line.size() && line[i] != sep)
                throw at.error(fmt::format("unexpected character '{}' after a closing quote at column {}", line[i], i + 1));
        } else {
            const std::size_t p = line.find(sep, i);
            const std::size_t e = p == std::string_view::npos ? line.size() : p;
            field.assign(line.substr(i, e - i));
            if (field.find('"') != std::string::npos)
                throw at.error(fmt::format("stray quote in unquoted field {}", out.size() + 1));
            i = e;
        }
        out.push_back(std::move(field));
        if (i >= line.size()) return out;
        ++i;  // the separator
        if (i == line.size()) {
            out.emplace_back();  // trailing separator: one more, empty field
            return out;
        }
    }
}

} // namespace celltx::io
