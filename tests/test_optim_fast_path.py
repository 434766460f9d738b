"""The optimiser classes' fast path (``Optimizer._fast_step``): same bits as the checked path, and
every check still runs whenever something could have changed."""
import numpy as np
import pytest

from fastopt import FlatParams, schedules
from fastopt.optim import Adam, AdamW, AMSGrad


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return FlatParams({"W": rng.standard_normal((7, 5)).astype(dtype), "b": rng.standard_normal(9).astype(dtype)})


def _checked_only(opt):
    """Make the next step take the full path (forget the checked gradient buffer)."""
    opt._checked_grad = None


CASES = [
    (Adam, dict(lr=1e-2)),
    (Adam, dict(lr=schedules.exponential(1e-2, 0.9), betas=(0.8, 0.99), eps=1e-6)),
    (Adam, dict(lr=1e-2, weight_decay=0.1)),
    (AdamW, dict(lr=1e-2, weight_decay=0.05)),
    (AMSGrad, dict(lr=schedules.algebraic(1e-2, alpha=0.75, k0=3))),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,options", CASES, ids=lambda c: getattr(c, "__name__", None))
def test_fast_path_gives_the_bits_of_the_checked_path(cls, options, dtype):
    fast_p, full_p = _params(dtype), _params(dtype)
    fast, full = cls(fast_p, **options), cls(full_p, **options)
    g = fast_p.zeros_like()
    rng = np.random.default_rng(1)
    for _ in range(12):
        g.data[:] = rng.standard_normal(g.data.size).astype(dtype)
        fast.step(g)
        _checked_only(full)
        full.step(g)
    assert fast._checked_grad is g.data, "the fast path was never taken"
    assert fast.step_count == full.step_count == 12
    np.testing.assert_array_equal(fast_p.data, full_p.data)
    for name in full._state_names():
        np.testing.assert_array_equal(fast._parts[0].state[name], full._parts[0].state[name])


def test_options_changed_after_fast_steps_are_honoured():
    p, q = _params(np.float64), _params(np.float64)
    a, b = Adam(p, lr=1e-2), Adam(q, lr=1e-2, max_grad_norm=0.5)
    g = p.zeros_like()
    g.data[:] = 3.0
    a.step(g)
    a.step(g)                       # fast
    b.step(g)
    b.step(g)
    a.max_grad_norm = 0.5           # from now on: clipping, through the full path
    b_info = b.step(g)
    a_info = a.step(g)
    assert a_info.grad_norm == pytest.approx(b_info.grad_norm)
    assert not np.array_equal(p.data, q.data)   # the first two steps differ (no clipping in a)
    # a bad value set later is caught, before anything changes
    a.max_grad_norm = None
    a.eps = -1.0
    before = p.data.copy()
    with pytest.raises(ValueError, match="eps"):
        a.step(g)
    np.testing.assert_array_equal(p.data, before)
    assert a.step_count == 3


def test_a_new_gradient_buffer_is_checked_again():
    p = _params(np.float64)
    opt = Adam(p, lr=1e-2)
    g = p.zeros_like()
    opt.step(g)
    opt.step(g)
    before, count = p.data.copy(), opt.step_count
    with pytest.raises(ValueError):
        opt.step(p)                  # the parameters as their own gradient: aliasing
    bad = FlatParams({"W": np.zeros((7, 5)), "b": np.zeros(8)})
    with pytest.raises(ValueError, match="laid out"):
        opt.step(bad)
    np.testing.assert_array_equal(p.data, before)
    assert opt.step_count == count


def test_array_params_and_zero_state():
    w = np.linspace(-1.0, 1.0, 17)
    ref = w.copy()
    a, b = Adam(w, lr=0.1), Adam(ref, lr=0.1)
    g = np.cos(np.arange(17.0))
    for k in range(5):
        a.step(g)
        _checked_only(b)
        b.step(g)
        if k == 2:
            a.zero_state()          # new state buffers: the fast path must use them
            b.zero_state()
    np.testing.assert_array_equal(w, ref)
    assert a.step_count == 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [dict(), dict(beta1=0.8, beta2=0.99, eps=1e-6), dict(decoupled_weight_decay=True)])
def test_functional_adam_lean_path_gives_the_bits_of_the_checked_path(dtype, options):
    """adam_step's plain call (float hyperparameters, an int step, plain 1-D arrays) skips the checks'
    calls; a NumPy-integer step takes the full path: both must agree bit for bit."""
    import fastopt

    rng = np.random.default_rng(3)
    lean = [rng.standard_normal(33).astype(dtype)] + [np.zeros(33, dtype) for _ in range(2)]
    full = [a.copy() for a in lean]
    for k in range(1, 8):
        g = rng.standard_normal(33).astype(dtype)
        assert fastopt.adam_step(lean[0], g, lean[1], lean[2], step=k, lr=1e-2, **options).applied
        fastopt.adam_step(full[0], g, full[1], full[2], step=np.int64(k), lr=1e-2, **options)
    for a, b in zip(lean, full):
        np.testing.assert_array_equal(a, b)
