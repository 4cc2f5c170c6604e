#!/usr/bin/python3
"""Independent reference numbers for tests/test_perturbseq.cpp, from numpy / scipy / pandas.

  /usr/bin/python3 tools/perturbseq_reference.py      (Debian: python3-scipy python3-pandas)

Prints C++ initialisers that the test embeds. Both sides build the same inputs from the same
integer generator (lcg below), so nothing but this script's output is shared.

1. Preprocessing: a 40 x 60 count matrix -> normalize_total (median target; and target 1e4) ->
   log1p -> scanpy's flavor="seurat" highly-variable genes, written here from scanpy's description
   with pandas' own pd.cut and groupby (n_top_genes=8, and the default cut-offs).
2. cell-eval metrics on a small real / predicted pair: pearson_delta, mse, mae, mse_delta,
   mae_delta, discrimination scores (L1, L2, cosine; target gene excluded), pearson_edistance, and
   the DE results (scipy.stats.mannwhitneyu defaults, Benjamini-Hochberg by hand over all tests, pdex's clipped fold change) with the overlap at N and at 2.
"""
import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import cdist


class Lcg:
    """x <- (1103515245 x + 12345) mod 2^31; next(k) = (x >> 8) % k."""

    def __init__(self, seed):
        self.x = seed

    def next(self, k):
        self.x = (1103515245 * self.x + 12345) % (1 << 31)
        return (self.x >> 8) % k


def fmt(v):
    return "{" + ", ".join("std::numeric_limits<double>::quiet_NaN()" if np.isnan(x) else repr(float(x)) for x in v) + "}"


# ---------------------------------------------------------------- 1. preprocessing + HVG
def counts_matrix():
    g = Lcg(7)
    n, m = 40, 60
    X = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            # gene j: a mean that grows with j, some genes bursty, two all-zero genes
            if j in (5, 17, 44):
                X[i, j] = 0
            elif j % 4 == 0:
                X[i, j] = g.next(3) * (g.next(10) == 0) * (j + 5)
            else:
                X[i, j] = g.next(2 + j % 23) * (1 + (j % 7 == 3) * g.next(4))
    return X


def normalize_total(X, target=None):
    tot = X.sum(1)
    if target is None:
        target = np.median(tot[tot > 0])
    scale = np.where(tot > 0, target / np.where(tot > 0, tot, 1), 1.0)
    return X * scale[:, None], target


def hvg_seurat(L, n_top_genes=None, min_mean=0.0125, max_mean=3, min_disp=0.5, max_disp=np.inf, n_bins=20):
    E = np.expm1(L)
    mean = E.mean(0)
    var = E.var(0, ddof=1)
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    disp = np.log(disp)
    mean = np.log1p(mean)
    df = pd.DataFrame({"means": mean, "dispersions": disp})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    grouped = df.groupby("mean_bin")["dispersions"]
    bmean, bstd = grouped.mean(), grouped.std(ddof=1)
    lone = bstd.isnull()
    bstd[lone.values] = bmean[lone.values].values
    bmean[lone.values] = 0
    norm = (df["dispersions"].values - bmean[df["mean_bin"].values].values) / bstd[df["mean_bin"].values].values
    if n_top_genes is not None:
        d = norm[~np.isnan(norm)]
        d[::-1].sort()
        cut = d[n_top_genes - 1]
        hv = np.nan_to_num(norm) >= cut
    else:
        dn = norm.copy()
        dn[np.isnan(dn)] = 0
        hv = (mean > min_mean) & (mean < max_mean) & (dn > min_disp) & (dn < max_disp)
    return mean, disp, norm, hv


def preprocessing():
    X = counts_matrix()
    N, target = normalize_total(X)
    L = np.log1p(N)
    print("// normalize_total: median target")
    print(f"constexpr double hvg_target = {target!r};")
    print(f"constexpr double hvg_row0_sum_after = {N[0].sum()!r};")
    print(f"constexpr double hvg_log_x_3_7 = {L[3, 7]!r};")
    mean, disp, norm, hv = hvg_seurat(L, n_top_genes=8)
    print(f"const std::vector<double> hvg_means = {fmt(mean)};")
    print(f"const std::vector<double> hvg_dispersions = {fmt(disp)};")
    print(f"const std::vector<double> hvg_dispersions_norm = {fmt(norm)};")
    print(f"const std::vector<int> hvg_top8 = {{{', '.join(str(j) for j in np.flatnonzero(hv))}}};")
    _, _, _, hv2 = hvg_seurat(L)
    print(f"const std::vector<int> hvg_cutoffs = {{{', '.join(str(j) for j in np.flatnonzero(hv2))}}};")


# ---------------------------------------------------------------- 2. cell-eval
NAMES = ["control", "STAT1", "JAK2", "IRF1"]
GENES = ["g0", "g1", "STAT1", "g3", "g4", "g5"]
REAL_CELLS = [12, 10, 9, 5]
PRED_CELLS = [12, 8, 9, 6]
SHIFT_REAL = {1: {0: 1.5, 2: -1.0, 3: 0.6}, 2: {1: 0.8, 3: 1.2, 5: 0.5}, 3: {4: 2.0, 1: 0.9}}
SHIFT_PRED = {1: {0: 0.6, 4: 1.3, 2: -0.2, 5: 0.9}, 2: {1: 0.5, 3: 1.0, 4: 0.4}, 3: {4: 1.5, 0: 0.3, 2: 0.7}}


def cells(seed, counts, shift):
    """Cells in perturbation order; value = base(gene) + lcg noise + shift."""
    g = Lcg(seed)
    x, lab = [], []
    for p, n in enumerate(counts):
        for _ in range(n):
            row = [0.5 + 0.1 * j + g.next(100000) / 100000.0 + shift.get(p, {}).get(j, 0.0) for j in range(len(GENES))]
            x.append(row)
            lab.append(p)
    return np.array(x), np.array(lab)


def bh(p):
    """Benjamini-Hochberg adjusted p-values (scipy >= 1.11's false_discovery_control(method="bh"))."""
    m = len(p)
    order = np.argsort(p, kind="stable")
    q = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(q[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(q, 1.0)
    return out


def pdex(x, lab, perts, clip=20.0):
    ctrl = x[lab == 0]
    rows = []
    for p in perts:
        xp = x[lab == p]
        for j in range(x.shape[1]):
            mt, mr = np.expm1(xp[:, j].mean()), np.expm1(ctrl[:, j].mean())
            fc = clip if mr == 0 else (1 / clip if mt == 0 else mt / mr)
            pv = stats.mannwhitneyu(xp[:, j], ctrl[:, j], use_continuity=True).pvalue
            rows.append((p, j, pv, np.log2(fc)))
    pv = np.array([r[2] for r in rows])
    fdr = bh(pv)
    return [(r[0], r[1], r[2], f, r[3]) for r, f in zip(rows, fdr)]


def cell_eval():
    xr, lr = cells(11, REAL_CELLS, SHIFT_REAL)
    xp, lp = cells(23, PRED_CELLS, SHIFT_PRED)
    perts = [1, 2, 3]
    mr = {p: xr[lr == p].mean(0) for p in range(4)}
    mp = {p: xp[lp == p].mean(0) for p in range(4)}
    dr = {p: mr[p] - mr[0] for p in perts}
    dp = {p: mp[p] - mp[0] for p in perts}
    out = {k: [] for k in ["pearson_delta", "mse", "mae", "mse_delta", "mae_delta", "l1", "l2", "cosine"]}
    for p in perts:
        out["pearson_delta"].append(stats.pearsonr(dp[p], dr[p])[0])
        out["mse"].append(np.mean((mp[p] - mr[p]) ** 2))
        out["mae"].append(np.mean(np.abs(mp[p] - mr[p])))
        out["mse_delta"].append(np.mean((dp[p] - dr[p]) ** 2))
        out["mae_delta"].append(np.mean(np.abs(dp[p] - dr[p])))
        keep = np.array([g != NAMES[p] for g in GENES])
        R = np.vstack([dr[q][keep] for q in perts])
        for name, metric in [("l1", "cityblock"), ("l2", "euclidean"), ("cosine", "cosine")]:
            d = cdist(R, dp[p][keep][None, :], metric=metric).ravel()
            rank = np.flatnonzero(np.argsort(d, kind="stable") == perts.index(p))[0]
            out[name].append(1 - rank / len(perts))
    for k, v in out.items():
        print(f"const std::vector<double> ce_{k} = {fmt(v)};")

    def edist(x, y):
        return 2 * cdist(x, y).mean() - cdist(x, x).mean() - cdist(y, y).mean()

    er = [edist(xr[lr == p], xr[lr == 0]) for p in perts]
    ep = [edist(xp[lp == p], xp[lp == 0]) for p in perts]
    print(f"constexpr double ce_pearson_edistance = {stats.pearsonr(er, ep)[0]!r};")
    for tag, x, lab in [("real", xr, lr), ("pred", xp, lp)]:
        res = pdex(x, lab, perts)
        print(f"const std::vector<double> de_{tag}_p = {fmt([r[2] for r in res])};")
        print(f"const std::vector<double> de_{tag}_fdr = {fmt([r[3] for r in res])};")
        print(f"const std::vector<double> de_{tag}_lfc = {fmt([r[4] for r in res])};")
    # overlap at N and at 2 (cell-eval: sig genes sorted by |log2FC| descending, ordinal ties)
    rr, pp = pdex(xr, lr, perts), pdex(xp, lp, perts)
    for k in [None, 2]:
        ov = []
        for p in perts:
            def top(res):
                s = [(abs(r[4]), r[1]) for r in res if r[0] == p and r[3] < 0.05]
                s.sort(key=lambda t: -t[0])  # stable: gene order among ties
                return [g for _, g in s]
            a, b = top(rr), top(pp)
            keff = min(len(a) if not k else k, len(a))
            ov.append(0.0 if keff == 0 else len(set(a[:keff]) & set(b[:keff])) / keff)
        print(f"const std::vector<double> ce_overlap_at_{k or 'N'} = {fmt(ov)};")
    # Mann-Whitney with ties (asymptotic, tie-corrected) and the exact small-sample path
    a, b = [1, 2, 2, 3, 3, 3, 4, 7, 0, 2], [2, 3, 3, 5, 5, 6, 6, 6, 9, 1, 1, 4]
    print(f"constexpr double mwu_ties_p = {stats.mannwhitneyu(a, b).pvalue!r};")
    a, b = [0.3, 1.9, 2.2, 0.7], [1.1, 2.5, 3.1, 2.8, 4.0, 3.3, 0.2, 5.1, 4.4, 3.9]
    print(f"constexpr double mwu_exact_p = {stats.mannwhitneyu(a, b).pvalue!r};")


if __name__ == "__main__":
    print("// generated by tools/perturbseq_reference.py (numpy %s, scipy %s, pandas %s)" % (np.__version__, __import__("scipy").__version__,
                                                                                              pd.__version__))
    preprocessing()
    cell_eval()
