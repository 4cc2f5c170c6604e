#!/usr/bin/python3
"""PyTorch side of benchmarks/attention_memory.cpp: one multi-head self-attention layer at the Cell
Graph Transformer's size (T=6608, d=64, 8 heads, float32), forward + backward, eval (dropout 0) and
training (dropout 0.1 on the probabilities), best of N, plus the process's peak RSS.
Run with Debian's PyTorch: /usr/bin/python3 benchmarks/attention_torch.py [T] [d] [heads] [repeats]"""
import os
import resource
import sys
import time

import torch

T, d, H, reps = (int(a) for a in (sys.argv[1:] + ["6608", "64", "8", "3"][len(sys.argv) - 1:])[:4])
torch.set_num_threads(2)
# The anchor's rule (../shared/anchors/torch_cgt_bench.py): no figures on the reference BLAS.
a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
best = float("inf")
for _ in range(3):
    t0 = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - t0)
blas = 2 * 1024**3 / best / 1e9
if blas < 20 and not os.environ.get("ANCHOR_ALLOW_SLOW_BLAS"):
    raise SystemExit(f"PyTorch's BLAS runs a 1024^3 fp32 GEMM at {blas:.1f} GFLOP/s: the reference BLAS, not a baseline. "
                     "Install OpenBLAS (apt-get install libopenblas0-pthread) and run again.")
torch.manual_seed(0)
x = torch.randn(1, T, d, requires_grad=True)
dy = torch.randn(1, T, d) * 1e-3
print(f"torch {torch.__version__} attention layer T={T} d={d} heads={H} float, {torch.get_num_threads()} threads, BLAS {blas:.0f} GFLOP/s")
for mode, p in (("eval", 0.0), ("training", 0.1)):
    mha = torch.nn.MultiheadAttention(d, H, dropout=p, batch_first=True)
    mha.train(p > 0)
    fw, bw = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        y, _ = mha(x, x, x, need_weights=False)
        t1 = time.perf_counter()
        y.backward(dy)
        t2 = time.perf_counter()
        fw.append(t1 - t0)
        bw.append(t2 - t1)
        x.grad = None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"{mode:8s}: forward {min(fw):.3f} s, backward {min(bw):.3f} s (best of {reps}); process peak RSS {rss:.1f} MB")
