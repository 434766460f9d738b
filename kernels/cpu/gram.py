r"""CPU kernels of the "gram" family: operator rows (Numba) and the Gram system by BLAS ``syrk``.

Same names, signatures and math as :mod:`fastopt.kernels.reference_ls` (read the system there):
``A += rows^T W rows``, ``b += rows^T W y``, ``W = diag(w)``, ``w >= 0``.

How the Gram system is built
----------------------------
- **syrk on sqrt(w)-scaled rows.** ``rows^T W rows = R^T R`` with ``R = diag(sqrt(w)) rows``, so
  one BLAS ``syrk`` per tile computes it with half the flops of a GEMM and reads ``R`` once.
  The square root needs ``w >= 0``; :mod:`fastopt._validate` rejects negative weights before
  any kernel runs (a negative weight would make the loss unbounded below in ``c`` anyway).
  ``b += R^T (sqrt(w) y)`` is one ``gemv`` on the same tile while it is in cache.
- **Tiles.** Rows are taken ``tile`` at a time (the caller's choice; :func:`fastopt.ls.default_tile`
  gives about 2 MiB of float64 per tile, with the measurements behind it), scaled (and upcast, see below) into one scratch buffer allocated once per call by
  :func:`_scale_tile`, and handed to ``syrk`` with ``beta = 1``. Extra memory is one tile,
  whatever ``J``. When nothing needs scaling or converting (one weight for every row, rows
  already of the accumulator's dtype and C-contiguous) ``syrk`` reads the caller's rows in
  place, with the weight as its ``alpha``: no copy at all.
- **One triangle.** ``syrk`` writes one triangle. The accumulator ``A`` is C-contiguous, so
  ``A.T`` is the Fortran-ordered matrix BLAS wants, updated in place (no copy); its "lower"
  triangle is ``A``'s *upper* triangle. :func:`gram_accumulate` updates only the upper triangle
  of ``A`` (the strictly lower part is left as it was); :func:`symmetrize` copies it to the lower
  triangle once, when the assembly of all blocks is finished (:func:`gram` does it itself).
- **float64 accumulation, also for float32 rows.** A float32 tile is upcast to float64 while it
  is scaled (the same pass, so it costs no extra read of the rows), then ``dsyrk``: the
  products of float32 numbers are exact in float64 and the sums run in float64, so ``A`` is
  accurate to ~``J eps_64`` relative instead of ~``sqrt(tile) eps_32``. The alternative, ``ssyrk``
  per tile added into a float64 ``A``, was measured (J = 1e5, N = 64, tanh basis) at
  4.3e-7 relative error against 1.5e-15 for upcast-then-``dsyrk``: float64 across tiles only
  halves the error of a float32 ``syrk``. A float32 accumulator (``A.dtype == float32``: float32
  tiles, ``ssyrk``) is 1.4-1.7x faster (measured, one BLAS thread, J = 1e5-1e6, N = 32-256:
  ``ssyrk``'s float32 flops), for callers who know their system is well conditioned.
- **One BLAS thread per tile** (:func:`blas_threads`, tiles up to ``SERIAL_BLAS_MAX_ROWS`` rows: every
  default tile). A tile's ``syrk`` is 0.1-10 ms of work; OpenBLAS splits it over its threads and waits
  for the slowest, which on a shared machine is the one whose core another process holds. Measured
  on the 2-core development machine with other processes using 1-1.5 cores (J = 1e5, tiles of
  1024-16384 rows): N = 33 6.0-6.8 ms on one thread against 19.6-25.4 ms on two; N = 257 135-142 ms
  against 300-2300 ms. (On an idle machine two threads could be up to ~2x faster for large N; it
  never went idle while this was measured: ``bench/bench_gram_fused.py``'s ``fastopt-blas2`` row
  keeps that comparison in every run.)
- **Fused from basis channels** (:func:`gram_accumulate_channels`, used by :func:`fastopt.ls.assemble`
  on the CPU): one Numba pass forms a tile's rows ``sqrt(w_j) sum_ch a[ch, j] V[ch, j, :]`` (and the
  output-bias column and right-hand side) in float64 from the network's channels, checking them for
  NaN/inf on the way, then ``syrk`` + ``gemv``. It replaces 6-7 NumPy passes and a validation per
  tile; the operations and their order are those of the unfused path, so the bits are the same.
- **Deterministic.** Tiles are visited in a fixed order and added with ``beta = 1``, so the same
  inputs, tile size and number of BLAS threads give the same bits on every run (tested). A
  different tile size changes the rounding only.

``operator_rows`` is a Numba loop over points (threaded from :data:`PARALLEL_MIN_SIZE` output
elements; no reduction, so serial and threaded builds agree bit for bit), vectorised over the
N basis functions (unsigned indices: a signed index makes Numba wrap negative values, a
select per access that stops LLVM vectorising; see ``kernels/cpu/optim.py``).
"""
from __future__ import annotations

import numpy as np
from numba import prange
from scipy.linalg import blas

from . import _blas_threads
from ._jit import jit, parallel_twin

__all__ = ["operator_rows", "gram", "gram_accumulate", "gram_accumulate_channels", "symmetrize", "blas_threads",
           "PARALLEL_MIN_SIZE", "SERIAL_BLAS_MAX_ROWS"]

U = np.uint64
#: From this many output elements (J x N) ``operator_rows`` runs on Numba's threads.
PARALLEL_MIN_SIZE = 1 << 18

_BLAS = {"d": (blas.dsyrk, blas.dgemv), "f": (blas.ssyrk, blas.sgemv)}

#: Tiles of at most this many rows are handed to BLAS with one thread (:func:`blas_threads`).
SERIAL_BLAS_MAX_ROWS = 1 << 16


def blas_threads(tile_rows):
    """A context for a tiled assembly's BLAS calls: one BLAS thread for tiles up to ``SERIAL_BLAS_MAX_ROWS`` rows.

    Why: the module docstring ("One BLAS thread per tile"). Entering and leaving the limit costs
    ~7 us (threadpoolctl; once per assembly or per :func:`gram_accumulate` call, not per tile).
    """
    return _blas_threads.limit(1 if tile_rows <= SERIAL_BLAS_MAX_ROWS else None)


# --------------------------------------------------------------------------- operator rows
@jit
def _operator_rows(channels, coef, out):
    C = channels.shape[0]
    J = out.shape[0]
    n = U(out.shape[1])
    for jj in prange(J):
        j = U(jj)
        c = coef[0, j]
        for k in range(n):
            out[j, k] = c * channels[0, j, k]
        for ch in range(1, C):
            c = coef[ch, j]
            if c != 0:  # most operators use a few channels (e.g. the Laplacian alone)
                for k in range(n):
                    out[j, k] += c * channels[ch, j, k]


_operator_rows_threaded = parallel_twin(_operator_rows)


def operator_rows(channels, coef, out):
    """``out[j, n] = sum_ch coef[ch, j] * channels[ch, j, n]`` in the arrays' dtype (coef: same dtype)."""
    kern = _operator_rows_threaded if out.size >= PARALLEL_MIN_SIZE else _operator_rows
    kern(channels, coef, out)


# --------------------------------------------------------------------------- Gram system
@jit
def _scale_tile(rows, lo, hi, w, y, tile, ty):
    """``tile[i] = sqrt(w_j) rows[j]`` and ``ty[i] = sqrt(w_j) y_j`` for ``j = lo + i``; returns ``sum ty^2``.

    Products are formed in float64 and rounded once to the tile's dtype. ``w`` of size 1 is
    one weight for every row; ``ty`` of size 0: no right-hand side.
    """
    T = tile.dtype.type
    n = U(rows.shape[1])
    one_weight = w.size == 1
    s = np.sqrt(np.float64(w[0]))
    ywy = 0.0
    for i in range(U(hi - lo)):
        j = U(lo) + i
        if not one_weight:
            s = np.sqrt(np.float64(w[j]))
        for k in range(n):
            tile[i, k] = T(np.float64(rows[j, k]) * s)
        if ty.size:
            t = np.float64(y[j]) * s
            ty[i] = T(t)
            ywy += t * t
    return ywy


def gram_accumulate(rows, w, y, A, b, tile):
    """``A += rows^T W rows`` (upper triangle of ``A`` only), ``b += rows^T W y``; returns ``y^T W y``.

    Args:
      rows: ``(J, N)`` float32/float64 (any strides).
      w: ``(J,)`` weights >= 0, or ``(1,)``: one weight for every row (float64).
      y: ``(J,)`` right-hand side, or size 0 for none.
      A: ``(N, N)`` C-contiguous accumulator (float64, or float32 to accumulate in float32); its
        upper triangle is updated in place, the strictly lower part is not touched: call
        :func:`symmetrize` once all blocks are in.
      b: ``(N,)`` of A's dtype, updated in place; size 0 when ``y`` is.
      tile: rows per tile (>= 1): the scratch buffer holds ``min(tile, J) x N`` of A's dtype.
    Returns:
      ``sum_j w_j y_j^2`` (float64 arithmetic), 0.0 without ``y``.
    """
    J, N = rows.shape
    if J == 0 or N == 0:
        return 0.0
    with blas_threads(min(tile, J)):
        return _gram_accumulate(rows, w, y, A, b, tile)


def _gram_accumulate(rows, w, y, A, b, tile):
    J, N = rows.shape
    syrk, gemv = _BLAS[A.dtype.char]
    At = A.T  # Fortran order: BLAS updates A in place; its "lower" triangle is A's upper one
    has_y = y.size > 0
    ywy = 0.0
    if w.size == 1 and rows.dtype == A.dtype and rows.flags.c_contiguous and (not has_y or y.dtype == A.dtype):
        alpha = float(w[0])  # nothing to scale or convert: syrk reads the rows in place
        for lo in range(0, J, tile):
            blk = rows[lo:lo + tile].T
            syrk(alpha, blk, beta=1.0, c=At, trans=0, lower=1, overwrite_c=1)
            if has_y:
                yb = y[lo:lo + tile]
                gemv(alpha, blk, yb, beta=1.0, y=b, overwrite_y=1)
                y64 = yb.astype(np.float64, copy=False)
                ywy += alpha * float(np.dot(y64, y64))
        return ywy
    m = min(tile, J)
    buf = np.empty((m, N), dtype=A.dtype)
    ybuf = np.empty(m if has_y else 0, dtype=A.dtype)
    for lo in range(0, J, tile):
        hi = min(lo + tile, J)
        tb, ty = buf[:hi - lo], ybuf[:hi - lo]
        ywy += _scale_tile(rows, lo, hi, w, y, tb, ty)
        syrk(1.0, tb.T, beta=1.0, c=At, trans=0, lower=1, overwrite_c=1)
        if has_y:
            gemv(1.0, tb.T, ty, beta=1.0, y=b, overwrite_y=1)
    return ywy


@jit
def _channel_rows(V, phi, coef, active, w, target, G, lo, R, ty):
    """The scaled rows of one tile of a fused assembly; returns ``(sum ty^2, check)``.

    ``R[i, n] = s_j sum_{ch in active} coef[ch, j] V'[ch, i, n]`` and ``ty[i] = s_j (target[j] -
    sum_{ch in active} coef[ch, j] G[ch, i])`` for ``j = lo + i``, ``s_j = sqrt(w_j)``, where ``V'`` is
    ``V`` with the column ``phi[ch, i]`` appended when ``R`` has one more column than ``V`` (the
    output bias). The combination is summed in float64 in channel order and then scaled: the same
    operations, in the same order, as the unfused path (rows, then :func:`_scale_tile`).
    ``check`` is ``sum 0 * row`` over the unscaled rows: 0 when every row value is finite, NaN else.
    ``G`` of size 0: no offset; ``ty`` of size 0: no right-hand side.
    """
    T = U(R.shape[0])
    nb = U(R.shape[1])
    nv = U(V.shape[2])
    bias = nb > nv
    one_weight = w.size == 1
    s = np.sqrt(w[0])
    ywy = 0.0
    check = 0.0
    na = active.size
    for i in range(T):
        j = U(lo) + i
        if not one_weight:
            s = np.sqrt(w[j])
        if na == 0:
            for k in range(nb):
                R[i, k] = 0.0
        else:
            ch = active[0]
            a = coef[ch, j]
            for k in range(nv):
                R[i, k] = a * np.float64(V[ch, i, k])
            if bias:
                R[i, nv] = a * np.float64(phi[ch, i])
            for m in range(1, na):
                ch = active[m]
                a = coef[ch, j]
                for k in range(nv):
                    R[i, k] += a * np.float64(V[ch, i, k])
                if bias:
                    R[i, nv] += a * np.float64(phi[ch, i])
            for k in range(nb):
                r = R[i, k]
                check += r * 0.0
                R[i, k] = r * s
        if ty.size:
            t = target[j]
            if G.size:
                for m in range(na):
                    ch = active[m]
                    t -= coef[ch, j] * np.float64(G[ch, i])
            t *= s
            ty[i] = t
            ywy += t * t
    return ywy, check


def gram_accumulate_channels(V, phi, coef, active, w, target, G, lo, A, b, R, ty):
    """One tile of a fused assembly from basis channels: ``A += R^T R``, ``b += R^T ty`` (float64).

    Args:
      V: ``(C, T, nv)`` the tile's basis channels (float32/float64, C-contiguous).
      phi: ``(C, T)`` the channels of the output bias's column (used when ``R`` has ``nv + 1`` columns).
      coef: ``(C, J)`` float64 operator coefficients of the whole block; ``active``: int64 indices
        of the channels with a non-zero coefficient somewhere.
      w: ``(J,)`` float64 weights >= 0 of the whole block, or ``(1,)``.
      target: ``(J,)`` float64 right-hand side of the whole block (size 0: none, then ``ty`` too).
      G: ``(C, T)`` the tile's offset channels, subtracted from the target (size 0: none).
      lo: the tile's first point in the block.
      A: ``(N, N)`` C-contiguous float64 accumulator, upper triangle updated; ``b``: ``(N,)``.
      R, ty: float64 scratch of at least ``(T, N)`` and ``(T,)`` (size 0 without a right-hand side).
    Returns:
      ``(sum_j w_j y_j^2, check)``, ``check`` NaN when a row value was NaN or inf (nothing is
      then added to ``A`` or ``b``).

    Call it inside :func:`blas_threads` (the caller enters it once for all its tiles).
    """
    T = V.shape[1]
    N = A.shape[0]
    R = R[:T, :N]
    ty = ty[:T] if ty.size else ty
    ywy, check = _channel_rows(V, phi, coef, active, w, target, G, lo, R, ty)
    if check != 0.0 or T == 0:
        return ywy, check
    syrk, gemv = _BLAS["d"]
    syrk(1.0, R.T, beta=1.0, c=A.T, trans=0, lower=1, overwrite_c=1)
    if ty.size:
        gemv(1.0, R.T, ty, beta=1.0, y=b, overwrite_y=1)
    return ywy, check


@jit
def symmetrize(A):
    """Copy the upper triangle of ``A`` onto the lower one, in place."""
    n = U(A.shape[0])
    for i in range(n):
        for j in range(i):
            A[i, j] = A[j, i]


def gram(Phi, w, y, A, b, tile):
    """``A = Phi^T W Phi`` (both triangles), ``b = Phi^T W y`` (overwritten); returns ``y^T W y``."""
    A[...] = 0
    if b.size:
        b[...] = 0
    ywy = gram_accumulate(Phi, w, y, A, b, tile)
    symmetrize(A)
    return ywy
