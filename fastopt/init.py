r"""Initialisations of the dense layers and Fourier frequencies of :class:`fastopt.nn.MLP`.

Glorot (uniform), plain uniform ranges (the lecture draws its first layer from U(-3 pi, 3 pi))
and the box initialisation of Cyr et al., which places every unit's transition inside the
input box so that no unit starts saturated or dead (it matters for the LS hybrid, whose basis
functions are the last hidden layer). Host-side NumPy; the float64 oracle
:mod:`fastopt.kernels.reference_nn` uses the same functions.

Example:
  >>> import numpy as np
  >>> from fastopt import init
  >>> W, b = init.box(np.random.default_rng(0), 1, 4, lo=0.0, hi=1.0)
  >>> bool(np.all((-b / W[0] > 0) & (-b / W[0] < 1)))   # every transition inside [0, 1]
  True
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["glorot_uniform", "uniform", "box", "fourier_gaussian", "dense_layers", "SCHEMES"]

#: Initialisation schemes of the dense layers.
SCHEMES = ("glorot", "uniform", "box")


def glorot_uniform(rng, fan_in, fan_out):
    """W ~ U(-r, r), r = sqrt(6 / (fan_in + fan_out)), shape (fan_in, fan_out) (Glorot & Bengio 2010)."""
    r = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-r, r, size=(fan_in, fan_out))


def uniform(rng, shape, low, high):
    """U(low, high) of the given shape (the lecture: U(-3 pi, 3 pi) for the first layer)."""
    return rng.uniform(low, high, size=shape)


def box(rng, fan_in, fan_out, lo=0.0, hi=1.0, scale=1.0):
    """Box initialisation (Cyr et al. 2020): hyperplanes through random points of the input box.

    For each unit j: a point p_j ~ U([lo, hi]^fan_in), a unit normal n_j (a normalised standard
    Gaussian: uniform on the sphere) and the scale k_j that makes the largest pre-activation
    over the box equal to ``scale``::

        a_j(z) = k_j n_j . (z - p_j),   k_j = scale / max_{z in box} n_j . (z - p_j)
              => W[:, j] = k_j n_j,     b_j = -k_j n_j . p_j

    the maximum being attained at the corner z_i = hi where n_ji > 0, lo otherwise. So every
    unit's transition (a_j = 0) crosses the box, at a uniformly spread place, and no unit is
    saturated or dead over the whole box. Cyr et al. use [0, 1]^d and scale 1 for ReLU layers
    whose inputs lie in [0, 1]; for tanh or sin layers the box of a hidden layer is the
    activation's range [-1, 1]. Their variant for deep residual networks (boxes that grow
    with depth) is not implemented. (Written from the paper's description, arXiv:1912.04862;
    the paper's text could not be consulted here. The construction agrees with the ReLU
    branch of a public JAX implementation of "box init (Cyr et al. 2020)".)

    Returns:
      ``(W, b)``: (fan_in, fan_out) and (fan_out,).
    """
    p = rng.uniform(lo, hi, size=(fan_in, fan_out))
    n = rng.standard_normal((fan_in, fan_out))
    n /= np.linalg.norm(n, axis=0, keepdims=True)
    corner = np.where(n > 0, hi, lo)
    k = scale / np.sum(n * (corner - p), axis=0)
    W = k * n
    b = -k * np.sum(n * p, axis=0)
    return W, b


def fourier_gaussian(rng, d, K, sigma=1.0):
    """B ~ N(0, sigma^2), shape (d, K) (Tancik et al. 2020)."""
    return sigma * rng.standard_normal((d, K))


def dense_layers(rng, widths, hidden="glorot", first=None, uniform_range=(-3 * math.pi, 3 * math.pi),
                 box_range=(0.0, 1.0)):
    """Weights and biases of the dense layers ``widths[0] -> ... -> widths[-1]``, drawn in layer order.

    Args:
      rng: ``numpy.random.Generator``.
      widths: ``[n_0, n_1, ..., n_L]``.
      hidden: scheme of the dense layers: "glorot" (biases 0), "uniform" (weights and biases
        U(uniform_range)) or "box" (:func:`box`; layers after the first use the box [-1, 1],
        the range of tanh and sin).
      first: scheme of the first dense layer (default: ``hidden``).
      uniform_range: (low, high) of "uniform".
      box_range: (lo, hi) of the first layer's input box for "box".
    Returns:
      dict ``"dense{l}.W"``, ``"dense{l}.b"`` -> float64 arrays, in layer order.
    """
    widths = [int(w) for w in widths]
    arrays = {}
    for l in range(len(widths) - 1):
        scheme = (first or hidden) if l == 0 else hidden
        fan_in, fan_out = widths[l], widths[l + 1]
        if scheme == "glorot":
            W, b = glorot_uniform(rng, fan_in, fan_out), np.zeros(fan_out)
        elif scheme == "uniform":
            W = uniform(rng, (fan_in, fan_out), *uniform_range)
            b = uniform(rng, (fan_out,), *uniform_range)
        elif scheme == "box":
            lo, hi = box_range if l == 0 else (-1.0, 1.0)
            W, b = box(rng, fan_in, fan_out, lo, hi)
        else:
            raise ValueError(f"init: unknown scheme {scheme!r}; use one of {list(SCHEMES)}")
        arrays[f"dense{l}.W"], arrays[f"dense{l}.b"] = W, b
    return arrays
