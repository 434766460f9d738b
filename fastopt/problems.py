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

**Backends.** A problem keeps its arrays (coefficients, targets, weights, sources) on the backend of
the arrays it is built from: NumPy, or CuPy for a network with ``backend="gpu"`` (build it from CuPy
arrays; a mix of NumPy and CuPy arrays is a ``TypeError``, as everywhere in fastopt: nothing is
copied between devices behind your back). Calling it costs one module lookup more than a
NumPy-only version; on the GPU the loss value is the one number brought to the host (checks of
the inputs at construction synchronise too: finiteness, ``w >= 0`` and which channels are used).

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

from numbers import Real

import numpy as np

from . import _dispatch
from . import _validate as V

__all__ = ["LeastSquares", "Energy"]


def _is_array(v) -> bool:
    """An array argument (NumPy, CuPy, a DLPack tensor); numbers, lists and None are not."""
    if isinstance(v, np.ndarray):
        return True
    if v is None or isinstance(v, (Real, np.generic, list, tuple)):
        return False
    return hasattr(v, "__cuda_array_interface__") or hasattr(v, "__dlpack_device__") or \
        hasattr(v, "__array_interface__")


def _module_of(func, named):
    """``(xp, values)``: the array module of the array arguments and the values, arrays in native form.

    NumPy unless the arrays are CuPy arrays (DLPack tensors enter as views, as in every public
    call); arrays of two backends are a ``TypeError`` naming them. Numbers, lists and None pass
    through (they become arrays of ``xp``).
    """
    values = [v for _, v in named]
    for v in values:
        if type(v) is not np.ndarray and v is not None and _is_array(v):
            break
    else:                    # the common case, NumPy arrays and numbers: a type test each
        return np, values
    arrays = [(i, name, v) for i, (name, v) in enumerate(named) if _is_array(v)]
    first_kind, _ = _dispatch.as_native(f"{func}: {arrays[0][1]}", arrays[0][2])
    backend, natives = _dispatch.resolve(func, [(name, v) for _, name, v in arrays], first_kind)
    for (i, _, _), a in zip(arrays, natives):
        values[i] = a
    return (np if backend == "cpu" else _dispatch.array_module(natives[0])), values


def _contiguous(xp, v, dtype):
    if xp is np:
        return np.ascontiguousarray(v, dtype=dtype)
    return xp.ascontiguousarray(xp.asarray(v, dtype=dtype))


def _weights(func, xp, w, J, dtype):
    if w is None:
        return xp.full(J, 1.0 / J if J else 0.0, dtype)
    w = _contiguous(xp, w, dtype)
    if w.shape != (J,):
        raise ValueError(f"{func}: weights must have shape ({J},), got {w.shape}")
    V.all_finite(func, "weights", w)
    if bool(xp.any(w < 0)):
        raise ValueError(f"{func}: weights must be >= 0")
    return w


def _values(func, xp, name, v, J, dtype):
    v = xp.ascontiguousarray(xp.broadcast_to(xp.asarray(v, dtype=dtype), (J,)))
    V.all_finite(func, name, v)
    return v


class _Problem:
    """What both losses share: the array module of their arrays."""

    _xp = np

    @property
    def backend(self) -> str:
        """"cpu" (NumPy arrays) or "gpu" (CuPy arrays): where the problem's arrays live."""
        return "cpu" if self._xp is np else "gpu"


class LeastSquares(_Problem):
    r"""``L = sum_j w_j (sum_ch a[ch, j] U[ch, j] - y_j)^2`` (see the module docstring).

    Args:
      coef: (C, J) coefficients ``a`` of the linear operator on the channels (C fixes the order the
        network must provide: 1, 1 + d or 2 + d).
      target: (J,) ``y`` (or a scalar).
      weights: (J,) ``w >= 0``, default 1/J (a mean).
      d: input dimension (for the channel count).
    The arrays are kept as float64 on their backend (NumPy or CuPy; module docstring).
    """

    def __init__(self, coef, target, weights=None, *, d=1):
        f = "LeastSquares"
        xp, (coef, target, weights) = _module_of(f, [("coef", coef), ("target", target), ("weights", weights)])
        self._xp = xp
        coef = _contiguous(xp, coef, np.float64)
        if coef.ndim != 2 or coef.shape[0] not in (1, 1 + d, 2 + d):
            raise ValueError(f"{f}: coef must have shape (C, J) with C in (1, {1 + d}, {2 + d}), got {coef.shape}")
        V.all_finite(f, "coef", coef)
        self.d = int(d)
        self.coef = coef
        J = coef.shape[1]
        self.target = _values(f, xp, "target", target, J, np.float64)
        self.weights = _weights(f, xp, weights, J, np.float64)
        self.order = {1: 0, 1 + d: 1, 2 + d: 2}[coef.shape[0]]
        used = (coef != 0).any(axis=1).tolist()   # one transfer on the GPU
        self._active = [ch for ch in range(coef.shape[0]) if used[ch]]

    @classmethod
    def regression(cls, y, weights=None, *, d=1):
        """Mean squared error on the values: ``a = (1)``: ``L = sum_j w_j (u_j - y_j)^2``."""
        xp = _dispatch.array_module(y)
        y = xp.asarray(y, dtype=np.float64)
        return cls(xp.ones((1, y.size)), y, weights, d=d)

    @classmethod
    def pinn(cls, x, f, weights=None, *, k=0.0, sign=1.0):
        """The residual of ``sign * lap u + k u = f`` at the points ``x`` (J, d) (channels up to the Laplacian)."""
        xp = _dispatch.array_module(x)
        x = xp.asarray(x)
        J, d = x.shape
        coef = xp.zeros((2 + d, J))
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
        xp = self._xp
        r = self.residual(U)
        wr = self.weights * r
        adj[...] = 0.0
        for ch in self._active:
            xp.multiply(self.coef[ch], 2.0 * wr, out=adj[ch], casting="unsafe")
        return float(xp.dot(wr, r))

    def rows(self, basis):
        """The operator applied to each basis function: ``Phi[j, n] = sum_ch a[ch, j] basis[ch, j, n]`` (J, N)."""
        Phi = self._xp.zeros(basis.shape[1:], dtype=np.float64)
        for ch in self._active:
            Phi += self.coef[ch][:, None] * basis[ch]
        return Phi


class Energy(_Problem):
    r"""``L = sum_j w_j (|grad u_j|^2 / 2 + k u_j^2 / 2 + f_j u_j)``: the Deep Ritz energy (module docstring).

    Args:
      x: (J, d) quadrature points.  f: (J,) source values (or a scalar).
      weights: (J,) quadrature weights (default: 1/J, a Monte Carlo mean).
      k: reaction coefficient (default 0).
    The arrays are kept as float64 on their backend (NumPy or CuPy; module docstring).
    """

    order = 1

    def __init__(self, x, f, weights=None, *, k=0.0):
        fn = "Energy"
        xp, (x, f, weights) = _module_of(fn, [("x", x), ("f", f), ("weights", weights)])
        self._xp = xp
        x = xp.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{fn}: x must have shape (J, d), got {x.shape}")
        J, self.d = x.shape
        self.f = _values(fn, xp, "f", f, J, np.float64)
        self.weights = _weights(fn, xp, weights, J, np.float64)
        self.k = V.nonnegative(fn, "k", k)

    @property
    def n_points(self) -> int:
        return self.f.size

    def __call__(self, U, adj):
        """The energy, and ``adj <- dL/dU`` (channels value and gradient)."""
        xp = self._xp
        w, d = self.weights, self.d
        grad2 = xp.sum(U[1:1 + d] ** 2, axis=0)
        value = float(xp.dot(w, 0.5 * grad2 + 0.5 * self.k * U[0] ** 2 + self.f * U[0]))
        adj[...] = 0.0
        adj[0] = w * (self.k * U[0] + self.f)
        adj[1:1 + d] = w * U[1:1 + d]
        return value
