r"""Numba kernels of the "mlp" family: small networks carrying derivative channels, forward and backward.

Same names, signatures and math as :mod:`fastopt.kernels.reference_nn` (read the channel
layout ``(C, J, n)``, ``C in {1, 1 + d, 2 + d}``, the flat parameter layout and the backward
derivation there). Computation is in the arrays' dtype (float32 or float64).

How the kernels are built
-------------------------
- **One pass per block of points.** Points are cut into blocks of ``BLOCK_POINTS`` (64). The
  forward runs, block after block, the features, every layer, the output and the ansatz while the
  block's rows are in cache; the backward runs every layer of a block the same way. Blocks are
  grouped into at most ``MAX_CHUNKS`` (64) chunks of consecutive blocks, the unit of work of a
  thread (``prange`` over chunks in the threaded build); each chunk adds its parameter gradient
  into its own row of partial sums, and the rows are added in chunk order at the end. Blocks and
  chunks depend on ``J`` only, so the serial and the threaded builds, on any number of threads,
  give the same bits.
- **Tape.** :func:`mlp_forward` keeps what :func:`mlp_backward` needs: a copy of x, the hidden
  channels ``z_l`` (l < L; ``z_L`` is the ``basis`` output) and the pre-activation channels ``a_l``
  with their value row overwritten by ``sigma'(a_l)`` (``sigma''``, ``sigma'''`` follow from
  ``sigma`` and ``sigma'``: no transcendental function in the backward). The features are *not*
  stored (below). Each chunk owns a scratch in the tape (features, two adjoint buffers, the
  output adjoints), so the kernels allocate nothing but a few offset arrays (:func:`_tape_layout`).
- **Dense layers: a register-tiled micro-kernel** (:func:`_gemm`; no BLAS). ``a = z W + b``,
  ``zb = ab W^T`` and ``dW = sum_c z_c^T ab_c`` are one kernel with different strides: a tile of 4
  rows x up to 4 zmm vectors of accumulators stays in registers over the whole reduction. The
  widths are runtime values, so LLVM's loop vectoriser could only keep accumulators in memory;
  the tile is written with the explicit LLVM vectors of :mod:`._vecmath`. Columns go in chunks of
  4 vectors (32 float64 / 64 float32 lanes), the last chunk as 1-4 vectors of which the last is
  masked (a 20-unit row: 2 + 1 zmm in float64, 1 + 1 in float32); rows in tiles of 4, then
  one-row tiles whose k terms go round-robin into 4 accumulator sets (so that a one-row reduction
  such as ``dc = sum_j ub_j z_j`` runs at the FMA rate, not at its latency); the sum over channels
  of ``dW`` runs inside the tile. One FMA per term, k in order. Measured (1 thread): 100 x 20 x 20
  float64 1.25 us (BLAS from a Numba kernel 1.38 us), float32 0.88 us (1.07); in the wide case
  the inner loop runs at ~75-85 % of the measured dgemm peak. (The previous version of this file
  called BLAS per layer over all C J rows: at J = 100 a call costs ~1 us of fixed overhead and
  leaves every elementwise pass as a separate sweep over the tape.)
- **First layer on x** (no Fourier features): the gradient channels of x are unit vectors and its
  Laplacian is 0, so ``a = x W + b``, ``grad_k a = W[k]``, ``lap a = 0`` are written directly
  (:func:`_dense_x`) and ``dW_1 = x^T ab_0 +`` column sums of ``ab_k``: no GEMM over 1-wide rows.
- **Fourier features fused with the first dense layer** (``K > 0``): per block, the feature
  channels (sin/cos once per point and frequency, :func:`_features_block`) go into the chunk's
  scratch (C x 64 x n_0 floats, 198 KB at n_0 = 129: L2) and are multiplied by ``W_1`` at once; the
  backward recomputes them per block for ``dW_1`` and, with trainable frequencies, turns the
  block's feature adjoints ``zb_0 = ab_1 W_1^T`` into its partial ``dL/dB`` at once
  (:func:`_fourier_bwd_block`). The feature matrix (3 x 1e5 x 129 = 310 MB in float64 in the wide
  case) is never written. Measured there (1 thread): the materialised layer alone
  (``fourier.fourier_forward`` + ``fourier_backward`` on whole arrays) costs 73 ms (float64) /
  33 ms (float32), before the GEMMs' four passes over 310 MB; the fused per-block features take
  < 5 % of the 0.66-0.80 s forward + backward (profiled).
- **Elementwise passes** (activation and its channels, adjoints, ansatz, column sums) run over the
  contiguous elements of one channel of a block, with unsigned indices (a signed index makes Numba
  wrap negative values: a select per access that stops LLVM vectorising), one loop per activation
  (a branch on ``act`` inside a loop is if-converted: both activations computed; measured 2x), the
  tanh loop apart from the channel loop (in one loop its constants are reloaded every iteration),
  tanh and sin/cos from :mod:`._vecmath`. The kernels are marked ``"prefer-vector-width"="512"``
  (:func:`prefer_512_bit`): LLVM's tuning for this CPU prefers 256-bit vectors; with zmm the
  vectorised tanh takes 0.76 instead of 1.0 ns per float64 (same bits) and the forward of the
  1-20-20-1 network ~20 % less.
- **Per-call costs.** The compiled helpers get their arrays as reference-count-free views
  (:func:`_unowned`: Numba increfs and decrefs every array argument of a call, atomically: 90 of
  the 120 ns of a :func:`_gemm` call, measured) and have explicit signatures (one build per dtype,
  whatever literal ints the call sites pass). Left: ~0.7 us to dispatch a kernel call from Python
  (9 array arguments at ~55 ns each), the wrapper, a few offset arrays.
- **Threads** (:func:`_use_threads`): the threaded build runs from ``PARALLEL_MIN_POINTS`` (2
  blocks) when the estimated serial time of forward + backward, ``J C (0.11 ns MACs + 2.4 ns
  activations)`` per point and channel (half in float32), reaches ``PARALLEL_MIN_TIME_US`` = 300 us.
  Measured crossovers (``bench/diag_mlp_threads.py``, 2 cores, PASSIVE, serial / threaded us):
  1-20-20-1 float64 C = 1 at J ~ 2048 (298 / 285), C = 3 at ~1000 (427 / 378 at 1024), float32
  C = 1 at ~4096 (337 / 329), C = 3 at ~1500 (393 / 331 at 2048); the Fourier 129-64-64-64 network
  float64 C = 1 at ~200 (593 / 484 at 256), C = 3 at ~100 (831 / 644 at 128), float32 C = 1 at ~450,
  C = 3 at ~128: every crossover at ~300-400 us of serial work (two parallel regions' wake-ups cost
  ~100-200 us), a fixed number of points (the former guess, 2048) would be off by 20x between
  these networks. With the second core busy (a shared machine) threads only add that cost.

Measured (development machine: 2 shared cores, AVX-512 at 2.6 GHz, one-thread dgemm / sgemm peak
36-39 / 80-83 GMAC/s; best-of wall-clock, noisy to ~15 % between runs):

- 1-20-20-1 tanh, J = 100, forward + backward (before: the BLAS version of this file, in the same
  process): float64 C = 1 14.3-17 us (was 18.7-22), C = 3 31-35 us (was 40-49); float32 C = 1
  10.7-13 us (was 13.5-15.4), C = 3 21.5-25 us (was 23.4-28.3). The floor: ``C J (n_0 n_1 + n_1 n_2 +
  n_2)`` MACs forward and about twice as many backward (130 k C MACs) at the GEMM peak, 3.3 C us
  (float64) / 1.6 C us (float32); with the 4000 tanh (3.0 / 1.6 us) and two dispatches (1.4 us):
  7.7 / 14.4 us (float64, C = 1 / 3) and 4.6 / 7.8 us (float32). Where a float64 C = 3 step goes
  (cycle counters per section, 30 us): GEMMs 12.2 us (a 20-unit row fills 24 float64 / 32 float32
  lanes), activation passes 6.0 (forward) + 2.7 (backward) us, output layer and ``zb_L`` 2.4 us, first
  layer 1.1 us, adjoints, column sums and reductions ~1.5 us, dispatch and set-up ~4 us.
- Wide case (d = 1, K = 64 trainable frequencies and x: n_0 = 129, 3 tanh layers of 64, J = 1e5,
  C = 3; ``bench/diag_mlp_wide.py``): forward + backward float64 0.66-0.80 s on 1 thread, 0.35-0.39 s
  on 2 (PyTorch CPU autograd with double backward, same weights: 6.5-7.3 s and 4.7-6.5 s: 8-18x);
  float32 0.32-0.38 s and 0.19 s (PyTorch 1.7-2.4 s and 0.9-2.5 s: 4.4-7.6x). Floor: 14.9 GMAC at the
  one-thread GEMM peak, 0.38 s (float64) / 0.18 s (float32).

Rounding differs from the float64 reference only by summation order, by FMAs (one rounding instead
of two, no fast-math) and by the <= 2.6 ulp of the vectorised tanh/sin: float64 results agree to
~1e-14 relative to their scale.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from ._jit import jit, parallel_twin
from ._vecmath import (prefer_512_bit, sincos, tanh, vadd, vfma, vhsum, vlanes, vload, vload_m, vnative, vsplat,
                       vstore, vstore_m, vzero)

__all__ = ["activation_derivatives", "ansatz_forward", "ansatz_backward", "mlp_tape_size", "mlp_forward",
           "mlp_backward", "BLOCK_POINTS", "MAX_CHUNKS", "PARALLEL_MIN_POINTS", "PARALLEL_MIN_TIME_US",
           "GEMM_MIN_WIDTH"]

#: Points per block: the unit of work of the per-block passes (every layer of a block runs while its
#: rows are in cache). 32, 64 and 128 measured within noise (~5 %) at J = 100 and in the wide case.
BLOCK_POINTS = 64
#: At most this many chunks of consecutive blocks, each with its own row of partial parameter
#: gradients (added in chunk order) and its own scratch: the unit of work of a thread. Chunks depend
#: on the number of points only, never on the thread count.
MAX_CHUNKS = 64
#: Below this many points (two blocks) the serial build always runs.
PARALLEL_MIN_POINTS = 2 * BLOCK_POINTS
#: From this estimated serial time (microseconds, forward + backward) the threaded build runs: the
#: measured crossover on the 2-core development machine under OMP_WAIT_POLICY=PASSIVE, where waking
#: the threads of the two parallel regions costs ~100-200 us (``bench/diag_mlp_threads.py``).
PARALLEL_MIN_TIME_US = 300.0
#: The serial time model of :func:`_use_threads`: ns per MAC of the dense layers and per activation
#: element, per point and channel (float64; float32 takes half), fitted to the 1-20-20-1 and the
#: Fourier 129-64-64-64 networks (within 10 % of both).
NS_PER_MAC, NS_PER_ACTIVATION = 0.11, 2.4
#: Kept for the tests written for the former BLAS path (a hidden width >= 16 took BLAS): every width
#: now runs the register-tiled micro-kernel.
GEMM_MIN_WIDTH = 16

U = np.uint64


def _signatures(*args):
    """Explicit float64 and float32 signatures ("a": a 1-D C-contiguous array of the dtype, "i": int64,
    "f": a scalar of the dtype) for the compiled helpers: one build per dtype, whatever literal
    ints the call sites pass (Numba would otherwise compile a variant per combination of literals)."""
    sigs = []
    for t in (types.float64, types.float32):
        conv = {"a": types.Array(t, 1, "C"), "i": types.int64, "f": t}
        sigs.append(types.none(*[conv[a] for a in args]))
    return sigs


@intrinsic
def _unowned(typingctx, arr):
    """A view of ``arr`` without a reference count (its meminfo NULL), for passing to the compiled
    helpers: Numba increfs and decrefs every array argument of a call (atomic operations, ~90 ns per
    call of :func:`_gemm` measured); on a NULL meminfo those are no-ops. Valid while ``arr`` lives
    (a kernel's arguments do)."""
    if isinstance(arr, types.Array):
        # typed writable and aligned whatever arr is (a read-only theta is only read): one signature
        # of the helpers fits every call
        rt = types.Array(arr.dtype, arr.ndim, arr.layout)

        def codegen(context, builder, sig, args):
            src = context.make_array(arr)(context, builder, args[0])
            dst = context.make_array(rt)(context, builder)
            dst.meminfo = ir.Constant(src.meminfo.type, None)
            dst.parent = ir.Constant(src.parent.type, None)
            dst.nitems = src.nitems
            dst.itemsize = src.itemsize
            dst.data = src.data
            dst.shape = src.shape
            dst.strides = src.strides
            return dst._getvalue()
        return rt(arr), codegen
    return None


# =========================================================================== layouts
@jit(inline="always")
def _net_offsets(widths, p0):
    """Offsets of the network's parameters from ``p0`` (the size of "fourier.B" in theta, or 0 in a
    partial-gradient row): [2l] W_{l+1}, [2l+1] b_{l+1}, [2L] c, [2L+1] c0, [2L+2] the end (a slot for
    c0 always counted)."""
    L = widths.size - 1
    offs = np.empty(2 * L + 3, dtype=np.int64)
    p = p0
    for l in range(L):
        offs[2 * l] = p
        offs[2 * l + 1] = p + widths[l] * widths[l + 1]
        p += (widths[l] + 1) * widths[l + 1]
    offs[2 * L] = p
    offs[2 * L + 1] = p + widths[L]
    offs[2 * L + 2] = p + widths[L] + 1
    return offs


@jit(inline="always")
def _n_chunks(J):
    """(blocks, chunks): chunk ``ch`` holds blocks ``ch nb // nc`` to ``(ch + 1) nb // nc``."""
    nb = (J + BLOCK_POINTS - 1) // BLOCK_POINTS
    return nb, min(nb, MAX_CHUNKS)


@jit(inline="always")
def _tape_layout(C, J, d, widths):
    """Offsets into the tape (int64), in this order:

    [0] a copy of x (J, d); [l] ``z_l`` (C, J, n_l) for l = 1..L-1 (``z_L`` is the ``basis`` output);
    [L + l - 1] ``a_l`` (C, J, n_l) for l = 1..L (value row: sigma'(a_l)); [2L + l - 1] ``W_l^T``
    (n_l, n_{l-1}); [3L] the Fourier constants ``s B`` and ``s^2 |b|^2`` ((d + 1) K_max, K_max = n_0 // 2);
    [3L + 1] the chunks' scratch (each: features (C, P, n_0), two adjoint buffers (C, P, n_max), the
    output adjoints (C, P), one K_max row; P = BLOCK_POINTS); [3L + 2] the chunks' partial gradients
    (each: the network's parameters with a c0 slot, then (2d + 1) K_max for dL/dB); [3L + 3] the end
    (the tape's size); [3L + 4], [3L + 5] the sizes of one chunk's scratch and partial row.
    """
    L = widths.size - 1
    n0 = widths[0]
    kmax = n0 // 2
    nmax = 0
    for l in range(L + 1):
        nmax = max(nmax, widths[l])
    nb, nch = _n_chunks(J)
    offs = np.empty(3 * L + 6, dtype=np.int64)
    p = J * d
    offs[0] = 0
    for l in range(1, L):
        offs[l] = p
        p += C * J * widths[l]
    for l in range(1, L + 1):
        offs[L + l - 1] = p
        p += C * J * widths[l]
    for l in range(1, L + 1):
        offs[2 * L + l - 1] = p
        p += widths[l] * widths[l - 1]
    offs[3 * L] = p
    p += (d + 1) * kmax
    S = C * BLOCK_POINTS * (n0 + 2 * nmax + 1) + kmax
    offs[3 * L + 1] = p
    p += nch * S
    p_net = 0
    for l in range(L):
        p_net += (widths[l] + 1) * widths[l + 1]
    Q = p_net + widths[L] + 1 + (2 * d + 1) * kmax
    offs[3 * L + 2] = p
    p += nch * Q
    offs[3 * L + 3] = p
    offs[3 * L + 4] = S
    offs[3 * L + 5] = Q
    return offs


@jit
def _tape_size(C, J, d, widths):
    return _tape_layout(C, J, d, widths)[-3]


def mlp_tape_size(J, d, widths, order):
    """Length of the ``tape`` that :func:`mlp_forward` fills and :func:`mlp_backward` reads.

    Holds (module docstring) a copy of x, the hidden and pre-activation channels, the transposed
    weights and, per chunk of points, a small scratch and a row of partial gradients: about
    ``C J (2 sum of hidden widths - n_L) + chunks (C BLOCK_POINTS (n_0 + 2 n_max) + n_params)``
    elements of the arrays' dtype (the features are recomputed per block, never stored).
    """
    C = (1, 1 + int(d), 2 + int(d))[int(order)]
    return int(_tape_size(C, int(J), int(d), np.asarray(widths, dtype=np.int64)))
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




# =========================================================================== register-tiled micro-kernels
@jit(inline="always")
def _init3(init, S, so, vA, vB, vM, nm):
    if init:
        wa = U(vlanes(vA))
        return vload(vA, S, so), vload(vB, S, so + wa), vload_m(vM, S, so + wa + U(vlanes(vB)), nm)
    return vzero(vA), vzero(vB), vzero(vM)


@jit(inline="always")
def _store3(Cm, co, a, b, m, nm):
    wa = U(vlanes(a))
    vstore(Cm, co, a)
    vstore(Cm, co + wa, b)
    vstore_m(Cm, co + wa + U(vlanes(b)), m, nm)


@jit(inline="always")
def _tile4(A, a0, a1, a2, a3, aks, K, Bm, bo, ldb, Cm, c0, c1, c2, c3, init, S, s0, s1, s2, s3, vA, vB, vM, nm, nkc,
           akc, bkc):
    """Four rows of C (at c0..c3) = their initial values
    + sum_{kc < nkc} sum_{k < K} A[a_r + kc akc + k aks] Bm[bo + kc bkc + k ldb + columns].

    The columns are three slots: ``vA`` and ``vB`` whole vectors, ``vM`` a vector of which ``nm``
    lanes are used; absent slots (0 lanes) compile to nothing. 4 rows x up to 4 zmm registers of
    accumulators stay in registers over the whole k loop; no store happens inside it (A, B and C
    may be the same array).
    """
    x0a, x0b, x0m = _init3(init, S, s0, vA, vB, vM, nm)
    x1a, x1b, x1m = _init3(init, S, s1, vA, vB, vM, nm)
    x2a, x2b, x2m = _init3(init, S, s2, vA, vB, vM, nm)
    x3a, x3b, x3m = _init3(init, S, s3, vA, vB, vM, nm)
    wa = U(vlanes(vA))
    wab = wa + U(vlanes(vB))
    for kc in range(nkc):
        for k in range(K):
            bk = bo + kc * bkc + k * ldb
            wA = vload(vA, Bm, bk)
            wB = vload(vB, Bm, bk + wa)
            wM = vload_m(vM, Bm, bk + wab, nm)
            ak = kc * akc + k * aks
            e = A[a0 + ak]
            x0a = vfma(vsplat(vA, e), wA, x0a)
            x0b = vfma(vsplat(vB, e), wB, x0b)
            x0m = vfma(vsplat(vM, e), wM, x0m)
            e = A[a1 + ak]
            x1a = vfma(vsplat(vA, e), wA, x1a)
            x1b = vfma(vsplat(vB, e), wB, x1b)
            x1m = vfma(vsplat(vM, e), wM, x1m)
            e = A[a2 + ak]
            x2a = vfma(vsplat(vA, e), wA, x2a)
            x2b = vfma(vsplat(vB, e), wB, x2b)
            x2m = vfma(vsplat(vM, e), wM, x2m)
            e = A[a3 + ak]
            x3a = vfma(vsplat(vA, e), wA, x3a)
            x3b = vfma(vsplat(vB, e), wB, x3b)
            x3m = vfma(vsplat(vM, e), wM, x3m)
    _store3(Cm, c0, x0a, x0b, x0m, nm)
    _store3(Cm, c1, x1a, x1b, x1m, nm)
    _store3(Cm, c2, x2a, x2b, x2m, nm)
    _store3(Cm, c3, x3a, x3b, x3m, nm)


@jit(inline="always")
def _tile1(A, a0, aks, K, Bm, bo, ldb, Cm, c0, init, S, s0, vA, vB, vM, nm, nkc, akc, bkc):
    """One row of :func:`_tile4`. A single row is one chain of dependent FMAs per register, so the k
    terms go round-robin into four sets of accumulators, added in a fixed order at the end (a
    one-row reduction such as ``dc = sum_j ub_j z_j`` runs at the FMA rate, not its latency)."""
    x0a, x0b, x0m = _init3(init, S, s0, vA, vB, vM, nm)
    y0a, y0b, y0m = vzero(vA), vzero(vB), vzero(vM)
    x1a, x1b, x1m = vzero(vA), vzero(vB), vzero(vM)
    y1a, y1b, y1m = vzero(vA), vzero(vB), vzero(vM)
    wa = U(vlanes(vA))
    wab = wa + U(vlanes(vB))
    for kc in range(nkc):
        k = U(0)
        while k + U(4) <= K:
            b0 = bo + kc * bkc + k * ldb
            ak = a0 + kc * akc + k * aks
            e = A[ak]
            x0a = vfma(vsplat(vA, e), vload(vA, Bm, b0), x0a)
            x0b = vfma(vsplat(vB, e), vload(vB, Bm, b0 + wa), x0b)
            x0m = vfma(vsplat(vM, e), vload_m(vM, Bm, b0 + wab, nm), x0m)
            b0 += ldb
            e = A[ak + aks]
            y0a = vfma(vsplat(vA, e), vload(vA, Bm, b0), y0a)
            y0b = vfma(vsplat(vB, e), vload(vB, Bm, b0 + wa), y0b)
            y0m = vfma(vsplat(vM, e), vload_m(vM, Bm, b0 + wab, nm), y0m)
            b0 += ldb
            e = A[ak + U(2) * aks]
            x1a = vfma(vsplat(vA, e), vload(vA, Bm, b0), x1a)
            x1b = vfma(vsplat(vB, e), vload(vB, Bm, b0 + wa), x1b)
            x1m = vfma(vsplat(vM, e), vload_m(vM, Bm, b0 + wab, nm), x1m)
            b0 += ldb
            e = A[ak + U(3) * aks]
            y1a = vfma(vsplat(vA, e), vload(vA, Bm, b0), y1a)
            y1b = vfma(vsplat(vB, e), vload(vB, Bm, b0 + wa), y1b)
            y1m = vfma(vsplat(vM, e), vload_m(vM, Bm, b0 + wab, nm), y1m)
            k += U(4)
        while k < K:
            bk = bo + kc * bkc + k * ldb
            e = A[a0 + kc * akc + k * aks]
            x0a = vfma(vsplat(vA, e), vload(vA, Bm, bk), x0a)
            x0b = vfma(vsplat(vB, e), vload(vB, Bm, bk + wa), x0b)
            x0m = vfma(vsplat(vM, e), vload_m(vM, Bm, bk + wab, nm), x0m)
            k += U(1)
    x0a = vadd(vadd(x0a, y0a), vadd(x1a, y1a))
    x0b = vadd(vadd(x0b, y0b), vadd(x1b, y1b))
    x0m = vadd(vadd(x0m, y0m), vadd(x1m, y1m))
    _store3(Cm, c0, x0a, x0b, x0m, nm)


@jit(inline="always")
def _tile_rows(A, ao, ars, aks, K, Bm, bo, ldb, Cm, co, ldc, nr, init, S, so, srs, vA, vB, vM, nm, nkc, akc, bkc):
    r = U(0)
    while r + U(4) <= nr:
        _tile4(A, ao + r * ars, ao + (r + U(1)) * ars, ao + (r + U(2)) * ars, ao + (r + U(3)) * ars, aks, K,
               Bm, bo, ldb, Cm, co + r * ldc, co + (r + U(1)) * ldc, co + (r + U(2)) * ldc, co + (r + U(3)) * ldc,
               init, S, so + r * srs, so + (r + U(1)) * srs, so + (r + U(2)) * srs, so + (r + U(3)) * srs,
               vA, vB, vM, nm, nkc, akc, bkc)
        r += U(4)
    while r < nr:
        _tile1(A, ao + r * ars, aks, K, Bm, bo, ldb, Cm, co + r * ldc, init, S, so + r * srs, vA, vB, vM, nm, nkc, akc,
               bkc)
        r += U(1)


@jit(signature=_signatures(*"aiiiii" "aiii" "aiii" "iiiii" "aiii" "i"))
def _gemm(A, ao_, ars_, aks_, acs_, K_, Bm, bo_, ldb_, bcs_, Cm, co_, ldc_, ccs_, nr_, n_, nch, init0, init, S, so_,
          srs_, scs_, kred):
    """``Cm[co + c ccs + r ldc + j] = I + sum_{k < K} A[ao + c acs + r ars + k aks] Bm[bo + c bcs + k ldb + j]``
    for channels c < nch, rows r < nr, columns j < n.

    ``I = 0`` or ``S[so + c scs + r srs + j]`` (``init0`` for channel 0, ``init`` for the others: 0 or 1;
    S may be Cm itself, then with ``ccs = scs = 0`` the channels accumulate into the same rows;
    ``srs = 0``: one row, e.g. a bias, for every row). ``kred = 1``: the channels are summed into the
    same rows inside one register tile instead (``sum_c sum_k``, e.g. ``dW = sum_c Z_c^T Ab_c``: the
    tile is loaded and stored once). Any strides of A (``Z W`` rows, ``Z^T``
    columns, a broadcast), contiguous rows of B and C. Columns go in chunks of four native vectors
    (``VECTOR_BYTES``: 32 float64 / 64 float32); the last chunk is split into whole vectors and one
    masked vector, so a 20-unit layer runs 2 + 1 (float64) or 1 + 1 (float32) zmm per row.
    Rounding: one FMA per term, summed in k order (the reference's order; no fast-math).
    """
    ao, ars, aks, acs, K, bo, ldb, bcs = U(ao_), U(ars_), U(aks_), U(acs_), U(K_), U(bo_), U(ldb_), U(bcs_)
    co, ldc, ccs, nr, n, so, srs, scs = U(co_), U(ldc_), U(ccs_), U(nr_), U(n_), U(so_), U(srs_), U(scs_)
    VL = U(vlanes(vnative(A, 1)))
    null = vnative(A, 0)
    one = vnative(A, 1)
    nkc = U(nch) if kred else U(1)
    for c in range(U(1) if kred else U(nch)):
        ini = init0 if c == U(0) else init
        ac, bc, cc, sc = ao + c * acs, bo + c * bcs, co + c * ccs, so + c * scs
        j = U(0)
        while j + U(4) * VL <= n:
            _tile_rows(A, ac, ars, aks, K, Bm, bc + j, ldb, Cm, cc + j, ldc, nr, ini, S, sc + j, srs,
                       vnative(A, 4), null, null, U(0), nkc, acs, bcs)
            j += U(4) * VL
        rem = n - j
        if rem > U(0):
            nv = (rem + VL - U(1)) // VL
            if nv == U(1):
                _tile_rows(A, ac, ars, aks, K, Bm, bc + j, ldb, Cm, cc + j, ldc, nr, ini, S, sc + j, srs,
                           null, null, one, rem, nkc, acs, bcs)
            elif nv == U(2):
                _tile_rows(A, ac, ars, aks, K, Bm, bc + j, ldb, Cm, cc + j, ldc, nr, ini, S, sc + j, srs,
                           one, null, one, rem - VL, nkc, acs, bcs)
            elif nv == U(3):
                _tile_rows(A, ac, ars, aks, K, Bm, bc + j, ldb, Cm, cc + j, ldc, nr, ini, S, sc + j, srs,
                           vnative(A, 2), null, one, rem - U(2) * VL, nkc, acs, bcs)
            else:
                _tile_rows(A, ac, ars, aks, K, Bm, bc + j, ldb, Cm, cc + j, ldc, nr, ini, S, sc + j, srs,
                           vnative(A, 2), one, one, rem - U(3) * VL, nkc, acs, bcs)


@jit(signature=_signatures(*"aiiiiii" "ai" "aii" "f"))
def _rowdot(Z, zo_, zcs_, zrs_, n_, nr_, nch, w, wo_, out, oo_, ocs_, add0):
    """``out[oo + c ocs + r] = [add0 if c == 0] + sum_{i < n} Z[zo + c zcs + r zrs + i] w[wo + i]`` for
    channels c < nch and rows r < nr (vector lanes, then a fixed pairwise tree)."""
    zo, zcs, zrs, n, nr, wo, oo, ocs = U(zo_), U(zcs_), U(zrs_), U(n_), U(nr_), U(wo_), U(oo_), U(ocs_)
    v = vnative(Z, 1)
    VL = U(vlanes(v))
    for c in range(U(nch)):
        add = add0 if c == U(0) else add0 * 0
        for r in range(nr):
            zr = zo + c * zcs + r * zrs
            acc = vzero(v)
            i = U(0)
            while i + VL <= n:
                acc = vfma(vload(v, Z, zr + i), vload(v, w, wo + i), acc)
                i += VL
            if i < n:
                acc = vfma(vload_m(v, Z, zr + i, n - i), vload_m(v, w, wo + i, n - i), acc)
            out[oo + c * ocs + r] = vhsum(acc) + add


@jit(signature=_signatures(*"aiii" "ai"))
def _colsum(X, xo_, n_, nr_, G, go_):
    """``G[go + i] += sum_{r < nr} X[xo + r n + i]``: per column vector, rows round-robin into four
    partial sums (independent chains), added in a fixed order."""
    xo, n, nr, go = U(xo_), U(n_), U(nr_), U(go_)
    v = vnative(X, 1)
    VL = U(vlanes(v))
    i = U(0)
    while i < n:
        m = min(VL, n - i)
        a0 = vload_m(v, G, go + i, m)
        a1, a2, a3 = vzero(v), vzero(v), vzero(v)
        r = U(0)
        while r + U(4) <= nr:
            a0 = vadd(a0, vload_m(v, X, xo + r * n + i, m))
            a1 = vadd(a1, vload_m(v, X, xo + (r + U(1)) * n + i, m))
            a2 = vadd(a2, vload_m(v, X, xo + (r + U(2)) * n + i, m))
            a3 = vadd(a3, vload_m(v, X, xo + (r + U(3)) * n + i, m))
            r += U(4)
        while r < nr:
            a0 = vadd(a0, vload_m(v, X, xo + r * n + i, m))
            r += U(1)
        vstore_m(G, go + i, vadd(vadd(a0, a1), vadd(a2, a3)), m)
        i += VL


@jit(signature=_signatures(*"aiiiaiii" "aiiii"))
def _dense_x(X, xo_, d_, p_, W, wo_, bo_, n_, A, ao_, acs_, C_, L2_):
    """First layer on the features x (K = 0, n_0 = d): for p points (x rows at ``X[xo + j d]``) and the
    n units, ``a = x W + b`` (one FMA per term, as the GEMM), ``grad_k a = W[k]`` and, when ``L2_`` (a
    Laplacian channel), ``lap a = 0``; channel c of A at ``ao + c acs``. No GEMM: the gradient
    channels of x are unit vectors, its Laplacian is 0."""
    xo, d, p, wo, bo, n, ao, acs, C = U(xo_), U(d_), U(p_), U(wo_), U(bo_), U(n_), U(ao_), U(acs_), U(C_)
    v = vnative(A, 1)
    VL = U(vlanes(v))
    i = U(0)
    while i < n:
        m = min(VL, n - i)
        b = vload_m(v, W, bo + i, m)
        w0 = vload_m(v, W, wo + i, m)
        for j in range(p):
            acc = vfma(vsplat(v, X[xo + j * d]), w0, b)
            for k in range(U(1), d):
                acc = vfma(vsplat(v, X[xo + j * d + k]), vload_m(v, W, wo + k * n + i, m), acc)
            vstore_m(A, ao + j * n + i, acc, m)
        for k in range(d if C > U(1) else U(0)):
            wk = vload_m(v, W, wo + k * n + i, m)
            rk = ao + (U(1) + k) * acs + i
            for j in range(p):
                vstore_m(A, rk + j * n, wk, m)
        if L2_:
            z = vzero(v)
            rl = ao + (d + U(1)) * acs + i
            for j in range(p):
                vstore_m(A, rl + j * n, z, m)
        i += VL


# =========================================================================== per-block building blocks
@jit(inline="always")
def _fourier_constants(B, s, tape, co):
    """tape[co + m K + k] = s B_mk (m < d), tape[co + d K + k] = sum_m (s B_mk)^2: in the dtype."""
    d, K = B.shape
    for k in range(K):
        tape[co + d * K + k] = s * 0
    for m in range(d):
        for k in range(K):
            v = s * B[m, k]
            tape[co + m * K + k] = v
            tape[co + d * K + k] += v * v


@jit(inline="always")
def _features_block(x, cst, co, K, d, keep_x, F, fo, fcs, n0, C, lo, hi):
    """The feature channels of points lo..hi (reference ``fourier_forward``; ``K = 0``: x itself)
    into F: channel c of feature f of point j at ``fo + c fcs + (j - lo) n0 + f``.

    sin/cos once per (point, frequency) from :func:`._vecmath.sincos`; every loop runs over the K
    frequencies of one point (contiguous, vectorised); ``psi`` is accumulated in the cos slot.
    """
    T = F.dtype.type
    zero, one = T(0), T(1)
    off = d if keep_x else 0
    KU = U(K)
    for j in range(lo, hi):
        r = U(fo + (j - lo) * n0)
        for m in range(off):
            F[r + U(m)] = x[j, m]
        cr = r + U(off)
        sr = cr + KU
        if K > 0:
            x0 = x[j, 0]
            for k in range(KU):
                F[cr + k] = x0 * cst[U(co) + k]
            for m in range(1, d):
                xm = x[j, m]
                cm = U(co + m * K)
                for k in range(KU):
                    F[cr + k] += xm * cst[cm + k]
            for k in range(KU):
                sn, cs = sincos(F[cr + k])
                F[cr + k] = cs
                F[sr + k] = sn
        if C > 1:
            for m in range(d):
                rm = U(fo + (1 + m) * fcs + (j - lo) * n0)
                for i in range(off):
                    F[rm + U(i)] = one if i == m else zero
                cm = U(co + m * K)
                gc = rm + U(off)
                gs = gc + KU
                for k in range(KU):
                    F[gc + k] = -cst[cm + k] * F[sr + k]
                    F[gs + k] = cst[cm + k] * F[cr + k]
        if C == d + 2:
            rl = U(fo + (d + 1) * fcs + (j - lo) * n0)
            for i in range(off):
                F[rl + U(i)] = zero
            nbo = U(co + d * K)
            lc = rl + U(off)
            ls = lc + KU
            for k in range(KU):
                F[lc + k] = -cst[nbo + k] * F[cr + k]
                F[ls + k] = -cst[nbo + k] * F[sr + k]


@jit(inline="always")
def _fourier_bwd_block(x, cst, co, K, d, keep_x, F, fo, Y, yo, ycs, n0, C, lo, hi, G, go, w, wo):
    """Partial sums of dL/dB over points lo..hi, from the feature adjoints in Y (layout of
    :func:`_features_block`, channel stride ycs) and the (cos, sin) values in F's value rows.

    G[go + m K + k] += x_m psib_k, G[go + (d + m) K + k] += cos Sb_m - sin Cb_m, G[go + 2 d K + k] +=
    cos Cb_L + sin Sb_L (reference ``fourier_backward``; ``w`` a K-row of scratch for psib).
    """
    off = d if keep_x else 0
    KU = U(K)
    has_grad = C > 1
    has_lap = C == d + 2
    pw = U(wo)
    for j in range(lo, hi):
        jr = U((j - lo) * n0 + off)
        cr = U(fo) + jr
        sr = cr + KU
        cb = U(yo) + jr
        sb = cb + KU
        for k in range(KU):
            w[pw + k] = F[cr + k] * Y[sb + k] - F[sr + k] * Y[cb + k]
        if has_grad:
            for m in range(d):
                cbm = cb + U((1 + m) * ycs)
                sbm = cbm + KU
                sBm = U(co + m * K)
                p2 = U(go + (d + m) * K)
                for k in range(KU):
                    cs, sn = F[cr + k], F[sr + k]
                    w[pw + k] -= cst[sBm + k] * (cs * Y[cbm + k] + sn * Y[sbm + k])
                    G[p2 + k] += cs * Y[sbm + k] - sn * Y[cbm + k]
        if has_lap:
            cbl = cb + U((d + 1) * ycs)
            sbl = cbl + KU
            nbo = U(co + d * K)
            p3 = U(go + 2 * d * K)
            for k in range(KU):
                cs, sn = F[cr + k], F[sr + k]
                w[pw + k] += cst[nbo + k] * (sn * Y[cbl + k] - cs * Y[sbl + k])
                G[p3 + k] += cs * Y[cbl + k] + sn * Y[sbl + k]
        for m in range(d):
            xm = x[j, m]
            p1 = U(go + m * K)
            for k in range(KU):
                G[p1 + k] += xm * w[pw + k]


@jit(inline="always")
def _act_fwd_block(act, A, a0_, acs_, Z, z0_, zcs_, m_, C, d):
    """z = sigma(a) with its channels (reference ``_act_forward``) for m elements per channel;
    a's value row <- sigma'(a). Channel c of A at ``a0 + c acs``, of Z at ``z0 + c zcs``."""
    T = Z.dtype.type
    one, two = T(1), T(2)
    a0, acs, z0, zcs, m = U(a0_), U(acs_), U(z0_), U(zcs_), U(m_)
    if C == 3 and d == 1 and act != 0:  # the 1D PINN case (u, u', u'') with sin: one pass
        a1, a2, z1, z2 = a0 + acs, a0 + U(2) * acs, z0 + zcs, z0 + U(2) * zcs
        for e in range(m):
            t, s1 = sincos(A[a0 + e])
            g = A[a1 + e]
            Z[z0 + e] = t
            Z[z1 + e] = s1 * g
            Z[z2 + e] = -t * (g * g) + s1 * A[a2 + e]
            A[a0 + e] = s1
        return
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
    if C == 3 and d == 1:  # tanh, u, u', u'': the channels in one pass after the tanh loop (one loop for
        # both would reload the tanh's constants in every iteration: 1.25 instead of ~1.0 ns per element)
        a1, a2, z1, z2 = a0 + acs, a0 + U(2) * acs, z0 + zcs, z0 + U(2) * zcs
        for e in range(m):
            s1 = A[a0 + e]
            s2 = -two * Z[z0 + e] * s1
            g = A[a1 + e]
            Z[z1 + e] = s1 * g
            Z[z2 + e] = s2 * (g * g) + s1 * A[a2 + e]
        return
    if C > 1:
        for k in range(d):
            ak = a0 + U(1 + k) * acs
            zk = z0 + U(1 + k) * zcs
            for e in range(m):
                Z[zk + e] = A[a0 + e] * A[ak + e]
    if C == d + 2:
        zl = z0 + U(d + 1) * zcs
        al = a0 + U(d + 1) * acs
        a1 = a0 + acs
        for e in range(m):
            Z[zl + e] = A[a1 + e] * A[a1 + e]
        for k in range(1, d):
            ak = a0 + U(1 + k) * acs
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
def _act_bwd_block(act, A, a0_, acs_, Zv, zv0_, X, x0_, xcs_, m_, C, d):
    """In place in X: adjoints of a's channels from those of z's (reference ``_act_backward``), m
    elements per channel; A as :func:`_act_fwd_block` left it (value row sigma'), Zv the value of z::

        ab = s1 zb + s2 sum_k a_k zb_k + (s3 sum_k a_k^2 + s2 lap a) lap zb
        ab_k = s1 zb_k + 2 s2 a_k lap zb,   lap ab = s1 lap zb

    Every loop runs over the m elements of one channel (vectorised; the channel order and ``act``
    select whole loops): d = 1 with u, u' (, u'') in one pass, other d in one pass per term."""
    T = X.dtype.type
    two, three, one = T(2), T(3), T(1)
    a0, acs, z0, x0, xcs, m = U(a0_), U(acs_), U(zv0_), U(x0_), U(xcs_), U(m_)
    if C == 1:
        for e in range(m):
            X[x0 + e] = A[a0 + e] * X[x0 + e]
        return
    lap = C == d + 2
    a1, x1 = a0 + acs, x0 + xcs
    if d == 1 and lap:  # the 1D PINN case (u, u', u''): straight-line code
        aL, xL = a0 + U(2) * acs, x0 + U(2) * xcs
        if act == 0:
            for e in range(m):
                s1 = A[a0 + e]
                t = Zv[z0 + e]
                s2 = -two * t * s1
                s3 = -two * s1 * (one - three * t * t)
                ak = A[a1 + e]
                zb1 = X[x1 + e]
                zbL = X[xL + e]
                ab = s1 * X[x0 + e]
                ab += s2 * (ak * zb1)
                ab += (s3 * (ak * ak) + s2 * A[aL + e]) * zbL
                X[x0 + e] = ab
                X[x1 + e] = s1 * zb1 + two * s2 * ak * zbL
                X[xL + e] = s1 * zbL
        else:
            for e in range(m):
                s1 = A[a0 + e]
                s2 = -Zv[z0 + e]
                ak = A[a1 + e]
                zb1 = X[x1 + e]
                zbL = X[xL + e]
                ab = s1 * X[x0 + e]
                ab += s2 * (ak * zb1)
                ab += (-s1 * (ak * ak) + s2 * A[aL + e]) * zbL
                X[x0 + e] = ab
                X[x1 + e] = s1 * zb1 + two * s2 * ak * zbL
                X[xL + e] = s1 * zbL
        return
    if d == 1:  # u, u'
        for e in range(m):
            s1 = A[a0 + e]
            t = Zv[z0 + e]
            s2 = -two * t * s1 if act == 0 else -t
            zb1 = X[x1 + e]
            X[x0 + e] = s1 * X[x0 + e] + s2 * (A[a1 + e] * zb1)
            X[x1 + e] = s1 * zb1
        return
    # any d: one pass per term, in the order of the formula
    for e in range(m):
        X[x0 + e] = A[a0 + e] * X[x0 + e]
    for k in range(d):
        ak, xk = a0 + U(1 + k) * acs, x0 + U(1 + k) * xcs
        if act == 0:
            for e in range(m):
                X[x0 + e] += (-two * Zv[z0 + e] * A[a0 + e]) * (A[ak + e] * X[xk + e])
        else:
            for e in range(m):
                X[x0 + e] += -Zv[z0 + e] * (A[ak + e] * X[xk + e])
    if lap:
        aL, xL = a0 + U(d + 1) * acs, x0 + U(d + 1) * xcs
        for k in range(d):
            ak = a0 + U(1 + k) * acs
            if act == 0:
                for e in range(m):
                    t = Zv[z0 + e]
                    s3 = -two * A[a0 + e] * (one - three * t * t)
                    X[x0 + e] += s3 * (A[ak + e] * A[ak + e]) * X[xL + e]
            else:
                for e in range(m):
                    X[x0 + e] += -A[a0 + e] * (A[ak + e] * A[ak + e]) * X[xL + e]
        for e in range(m):
            s2 = -two * Zv[z0 + e] * A[a0 + e] if act == 0 else -Zv[z0 + e]
            X[x0 + e] += s2 * A[aL + e] * X[xL + e]
    for k in range(d):
        ak, xk = a0 + U(1 + k) * acs, x0 + U(1 + k) * xcs
        if lap:
            for e in range(m):
                s1 = A[a0 + e]
                s2 = -two * Zv[z0 + e] * s1 if act == 0 else -Zv[z0 + e]
                X[xk + e] = s1 * X[xk + e] + two * s2 * A[ak + e] * X[xL + e]
        else:
            for e in range(m):
                X[xk + e] = A[a0 + e] * X[xk + e]
    if lap:
        for e in range(m):
            X[xL + e] = A[a0 + e] * X[xL + e]


@jit(inline="always")
def _ub_block(d, C, J, adj, phi, has_phi, Ub, uo_, lo, hi):
    """Ub[uo + c P + (j - lo)] <- adjoints of the network output u from those of g + phi u (reference
    ``ansatz_backward``) for points lo..hi; adj and phi flat (C, J)."""
    two = Ub.dtype.type(2)
    P = U(BLOCK_POINTS)
    uo = U(uo_)
    JU = U(J)
    if not has_phi:
        for c in range(U(C)):
            for j in range(U(lo), U(hi)):
                Ub[uo + c * P + j - U(lo)] = adj[c * JU + j]
        return
    for j in range(lo, hi):
        jj = U(j - lo)
        jU = U(j)
        p0 = phi[jU]
        r = p0 * adj[jU]
        uL = adj[U(d + 1) * JU + jU] if C == d + 2 else two * 0
        if C > 1:
            for k in range(d):
                r += phi[U(1 + k) * JU + jU] * adj[U(1 + k) * JU + jU]
        if C == d + 2:
            r += phi[U(d + 1) * JU + jU] * uL
            Ub[uo + U(d + 1) * P + jj] = p0 * uL
        if C > 1:
            for k in range(d):
                rk = p0 * adj[U(1 + k) * JU + jU]
                if C == d + 2:
                    rk += two * phi[U(1 + k) * JU + jU] * uL
                Ub[uo + U(1 + k) * P + jj] = rk
        Ub[uo + jj] = r


# =========================================================================== the kernels
@jit
def _forward(x, B, s, keep_x, theta, widths, act, has_c0, phi, g, out, basis, tape, pB):
    """The whole forward, block by block: features, every layer, the output and the ansatz (module docstring)."""
    T = tape.dtype.type
    C, J = out.shape
    d = x.shape[1]
    K = B.shape[1]
    L = widths.size - 1
    n0 = widths[0]
    N = widths[L]
    P = BLOCK_POINTS
    to = _tape_layout(C, J, d, widths)
    po = _net_offsets(widths, pB)
    nb, nch = _n_chunks(J)
    S = to[3 * L + 4]
    cst0 = to[3 * L]
    tp = _unowned(tape)
    th = _unowned(theta)
    bas = _unowned(basis.reshape(-1))
    o3 = _unowned(out.reshape(-1))
    Pf = phi.reshape(-1)
    Gf = g.reshape(-1)
    has_phi = phi.size > 0
    has_g = g.size > 0
    c0 = theta[po[2 * L + 1]] if has_c0 else T(0)
    prefer_512_bit()
    _fourier_constants(B, T(s), tp, cst0)
    for ch in prange(nch):
        prefer_512_bit()  # the threaded build outlines this body into a function of its own
        sc = to[3 * L + 1] + ch * S
        for b in range(ch * nb // nch, (ch + 1) * nb // nch):
            lo = b * P
            hi = min(J, lo + P)
            p = hi - lo
            for j in range(U(lo), U(hi)):  # the tape's copy of x (the backward's, and _dense_x's, input)
                for m in range(U(d)):
                    tp[j * U(d) + m] = x[j, m]
            if L == 0:
                _features_block(x, tp, cst0, K, d, keep_x, bas, lo * n0, J * n0, n0, C, lo, hi)
            elif K > 0:
                _features_block(x, tp, cst0, K, d, keep_x, tp, sc, P * n0, n0, C, lo, hi)
            for l in range(1, L + 1):
                n_in, n_out = widths[l - 1], widths[l]
                ao = to[L + l - 1] + lo * n_out
                if l == 1 and K == 0:  # features x: a = x W + b, grad a_k = W[k], lap a = 0 (no GEMM)
                    _dense_x(tp, lo * d, d, p, th, po[0], po[1], n_out, tp, ao, J * n_out, C, 1 if C == d + 2 else 0)
                elif l == 1:
                    _gemm(tp, sc, n0, 1, P * n0, n0, th, po[0], n_out, 0, tp, ao, n_out, J * n_out,
                          p, n_out, C, 1, 0, th, po[1], 0, 0, 0)
                else:
                    _gemm(tp, to[l - 1] + lo * n_in, n_in, 1, J * n_in, n_in, th, po[2 * l - 2], n_out, 0, tp, ao,
                          n_out, J * n_out, p, n_out, C, 1, 0, th, po[2 * l - 1], 0, 0, 0)
                if l == L:
                    _act_fwd_block(act, tp, ao, J * n_out, bas, lo * n_out, J * n_out, p * n_out, C, d)
                else:
                    _act_fwd_block(act, tp, ao, J * n_out, tp, to[l] + lo * n_out, J * n_out, p * n_out, C, d)
            _rowdot(bas, lo * N, J * N, N, N, p, C, th, po[2 * L], o3, lo, J, c0)
            if has_phi:
                _ansatz_fwd_rows(d, C, J, 1, o3, Pf, Gf, has_g, o3, lo, hi)


@jit
def _backward(B, s, keep_x, train_B, theta, widths, act, has_c0, phi, basis, tape, adj, grad):
    """The whole backward, block by block; every parameter gradient, dL/dB included when ``train_B``."""
    T = tape.dtype.type
    C, J = adj.shape
    d, K = B.shape
    L = widths.size - 1
    n0 = widths[0]
    N = widths[L]
    P = BLOCK_POINTS
    nmax = 0
    for l in range(L + 1):
        nmax = max(nmax, widths[l])
    to = _tape_layout(C, J, d, widths)
    pB = B.size if train_B else 0
    no = _net_offsets(widths, 0)
    po = _net_offsets(widths, pB)
    p_net = no[2 * L + 2]
    nb, nch = _n_chunks(J)
    S = to[3 * L + 4]
    Q = to[3 * L + 5]
    cst0 = to[3 * L]
    tp = _unowned(tape)
    th = _unowned(theta)
    bas = _unowned(basis.reshape(-1))
    xs = tp[:J * d].reshape(J, d)
    A2 = adj.reshape(-1)
    Pf = phi.reshape(-1)
    has_phi = phi.size > 0
    sT = T(s)
    prefer_512_bit()
    _fourier_constants(B, sT, tp, cst0)
    for l in range(1, L + 1):  # W^T of every layer whose zb is needed
        if l > 1 or train_B:
            n_in, n_out = widths[l - 1], widths[l]
            wo, wto = U(po[2 * l - 2]), U(to[2 * L + l - 1])
            for m in range(U(n_in)):
                for i in range(U(n_out)):
                    tp[wto + i * U(n_in) + m] = th[wo + m * U(n_out) + i]
    for ch in prange(nch):
        prefer_512_bit()
        sc = to[3 * L + 1] + ch * S
        fo = sc
        xb = fo + C * P * n0
        yb = xb + C * P * nmax
        ubo = yb + C * P * nmax
        wk = ubo + C * P
        q0 = to[3 * L + 2] + ch * Q
        for q in range(U(Q)):
            tp[U(q0) + q] = T(0)
        for b in range(ch * nb // nch, (ch + 1) * nb // nch):
            lo = b * P
            hi = min(J, lo + P)
            p = hi - lo
            if (L > 0 and K > 0) or train_B:
                _features_block(xs, tp, cst0, K, d, keep_x, tp, fo, P * n0, n0, C, lo, hi)
            _ub_block(d, C, J, A2, Pf, has_phi, tp, ubo, lo, hi)
            # output layer: dc += sum ub z_L, dc0 += sum ub (value channel), zb_L = ub c
            qc = q0 + no[2 * L]
            _gemm(tp, ubo, 0, 1, P, p, bas, lo * N, N, J * N, tp, qc, 0, 0, 1, N, C, 1, 1, tp, qc, 0, 0, 1)
            if has_c0:
                acc = T(0)
                for jj in range(U(p)):
                    acc += tp[U(ubo) + jj]
                tp[q0 + no[2 * L + 1]] += acc
            xo, yo = xb, yb
            if L > 0 or train_B:
                _gemm(tp, ubo, 1, 0, P, 1, th, po[2 * L], 0, 0, tp, xo, N, P * N, p, N, C, 0, 0, tp, 0, 0, 0, 0)
            for l in range(L, 0, -1):
                n_in, n_out = widths[l - 1], widths[l]
                ao = to[L + l - 1] + lo * n_out
                if l == L:
                    _act_bwd_block(act, tp, ao, J * n_out, bas, lo * n_out, tp, xo, P * n_out, p * n_out, C, d)
                else:
                    _act_bwd_block(act, tp, ao, J * n_out, tp, to[l] + lo * n_out, tp, xo, P * n_out,
                                   p * n_out, C, d)
                _colsum(tp, xo, n_out, p, tp, q0 + no[2 * l - 1])
                qw = q0 + no[2 * l - 2]
                if l == 1 and K == 0:  # features x (channels x, e_m, 0): dW_m += sum_j x_jm ab_0 + ab_{1+m}
                    _gemm(tp, lo * d, 1, d, 0, p, tp, xo, n_out, 0, tp, qw, n_out, 0, d, n_out, 1, 1, 1, tp, qw, n_out,
                          0, 0)
                    if C > 1:
                        for m in range(d):
                            _colsum(tp, xo + (1 + m) * P * n_out, n_out, p, tp, qw + m * n_out)
                elif l == 1:
                    _gemm(tp, fo, 1, n0, P * n0, p, tp, xo, n_out, P * n_out, tp, qw, n_out, 0, n0, n_out, C,
                          1, 1, tp, qw, n_out, 0, 1)
                else:
                    _gemm(tp, to[l - 1] + lo * n_in, 1, n_in, J * n_in, p, tp, xo, n_out, P * n_out, tp, qw, n_out, 0,
                          n_in, n_out, C, 1, 1, tp, qw, n_out, 0, 1)
                if l > 1 or train_B:
                    _gemm(tp, xo, n_out, 1, P * n_out, n_out, tp, to[2 * L + l - 1], n_in, 0, tp, yo, n_in,
                          P * n_in, p, n_in, C, 0, 0, tp, 0, 0, 0, 0)
                    xo, yo = yo, xo
            if train_B:
                _fourier_bwd_block(xs, tp, cst0, K, d, keep_x, tp, fo, tp, xo, P * n0, n0, C, lo, hi,
                                   tp, q0 + p_net, tp, wk)
    # the chunks' partial sums, in chunk order (the same bits for any thread count)
    q_end = U(p_net if has_c0 else p_net - 1)
    part = U(to[3 * L + 2])
    gU = U(pB)
    for q in range(q_end):
        grad[gU + q] = tp[part + q] if nch > 0 else T(0)
    for ch in range(1, nch):
        pc = part + U(ch) * U(Q)
        for q in range(q_end):
            grad[gU + q] += tp[pc + q]
    if train_B:
        for m in range(d):
            for k in range(K):
                acc = T(0)
                for ch in range(nch):
                    qq = part + U(ch) * U(Q) + U(p_net)
                    acc += tp[qq + U(m * K + k)] + tp[qq + U((d + m) * K + k)]
                gk = acc * sT
                if C == d + 2:
                    acc3 = T(0)
                    for ch in range(nch):
                        acc3 += tp[part + U(ch) * U(Q) + U(p_net + 2 * d * K + k)]
                    gk -= T(2) * sT * sT * B[m, k] * acc3
                grad[m * K + k] = gk


_forward_threaded = parallel_twin(_forward)
_backward_threaded = parallel_twin(_backward)


@jit
def _mlp_forward(x, theta, widths, act, has_c0, phi, g, out, basis, tape, features_given, pB):
    """The plain network (features x) through :func:`_forward`; ``features_given`` is ignored (the
    features are always computed in the kernel). Kept for the tests of the serial build."""
    _forward(x, np.empty((x.shape[1], 0), theta.dtype), 1.0, True, theta, widths, act, has_c0, phi, g, out, basis,
             tape, pB)


@jit
def _mlp_backward(d, theta, widths, act, has_c0, phi, basis, tape, adj, grad, want_zb0, pB):
    """The plain network through :func:`_backward` (``want_zb0`` ignored)."""
    _backward(np.empty((d, 0), theta.dtype), 1.0, True, False, theta, widths, act, has_c0, phi, basis, tape, adj, grad)


@jit
def _mlp_forward_threaded(x, theta, widths, act, has_c0, phi, g, out, basis, tape, features_given, pB):
    """:func:`_mlp_forward` through the threaded build."""
    _forward_threaded(x, np.empty((x.shape[1], 0), theta.dtype), 1.0, True, theta, widths, act, has_c0, phi, g, out,
                      basis, tape, pB)


@jit
def _mlp_backward_threaded(d, theta, widths, act, has_c0, phi, basis, tape, adj, grad, want_zb0, pB):
    """:func:`_mlp_backward` through the threaded build."""
    _backward_threaded(np.empty((d, 0), theta.dtype), 1.0, True, False, theta, widths, act, has_c0, phi, basis, tape,
                       adj, grad)

# =========================================================================== Fourier layer, standalone
# The kernels above compute the Fourier features block by block themselves (_features_block,
# _fourier_bwd_block). These serial whole-array versions of the reference's formulas predate that
# fusion; they are kept as a compact check of the formulas (tests/test_mlp_cpu.py runs them).
@jit
def _fourier_forward_fallback(x, B, s, keep_x, out):
    """Reference formulas of ``fourier_forward``, serial, whole arrays."""
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
    """Reference formulas of ``fourier_backward``, serial, whole arrays."""
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


# =========================================================================== public kernels
def _use_threads(J, C, widths, dtype):
    """Whether the threaded build runs: from ``PARALLEL_MIN_POINTS`` points, when the estimated serial
    time of a forward + backward, ``J C (NS_PER_MAC M + NS_PER_ACTIVATION H)`` ns (M the MACs, H the
    activations of one point and channel; float32 half of it), reaches ``PARALLEL_MIN_TIME_US``.
    The same rule for both kernels; the choice never changes results (same bits)."""
    if J < PARALLEL_MIN_POINTS:
        return False
    w = widths.tolist()
    macs = w[-1]
    for a, b in zip(w[:-1], w[1:]):
        macs += a * b
    ns = J * C * (NS_PER_MAC * macs + NS_PER_ACTIVATION * (sum(w) - w[0]))
    return ns * (0.5 if dtype == np.float32 else 1.0) >= PARALLEL_MIN_TIME_US * 1e3


def mlp_forward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, g, out, basis, tape):
    """Forward pass carrying derivative channels: output ``u`` and the basis ``z_L``; fills ``tape``.

    Args: as :func:`fastopt.kernels.reference_nn.mlp_forward`. Every array C-contiguous, of one
    dtype (float32 or float64; ``phi``/``g`` of size 0 when unused); ``widths`` int64; ``tape`` of
    length :func:`mlp_tape_size`.
    """
    C, J = out.shape
    kern = _forward_threaded if _use_threads(J, C, widths, out.dtype) else _forward
    kern(x, B, float(s), bool(keep_x), theta, widths, act, bool(has_c0), phi, g, out, basis, tape,
         B.size if train_B else 0)


def mlp_backward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, basis, tape, adj, grad):
    """Gradient of a loss on the output channels w.r.t. every parameter: ``grad <- dL/dtheta``.

    Args: as :func:`fastopt.kernels.reference_nn.mlp_backward`; ``basis`` and ``tape`` are what
    :func:`mlp_forward` wrote (``x`` is read from the tape's copy; the tape's workspace part is
    overwritten).
    """
    C, J = adj.shape
    kern = _backward_threaded if _use_threads(J, C, widths, adj.dtype) else _backward
    kern(B, float(s), bool(keep_x), bool(train_B), theta, widths, act, bool(has_c0), phi, basis, tape, adj, grad)
