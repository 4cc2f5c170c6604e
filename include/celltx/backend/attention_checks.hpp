#pragma once
// The argument checks of the attention ops that need no look at backend memory, shared by every
// backend (each adds its own check of a graph term's contents).
#include <cmath>
#include "celltx/backend/types.hpp"
#include "celltx/core/error.hpp"

namespace celltx::ops::attention_checks {

inline void check_dims(const AttentionDims& d) {
    require(d.batch >= 0 && d.tq >= 0 && d.tk >= 0, "attention: negative size (batch {}, tq {}, tk {})", d.batch, d.tq, d.tk);
    require(d.hq >= 1 && d.hkv >= 1 && d.hq % d.hkv == 0, "attention: {} query heads are not a multiple of {} kv heads", d.hq, d.hkv);
    require(d.dh >= 1, "attention: head_dim {} must be positive", d.dh);
    require(std::isfinite(d.scale), "attention: scale {} is not finite", d.scale);
}

template <class T>
void check_operand(const char* what, HeadsRef<T> x, index_t heads, const AttentionDims& d, index_t tokens) {
    require(x.ld >= heads * d.dh, "attention: {} has ld {} < heads*dh = {}", what, x.ld, heads * d.dh);
    require(x.data != nullptr || d.batch * tokens == 0, "attention: {} is null", what);
}

inline void check_dropout(const AttentionDropout& drop) {
    require(drop.p >= 0.0 && drop.p < 1.0, "attention: dropout probability {} is outside [0, 1)", drop.p);
}

/// A graph term's sizes and head (its row pointers and columns are checked by the backend).
template <class T>
void check_term_shape(const GraphTerm<T>& t, const AttentionDims& d) {
    require(t.head >= 0 && t.head < d.hq, "attention graph hook: head {} out of range for {} heads", t.head, d.hq);
    require(static_cast<index_t>(t.row_ptr.size()) == d.tq + 1, "attention graph hook: row_ptr has {} entries, expected tq+1 = {}",
            t.row_ptr.size(), d.tq + 1);
    require(t.value.size() == t.col.size(), "attention graph hook: {} values for {} column indices", t.value.size(), t.col.size());
}

} // namespace celltx::ops::attention_checks
