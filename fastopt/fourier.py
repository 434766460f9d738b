r"""Fourier-feature layers: gamma(x) = [x, cos(s x B), sin(s x B)] with derivative channels.

A first layer of Fourier features lets a small network represent high frequencies that plain
training finds last (spectral bias; the F-principle)::

    gamma(x) = [x (if keep_x), cos(s x B), sin(s x B)],   x: (J, d),  B: (d, K),  s = 2 pi or 1

- the lecture's 1D layer (x, cos(k_1 x), sin(k_1 x), ..., cos(k_K x), sin(k_K x)) with chosen k_i is
  :meth:`FourierFeatures.from_wavenumbers` (``s = 1``, ``B = [k_1 .. k_K]``, x kept);
- Tancik et al.'s Gaussian features, ``B ~ N(0, sigma^2)`` without x, :meth:`FourierFeatures.gaussian`;
- Wang et al.'s multiscale features (several sigmas side by side) :meth:`FourierFeatures.multiscale`.

The derivative channels that PDE losses need are closed forms (``psi_k = s x . b_k``)::

    d/dx_m cos psi_k = -s B_mk sin psi_k,     d/dx_m sin psi_k = s B_mk cos psi_k
    lap cos psi_k = -s^2 |b_k|^2 cos psi_k,    lap sin psi_k = -s^2 |b_k|^2 sin psi_k

so ``order`` 0, 1, 2 gives ``C = 1, 1 + d, 2 + d`` channels ``(value, gradient, Laplacian)``, in
an array ``(C, J, n_features)`` (the layout of :mod:`fastopt.kernels.reference_nn`). The backward
gives ``dL/dB`` (trainable frequencies) and ``dL/dx`` through every channel.

Kernels: family "fourier" (``fourier_forward``, ``fourier_backward``) of the backend the arrays
select (NumPy -> Numba "cpu", CuPy -> "gpu", or ``backend="reference"``: the float64 oracle).

Example:
  >>> import numpy as np
  >>> from fastopt.fourier import FourierFeatures
  >>> ff = FourierFeatures.from_wavenumbers([1.0, 2.0])        # (x, cos x, cos 2x, sin x, sin 2x)
  >>> x = np.array([[0.0], [np.pi / 2]])
  >>> F = ff(x, order=2)                                         # u, u', u''
  >>> F.shape
  (3, 2, 5)
  >>> np.round(F[0, 1], 12)                                      # x, cos, cos, sin, sin at pi/2
  array([ 1.57079633,  0.        , -1.        ,  1.        ,  0.        ])
  >>> np.round(F[2, 1], 12)                                      # second derivatives: -k^2 times the feature
  array([ 0., -0.,  4., -1., -0.])

References:
  M. Tancik et al., Fourier features let networks learn high frequency functions in low dimensional
  domains, NeurIPS 2020.  S. Wang, H. Wang, P. Perdikaris, On the eigenvector bias of Fourier feature
  networks, CMAME 384 (2021).  Z. Aldirany, R. Cottereau, M. Laforest, S. Prudhomme, Multi-level neural
  networks for accurate solutions of boundary-value problems, CMAME 419 (2024).
"""
from __future__ import annotations

import math

import numpy as np

from . import _dispatch
from . import _validate as V

__all__ = ["FourierFeatures", "fourier_features", "fourier_features_backward"]


def _scale(two_pi: bool) -> float:
    return 2.0 * math.pi if two_pi else 1.0


def _check_B(func, B, d=None):
    V.float_array(func, "B", B, writable=False)
    if B.ndim != 2 or (d is not None and B.shape[0] != d):
        want = "(d, K)" if d is None else f"({d}, K)"
        raise ValueError(f"{func}: B must have shape {want} (input dimension x frequencies), got {tuple(B.shape)}")
    V.all_finite(func, "B", B)


def _n_features(d, K, keep_x):
    return (d if keep_x else 0) + 2 * K


def fourier_features(x, B, *, order=0, keep_x=True, two_pi=True, out=None, backend=None):
    """Fourier features of ``x`` with ``order`` derivative channels: ``(C, J, [d] + 2K)``.

    Args:
      x: (J, d) points, float32 or float64, finite.
      B: (d, K) frequencies, the dtype of ``x``.
      order: 0 (value), 1 (+ gradient: C = 1 + d) or 2 (+ Laplacian: C = 2 + d).
      keep_x: whether the features start with x itself.
      two_pi: argument ``2 pi x B`` (True) or ``x B``.
      out: optional output array of shape (C, J, n_features) and the dtype of x (overwritten).
      backend: "cpu", "gpu" or "reference" (default: from the arrays).
    Returns:
      ``out`` (a new array if not given).
    Raises:
      TypeError / ValueError naming the argument (shape, dtype, layout, non-finite input), before
      ``out`` is touched.
    """
    f = "fourier_features"
    backend, (x, B) = _dispatch.resolve(f, [("x", x), ("B", B)], backend)
    _check_B(f, B)
    d, K = B.shape
    V.points(f, "x", x, d, B.dtype)
    order = V.derivative_order(f, order)
    keep_x = V.flag(f, "keep_x", keep_x)
    V.flag(f, "two_pi", two_pi)
    if K == 0 and not keep_x:
        raise ValueError(f"{f}: B has no frequencies (K = 0) and keep_x is False: there would be no features")
    shape = (V.n_channels(order, d), x.shape[0], _n_features(d, K, keep_x))
    if out is None:
        out = (np if backend != "gpu" else _dispatch_cupy()).empty(shape, dtype=x.dtype)
    else:
        _, (out,) = _dispatch.resolve(f, [("out", out)], backend if backend != "reference" else "cpu")
        V.array_of(f, "out", out, shape, x.dtype, writable=True)
        V.no_aliasing(f, [("out", out), ("x", x), ("B", B)])
    _dispatch.get_kernel("fourier", "fourier_forward", backend)(x, B, x.dtype.type(_scale(two_pi)), keep_x, out)
    return out


def fourier_features_backward(x, B, adj, *, keep_x=True, two_pi=True, grad_B=None, grad_x=None,
                              want_grad_x=False, backend=None):
    """Gradients through the Fourier features: ``(dL/dB, dL/dx)`` from the feature adjoints.

    With ``adj[ch, j, f] = dL/d(channel ch of feature f at point j)`` (any order's channels, as the
    forward made them), ``dL/dx`` is the total gradient in x through every channel.

    Args:
      x, B, keep_x, two_pi, backend: as in :func:`fourier_features`.
      adj: (C, J, n_features) adjoints, C in {1, 1 + d, 2 + d}.
      grad_B: optional (d, K) output (overwritten); a new array if None.
      grad_x: optional (J, d) output (overwritten); computed when given or ``want_grad_x``.
    Returns:
      ``(grad_B, grad_x)``; ``grad_x`` is None unless given or wanted.
    """
    f = "fourier_features_backward"
    backend, (x, B, adj) = _dispatch.resolve(f, [("x", x), ("B", B), ("adj", adj)], backend)
    _check_B(f, B)
    d, K = B.shape
    V.points(f, "x", x, d, B.dtype)
    keep_x = V.flag(f, "keep_x", keep_x)
    V.flag(f, "two_pi", two_pi)
    V.float_array(f, "adj", adj, writable=False)
    n0 = _n_features(d, K, keep_x)
    if adj.ndim != 3 or adj.shape[0] not in (1, 1 + d, 2 + d) or adj.shape[1:] != (x.shape[0], n0):
        raise ValueError(f"{f}: adj must have shape (C, {x.shape[0]}, {n0}) with C in (1, {1 + d}, {2 + d}), "
                         f"got {tuple(adj.shape)}")
    if adj.dtype != x.dtype:
        raise TypeError(f"{f}: adj must have the dtype of x ({x.dtype}), got {adj.dtype}")
    V.all_finite(f, "adj", adj)
    xp = np if backend != "gpu" else _dispatch_cupy()
    outputs = []
    if grad_B is None:
        grad_B = xp.empty((d, K), dtype=x.dtype)
    else:
        _, (grad_B,) = _dispatch.resolve(f, [("grad_B", grad_B)], backend if backend != "reference" else "cpu")
        V.array_of(f, "grad_B", grad_B, (d, K), x.dtype, writable=True)
        outputs.append(("grad_B", grad_B))
    if grad_x is not None:
        _, (grad_x,) = _dispatch.resolve(f, [("grad_x", grad_x)], backend if backend != "reference" else "cpu")
        V.array_of(f, "grad_x", grad_x, x.shape, x.dtype, writable=True)
        outputs.append(("grad_x", grad_x))
    elif V.flag(f, "want_grad_x", want_grad_x):
        grad_x = xp.empty(x.shape, dtype=x.dtype)
    if outputs:
        V.no_aliasing(f, outputs + [("x", x), ("B", B), ("adj", adj)])
    gx = grad_x if grad_x is not None else xp.empty((0, d), dtype=x.dtype)
    _dispatch.get_kernel("fourier", "fourier_backward", backend)(
        x, B, x.dtype.type(_scale(two_pi)), keep_x, adj, grad_B, gx)
    return grad_B, grad_x


def _dispatch_cupy():
    import cupy  # only reached on the gpu backend

    return cupy


class FourierFeatures:
    """A Fourier-feature layer's configuration: frequencies ``B`` (d, K), ``keep_x``, ``two_pi``, ``trainable``.

    Calling it evaluates the features (:func:`fourier_features`); inside a :class:`fastopt.nn.MLP`
    it is the first layer, and with ``trainable=True`` its ``B`` becomes the parameter
    ``"fourier.B"`` of the network's flat buffer (trained with the rest).

    Args:
      B: (d, K) frequencies (copied; float64 unless ``dtype``).
      keep_x: whether the features start with x itself.
      two_pi: argument ``2 pi x B`` (True) or ``x B`` (False: ``B`` holds angular wavenumbers).
      trainable: whether a network trains ``B``.
      dtype: float32 or float64 (default: B's float dtype, else float64).
    """

    def __init__(self, B, *, keep_x=True, two_pi=True, trainable=False, dtype=None):
        f = "FourierFeatures"
        arr = B if hasattr(B, "__dlpack__") and not isinstance(B, np.ndarray) else np.asarray(B)
        if getattr(arr, "dtype", np.dtype(object)).kind not in "fiu":
            raise TypeError(f"{f}: B must be a real (d, K) array, got {getattr(arr, 'dtype', type(B).__name__)}")
        if arr.ndim != 2 or arr.shape[0] < 1:
            raise ValueError(f"{f}: B must have shape (d, K) with d >= 1, got {tuple(arr.shape)}")
        dt = np.dtype(dtype) if dtype is not None else (arr.dtype if arr.dtype.kind == "f" else np.dtype(np.float64))
        if dt.char not in "fd":
            raise TypeError(f"{f}: dtype must be float32 or float64, got {dt}")
        xp = np if isinstance(arr, np.ndarray) else _dispatch_cupy()
        self.B = xp.ascontiguousarray(arr, dtype=dt).copy()
        V.all_finite(f, "B", self.B)
        self.keep_x = V.flag(f, "keep_x", keep_x)
        self.two_pi = V.flag(f, "two_pi", two_pi)
        self.trainable = V.flag(f, "trainable", trainable)
        if self.K == 0 and not self.keep_x:
            raise ValueError(f"{f}: B has no frequencies (K = 0) and keep_x is False: there would be no features")

    # ----------------------------------------------------------------- constructors
    @classmethod
    def gaussian(cls, d, K, sigma=1.0, *, seed=None, keep_x=False, two_pi=True, trainable=False, dtype=np.float64):
        """``B ~ N(0, sigma^2)`` of shape (d, K) (Tancik et al. 2020): frequencies of scale ``sigma``."""
        d = V.integer("FourierFeatures.gaussian", "d", d, 1)
        K = V.integer("FourierFeatures.gaussian", "K", K, 0)
        sigma = V.positive("FourierFeatures.gaussian", "sigma", sigma)
        B = sigma * np.random.default_rng(seed).standard_normal((d, K))
        return cls(B, keep_x=keep_x, two_pi=two_pi, trainable=trainable, dtype=dtype)

    @classmethod
    def multiscale(cls, d, K_per_scale, sigmas, *, seed=None, keep_x=False, two_pi=True, trainable=False,
                   dtype=np.float64):
        """Gaussian blocks of several scales side by side (Wang et al. 2021): ``K = K_per_scale * len(sigmas)``."""
        f = "FourierFeatures.multiscale"
        d = V.integer(f, "d", d, 1)
        K_per_scale = V.integer(f, "K_per_scale", K_per_scale, 1)
        sigmas = [V.positive(f, f"sigmas[{i}]", s) for i, s in enumerate(sigmas)]
        if not sigmas:
            raise ValueError(f"{f}: sigmas must name at least one scale")
        rng = np.random.default_rng(seed)
        B = np.concatenate([s * rng.standard_normal((d, K_per_scale)) for s in sigmas], axis=1)
        return cls(B, keep_x=keep_x, two_pi=two_pi, trainable=trainable, dtype=dtype)

    @classmethod
    def from_wavenumbers(cls, k, *, keep_x=True, trainable=False, dtype=np.float64):
        """The lecture's 1D layer ``(x, cos(k_1 x), ..., sin(k_K x))``: angular wavenumbers ``k``, ``s = 1``."""
        k = np.asarray(k, dtype=np.float64)
        if k.ndim != 1:
            raise ValueError(f"FourierFeatures.from_wavenumbers: k must be a 1-D sequence, got shape {k.shape}")
        return cls(k[None, :], keep_x=keep_x, two_pi=False, trainable=trainable, dtype=dtype)

    # ----------------------------------------------------------------- properties
    @property
    def d(self) -> int:
        return int(self.B.shape[0])

    @property
    def K(self) -> int:
        return int(self.B.shape[1])

    @property
    def scale(self) -> float:
        """``s``: 2 pi or 1."""
        return _scale(self.two_pi)

    @property
    def n_features(self) -> int:
        return _n_features(self.d, self.K, self.keep_x)

    def __repr__(self) -> str:
        return (f"FourierFeatures(d={self.d}, K={self.K}, keep_x={self.keep_x}, two_pi={self.two_pi}, "
                f"trainable={self.trainable}, dtype={self.B.dtype})")

    # ----------------------------------------------------------------- evaluation
    def __call__(self, x, order=0, *, out=None, backend=None):
        """The features of ``x`` with their derivative channels (:func:`fourier_features`)."""
        return fourier_features(x, self.B, order=order, keep_x=self.keep_x, two_pi=self.two_pi, out=out,
                                backend=backend)

    def backward(self, x, adj, *, grad_B=None, grad_x=None, want_grad_x=False, backend=None):
        """``(dL/dB, dL/dx)`` from the adjoints of the features (:func:`fourier_features_backward`)."""
        return fourier_features_backward(x, self.B, adj, keep_x=self.keep_x, two_pi=self.two_pi, grad_B=grad_B,
                                         grad_x=grad_x, want_grad_x=want_grad_x, backend=backend)
