r"""Numba kernels of the "mlp" family: small networks carrying derivative channels, forward and backward.

Same names, signatures and math as :mod:`fastopt.kernels.reference_nn` (read the channel
layout ``(C, J, n)``, ``C in {1, 1 + d, 2 + d}``, the flat parameter layout and the backward
derivation there). Computation is in the arrays' dtype (float32 or float64).

How the kernels are built
-------------------------
- **Tape.** :func:`mlp_forward` stores what :func:`mlp_backward` needs, so the backward
  recomputes nothing (no transcendental function at all in the backward): the feature
  channels ``z_0`` and the hidden channels ``z_l`` (l < L; ``z_L`` is the ``basis`` output),
  and the pre-activation channels ``a_l`` whose value row is overwritten by ``sigma'(a_l)``
  (``sigma''`` and ``sigma'''`` follow from ``sigma`` and ``sigma'``: tanh ``t'' = -2 t t'``,
  ``t''' = -2 t' (1 - 3 t^2)``; sin ``-sin``, ``-cos``). The tape also holds the backward's
  workspace: two adjoint buffers, the transposed weights and one row of partial parameter
  gradients per block of points, so neither kernel allocates (layout: :func:`_tape_layout`).
- **Blocks of points.** Points are cut into fixed blocks of ``BLOCK_POINTS``. Tiny widths
  (every hidden width below ``GEMM_MIN_WIDTH`` = 16, measured) one kernel runs the whole forward (features,
  every layer, output, ansatz) block by block with hand-written loops, and one kernel the
  whole backward; each block accumulates its parameter gradient into its own row of partial
  sums, and the rows are added in block order. The blocks do not depend on the thread count,
  so the serial build and the threaded build (``prange`` over blocks, from
  ``PARALLEL_MIN_POINTS`` points) give bit-identical results.
- **Wider layers** (a hidden width >= ``GEMM_MIN_WIDTH``, the lecture's 20 included: BLAS
  measured 1.9x (float64) to 2.7x (float32) faster there): each dense layer is one BLAS GEMM
  over the stacked channels (``C J`` rows: ``np.dot`` inside Numba on 2-D contiguous views of the
  tape), ``dW = z^T ab`` and ``zb = ab W^T`` likewise; the activation with its derivative
  channels, the biases, the output layer and the ansatz stay fused elementwise loops over
  blocks of points, whose per-block partial sums (biases, c, c0) are added in block order.
  The same kernel runs this path too (``np.dot`` with ``out=`` into the tape: no allocation).
- **Vectorisation.** Inner loops run over contiguous units with unsigned indices (a signed
  index makes Numba wrap negative values: a select per access that stops LLVM vectorising);
  tanh and sin/cos come from :mod:`._vecmath` (vectorisable polynomials; Numba's ``np.tanh``
  and ``np.sin`` are scalar libm calls). Dot products over units use four fixed partial sums
  (without fast-math LLVM does not reassociate a scalar reduction).
- **Fourier features** (``K > 0``) are computed on the host side by
  :mod:`fastopt.kernels.cpu.fourier` (``fourier_forward`` into the tape's ``z_0``, and
  ``fourier_backward`` from the kernel's ``zb_0`` for ``dL/dB``), imported lazily; if that
  module cannot be imported, a private serial Numba version of the reference's formulas is used
  (:func:`_fourier_forward_fallback`, :func:`_fourier_backward_fallback`). ``K = 0`` (keep x)
  is handled inside the kernels.

Rounding differs from the float64 reference only by summation order, by explicit FMAs
(``_vecmath._fma``: one rounding instead of two, no fast-math) and by the <= 2.6 ulp of the
vectorised tanh/sin: float64 results agree to ~1e-14 relative to their scale.
"""
from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit, parallel_twin
from ._vecmath import _fma, sincos, tanh

__all__ = ["activation_derivatives", "ansatz_forward", "ansatz_backward", "mlp_tape_size", "mlp_forward",
           "mlp_backward", "BLOCK_POINTS", "PARALLEL_MIN_POINTS", "GEMM_MIN_WIDTH"]

#: Points per block: the unit of work of a thread and of the partial parameter gradients.
BLOCK_POINTS = 64
#: From this many points the threaded build runs (blocks on Numba's threads). A first guess (a
#: block of 64 points of the 1-20-20-1 network costs ~25 us forward + backward, a thread wake-up
#: under PASSIVE tens of us), not yet a measured crossover.
PARALLEL_MIN_POINTS = 2048
#: From this hidden width on, dense layers are BLAS GEMMs over the stacked channels. Measured on
#: the 2-core development machine, 1-20-20-1 tanh, J = 100, u/u'/u'': forward + backward 42 us
#: (float64) and 25 us (float32) through BLAS against 79 us and 68 us with the hand-written
#: per-block loops, whose inner loops over 20 units are too short to amortise their set-up.
GEMM_MIN_WIDTH = 16

U = np.uint64


# =========================================================================== layouts
@jit(inline="always")
def _net_offsets(widths):
    L = widths.size - 1
    offs = np.empty(2 * L + 3, dtype=np.int64)
    p = 0
    for l in range(L):
        offs[2 * l] = p
        offs[2 * l + 1] = p + widths[l] * widths[l + 1]
        p += (widths[l] + 1) * widths[l + 1]
    offs[2 * L] = p
    offs[2 * L + 1] = p + widths[L]
    offs[2 * L + 2] = p + widths[L] + 1
    return offs


@jit(inline="always")
def _tape_layout(C, J, widths):
    """Offsets into the tape (int64), in this order:

    ``z_l`` (C, J, n_l) for l = 0..L-1 (index l), ``a_l`` (C, J, n_l) for l = 1..L (index L + l - 1),
    then [2L] ``ub`` (C, J), [2L+1] adjoint buffer 0 and [2L+2] buffer 1 (C, J, max width each),
    [2L+3 + l] ``W_{l+1}^T`` for l = 0..L-1, [3L+3] the partial gradients (blocks, P_net),
    [3L+4] the end (the tape's size).
    """
    L = widths.size - 1
    CJ = C * J
    nmax = 0
    for l in range(L + 1):
        nmax = max(nmax, widths[l])
    offs = np.empty(3 * L + 5, dtype=np.int64)
    p = 0
    for l in range(L):
        offs[l] = p
        p += CJ * widths[l]
    for l in range(1, L + 1):
        offs[L + l - 1] = p
        p += CJ * widths[l]
    offs[2 * L] = p
    p += CJ
    offs[2 * L + 1] = p
    p += CJ * nmax
    offs[2 * L + 2] = p
    p += CJ * nmax
    for l in range(L):
        offs[2 * L + 3 + l] = p
        p += widths[l] * widths[l + 1]
    offs[3 * L + 3] = p
    p_net = 0
    for l in range(L):
        p_net += (widths[l] + 1) * widths[l + 1]
    p_net += widths[L] + 1
    nb = (J + BLOCK_POINTS - 1) // BLOCK_POINTS
    p += nb * p_net
    offs[3 * L + 4] = p
    return offs


@jit
def _tape_size(C, J, widths):
    return _tape_layout(C, J, widths)[-1]


def mlp_tape_size(J, d, widths, order):
    """Length of the ``tape`` that :func:`mlp_forward` fills and :func:`mlp_backward` reads.

    Holds (module docstring) the feature and hidden channels, the pre-activation channels,
    the backward's adjoint buffers, transposed weights and per-block partial gradients: about
    ``C J (sum of widths + 2 max width) + blocks * n_params`` elements of the arrays' dtype.
    """
    C = (1, 1 + int(d), 2 + int(d))[int(order)]
    return int(_tape_size(C, int(J), np.asarray(widths, dtype=np.int64)))


# =========================================================================== activation table
@jit
def _activation_derivatives(act, a, out):
    m = out.shape[0]
    n = U(a.size)
    T = out.dtype.type
    one, two, three = T(1), T(2), T(3)
    for e in range(n):
        v = T(a[e])
        if act == 0:
            t = tanh(v)
            q = one - t * t
            d0, d1, d2, d3 = t, q, -two * t * q, -two * q * (one - three * t * t)
        else:
            sn, cs = sincos(v)
            d0, d1, d2, d3 = sn, cs, -sn, -cs
        out[0, e] = d0
        if m > 1:
            out[1, e] = d1
        if m > 2:
            out[2, e] = d2
        if m > 3:
            out[3, e] = d3


def activation_derivatives(act, a, out):
    """``out[k] <- sigma^(k)(a)`` for k = 0 .. out.shape[0] - 1 (at most 3), in ``out``'s dtype.

    Args:
      act: int activation code (0 tanh, 1 sin).
      a: array of pre-activations, any shape, C-contiguous.
      out: (m, *a.shape) with m <= 4, C-contiguous, written.
    """
    _activation_derivatives(int(act), a.reshape(-1), out.reshape(out.shape[0], -1))


# =========================================================================== ansatz
@jit(inline="always")
def _ansatz_fwd_rows(d, C, J, n, V, P, G, has_g, R, lo, hi):
    """R <- g + phi V for points lo..hi; V, R flat (C, J, n), P, G flat (C, J). R may be V:
    the channels are written last to first, each after every read of it."""
    two = R.dtype.type(2)
    lap = C == d + 2
    for j in range(lo, hi):
        p0 = P[j]
        for i in range(n):
            v0 = V[j * n + i]
            if lap:
                acc = P[(1 * J + j)] * V[(1 * J + j) * n + i]
                for k in range(1, d):
                    acc += P[(1 + k) * J + j] * V[((1 + k) * J + j) * n + i]
                r = P[(d + 1) * J + j] * v0 + two * acc + p0 * V[((d + 1) * J + j) * n + i]
                if has_g:
                    r += G[(d + 1) * J + j]
                R[((d + 1) * J + j) * n + i] = r
            if C > 1:
                for k in range(d):
                    r = P[(1 + k) * J + j] * v0 + p0 * V[((1 + k) * J + j) * n + i]
                    if has_g:
                        r += G[(1 + k) * J + j]
                    R[((1 + k) * J + j) * n + i] = r
            r = p0 * v0
            if has_g:
                r += G[j]
            R[j * n + i] = r


@jit(inline="always")
def _ansatz_bwd_rows(d, C, J, n, Ub, P, R, lo, hi):
    """R <- adjoints of v from those of g + phi v (reference step 1); R may be Ub: channel 0
    (which reads all) first, then the gradient channels, then the Laplacian."""
    two = R.dtype.type(2)
    lap = C == d + 2
    uL = R.dtype.type(0)
    for j in range(lo, hi):
        p0 = P[j]
        for i in range(n):
            r = p0 * Ub[j * n + i]
            if C > 1:
                acc = P[J + j] * Ub[(J + j) * n + i]
                for k in range(1, d):
                    acc += P[(1 + k) * J + j] * Ub[((1 + k) * J + j) * n + i]
                r += acc
            if lap:
                uL = Ub[((d + 1) * J + j) * n + i]
                r += P[(d + 1) * J + j] * uL
            R[j * n + i] = r
            if C > 1:
                for k in range(d):
                    idx = ((1 + k) * J + j) * n + i
                    rk = p0 * Ub[idx]
                    if lap:
                        rk += two * P[(1 + k) * J + j] * uL
                    R[idx] = rk
            if lap:
                R[((d + 1) * J + j) * n + i] = p0 * uL


@jit
def _ansatz_forward(d, V, P, G, R):
    C, J, n = V.shape
    _ansatz_fwd_rows(d, C, J, n, V.reshape(-1), P.reshape(-1), G.reshape(-1), G.size > 0, R.reshape(-1), 0, J)


@jit
def _ansatz_backward(d, Ub, P, R):
    C, J, n = Ub.shape
    _ansatz_bwd_rows(d, C, J, n, Ub.reshape(-1), P.reshape(-1), R.reshape(-1), 0, J)


def _as3(v):
    return v.reshape(v.shape + (1,)) if v.ndim == 2 else v


def ansatz_forward(d, v, phi, g, out):
    """Output transform ``out <- g + phi v`` with its derivative channels (product rule).

    Args: as :func:`fastopt.kernels.reference_nn.ansatz_forward` (C-contiguous arrays of one
    dtype; ``out`` may be ``v``).
    """
    _ansatz_forward(int(d), _as3(v), phi, g if g.size else phi[:0], _as3(out))


def ansatz_backward(d, adj_out, phi, adj_v):
    """Adjoints of ``v``'s channels from those of ``g + phi v`` (``adj_v`` may be ``adj_out``).

    Args: as :func:`fastopt.kernels.reference_nn.ansatz_backward`.
    """
    _ansatz_backward(int(d), _as3(adj_out), phi, _as3(adj_v))


# =========================================================================== building blocks
@jit(inline="always")
def _features_x_rows(x, Z, zo, C, J, d, lo, hi):
    """Features of the plain network (K = 0, keep x): value x, gradient e_k, Laplacian 0."""
    T = Z.dtype.type
    zero, one = T(0), T(1)
    for j in range(lo, hi):
        for k in range(d):
            Z[zo + j * d + k] = x[j, k]
        for c in range(1, C):
            for k in range(d):
                Z[zo + (c * J + j) * d + k] = one if c == 1 + k else zero


@jit(inline="always")
def _rows_matmul(X, xo, n_in, M, mo, n_out, Y, yo, C, J, lo, hi):
    """Y = X M for the rows of points lo..hi of every channel; M row-major (n_in, n_out) at offset mo (axpy form)."""
    zero = Y.dtype.type(0)
    nI, nO = U(n_in), U(n_out)  # new names: rebinding an int64 argument to uint64 stops vectorisation
    for c in range(C):
        for j in range(lo, hi):
            r = U(c * J + j)
            xr = U(xo) + r * nI
            yr = U(yo) + r * nO
            for i in range(nO):
                Y[yr + i] = zero
            for m in range(nI):
                xm = X[xr + m]
                mr = U(mo) + m * nO
                for i in range(nO):
                    Y[yr + i] = _fma(xm, M[mr + i], Y[yr + i])


@jit(inline="always")
def _dense_rows(Z, zo, n_in, theta, wo, bo, n_out, A, ao, C, J, lo, hi):
    """a = z W (+ b on the value channel) for the rows of points lo..hi of every channel."""
    _rows_matmul(Z, zo, n_in, theta, wo, n_out, A, ao, C, J, lo, hi)
    nO = U(n_out)
    for j in range(lo, hi):
        ar = U(ao) + U(j) * nO
        for i in range(nO):
            A[ar + i] += theta[U(bo) + i]


@jit(inline="always")
def _bias_rows(theta, bo, n, A, ao, lo, hi):
    nU = U(n)  # a new name: rebinding an int64 argument to uint64 stops vectorisation
    for j in range(lo, hi):
        ar = U(ao) + U(j) * nU
        for i in range(nU):
            A[ar + i] += theta[U(bo) + i]


@jit(inline="always")
def _act_fwd_rows(act, A, ao, Z, zo, n, C, d, J, lo, hi):
    """z = sigma(a) with its channels (reference ``_act_forward``); a's value row <- sigma'(a)."""
    T = Z.dtype.type
    one, two = T(1), T(2)
    m = U((hi - lo) * n)
    a0 = U(ao + lo * n)
    z0 = U(zo + lo * n)
    if act == 0:
        for e in range(m):
            t = tanh(A[a0 + e])
            Z[z0 + e] = t
            A[a0 + e] = one - t * t
    else:
        for e in range(m):
            sn, cs = sincos(A[a0 + e])
            Z[z0 + e] = sn
            A[a0 + e] = cs
    if C > 1:
        for k in range(d):
            ak = U(ao + ((1 + k) * J + lo) * n)
            zk = U(zo + ((1 + k) * J + lo) * n)
            for e in range(m):
                Z[zk + e] = A[a0 + e] * A[ak + e]
    if C == d + 2:
        zl = U(zo + ((d + 1) * J + lo) * n)
        al = U(ao + ((d + 1) * J + lo) * n)
        a1 = U(ao + (J + lo) * n)
        for e in range(m):
            Z[zl + e] = A[a1 + e] * A[a1 + e]
        for k in range(1, d):
            ak = U(ao + ((1 + k) * J + lo) * n)
            for e in range(m):
                Z[zl + e] += A[ak + e] * A[ak + e]
        if act == 0:
            for e in range(m):
                s1 = A[a0 + e]
                s2 = -two * Z[z0 + e] * s1
                Z[zl + e] = s2 * Z[zl + e] + s1 * A[al + e]
        else:
            for e in range(m):
                Z[zl + e] = -Z[z0 + e] * Z[zl + e] + A[a0 + e] * A[al + e]


@jit(inline="always")
def _dot(Z, zr, w, wo, n):
    """sum_i Z[zr + i] w[wo + i] in four fixed partial sums (deterministic, not latency-bound)."""
    zero = Z.dtype.type(0)
    s0 = s1 = s2 = s3 = zero
    i = U(0)
    nU = U(n)  # a new name: rebinding an int64 argument to uint64 stops vectorisation
    while i + U(4) <= nU:
        s0 = _fma(Z[zr + i], w[wo + i], s0)
        s1 = _fma(Z[zr + i + U(1)], w[wo + i + U(1)], s1)
        s2 = _fma(Z[zr + i + U(2)], w[wo + i + U(2)], s2)
        s3 = _fma(Z[zr + i + U(3)], w[wo + i + U(3)], s3)
        i += U(4)
    while i < nU:
        s0 = _fma(Z[zr + i], w[wo + i], s0)
        i += U(1)
    return (s0 + s1) + (s2 + s3)


@jit(inline="always")
def _output_rows(Zb, N, theta, co, c0o, has_c0, out, C, J, lo, hi):
    """u = z_L c (+ c0 on the value channel) for points lo..hi, into out (C, J)."""
    for c in range(C):
        for j in range(lo, hi):
            r = U(c * J + j)
            u = _dot(Zb, r * U(N), theta, U(co), N)
            if c == 0 and has_c0:
                u += theta[U(c0o)]
            out[c, j] = u


@jit(inline="always")
def _act_bwd_rows(act, A, ao, Zv, zvo, X, xo, n, C, d, J, lo, hi):
    """In place in X: adjoints of a's channels from those of z's (reference ``_act_backward``)."""
    T = X.dtype.type
    two, three, one = T(2), T(3), T(1)
    m = U((hi - lo) * n)
    a0 = U(ao + lo * n)
    z0 = U(zvo + lo * n)
    x0 = U(xo + lo * n)
    if C == 1:
        for e in range(m):
            X[x0 + e] = A[a0 + e] * X[x0 + e]
        return
    lap = C == d + 2
    if d == 1 and lap:  # the 1D PINN case (u, u', u''): straight-line code, vectorised
        a1, aL = U(ao + (J + lo) * n), U(ao + (2 * J + lo) * n)
        x1, xL = U(xo + (J + lo) * n), U(xo + (2 * J + lo) * n)
        for e in range(m):
            s1 = A[a0 + e]
            t = Zv[z0 + e]
            tanh_s2 = -two * t * s1
            s2 = tanh_s2 if act == 0 else -t
            s3 = -two * s1 * (one - three * t * t) if act == 0 else -s1
            ak = A[a1 + e]
            zb1 = X[x1 + e]
            zbL = X[xL + e]
            ab = s1 * X[x0 + e]
            ab += s2 * (ak * zb1)
            ab += (s3 * (ak * ak) + s2 * A[aL + e]) * zbL
            X[x0 + e] = ab
            X[x1 + e] = s1 * zb1 + two * s2 * ak * zbL
            X[xL + e] = s1 * zbL
        return
    zbL = T(0)
    for e in range(m):
        s1 = A[a0 + e]
        t = Z0 = Zv[z0 + e]
        if act == 0:
            s2 = -two * t * s1
            s3 = -two * s1 * (one - three * t * t)
        else:
            s2 = -Z0
            s3 = -s1
        ab = s1 * X[x0 + e]
        ak = A[U(ao + (J + lo) * n) + e]
        acc = ak * X[U(xo + (J + lo) * n) + e]
        sq = ak * ak
        for k in range(1, d):
            ak = A[U(ao + ((1 + k) * J + lo) * n) + e]
            acc += ak * X[U(xo + ((1 + k) * J + lo) * n) + e]
            sq += ak * ak
        ab += s2 * acc
        if lap:
            zbL = X[U(xo + ((d + 1) * J + lo) * n) + e]
            ab += (s3 * sq + s2 * A[U(ao + ((d + 1) * J + lo) * n) + e]) * zbL
        X[x0 + e] = ab
        for k in range(d):
            xk = U(xo + ((1 + k) * J + lo) * n) + e
            abk = s1 * X[xk]
            if lap:
                abk += two * s2 * A[U(ao + ((1 + k) * J + lo) * n) + e] * zbL
            X[xk] = abk
        if lap:
            xl = U(xo + ((d + 1) * J + lo) * n) + e
            X[xl] = s1 * X[xl]


@jit(inline="always")
def _wgrad_rows(Z, zo, n_in, X, xo, n_out, G, go, C, J, lo, hi):
    """G[m, i] += sum over the rows of points lo..hi (every channel) of z[r, m] ab[r, i]."""
    nI, nO = U(n_in), U(n_out)  # new names: rebinding an int64 argument to uint64 stops vectorisation
    for c in range(C):
        for j in range(lo, hi):
            r = U(c * J + j)
            zr = U(zo) + r * nI
            xr = U(xo) + r * nO
            for m in range(nI):
                zm = Z[zr + m]
                gr = U(go) + m * nO
                for i in range(nO):
                    G[gr + i] = _fma(zm, X[xr + i], G[gr + i])


@jit(inline="always")
def _colsum_rows(X, xo, n, G, go, lo, hi):
    """G[i] += sum_{j in lo..hi} X[j, i] (the value channel's rows)."""
    nU = U(n)  # a new name: rebinding an int64 argument to uint64 stops vectorisation
    for j in range(lo, hi):
        xr = U(xo) + U(j) * nU
        for i in range(nU):
            G[U(go) + i] += X[xr + i]


@jit(inline="always")
def _zgrad_rows(X, xo, n_out, WT, wto, n_in, Y, yo, C, J, lo, hi):
    """zb = ab W^T for the rows of points lo..hi, with W^T (n_out, n_in) in the tape."""
    _rows_matmul(X, xo, n_out, WT, wto, n_in, Y, yo, C, J, lo, hi)


# =========================================================================== the kernels
@jit
def _mlp_forward(x, theta, widths, act, has_c0, phi, g, out, basis, tape, features_given, pB):
    C, J = out.shape
    d = x.shape[1]
    L = widths.size - 1
    gemm = False
    for l in range(1, L + 1):
        if widths[l] >= GEMM_MIN_WIDTH:
            gemm = True
    to = _tape_layout(C, J, widths)
    po = _net_offsets(widths) + pB
    bas = basis.reshape(-1)
    N = widths[L]
    nb = (J + BLOCK_POINTS - 1) // BLOCK_POINTS
    has_phi = phi.size > 0
    P = phi.reshape(-1)
    Gg = g.reshape(-1)
    o3 = out.reshape(-1)
    if gemm:
        if not features_given:
            for b in prange(nb):
                lo, hi = b * BLOCK_POINTS, min(J, (b + 1) * BLOCK_POINTS)
                if L == 0:
                    _features_x_rows(x, bas, 0, C, J, d, lo, hi)
                else:
                    _features_x_rows(x, tape, to[0], C, J, d, lo, hi)
        for l in range(1, L + 1):
            n_in, n_out = widths[l - 1], widths[l]
            ao = to[L + l - 1]
            Zin = tape[to[l - 1]:to[l - 1] + C * J * n_in].reshape(C * J, n_in)
            W = theta[po[2 * l - 2]:po[2 * l - 2] + n_in * n_out].reshape(n_in, n_out)
            Aout = tape[ao:ao + C * J * n_out].reshape(C * J, n_out)
            np.dot(Zin, W, Aout)
            for b in prange(nb):
                lo, hi = b * BLOCK_POINTS, min(J, (b + 1) * BLOCK_POINTS)
                _bias_rows(theta, po[2 * l - 1], n_out, tape, ao, lo, hi)
                if l == L:
                    _act_fwd_rows(act, tape, ao, bas, 0, n_out, C, d, J, lo, hi)
                else:
                    _act_fwd_rows(act, tape, ao, tape, to[l], n_out, C, d, J, lo, hi)
        for b in prange(nb):
            lo, hi = b * BLOCK_POINTS, min(J, (b + 1) * BLOCK_POINTS)
            _output_rows(bas, N, theta, po[2 * L], po[2 * L + 1], has_c0, out, C, J, lo, hi)
            if has_phi:
                _ansatz_fwd_rows(d, C, J, 1, o3, P, Gg, g.size > 0, o3, lo, hi)
        return
    for b in prange(nb):
        lo, hi = b * BLOCK_POINTS, min(J, (b + 1) * BLOCK_POINTS)
        if not features_given:
            if L == 0:
                _features_x_rows(x, bas, 0, C, J, d, lo, hi)
            else:
                _features_x_rows(x, tape, to[0], C, J, d, lo, hi)
        for l in range(1, L + 1):
            n_in, n_out = widths[l - 1], widths[l]
            ao = to[L + l - 1]
            _dense_rows(tape, to[l - 1], n_in, theta, po[2 * l - 2], po[2 * l - 1], n_out, tape, ao, C, J, lo, hi)
            if l == L:
                _act_fwd_rows(act, tape, ao, bas, 0, n_out, C, d, J, lo, hi)
            else:
                _act_fwd_rows(act, tape, ao, tape, to[l], n_out, C, d, J, lo, hi)
        _output_rows(bas, N, theta, po[2 * L], po[2 * L + 1], has_c0, out, C, J, lo, hi)
        if has_phi:
            _ansatz_fwd_rows(d, C, J, 1, o3, P, Gg, g.size > 0, o3, lo, hi)


@jit
def _mlp_backward(d, theta, widths, act, has_c0, phi, basis, tape, adj, grad, want_zb0, pB):
    """Every parameter gradient except dL/dB; leaves zb_0 in adjoint buffer 0 when ``want_zb0``."""
    C, J = adj.shape
    L = widths.size - 1
    gemm = False
    for l in range(1, L + 1):
        if widths[l] >= GEMM_MIN_WIDTH:
            gemm = True
    to = _tape_layout(C, J, widths)
    no = _net_offsets(widths)
    po = no + pB
    p_net = no[2 * L + 2]
    bas = basis.reshape(-1)
    N = widths[L]
    nb = (J + BLOCK_POINTS - 1) // BLOCK_POINTS
    has_phi = phi.size > 0
    P = phi.reshape(-1)
    A2 = adj.reshape(-1)
    uo = to[2 * L]
    buf = (to[2 * L + 1], to[2 * L + 2])
    part0 = to[3 * L + 3]
    zero = tape.dtype.type(0)
    # W^T of every layer whose zb is needed (small path)
    if not gemm:
        for l in range(1, L + 1):
            if l > 1 or want_zb0:
                n_in, n_out = widths[l - 1], widths[l]
                wo, wto = po[2 * l - 2], to[2 * L + 3 + l - 1]
                for m in range(n_in):
                    for i in range(n_out):
                        tape[wto + i * n_in + m] = theta[wo + m * n_out + i]
    for b in prange(nb):
        lo, hi = b * BLOCK_POINTS, min(J, (b + 1) * BLOCK_POINTS)
        go = part0 + b * p_net
        for q in range(p_net):
            tape[go + q] = zero
        # output adjoints through the ansatz
        for c in range(C):
            for j in range(lo, hi):
                tape[uo + c * J + j] = A2[c * J + j]
        if has_phi:
            _ansatz_bwd_rows(d, C, J, 1, tape[uo:uo + C * J], P, tape[uo:uo + C * J], lo, hi)
        # output layer: dc, dc0, zb_L = ub c
        xL = U(buf[L % 2])
        gc = U(go + no[2 * L])
        cU = U(po[2 * L])
        NU = U(N)
        for c in range(C):
            for j in range(lo, hi):
                r = U(c * J + j)
                ub = tape[U(uo) + r]
                for i in range(NU):
                    tape[gc + i] = _fma(bas[r * NU + i], ub, tape[gc + i])
                    tape[xL + r * NU + i] = ub * theta[cU + i]
        if has_c0:
            c0b = zero
            for j in range(lo, hi):
                c0b += tape[uo + j]
            tape[go + no[2 * L + 1]] = c0b
        if not gemm:
            for l in range(L, 0, -1):
                n_in, n_out = widths[l - 1], widths[l]
                aoB = to[L + l - 1]
                xB = buf[l % 2]
                if l == L:
                    _act_bwd_rows(act, tape, aoB, bas, 0, tape, xB, n_out, C, d, J, lo, hi)
                else:
                    _act_bwd_rows(act, tape, aoB, tape, to[l], tape, xB, n_out, C, d, J, lo, hi)
                _wgrad_rows(tape, to[l - 1], n_in, tape, xB, n_out, tape, go + no[2 * l - 2], C, J, lo, hi)
                _colsum_rows(tape, xB, n_out, tape, go + no[2 * l - 1], lo, hi)
                if l > 1 or want_zb0:
                    _zgrad_rows(tape, xB, n_out, tape, to[2 * L + 3 + l - 1], n_in, tape, buf[(l - 1) % 2],
                                C, J, lo, hi)
    if gemm:
        for l in range(L, 0, -1):
            n_in, n_out = widths[l - 1], widths[l]
            ao = to[L + l - 1]
            xo = buf[l % 2]
            for b2 in prange(nb):
                lo2, hi2 = b2 * BLOCK_POINTS, min(J, (b2 + 1) * BLOCK_POINTS)
                go2 = part0 + b2 * p_net
                if l == L:
                    _act_bwd_rows(act, tape, ao, bas, 0, tape, xo, n_out, C, d, J, lo2, hi2)
                else:
                    _act_bwd_rows(act, tape, ao, tape, to[l], tape, xo, n_out, C, d, J, lo2, hi2)
                _colsum_rows(tape, xo, n_out, tape, go2 + no[2 * l - 1], lo2, hi2)
            Ab = tape[xo:xo + C * J * n_out].reshape(C * J, n_out)
            Zin = tape[to[l - 1]:to[l - 1] + C * J * n_in].reshape(C * J, n_in)
            Gw = grad[po[2 * l - 2]:po[2 * l - 2] + n_in * n_out].reshape(n_in, n_out)
            np.dot(Zin.T, Ab, Gw)
            if l > 1 or want_zb0:
                W = theta[po[2 * l - 2]:po[2 * l - 2] + n_in * n_out].reshape(n_in, n_out)
                yo = buf[(l - 1) % 2]
                np.dot(Ab, W.T, tape[yo:yo + C * J * n_in].reshape(C * J, n_in))
    # partial gradients, in block order (the W blocks come from BLAS on the GEMM path)
    for l in range(L + 1):
        if l < L:
            lo_q = no[2 * l + 1] if gemm else no[2 * l]
            hi_q = no[2 * l + 2]
        else:  # c, and c0 when present (the partial rows always keep a slot for it)
            lo_q, hi_q = no[2 * L], no[2 * L + 2] if has_c0 else no[2 * L + 1]
        for q in range(lo_q, hi_q):
            acc = zero
            for b3 in range(nb):
                acc += tape[part0 + b3 * p_net + q]
            grad[pB + q] = acc


_mlp_forward_threaded = parallel_twin(_mlp_forward)
_mlp_backward_threaded = parallel_twin(_mlp_backward)


# =========================================================================== Fourier layer
@jit
def _fourier_forward_fallback(x, B, s, keep_x, out):
    """Reference formulas, serial: used only if :mod:`.fourier` cannot be imported."""
    C, J, n0 = out.shape
    d, K = B.shape
    T = out.dtype.type
    s = T(s)
    off = d if keep_x else 0
    for j in range(J):
        for c in range(C):
            for f in range(n0):
                out[c, j, f] = T(0)
        if keep_x:
            for k in range(d):
                out[0, j, k] = x[j, k]
                if C > 1:
                    out[1 + k, j, k] = T(1)
        for f in range(K):
            psi = T(0)
            nb = T(0)
            for k in range(d):
                psi += x[j, k] * B[k, f]
                nb += B[k, f] * B[k, f]
            sn, cs = sincos(s * psi)
            out[0, j, off + f] = cs
            out[0, j, off + K + f] = sn
            if C > 1:
                for k in range(d):
                    out[1 + k, j, off + f] = -s * B[k, f] * sn
                    out[1 + k, j, off + K + f] = s * B[k, f] * cs
            if C == d + 2:
                out[d + 1, j, off + f] = -(s * s * nb) * cs
                out[d + 1, j, off + K + f] = -(s * s * nb) * sn


@jit
def _fourier_backward_fallback(x, B, s, keep_x, adj, gB, gx):
    """Reference formulas, serial: used only if :mod:`.fourier` cannot be imported."""
    C, J, n0 = adj.shape
    d, K = B.shape
    T = adj.dtype.type
    s = T(s)
    off = d if keep_x else 0
    if gB.size:
        gB[:, :] = T(0)
    if gx.size:
        gx[:, :] = T(0)
    for j in range(J):
        for f in range(K):
            psi = T(0)
            nb = T(0)
            for k in range(d):
                psi += x[j, k] * B[k, f]
                nb += B[k, f] * B[k, f]
            sn, cs = sincos(s * psi)
            Cb, Sb = adj[:, j, off + f], adj[:, j, off + K + f]
            pb = -sn * Cb[0] + cs * Sb[0]
            if C > 1:
                for m in range(d):
                    pb -= s * B[m, f] * (cs * Cb[1 + m] + sn * Sb[1 + m])
            if C == d + 2:
                pb += s * s * nb * (sn * Cb[d + 1] - cs * Sb[d + 1])
            if gB.size:
                for k in range(d):
                    gk = s * x[j, k] * pb
                    if C > 1:
                        gk += s * (-sn * Cb[1 + k] + cs * Sb[1 + k])
                    if C == d + 2:
                        gk -= T(2) * s * s * B[k, f] * (cs * Cb[d + 1] + sn * Sb[d + 1])
                    gB[k, f] += gk
            if gx.size:
                for k in range(d):
                    gx[j, k] += s * B[k, f] * pb
        if gx.size and keep_x:
            for k in range(d):
                gx[j, k] += adj[0, j, k]


_FOURIER = []


def _fourier():
    """(fourier_forward, fourier_backward): the CPU "fourier" family, or the private fallback."""
    if not _FOURIER:
        try:
            from . import fourier as _f
            _FOURIER.extend((_f.fourier_forward, _f.fourier_backward))
        except ImportError:
            _FOURIER.extend((_fourier_forward_fallback, _fourier_backward_fallback))
    return _FOURIER


# =========================================================================== public kernels
def mlp_forward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, g, out, basis, tape):
    """Forward pass carrying derivative channels: output ``u`` and the basis ``z_L``; fills ``tape``.

    Args: as :func:`fastopt.kernels.reference_nn.mlp_forward`. Every array C-contiguous, of one
    dtype (float32 or float64; ``phi``/``g`` of size 0 when unused); ``widths`` int64; ``tape`` of
    length :func:`mlp_tape_size`.
    """
    C, J = out.shape
    K = B.shape[1]
    L = widths.shape[0] - 1
    if K:
        n0 = int(widths[0])
        feats = basis if L == 0 else tape[:C * J * n0].reshape(C, J, n0)
        _fourier()[0](x, B, out.dtype.type(s), bool(keep_x), feats)
    pB = B.size if train_B else 0
    kern = _mlp_forward_threaded if J >= PARALLEL_MIN_POINTS else _mlp_forward
    kern(x, theta, widths, act, has_c0, phi, g, out, basis, tape, K > 0, pB)


def mlp_backward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, basis, tape, adj, grad):
    """Gradient of a loss on the output channels w.r.t. every parameter: ``grad <- dL/dtheta``.

    Args: as :func:`fastopt.kernels.reference_nn.mlp_backward`; ``basis`` and ``tape`` are what
    :func:`mlp_forward` wrote (the tape's workspace part is overwritten).
    """
    C, J = adj.shape
    pB = B.size if train_B else 0
    kern = _mlp_backward_threaded if J >= PARALLEL_MIN_POINTS else _mlp_backward
    kern(x.shape[1], theta, widths, act, has_c0, phi, basis, tape, adj, grad, bool(train_B), pB)
    if train_B:
        n0 = int(widths[0])
        L = widths.shape[0] - 1
        o = int(_tape_layout_py(C, J, widths)[2 * L + 1])
        zb0 = tape[o:o + C * J * n0].reshape(C, J, n0)
        gB = grad[:pB].reshape(B.shape)
        _fourier()[1](x, B, adj.dtype.type(s), bool(keep_x), zb0, gB, grad[:0].reshape(0, x.shape[1]))


@jit
def _tape_layout_py(C, J, widths):
    return _tape_layout(C, J, widths)
