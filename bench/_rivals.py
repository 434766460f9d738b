"""PyTorch's optimisers as the rivals of the suites: one builder, one naming.

Labels: ``torch-fused`` / ``torch-foreach`` / ``torch-for-loop`` are ``fused=True`` /
``foreach=True`` / ``foreach=False`` with PyTorch's default thread count (2 here);
``torch-fused-1thread`` is ``fused=True`` with ``torch.set_num_threads(1)`` while it is timed.

Which row a target is judged on: the issue's targets say "torch fused", i.e.
``torch.optim.Adam(fused=True)`` (or ``SGD(momentum=0.9, fused=True)``) in its default
configuration, PyTorch's default thread count included (2 on this machine). So the
PASS/FAIL verdicts use ``torch-fused`` (``FUSED_DEFAULT``).

Why a 1-thread row as well (supplementary, never the verdict): with
``OMP_WAIT_POLICY=PASSIVE`` (required by these suites, so that PyTorch's and Numba's OpenMP
runtimes do not spin against each other) an idle OpenMP thread sleeps at once, and every
parallel region pays for waking it. PyTorch's fused Adam opens one region per tensor, so
on small tensors its 2-thread time is mostly wake-ups (measured: 1 tensor of 1e3, 131 us
passive vs 26 us under the default policy; 1000 tensors of 1e3, 74 ms vs 6 ms). One thread
has no region to wake. ``torch-fused-best`` is the faster of the two fused rows (PyTorch at
its best under the same environment); the ratio against it is reported beside the verdict
so a reader sees how much of a speed-up over the default row comes from PyTorch's
wake-ups under PASSIVE.
"""
from __future__ import annotations

import contextlib

TORCH_IMPLS = ["torch-fused", "torch-fused-1thread", "torch-foreach", "torch-for-loop"]
FUSED_DEFAULT = "torch-fused"  # the verdict row: PyTorch's default configuration
FUSED_BEST = "torch-fused-best"  # supplementary: faster of 2 threads and 1 thread
FUSED_ROWS = ("torch-fused", "torch-fused-1thread")

_MODES = {"torch-fused": dict(fused=True), "torch-fused-1thread": dict(fused=True),
          "torch-foreach": dict(foreach=True), "torch-for-loop": dict(foreach=False)}


def threads_for(impl):
    """Thread count a row runs with (None: PyTorch's default)."""
    return 1 if impl.endswith("-1thread") else None


@contextlib.contextmanager
def torch_threads(torch, n):
    """Run the block with ``torch.set_num_threads(n)`` (no change when n is None)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def torch_step(torch, impl, algo, params, grads, lr):
    """``optimizer.step`` of PyTorch's ``algo`` ("adam" or "momentum" = SGD(momentum=0.9)) over tensors.

    ``params`` and ``grads`` are NumPy arrays; the tensors share their memory.
    """
    tensors = []
    for p, g in zip(params, grads):
        t = torch.from_numpy(p).requires_grad_(True)
        t.grad = torch.from_numpy(g)
        tensors.append(t)
    mode = _MODES[impl]
    if algo == "adam":
        return torch.optim.Adam(tensors, lr=lr, **mode).step
    if algo == "momentum":
        return torch.optim.SGD(tensors, lr=lr, momentum=0.9, **mode).step
    raise ValueError(f"unknown algo {algo!r}")
