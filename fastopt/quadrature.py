r"""Quadrature rules on an interval ``[a, b]`` or a box ``[a_1, b_1] x ... x [a_d, b_d]``.

A loss over a domain, ``L = int_Omega r(x)^2 dx``, becomes ``sum_j w_j r(x_j)^2`` with the points
and weights of a rule; the LS system (:mod:`fastopt.ls`) takes those weights as ``W``. The
integration error enters the loss, its minimiser and the LS system directly (the LS hybrid is
"very sensitive to integration errors", as the lecture shows with fewer points), so the choice
of rule matters:

==========================  ==========================  ============================================
rule                        exact for                   error for smooth f (1-D, J points)
==========================  ==========================  ============================================
:func:`monte_carlo`         constants                   random, RMS ~ J^(-1/2)
:func:`stratified`          constants (linear per       random, RMS ~ J^(-3/2); with antithetic
                            stratum if antithetic)      pairs ~ J^(-5/2)
:func:`uniform` (midpoint)  degree 1                    O(J^-2), deterministic
:func:`gauss_legendre`      degree 2n - 1 per cell      O(h^(2n)) for ``cells`` cells of width h
==========================  ==========================  ============================================

Every rule returns a :class:`Rule` ``(points, weights)``: ``points`` of shape ``(J, d)`` (also in
1-D, as the networks take them) and ``weights`` ``(J,)``, both float64 (cast the points with
``.astype`` for a float32 network; keep the weights in float64 for the Gram accumulation). The
weights sum to the volume of the box, so ``weights @ f(points)`` approximates the integral (divide by
the volume for a mean). Random rules take ``rng``: a ``numpy.random.Generator``, an int seed (the same
seed gives the same points) or None.

Tensor-product rules (:func:`uniform`, :func:`gauss_legendre`) take a count per dimension (an
int for every dimension, or one per dimension); the random rules take the total J. The dimension
d is the longest of ``a``, ``b`` and the per-dimension counts.

Example:
  >>> import numpy as np
  >>> from fastopt import quadrature
  >>> x, w = quadrature.gauss_legendre(3, 0.0, np.pi)
  >>> x.shape, round(float(w @ np.sin(x[:, 0])), 3)     # int_0^pi sin = 2
  ((3, 1), 2.001)
  >>> x, w = quadrature.gauss_legendre(3, 0.0, np.pi, cells=4)
  >>> abs(float(w @ np.sin(x[:, 0])) - 2.0) < 1e-6
  True

References:
  P. J. Davis, P. Rabinowitz, Methods of Numerical Integration, 2nd ed., Academic Press 1984
  (Gauss--Legendre, composite rules); A. B. Owen, Monte Carlo theory, methods and examples, 2013,
  ch. 8 (stratification, antithetic sampling).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validate as V

__all__ = ["Rule", "uniform", "gauss_legendre", "monte_carlo", "stratified"]


class Rule(NamedTuple):
    """Quadrature points ``(J, d)`` and weights ``(J,)`` (float64); unpacks as ``x, w = rule``."""

    points: np.ndarray
    weights: np.ndarray


def _per_dim(counts: tuple, d: int) -> tuple:
    return counts * d if len(counts) == 1 else counts


def _tensor(rules_1d) -> Rule:
    """The tensor product of 1-D rules ``[(x_k, w_k), ...]``: the last dimension varies fastest."""
    grids = np.meshgrid(*[x for x, _ in rules_1d], indexing="ij")
    points = np.stack([g.ravel() for g in grids], axis=1)
    weights = np.ones(1)
    for _, w in rules_1d:
        weights = np.multiply.outer(weights, w).ravel()
    return Rule(np.ascontiguousarray(points), weights)


def uniform(n, a=0.0, b=1.0) -> Rule:
    r"""The (composite) midpoint rule: ``n`` equal cells per dimension, one point at each centre.

    1-D: ``x_j = a + (j + 1/2) h``, ``w_j = h = (b - a) / n``; exact for polynomials of degree <= 1,
    error ``(b - a) h^2 f''(xi) / 24``. In d dimensions the tensor product (``prod(n)`` points).

    Args:
      n: cells per dimension: an int >= 1, or a sequence of one per dimension.
      a, b: the box's lower and upper corners (numbers, or one per dimension).
    Returns:
      :class:`Rule` of ``J = prod(n)`` points.

    Example:
      >>> from fastopt.quadrature import uniform
      >>> x, w = uniform(4)
      >>> x[:, 0], w
      (array([0.125, 0.375, 0.625, 0.875]), array([0.25, 0.25, 0.25, 0.25]))
    """
    f = "uniform"
    counts = V.quad_counts(f, "n", n)
    lo, hi = V.quad_box(f, a, b, counts)
    rules = []
    for k, m in enumerate(_per_dim(counts, lo.size)):
        h = (hi[k] - lo[k]) / m
        rules.append((lo[k] + (np.arange(m) + 0.5) * h, np.full(m, h)))
    return _tensor(rules)


def gauss_legendre(n, a=0.0, b=1.0, *, cells=1) -> Rule:
    r"""Composite Gauss--Legendre: ``cells`` equal cells per dimension, ``n`` Gauss points in each.

    On a cell ``[c, c + h]`` the ``n``-point rule ``x = c + h (1 + t_i) / 2``, ``w = h w_i / 2`` (``t_i, w_i``
    from ``numpy.polynomial.legendre.leggauss``) is exact for polynomials of degree ``2n - 1``; the
    composite rule's error is ``O(h^(2n))`` for smooth integrands. Many cells of a few points
    (say ``n = 4..8``) suit oscillatory integrands (a Deep Ritz loss with a solution of frequency
    k needs ``h`` well below the period ``2 pi / k``): one cell of many points also converges, but
    only once ``n`` resolves every oscillation across the whole interval, its nodes crowd at the
    ends, and ``leggauss`` is documented as tested up to ``n = 100`` only. In d dimensions the
    tensor product.

    Args:
      n: Gauss points per cell and dimension (int >= 1, or one per dimension).
      a, b: the box's corners (numbers, or one per dimension).
      cells: cells per dimension (int >= 1, or one per dimension).
    Returns:
      :class:`Rule` of ``J = prod(n * cells)`` points, sorted within each dimension.

    Example:
      >>> import numpy as np
      >>> from fastopt.quadrature import gauss_legendre
      >>> x, w = gauss_legendre(2, -1.0, 1.0)               # nodes +-1/sqrt(3)
      >>> np.round(x[:, 0] * np.sqrt(3), 12), w
      (array([-1.,  1.]), array([1., 1.]))
    """
    f = "gauss_legendre"
    counts = V.quad_counts(f, "n", n)
    ncells = V.quad_counts(f, "cells", cells)
    d_hint = counts if len(counts) >= len(ncells) else ncells
    lo, hi = V.quad_box(f, a, b, d_hint)
    if len(counts) != 1 and len(ncells) != 1 and len(counts) != len(ncells):
        raise ValueError(f"{f}: n and cells must have one entry per dimension or a single one, got lengths "
                         f"{len(counts)} and {len(ncells)}")
    d = lo.size
    rules = []
    for k, (m, c) in enumerate(zip(_per_dim(counts, d), _per_dim(ncells, d))):
        t, wt = np.polynomial.legendre.leggauss(m)
        h = (hi[k] - lo[k]) / c
        left = lo[k] + h * np.arange(c)
        rules.append(((left[:, None] + 0.5 * h * (t + 1.0)).ravel(), np.tile(0.5 * h * wt, c)))
    return _tensor(rules)


def monte_carlo(J, rng=None, a=0.0, b=1.0) -> Rule:
    r"""Plain Monte Carlo: ``J`` independent uniform points in the box, weights ``|box| / J``.

    Unbiased; RMS error ``sigma(f) |box| / sqrt(J)`` in any dimension.

    Args:
      J: number of points (int >= 1).
      rng: ``numpy.random.Generator``, int seed or None.
      a, b: the box's corners.
    Returns:
      :class:`Rule` of J points.

    Example:
      >>> from fastopt.quadrature import monte_carlo
      >>> x, w = monte_carlo(5, rng=0, a=(0.0, 0.0), b=(1.0, 2.0))
      >>> x.shape, float(w.sum())
      ((5, 2), 2.0)
    """
    f = "monte_carlo"
    J = V.integer(f, "J", J, 1)
    lo, hi = V.quad_box(f, a, b)
    gen = V.quad_rng(f, rng)
    points = lo + (hi - lo) * gen.random((J, lo.size))
    return Rule(points, np.full(J, float(np.prod(hi - lo)) / J))


def stratified(J, rng=None, a=0.0, b=1.0, *, antithetic=True) -> Rule:
    r"""Stratified sampling, with antithetic pairs by default: one random point per stratum, or a pair.

    The box is cut into ``m^d`` equal cells (strata). With ``antithetic=True`` (``J = 2 m^d``) each
    cell ``[l, l + h]`` gets a uniform point ``u = l + h U`` and its mirror image through the cell's
    centre, ``u' = l + h (1 - U)``; without, ``J = m^d`` points, one uniform point per cell. All weights
    are ``|box| / J``. In 1-D with J points: ``J/2`` strata of width ``2 (b - a) / J``, two mirrored
    points in each.

    Properties (1-D, smooth f): unbiased; the pair average is exact for functions linear on each
    stratum (``(f(u) + f(u'))/2 = f(centre)`` for linear f), so the error comes from ``f''`` only and
    its RMS falls like ``J^(-5/2)``; one point per stratum: ``J^(-3/2)``; plain Monte Carlo:
    ``J^(-1/2)``. Points come cell by cell (a point, then its mirror).

    Args:
      J: number of points: ``2 m^d`` with antithetic pairs, ``m^d`` without.
      rng: ``numpy.random.Generator``, int seed or None.
      a, b: the box's corners.
      antithetic: mirror every point through its stratum's centre.
    Returns:
      :class:`Rule` of J points.

    Example:
      >>> from fastopt.quadrature import stratified
      >>> x, w = stratified(4, rng=0)                       # strata [0, 1/2] and [1/2, 1]
      >>> (x[0::2, 0] + x[1::2, 0]) / 2, w                  # each pair is symmetric about its centre
      (array([0.25, 0.75]), array([0.25, 0.25, 0.25, 0.25]))
    """
    f = "stratified"
    J = V.integer(f, "J", J, 1)
    antithetic = V.flag(f, "antithetic", antithetic)
    lo, hi = V.quad_box(f, a, b)
    gen = V.quad_rng(f, rng)
    d = lo.size
    m = V.strata_per_dim(f, J, d, antithetic)
    h = (hi - lo) / m
    corners = np.stack([g.ravel() for g in np.meshgrid(*([np.arange(m)] * d), indexing="ij")], axis=1)
    U = gen.random((m ** d, d))
    if antithetic:
        offsets = np.stack([U, 1.0 - U], axis=1).reshape(-1, d)  # u, mirror, u, mirror, ...
        corners = np.repeat(corners, 2, axis=0)
    else:
        offsets = U
    points = lo + (corners + offsets) * h
    return Rule(points, np.full(J, float(np.prod(hi - lo)) / J))
