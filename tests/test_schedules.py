"""Tests of fastopt.schedules: closed forms, boundaries, monotonicity, validation."""
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastopt import schedules

REL = 1e-14

# Strategies -----------------------------------------------------------------
lr_values = st.floats(min_value=1e-8, max_value=10.0)
steps = st.integers(min_value=0, max_value=10**7)
fractions = st.floats(min_value=0.0, max_value=1.0)


def _non_increasing(a, b):
    """b <= a up to 2 ulps: libm's pow and cos are faithful, not correctly
    rounded, so exact monotonicity in floating point is not guaranteed."""
    return b <= a + 2 * math.ulp(a)


# constant -------------------------------------------------------------------
def test_constant_values_and_type():
    lr = schedules.constant(3)
    for k in (0, 1, 10**12):
        v = lr(k)
        assert v == 3.0 and type(v) is float
    assert schedules.constant(0.0)(5) == 0.0


# exponential ----------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 1, 2, 7, 10, 15, 100, 12345])
def test_exponential_closed_form(k):
    lr = schedules.exponential(0.1, 0.9, transition_steps=10)
    assert lr(k) == pytest.approx(0.1 * 0.9 ** (k / 10), rel=REL)
    stairs = schedules.exponential(0.1, 0.9, transition_steps=10, staircase=True)
    assert stairs(k) == pytest.approx(0.1 * 0.9 ** (k // 10), rel=REL)


def test_exponential_defaults_and_stairs():
    lr = schedules.exponential(1.0, 0.5)  # transition_steps=1
    assert [lr(k) for k in range(4)] == [1.0, 0.5, 0.25, 0.125]
    stairs = schedules.exponential(1.0, 0.5, 3, staircase=True)
    assert [stairs(k) for k in range(7)] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]


def test_exponential_rate_one_is_constant():
    lr = schedules.exponential(0.3, 1.0, 5)
    assert all(lr(k) == 0.3 for k in (0, 1, 99, 10**9))


def test_exponential_end_value_is_a_floor():
    lr = schedules.exponential(1.0, 0.5, end_value=0.1)
    assert lr(0) == 1.0 and lr(3) == 0.125
    assert lr(4) == 0.1 and lr(10**6) == 0.1
    # Without a floor the value underflows to 0 quietly.
    assert schedules.exponential(1.0, 0.5)(10**6) == 0.0
    # end_value == init_value: constant.
    assert schedules.exponential(1.0, 0.5, end_value=1.0)(50) == 1.0


@settings(max_examples=200, deadline=None)
@given(init=lr_values, rate=st.floats(min_value=1e-3, max_value=1.0),
       T=st.integers(1, 1000), stair=st.booleans(), floor=fractions,
       k1=steps, k2=steps)
def test_exponential_monotone_and_bounded(init, rate, T, stair, floor, k1, k2):
    end = floor * init
    lr = schedules.exponential(init, rate, T, staircase=stair, end_value=end)
    k1, k2 = min(k1, k2), max(k1, k2)
    a, b = lr(k1), lr(k2)
    assert _non_increasing(a, b)
    assert end <= b <= a <= init


# algebraic ------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.51, 0.6, 0.75, 1.0])
@pytest.mark.parametrize("k0", [1.0, 2.5, 100])
def test_algebraic_closed_form(alpha, k0):
    lr = schedules.algebraic(0.2, alpha, k0)
    for k in (0, 1, 2, 10, 99, 1000, 10**6):
        assert lr(k) == pytest.approx(0.2 * (1 + k / k0) ** (-alpha), rel=REL)
    assert lr(0) == 0.2


def test_algebraic_exact_values():
    lr = schedules.algebraic(1.0, 1.0)  # k0 = 1: gamma_k = 1 / (1 + k)
    assert [lr(k) for k in (0, 1, 3, 7)] == [1.0, 0.5, 0.25, 0.125]
    lr = schedules.algebraic(1.0, 0.75, k0=1)
    assert lr(15) == pytest.approx(16 ** -0.75, rel=REL) == 0.125


@pytest.mark.parametrize("alpha", [0.5000001, 0.75, 1.0])
def test_algebraic_accepts_robbins_monro_range(alpha):
    assert schedules.algebraic(0.1, alpha)(0) == 0.1


@pytest.mark.parametrize("alpha", [0.5, 0.25, 1.0000001, 2.0, 0.0, -1.0])
def test_algebraic_rejects_outside_range(alpha):
    with pytest.raises(ValueError, match=r"schedules\.algebraic: alpha must be in \(1/2, 1\]"):
        schedules.algebraic(0.1, alpha)


@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.5, 3.0])
def test_algebraic_strict_false_allows_other_alpha(alpha):
    lr = schedules.algebraic(1.0, alpha, k0=2.0, strict=False)
    assert lr(6) == pytest.approx(4.0 ** -alpha, rel=REL)
    assert "strict=False" in repr(lr)


@pytest.mark.parametrize("alpha", [0.0, -0.5, math.inf, math.nan])
def test_algebraic_strict_false_still_needs_positive_finite_alpha(alpha):
    with pytest.raises(ValueError, match=r"schedules\.algebraic: alpha must be"):
        schedules.algebraic(1.0, alpha, strict=False)


def test_algebraic_strict_must_be_bool_and_keyword():
    with pytest.raises(TypeError, match=r"schedules\.algebraic: strict must be a bool"):
        schedules.algebraic(1.0, 0.75, strict=0)
    with pytest.raises(TypeError):
        schedules.algebraic(1.0, 0.75, 1.0, False)  # strict is keyword-only


@pytest.mark.parametrize("alpha", [0.6, 0.8, 1.0])
@pytest.mark.parametrize("k0", [1.0, 10.0])
def test_algebraic_robbins_monro_sums(alpha, k0):
    """Integral comparison for the decreasing f(x) = g0 (1 + x/k0)^-alpha:

    sum_{k<N} f(k) >= int_0^N f, which grows without bound (alpha <= 1), and
    sum_{k<N} f(k)^2 <= f(0)^2 + int_0^inf f^2 = g0^2 (1 + k0 / (2 alpha - 1)).
    """
    g0 = 0.5
    lr = schedules.algebraic(g0, alpha, k0)
    bound_sq = g0**2 * (1 + k0 / (2 * alpha - 1))

    def integral(n):
        if alpha == 1.0:
            return g0 * k0 * math.log1p(n / k0)
        return g0 * k0 / (1 - alpha) * ((1 + n / k0) ** (1 - alpha) - 1)

    s = sq = 0.0
    checkpoints = {10, 100, 1000, 10_000, 100_000}
    sums = []
    for k in range(100_000):
        v = lr(k)
        s += v
        sq += v * v
        if k + 1 in checkpoints:
            assert s >= integral(k + 1) * (1 - 1e-12)
            assert sq <= bound_sq
            sums.append(s)
    # Each decade adds at least int_n^{10n} f to the partial sum ...
    for a, b, n in zip(sums, sums[1:], (10, 100, 1000, 10_000)):
        assert b - a >= (integral(10 * n) - integral(n)) * (1 - 1e-12)
    # ... and that amount never shrinks (it is >= g0 k0 log(10/(1+k0/n))
    # for alpha = 1): the lower bound, hence sum gamma_k, diverges.
    incs = [integral(10.0 ** (j + 1)) - integral(10.0 ** j) for j in range(1, 200)]
    assert min(incs) > 0
    assert all(b >= a * (1 - 1e-9) for a, b in zip(incs, incs[1:]))


def test_algebraic_half_has_divergent_sum_of_squares():
    """alpha = 1/2, outside the range: sum gamma^2 >= g0^2 k0 log(1 + N/k0)."""
    lr = schedules.algebraic(1.0, 0.5, k0=1.0, strict=False)
    sq = sum(lr(k) ** 2 for k in range(100_000))
    assert sq >= math.log1p(100_000) * (1 - 1e-12)
    assert sq > 1 + 1.0 / (2 * 0.6 - 1)  # exceeds the bound of alpha = 0.6


@settings(max_examples=200, deadline=None)
@given(init=lr_values, alpha=st.floats(min_value=0.5, max_value=1.0, exclude_min=True),
       k0=st.floats(min_value=1e-3, max_value=1e6), k1=steps, k2=steps)
def test_algebraic_monotone(init, alpha, k0, k1, k2):
    lr = schedules.algebraic(init, alpha, k0)
    k1, k2 = min(k1, k2), max(k1, k2)
    a, b = lr(k1), lr(k2)
    assert _non_increasing(a, b)
    assert 0.0 <= b <= a <= init


# step -----------------------------------------------------------------------
def test_step_boundaries():
    lr = schedules.step(1.0, {10: 0.1, 20: 0.5})
    assert [lr(k) for k in (0, 9, 10, 11, 19, 20, 10**9)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.1, 0.05, 0.05], rel=REL)
    assert lr(10) == 1.0 * 0.1  # at k == boundary the scale applies


def test_step_forms_and_edges():
    pairs = schedules.step(2.0, [(0, 0.5), (5, 3.0)])
    assert pairs(0) == 1.0 and pairs(4) == 1.0 and pairs(5) == 3.0
    assert schedules.step(0.3, {})(100) == 0.3
    assert schedules.step(1.0, {3: 0.0})(3) == 0.0
    assert type(schedules.step(1, {1: 1})(0)) is float


@settings(max_examples=200, deadline=None)
@given(init=lr_values,
       gaps=st.lists(st.integers(1, 1000), max_size=6),
       data=st.data(), k1=st.integers(0, 10_000), k2=st.integers(0, 10_000))
def test_step_matches_product_and_monotone(init, gaps, data, k1, k2):
    bounds = list(np.cumsum(gaps).tolist())
    scales = data.draw(st.lists(fractions, min_size=len(bounds), max_size=len(bounds)))
    lr = schedules.step(init, dict(zip(bounds, scales)))
    for k in (k1, k2):
        expected = init
        for b, s in zip(bounds, scales):
            if k >= b:
                expected *= s
        assert lr(k) == expected
    k1, k2 = min(k1, k2), max(k1, k2)
    assert lr(k2) <= lr(k1)  # scales <= 1


# cosine ---------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5, 1.0])
def test_cosine_closed_form(alpha):
    T = 100
    lr = schedules.cosine(0.2, T, alpha=alpha)
    for k in (0, 1, 25, 50, 75, 99):
        expected = 0.2 * (alpha + (1 - alpha) * 0.5 * (1 + math.cos(math.pi * k / T)))
        assert lr(k) == pytest.approx(expected, rel=REL, abs=1e-17)
    assert lr(0) == pytest.approx(0.2, rel=REL)
    assert lr(50) == pytest.approx(0.2 * (1 + alpha) / 2, rel=REL)
    for k in (T, T + 1, 10**9):
        assert lr(k) == 0.2 * alpha


def test_cosine_is_continuous_at_the_end():
    lr = schedules.cosine(1.0, 1000, alpha=0.1)
    assert abs(lr(999) - lr(1000)) < 1e-5


@settings(max_examples=200, deadline=None)
@given(init=lr_values, T=st.integers(1, 10**6), alpha=fractions, k1=steps, k2=steps)
def test_cosine_monotone_and_bounded(init, T, alpha, k1, k2):
    lr = schedules.cosine(init, T, alpha)
    k1, k2 = min(k1, k2), max(k1, k2)
    a, b = lr(k1), lr(k2)
    assert _non_increasing(a, b)
    assert alpha * init <= b and a <= init * (1 + 1e-15)


# linear_warmup --------------------------------------------------------------
def test_linear_warmup_ramp_then_constant():
    lr = schedules.linear_warmup(4, 1.0)
    assert [lr(k) for k in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    lr = schedules.linear_warmup(10, 2.0, init_value=1.0)
    assert lr(0) == 1.0 and lr(5) == 1.5 and lr(10) == 2.0


def test_linear_warmup_then_sees_shifted_step():
    seen = []

    def then(k):
        seen.append(k)
        return 0.5

    lr = schedules.linear_warmup(5, 1.0, then=then)
    assert lr(4) == pytest.approx(0.8) and seen == []
    assert lr(5) == 0.5 and lr(12) == 0.5
    assert seen == [0, 7]
    lr = schedules.linear_warmup(3, 0.1, then=schedules.cosine(0.1, 10))
    assert lr(3) == pytest.approx(0.1, rel=REL)
    assert lr(8) == pytest.approx(0.05, rel=REL)
    assert lr(13) == 0.0
    assert schedules.linear_warmup(3, 0.1, then=0.02)(3) == 0.02


def test_linear_warmup_zero_steps():
    assert schedules.linear_warmup(0, 0.3)(0) == 0.3
    lr = schedules.linear_warmup(0, 0.3, then=schedules.exponential(0.3, 0.5))
    assert lr(0) == 0.3 and lr(1) == 0.15


def test_linear_warmup_then_callable_is_checked():
    lr = schedules.linear_warmup(2, 1.0, then=lambda k: -1.0)
    assert lr(1) == 0.5
    with pytest.raises(ValueError, match="at step 0 must be finite and >= 0"):
        lr(2)


@settings(max_examples=200, deadline=None)
@given(W=st.integers(1, 10**5), peak=lr_values, frac=fractions,
       k1=st.integers(0, 2 * 10**5), k2=st.integers(0, 2 * 10**5))
def test_linear_warmup_non_decreasing(W, peak, frac, k1, k2):
    init = frac * peak
    lr = schedules.linear_warmup(W, peak, init_value=init)
    k1, k2 = min(k1, k2), max(k1, k2)
    a, b = lr(k1), lr(k2)
    assert a <= b
    assert init <= a and b <= peak
    assert lr(W) == peak
    assert lr(k1) == (pytest.approx(init + (peak - init) * k1 / W, rel=1e-12)
                      if k1 < W else peak)


# join -----------------------------------------------------------------------
def test_join_boundaries_and_shift():
    lr = schedules.join(
        [schedules.constant(1.0), schedules.exponential(0.5, 0.5),
         schedules.linear_warmup(2, 1.0)],
        boundaries=[3, 6])
    got = [lr(k) for k in range(10)]
    assert got == [1.0, 1.0, 1.0, 0.5, 0.25, 0.125, 0.0, 0.5, 1.0, 1.0]


def test_join_single_schedule_and_numbers():
    lr = schedules.join([schedules.cosine(1.0, 10)], [])
    assert lr(5) == schedules.cosine(1.0, 10)(5)
    lr = schedules.join([0.1, 0.01], [100])
    assert lr(99) == 0.1 and lr(100) == 0.01


def test_join_warmup_cosine_is_continuous_and_bounded():
    peak, W, T = 1e-3, 100, 900
    lr = schedules.join([schedules.linear_warmup(W, peak),
                         schedules.cosine(peak, T, alpha=0.01)], [W])
    values = [lr(k) for k in range(W + T + 10)]
    assert max(values) == pytest.approx(peak, rel=REL)
    assert values[W] == pytest.approx(peak, rel=REL)
    assert all(abs(b - a) <= peak / min(W, T) * 2 for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.01 * peak, rel=REL)


def test_join_wraps_user_callables():
    lr = schedules.join([0.1, lambda k: float("nan")], [5])
    assert lr(4) == 0.1
    with pytest.raises(ValueError, match="step 0"):
        lr(5)


# as_schedule ----------------------------------------------------------------
@pytest.mark.parametrize("lr", [0, 1, 0.01, np.float64(0.2), np.float32(0.5), np.int64(2)])
def test_as_schedule_numbers(lr):
    s = schedules.as_schedule(lr)
    v = s(123)
    assert type(v) is float and v == float(lr)


def test_as_schedule_returns_schedules_unchanged():
    s = schedules.cosine(1.0, 10)
    assert schedules.as_schedule(s) is s
    w = schedules.as_schedule(lambda k: 0.1)
    assert schedules.as_schedule(w) is w


def test_as_schedule_wraps_callables_and_converts():
    s = schedules.as_schedule(lambda k: np.float32(0.25) / (k + 1))
    v = s(3)
    assert type(v) is float and v == 0.0625
    s = schedules.as_schedule(lambda k: np.array(0.5))  # 0-d array
    assert s(0) == 0.5 and type(s(0)) is float
    s = schedules.as_schedule(lambda k: 2)  # an int learning rate
    assert s(0) == 2.0 and type(s(0)) is float


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), -float("inf")])
def test_as_schedule_callable_output_checked(bad):
    s = schedules.as_schedule(lambda k: 0.1 if k < 5 else bad)
    assert s(4) == 0.1
    with pytest.raises(ValueError, match=r"as_schedule: the learning rate at step 5 must be finite and >= 0"):
        s(5)


@pytest.mark.parametrize("bad", [True, np.True_, "0.1", None, [0.1]])
def test_as_schedule_callable_output_not_a_number(bad):
    s = schedules.as_schedule(lambda k: bad)
    with pytest.raises(TypeError, match=r"learning rate at step 7 must be a number"):
        s(7)


@pytest.mark.parametrize("lr, exc", [
    (True, TypeError), (False, TypeError), (np.True_, TypeError),
    ("0.1", TypeError), (b"0.1", TypeError), (None, TypeError), ([0.1], TypeError),
    (-1e-3, ValueError), (-1, ValueError), (float("nan"), ValueError),
    (float("inf"), ValueError), (np.float64("nan"), ValueError),
])
def test_as_schedule_rejects(lr, exc):
    with pytest.raises(exc, match=r"schedules\.as_schedule: lr must"):
        schedules.as_schedule(lr)


# steps ----------------------------------------------------------------------
ALL = [
    schedules.constant(0.1),
    schedules.exponential(0.1, 0.5, 10),
    schedules.algebraic(0.1, 0.75),
    schedules.step(0.1, {5: 0.5}),
    schedules.cosine(0.1, 10),
    schedules.linear_warmup(5, 0.1),
    schedules.join([0.1, 0.05], [5]),
    schedules.as_schedule(lambda k: 0.1),
]


@pytest.mark.parametrize("lr", ALL, ids=lambda s: repr(s).split("(")[0])
def test_steps_must_be_non_negative(lr):
    for bad in (-1, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"step k must be >= 0"):
            lr(bad)
    assert type(lr(np.int64(3))) is float  # NumPy steps are fine


def _quarter(k):
    return 0.25


# A wrapped module-level function pickles; a wrapped lambda would not.
@pytest.mark.parametrize("lr", ALL[:-1] + [schedules.as_schedule(_quarter)],
                         ids=lambda s: repr(s).split("(")[0])
def test_pickle_roundtrip_and_immutable(lr):
    clone = pickle.loads(pickle.dumps(lr))
    assert [clone(k) for k in range(20)] == [lr(k) for k in range(20)]
    with pytest.raises(AttributeError):
        lr._init = 1.0


@pytest.mark.parametrize("lr", ALL[:-1], ids=lambda s: repr(s).split("(")[0])
def test_repr_evaluates_to_an_equal_schedule(lr):
    clone = eval(repr(lr), {"schedules": schedules})
    assert repr(clone) == repr(lr)
    assert [clone(k) for k in range(30)] == [lr(k) for k in range(30)]


# validation -----------------------------------------------------------------
@pytest.mark.parametrize("build, exc, match", [
    (lambda: schedules.constant(-1.0), ValueError, r"schedules\.constant: value must be >= 0"),
    (lambda: schedules.constant(True), TypeError, r"schedules\.constant: value must be a real number"),
    (lambda: schedules.constant(math.inf), ValueError, r"schedules\.constant: value must be finite"),
    (lambda: schedules.constant("1"), TypeError, r"schedules\.constant: value"),
    (lambda: schedules.exponential(0.1, 1.5), ValueError,
     r"schedules\.exponential: decay_rate must be in \(0, 1\], got 1\.5"),
    (lambda: schedules.exponential(0.1, 0.0), ValueError, r"schedules\.exponential: decay_rate"),
    (lambda: schedules.exponential(0.1, math.nan), ValueError, r"schedules\.exponential: decay_rate must be finite"),
    (lambda: schedules.exponential(-0.1, 0.5), ValueError, r"schedules\.exponential: init_value must be >= 0"),
    (lambda: schedules.exponential(0.1, 0.5, 0), ValueError, r"schedules\.exponential: transition_steps must be >= 1"),
    (lambda: schedules.exponential(0.1, 0.5, 2.0), TypeError, r"schedules\.exponential: transition_steps must be an int"),
    (lambda: schedules.exponential(0.1, 0.5, True), TypeError, r"schedules\.exponential: transition_steps must be an int"),
    (lambda: schedules.exponential(0.1, 0.5, staircase=1), TypeError, r"schedules\.exponential: staircase must be a bool"),
    (lambda: schedules.exponential(0.1, 0.5, end_value=0.2), ValueError,
     r"schedules\.exponential: end_value is a floor and must be <= init_value"),
    (lambda: schedules.exponential(0.1, 0.5, end_value=-0.01), ValueError, r"schedules\.exponential: end_value must be >= 0"),
    (lambda: schedules.algebraic(0.1, 0.75, k0=0), ValueError, r"schedules\.algebraic: k0 must be > 0"),
    (lambda: schedules.algebraic(0.1, 0.75, k0=math.inf), ValueError, r"schedules\.algebraic: k0 must be finite"),
    (lambda: schedules.algebraic(0.1, "0.75"), TypeError, r"schedules\.algebraic: alpha must be a real number"),
    (lambda: schedules.algebraic(math.nan, 0.75), ValueError, r"schedules\.algebraic: init_value must be finite"),
    (lambda: schedules.step(0.1, {5: -0.5}), ValueError,
     r"schedules\.step: boundaries_and_scales scale at boundary 5 must be >= 0"),
    (lambda: schedules.step(0.1, {10: 0.5, 5: 0.5}), ValueError,
     r"schedules\.step: boundaries_and_scales boundaries must be strictly increasing, got 10 then 5"),
    (lambda: schedules.step(0.1, [(5, 0.5), (5, 0.5)]), ValueError, r"strictly increasing"),
    (lambda: schedules.step(0.1, {-1: 0.5}), ValueError, r"schedules\.step: boundaries_and_scales boundaries\[0\] must be >= 0"),
    (lambda: schedules.step(0.1, {2.5: 0.5}), TypeError, r"schedules\.step: boundaries_and_scales boundaries\[0\] must be an int"),
    (lambda: schedules.step(0.1, {5: True}), TypeError, r"schedules\.step: boundaries_and_scales scale"),
    (lambda: schedules.step(0.1, [(5,)]), TypeError, r"schedules\.step: boundaries_and_scales\[0\] must be a \(boundary, scale\) pair"),
    (lambda: schedules.step(0.1, 5), TypeError, r"schedules\.step: boundaries_and_scales must be a mapping"),
    (lambda: schedules.cosine(0.1, 0), ValueError, r"schedules\.cosine: decay_steps must be >= 1"),
    (lambda: schedules.cosine(0.1, 10.0), TypeError, r"schedules\.cosine: decay_steps must be an int"),
    (lambda: schedules.cosine(0.1, 10, alpha=1.5), ValueError, r"schedules\.cosine: alpha must be in \[0, 1\]"),
    (lambda: schedules.cosine(0.1, 10, alpha=-0.1), ValueError, r"schedules\.cosine: alpha must be in \[0, 1\]"),
    (lambda: schedules.linear_warmup(-1, 0.1), ValueError, r"schedules\.linear_warmup: warmup_steps must be >= 0"),
    (lambda: schedules.linear_warmup(10, -0.1), ValueError, r"schedules\.linear_warmup: peak_value must be >= 0"),
    (lambda: schedules.linear_warmup(10, 0.1, init_value=math.inf), ValueError,
     r"schedules\.linear_warmup: init_value must be finite"),
    (lambda: schedules.linear_warmup(10, 0.1, then="cosine"), TypeError, r"schedules\.linear_warmup: then must be"),
    (lambda: schedules.linear_warmup(10, 0.1, then=-1.0), ValueError, r"schedules\.linear_warmup: then must be >= 0"),
    (lambda: schedules.join([], []), ValueError, r"schedules\.join: schedules must not be empty"),
    (lambda: schedules.join(0.1, []), TypeError, r"schedules\.join: schedules must be a list"),
    (lambda: schedules.join([0.1, 0.2], []), ValueError, r"schedules\.join: boundaries must have len\(schedules\) - 1 = 1"),
    (lambda: schedules.join([0.1, 0.2], 5), TypeError, r"schedules\.join: boundaries must be a list"),
    (lambda: schedules.join([0.1, 0.2], [0]), ValueError, r"schedules\.join: boundaries\[0\] must be >= 1"),
    (lambda: schedules.join([0.1, 0.2, 0.3], [5, 5]), ValueError, r"schedules\.join: boundaries must be strictly increasing"),
    (lambda: schedules.join([0.1, "x"], [5]), TypeError, r"schedules\.join: schedules\[1\] must be"),
    (lambda: schedules.join([0.1, -0.2], [5]), ValueError, r"schedules\.join: schedules\[1\] must be >= 0"),
])
def test_validation_names_the_argument(build, exc, match):
    with pytest.raises(exc, match=match):
        build()
