"""What the experiments share: array modules per backend, timers, moving averages, figures, claims.

Every experiment module has ``run(quick=False, seed=0, backend="cpu", progress=False) -> dict``,
``claims(result) -> [(claim, number shown, passed)]`` and ``plot(result, path)`` (a PNG through
matplotlib's Agg backend; matplotlib is the ``plot`` extra).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np

__all__ = ["Claim", "xp_of", "to_host", "moving_average", "figure", "save", "progress_bar", "Timer", "fmt"]


class Claim(NamedTuple):
    """A claim of the lecture, the number that backs it, and whether it held."""

    claim: str
    number: str
    passed: bool


def xp_of(backend):
    """NumPy for "cpu"/"reference", CuPy for "gpu" (imported only then)."""
    if backend == "gpu":
        from .. import _dispatch

        _dispatch.require_gpu()
        import cupy

        return cupy
    return np


def to_host(a):
    """A NumPy copy/view of a NumPy or CuPy array."""
    return a if isinstance(a, np.ndarray) else a.get()


def moving_average(values, window):
    """Trailing moving average ``mean(values[max(0, k - window + 1) : k + 1])`` (same length).

    The lecture plots noisy losses this way ("I have shown moving averages - all three are noisy").
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return v
    window = max(1, int(window))
    c = np.concatenate([[0.0], np.cumsum(v)])
    k = np.arange(1, v.size + 1)
    lo = np.maximum(0, k - window)
    return (c[k] - c[lo]) / (k - lo)


def figure(ncols=2, width=11.0, height=4.0):
    """A matplotlib figure with ``ncols`` axes, on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def save(fig, path):
    """Write the figure to ``path`` (PNG) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def progress_bar(enabled, total, desc, unit="step"):
    """A tqdm bar (closed by the caller) or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=False)


class Timer:
    """Accumulates wall time of the timed blocks: ``with timer: ...``; ``timer.seconds``, ``timer.count``."""

    def __init__(self):
        self.seconds, self.count = 0.0, 0

    def __enter__(self):
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t0
        self.count += 1
        return False

    @property
    def per_call_us(self):
        return 1e6 * self.seconds / max(1, self.count)


def fmt(x, digits=2):
    """A compact number: 1.23e-05, 0.123, 12.3, 'nan', 'inf'."""
    if x is None:
        return "n/a"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:.{digits}e}"
    return f"{x:.{digits + 1}g}"
