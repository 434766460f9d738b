r"""Numba kernels of the "fourier" family: Fourier features with derivative channels, and their backward.

Same names, signatures and math as :mod:`fastopt.kernels.reference_nn` (read the channel layout
``(C, J, n_features)``, ``C in {1, 1 + d, 2 + d}``, and the closed forms there)::

    psi_jk = s x_j . b_k;   features [x (if keep_x), cos psi, sin psi]
    d/dx_m: -s B_mk sin, s B_mk cos;   Laplacian: -s^2 |b_k|^2 (cos, sin)

    psib_jk = -sin Cb_0 + cos Sb_0 - sum_m s B_mk (cos Cb_m + sin Sb_m) + s^2 |b_k|^2 (sin Cb_L - cos Sb_L)
    dL/dB_mk = s sum_j x_jm psib_jk + s sum_j (cos Sb_m - sin Cb_m) - 2 s^2 B_mk sum_j (cos Cb_L + sin Sb_L)
    dL/dx_jm = Xb_jm + sum_k s B_mk psib_jk

How the kernels are built:

- each sin/cos pair is evaluated once per (point, frequency) with :func:`_vecmath.sincos` (a
  vectorisable polynomial; Numba's own ``np.sin``/``np.cos`` become a scalar libm call) and
  every channel is derived from it: the forward writes the value channel first and reads the
  pair back from that row (still in L1) for the derivative channels;
- every inner loop runs over the K frequencies of one point, contiguous in ``B``, ``out`` and
  ``adj``, with no branch inside (the channel order and ``d`` select whole loops), so LLVM
  vectorises it (packed ``vfmadd``/``vmul`` on ``ymm``, checked with ``inspect_asm``). ``psi``
  is accumulated over ``m`` in a K-row (the cos slot of ``out`` in the forward, a scratch row in
  the backward), so that no loop over ``d`` sits inside the vector loop;
- the reduction over k of ``dL/dx`` runs in ``LANES`` fixed partial sums (a vector of
  accumulators, added in a fixed order at the end): without fast-math LLVM does not reorder a
  scalar sum, which would be a chain of K dependent additions per point;
- the value channel alone in 1D (C = 1, d = 1: the layer of the lecture and of Tancik et al.
  without derivative channels) has a path of its own in the backward (:func:`_value_block_1d`):
  psi, sin/cos and psib in one loop per point over flat, unsigned indices (no psi, sin and cos rows,
  which the derivative channels need), the block's psib rows kept, then ``dL/dx`` per point as one
  explicit-vector dot product (:func:`_dot`). Measured (J = 1e6, K = 64, 2 threads): 55 -> 37 ms
  (float32), 106 -> 80 ms (float64), i.e. 1.2x the time of one sincos evaluation of the layer.
  Where it came from (one thread, 2048 points in cache, float32, ns per point): psi + sin/cos + psib
  57 -> 29 (the fused loop), dL/dx ~21-27 either way (scratch-row partial sums before, the dot now);
- points are cut into fixed blocks of ``BLOCK`` points. ``dL/dB`` (a sum over points) is
  accumulated per block into its own row of partial sums, and the rows are added in block
  order, so results are bit-identical for any thread count and for the serial and threaded
  builds (``optim.grad_sumsq`` does the same). Blocks run serially below
  ``PARALLEL_MIN_WORK`` sin/cos pairs and on Numba's threads (``prange``) above;
- computation in the arrays' dtype; ``s`` is rounded on entry to it (a float64 scalar inside a
  float32 loop measured 2-3.7x slower in ``optim``), and so are the per-frequency constants
  ``s B`` and ``s^2 |b|^2`` (computed once per call, a (d + 1, K) array: the only allocations
  are that, one 4 x max(K, LANES) scratch per block of points in the backward, and the
  (blocks, 2 d + 1, K) partial sums of ``dL/dB``; nothing per point).

Speed (``bench/bench_fourier.py``, J = 1e6, K = 64, d = 1, C = 3, 2 shared cores, noisy): 2.3-15x
the best of NumPy and PyTorch. The float32 forward writes its 3 channels at the bandwidth of a plain
write loop over the same bytes, and the float32 backward reads its adjoints at that of a plain
read loop: with C = 3 the layer moves 3x the bytes of one sin/cos evaluation's outputs, so it
cannot come within 1.5x of that evaluation's time. With C = 1 (the same bytes) the forward
measured 1.2x (float32) and 0.9x (float64) of it in a standalone timing, 2.1x and 0.9x in a
contended benchmark run.

Accuracy (float32): the argument ``psi`` is formed in the dtype, so for ``|psi| ~ 1e3`` its
rounding alone moves sin and cos by ~``eps |psi|`` (absolute): a property of evaluating the layer
in float32 at all, not of these kernels. The tests scale their tolerance with
``sum_m |s x_m B_mk|`` (``tests/test_fourier_cpu.py``).
Beyond ``|psi| = 2^20`` (float32) / ``2^47`` (float64) sin/cos are NaN (:mod:`._vecmath`).
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit, parallel_twin
from ._vecmath import prefer_512_bit, sincos, vfma, vhsum, vlanes, vload, vload_m, vnative, vzero

__all__ = ["fourier_forward", "fourier_backward", "BLOCK", "LANES", "PARALLEL_MIN_WORK"]

#: Points per block: the unit of work of a thread and of the dL/dB partial sums.
BLOCK = 256
U = np.uint64
#: Partial sums of the dL/dx reduction over frequencies (a multiple of the vector width).
LANES = 16
#: Below this many (point, frequency) pairs one thread runs the kernel: sincos_array's measured
#: crossover (2^17 elements, 2-core development machine); not yet measured for this family.
PARALLEL_MIN_WORK = 1 << 17


@jit(inline="always")
def _constants(B, s, T):
    """(d + 1, K) rows in the dtype: ``s B_m`` for m < d, then ``s^2 |b_k|^2``."""
    d, K = B.shape
    cst = np.empty((d + 1, K), dtype=T)
    nb = cst[d]
    for k in range(K):
        nb[k] = T(0)
    for m in range(d):
        sBm = cst[m]
        Bm = B[m]
        for k in range(K):
            v = s * Bm[k]
            sBm[k] = v
            nb[k] += v * v
    return cst


@jit(inline="always")
def _psi(xj, cst, d, K, w):
    """``w[k] <- sum_m x_m (s B_mk)``: one vector loop per m, none over m inside."""
    x0 = xj[0]
    c0 = cst[0]
    for k in range(K):
        w[k] = x0 * c0[k]
    for m in range(1, d):
        xm = xj[m]
        cm = cst[m]
        for k in range(K):
            w[k] += xm * cm[k]


@jit
def _fourier_forward(x, B, s, keep_x, out):
    """Fourier features with their derivative channels: ``out <- gamma(x)`` and its x-derivatives.

    gamma(x) = [x (if keep_x), cos(s x B), sin(s x B)]; channel ``1 + k`` is d/dx_k, channel
    ``1 + d`` the Laplacian (``reference_nn.fourier_forward``; closed forms in the module docstring).

    Args:
      x: (J, d) points, the dtype of ``out``.
      B: (d, K) frequencies, the dtype of ``out``; K may be 0 (then keep_x).
      s: float, the scale of the argument (2 pi or 1), rounded to the dtype on entry.
      keep_x: bool, whether the features start with x itself.
      out: (C, J, [d] + 2K) float32 or float64, C-contiguous, written (every element);
        C in {1, 1 + d, 2 + d} selects the channels.
    Returns:
      None. The kernel trusts its inputs (:mod:`fastopt` validates them).

    Example:
      >>> import numpy as np
      >>> from fastopt.kernels.cpu import fourier
      >>> x, B = np.array([[0.125]]), np.array([[1.0]])  # psi = 2 pi x b = pi / 4
      >>> out = np.empty((3, 1, 2))                    # u, u', u'' of [cos psi, sin psi]
      >>> fourier.fourier_forward(x, B, 2 * np.pi, False, out)
      >>> np.round(out[:, 0], 5).tolist()              # (cos, sin), 2 pi (-sin, cos), -(2 pi)^2 (cos, sin)
      [[0.70711, 0.70711], [-4.44288, 4.44288], [-27.91546, -27.91546]]
    """
    T = out.dtype.type
    J, d = x.shape
    K = B.shape[1]
    C = out.shape[0]
    s = T(s)
    zero, one = T(0), T(1)
    off = d if keep_x else 0
    cst = _constants(B, s, T)
    nb = cst[d]
    nblk = (J + BLOCK - 1) // BLOCK
    for blk in prange(nblk):
        lo = blk * BLOCK
        hi = min(lo + BLOCK, J)
        for j in range(lo, hi):
            xj = x[j]
            row = out[0, j]
            cr = row[off:off + K]
            sr = row[off + K:off + 2 * K]
            for m in range(off):
                row[m] = xj[m]
            if K > 0:
                _psi(xj, cst, d, K, cr)
                for k in range(K):
                    sn, c = sincos(cr[k])
                    cr[k] = c
                    sr[k] = sn
            if C > 1:
                for m in range(d):
                    rm = out[1 + m, j]
                    for i in range(off):
                        rm[i] = one if i == m else zero
                    sBm = cst[m]
                    gc = rm[off:off + K]
                    gs = rm[off + K:off + 2 * K]
                    for k in range(K):
                        gc[k] = -sBm[k] * sr[k]
                        gs[k] = sBm[k] * cr[k]
            if C == d + 2:
                rl = out[d + 1, j]
                for i in range(off):
                    rl[i] = zero
                lc = rl[off:off + K]
                ls = rl[off + K:off + 2 * K]
                for k in range(K):
                    lc[k] = -nb[k] * cr[k]
                    ls[k] = -nb[k] * sr[k]


@jit(inline="always")
def _dot(a, b, bo, n):
    """``sum_{k < n} a[k] b[bo + k]`` in one explicit vector of partial sums (an FMA per lane and term, k
    in order, a masked tail; the lanes then added pairwise in a fixed order): deterministic."""
    v = vnative(b, 1)
    VL = vlanes(v)
    acc = vzero(v)
    k = 0
    while k + VL <= n:
        acc = vfma(vload(v, a, k), vload(v, b, bo + k), acc)
        k += VL
    if k < n:
        acc = vfma(vload_m(v, a, k, n - k), vload_m(v, b, bo + k, n - k), acc)
    return vhsum(acc)


@jit(inline="always")
def _value_block_1d(x, sB, A, n0, off, K, lo, hi, pbs, p1, want_B):
    """The value channel alone in 1D (C = 1, d = 1), points lo..hi: ``pbs[(j - lo) K + k] <- psib_jk`` and
    ``p1[k] += x_j psib_jk``. One loop per point for psi, sin/cos and psib (no psi, sin and cos rows:
    the general path needs them for the derivative channels); flat, unsigned indices; same operations
    (and bits) as the general path."""
    KU = U(K)
    for j in range(lo, hi):
        x0 = x[j, 0]
        ar = U(j) * U(n0) + U(off)
        pr = U(j - lo) * KU
        for k in range(KU):
            sn, c = sincos(x0 * sB[k])
            pbs[pr + k] = c * A[ar + KU + k] - sn * A[ar + k]
        if want_B:
            for k in range(KU):
                p1[k] += x0 * pbs[pr + k]


@jit
def _fourier_backward(x, B, s, keep_x, adj, gB, gx):
    """Gradients of a loss through the Fourier features: ``gB <- dL/dB``, ``gx <- dL/dx``.

    ``adj[ch, j, f] = dL/d(channel ch of feature f at point j)``; the formulas are in the module
    docstring (``reference_nn.fourier_backward``). ``gx`` is the full gradient in x through every
    channel. ``gB`` is a sum over points, reduced in a fixed block order: the same bits for any
    number of threads.

    Args:
      x: (J, d) points.  B: (d, K) frequencies.  s: float scale.  keep_x: bool.
      adj: (C, J, [d] + 2K) adjoints of the feature channels, float32 or float64.
      gB: (d, K) written, or size 0 (any shape, e.g. ``np.empty(0)``): not wanted.
      gx: (J, d) written, or size 0: not wanted.
    Returns:
      None. The kernel trusts its inputs.
    """
    prefer_512_bit()
    T = adj.dtype.type
    # an unwanted output may come as np.empty(0): one 2-D type for both forms (never indexed then)
    gB = np.atleast_2d(gB)
    gx = np.atleast_2d(gx)
    J, d = x.shape
    K = B.shape[1]
    C = adj.shape[0]
    s = T(s)
    zero = T(0)
    off = d if keep_x else 0
    want_B = gB.size > 0
    want_x = gx.size > 0
    has_grad = C > 1
    has_lap = C == d + 2
    cst = _constants(B, s, T)
    nb = cst[d]
    nblk = (J + BLOCK - 1) // BLOCK
    # per block: rows 0..d-1 sum_j x_jm psib_jk, rows d..2d-1 sum_j (cos Sb_m - sin Cb_m), row 2d sum_j
    # (cos Cb_L + sin Sb_L); added in block order below (deterministic for any thread count)
    part = np.zeros((nblk if want_B else 0, 2 * d + 1, K), dtype=T)
    value_1d = C == 1 and d == 1 and K > 0  # the layer alone in 1D: its own path, below
    A = adj.reshape(-1)
    for blk in prange(nblk):
        prefer_512_bit()  # the threaded build outlines this body into a function of its own
        lo = blk * BLOCK
        hi = min(lo + BLOCK, J)
        if value_1d:
            pbs = np.empty((hi - lo) * K, dtype=T)
            _value_block_1d(x, cst[0], A, adj.shape[2], off, K, lo, hi, pbs, part[blk, 0] if want_B else pbs,
                            want_B)
            if want_x:
                for j in range(lo, hi):
                    g = _dot(cst[0], pbs, (j - lo) * K, K)
                    gx[j, 0] = g + A[j * adj.shape[2]] if keep_x else g
            continue
        scratch = np.empty((4, max(K, LANES)), dtype=T)
        w, sn_r, cs_r, pb = scratch[0], scratch[1], scratch[2], scratch[3]
        lanes = scratch[0, :LANES]  # psi's row, free once sin/cos are taken
        for j in range(lo, hi):
            xj = x[j]
            a0 = adj[0, j]
            if K > 0:
                _psi(xj, cst, d, K, w)
                cb = a0[off:off + K]
                sb = a0[off + K:off + 2 * K]
                for k in range(K):
                    sn, c = sincos(w[k])
                    sn_r[k] = sn
                    cs_r[k] = c
                    pb[k] = c * sb[k] - sn * cb[k]
                if has_grad:
                    for m in range(d):
                        am = adj[1 + m, j]
                        cbm = am[off:off + K]
                        sbm = am[off + K:off + 2 * K]
                        sBm = cst[m]
                        for k in range(K):
                            pb[k] -= sBm[k] * (cs_r[k] * cbm[k] + sn_r[k] * sbm[k])
                        if want_B:
                            p2 = part[blk, d + m]
                            for k in range(K):
                                p2[k] += cs_r[k] * sbm[k] - sn_r[k] * cbm[k]
                if has_lap:
                    al = adj[d + 1, j]
                    cbl = al[off:off + K]
                    sbl = al[off + K:off + 2 * K]
                    for k in range(K):
                        pb[k] += nb[k] * (sn_r[k] * cbl[k] - cs_r[k] * sbl[k])
                    if want_B:
                        p3 = part[blk, 2 * d]
                        for k in range(K):
                            p3[k] += cs_r[k] * cbl[k] + sn_r[k] * sbl[k]
                if want_B:
                    for m in range(d):
                        p1 = part[blk, m]
                        xm = xj[m]
                        for k in range(K):
                            p1[k] += xm * pb[k]
            if want_x:
                gxj = gx[j]
                for m in range(d):
                    sBm = cst[m]
                    for i in range(LANES):
                        lanes[i] = zero
                    k0 = 0
                    while k0 + LANES <= K:
                        for i in range(LANES):
                            lanes[i] += sBm[k0 + i] * pb[k0 + i]
                        k0 += LANES
                    for i in range(K - k0):  # the tail: one partial sum each
                        lanes[i] += sBm[k0 + i] * pb[k0 + i]
                    h = LANES
                    while h > 1:  # pairwise, fixed order
                        h //= 2
                        for i in range(h):
                            lanes[i] += lanes[i + h]
                    g = lanes[0]
                    gxj[m] = g + a0[m] if keep_x else g
    if want_B:
        two_s2 = T(2) * s * s
        for m in range(d):
            gBm = gB[m]
            Bm = B[m]
            for k in range(K):
                gBm[k] = zero
            for r in range(nblk):  # block order: the same bits for any thread count
                p1 = part[r, m]
                p2 = part[r, d + m]
                for k in range(K):
                    gBm[k] += p1[k] + p2[k]
            for k in range(K):
                gBm[k] *= s
            if has_lap:
                for k in range(K):
                    acc = zero
                    for r in range(nblk):
                        acc += part[r, 2 * d, k]
                    gBm[k] -= two_s2 * Bm[k] * acc


def _by_size(serial):
    """One entry point: the serial kernel below ``PARALLEL_MIN_WORK`` (point, frequency) pairs, the threaded twin above."""
    threaded = parallel_twin(serial)

    def run(x, B, *args):
        work = x.shape[0] * max(B.shape[1], 1)
        return (threaded if work >= PARALLEL_MIN_WORK else serial)(x, B, *args)

    run.__name__ = serial.py_func.__name__.lstrip("_")
    run.__qualname__ = run.__name__
    run.__doc__ = serial.py_func.__doc__
    run.serial, run.threaded = serial, threaded
    return run


fourier_forward = _by_size(_fourier_forward)
fourier_backward = _by_size(_fourier_backward)
