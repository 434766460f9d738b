r"""CuPy launchers of the "fourier" family: Fourier features with derivative channels, and their backward.

Same names, signatures and math as :mod:`fastopt.kernels.reference_nn` (read the channel
layout ``(C, J, n0)``, ``C in {1, 1 + d, 2 + d}``, and the closed forms there); the CUDA
kernels are in ``fourier.cu`` beside this file::

    psi_jk = s x_j . b_k;   gamma(x) = [x (if keep_x), cos psi, sin psi],   n0 = [d] + 2K
    d/dx_m: -s B_mk sin, s B_mk cos;   Laplacian: -s^2 |b_k|^2 (cos, sin)

    psib_jk = -sin Cb_0 + cos Sb_0 - sum_m s B_mk (cos Cb_m + sin Sb_m) + s^2 |b_k|^2 (sin Cb_L - cos Sb_L)
    dL/dB_mk = s sum_j [x_jm psib_jk + cos Sb_m - sin Cb_m] - 2 s^2 B_mk sum_j (cos Cb_L + sin Sb_L)
    dL/dx_jm = Xb_jm + sum_k s B_mk psib_jk

Arguments: contiguous CuPy arrays of one dtype (float32 or float64) on the current device
(``x`` (J, d), ``B`` (d, K), ``out``/``adj`` (C, J, n0), ``gB`` (d, K), ``gx`` (J, d)), trusted
(validated by the caller); ``s`` any real number, rounded once to the dtype; ``keep_x`` a bool.
An unwanted gradient is an array of size 0. Outputs are overwritten. Every function launches on
the current stream and returns without synchronising.

The argument of sin and cos. ``t = x . b_k`` is formed in the dtype; when ``s`` is 2 pi (to the
dtype's precision: ``T(s) == T(2 pi)``) the kernels evaluate ``sincospi(2 t)``, so neither the
rounding of 2 pi to the dtype nor that of ``s t`` enters: for float32 that removes an absolute
error of up to ``2.8e-8 |psi|`` in every feature (``3e-5`` at ``|psi| = 1e3``). Otherwise
``sincos(s t)``. What remains, ``~eps |psi|`` from rounding ``t``, is inherent in evaluating
the layer in the dtype (``tests/test_fourier_cpu.py`` derives the bounds).

Launch configuration:

- forward: one work item per (point, column), ``W = [d] + K`` items per point: a kept-x column,
  or one frequency whose sincos gives its cos and sin columns in every channel. A grid-stride
  loop of ``_module.THREADS`` (256) threads per block over ``J W`` items with
  ``_module.grid_size`` blocks (one item per thread up to ~1e6 items, then a grid of 32 blocks
  per SM, each thread striding); consecutive threads write consecutive addresses of each
  channel. Memory-bound: a float32 forward writes ``4 C n0`` bytes per point;
- backward pass 1 (``fourier_backward_partial``): a grid of ``(ceil(J / CHUNK), ceil(K / 32))``
  blocks of ``8 x 32`` threads; a lane owns one frequency, a warp every 8th point of the block's
  chunk of ``CHUNK`` = 256 points (so a warp reads 32 consecutive adjoints per channel and
  point). Each lane keeps its dL/dB sums in registers (dims in groups of ``MAX_D`` = 4: one
  launch per group, the sincos recomputed per group, so any ``d`` works and d <= 4 costs one
  launch); dL/dx sums over the warp's 32 frequencies with a warp butterfly;
- backward pass 2: ``fourier_backward_finish_B``, one block of 256 threads per entry of
  ``gB`` adding the chunk partials in a fixed tree; ``fourier_backward_finish_x`` (only when
  ``K > 32``, or ``K = 0``) adds the per-tile partials of dL/dx in tile order.

Deterministic: no atomics; every sum has a fixed order that depends on ``J`` and ``K`` only.
Workspace: the dL/dB partials, ``ceil(J / CHUNK) (2 d + 1) K`` elements, and, for ``K > 32``
with dL/dx wanted, ``ceil(K / 32) J d`` more (:func:`backward_workspace_size`); the public
:func:`fourier_backward` takes it from CuPy's memory pool, the MLP kernels from their tape.

Example (needs a GPU, so not a doctest)::

    import cupy, math
    from fastopt.kernels.gpu import fourier
    x, B = cupy.array([[0.125]]), cupy.array([[1.0]])   # psi = 2 pi x b = pi / 4
    out = cupy.empty((3, 1, 2))                        # u, u', u'' of [cos psi, sin psi]
    fourier.fourier_forward(x, B, 2 * math.pi, False, out)
    cupy.round(out[:, 0], 5).tolist()
    # [[0.70711, 0.70711], [-4.44288, 4.44288], [-27.91546, -27.91546]]

References:
  M. Tancik et al., Fourier features let networks learn high frequency functions in low
  dimensional domains, NeurIPS 2020.
"""
from __future__ import annotations

import math

import cupy
import numpy as np

from . import _module

__all__ = ["fourier_forward", "fourier_backward", "backward_workspace_size", "CHUNK", "LANES", "WARPS",
           "MAX_D", "FINISH_THREADS"]

_FILE = "fourier.cu"
#: Must equal FB_CHUNK, FB_LANES, FB_WARPS, FB_MAX_D and FINISH_THREADS in fourier.cu.
CHUNK = 256
LANES = 32
WARPS = 8
MAX_D = 4
FINISH_THREADS = 256
#: A null device pointer, passed by value for unused arrays.
_NULL = np.uint64(0)


def _ptr(a):
    """An array as a kernel argument: itself, or a null pointer when it has no elements."""
    return a if a.size else _NULL


def _scale(s, dtype):
    """``(T(s), use_pi)``: the scale in the dtype, and whether it is 2 pi there (then sincospi)."""
    t = np.dtype(dtype).type
    return t(s), np.int32(t(s) == t(2.0 * math.pi))


def fourier_forward(x, B, s, keep_x, out):
    """Fourier features with their derivative channels: ``out <- gamma(x)`` and its x-derivatives.

    gamma(x) = [x (if keep_x), cos(s x B), sin(s x B)]; channel ``1 + k`` is d/dx_k, channel
    ``1 + d`` the Laplacian (module docstring).

    Args:
      x: (J, d) points.  B: (d, K) frequencies (K may be 0: then ``keep_x``).
      s: float scale (2 pi or 1).  keep_x: bool, whether the features start with x.
      out: (C, J, [d] + 2K) written; C in {1, 1 + d, 2 + d}. Same dtype as x and B.
    """
    C, J, _ = out.shape
    d, K = B.shape
    off = d if keep_x else 0
    n = J * (off + K)
    if n == 0:
        return
    t, use_pi = _scale(s, out.dtype)
    kernel = _module.get_kernel(_FILE, "fourier_forward", out.dtype)
    kernel((_module.grid_size(n),), (_module.THREADS,),
           (x, _ptr(B), t, use_pi, np.int32(bool(keep_x)), out, np.int64(J), np.int64(d), np.int64(K),
            np.int64(C)))


def backward_workspace_size(J, d, K, want_B=True, want_x=True):
    """Elements of the dtype that :func:`fourier_backward` needs as workspace.

    The dL/dB partials ``(ceil(J / CHUNK), 2 d + 1, K)``, and the per-tile dL/dx partials
    ``(ceil(K / LANES), J, d)`` when dL/dx is wanted and ``K > LANES``.
    """
    J, d, K = int(J), int(d), int(K)
    n_chunks = -(-J // CHUNK)
    n_tiles = -(-K // LANES)
    size = n_chunks * (2 * d + 1) * K if want_B else 0
    if want_x and n_tiles > 1:
        size += n_tiles * J * d
    return size


def _backward(x, B, s, keep_x, adj, gB, gx, work):
    """:func:`fourier_backward` with its workspace given (``work``: at least
    :func:`backward_workspace_size` elements of the dtype, contiguous)."""
    C, J, n0 = adj.shape
    d, K = B.shape
    want_B = gB.size > 0
    want_x = gx.size > 0
    if not (want_B or want_x):
        return
    if J == 0:
        if want_B:
            gB.fill(0)
        return
    dtype = adj.dtype
    t, use_pi = _scale(s, dtype)
    n_chunks = -(-J // CHUNK)
    n_tiles = -(-K // LANES)
    size_B = n_chunks * (2 * d + 1) * K if want_B else 0
    partial = work[:size_B]
    gx_partial = work[size_B:size_B + n_tiles * J * d] if (want_x and n_tiles > 1) else work[:0]
    if K > 0:
        kernel = _module.get_kernel(_FILE, "fourier_backward_partial", dtype)
        # Dims in groups of MAX_D: each launch adds dL/dB for one group; dL/dx in the first.
        for g, m_lo in enumerate(range(0, d if want_B else 1, MAX_D)):
            wx = want_x and g == 0
            kernel((n_chunks, n_tiles), (LANES * WARPS,),
                   (x, B, t, use_pi, np.int32(bool(keep_x)), adj, np.int64(J), np.int64(d), np.int64(K),
                    np.int64(C), np.int64(m_lo), np.int32(want_B), np.int32(wx), _ptr(partial),
                    (gx if n_tiles == 1 else gx_partial) if wx else _NULL, np.int64(n_tiles)))
    if want_B:  # K > 0 here: gB has d K > 0 entries
        _module.get_kernel(_FILE, "fourier_backward_finish_B", dtype)(
            (d * K,), (FINISH_THREADS,), (B, t, partial, np.int64(n_chunks), np.int64(d), np.int64(K), gB))
    if want_x and n_tiles != 1:
        _module.get_kernel(_FILE, "fourier_backward_finish_x", dtype)(
            (_module.grid_size(J * d),), (_module.THREADS,),
            (adj, _ptr(gx_partial), np.int64(J), np.int64(d), np.int64(n0), np.int32(bool(keep_x)),
             np.int64(n_tiles), gx))


def fourier_backward(x, B, s, keep_x, adj, gB, gx):
    """Gradients of a loss through the Fourier features: ``gB <- dL/dB``, ``gx <- dL/dx``.

    ``adj[ch, j, f] = dL/d(channel ch of feature f at point j)``; formulas in the module
    docstring. ``gx`` is the full gradient in x through every channel of ``adj``. Both sums
    (over points for ``gB``, over frequencies for ``gx``) have a fixed order: the same bits
    from run to run.

    Args:
      x: (J, d) points.  B: (d, K) frequencies.  s: float scale.  keep_x: bool.
      adj: (C, J, [d] + 2K) adjoints of the feature channels.
      gB: (d, K) written, or size 0 (not wanted).
      gx: (J, d) written, or size 0 (not wanted).
    """
    _, J, _ = adj.shape
    d, K = B.shape
    size = backward_workspace_size(J, d, K, gB.size > 0, gx.size > 0)
    _backward(x, B, s, keep_x, adj, gB, gx, cupy.empty(size, dtype=adj.dtype))
