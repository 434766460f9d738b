r"""CuPy launchers of the "gram" family: operator rows (CuPy array operations) and the Gram system by cuBLAS ``syrk``.

Same names, signatures and math as :mod:`fastopt.kernels.reference_ls` (read the system there), and
the same algorithm as the CPU twin ``kernels/cpu/gram.py``: ``A += rows^T W rows``,
``b += rows^T W y``, ``W = diag(w)``, ``w >= 0``.

How the Gram system is built on the device
------------------------------------------
- **syrk on sqrt(w)-scaled rows.** ``rows^T W rows = R^T R`` with ``R = diag(sqrt(w)) rows``: one
  ``cupy.cublas.syrk("T", R, out=A, alpha, beta=1.0, lower=False)`` per tile (cuBLAS ``dsyrk``,
  half the flops of a GEMM) and one ``cupy.cublas.gemv("T", 1.0, R, sqrt(w) y, 1.0, b)`` on the
  same tile. For a C-contiguous ``out`` CuPy maps ``lower`` to ``out`` as indexed from Python, so
  ``lower=False`` updates ``A``'s *upper* triangle, the triangle the CPU kernel updates; the
  strictly lower part is left as it was until :func:`symmetrize`.
- **Tiles.** Rows are taken ``tile`` at a time (the caller's choice; :func:`fastopt.ls.default_tile`
  gives ~64 MiB of float64 per tile on the GPU, so that a call is a few large cuBLAS calls rather
  than many launch-bound ones), scaled (and upcast) by one CuPy element-wise ``multiply`` with
  ``dtype=float64`` (the product is formed in float64 and rounded once to the tile's dtype, as on
  the CPU) into one scratch buffer allocated per call from CuPy's memory pool. When nothing needs
  scaling or converting (one weight for every row, rows and ``y`` already of ``A``'s dtype and
  C-contiguous) ``syrk`` reads the caller's rows in place with the weight as its ``alpha``.
  (``y`` must be contiguous there: CuPy's ``gemv`` passes its vectors to cuBLAS with stride 1
  whatever their strides, so a strided ``y`` takes the scaling path, which copies it.)
- **float64 accumulation, also for float32 rows** (the measured reason is in the CPU module):
  float32 rows are upcast while they are scaled, then ``dsyrk``; a float32 ``A`` gets float32
  tiles and ``ssyrk`` (``CUPY_TF32`` does not touch ``syrk``).
- **No synchronisation.** ``y^T W y`` is summed on the device (``dot`` of the scaled tile of ``y``)
  into a float64 device scalar, returned as a 0-d CuPy array (``float()`` it: that is the one
  synchronisation, done by :func:`fastopt.ls.gram` / ``GramAccumulator.add``). One weight for
  every row may arrive as a host array (``(1,)`` NumPy, what :mod:`fastopt.ls` passes): its square
  root is then a host scalar; a device ``(1,)`` weight is read once (one synchronisation).
- **Deterministic.** Tiles are visited in a fixed order and added with ``beta = 1``; cuBLAS
  ``syrk``, ``gemv`` and ``dot`` are deterministic for a fixed configuration (same GPU
  architecture, cuBLAS version and stream; CuPy leaves cuBLAS's atomics mode off), so the same
  inputs and tile size give the same bits on every run. The summation order differs from
  OpenBLAS's: CPU and GPU agree to the rounding bound of ``tests/test_ls_gram.py``, not bit for bit.

No ``.cu`` file: the only element-wise step, the row scaling, is one CuPy ``multiply`` pass at
memory bandwidth that the next ``syrk`` needs anyway (a fused kernel could not skip writing the
scaled tile), and the dense work belongs to cuBLAS (CONVENTIONS, rule 4).

``operator_rows``: ``out = coef[0] channels[0]``, then ``out += coef[ch] channels[ch]`` per channel
(one ``J x N`` temporary from CuPy's pool), rounding like the CPU loop (a product, then a sum, in
the arrays' dtype). Every channel is applied: skipping channels whose coefficients are zero, as the
CPU loop does point by point, would need them on the host; for finite channels adding ``0 x`` only
changes the sign of a zero.

Arguments: CuPy arrays on the current device, trusted (validated by :mod:`fastopt.ls`); ``y``, ``b``
of size 0 mean "no right-hand side". Every function launches on the current stream and returns
without synchronising.
"""
from __future__ import annotations

import functools
import math

import cupy
import numpy as np
from cupy import cublas  # a submodule CuPy does not import by itself

__all__ = ["operator_rows", "gram", "gram_accumulate", "symmetrize"]

_F64 = np.dtype(np.float64)


# --------------------------------------------------------------------------- operator rows
def operator_rows(channels, coef, out):
    """``out[j, n] = sum_ch coef[ch, j] * channels[ch, j, n]`` in the arrays' dtype (coef: same dtype)."""
    C = channels.shape[0]
    if out.size == 0:
        return
    cupy.multiply(coef[0][:, None], channels[0], out=out)
    for ch in range(1, C):
        out += coef[ch][:, None] * channels[ch]


# --------------------------------------------------------------------------- Gram system
def _one_weight(w) -> float:
    """The weight of a size-1 ``w`` as a Python float (host: free; device: one synchronisation)."""
    return float(w[0])


def gram_accumulate(rows, w, y, A, b, tile):
    """``A += rows^T W rows`` (upper triangle of ``A`` only), ``b += rows^T W y``; returns ``y^T W y``.

    Args:
      rows: ``(J, N)`` float32/float64 CuPy array (any strides).
      w: ``(J,)`` float64 weights >= 0 on the device, or ``(1,)`` (host or device): one weight for
        every row.
      y: ``(J,)`` right-hand side, or size 0 for none.
      A: ``(N, N)`` C-contiguous accumulator (float64, or float32 to accumulate in float32); its upper
        triangle is updated in place, the strictly lower part is not touched: call
        :func:`symmetrize` once all blocks are in.
      b: ``(N,)`` of A's dtype, updated in place; size 0 when ``y`` is.
      tile: rows per tile (>= 1): the scratch buffer holds ``min(tile, J) x N`` of A's dtype.
    Returns:
      ``sum_j w_j y_j^2`` summed in float64 on the device: a 0-d float64 CuPy array (not
      synchronised), or 0.0 when there is nothing to add.
    """
    J, N = rows.shape
    if J == 0 or N == 0:
        return 0.0
    dt = A.dtype
    has_y = y.size > 0
    one_weight = w.size == 1
    ywy = cupy.zeros((), dtype=_F64)
    if (one_weight and rows.dtype == dt and rows.flags.c_contiguous
            and (not has_y or (y.dtype == dt and y.flags.c_contiguous))):
        alpha = _one_weight(w)  # nothing to scale or convert: syrk reads the rows in place
        for lo in range(0, J, tile):
            blk = rows[lo:lo + tile]
            cublas.syrk("T", blk, out=A, alpha=alpha, beta=1.0, lower=False)
            if has_y:
                yb = y[lo:lo + tile]
                cublas.gemv("T", alpha, blk, yb, 1.0, b)
                y64 = yb.astype(_F64, copy=False)
                ywy += alpha * cupy.dot(y64, y64)
        return ywy
    m = min(tile, J)
    buf = cupy.empty((m, N), dtype=dt)
    s = math.sqrt(_one_weight(w)) if one_weight else None
    sbuf = None if one_weight else cupy.empty(m, dtype=_F64)
    tbuf = cupy.empty(m if has_y else 0, dtype=_F64)
    tybuf = tbuf if dt == _F64 else cupy.empty(m if has_y else 0, dtype=dt)
    for lo in range(0, J, tile):
        hi = min(lo + tile, J)
        n = hi - lo
        tb = buf[:n]
        if one_weight:
            sw, sw_col = s, s
        else:
            sw = cupy.sqrt(w[lo:hi], out=sbuf[:n])
            sw_col = sw[:, None]
        # dtype=float64: the product in float64 (a Python scalar would otherwise pick the rows' float32 loop)
        cupy.multiply(rows[lo:hi], sw_col, out=tb, dtype=_F64)
        cublas.syrk("T", tb, out=A, alpha=1.0, beta=1.0, lower=False)
        if has_y:
            t = cupy.multiply(y[lo:hi], sw, out=tbuf[:n], dtype=_F64)
            ywy += cupy.dot(t, t)
            ty = t
            if dt != _F64:
                ty = tybuf[:n]
                ty[...] = t
            cublas.gemv("T", 1.0, tb, ty, 1.0, b)
    return ywy


@functools.lru_cache(maxsize=16)
def _strict_lower(device_id: int, n: int):
    """The (n, n) boolean mask of the strictly lower triangle, kept per device and size."""
    return cupy.tri(n, n, -1, dtype=bool)


def symmetrize(A):
    """Copy the upper triangle of ``A`` onto the lower one, in place (one masked copy, exact).

    The copy reads only the upper triangle (through ``A.T``) and writes only the strictly lower
    one, so reading and writing the same buffer cannot interfere.
    """
    n = A.shape[0]
    if n < 2:
        return
    cupy.copyto(A, A.T, where=_strict_lower(cupy.cuda.runtime.getDevice(), n))


def gram(Phi, w, y, A, b, tile):
    """``A = Phi^T W Phi`` (both triangles), ``b = Phi^T W y`` (overwritten); returns ``y^T W y`` (as above)."""
    A.fill(0)
    if b.size:
        b.fill(0)
    ywy = gram_accumulate(Phi, w, y, A, b, tile)
    symmetrize(A)
    return ywy
