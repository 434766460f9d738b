"""The public functional steps against the float64 reference: optimisers x options x dtypes x backends.

Oracle: the same public function with ``backend="reference"`` on float64 copies of the
same inputs, driven by the same host scalars (see ``tests/conftest.py`` for the
registry, the driver and the tolerance ``K eps max|x| sqrt(steps)``).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastopt
from tests.conftest import (ALGO_BY_NAME, ALGOS, BLOCK, DTYPES, ONE_PER_KERNEL, OPTIONS, PARALLEL_MIN_SIZE, REGISTRY_SIZE,
                            F64, algo_params, assert_close, assert_runs_match, backend_params, initial_state,
                            make_problem, option_kwargs, require_backend, run_oracle, run_public, state_bytes,
                            step_once, to_device, to_host)

STEPS = 20
dtype_params = [pytest.param(d, id=np.dtype(d).name) for d in DTYPES]


# ------------------------------------------------------------------ the registry
@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("algo", algo_params())
def test_registry_matches_reference(algo, option, dtype, backend, optim_rng):
    """20 steps: parameters, every state buffer and the StepInfos agree with the float64 oracle."""
    require_backend(backend)
    p0, grads = make_problem(optim_rng, REGISTRY_SIZE, STEPS, dtype, option)
    kw = option_kwargs(option, algo, REGISTRY_SIZE)
    run = run_public(algo, backend=backend, p0=p0, grads=grads, **kw)
    oracle = run_oracle(algo, p0=p0, grads=grads, **kw)
    assert np.any(oracle.p != p0.astype(F64)), "the problem must move the parameters"
    if option == "skip_nonfinite":
        assert [i.applied for i in run.infos].count(False) == 3
        assert run.step == STEPS - 3
    if option.startswith("segments"):
        lo, hi = option_kwargs(option, algo, REGISTRY_SIZE)["segments"][3:5]  # the lr = 0 segment
        np.testing.assert_array_equal(run.p[lo:hi], p0[lo:hi], err_msg="lr = 0 must leave its segment alone")
    assert_runs_match(run, oracle, dtype=dtype, steps=STEPS, what=f"{algo.name}/{option}")


def _straddling_segments(n):
    """Offsets cutting blocks and the parallel threshold, with an empty segment."""
    cuts = {n // 3, BLOCK - 1, BLOCK + 1, 3 * BLOCK, PARALLEL_MIN_SIZE - 1}
    cuts = sorted(c for c in cuts if 0 < c < n)
    return [0] + cuts[:1] + cuts + [n]  # the first cut twice: an empty segment


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("n", [BLOCK + 1, PARALLEL_MIN_SIZE + 7])
@pytest.mark.parametrize("algo", algo_params(ONE_PER_KERNEL))
def test_sizes_straddling_block_and_threshold(algo, n, dtype, optim_rng):
    """Blocks cut by segments, and the threaded path (n > PARALLEL_MIN_SIZE) with clipping.

    This test is about the work split, so its data is well conditioned by construction:
    with 1e5 random elements some would otherwise sit where float32 itself cannot
    resolve the update (``g + l2 p`` cancelling, or centred RMSprop's ``sq - gavg^2``
    cancelling for near-equal gradients), and the error there is the problem's, not the
    kernel's. Here |g| >= 0.5 dominates l2 |p| <= 0.15, and g_k = (1 + k/2) g_0 keeps
    sq / (sq - gavg^2) close to 1. Conditioning-sensitive data is exercised at smaller
    sizes by the registry tests above.
    """
    steps = 3
    p0 = np.clip(optim_rng.standard_normal(n), -3, 3).astype(dtype)
    g0 = optim_rng.uniform(0.5, 2.0, n) * optim_rng.choice([-1.0, 1.0], n)
    grads = [((1 + k / 2) * g0).astype(dtype) for k in range(steps)]
    bounds = _straddling_segments(n)
    n_seg = len(bounds) - 1
    kw = dict(segments=bounds, lr=[algo.lr * (1 + s % 3) for s in range(n_seg)],
              weight_decay=[0.01 * s for s in range(n_seg)], max_grad_norm=0.5 * math.sqrt(n))
    run = run_public(algo, backend="cpu", p0=p0, grads=grads, **kw)
    oracle = run_oracle(algo, p0=p0, grads=grads, **kw)
    assert_runs_match(run, oracle, dtype=dtype, steps=steps, what=f"{algo.name} n={n}")


# ------------------------------------------------------------------ zero-size buffers
@pytest.mark.parametrize("backend", backend_params(include_reference=True))
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("algo", algo_params())
def test_zero_size(algo, dtype, backend):
    """An empty buffer is a valid model: applied, norm 0, with several (empty) segments too."""
    require_backend(backend)
    p0 = np.zeros(0, dtype)
    g = np.zeros(0, dtype)
    for kw in (dict(lr=algo.lr),
               dict(lr=algo.lr, max_grad_norm=1.0, skip_nonfinite=True),
               dict(lr=[algo.lr, 0.5], weight_decay=[0.1, 0.0], segments=[0, 0, 0], max_grad_norm=2.0)):
        run = run_public(algo, backend=backend, p0=p0, grads=[g, g], **kw)
        assert [i.applied for i in run.infos] == [True, True]
        expected_norm = 0.0 if "max_grad_norm" in kw else None
        assert [i.grad_norm for i in run.infos] == [expected_norm, expected_norm]
        assert run.p.shape == (0,) and run.p.dtype == dtype
        assert all(v.shape == (0,) and v.dtype == dtype for v in run.state.values())


# ------------------------------------------------------------------ skip_nonfinite
def _random_state(algo, p, rng):
    """Non-trivial state (positive second moments, sq >= gavg^2) so any write is visible."""
    state = initial_state(algo, p)
    for name, a in state.items():
        a[...] = rng.standard_normal(a.size).astype(a.dtype)
        if name in ("v", "vmax", "sq", "ssum"):
            a[...] = np.abs(a) + 1.0
    if "gavg" in state:
        state["gavg"][...] = 0.5 * np.minimum(np.abs(state["gavg"]), 1.0)
    return state


@pytest.mark.parametrize("backend", backend_params(include_reference=True))
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("algo", algo_params())
def test_skip_nonfinite_touches_nothing(algo, bad, dtype, backend, optim_rng):
    """A NaN/inf in g: StepInfo(applied=False), every buffer byte-for-byte unchanged, norm not finite."""
    require_backend(backend)
    n = 777
    p = optim_rng.standard_normal(n).astype(dtype)
    g = optim_rng.standard_normal(n).astype(dtype)
    g[n // 2] = bad
    state = _random_state(algo, p, optim_rng)
    for extra in (dict(), dict(max_grad_norm=1.0, grad_scale=4.0, weight_decay=0.1, maximize=True)):
        dp, dg = to_device(p, backend), to_device(g, backend)
        dstate = {k: to_device(v.copy(), backend) for k, v in state.items()}
        before = state_bytes(dp, dg, dstate)
        info, _ = step_once(algo, dp, dg, dstate, step=3, mu_product=0.5, backend=backend, lr=algo.lr,
                            skip_nonfinite=True, **extra)
        assert info.applied is False
        assert info.grad_norm is not None and not math.isfinite(info.grad_norm)
        assert math.isnan(info.grad_norm) if np.isnan(bad) else info.grad_norm == math.inf
        assert state_bytes(dp, dg, dstate) == before


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("where", ["first", "last"])
def test_skip_nonfinite_threaded_reduction(where, dtype, optim_rng):
    """Above the parallel threshold the non-finite value is found in any block."""
    algo = next(a for a in ALGOS if a.name == "adam")
    n = PARALLEL_MIN_SIZE + 7
    p = optim_rng.standard_normal(n).astype(dtype)
    g = optim_rng.standard_normal(n).astype(dtype)
    g[0 if where == "first" else n - 1] = np.nan
    state = _random_state(algo, p, optim_rng)
    before = state_bytes(p, g, state)
    info, _ = step_once(algo, p, g, state, step=2, mu_product=1.0, lr=1e-3, skip_nonfinite=True,
                        max_grad_norm=1.0)
    assert info.applied is False and math.isnan(info.grad_norm)
    assert state_bytes(p, g, state) == before


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("algo", algo_params(ONE_PER_KERNEL))
def test_skip_nonfinite_applies_finite_steps(algo, dtype, optim_rng):
    """skip_nonfinite=True with a finite g is the same step as without it (bit for bit)."""
    p0, grads = make_problem(optim_rng, 500, 3, dtype)
    a = run_public(algo, backend="cpu", p0=p0, grads=grads, lr=algo.lr, skip_nonfinite=True)
    b = run_public(algo, backend="cpu", p0=p0, grads=grads, lr=algo.lr)
    assert all(i.applied and math.isfinite(i.grad_norm) for i in a.infos)
    assert all(i.applied and i.grad_norm is None for i in b.infos)
    assert a.p.tobytes() == b.p.tobytes()
    assert {k: v.tobytes() for k, v in a.state.items()} == {k: v.tobytes() for k, v in b.state.items()}


# ------------------------------------------------------------------ grad_norm and clipping
@pytest.mark.parametrize("backend", backend_params(include_reference=True))
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("n", [1, 5, BLOCK + 3, PARALLEL_MIN_SIZE + 7])
@pytest.mark.parametrize("grad_scale", [1.0, 8.0])
def test_grad_norm_reported(grad_scale, n, dtype, backend, optim_rng):
    """StepInfo.grad_norm = ||g||_2 / grad_scale (computed in float64), whichever option asked for it."""
    require_backend(backend)
    g = (optim_rng.standard_normal(n) * 10.0 ** optim_rng.uniform(-3, 3, n)).astype(dtype)
    expected = np.linalg.norm(g.astype(F64)) / grad_scale
    for kw in (dict(max_grad_norm=1e-3), dict(max_grad_norm=1e30), dict(skip_nonfinite=True)):
        p = to_device(np.ones(n, dtype), backend)
        info = fastopt.sgd_step(p, to_device(g, backend), lr=0.1, grad_scale=grad_scale, backend=backend, **kw)
        assert info.applied
        assert info.grad_norm == pytest.approx(expected, rel=1e-12)
    info = fastopt.sgd_step(to_device(np.ones(n, dtype), backend), to_device(g, backend), lr=0.1,
                            grad_scale=grad_scale, backend=backend)
    assert info.grad_norm is None  # not computed when nothing needs it


@pytest.mark.parametrize("backend", backend_params(include_reference=True))
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("grad_scale", [1.0, 4.0])
@pytest.mark.parametrize("algo", algo_params())
def test_clipping_equals_prescaled_gradient(algo, grad_scale, dtype, backend, optim_rng):
    """max_grad_norm=c gives the step of g * min(1, c / (||g / grad_scale|| + 1e-6)), without clipping."""
    require_backend(backend)
    n, steps = 300, 4
    p0, grads = make_problem(optim_rng, n, steps, dtype)
    grads = [g * dtype(s) for g, s in zip(grads, (1.0, 0.01, 3.0, 1.0))]  # some clipped, some not
    max_norm = 2.0
    factors = [min(1.0, max_norm / (np.linalg.norm(g.astype(F64)) / grad_scale + 1e-6)) for g in grads]
    assert min(factors) < 0.5 and max(factors) == 1.0, "both regimes must occur"
    clipped = run_public(algo, backend=backend, p0=p0, grads=grads, lr=algo.lr, grad_scale=grad_scale,
                         max_grad_norm=max_norm)
    prescaled = run_public(algo, backend=backend, p0=p0, grads=[g * dtype(f) for g, f in zip(grads, factors)],
                           lr=algo.lr, grad_scale=grad_scale)
    for info, g in zip(clipped.infos, grads):
        assert info.grad_norm == pytest.approx(np.linalg.norm(g.astype(F64)) / grad_scale, rel=1e-12)
    # One extra rounding (g * factor in the dtype) separates the two runs.
    assert_close(clipped.p, prescaled.p, dtype=dtype, steps=steps, what="p")
    for name in clipped.state:
        assert_close(clipped.state[name], prescaled.state[name], dtype=dtype, steps=steps, what=name)


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("algo", algo_params(ONE_PER_KERNEL))
def test_inactive_clipping_is_bit_identical(algo, dtype, optim_rng):
    """A max_grad_norm above ||g|| changes nothing at all."""
    p0, grads = make_problem(optim_rng, 400, 3, dtype)
    a = run_public(algo, backend="cpu", p0=p0, grads=grads, lr=algo.lr, max_grad_norm=1e6)
    b = run_public(algo, backend="cpu", p0=p0, grads=grads, lr=algo.lr)
    assert a.p.tobytes() == b.p.tobytes()
    assert {k: v.tobytes() for k, v in a.state.items()} == {k: v.tobytes() for k, v in b.state.items()}


# ------------------------------------------------------------------ per-segment scalars
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("algo", algo_params(ONE_PER_KERNEL))
def test_segments_equal_separate_calls(algo, dtype, optim_rng):
    """One call over several segments equals one call per segment (each with its own lr / wd)."""
    n, steps = REGISTRY_SIZE, 3
    p0, grads = make_problem(optim_rng, n, steps, dtype)
    kw = option_kwargs("segments_decoupled", algo, n)
    whole = run_public(algo, backend="cpu", p0=p0, grads=grads, **kw)
    bounds = kw["segments"]
    for s in range(len(bounds) - 1):
        lo, hi = bounds[s], bounds[s + 1]
        part = run_public(algo, backend="cpu", p0=p0[lo:hi], grads=[g[lo:hi] for g in grads], lr=kw["lr"][s],
                          weight_decay=kw["weight_decay"][s], decoupled_weight_decay=True)
        assert whole.p[lo:hi].tobytes() == part.p.tobytes(), f"segment {s}"
        for name in whole.state:
            assert whole.state[name][lo:hi].tobytes() == part.state[name].tobytes(), f"segment {s} {name}"


# ------------------------------------------------------------------ float32 moment weights
@pytest.mark.parametrize("algo_name,hyper,state,weight", [
    ("adam", dict(beta2=0.999), "v", 1 - 0.999),
    ("nadam", dict(beta2=0.999), "v", 1 - 0.999),
    ("adam", dict(beta2=0.9999), "v", 1 - 0.9999),
    ("rmsprop", dict(alpha=0.99), "sq", 1 - 0.99),
    ("rmsprop_centered", dict(alpha=0.99), "gavg", 1 - 0.99),
    ("lion", dict(beta2=0.99), "m", 1 - 0.99),
    ("adam", dict(beta1=0.99), "m", 1 - 0.99),
], ids=["adam-v-0.999", "nadam-v-0.999", "adam-v-0.9999", "rmsprop-sq-0.99", "rmsprop-gavg-0.99",
        "lion-m-0.99", "adam-m-0.99"])
def test_float32_first_moment_update_weights(algo_name, hyper, state, weight):
    """One float32 step from zero state: v = (1 - beta2) g^2 (and the like) to 2 ulps.

    The weight 1 - beta is a hyperparameter of the user's (0.001 for beta2 = 0.999); the
    float32 result may round it once (half an ulp) and round the product once more,
    nothing else. Computing it as ``1 - float32(beta)`` turns beta's own rounding error
    (<= eps/2 * beta) into a relative error eps/2 * beta / (1 - beta) of the weight:
    ~110 ulps for 0.999, ~1100 for 0.9999.
    """
    algo = ALGO_BY_NAME[algo_name]
    g = np.array([1.0, -3.0, 0.5, 1e-3, 7.0], dtype=np.float32)
    run = run_public(algo, backend="cpu", p0=np.zeros_like(g), grads=[g], lr=algo.lr, **hyper)
    exact = weight * g.astype(F64) ** (2 if state in ("v", "sq") else 1)
    rel = np.abs(run.state[state].astype(F64) / exact - 1.0)
    assert np.max(rel) <= 2 * np.finfo(np.float32).eps, (
        f"{state} after one step is off by {np.max(rel):.3g} relative "
        f"({np.max(rel) / np.finfo(np.float32).eps:.0f} ulps) from (1 - beta) g{'^2' if state in ('v', 'sq') else ''}")
