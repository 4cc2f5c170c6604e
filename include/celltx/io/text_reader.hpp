#pragma once
// Line-by-line reading of a plain or gzip-compressed text file, with 1-based line numbers, so that
// every parse error can name the file, the line and what is wrong ("path:12: expected 7 fields").
// zlib reads both formats (it recognises the gzip magic bytes itself); link with zlib (-lz,
// ZLIB::ZLIB). A corrupt or truncated .gz throws IoError naming the file and the line reached.
// Lines come without their '\n' / "\r\n". The splitting helpers return views into the line, which
// stay valid until the next call of next_line.
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include <zlib.h>
#include "celltx/core/error.hpp"

namespace celltx::io {

/// IoError "path:line: message" (line 0: "path: message").
inline IoError line_error(const std::filesystem::path& path, std::size_t line, std::string_view message) {
    if (line == 0) return IoError(fmt::format("{}: {}", path.string(), message));
    return IoError(fmt::format("{}:{}: {}", path.string(), line, message));
}

/// Sequential reader of the lines of a text file (plain or .gz).
class TextReader {
public:
    explicit TextReader(std::filesystem::path path) : path_(std::move(path)) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(path_, ec))
            throw line_error(path_, 0, "cannot open: no such regular file");
        file_ = gzopen(path_.c_str(), "rb");
        if (file_ == nullptr) throw line_error(path_, 0, fmt::format("cannot open: {}", std::strerror(errno)));
        gzbuffer(file_, 1u << 17);  // bigger zlib input buffer: fewer read() calls on 30 MB files
        buf_.resize(1u << 16);
    }
    TextReader(const TextReader&) = delete;
    TextReader& operator=(const TextReader&) = delete;
    ~TextReader() {
        if (file_ != nullptr) gzclose(file_);
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
            if (nl != nullptr) {
                const std::size_t n = static_cast<std::size_t>(nl - begin);
                pos_ += n + 1;
                if (line_.empty()) {  // the whole line lies in the buffer: no copy
                    line = strip_cr(std::string_view(begin, n));
                    ++line_no_;
                    return true;
                }
                line_.append(begin, n);
                break;
            }
            line_.append(begin, len_ - pos_);
            pos_ = len_;
        }
        line = strip_cr(std::string_view(line_));
        ++line_no_;
        return true;
    }

    /// 1-based number of the line last returned (0 before the first).
    std::size_t line_number() const { return line_no_; }
    const std::filesystem::path& path() const { return path_; }

    /// IoError naming this file and the current line.
    IoError error(std::string_view message) const { return line_error(path_, line_no_, message); }
    template <class... Args>
    [[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) const {
        throw error(fmt::format(f, std::forward<Args>(args)...));
    }

private:
    static std::string_view strip_cr(std::string_view s) {
        if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
        return s;
    }
    bool fill() {
        if (eof_) return false;
        const int n = gzread(file_, buf_.data(), static_cast<unsigned>(buf_.size()));
        int code = Z_OK;
        const char* msg = gzerror(file_, &code);
        // zlib reports a truncated stream as a soft Z_BUF_ERROR at the end, not as n < 0.
        if (n < 0 || (n == 0 && code != Z_OK))
            throw line_error(path_, line_no_ + 1, fmt::format("read error ({})", msg != nullptr ? msg : "zlib"));
        if (n == 0) {
            eof_ = true;
            return false;
        }
        pos_ = 0;
        len_ = static_cast<std::size_t>(n);
        return true;
    }

    std::filesystem::path path_;
    gzFile file_ = nullptr;
    std::vector<char> buf_;
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
