r"""Quadrature rules (``fastopt.quadrature``): exactness, convergence rates, determinism, bad input.

Exactness (to rounding, ``1e-13`` relative to the sum of |terms|): Gauss--Legendre with n points per
cell for degree <= 2n - 1 (and not for 2n with one cell), the midpoint rule for degree <= 1 (and its
known error (b - a) h^2 / 12 for x^2), antithetic stratified sampling for every function linear on
each stratum, tensor products in 2-D.

Rates (slopes of log error against log J, least squares over a range of J): midpoint -2;
composite 2-point Gauss--Legendre -4 (in the number of cells); random rules measured as the RMS
error over 200 seeds: Monte Carlo -1/2, stratified -3/2, stratified with antithetic pairs -5/2
(unbiased estimators: the error is a sum of independent per-stratum errors of size
h * O(h) and h * O(h^2) respectively). Tolerance on a slope: +-0.25 (+-0.15 for the deterministic
rules).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt import quadrature as Q


def integral_monomial(k, a, b):
    return (b ** (k + 1) - a ** (k + 1)) / (k + 1)


def slope(Js, errs):
    return float(np.polyfit(np.log(Js), np.log(errs), 1)[0])


# --------------------------------------------------------------------------- shapes and weights
@pytest.mark.parametrize("rule", ["uniform", "gauss_legendre", "monte_carlo", "stratified"])
def test_points_and_weights_in_1d_and_2d(rule):
    for a, b, d in [(-1.0, 3.0, 1), ((0.0, -2.0), (1.0, 2.0), 2)]:
        if rule == "uniform":
            x, w = Q.uniform(8, a, b)
        elif rule == "gauss_legendre":
            x, w = Q.gauss_legendre(3, a, b, cells=2)
        elif rule == "monte_carlo":
            x, w = Q.monte_carlo(64, 0, a, b)
        else:
            x, w = Q.stratified(32 if d == 1 else 2 * 16, 0, a, b)
        lo, hi = np.broadcast_to(a, (d,)), np.broadcast_to(b, (d,))
        assert x.ndim == 2 and x.shape[1] == d and w.shape == (x.shape[0],)
        assert x.dtype == np.float64 and w.dtype == np.float64 and x.flags.c_contiguous
        assert np.all(x >= lo) and np.all(x <= hi) and np.all(w > 0)
        assert float(w.sum()) == pytest.approx(float(np.prod(hi - lo)), rel=1e-14)


def test_rule_unpacks_and_names_its_fields():
    rule = Q.uniform(3)
    x, w = rule
    assert rule.points is x and rule.weights is w


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("cells", [1, 3])
def test_gauss_legendre_is_exact_to_degree_2n_minus_1(n, cells):
    a, b = -0.3, 1.7
    x, w = Q.gauss_legendre(n, a, b, cells=cells)
    assert x.shape[0] == n * cells
    for k in range(2 * n):
        got = float(w @ x[:, 0] ** k)
        scale = float(w @ np.abs(x[:, 0]) ** k)
        assert abs(got - integral_monomial(k, a, b)) <= 1e-13 * max(scale, 1.0), (n, k)
    if cells == 1:  # and not beyond
        k = 2 * n
        assert abs(float(w @ x[:, 0] ** k) - integral_monomial(k, a, b)) > 1e-10


def test_midpoint_exact_for_linear_and_known_error_for_quadratic():
    a, b, n = -1.0, 2.0, 12
    x, w = Q.uniform(n, a, b)
    h = (b - a) / n
    assert float(w @ np.ones(n)) == pytest.approx(b - a, rel=1e-15)
    assert float(w @ (3.0 * x[:, 0] - 2.0)) == pytest.approx(3.0 * integral_monomial(1, a, b) - 2.0 * (b - a),
                                                              rel=1e-14)
    err = integral_monomial(2, a, b) - float(w @ x[:, 0] ** 2)
    assert err == pytest.approx((b - a) * h**2 / 12, rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_antithetic_stratified_exact_for_piecewise_linear(seed):
    """(f(u) + f(u'))/2 = f(centre) for f linear on a stratum: exact for functions linear on each stratum."""
    a, b, J = 0.0, 2.0, 16  # 8 strata of width 1/4: kinks at multiples of 1/4 are allowed
    x, w = Q.stratified(J, seed, a, b)
    t = x[:, 0]
    assert float(w @ (5.0 * t - 1.0)) == pytest.approx(5.0 * 2.0 - 2.0, rel=1e-14)
    assert float(w @ np.abs(t - 0.75)) == pytest.approx(0.75**2 / 2 + 1.25**2 / 2, rel=1e-14)
    # one point per stratum is not exact for linear functions (random)
    x1, w1 = Q.stratified(J, seed, a, b, antithetic=False)
    assert abs(float(w1 @ (5.0 * x1[:, 0] - 1.0)) - 8.0) > 1e-6


def test_tensor_rules_in_2d():
    a, b = (0.0, -1.0), (2.0, 0.5)
    x, w = Q.gauss_legendre((3, 2), a, b)  # degree 5 in x, 3 in y
    for p in range(6):
        for q in range(4):
            want = integral_monomial(p, a[0], b[0]) * integral_monomial(q, a[1], b[1])
            assert float(w @ (x[:, 0] ** p * x[:, 1] ** q)) == pytest.approx(want, rel=1e-13, abs=1e-14)
    x, w = Q.uniform((4, 5), a, b)
    assert x.shape == (20, 2)
    # area 3; int x = 2 * 1.5; int y = 2 * (-0.375): the midpoint rule is exact for bilinear functions
    assert float(w @ (1 + 2 * x[:, 0] - x[:, 1] + x[:, 0] * x[:, 1])) == pytest.approx(
        3.0 + 2 * 3.0 + 0.75 - 0.75, rel=1e-13)
    x, w = Q.stratified(2 * 9, 1, a, b)  # 3 x 3 strata, antithetic pairs: exact for linear functions
    assert float(w @ (1 + 2 * x[:, 0] - x[:, 1])) == pytest.approx(3.0 + 2 * 2.0 * 1.5 + 0.375 * 2.0, rel=1e-13)


# --------------------------------------------------------------------------- convergence rates
def _f(t):
    return np.exp(np.sin(3.0 * t))  # smooth, not a polynomial


_EXACT = None


def exact_integral():
    global _EXACT
    if _EXACT is None:
        x, w = Q.gauss_legendre(20, 0.0, 2.0, cells=50)
        _EXACT = float(w @ _f(x[:, 0]))
    return _EXACT


def test_midpoint_converges_at_rate_2():
    Js = [16, 32, 64, 128, 256]
    errs = [abs(float(w @ _f(x[:, 0])) - exact_integral()) for x, w in (Q.uniform(J, 0.0, 2.0) for J in Js)]
    assert slope(Js, errs) == pytest.approx(-2.0, abs=0.15)


def test_composite_gauss_legendre_converges_at_rate_2n():
    cells = [16, 32, 64, 128]  # the asymptotic range (4-8 cells are pre-asymptotic for this f)
    errs = [abs(float(w @ _f(x[:, 0])) - exact_integral())
            for x, w in (Q.gauss_legendre(2, 0.0, 2.0, cells=c) for c in cells)]
    assert slope(cells, errs) == pytest.approx(-4.0, abs=0.15)


@pytest.mark.parametrize("rule,antithetic,rate", [("monte_carlo", None, -0.5), ("stratified", False, -1.5),
                                                   ("stratified", True, -2.5)])
def test_random_rules_rms_rates(rule, antithetic, rate):
    Js = [8, 32, 128]
    rms = []
    for J in Js:
        errs = []
        for seed in range(200):
            if rule == "monte_carlo":
                x, w = Q.monte_carlo(J, seed, 0.0, 2.0)
            else:
                x, w = Q.stratified(J, seed, 0.0, 2.0, antithetic=antithetic)
            errs.append(float(w @ _f(x[:, 0])) - exact_integral())
        rms.append(math.sqrt(float(np.mean(np.square(errs)))))
    assert slope(Js, rms) == pytest.approx(rate, abs=0.25)


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("rule", [Q.monte_carlo, Q.stratified])
def test_seeded_rules_are_reproducible(rule):
    x1, w1 = rule(32, 123, 0.0, 1.0)
    x2, w2 = rule(32, 123, 0.0, 1.0)
    x3, _ = rule(32, 124, 0.0, 1.0)
    assert np.array_equal(x1, x2) and np.array_equal(w1, w2) and not np.array_equal(x1, x3)
    g1, g2 = np.random.default_rng(7), np.random.default_rng(7)
    assert np.array_equal(rule(32, g1)[0], rule(32, g2)[0])
    assert not np.array_equal(rule(32, g1)[0], rule(32, np.random.default_rng(7))[0])  # a Generator advances


def test_deterministic_rules_need_no_seed():
    assert np.array_equal(Q.gauss_legendre(5, cells=3)[0], Q.gauss_legendre(5, cells=3)[0])
    assert np.array_equal(Q.uniform(7)[0], Q.uniform(7)[0])


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,exc,word", [
    (lambda: Q.uniform(0), ValueError, "n"),
    (lambda: Q.uniform(4.0), TypeError, "n"),
    (lambda: Q.uniform([]), ValueError, "n"),
    (lambda: Q.uniform(4, 1.0, 1.0), ValueError, "a < b"),
    (lambda: Q.uniform(4, 0.0, np.inf), ValueError, "finite"),
    (lambda: Q.uniform(4, (0.0, 0.0), (1.0, 1.0, 1.0)), ValueError, "dimension"),
    (lambda: Q.uniform((2, 3, 4), (0.0, 0.0), (1.0, 1.0)), ValueError, "dimension"),
    (lambda: Q.uniform(4, "a", 1.0), TypeError, "a"),
    (lambda: Q.gauss_legendre(0), ValueError, "n"),
    (lambda: Q.gauss_legendre(3, cells=0), ValueError, "cells"),
    (lambda: Q.gauss_legendre((2, 3), cells=(1, 2, 3)), ValueError, "cells|dimension"),
    (lambda: Q.monte_carlo(0, 1), ValueError, "J"),
    (lambda: Q.monte_carlo(10, "seed"), TypeError, "rng"),
    (lambda: Q.monte_carlo(10, -1), ValueError, "rng"),
    (lambda: Q.monte_carlo(10, 1.5), TypeError, "rng"),
    (lambda: Q.stratified(7, 0), ValueError, "even"),
    (lambda: Q.stratified(2 * 10, 0, (0.0, 0.0), (1.0, 1.0)), ValueError, "m\\^2"),
    (lambda: Q.stratified(10, 0, (0.0, 0.0), (1.0, 1.0), antithetic=False), ValueError, "m\\^2"),
    (lambda: Q.stratified(8, 0, antithetic="yes"), TypeError, "antithetic"),
], ids=["n0", "n float", "n empty", "a==b", "b inf", "dims a b", "dims n", "a str", "gl n0", "gl cells0",
        "gl dims", "mc J0", "mc rng str", "mc seed<0", "mc rng float", "strat odd", "strat 2d antithetic",
        "strat 2d plain", "strat flag"])
def test_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()


def test_stratified_counts_in_2d_and_3d():
    assert Q.stratified(2 * 25, 0, (0, 0), (1, 1))[0].shape == (50, 2)
    assert Q.stratified(27, 0, (0, 0, 0), (1, 1, 1), antithetic=False)[0].shape == (27, 3)
    x, _ = Q.stratified(2 * 4, 3, (0, 0), (1, 1))  # 2 x 2 strata: every stratum holds one pair
    cells = np.floor(x * 2).astype(int)
    assert sorted(map(tuple, cells[0::2])) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert np.array_equal(cells[0::2], cells[1::2])
