#!/usr/bin/python3
"""What celltx writes, anndata reads; what anndata writes, celltx reads (ctest entry anndata_roundtrip).

Usage: anndata_roundtrip.py DIR CELLTX_TESTS
  DIR holds celltx_written.h5ad, written by the h5ad suite (tests/test_h5ad.cpp, small_anndata):
  6 cells x 4 genes, X[i][j] = (i + 2j) % 3 as CSR float32, and the obs/var/obsm/uns below.
  The script then writes three files with anndata (CSR, CSC and dense int64 X) into DIR/from_anndata
  and runs `CELLTX_TESTS --run_test=h5ad/anndata_written_files`, which checks them.
Exit 77 (ctest: skipped) when anndata is not installed (Debian: apt-get install python3-anndata).
"""
import os
import subprocess
import sys

try:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"anndata_roundtrip: skipped ({e}); install python3-anndata to run it")
    sys.exit(77)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAILED:", what)


def read_celltx_file(path):
    a = ad.read_h5ad(path)
    check(a.shape == (6, 4), f"shape {a.shape}")
    check(sp.issparse(a.X) and a.X.format == "csr", f"X is {type(a.X)}")
    check(a.X.dtype == np.float32, f"X dtype {a.X.dtype}")
    expect = np.array([[(i + 2 * j) % 3 for j in range(4)] for i in range(6)], dtype=np.float32)
    check(np.array_equal(a.X.toarray(), expect), "X values")
    check(np.array_equal(np.asarray(a.layers["counts"]), expect), "layers/counts")
    check(list(a.obs_names) == [f"c{i}" for i in range(6)], f"obs_names {list(a.obs_names)}")
    check(a.obs.index.name == "cell_id", f"obs index name {a.obs.index.name}")
    check(list(a.obs.columns) == ["perturbation", "dose", "umi", "is_control", "note"], f"obs columns {list(a.obs.columns)}")
    p = a.obs["perturbation"]
    check(isinstance(p.dtype, pd.CategoricalDtype), "perturbation is categorical")
    check(list(p.cat.categories) == ["STAT1", "control", "JAK2"], f"categories {list(p.cat.categories)}")
    check(list(p.cat.codes) == [0, 1, 1, 2, -1, 0], f"codes {list(p.cat.codes)}")
    check(pd.isna(p.iloc[4]), "missing category")
    check(a.obs["dose"].dtype == np.float32 and np.allclose(a.obs["dose"], [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]), "dose")
    check(a.obs["umi"].dtype == np.int32 and list(a.obs["umi"]) == [10, 20, 30, 40, 50, 60], "umi")
    check(a.obs["is_control"].dtype == bool and list(a.obs["is_control"]) == [False, True, True, False, False, False], "is_control")
    check(list(a.obs["note"]) == ["a", "β-cell", "", "d", "e", "f"], f"note {list(a.obs['note'])}")
    check(list(a.var_names) == ["STAT1", "JAK2", "IRF1", "MYC"], f"var_names {list(a.var_names)}")
    check(list(a.var["is_target"]) == [True, True, False, False], "var is_target")
    emb = np.asarray(a.obsm["X_pca"])
    check(emb.shape == (6, 2) and np.allclose(emb.ravel(), 0.25 * np.arange(12) - 1.0), "obsm X_pca")
    check(a.uns["control_label"] == "control", f"uns control_label {a.uns.get('control_label')}")
    check(list(a.uns["heldout"]) == ["IFNGR2", "STAT2"], f"uns heldout {a.uns.get('heldout')}")
    # and anndata writes it back out unchanged in content
    out = os.path.join(os.path.dirname(path), "celltx_written_resaved.h5ad")
    a.write_h5ad(out)
    b = ad.read_h5ad(out)
    check(np.array_equal(b.X.toarray(), expect), "resaved X")


def write_anndata_files(dirname):
    os.makedirs(dirname, exist_ok=True)
    n, g = 7, 5
    X = np.array([[(i * j) % 4 for j in range(g)] for i in range(n)], dtype=np.int64)
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(["control" if i % 3 == 0 else "STAT1" if i % 3 == 1 else "JAK2" for i in range(n)]),
            "is_control": [i % 3 == 0 for i in range(n)],
            "n_counts": X.sum(axis=1).astype(np.float64),
            "label": [f"cell-{i}" for i in range(n)],
        },
        index=[f"cell{i}" for i in range(n)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(g)])
    for name, mat in [("anndata_csr.h5ad", sp.csr_matrix(X)), ("anndata_csc.h5ad", sp.csc_matrix(X)), ("anndata_dense.h5ad", X)]:
        a = ad.AnnData(X=mat, obs=obs.copy(), var=var.copy(), dtype=mat.dtype)  # keep the int64 counts
        a.obsm["X_emb"] = np.stack([np.arange(n, dtype=np.float64), np.arange(n) + 0.5], axis=1)
        a.uns["note"] = "written by anndata"
        a.write_h5ad(os.path.join(dirname, name))


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    dirname, tests = sys.argv[1], sys.argv[2]
    print("anndata", ad.__version__)
    read_celltx_file(os.path.join(dirname, "celltx_written.h5ad"))
    written = os.path.join(dirname, "from_anndata")
    write_anndata_files(written)
    env = dict(os.environ, CELLTX_ANNDATA_DIR=written)
    r = subprocess.run([tests, "--run_test=h5ad/anndata_written_files", "--log_level=test_suite"], env=env)
    check(r.returncode == 0, f"celltx reading anndata's files (exit {r.returncode})")
    if failures:
        print(f"anndata_roundtrip: {len(failures)} failures")
        return 1
    print("anndata_roundtrip: celltx -> anndata and anndata -> celltx agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
