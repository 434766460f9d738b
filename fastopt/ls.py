r"""The least-squares (LS) system of the LS hybrid: Gram assembly and robust solves.

The LS hybrid of Cyr et al. writes a network's output as a linear combination of the functions
of its last hidden layer, ``u(x) = sum_n c_n u_n(x; w)``, and at every step solves *exactly* for
the coefficients ``c`` of a loss that is quadratic in them, then takes a gradient step on the
hidden parameters ``w`` with ``c`` held fixed (variable projection, Golub & Pereyra). For a linear
operator ``L`` (the identity for regression, a PDE residual operator for a PINN) and points
``x_j`` with weights ``w_j >= 0`` (quadrature weights, or ``1/J`` for a mean)::

    loss(c) = sum_j w_j (L u(x_j) - y_j)^2 = c^T A c - 2 b^T c + y^T W y,
    Phi[j, n] = (L u_n)(x_j),   A = Phi^T W Phi,   b = Phi^T W y,   W = diag(w),

minimised where ``A c = b``. Blocks of rows with their own weights (PDE residual rows, boundary
rows) add up: ``A = sum_k Phi_k^T W_k Phi_k``.

This module, in sections:

1. **Operator rows** -- :func:`operator_rows`: ``Phi`` from the basis's derivative channels
   ``(C, J, N)`` (value, gradient, Laplacian; the layout of :mod:`fastopt.nn`) and the
   operator's per-point coefficients.
2. **Gram assembly** -- :func:`gram` from a given ``Phi``, and :class:`GramAccumulator`, which
   adds blocks (or tiles of a block) one at a time and hands over a symmetric ``A`` and ``b``:
   the entry point of assembly paths that never hold all of ``Phi``. Both return a
   :class:`GramSystem`. Accumulation is in float64 by default, also for float32 rows (see
   ``kernels/cpu/gram.py`` for the measured reason), in tiles of bounded memory.
3. **Robust solve** -- :func:`solve`: Cholesky of ``A + reg I`` in float64 with a LAPACK
   condition estimate; a symmetric eigendecomposition with truncation (the minimum-norm
   solution) when Cholesky fails or the system is too ill-conditioned for the data's precision.
   Returns an :class:`LSSolution` and never NaN; warns with :class:`IllConditionedWarning`.

Every function validates its inputs before touching any buffer (messages in
:mod:`fastopt._validate`) and picks the backend from its arrays (NumPy -> "cpu", CuPy -> "gpu"),
an active ``use_backend`` or ``backend=``; "reference" runs the float64 NumPy oracle
(``kernels/reference_ls.py``).

Example (fit ``y = 1 + 2 x`` in the basis ``1, x, x^2`` at Gauss--Legendre points):
  >>> import numpy as np
  >>> from fastopt import ls, quadrature
  >>> x, w = quadrature.gauss_legendre(4, 0.0, 1.0)
  >>> Phi = np.hstack([np.ones_like(x), x, x**2])
  >>> system = ls.gram(Phi, w, 1.0 + 2.0 * x[:, 0])
  >>> sol = ls.solve(system.A, system.b)
  >>> np.round(sol.c, 12) + 0.0, sol.method, sol.rank
  (array([1., 2., 0.]), 'cholesky', 3)
  >>> abs(system.loss(sol.c)) < 1e-12          # the fit is exact
  True

References:
  E. C. Cyr, M. A. Gulian, R. G. Patel, M. Perego, N. A. Trask, Robust training and initialization
  of deep neural networks: an adaptive basis viewpoint, MSML 2020 (the LS hybrid, section 3).
  G. H. Golub, V. Pereyra, The differentiation of pseudo-inverses and nonlinear least squares
  problems whose variables separate, SIAM J. Numer. Anal. 10 (1973) (variable projection).
  N. J. Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., SIAM 2002, ch. 10
  (Cholesky) and 15 (condition estimation).
"""
from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import numpy as np

from . import _dispatch
from . import _validate as V

__all__ = ["operator_rows", "gram", "GramSystem", "GramAccumulator", "solve", "LSSolution",
           "IllConditionedWarning", "default_tile"]

_F64 = np.dtype(np.float64)


def _xp(backend: str):
    """The array module of a backend (CuPy imported only when "gpu" is in play)."""
    if backend == "gpu":
        import cupy

        return cupy
    return np


def default_tile(n_basis: int, backend: str = "cpu") -> int:
    """Rows per tile of a Gram assembly with ``n_basis`` columns on ``backend``.

    CPU (and "reference"): about 2 MiB of float64, 256 to 8192 rows. A tile of the scaled rows
    stays in L2/L3 while ``syrk`` and ``gemv`` read it. Measured on the 2-core development machine
    (J = 1e5, N = 32..256, one weight for every row): tiles of >= 1024 rows were within ~10% of one
    ``syrk`` over the whole matrix, 256-row tiles 15-60% slower (per-call overhead, and short
    panels for syrk's own blocking); with one weight per row, tiles of 1 to 4 MiB were within
    noise of each other.

    GPU: about 64 MiB of float64, 4096 to 2^20 rows. A GPU has no cache to stay in; what costs is
    the ~5-10 us launch overhead of each of a tile's ~8 calls (scale, ``syrk``, ``gemv``, ...), which
    at J = 1e6 and 2 MiB tiles (~500 tiles) would exceed the ``syrk`` work itself (~1 GFLOP per 1e6
    rows x 32^2). 64 MiB keeps a million-point system to a handful of tiles at a memory cost that
    is small beside any current GPU's (chosen by that arithmetic; ``bench/bench_gpu_ls.py`` times
    tile sizes on the device).

    Example:
      >>> from fastopt.ls import default_tile
      >>> default_tile(32), default_tile(128), default_tile(4096)
      (8192, 2048, 256)
      >>> default_tile(64, "gpu"), default_tile(256, "gpu")
      (131072, 32768)
    """
    n = max(int(n_basis), 1)
    if backend == "gpu":
        return int(min(1 << 20, max(4096, (1 << 26) // (8 * n))))
    return int(min(8192, max(256, (1 << 21) // (8 * n))))


# =========================================================================== 1. operator rows
def operator_rows(channels, coef, *, out=None, backend=None):
    r"""Rows of a linear differential operator applied to every basis function, at every point.

    ``out[j, n] = sum_ch coef[ch, j] channels[ch, j, n] = (L u_n)(x_j)`` where ``channels`` are the
    basis's derivative channels (``(C, J, N)``: channel 0 ``u_n``, ``1 + k`` ``d u_n / d x_k``,
    ``1 + d`` the Laplacian, as :mod:`fastopt.nn` returns them). E.g. in 1-D (``u, u', u''``) the
    Helmholtz residual ``-u'' - k^2 u`` has ``coef = [-k^2, 0, -1]``.

    Args:
      channels: ``(C, J, N)`` float32/float64.
      coef: ``(C, J)`` per-point coefficients, or ``(C,)`` the same at every point; cast to the
        dtype of ``channels``.
      out: optional ``(J, N)`` C-contiguous array of ``channels``' dtype, overwritten.
      backend: "cpu", "gpu", "reference" or None (from the arrays).
    Returns:
      ``out`` (allocated when not given), of ``channels``' dtype.

    Example:
      >>> import numpy as np
      >>> from fastopt.ls import operator_rows
      >>> x = np.linspace(0.0, 1.0, 3)
      >>> n = np.arange(1, 3)
      >>> u = np.sin(np.outer(x, n)); uxx = -n**2 * u     # u_n = sin(n x) and u_n''
      >>> channels = np.stack([u, np.cos(np.outer(x, n)) * n, uxx])
      >>> np.allclose(operator_rows(channels, np.array([4.0, 0.0, 1.0])), (4 - n**2) * u)   # u'' + 4 u
      True
    """
    f = "operator_rows"
    coef_is_array = hasattr(coef, "shape") and hasattr(coef, "dtype") and not isinstance(coef, np.generic)
    named = ([("channels", channels)] + ([("coef", coef)] if coef_is_array else [])
             + ([("out", out)] if out is not None else []))
    backend, arrays = _dispatch.resolve(f, named, backend)   # coef on another device is a TypeError
    channels = arrays[0]
    if coef_is_array:
        coef = arrays[1]
    xp = _xp(backend)
    V.ls_input(f, "channels", channels, 3, "(C, J, N) (channels x points x basis functions)")
    try:
        coef = xp.asarray(coef, dtype=channels.dtype)
    except (TypeError, ValueError):
        raise TypeError(f"{f}: coef must be a real array of shape (C, J) or (C,), got {type(coef).__name__}") from None
    C, J, N = V.operator_channels(f, channels, coef)
    if coef.ndim == 1:
        coef = xp.ascontiguousarray(xp.broadcast_to(coef[:, None], (C, J)))
    if out is None:
        out = xp.empty((J, N), dtype=channels.dtype)
    else:
        out = arrays[-1]
        V.array_of(f, "out", out, (J, N), channels.dtype, writable=True)
        V.no_aliasing(f, [("out", out), ("channels", channels)])
    _dispatch.get_kernel("gram", "operator_rows", backend)(channels, coef, out)
    return out


# =========================================================================== 2. Gram assembly
class GramSystem(NamedTuple):
    """An assembled LS system ``A c = b``.

    Attributes:
      A: ``(N, N)`` symmetric, ``Phi^T W Phi`` (float64 unless a float32 accumulator was asked for).
      b: ``(N,)`` ``Phi^T W y``, or None when no right-hand side was given.
      n_rows: the number of rows (points) assembled, all blocks together.
      ywy: ``y^T W y`` (0.0 without ``y``): the constant of the loss, so that
        ``loss(c) = c^T A c - 2 b^T c + ywy`` needs no pass over the points.
    """

    A: object
    b: object
    n_rows: int
    ywy: float

    def loss(self, c) -> float:
        """The weighted squared residual ``sum_j w_j (Phi c - y)_j^2 = c^T A c - 2 b^T c + y^T W y``.

        Evaluated from the system alone (cancellation: accurate to ~``eps cond(A) |y^T W y|``).
        """
        xp = _dispatch.array_module(self.A)
        c = xp.asarray(c, dtype=_F64)
        A = self.A.astype(_F64, copy=False)
        value = float(c @ (A @ c))
        if self.b is not None:
            value += self.ywy - 2.0 * float(self.b.astype(_F64, copy=False) @ c)
        return value


def gram(Phi, weights=None, y=None, *, tile=None, dtype=None, out=None, check_finite=True,
         backend=None) -> GramSystem:
    r"""The Gram system ``A = Phi^T W Phi``, ``b = Phi^T W y`` of a given row matrix ``Phi``.

    Assembled tile by tile (``tile`` rows at a time): apart from ``A`` and ``b`` the extra memory is
    one tile of float64 (~2 MiB by default on the CPU, ~64 MiB on the GPU), whatever ``J``; with a
    single weight for every row and rows already in the accumulation dtype, none at all. CPU: BLAS
    ``syrk`` on ``sqrt(w)``-scaled rows, on one BLAS thread for tiles up to 65536 rows (measured
    3-16x faster than OpenBLAS's two threads on a shared machine; see ``kernels/cpu/gram.py``); GPU (CuPy arrays): cuBLAS
    ``syrk`` likewise, ``A`` and ``b`` stay on the device (``kernels/gpu/gram.py``); ``ywy`` is the
    one value brought to the host.

    Args:
      Phi: ``(J, N)`` float32/float64 rows, any strides (``J = 0`` gives ``A = 0``).
      weights: None (``1/J`` each: the mean squared residual), one number ``>= 0`` for every row,
        or ``(J,)`` weights ``>= 0`` (quadrature weights). Negative weights are refused.
      y: ``(J,)`` right-hand side, or None (then ``b`` is None).
      tile: rows per tile (default :func:`default_tile` of N and the backend). The result depends
        on it only through rounding; the same tile size gives the same bits on every run.
      dtype: accumulation dtype, float64 (default, also for float32 ``Phi``) or float32 (faster,
        float32-accurate); default ``out``'s dtype when ``out`` is given.
      out: optional ``(N, N)`` C-contiguous array for ``A``, overwritten.
      check_finite: check that ``Phi``, ``weights`` and ``y`` hold no NaN/inf (one pass of a sum
        over each; the error names the argument). Turn off only for data known to be finite.
      backend: "cpu", "gpu", "reference" or None (from the arrays).
    Returns:
      :class:`GramSystem` ``(A, b, n_rows, ywy)``; ``A`` is exactly symmetric.

    Example:
      >>> import numpy as np
      >>> from fastopt import ls
      >>> Phi = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]], dtype=np.float32)
      >>> s = ls.gram(Phi, y=np.array([1.0, 3.0, 5.0], dtype=np.float32))   # weights 1/3
      >>> s.A * 3, s.b * 3, s.A.dtype
      (array([[3., 3.],
             [3., 5.]]), array([ 9., 13.]), dtype('float64'))
    """
    f = "gram"
    backend, Phi, w, y, out = _block(f, "Phi", Phi, weights, y, out, backend, check_finite)
    J, N = Phi.shape
    if dtype is None:
        dtype = out.dtype if out is not None and hasattr(out, "dtype") else _F64
    dtype = V.ls_dtype(f, dtype)
    tile = default_tile(N, backend) if tile is None else V.tile_rows(f, tile)
    xp = _xp(backend)
    if out is not None:
        V.array_of(f, "out", out, (N, N), dtype, writable=True)
        V.no_aliasing(f, [("out", out), ("Phi", Phi)] + ([("y", y)] if y is not None else []))
        A = out
    else:
        A = xp.empty((N, N), dtype=dtype)
    b = xp.empty(N if y is not None else 0, dtype=dtype)
    y_k = y if y is not None else xp.empty(0, dtype=Phi.dtype)
    ywy = _dispatch.get_kernel("gram", "gram", backend)(Phi, w, y_k, A, b, tile)
    return GramSystem(A, b if y is not None else None, J, float(ywy))


def _block(f, rows_name, rows, weights, y, out, backend, check_finite):
    """Resolve the backend of one block of rows and check it: ``(backend, rows, w, y, out)``.

    ``w`` is the kernels' float64 weight vector: ``(J,)`` on the backend, or ``(1,)`` for one weight
    for every row, which stays a host array when it came from a number or None (a GPU kernel then
    needs no synchronisation to read it); ``y`` and ``out`` are None when not given. Nothing is written.
    """
    check_finite = V.flag(f, "check_finite", check_finite)
    named = [(rows_name, rows)]
    if y is not None:
        named.append(("y", y))
    weights_is_array = weights is not None and hasattr(weights, "shape") and getattr(weights, "ndim", 0) > 0
    if weights_is_array:
        named.append(("weights", weights))
    if out is not None:
        named.append(("out", out))
    backend, arrays = _dispatch.resolve(f, named, backend)
    it = iter(arrays)
    rows = next(it)
    y = next(it) if y is not None else None
    weights = next(it) if weights_is_array else weights
    out = next(it) if out is not None else None
    J, _ = V.ls_rows(f, rows_name, rows, check_finite=check_finite)
    w = V.ls_weights(f, weights, J, check_finite=check_finite)
    if y is not None:
        V.ls_rhs(f, y, J, check_finite=check_finite)
    if w.size != 1 or type(w) is not np.ndarray:
        w = _on_backend(_xp(backend), w)
    return backend, rows, w, y, out


def _on_backend(xp, a):
    """A host (NumPy) array moved to the backend's array module when that is CuPy."""
    return a if xp is np or type(a) is not np.ndarray else xp.asarray(a)


class GramAccumulator:
    r"""Assemble one LS system from several blocks of rows, each with its own weights.

    ``A = sum_k Phi_k^T W_k Phi_k`` and ``b = sum_k Phi_k^T W_k y_k``, accumulated in place (float64
    by default, also for float32 rows) in fixed tiles. A block without ``y`` adds nothing to
    ``b`` (as if ``y = 0``: e.g. a homogeneous boundary condition). The same blocks added in the
    same order give the same bits; :meth:`finish` gives the Gram of the stacked rows with
    stacked weights, to rounding. The accumulators follow the backend of the first block added.

    Use:
      ``acc = GramAccumulator(N)``; ``acc.add(rows_pde, w_pde, f)``; ``acc.add(rows_bc, 10.0, g)``;
      ``system = acc.finish()``. ``finish`` hands the buffers over (no copy) and resets the
      accumulator, so the next ``add`` starts a new system; :meth:`start` resets explicitly
      (dropping what was added).

    A block of ``J`` rows with ``weights=None`` gets ``1/J`` per row (the mean over that block,
    as in a PINN loss ``mean(residual^2) + mean(boundary^2)``). To split one block into tiles
    (a fused assembly), pass the block's weights (or ``1/J_block`` as a number) with each tile.

    Args:
      n_basis: N, the number of basis functions (columns).
      dtype: accumulation dtype, float64 (default) or float32.
      tile: rows per tile (default :func:`default_tile` of ``n_basis`` and the backend of the first block).
      check_finite: check each block for NaN/inf before adding it.
      backend: "cpu", "gpu", "reference" or None (from each block's arrays).

    Example:
      >>> import numpy as np
      >>> from fastopt import ls
      >>> rng = np.random.default_rng(0)
      >>> P1, P2 = rng.standard_normal((50, 4)), rng.standard_normal((7, 4))
      >>> y1, y2, w1 = rng.standard_normal(50), rng.standard_normal(7), rng.uniform(size=50)
      >>> acc = ls.GramAccumulator(4)
      >>> s = acc.add(P1, w1, y1).add(P2, 10.0, y2).finish()
      >>> whole = ls.gram(np.vstack([P1, P2]), np.concatenate([w1, np.full(7, 10.0)]), np.concatenate([y1, y2]))
      >>> s.n_rows, np.allclose(s.A, whole.A), np.allclose(s.b, whole.b)
      (57, True, True)
    """

    def __init__(self, n_basis: int, *, dtype=np.float64, tile=None, check_finite=True, backend=None):
        f = "GramAccumulator"
        self.n_basis = V.integer(f, "n_basis", n_basis, 1)
        self.dtype = V.ls_dtype(f, dtype)
        self.tile = None if tile is None else V.tile_rows(f, tile)   # None: default_tile per backend
        self.check_finite = V.flag(f, "check_finite", check_finite)
        if backend is not None:
            _dispatch.check_backend_name(backend, f"{f}: backend")
        self.backend = backend
        self.start()

    def start(self) -> "GramAccumulator":
        """Reset: the next :meth:`add` starts a new system (buffers are allocated then)."""
        self._A = self._b = self._backend = None
        self._has_rhs = False
        self.n_rows = 0
        self._ywy = 0.0
        return self

    def add(self, rows, weights=None, y=None) -> "GramAccumulator":
        """Add ``rows^T W rows`` to ``A`` and ``rows^T W y`` to ``b``; returns ``self``.

        Args:
          rows: ``(J, N)`` float32/float64 (any strides).
          weights: None (``1/J``), a number ``>= 0`` for every row, or ``(J,)`` ``>= 0``.
          y: ``(J,)`` or None.
        Bad input raises before anything is added.
        """
        f = "GramAccumulator.add"
        backend = self._backend if self._backend is not None else self.backend
        backend, rows, w, y, _ = _block(f, "rows", rows, weights, y, None, backend, self.check_finite)
        J, N = rows.shape
        if N != self.n_basis:
            raise ValueError(f"{f}: rows must have {self.n_basis} columns (n_basis), got shape {tuple(rows.shape)}")
        xp = _xp(backend)
        if self._A is None:
            self._A = xp.zeros((N, N), dtype=self.dtype)
            self._b = xp.zeros(N, dtype=self.dtype)
            self._backend = backend
        b = self._b if y is not None else self._b[:0]
        y_k = y if y is not None else xp.empty(0, dtype=rows.dtype)
        tile = self.tile if self.tile is not None else default_tile(N, backend)
        self._ywy += float(_dispatch.get_kernel("gram", "gram_accumulate", backend)(rows, w, y_k, self._A, b, tile))
        self._has_rhs = self._has_rhs or y is not None
        self.n_rows += J
        return self

    def finish(self) -> GramSystem:
        """The assembled system (``A`` symmetrised once here); the accumulator starts over.

        With no block added: ``A = 0`` (``N x N``), ``b`` None, ``n_rows = 0``.
        """
        if self._A is None:
            backend = self.backend if self.backend not in (None, "reference") else "cpu"
            A = _xp(backend).zeros((self.n_basis, self.n_basis), dtype=self.dtype)
            system = GramSystem(A, None, 0, 0.0)
        else:
            _dispatch.get_kernel("gram", "symmetrize", self._backend)(self._A)
            system = GramSystem(self._A, self._b if self._has_rhs else None, self.n_rows, self._ywy)
        self.start()
        return system


# =========================================================================== 3. robust solve
class IllConditionedWarning(RuntimeWarning):
    """The LS system's condition number exceeds what its dtype resolves (``cond > 1/eps``).

    The solution returned is still finite (truncated to the numerically resolved subspace
    when the eigendecomposition ran) but small changes of ``A`` or ``b`` change it a lot: more
    points, a better quadrature, ``reg > 0`` or fewer basis functions help.
    """


class LSSolution(NamedTuple):
    """The outcome of :func:`solve`.

    Attributes:
      c: ``(N,)`` float64 solution (NumPy or CuPy, as ``A``); never NaN.
      method: "cholesky" or "eigh": the factorisation that produced ``c``.
      condition_number: of ``A + reg I``: LAPACK's 1-norm estimate (``dpocon``, within a small
        factor of the 2-norm value) after Cholesky; ``lambda_max / lambda_min`` (2-norm, ``inf``
        when ``lambda_min <= 0``) after the eigendecomposition.
      rank: N after Cholesky; the number of eigenvalues kept after the eigendecomposition.
      reg: the ridge ``reg`` that was added to the diagonal.
      rcond: the relative eigenvalue cut-off of the truncation (used by "eigh").
      warnings: messages about this solve (fallbacks, ill-conditioning), also issued as warnings
        where they concern the result's accuracy.
    """

    c: object
    method: str
    condition_number: float
    rank: int
    reg: float
    rcond: float
    warnings: tuple


def solve(A, b, reg=0.0, method="auto", rcond=None, *, backend=None) -> LSSolution:
    r"""Solve the LS system ``(A + reg I) c = b`` robustly, in float64.

    ``method="auto"`` (default): Cholesky ``A + reg I = R^T R`` (LAPACK ``potrf``) and LAPACK's
    estimate of its condition number from the factor (``pocon``, O(N^2)). If the factorisation
    fails (not numerically positive definite) or ``cond > 1/eps``, where ``eps`` is the machine
    epsilon of ``A``'s dtype (the data cannot resolve more: a float32 ``A`` carries ~7 digits),
    the symmetric eigendecomposition ``A + reg I = Q diag(lambda) Q^T`` runs instead and the
    eigenvalues ``lambda_i <= rcond * max|lambda|`` are dropped::

        c = sum_{lambda_i > rcond max|lambda|} q_i (q_i^T b) / lambda_i

    the minimum-norm least-squares solution of the truncated system (``pinv(A) b`` with the same
    cut). The default ``rcond = N eps`` is NumPy's ``pinv``/``lstsq`` cut: eigenvalues below it are
    at the level of the rounding errors of ``A`` itself (Weyl: a perturbation ``E`` moves each
    eigenvalue by at most ``||E||_2 ~ eps ||A||``), so they carry no information. A singular or
    zero ``A`` gives a finite ``c`` (zero when nothing is kept). ``method="cholesky"`` forces
    Cholesky (an error if it fails), ``"eigh"`` the eigendecomposition.

    An :class:`IllConditionedWarning` is issued exactly when the reported
    ``condition_number > 1/eps``. Least-squares-by-QR (``gels``/``lstsq``) is not used: ``A`` is
    already the normal-equations matrix, whose conditioning is what this function reports.

    Args:
      A: ``(N, N)`` symmetric positive semi-definite (a Gram matrix), float32/float64, finite.
        Symmetric to ``sqrt(eps)`` relative; its symmetric part ``(A + A^T)/2`` is used.
      b: ``(N,)`` float32/float64, finite.
      reg: ridge ``>= 0`` added to the diagonal (absolute, in the units of ``A``).
      method: "auto", "cholesky" or "eigh".
      rcond: relative eigenvalue cut-off in [0, 1) (default ``N eps``).
      backend: "cpu", "gpu", "reference" (NumPy/SciPy) or None (from the arrays). On the GPU:
        ``cupy.linalg.cholesky`` / ``cupy.linalg.eigh`` (cuSOLVER); the condition estimate copies
        the ``N x N`` factor to the host for LAPACK's ``dpocon``.
    Returns:
      :class:`LSSolution` ``(c, method, condition_number, rank, reg, rcond, warnings)``.
    Raises:
      numpy.linalg.LinAlgError: ``method="cholesky"`` and ``A + reg I`` is not numerically
        positive definite.

    Example:
      >>> import warnings
      >>> import numpy as np
      >>> from fastopt import ls
      >>> Phi = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])     # two equal columns: rank 1
      >>> s = ls.gram(Phi, 1.0, np.array([2.0, 4.0, 6.0]))
      >>> with warnings.catch_warnings(record=True) as caught:
      ...     warnings.simplefilter("always")
      ...     sol = ls.solve(s.A, s.b)
      >>> sol.method, sol.rank, np.round(sol.c, 12)               # the minimum-norm solution
      ('eigh', 1, array([1., 1.]))
      >>> caught[0].category.__name__
      'IllConditionedWarning'
      >>> ls.solve(s.A, s.b, reg=1e-3).method                      # a ridge makes it definite
      'cholesky'
    """
    f = "solve"
    backend, (A, b) = _dispatch.resolve(f, [("A", A), ("b", b)], backend)
    N = V.ls_system(f, A, b)
    reg = V.nonnegative(f, "reg", reg)
    method = V.ls_method(f, method)
    rcond = V.ls_rcond(f, rcond)
    eps = float(np.finfo(A.dtype).eps)
    if rcond is None:
        rcond = N * eps
    limit = 1.0 / eps
    xp = _xp(backend)
    A64 = xp.multiply(A, 0.5, dtype=_F64)  # a new array: the caller's A is never changed
    A64 = A64 + A64.T  # (A + A^T)/2, exactly symmetric (halved first: no overflow; not in place: CuPy races)
    if reg:
        A64[xp.arange(N), xp.arange(N)] += reg
    b64 = b.astype(_F64, copy=False)
    notes = []
    if method != "eigh":
        factor = _cholesky(xp, A64)
        if factor is not None:
            cond = _cholesky_condition(xp, A64, factor)
            if method == "cholesky" or cond <= limit:
                c = _cholesky_solve(xp, factor, b64)
                return _finish(c, "cholesky", cond, N, reg, rcond, notes, limit, A.dtype)
            notes.append(f"Cholesky succeeded but its condition estimate {cond:.3g} exceeds 1/eps = {limit:.3g} "
                         f"for {A.dtype}: solved by eigendecomposition with truncation instead")
        elif method == "cholesky":
            raise np.linalg.LinAlgError(f"{f}: A + reg I is not numerically positive definite (Cholesky failed, "
                                        f"reg = {reg}); use method='auto' or 'eigh', or reg > 0")
        else:
            notes.append("A + reg I is not numerically positive definite (Cholesky failed): solved by "
                         "eigendecomposition with truncation")
    lam, Q = (xp.linalg.eigh(A64) if xp is not np else _eigh_host(A64))
    lam_host = np.asarray(lam.get() if xp is not np else lam)
    top = float(np.max(np.abs(lam_host)))
    keep = lam_host > rcond * top  # includes lambda > 0; all dropped when A = 0
    rank = int(keep.sum())
    lo, hi = float(lam_host[0]), float(lam_host[-1])
    cond = hi / lo if lo > 0.0 else math.inf
    if lo < -math.sqrt(eps) * top:
        notes.append(f"A + reg I has a negative eigenvalue {lo:.3g} (largest {hi:.3g}) beyond rounding: "
                     f"it is not a Gram matrix; the negative part was dropped")
    inv = np.zeros_like(lam_host)
    inv[keep] = 1.0 / lam_host[keep]
    inv = _on_backend(xp, inv)
    c = Q @ (inv * (Q.T @ b64))
    return _finish(c, "eigh", cond, rank, reg, rcond, notes, limit, A.dtype)


def _finish(c, method, cond, rank, reg, rcond, notes, limit, dtype) -> LSSolution:
    if cond > limit:
        msg = (f"solve: condition number {cond:.3g} of A + reg I exceeds 1/eps = {limit:.3g} for {dtype} "
               f"(method {method}, rank {rank}): the solution is finite but not accurate to the data's precision")
        notes.append(msg)
        warnings.warn(msg, IllConditionedWarning, stacklevel=3)
    return LSSolution(c, method, float(cond), int(rank), float(reg), float(rcond), tuple(notes))


def _cholesky(xp, A64):
    """The upper Cholesky factor ``R`` (``A = R^T R``) or None if ``A`` is not numerically positive definite.

    CPU: LAPACK ``dpotrf`` (no exception path). GPU: ``cupy.linalg.cholesky`` gives the lower factor
    ``L = R^T``. cuSOLVER's ``potrf`` stops at the first non-positive pivot and reports it only in its
    ``info``, leaving a *finite* partial factor (CuPy's default ``linalg="ignore"`` returns it as if it
    were the factor), so the call runs under ``cupyx.errstate(linalg="raise")``: CuPy then reads
    ``info`` (one synchronisation) and raises ``LinAlgError``. A NaN factor (from a NaN in ``A``,
    which validation excludes) is refused too.
    """
    if xp is np:
        from scipy.linalg import lapack

        R, info = lapack.dpotrf(A64, lower=0, clean=1)
        return R if info == 0 else None
    import cupyx

    try:
        with cupyx.errstate(linalg="raise"):
            L = xp.linalg.cholesky(A64)
    except np.linalg.LinAlgError:
        return None
    if not bool(xp.isfinite(L).all()):
        return None
    return L.T


def _cholesky_condition(xp, A64, R) -> float:
    """LAPACK's ``dpocon`` estimate of the 1-norm condition number of ``A = R^T R`` (O(N^2))."""
    from scipy.linalg import lapack

    anorm = float(xp.abs(A64).sum(axis=0).max())
    R_host = R if xp is np else R.get()
    rc, info = lapack.dpocon(R_host, anorm, uplo="U")
    return math.inf if not rc > 0.0 else max(1.0, 1.0 / float(rc))  # >= 1 (rounding may give 1 - ulp)


def _cholesky_solve(xp, R, b64):
    if xp is np:
        from scipy.linalg import lapack

        c, info = lapack.dpotrs(R, b64, lower=0)
        return c
    from cupyx.scipy.linalg import solve_triangular

    z = solve_triangular(R, b64, trans="T", lower=False)
    return solve_triangular(R, z, lower=False)


def _eigh_host(A64):
    from scipy.linalg import eigh

    return eigh(A64, lower=False, check_finite=False)


# =========================================================================== 4. from the network; the LS hybrid
# The fused assembly from a network's basis channels and the trainer live in fastopt/_ls_hybrid.py.
from ._ls_hybrid import LSHybrid, assemble, coefficient_names, relative_errors  # noqa: E402

__all__ += ["assemble", "LSHybrid", "coefficient_names", "relative_errors"]
