#!/usr/bin/python3
"""The PyTorch anchor's CGT training step at any gene count N and batch B (benchmarks/scaling.sh).

Imports ../shared/anchors/torch_cgt_bench.py as a module, sets its N_GENES, builds its models with its
own build(torch), and times exactly the body of its `train_step` configuration: the encoder with the
attention of one layer kept (want_attn), Type I over all B·N rows on out[1:], MSE + 0.1 * KL,
backward, Adam. Nothing of the anchor is copied or changed here; only N and B become arguments.

    /usr/bin/python3 benchmarks/anchor_scaling.py --genes 4000 --batch 32 [--reps 2] [--warmup 1]
        [--threads 2] [--mem-cap-gb 22] [--anchor ../shared/anchors/torch_cgt_bench.py]

Prints one JSON line: config, genes, batch, threads, reps, warmup, median_s, min_s, max_s, times_s,
peak_rss_mb (ru_maxrss), rss_setup_mb, blas_gflops, mem_cap_gb, attn_probs_gb. The address space is capped
(RLIMIT_AS, --mem-cap-gb) so that a size that does not fit fails fast with PyTorch's allocation error
instead of pushing a shared machine into swap or the OOM killer; such a run prints "oom": true and
"needed" (the allocation PyTorch asked for, the peak RSS and the cap), "failed_in", and exits 0, with the timing fields null.
Like the anchor, it refuses to run on a BLAS below 20 GFLOP/s (ANCHOR_ALLOW_SLOW_BLAS=1 overrides).
"""
import argparse
import importlib.util
import json
import os
import re
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ANCHOR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "anchors", "torch_cgt_bench.py"))


def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def positive(kind, lo):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}")
        if not v >= lo:
            raise argparse.ArgumentTypeError(f"'{text}' is below {lo}")
        return v
    return parse


def load_anchor(path):
    if not os.path.isfile(path):
        raise SystemExit(f"anchor_scaling.py: the anchor {path} is missing (give --anchor PATH to torch_cgt_bench.py)")
    spec = importlib.util.spec_from_file_location("torch_cgt_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("build", "blas_gflops", "N_GENES", "L", "H"):
        if not hasattr(mod, name):
            raise SystemExit(f"anchor_scaling.py: {path} has no '{name}': not the anchor this script drives")
    return mod


def needed(err, cap_gb):
    """What the failed allocation asked for (PyTorch's 'you tried to allocate N bytes'), and where it stood."""
    m = re.search(r"tried to allocate (\d+) bytes", str(err))
    what = f"{int(m.group(1)) / 1e9:.2f} GB more" if m else (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
    return f"{what}, at {rss_mb() / 1e3:.1f} GB peak RSS, over the {cap_gb:.1f} GB address-space cap"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--genes", type=positive(int, 32), default=6607, help="N, the anchor's N_GENES (default 6607)")
    ap.add_argument("--batch", type=positive(int, 1), default=32, help="B, the perturbation batch (default 32)")
    ap.add_argument("--reps", type=positive(int, 1), default=2)
    ap.add_argument("--warmup", type=positive(int, 0), default=1)
    ap.add_argument("--threads", type=positive(int, 1), default=2)
    ap.add_argument("--mem-cap-gb", type=positive(float, 1.0), default=22.0,
                    help="address-space cap (RLIMIT_AS) in GB (default 22; the machine has 24)")
    ap.add_argument("--anchor", default=DEFAULT_ANCHOR, help="path of torch_cgt_bench.py (default: %(default)s)")
    a = ap.parse_args()

    cap = int(a.mem_cap_gb * 1e9)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and cap > hard:
        cap = hard
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))

    anchor = load_anchor(a.anchor)
    anchor.N_GENES = a.genes  # read by build()'s Encoder, TypeI and make_adjacency when they are called
    T = a.genes + 1
    res = dict(config="train_step", genes=a.genes, batch=a.batch, threads=a.threads, reps=a.reps, warmup=a.warmup,
               mem_cap_gb=round(cap / 1e9, 2), attn_probs_gb=round(anchor.L * anchor.H * T * T * 4 / 1e9, 2),
               anchor=os.path.relpath(os.path.abspath(a.anchor), os.path.dirname(HERE)))

    import torch
    torch.set_num_threads(a.threads)
    gf = anchor.blas_gflops(torch)
    res["blas_gflops"] = round(gf, 1)
    res["torch"] = torch.__version__
    if gf < 20 and not os.environ.get("ANCHOR_ALLOW_SLOW_BLAS"):
        raise SystemExit(f"anchor_scaling.py: PyTorch's BLAS runs a 1024^3 fp32 GEMM at {gf:.1f} GFLOP/s: this is the reference "
                         "BLAS, not an anchor. Install OpenBLAS (apt-get install libopenblas0-pthread) and run again.")

    ts = []
    stage = "setup"
    try:
        # The anchor's run_config("train_step"), with N_GENES = --genes and B = --batch.
        torch.manual_seed(0)
        M = anchor.build(torch)
        F = torch.nn.functional
        enc = M["Encoder"]()
        adj = M["make_adjacency"]()
        t1 = M["TypeI"]()
        B = a.batch
        params = list(enc.parameters()) + list(t1.parameters())
        opt = torch.optim.Adam(params, lr=1e-3)
        pert_idx = torch.stack([torch.randperm(a.genes)[:anchor.N_PERT] for _ in range(B)])
        y = torch.randn(B)

        def fn():
            opt.zero_grad(set_to_none=True)
            out, w = enc(want_attn=True)
            pred, _ = t1(out[1:], out[0], pert_idx)
            loss = F.mse_loss(pred, y) + 0.1 * M["kl_term"](w, adj)
            loss.backward()
            opt.step()

        res["params"] = sum(p.numel() for p in params)
        res["adj_edges_used"] = int(adj[0].numel())
        res["rss_setup_mb"] = round(rss_mb(), 1)
        stage = "warmup"
        for _ in range(a.warmup):
            fn()
        stage = "timed step"
        for _ in range(a.reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    except (RuntimeError, MemoryError) as e:
        msg = str(e)
        if isinstance(e, RuntimeError) and "allocate" not in msg and "memory" not in msg.lower():
            raise  # not an allocation failure
        res.update(oom=True, needed=needed(e, cap / 1e9), failed_in=stage, median_s=None, min_s=None, max_s=None, times_s=[round(t, 4) for t in ts],
                   peak_rss_mb=round(rss_mb(), 1))
        print(json.dumps(res), flush=True)
        return
    res.update(oom=False, median_s=statistics.median(ts), min_s=min(ts), max_s=max(ts), times_s=[round(t, 4) for t in ts],
               peak_rss_mb=round(rss_mb(), 1))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
