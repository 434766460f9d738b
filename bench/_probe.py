"""Read-modify-write probe kernels: the bandwidth ceiling of each fused update.

Each probe moves exactly the bytes of the update it stands for, and nothing else:

- ``adam_probe(p, g, m, v)``: reads p, g, m, v and writes p, m, v (fp32: 28 B per element),
  as ``kernels/cpu/optim.py::adam`` without AMSGrad;
- ``momentum_probe(p, g, m)``: reads p, g, m and writes p, m (fp32: 20 B per element),
  as ``heavy_ball`` (and PyTorch's SGD with momentum).

The arithmetic is one add per stream, so the probe is limited by memory (or cache)
bandwidth alone; the update ``x <- a - x`` keeps every value bounded however many
times it runs (no overflow, no subnormals), and each write depends on the old value
so no load can be dropped.

Like the library's kernels each probe has a ``.serial`` and a ``.threaded`` (``prange``)
build from one source, compiled with the project's decorator, and the plain call picks
between them with the library's own ``PARALLEL_MIN_SIZE`` (read at call time), so the
ceiling at a size is measured with the threading fastopt uses at that size.

The loop index runs from 0 (``prange(n)``): LLVM sees it is non-negative, drops
Numba's negative-index wraparound and vectorises the loop (see diag_vectorisation.py).
"""
from __future__ import annotations

from numba import prange

from fastopt.kernels.cpu import optim as _optim
from fastopt.kernels.cpu._jit import jit, parallel_twin

__all__ = ["adam_probe", "momentum_probe", "PROBES", "BYTES_PER_ELEMENT"]


@jit
def _adam_probe(p, g, m, v):
    for i in prange(p.size):
        gi = g[i]
        mi = gi - m[i]
        vi = gi - v[i]
        m[i] = mi
        v[i] = vi
        p[i] = (mi + vi) - p[i]


@jit
def _momentum_probe(p, g, m):
    for i in prange(p.size):
        mi = g[i] - m[i]
        m[i] = mi
        p[i] = mi - p[i]


def _by_size(serial):
    threaded = parallel_twin(serial)

    def run(p, *args):
        return (threaded if p.size >= _optim.PARALLEL_MIN_SIZE else serial)(p, *args)

    run.__name__ = serial.py_func.__name__.lstrip("_")
    run.serial, run.threaded = serial, threaded
    return run


adam_probe = _by_size(_adam_probe)
momentum_probe = _by_size(_momentum_probe)

#: update name -> (probe, number of arrays it takes)
PROBES = {"adam": (adam_probe, 4), "momentum": (momentum_probe, 3)}

#: update name -> (arrays read, arrays written): bytes per element = (reads + writes) * itemsize
BYTES_PER_ELEMENT = {"adam": (4, 3), "momentum": (3, 2)}
