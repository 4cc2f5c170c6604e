#pragma once
// The gene universe: the ordered list of the N genes a model embeds (N = 6607 protein-coding
// `gene` features of the S. cerevisiae S288C R64-4-1 annotation), and the map from names to rows.
// Default order: systematic names sorted by byte value, as torchcell's GeneSet (a SortedSet of the
// GFF gene IDs) orders them; GeneOrder::file keeps the file's order instead.
// Name lookup: systematic name, then standard name, then alias (an alias claimed by two genes is
// ambiguous and dropped); when nothing matches, the same again upper-cased (YEASTRACT writes "Ace2").
// Unknown names either throw (Unknown::error) or are skipped and counted in a MappingReport.
#include <algorithm>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>
#include <fmt/format.h>
#include "celltx/core/error.hpp"
#include "celltx/core/shape.hpp"
#include "celltx/io/text_reader.hpp"

namespace celltx::io {

enum class GeneOrder { sorted, file };
/// What a loader does with a name that is not in the universe.
enum class Unknown { error, skip };

/// Records read, kept and skipped for names outside the universe (with the names and their
/// counts), and repeats dropped (readers that keep the first of repeated records count them here).
struct MappingReport {
    std::size_t records = 0, kept = 0, skipped = 0, duplicates = 0;
    std::map<std::string, std::size_t> unknown_names;

    /// One skipped record, because of these unknown names.
    void skip(std::initializer_list<std::string_view> names) {
        ++skipped;
        for (std::string_view n : names) ++unknown_names[std::string(n)];
    }
    /// "records 9487, kept 9344, skipped 143 (41 unknown names: AAD16 x2, ...)".
    std::string summary(std::size_t max_names = 8) const {
        std::string s = fmt::format("records {}, kept {}, skipped {}", records, kept, skipped);
        if (duplicates > 0) s += fmt::format(", duplicates {}", duplicates);
        if (unknown_names.empty()) return s;
        s += fmt::format(" ({} unknown names:", unknown_names.size());
        std::size_t i = 0;
        for (const auto& [name, count] : unknown_names) {
            if (i++ == max_names) {
                s += " ...";
                break;
            }
            s += fmt::format(" {} x{}", name, count);
        }
        return s + ")";
    }
};

class GeneUniverse {
public:
    GeneUniverse() = default;

    /// From systematic names (and optional standard names, same length or empty). Duplicates throw.
    static GeneUniverse from_names(std::vector<std::string> systematic, std::vector<std::string> standard = {},
                                   GeneOrder order = GeneOrder::sorted) {
        if (!standard.empty() && standard.size() != systematic.size())
            throw Error(fmt::format("GeneUniverse: {} systematic names but {} standard names", systematic.size(),
                                    standard.size()));
        standard.resize(systematic.size());
        std::vector<std::size_t> perm(systematic.size());
        for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = i;
        if (order == GeneOrder::sorted)
            std::sort(perm.begin(), perm.end(), [&](std::size_t a, std::size_t b) { return systematic[a] < systematic[b]; });
        GeneUniverse u;
        u.names_.reserve(perm.size());
        u.standard_.reserve(perm.size());
        for (std::size_t p : perm) {
            if (systematic[p].empty()) throw Error("GeneUniverse: empty systematic name");
            if (!valid_name(systematic[p]))
                throw Error(fmt::format("GeneUniverse: invalid systematic name '{}' (whitespace, a control byte or invalid UTF-8)",
                                        escaped(systematic[p])));
            if (!standard[p].empty() && !valid_name(standard[p]))
                throw Error(fmt::format("GeneUniverse: invalid standard name '{}' of gene '{}'", escaped(standard[p]), systematic[p]));
            u.names_.push_back(std::move(systematic[p]));
            u.standard_.push_back(std::move(standard[p]));
        }
        for (std::size_t i = 0; i < u.names_.size(); ++i) {
            const auto [it, fresh] = u.systematic_.emplace(u.names_[i], static_cast<index_t>(i));
            if (!fresh) throw Error(fmt::format("GeneUniverse: duplicate systematic name '{}'", u.names_[i]));
        }
        for (std::size_t i = 0; i < u.standard_.size(); ++i)
            if (!u.standard_[i].empty()) u.add_name(u.standard_by_, u.standard_[i], static_cast<index_t>(i));
        return u;
    }

    /// SGD gene table (yeast-genome/yeast_genes_R64-4-1.tsv): header, then systematic_name,
    /// standard_name, sgd_id, orf_classification, chrom, start, end, strand.
    static GeneUniverse from_table(const std::filesystem::path& path, GeneOrder order = GeneOrder::sorted) {
        TextReader in(path);
        std::string_view line;
        std::vector<std::string_view> f;
        if (!in.next_line(line)) throw line_error(path, 0, "empty file");
        split(line, '\t', f);
        if (f.size() < 2 || f[0] != "systematic_name" || f[1] != "standard_name")
            in.fail("expected a header starting 'systematic_name<TAB>standard_name'");
        std::vector<std::string> sys, std_names;
        std::unordered_map<std::string, std::size_t> line_of;
        while (in.next_line(line)) {
            if (line.empty()) continue;
            split(line, '\t', f);
            if (f.size() < 2) in.fail("expected at least 2 tab-separated fields, found {}", f.size());
            if (!valid_name(f[0])) in.fail("invalid systematic name '{}'", escaped(f[0]));
            if (!f[1].empty() && !valid_name(f[1])) in.fail("invalid standard name '{}'", escaped(f[1]));
            const auto [it, fresh] = line_of.emplace(std::string(f[0]), in.line_number());
            if (!fresh) in.fail("duplicate systematic name '{}' (first on line {})", f[0], it->second);
            sys.emplace_back(f[0]);
            std_names.emplace_back(f[1]);
        }
        if (sys.empty()) throw line_error(path, 0, "no genes");
        return from_names(std::move(sys), std::move(std_names), order);
    }

    /// SGD GFF3 (plain or .gz): every `gene` feature; ID = systematic name, `gene` = standard name,
    /// `Alias` = comma-separated aliases (those with spaces are descriptions and are ignored).
    /// Reading stops at the ##FASTA section.
    static GeneUniverse from_gff(const std::filesystem::path& path, GeneOrder order = GeneOrder::sorted) {
        TextReader in(path);
        std::string_view line;
        std::vector<std::string_view> f, attrs;
        std::vector<std::string> sys, std_names;
        std::vector<std::vector<std::string>> aliases;
        std::unordered_map<std::string, std::size_t> line_of;
        while (in.next_line(line)) {
            if (line.empty()) continue;
            if (line.starts_with("##FASTA")) break;
            if (line[0] == '#') continue;
            split(line, '\t', f);
            if (f.size() != 9) in.fail("expected 9 tab-separated GFF3 columns, found {}", f.size());
            if (f[2] != "gene") continue;
            std::string id, gene;
            std::vector<std::string> alias;
            split(f[8], ';', attrs);
            for (std::string_view a : attrs) {
                if (a.empty()) continue;
                const std::size_t eq = a.find('=');
                if (eq == std::string_view::npos) in.fail("attribute '{}' has no '='", a);
                const std::string_view key = a.substr(0, eq), value = a.substr(eq + 1);
                if (key == "ID") id = url_decode(value, in);
                else if (key == "gene") gene = url_decode(value, in);
                else if (key == "Alias") {
                    for (std::string_view v : split(value, ',')) {
                        std::string d = url_decode(v, in);
                        if (valid_name(d)) alias.push_back(std::move(d));
                    }
                }
            }
            if (id.empty()) in.fail("gene feature without an ID attribute");
            if (!valid_name(id)) in.fail("invalid gene ID '{}' (whitespace, a control byte or invalid UTF-8)", escaped(id));
            if (!gene.empty() && !valid_name(gene)) in.fail("invalid gene name '{}' of '{}'", escaped(gene), id);
            const auto [it, fresh] = line_of.emplace(id, in.line_number());
            if (!fresh) in.fail("duplicate gene ID '{}' (first on line {})", id, it->second);
            sys.push_back(std::move(id));
            std_names.push_back(std::move(gene));
            aliases.push_back(std::move(alias));
        }
        if (sys.empty()) throw line_error(path, 0, "no gene features");
        std::vector<std::string> ids = sys;  // from_names moves `sys` and may reorder it
        GeneUniverse u = from_names(std::move(sys), std::move(std_names), order);
        for (std::size_t i = 0; i < ids.size(); ++i)
            for (const std::string& a : aliases[i]) u.add_alias(a, u.index(ids[i]));
        return u;
    }

    index_t size() const { return static_cast<index_t>(names_.size()); }
    /// Systematic name of row i.
    const std::string& name(index_t i) const { return names_.at(static_cast<std::size_t>(i)); }
    /// Standard name of row i ("" when the gene has none).
    const std::string& standard_name(index_t i) const { return standard_.at(static_cast<std::size_t>(i)); }
    const std::vector<std::string>& names() const { return names_; }

    /// Registers an alias; one already used by another gene (as alias or standard name) is kept
    /// for neither (standard names keep priority over aliases).
    void add_alias(std::string_view alias, index_t i) {
        require(i >= 0 && i < size(), "GeneUniverse::add_alias: row {} outside [0,{})", i, size());
        add_name(alias_by_, alias, i);
    }
    /// Aliases dropped because two genes claim them.
    std::size_t ambiguous_aliases() const {
        return static_cast<std::size_t>(std::count_if(alias_by_.begin(), alias_by_.end(), [](const auto& kv) { return kv.second < 0; }));
    }

    /// Row of `name` (systematic, standard or alias; exact, then upper-cased), or nullopt.
    std::optional<index_t> find(std::string_view name) const {
        if (auto r = find_exact(name)) return r;
        if (std::any_of(name.begin(), name.end(), [](char c) { return std::islower(static_cast<unsigned char>(c)); })) {
            std::string up(name);
            for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
            return find_exact(up);
        }
        return std::nullopt;
    }
    bool contains(std::string_view name) const { return find(name).has_value(); }
    /// Row of `name`; an unknown name throws Error.
    index_t index(std::string_view name) const {
        if (auto r = find(name)) return *r;
        throw Error(fmt::format("gene '{}' is not in the universe of {} genes (not a systematic, standard or alias name)",
                                name, names_.size()));
    }
    /// Rows of `names`; unknown names throw or are skipped and counted in `report`.
    std::vector<index_t> indices(const std::vector<std::string>& names, Unknown policy = Unknown::error,
                                 MappingReport* report = nullptr) const {
        std::vector<index_t> out;
        out.reserve(names.size());
        for (const std::string& n : names) {
            if (report) ++report->records;
            if (auto r = find(n)) {
                out.push_back(*r);
                if (report) ++report->kept;
            } else if (policy == Unknown::error) {
                index(n);  // throws with the standard message
            } else if (report) {
                report->skip({n});
            }
        }
        return out;
    }

private:
    // Heterogeneous lookup (string_view keys without a temporary std::string).
    struct Hash {
        using is_transparent = void;
        std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
    };
    using NameMap = std::unordered_map<std::string, index_t, Hash, std::equal_to<>>;

    /// A gene name: not empty, no whitespace or control bytes (NUL included), valid UTF-8.
    static bool valid_name(std::string_view s) {
        return !s.empty() &&
               std::none_of(s.begin(), s.end(), [](char c) {
                   const auto b = static_cast<unsigned char>(c);
                   return std::isspace(b) || b < 0x20 || b == 0x7f;
               }) &&
               invalid_utf8_at(s) == std::string_view::npos;
    }
    /// Control bytes and bytes >= 0x80 as \xNN (a name that failed valid_name, for a message).
    static std::string escaped(std::string_view s) {
        std::string out;
        for (char c : s) {
            const auto b = static_cast<unsigned char>(c);
            if (b < 0x20 || b >= 0x7f) out += fmt::format("\\x{:02x}", b);
            else out += c;
        }
        return out;
    }
    static std::string url_decode(std::string_view s, const TextReader& at) {
        std::string out;
        out.reserve(s.size());
        for (std::size_t i = 0; i < s.size(); ++i) {
            if (s[i] != '%') {
                out += s[i];
                continue;
            }
            auto hex = [&](char c) -> int {
                if (c >= '0' && c <= '9') return c - '0';
                if (c >= 'a' && c <= 'f') return c - 'a' + 10;
                if (c >= 'A' && c <= 'F') return c - 'A' + 10;
                return -1;
            };
            const int hi = i + 1 < s.size() ? hex(s[i + 1]) : -1, lo = i + 2 < s.size() ? hex(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) throw at.error(fmt::format("bad percent escape in '{}'", s));
            out += static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        return out;
    }
    void add_name(NameMap& map, std::string_view name, index_t i) {
        if (systematic_.find(name) != systematic_.end()) return;  // a systematic name always means its own gene
        if (&map == &alias_by_) {
            const auto s = standard_by_.find(name);
            if (s != standard_by_.end() && s->second >= 0) return;
        }
        const auto [it, fresh] = map.emplace(std::string(name), i);
        if (!fresh && it->second != i) it->second = -1;  // ambiguous
    }
    std::optional<index_t> find_exact(std::string_view name) const {
        for (const NameMap* m : {&systematic_, &standard_by_, &alias_by_}) {
            const auto it = m->find(name);
            if (it != m->end() && it->second >= 0) return it->second;
        }
        return std::nullopt;
    }

    std::vector<std::string> names_, standard_;
    NameMap systematic_, standard_by_, alias_by_;
};

} // namespace celltx::io
