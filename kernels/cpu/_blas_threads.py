"""BLAS thread limits for the CPU paths that call BLAS on small problems (threadpoolctl).

OpenBLAS starts its threads for a call above a size threshold that is low for these problems:
a ``syrk`` of a 1e4 x 32 tile, the dot products of SciPy's L-BFGS-B over a few hundred
parameters. On a quiet 2-core machine a second thread gains 3-10 % there; on a busy one it costs
3-16x (``kernels/cpu/gram.py``, ``fastopt/optim/lbfgs.py`` give the measurements). The callers
limit BLAS to one thread around such work with :func:`limit`.
"""
from __future__ import annotations

import contextlib

__all__ = ["limit", "threads"]

_controller = None


def _blas():
    """threadpoolctl's controller of the loaded BLAS libraries, created once (it scans them): the
    first caller must have loaded the BLAS it wants limited (NumPy's; SciPy's with scipy.linalg)."""
    global _controller
    if _controller is None:
        import scipy.linalg  # noqa: F401  (SciPy's own OpenBLAS, loaded before the scan)
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController().select(user_api="blas")
    return _controller


def limit(n):
    """A context with every loaded BLAS library limited to ``n`` threads (None: unchanged).
    Entering and leaving costs ~7-14 us."""
    return contextlib.nullcontext() if n is None else _blas().limit(limits=n)


def threads():
    """The BLAS libraries' current thread count (the largest), or None without BLAS."""
    return max((lib.num_threads for lib in _blas().lib_controllers), default=None)
