"""Diagnosis, not a suite: what OMP_WAIT_POLICY=PASSIVE costs PyTorch's optimisers (and fastopt's threads).

Run:  /work/venv/bin/python bench/diag_omp_policy.py

Runs the same measurement in three child processes: OMP_WAIT_POLICY=PASSIVE with PyTorch's
default thread count, the OpenMP runtimes' default policy (unset: threads spin a while
before sleeping), and PASSIVE with ``torch.set_num_threads(1)``. Each child times PyTorch's
Adam step (fused and foreach) on one 1e3 tensor, one 1e5 tensor and 1000 tensors of 1e3,
and fastopt's threaded Adam kernel against its serial twin at 2^16 and 2^17 elements.
Printed: best and median per-step times in each child, and the ratios of each child to
the PASSIVE one. The children run one after another, so compare ratios, knowing that a
busy neighbour on this shared machine can still blur them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import itertools, json, statistics, sys, time
import numpy as np
import torch
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)

def times(fn, reps):
    for _ in range(3):
        fn()
    xs = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); xs.append(time.perf_counter() - t0)
    return min(xs), statistics.median(xs)

out = {}
for label, k, size in (("1x1e3", 1, 1000), ("1x1e5", 1, 100000), ("1000x1e3", 1000, 1000)):
    for mode in ("fused", "foreach"):
        ts = []
        for _ in range(k):
            t = torch.randn(size).requires_grad_(True)
            t.grad = torch.randn(size) * 0.01
            ts.append(t)
        opt = torch.optim.Adam(ts, lr=1e-3, **({"fused": True} if mode == "fused" else {"foreach": True}))
        out[f"torch {mode} {label}"] = times(opt.step, 40 if k > 1 else 400)

sys.path.insert(0, sys.argv[2])
import fastopt
from _capture import captured_launch
for e in (16, 17):
    n = 2 ** e
    p = np.random.rand(n).astype(np.float32); g = p * np.float32(0.01)
    m = np.zeros_like(p); v = np.zeros_like(p)
    c = itertools.count(1)
    kernel, args = captured_launch(lambda: fastopt.adam_step(p, g, m, v, step=next(c), lr=1e-3))
    out[f"fastopt adam.serial 2^{e}"] = times(lambda: kernel.serial(*args), 400)
    out[f"fastopt adam.threaded 2^{e}"] = times(lambda: kernel.threaded(*args), 400)
print(json.dumps(out))
"""

CONFIGS = [("PASSIVE, default threads", {"OMP_WAIT_POLICY": "PASSIVE"}, 0),
           ("default policy, default threads", {}, 0),
           ("PASSIVE, torch 1 thread", {"OMP_WAIT_POLICY": "PASSIVE"}, 1)]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    results = {}
    for name, extra, threads in CONFIGS:
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        env.update(extra)
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads), here], capture_output=True, text=True,
                             env=env, check=True)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results[CONFIGS[0][0]]
    print(f"{'row':34s}" + "".join(f"{n:>34s}" for n, _, _ in CONFIGS))
    for row in base:
        cells = []
        for name, _, _ in CONFIGS:
            best, med = results[name][row]
            cells.append(f"{best * 1e6:9.1f} / {med * 1e6:9.1f} us ({base[row][0] / best:4.1f}x)")
        print(f"{row:34s}" + "".join(f"{c:>34s}" for c in cells))
    print("\ncells: best / median per call (best-of speed-up over the PASSIVE, default-threads child)")


if __name__ == "__main__":
    main()
