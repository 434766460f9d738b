"""Hypothesis properties of the fused optimiser steps.

Sizes 0..3000, finite values from subnormal to 1e100 in magnitude, hyperparameters over
their whole valid ranges. Each property is bounded (``max_examples`` <= 50, no deadline:
the first example may compile).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastopt
from tests.conftest import F32, F64

SETTINGS = settings(max_examples=50, deadline=None)
MAX_N = 3000


dtypes = pytest.mark.parametrize("dtype", [pytest.param(F32, id="float32"), pytest.param(F64, id="float64")])


def _bound(dtype, max_magnitude):
    """``max_magnitude`` as a value of ``dtype`` (hypothesis wants representable bounds)."""
    return float(np.dtype(dtype).type(max_magnitude))


def _values(dtype, max_magnitude):
    """Finite values: zeros, subnormals, tiny, ordinary and large magnitudes."""
    width = 32 if dtype == F32 else 64
    m = _bound(dtype, max_magnitude)
    return st.floats(min_value=-m, max_value=m, allow_nan=False, allow_infinity=False, width=width)


@st.composite
def arrays(draw, dtype, n, max_magnitude=1e100):
    """An array of ``n`` finite values: per-array magnitude scale plus hypothesis' own edge values."""
    scale = draw(st.sampled_from([1e-300, 1e-30, 1e-8, 1.0, 1e8, 1e30, max_magnitude]))
    bound = _bound(dtype, max_magnitude)
    scale = min(scale, bound)
    seed = draw(st.integers(0, 2**32 - 1))
    base = np.random.default_rng(seed).standard_normal(n) * scale
    base = np.clip(base, -bound, bound).astype(dtype)
    special = draw(hnp.arrays(dtype, n, elements=_values(dtype, max_magnitude), fill=st.nothing())
                   if n <= 64 else st.just(None))
    if special is not None and draw(st.booleans()):
        base = special
    return np.ascontiguousarray(base)


sizes = st.integers(min_value=0, max_value=MAX_N)
betas = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
lrs = st.floats(min_value=0.0, max_value=1.0)
eps_values = st.floats(min_value=1e-12, max_value=1.0)
decays = st.floats(min_value=0.0, max_value=1.0)


def _assert_rel(actual, expected, prev, *, rtol, what):
    """Element-wise ``|a - e| <= rtol (|prev| + |e - prev| + |e|)`` (+ a subnormal floor).

    The scale is the size of the operands of the update (old value and increment),
    so a result that cancels to ~0 is judged against what was cancelled.
    """
    a, e, q = (np.asarray(x, F64) for x in (actual, expected, prev))
    assert np.array_equal(np.isfinite(a), np.isfinite(e)), f"{what}: finiteness differs"
    fin = np.isfinite(e)
    a, e, q = a[fin], e[fin], q[fin]
    scale = np.abs(q) + np.abs(e - q) + np.abs(e)
    bad = np.abs(a - e) > rtol * scale + 1e-300
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements differ, e.g. actual {a[bad][0]!r} expected "
                           f"{e[bad][0]!r} (prev {q[bad][0]!r})")


# ------------------------------------------------------------------ cpu vs reference
@SETTINGS
@given(data=st.data(), n=sizes, steps=st.integers(1, 3), lr=lrs, beta1=betas, beta2=betas, eps=eps_values,
       wd=decays, decoupled=st.booleans(), amsgrad=st.booleans(), maximize=st.booleans())
def test_adam_cpu_matches_reference_float64(data, n, steps, lr, beta1, beta2, eps, wd, decoupled, amsgrad,
                                            maximize):
    p = data.draw(arrays(F64, n), label="p")
    grads = [data.draw(arrays(F64, n), label=f"g{k}") for k in range(steps)]
    bufs = {b: [p.copy(), np.zeros(n), np.zeros(n), np.zeros(n)] for b in ("cpu", "reference")}
    for k, g in enumerate(grads, 1):
        prev = [x.copy() for x in bufs["reference"]]
        for backend, (pp, m, v, vmax) in bufs.items():
            fastopt.adam_step(pp, g, m, v, step=k, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd,
                              decoupled_weight_decay=decoupled, amsgrad=amsgrad, vmax=vmax, maximize=maximize,
                              backend=backend)
        for name, a, e, q in zip(("p", "m", "v", "vmax"), bufs["cpu"], bufs["reference"], prev):
            _assert_rel(a, e, q, rtol=1e-12, what=f"step {k} {name}")
        # Each step is judged from the same state: the tolerance scales with this step's operands,
        # and a last-ulp difference left by an earlier step's cancellation (m = 40 from terms of
        # 1e7: hypothesis found one) is not this step's error.
        for a, e in zip(bufs["cpu"], bufs["reference"]):
            a[...] = e


@SETTINGS
@given(data=st.data(), n=sizes, lr=lrs, alpha=st.one_of(st.just(0.0), st.floats(0.01, 0.999)),
       centered=st.booleans(),
       momentum=betas, eps=eps_values, wd=decays)
def test_rmsprop_cpu_matches_reference_float64(data, n, lr, alpha, centered, momentum, eps, wd):
    # alpha in (0, 0.01) is left out: there the centred sq - gavg^2 = alpha (1 - alpha) g^2 is
    # below the rounding of its terms, and sqrt of a rounding-sized (maybe negative) value
    # is ill-conditioned in any implementation.
    p = data.draw(arrays(F64, n, max_magnitude=1e100), label="p")
    g = data.draw(arrays(F64, n, max_magnitude=1e100), label="g")
    out = {}
    for backend in ("cpu", "reference"):
        pp, sq, gavg, buf = p.copy(), np.zeros(n), np.zeros(n), np.zeros(n)
        fastopt.rmsprop_step(pp, g, sq, lr=lr, alpha=alpha, eps=eps, centered=centered, gavg=gavg,
                             momentum=momentum, buf=buf, weight_decay=wd, backend=backend)
        out[backend] = (pp, sq, gavg, buf)
    for name, a, e, q in zip(("p", "sq", "gavg", "buf"), out["cpu"], out["reference"], (p, 0, 0, 0)):
        _assert_rel(a, e, np.broadcast_to(q, e.shape), rtol=1e-12, what=name)


# ------------------------------------------------------------------ invariants
@dtypes
@SETTINGS
@given(data=st.data(), n=sizes, wd=decays, decoupled=st.booleans(),
       maximize=st.booleans(), scale=st.floats(1e-3, 1e3), n_seg=st.integers(1, 4))
def test_sgd_with_zero_lr_leaves_p_unchanged(data, n, dtype, wd, decoupled, maximize, scale, n_seg):
    # |p|, |g| <= 1e30 keep g / scale + wd p finite: 0 * inf would be NaN.
    p = data.draw(arrays(dtype, n, max_magnitude=1e30), label="p")
    g = data.draw(arrays(dtype, n, max_magnitude=1e30), label="g")
    cuts = sorted(data.draw(st.lists(st.integers(0, n), min_size=n_seg - 1, max_size=n_seg - 1), label="cuts"))
    before = p.copy()
    info = fastopt.sgd_step(p, g, lr=[0.0] * n_seg, weight_decay=wd, decoupled_weight_decay=decoupled,
                            maximize=maximize, grad_scale=scale, segments=[0, *cuts, n])
    assert info.applied
    np.testing.assert_array_equal(p, before)  # values (a -0.0 may become +0.0)


#: Typical decay rates first, then anything in [0, 1) (hypothesis favours the ends).
typical_betas = st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]), betas)
FIRST_STEP = dict(n=6, seed=0, p_scale=0.0, g_scale=1.0, lr=1e-3, eps=1e-8, maximize=False)


@dtypes
@SETTINGS
@given(n=st.integers(1, MAX_N), seed=st.integers(0, 2**32 - 1),
       p_scale=st.sampled_from([0.0, 1e-30, 1e-8, 1.0, 1e8]), g_scale=st.sampled_from([1e-30, 1e-8, 1.0, 1e8]),
       lr=st.floats(1e-6, 1.0), beta1=typical_betas, beta2=typical_betas, eps=st.floats(1e-12, 1e-8),
       maximize=st.booleans())
# PyTorch's defaults, and decay rates within float32 rounding of 1 (valid: beta < 1 is all that is asked).
@example(beta1=0.9, beta2=0.999, **FIRST_STEP)
@example(beta1=0.9, beta2=0.9999, **FIRST_STEP)
@example(beta1=0.9, beta2=0.9999999999999998, **FIRST_STEP)
@example(beta1=0.9999999999999998, beta2=0.999, **FIRST_STEP)
def test_adam_first_step_moves_by_lr(n, seed, p_scale, g_scale, dtype, lr, beta1, beta2, eps, maximize):
    """Step 1 of Adam: m_hat = g and v_hat = g^2, so p moves by lr g / (|g| + eps): at most lr,
    and ~lr where |g| >> eps."""
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * p_scale).astype(dtype)
    g = (rng.standard_normal(n) * g_scale).astype(dtype)
    before = p.astype(F64)
    fastopt.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                      maximize=maximize)
    dp = p.astype(F64) - before
    # the new p is rounded to the dtype: half a spacing of |p| on top of the step
    ulp = np.spacing(np.maximum(np.abs(before), np.abs(p.astype(F64))).astype(dtype)).astype(F64)
    assert np.all(np.abs(dp) <= lr * (1 + 1e-6) + ulp), (
        f"max |dp| / lr = {np.max(np.abs(dp) / lr):.9g} (betas {beta1!r}, {beta2!r}, {np.dtype(dtype).name})")
    g64 = g.astype(F64)
    big = np.abs(g64) > 1e6 * eps
    sign = -1.0 if maximize else 1.0
    moved = -sign * np.sign(g64[big]) * dp[big]
    assert np.all(moved >= lr * (1 - 1e-5) - ulp[big]), (
        f"coordinates with |g| >> eps move by ~lr downhill; min moved / lr = {np.min(moved / lr, initial=1):.9g}"
        f" (betas {beta1!r}, {beta2!r}, {np.dtype(dtype).name})")


@dtypes
@SETTINGS
@given(data=st.data(), n=st.integers(1, MAX_N), lr=st.floats(1e-6, 1.0),
       beta1=st.floats(0.0, 0.999), beta2=betas, maximize=st.booleans(), steps=st.integers(1, 3))
def test_lion_moves_every_coordinate_by_exactly_lr(data, n, dtype, lr, beta1, beta2, maximize, steps):
    """Without decay, each coordinate with c != 0 moves by lr sign(c): p_new == p - lr sign(c) in the dtype."""
    p = data.draw(arrays(dtype, n, max_magnitude=1e10), label="p")
    m = np.zeros_like(p)
    for k in range(steps):
        g = data.draw(arrays(dtype, n, max_magnitude=1e10), label=f"g{k}")
        ge = (-g if maximize else g).astype(F64)
        c = m.astype(F64) + (1.0 - beta1) * (ge - m.astype(F64))  # the interpolated momentum, in float64
        # coordinates whose sign is unambiguous (not decided by the last bits of c)
        clear = np.abs(c) > 1e-4 * (np.abs(m.astype(F64)) + np.abs(ge)) + 1e-30
        before, m_before = p.copy(), m.copy()
        fastopt.lion_step(p, g, m, lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, maximize=maximize)
        lr_d = dtype(lr)
        expected = (before - lr_d * np.sign(c).astype(dtype)).astype(dtype)  # one rounding, as the kernel
        np.testing.assert_array_equal(p[clear], expected[clear])
        assert np.all(np.abs(p.astype(F64) - before)[clear & (before == 0)] == lr_d), "from 0: exactly lr"
        still = (m_before == 0) & (ge == 0)  # c = 0 in any formula, and sign(0) = 0: no move
        np.testing.assert_array_equal(p[still], before[still])


@dtypes
@SETTINGS
@given(data=st.data(), n=st.integers(0, MAX_N), scale=st.floats(1e-3, 1e3))
def test_grad_norm_matches_numpy(data, n, dtype, scale):
    g = data.draw(arrays(dtype, n, max_magnitude=1e100 if dtype == F64 else 1e30), label="g")
    info = fastopt.sgd_step(np.zeros(n, dtype), g, lr=0.0, grad_scale=scale, skip_nonfinite=True)
    expected = np.linalg.norm(g.astype(F64)) / scale
    assert info.applied
    if n == 0:
        assert info.grad_norm == 0.0
    assert math.isclose(info.grad_norm, expected, rel_tol=1e-12, abs_tol=1e-300)
