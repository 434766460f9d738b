r"""Losses on a network's derivative channels: regression, PINN residuals, Deep Ritz energies.

Every loss here is a quadratic function of the output channels ``U`` (shape (C, J): value,
gradient, Laplacian at J points; :mod:`fastopt.nn`), so it serves both trainers:

- a gradient method calls it as ``loss(U, adj) -> L``: it returns the value and writes
  ``dL/dU`` into ``adj`` (what :meth:`fastopt.nn.MLP.loss_and_grad` expects);
- the LS hybrid (:mod:`fastopt.ls`) reads its quadratic form in the coefficients ``c`` of
  ``u = g + sum_n c_n v_n`` (``v_n`` the basis after the ansatz) from :meth:`rows` / :meth:`energy_rows`.

**Least squares** (:class:`LeastSquares`): a linear operator on the channels and a target,
weights ``w`` (quadrature weights, or 1/J for a mean)::

    r_j = sum_ch a[ch, j] U[ch, j] - y_j,          L = sum_j w_j r_j^2,     dL/dU[ch, j] = 2 w_j a[ch, j] r_j

Regression is ``a = value channel`` (:meth:`LeastSquares.regression`); a PINN residual for
``lap u + k u = f`` is ``a = (k, 0, .., 0, 1)`` (:meth:`LeastSquares.pinn`).

**Energy** (:class:`Energy`, the Deep Ritz method: with zero Dirichlet data the minimiser of the
energy below solves ``lap u - k u = f``, its Euler-Lagrange equation)::

    L = sum_j w_j ( |grad u_j|^2 / 2 + k u_j^2 / 2 + f_j u_j ),      dL/dU_0 = w (k u + f),   dL/dU_{1+m} = w d_m u

For the lecture's Deep Ritz example (``u'' = f`` on (0, 1), u(0) = u(1) = 0, k = 0) its minimiser over
the network's span is the Galerkin solution.

Example: a PINN residual for u'' = -pi^2 sin(pi x), evaluated on the exact solution.
  >>> import numpy as np
  >>> from fastopt.problems import LeastSquares
  >>> x = np.linspace(0, 1, 5)[:, None]
  >>> loss = LeastSquares.pinn(x, f=-np.pi ** 2 * np.sin(np.pi * x[:, 0]))
  >>> U = np.stack([np.sin(np.pi * x[:, 0]), np.pi * np.cos(np.pi * x[:, 0]), -np.pi ** 2 * np.sin(np.pi * x[:, 0])])
  >>> adj = np.empty_like(U)
  >>> round(loss(U, adj), 12), float(np.abs(adj).max())
  (0.0, 0.0)
"""
from __future__ import annotations

import numpy as np

from . import _validate as V

__all__ = ["LeastSquares", "Energy"]


def _weights(func, w, J, dtype):
    if w is None:
        return np.full(J, 1.0 / J if J else 0.0, dtype)
    w = np.ascontiguousarray(w, dtype=dtype)
    if w.shape != (J,):
        raise ValueError(f"{func}: weights must have shape ({J},), got {w.shape}")
    V.all_finite(func, "weights", w)
    if np.any(w < 0):
        raise ValueError(f"{func}: weights must be >= 0")
    return w


def _values(func, name, v, J, dtype):
    v = np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=dtype), (J,)))
    V.all_finite(func, name, v)
    return v


class LeastSquares:
    r"""``L = sum_j w_j (sum_ch a[ch, j] U[ch, j] - y_j)^2`` (see the module docstring).

    Args:
      coef: (C, J) coefficients ``a`` of the linear operator on the channels (C fixes the order the
        network must provide: 1, 1 + d or 2 + d).
      target: (J,) ``y`` (or a scalar).
      weights: (J,) ``w >= 0``, default 1/J (a mean).
      d: input dimension (for the channel count).
    """

    def __init__(self, coef, target, weights=None, *, d=1):
        f = "LeastSquares"
        coef = np.ascontiguousarray(coef, dtype=np.float64)
        if coef.ndim != 2 or coef.shape[0] not in (1, 1 + d, 2 + d):
            raise ValueError(f"{f}: coef must have shape (C, J) with C in (1, {1 + d}, {2 + d}), got {coef.shape}")
        V.all_finite(f, "coef", coef)
        self.d = int(d)
        self.coef = coef
        J = coef.shape[1]
        self.target = _values(f, "target", target, J, np.float64)
        self.weights = _weights(f, weights, J, np.float64)
        self.order = {1: 0, 1 + d: 1, 2 + d: 2}[coef.shape[0]]
        self._active = [ch for ch in range(coef.shape[0]) if np.any(coef[ch] != 0)]

    @classmethod
    def regression(cls, y, weights=None, *, d=1):
        """Mean squared error on the values: ``a = (1)``: ``L = sum_j w_j (u_j - y_j)^2``."""
        y = np.asarray(y, dtype=np.float64)
        return cls(np.ones((1, y.size)), y, weights, d=d)

    @classmethod
    def pinn(cls, x, f, weights=None, *, k=0.0, sign=1.0):
        """The residual of ``sign * lap u + k u = f`` at the points ``x`` (J, d) (channels up to the Laplacian)."""
        x = np.asarray(x)
        J, d = x.shape
        coef = np.zeros((2 + d, J))
        coef[0] = k
        coef[d + 1] = sign
        return cls(coef, f, weights, d=d)

    @property
    def n_points(self) -> int:
        return self.coef.shape[1]

    def residual(self, U):
        """``r_j = sum_ch a[ch, j] U[ch, j] - y_j`` (a new (J,) array)."""
        r = -self.target.astype(U.dtype)
        for ch in self._active:
            r += self.coef[ch] * U[ch]
        return r

    def __call__(self, U, adj):
        """The loss, and ``adj <- dL/dU`` (every entry written)."""
        r = self.residual(U)
        wr = self.weights * r
        adj[...] = 0.0
        for ch in self._active:
            np.multiply(self.coef[ch], 2.0 * wr, out=adj[ch], casting="unsafe")
        return float(np.dot(wr, r))

    def rows(self, basis):
        """The operator applied to each basis function: ``Phi[j, n] = sum_ch a[ch, j] basis[ch, j, n]`` (J, N)."""
        Phi = np.zeros(basis.shape[1:], dtype=np.float64)
        for ch in self._active:
            Phi += self.coef[ch][:, None] * basis[ch]
        return Phi


class Energy:
    r"""``L = sum_j w_j (|grad u_j|^2 / 2 + k u_j^2 / 2 + f_j u_j)``: the Deep Ritz energy (module docstring).

    Args:
      x: (J, d) quadrature points.  f: (J,) source values (or a scalar).
      weights: (J,) quadrature weights (default: 1/J, a Monte Carlo mean).
      k: reaction coefficient (default 0).
    """

    order = 1

    def __init__(self, x, f, weights=None, *, k=0.0):
        fn = "Energy"
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{fn}: x must have shape (J, d), got {x.shape}")
        J, self.d = x.shape
        self.f = _values(fn, "f", f, J, np.float64)
        self.weights = _weights(fn, weights, J, np.float64)
        self.k = V.nonnegative(fn, "k", k)

    @property
    def n_points(self) -> int:
        return self.f.size

    def __call__(self, U, adj):
        """The energy, and ``adj <- dL/dU`` (channels value and gradient)."""
        w, d = self.weights, self.d
        grad2 = np.sum(U[1:1 + d] ** 2, axis=0)
        value = float(np.dot(w, 0.5 * grad2 + 0.5 * self.k * U[0] ** 2 + self.f * U[0]))
        adj[...] = 0.0
        adj[0] = w * (self.k * U[0] + self.f)
        adj[1:1 + d] = w * U[1:1 + d]
        return value
