r"""Readable float64 NumPy reference of the "gram" family (the least-squares system): the test oracle.

The dispatcher maps the families "gram" and "ls" of the "reference" backend to this module.
Every kernel here (``operator_rows``, ``gram``, ``gram_accumulate``, ``symmetrize``) has the same
name and signature as its fast twin in ``kernels/cpu/gram.py``. Each computes in float64
whatever the dtype of its arguments and writes into arrays the caller preallocated (rounded to
their dtype). Inputs are trusted: :mod:`fastopt.ls` validates them. An unused optional array is
passed with size 0, as in the other families.

The least-squares system
========================
The LS hybrid of Cyr et al. writes ``u(x) = sum_n c_n u_n(x; w)`` and, at every step, minimises a
weighted sum of squared residuals of a *linear* operator ``L`` applied to ``u`` over ``J`` points::

    loss(c) = sum_j w_j (L u(x_j) - y_j)^2 = c^T A c - 2 b^T c + y^T W y

    Phi[j, n] = (L u_n)(x_j)               the rows:  (J, N)
    A = Phi^T W Phi,   b = Phi^T W y,      W = diag(w),  w_j >= 0

whose minimisers solve ``A c = b``. Several blocks of rows (PDE residual rows, boundary rows,
each with their own weights) stack into one system: ``A = sum_blocks Phi_k^T W_k Phi_k`` and
likewise ``b``, which is what :func:`gram_accumulate` adds block by block.

Operator rows
=============
The basis functions arrive as derivative channels ``(C, J, N)`` in the layout of
:mod:`fastopt.kernels.reference_nn` (channel 0 the value ``u_n``, ``1 + k`` the derivative
``d u_n / d x_k``, ``1 + d`` the Laplacian). A linear differential operator with per-point
coefficients ``coef`` of shape ``(C, J)``::

    (L u_n)(x_j) = sum_ch coef[ch, j] * channels[ch, j, n]

covers the value (``coef = [1, 0, ...]``), a derivative, the Laplacian and PINN residual
operators such as ``-lap u + k^2 u`` (``coef[0] = k^2``, ``coef[d + 1] = -1``) or an advection
term ``a(x) . grad u`` (the coefficients may vary from point to point).

Weights
=======
``w`` holds one weight per row, or a single weight for every row (size 1: quadrature weights of
an equispaced rule, or ``1/J`` for a mean-squared loss). ``y`` of size 0 means "no right-hand
side": ``b`` is then size 0 too and left alone. Every kernel returns ``y^T W y`` (0.0 without
``y``), the constant term of the loss, so that ``loss(c)`` costs nothing more.

Example:
  >>> import numpy as np
  >>> from fastopt.kernels import reference_ls as ref
  >>> Phi = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]])   # u_0 = 1, u_1 = x at x = 0, 1, 2
  >>> w, y = np.array([1.0]), np.array([1.0, 3.0, 5.0])        # y = 1 + 2 x
  >>> A, b = np.empty((2, 2)), np.empty(2)
  >>> ref.gram(Phi, w, y, A, b, 0)
  35.0
  >>> A, b, np.linalg.solve(A, b)
  (array([[3., 3.],
         [3., 5.]]), array([ 9., 13.]), array([1., 2.]))

References:
  E. C. Cyr, M. A. Gulian, R. G. Patel, M. Perego, N. A. Trask, Robust training and
  initialization of deep neural networks: an adaptive basis viewpoint, MSML 2020, section 3.
"""
from __future__ import annotations

import numpy as np

F64 = np.float64

__all__ = ["operator_rows", "gram", "gram_accumulate", "symmetrize"]


def _weights(w, J):
    """The ``J`` weights as a float64 vector (a size-1 ``w`` is one weight for every row)."""
    w = np.asarray(w, dtype=F64)
    return np.full(J, w[0]) if w.size == 1 else w


def operator_rows(channels, coef, out):
    """``out[j, n] = sum_ch coef[ch, j] * channels[ch, j, n]``: the rows of ``L u_n`` at the points.

    Args:
      channels: ``(C, J, N)`` derivative channels of the basis (layout of ``reference_nn``).
      coef: ``(C, J)`` per-point coefficients of the operator.
      out: ``(J, N)``, overwritten.
    """
    out[...] = np.einsum("cj,cjn->jn", coef.astype(F64), channels.astype(F64))


def gram_accumulate(rows, w, y, A, b, tile):
    """``A += rows^T W rows`` and ``b += rows^T W y`` (``b`` only when ``y.size``); returns ``y^T W y``.

    Built explicitly, as the textbook writes it (``tile`` is ignored: the fast kernels' tile
    size, which changes nothing here). The whole of ``A`` is updated (the fast kernels update
    one triangle; :func:`symmetrize` makes both agree).

    Args:
      rows: ``(J, N)`` float32/float64.
      w: ``(J,)`` weights >= 0, or ``(1,)``: one weight for every row.
      y: ``(J,)`` right-hand side, or size 0 for none.
      A: ``(N, N)``, updated in place.
      b: ``(N,)`` updated in place, or size 0 when ``y`` is.
      tile: rows per tile in the fast kernels (unused).
    Returns:
      ``sum_j w_j y_j^2`` as a Python float (0.0 without ``y``).
    """
    J = rows.shape[0]
    P = rows.astype(F64)
    W = _weights(w, J)  # the diagonal of W, applied as a row scaling (W itself is J x J)
    A[...] = A.astype(F64) + P.T @ (W[:, None] * P)
    if y.size == 0:
        return 0.0
    y64 = y.astype(F64)
    b[...] = b.astype(F64) + P.T @ (W * y64)
    return float(y64 @ (W * y64))


def gram(Phi, w, y, A, b, tile):
    """``A = Phi^T W Phi`` and ``b = Phi^T W y`` (overwritten, ``A`` symmetric); returns ``y^T W y``.

    Arguments as in :func:`gram_accumulate`.
    """
    A[...] = 0.0
    if b.size:
        b[...] = 0.0
    ywy = gram_accumulate(Phi, w, y, A, b, tile)
    symmetrize(A)
    return ywy


def symmetrize(A):
    """Copy the upper triangle of ``A`` onto the lower one, in place (exactly symmetric afterwards)."""
    lower = np.tril_indices(A.shape[0], -1)
    A[lower] = A.T[lower]
