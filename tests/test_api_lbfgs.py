"""fastopt.optim.lbfgs: SciPy's L-BFGS-B on flat arrays and FlatParams, in place."""
from __future__ import annotations

import numpy as np
import pytest

from fastopt import FlatParams
from fastopt.optim import lbfgs


def _quadratic(n=6, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, n))
    a = q @ q.T + n * np.eye(n)  # symmetric positive definite
    b = rng.standard_normal(n)
    return a, b, np.linalg.solve(a, b)


def test_quadratic_reaches_the_closed_form_minimiser():
    a, b, x_star = _quadratic()
    x = np.zeros(6)
    res = lbfgs(lambda p: (0.5 * p @ a @ p - b @ p, a @ p - b), x)
    assert res.success, res.message
    np.testing.assert_allclose(x, x_star, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(x, res.x)  # the caller's buffer holds the result
    assert res.fun == pytest.approx(-0.5 * b @ x_star, rel=1e-12)


def test_fun_and_grad_sees_the_trial_point_in_the_callers_buffer():
    a, b, _ = _quadratic(3)
    x = np.ones(3)
    seen = []

    def fg(p):
        assert p is x  # the same buffer, holding the trial point
        seen.append(p.copy())
        return 0.5 * p @ a @ p - b @ p, a @ p - b

    lbfgs(fg, x, max_iter=5)
    assert len(seen) >= 2
    assert not np.array_equal(seen[0], seen[-1])


def _rosenbrock(p):
    x, y = p[0], p[1]
    f = (1 - x) ** 2 + 100 * (y - x * x) ** 2
    g = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
    return f, g


def test_rosenbrock_converges_to_one_one():
    x = np.array([-1.2, 1.0])
    res = lbfgs(_rosenbrock, x, max_iter=500)
    assert res.success, res.message
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-6)
    assert res.fun < 1e-12


def test_flatparams_with_two_named_arrays():
    rng = np.random.default_rng(1)
    target_w = rng.standard_normal((2, 3))
    target_b = rng.standard_normal(3)
    params = FlatParams({"W": np.zeros((2, 3)), "b": np.zeros(3)})
    buffer = params.data
    calls = []

    def fg(p):
        calls.append(1)
        assert p is params
        grads = p.zeros_like()
        grads["W"][...] = 2 * (p["W"] - target_w)
        grads["b"][...] = 4 * (p["b"] - target_b)
        loss = np.sum((p["W"] - target_w) ** 2) + 2 * np.sum((p["b"] - target_b) ** 2)
        return loss, grads

    res = lbfgs(fg, params)
    assert res.success
    np.testing.assert_allclose(params["W"], target_w, atol=1e-8)
    np.testing.assert_allclose(params["b"], target_b, atol=1e-8)
    assert params.data is buffer  # updated in place, no new buffer
    assert len(calls) == res.nfev


def test_flatparams_two_dtypes():
    params = FlatParams({"a": np.zeros(2, np.float32), "b": np.zeros(2)})
    ta = np.array([1.5, -0.5], np.float32)
    tb = np.array([3.0, 2.0])

    def fg(p):
        g = p.zeros_like()
        g["a"][...] = 2 * (p["a"] - ta)
        g["b"][...] = 2 * (p["b"] - tb)
        return float(np.sum((p["a"] - ta) ** 2) + np.sum((p["b"] - tb) ** 2)), g

    lbfgs(fg, params)
    assert params["a"].dtype == np.float32
    np.testing.assert_allclose(params["a"], ta, atol=1e-6)
    np.testing.assert_allclose(params["b"], tb, atol=1e-8)


def test_float32_flat_array_keeps_dtype():
    x = np.array([4.0, -3.0], np.float32)
    lbfgs(lambda p: (float(p.astype(np.float64) @ p), 2 * p), x)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, 0.0, atol=1e-6)


def test_callback_gets_increasing_iteration_numbers():
    x = np.array([-1.2, 1.0])
    seen = []
    res = lbfgs(_rosenbrock, x, callback=lambda it, loss: seen.append((it, loss)))
    iters = [it for it, _ in seen]
    assert iters == list(range(1, len(iters) + 1))
    assert len(iters) == res.nit
    assert all(isinstance(loss, float) for _, loss in seen)
    losses = [loss for _, loss in seen]
    assert all(b <= a for a, b in zip(losses, losses[1:]))  # L-BFGS-B's line search decreases f
    assert losses[-1] == pytest.approx(res.fun)


def test_max_iter_limits_iterations():
    x = np.array([-1.2, 1.0])
    seen = []
    res = lbfgs(_rosenbrock, x, max_iter=3, callback=lambda it, loss: seen.append(it))
    assert res.nit <= 3 and len(seen) <= 3
    assert not np.allclose(x, 1.0, atol=1e-3)
    np.testing.assert_array_equal(x, res.x)


@pytest.mark.parametrize("n_grad", [1, 3])
def test_bad_gradient_size_raises(n_grad):
    x = np.zeros(2)
    with pytest.raises(ValueError, match=rf"lbfgs: fun_and_grad returned a gradient of {n_grad} values "
                                         r"for 2 parameters"):
        lbfgs(lambda p: (0.0, np.zeros(n_grad)), x)


def test_bad_gradient_layout_for_flatparams_raises():
    params = FlatParams({"a": np.zeros(2), "b": np.zeros(3)})
    with pytest.raises(ValueError, match=r"gradient of 2 values for 5 parameters"):
        lbfgs(lambda p: (0.0, FlatParams({"a": np.zeros(2)})), params)


def test_not_callable():
    with pytest.raises(TypeError, match=r"lbfgs: fun_and_grad must be callable"):
        lbfgs("f", np.zeros(2))


@pytest.mark.parametrize("make, exc, msg", [
    (lambda: np.zeros(4)[::2], ValueError, r"lbfgs: params must be C-contiguous"),
    (lambda: np.zeros(3, np.int64), TypeError, r"lbfgs: params must be float32 or float64"),
    (lambda: [0.0, 1.0], TypeError, r"lbfgs: params must live on the CPU"),
], ids=["strided", "int", "list"])
def test_bad_params(make, exc, msg):
    with pytest.raises(exc, match=msg):
        lbfgs(lambda p: (0.0, np.zeros(2)), make())


def test_read_only_params():
    x = np.zeros(2)
    x.flags.writeable = False
    with pytest.raises(ValueError, match=r"lbfgs: params is read-only"):
        lbfgs(lambda p: (0.0, np.zeros(2)), x)


@pytest.mark.parametrize("kw, value", [("max_iter", 0), ("history", 0), ("max_eval", 0), ("max_iter", float("nan"))])
def test_bad_limits(kw, value):
    with pytest.raises(ValueError, match=rf"lbfgs: {kw} must be"):
        lbfgs(lambda p: (0.0, np.zeros(2)), np.zeros(2), **{kw: value})
