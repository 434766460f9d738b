"""Numba kernels of the "optim" family: fused, in-place optimiser updates.

Same names, signatures and math as :mod:`fastopt.kernels.reference` (read the
update rules there). Each kernel makes one pass over memory: every element of
``p``, ``g`` and the state is read once and written once.

Work is split into fixed blocks of ``BLOCK`` elements; a block that straddles
segment (parameter-group) boundaries is cut into runs with one segment's scalars
each (``_runs``). Blocks run serially below ``PARALLEL_MIN_SIZE`` elements and on Numba's
threads (``prange``) above it. Because the blocks do not depend on the thread
count, results are bit-identical for any number of threads, including the one
reduction (``grad_sumsq``), whose per-block partial sums are added in block order.

Scalars are computed on the host in float64 and arrive as Python floats (the
per-segment ``lr``, ``l2``, ``shrink`` as float64 arrays); each kernel forms the
complements ``1 - beta`` in float64 (rounding beta first would cost up to 108 ulps of
``1 - 0.999`` in float32, as PyTorch does not) and then rounds every scalar once, on
entry, to the arrays' dtype, so that its loops run in that precision
alone (float64 scalars inside float32 loops measured 2-3.7x slower). Rounding on
entry gives the same bits as rounding on the host and saves ~200 ns per scalar
per call, which matters for the small models of scientific ML. Booleans as ``bool``.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import admit, closed as _closed, jit, parallel_twin

BLOCK = 1 << 14
#: Below this many elements one thread does the update: starting the thread pool
#: costs more than it saves (measured crossover, see bench/RESULTS.md).
PARALLEL_MIN_SIZE = 1 << 19


@jit(inline="always")
def _n_blocks(n):
    return (n + BLOCK - 1) // BLOCK


@jit(inline="always")
def _runs(bounds, n):
    """The work list: rows (lo, hi, s), unsigned, cutting the fixed blocks at segment boundaries.

    Every run lies in one block and one segment ``s``; the list depends on ``n`` and
    ``bounds`` only, never on the thread count.
    """
    nb = _n_blocks(n)
    # Unsigned: indexing with a signed int makes Numba wrap negative indices, a select
    # on every access that stops LLVM from vectorising the loops (scalar sqrt/div).
    out = np.empty((nb + bounds.size - 1, 3), dtype=np.uint64)
    k = 0
    for b in range(nb):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        s = np.searchsorted(bounds, lo, side="right") - 1
        while lo < hi:
            end = min(hi, bounds[s + 1])
            if end > lo:
                out[k, 0], out[k, 1], out[k, 2] = lo, end, s
                k += 1
            lo = end
            s += 1
    return out[:k]


@jit(inline="always")
def _lerp(a, b, w, one):
    """a + w (b - a), computed as PyTorch's ``lerp`` does (stable for w near 1)."""
    if w < 0.5:
        return a + w * (b - a)
    return b - (b - a) * (one - w)


def _by_size(serial, closed=False):
    """One entry point that runs the serial kernel on small arrays, the threaded twin on large ones.

    ``closed=True`` (for lean entries called without Python-side array checks): the two builds
    run only argument types that this entry point, the trusted one, has run before
    (:func:`fastopt.kernels.cpu._jit.closed`); the entry point admits the types of every call.
    """
    threaded = parallel_twin(serial)
    if closed:
        serial, threaded = _closed(serial), _closed(threaded)

        def run(p, *args):
            kernel = threaded if p.size >= PARALLEL_MIN_SIZE else serial
            try:
                return kernel(p, *args)
            except (TypeError, RuntimeError):  # types not admitted yet (refused before the kernel runs)
                return admit(kernel, p, *args)
    else:
        def run(p, *args):
            return (threaded if p.size >= PARALLEL_MIN_SIZE else serial)(p, *args)

    run.__name__ = serial.py_func.__name__.lstrip("_")
    run.__doc__ = serial.py_func.__doc__
    run.serial, run.threaded, run.parallel_min_size = serial, threaded, PARALLEL_MIN_SIZE
    return run


@jit
def _grad_sumsq(g):
    """sum g_i^2 in float64 (inf/NaN if g is not finite); fixed block order."""
    n = g.size
    nb = _n_blocks(n)
    partial = np.empty(nb, dtype=np.float64)
    for b in prange(nb):
        lo = b * BLOCK
        hi = min(lo + BLOCK, n)
        # Four fixed accumulators: vectorisable without reassociating (deterministic).
        a0 = a1 = a2 = a3 = 0.0
        i = lo
        while i + 4 <= hi:
            x0 = np.float64(g[i])
            x1 = np.float64(g[i + 1])
            x2 = np.float64(g[i + 2])
            x3 = np.float64(g[i + 3])
            a0 += x0 * x0
            a1 += x1 * x1
            a2 += x2 * x2
            a3 += x3 * x3
            i += 4
        while i < hi:
            x0 = np.float64(g[i])
            a0 += x0 * x0
            i += 1
        partial[b] = (a0 + a1) + (a2 + a3)
    total = 0.0
    for b in range(nb):
        total += partial[b]
    return total


grad_sumsq = _by_size(_grad_sumsq)


@jit
def _sgd(p, g, bounds, lr, l2, shrink, grad_mul):
    n = p.size
    T = p.dtype.type
    grad_mul = T(grad_mul)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        lr_s, l2_s, sh_s = T(lr[s]), T(l2[s]), T(shrink[s])
        for i in range(lo, hi):
            ge = grad_mul * g[i] + l2_s * p[i]
            p[i] = sh_s * p[i] - lr_s * ge


sgd = _by_size(_sgd)


@jit
def _heavy_ball(p, g, m, bounds, lr, l2, shrink, grad_mul, beta):
    n = p.size
    T = p.dtype.type
    grad_mul, beta = T(grad_mul), T(beta)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        lr_s, l2_s, sh_s = T(lr[s]), T(l2[s]), T(shrink[s])
        for i in range(lo, hi):
            ge = grad_mul * g[i] + l2_s * p[i]
            mi = beta * m[i] - lr_s * ge
            m[i] = mi
            p[i] = sh_s * p[i] + mi


heavy_ball = _by_size(_heavy_ball)


@jit
def _sgd_momentum(p, g, buf, bounds, lr, l2, shrink, grad_mul, momentum, dampening, nesterov, first_step):
    n = p.size
    T = p.dtype.type
    keep = T(1.0 - dampening)
    grad_mul, momentum = T(grad_mul), T(momentum)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        lr_s, l2_s, sh_s = T(lr[s]), T(l2[s]), T(shrink[s])
        for i in range(lo, hi):
            ge = grad_mul * g[i] + l2_s * p[i]
            bi = ge if first_step else momentum * buf[i] + keep * ge
            buf[i] = bi
            d = ge + momentum * bi if nesterov else bi
            p[i] = sh_s * p[i] - lr_s * d


sgd_momentum = _by_size(_sgd_momentum)


@jit(inline="always")
def _moments(p, g, m, v, i, grad_mul, l2_s, w1, w2, one, beta2):
    """Adam's and NAdam's gradient g_e = grad_mul g + l2 p and moments of element ``i``; m and v written.

    m <- m + w1 (g_e - m) (PyTorch's lerp),  v <- beta2 v + w2 g_e^2;  returns (g_e, m, v).
    """
    ge = grad_mul * g[i] + l2_s * p[i]
    mi = _lerp(m[i], ge, w1, one)
    vi = beta2 * v[i] + w2 * ge * ge
    m[i] = mi
    v[i] = vi
    return ge, mi, vi


@jit(inline="always")
def _adam_span(p, g, m, v, vmax, lo, hi, lr_s, l2_s, sh_s, grad_mul, w1, w2, one, beta2, eps, inv_bc2_sqrt,
               amsgrad):
    """The Adam update of elements ``lo <= i < hi`` (unsigned), scalars already in p's dtype."""
    for i in range(lo, hi):
        ge, mi, vi = _moments(p, g, m, v, i, grad_mul, l2_s, w1, w2, one, beta2)
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        denom = np.sqrt(vi) * inv_bc2_sqrt + eps
        p[i] = sh_s * p[i] - lr_s * (mi / denom)


@jit
def _adam(p, g, m, v, vmax, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt, amsgrad):
    n = p.size
    T = p.dtype.type
    w1, w2, one = T(1.0 - beta1), T(1.0 - beta2), T(1)
    # 1 / sqrt(1 - beta2^k) once: a multiply per element instead of a division (1 ulp at most)
    grad_mul, beta2, eps, inv_bc2_sqrt = T(grad_mul), T(beta2), T(eps), T(1.0 / bc2_sqrt)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        _adam_span(p, g, m, v, vmax, lo, hi, T(lr[s]), T(l2[s]), T(shrink[s]), grad_mul, w1, w2, one, beta2, eps,
                   inv_bc2_sqrt, amsgrad)


adam = _by_size(_adam)


@jit(inline="always")
def _disjoint(a0, b0, nbytes):
    """True when the ``nbytes``-long memory ranges starting at addresses ``a0`` and ``b0`` do not overlap."""
    return max(a0, b0) - min(a0, b0) >= nbytes


@jit(inline="always")
def _same_size_and_disjoint(p, g, m, v):
    """The plain kernel's own array checks: equal sizes, and no two arrays sharing memory."""
    n = p.size
    if g.size != n or m.size != n or v.size != n:
        return False
    if n == 0:
        return True
    nbytes = n * p.itemsize  # one dtype: the types of a closed kernel come from checked calls
    a, b, c, d = p.ctypes.data, g.ctypes.data, m.ctypes.data, v.ctypes.data
    return (_disjoint(a, b, nbytes) and _disjoint(a, c, nbytes) and _disjoint(a, d, nbytes)
            and _disjoint(b, c, nbytes) and _disjoint(b, d, nbytes) and _disjoint(c, d, nbytes))


@jit
def _adam_plain(p, g, m, v, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt):
    """Adam on one segment without AMSGrad: ``adam`` with the segment's ``lr``, ``l2``, ``shrink`` as
    scalars and no ``vmax`` (12 arguments, not 15: Numba's call costs ~0.4 us less). Same bits as ``adam``.

    The lean entry of the plain call, which checks the arrays' types only (through Numba's
    compiled signatures, see :func:`fastopt.kernels.cpu._jit.closed`): it returns False and touches
    nothing when the sizes differ or any two arrays' memory overlaps, True after the update.
    """
    if not _same_size_and_disjoint(p, g, m, v):
        return False
    n = p.size
    T = p.dtype.type
    w1, w2, one = T(1.0 - beta1), T(1.0 - beta2), T(1)
    grad_mul, beta2, eps, inv_bc2_sqrt = T(grad_mul), T(beta2), T(eps), T(1.0 / bc2_sqrt)
    lr, l2, shrink = T(lr), T(l2), T(shrink)
    for b in prange(_n_blocks(n)):
        lo = np.uint64(b * BLOCK)
        hi = np.uint64(min(b * BLOCK + BLOCK, n))
        _adam_span(p, g, m, v, m, lo, hi, lr, l2, shrink, grad_mul, w1, w2, one, beta2, eps, inv_bc2_sqrt,
                   False)
    return True


adam_plain = _by_size(_adam_plain, closed=True)


@jit
def _nadam(p, g, m, v, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2, coef_g, coef_m):
    n = p.size
    T = p.dtype.type
    w1, w2, one = T(1.0 - beta1), T(1.0 - beta2), T(1)
    # 1 / (1 - beta2^k) once: a multiply per element instead of a division
    grad_mul, beta2, eps, inv_bc2 = T(grad_mul), T(beta2), T(eps), T(1.0 / bc2)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        l2_s, sh_s = T(l2[s]), T(shrink[s])
        step_g = T(lr[s] * coef_g)
        step_m = T(lr[s] * coef_m)
        for i in range(lo, hi):
            ge, mi, vi = _moments(p, g, m, v, i, grad_mul, l2_s, w1, w2, one, beta2)
            denom = np.sqrt(vi * inv_bc2) + eps
            p[i] = sh_s * p[i] - (step_g * ge + step_m * mi) / denom  # one division, not two


nadam = _by_size(_nadam)


@jit
def _rmsprop(p, g, sq, gavg, buf, bounds, lr, l2, shrink, grad_mul, alpha, eps, momentum, centered):
    n = p.size
    T = p.dtype.type
    w, one = T(1.0 - alpha), T(1)
    grad_mul, alpha, eps, momentum = T(grad_mul), T(alpha), T(eps), T(momentum)
    use_momentum = momentum > 0
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        lr_s, l2_s, sh_s = T(lr[s]), T(l2[s]), T(shrink[s])
        for i in range(lo, hi):
            ge = grad_mul * g[i] + l2_s * p[i]
            sqi = alpha * sq[i] + w * ge * ge
            sq[i] = sqi
            if centered:
                gai = _lerp(gavg[i], ge, w, one)
                gavg[i] = gai
                avg = np.sqrt(sqi - gai * gai) + eps
            else:
                avg = np.sqrt(sqi) + eps
            if use_momentum:
                bi = momentum * buf[i] + ge / avg
                buf[i] = bi
                p[i] = sh_s * p[i] - lr_s * bi
            else:
                p[i] = sh_s * p[i] - lr_s * (ge / avg)


rmsprop = _by_size(_rmsprop)


@jit
def _adagrad(p, g, ssum, bounds, lr, l2, shrink, grad_mul, eps):
    n = p.size
    T = p.dtype.type
    grad_mul, eps = T(grad_mul), T(eps)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        lr_s, l2_s, sh_s = T(lr[s]), T(l2[s]), T(shrink[s])
        for i in range(lo, hi):
            ge = grad_mul * g[i] + l2_s * p[i]
            si = ssum[i] + ge * ge
            ssum[i] = si
            p[i] = sh_s * p[i] - lr_s * (ge / (np.sqrt(si) + eps))


adagrad = _by_size(_adagrad)


@jit
def _lion(p, g, m, bounds, lr, l2, shrink, grad_mul, beta1, beta2):
    n = p.size
    T = p.dtype.type
    w1, w2, one = T(1.0 - beta1), T(1.0 - beta2), T(1)
    grad_mul = T(grad_mul)
    runs = _runs(bounds, n)
    for r in prange(runs.shape[0]):
        lo, hi, s = runs[r, 0], runs[r, 1], runs[r, 2]
        lr_s, l2_s, sh_s = T(lr[s]), T(l2[s]), T(shrink[s])
        for i in range(lo, hi):
            ge = grad_mul * g[i] + l2_s * p[i]
            c = _lerp(m[i], ge, w1, one)
            p[i] = sh_s * p[i] - lr_s * np.sign(c)
            m[i] = _lerp(m[i], ge, w2, one)


lion = _by_size(_lion)
