"""fastopt.train.fit: the compiled epochs against the Python loop (same bits) and the float64
reference backend (independent oracle), on regression and PINN residuals; bad input."""
import math

import numpy as np
import pytest

from fastopt import schedules
from fastopt.fourier import FourierFeatures
from fastopt.nn import MLP, Ansatz
from fastopt.optim import SGD, Adam, AdamW, AMSGrad
from fastopt.train import ResidualLoss, fit


def _data(n=250, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, (n, 1)).astype(dtype)
    return x, (np.sin(2 * math.pi * x[:, 0]) + 0.1 * rng.standard_normal(n)).astype(dtype)


def _pair(make_net, make_opt):
    a, b = make_net(), make_net()
    return (a, make_opt(a)), (b, make_opt(b))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make_opt", [
    lambda net: Adam(net.params, lr=1e-2),
    lambda net: AdamW(net.params, lr=schedules.exponential(1e-2, 0.99), weight_decay=0.1, betas=(0.8, 0.99)),
    lambda net: AMSGrad(net.params, lr=3e-3),
], ids=["adam", "adamw-schedule", "amsgrad"])
def test_compiled_epochs_equal_the_python_loop_bit_for_bit(dtype, make_opt):
    x, y = _data(250, dtype)         # batches of 100, 100, 50: a short last batch
    (net_c, opt_c), (net_p, opt_p) = _pair(lambda: MLP(1, (20, 20), seed=3, dtype=dtype), make_opt)
    rc = fit(net_c, opt_c, x, y, batch_size=100, epochs=4, seed=7)
    rp = fit(net_p, opt_p, x, y, batch_size=100, epochs=4, seed=7, compiled=False)
    assert rc.compiled and not rp.compiled
    assert rc.steps == rp.steps == opt_c.step_count == opt_p.step_count == 12
    np.testing.assert_array_equal(net_c.params.data, net_p.params.data)
    for name in opt_c._state_names():
        np.testing.assert_array_equal(opt_c._parts[0].state[name], opt_p._parts[0].state[name])
    np.testing.assert_allclose(rc.losses, rp.losses, rtol=1e-5 if dtype == np.float32 else 1e-13)
    # and training goes on from there with optimizer.step as if it had been a Python loop throughout
    grad, loss = net_c.params.zeros_like(), ResidualLoss((1.0,))
    for net, opt in ((net_c, opt_c), (net_p, opt_p)):
        loss.target = y[:64]
        net.loss_and_grad(x[:64], loss, 0, grad)
        opt.step(grad)
    np.testing.assert_array_equal(net_c.params.data, net_p.params.data)


def test_compiled_epochs_match_the_float64_reference():
    x, y = _data(200)
    net = MLP(1, (12, 10), seed=1)
    ref = MLP(1, (12, 10), seed=1, backend="reference")
    r = fit(net, Adam(net.params, lr=1e-2), x, y, batch_size=64, epochs=3, seed=2)
    rr = fit(ref, Adam(ref.params, lr=1e-2, backend="reference"), x, y, batch_size=64, epochs=3, seed=2)
    assert r.compiled and not rr.compiled
    np.testing.assert_allclose(net.params.data, ref.params.data, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(r.losses, rr.losses, rtol=1e-11)


def test_pinn_residual_with_ansatz_and_trainable_fourier_features():
    """-u'' = f on (0, 1), u = x(1 - x) net: operator (0, 0, -1) on the channels (u, u', u'')."""
    x = np.linspace(0.0, 1.0, 96)[:, None]
    f = (math.pi ** 2) * np.sin(math.pi * x[:, 0])

    def make():
        return MLP(1, (16, 16), fourier=FourierFeatures.from_wavenumbers([math.pi, 2 * math.pi], trainable=True),
                   ansatz=Ansatz.box(), seed=4)

    (net_c, opt_c), (net_p, opt_p) = _pair(make, lambda net: Adam(net.params, lr=1e-2))
    rc = fit(net_c, opt_c, x, f, operator=(0.0, 0.0, -1.0), epochs=60)
    rp = fit(net_p, opt_p, x, f, operator=(0.0, 0.0, -1.0), epochs=60, compiled=False)
    assert rc.compiled and rc.steps == 60
    np.testing.assert_array_equal(net_c.params.data, net_p.params.data)
    assert rc.losses[-1] < 0.05 * rc.losses[0]
    # the loss the fit reports is the residual loss of the network before each step
    u = net_c.forward(x, 2).u
    after = float(np.mean((-u[2] - f) ** 2))
    assert after < rc.losses[-1]


def test_the_python_loop_serves_every_other_optimiser():
    x, y = _data(120)
    net, ref = MLP(1, (8,), seed=0), MLP(1, (8,), seed=0)
    opt, ref_opt = SGD(net.params, lr=0.05, momentum=0.9), SGD(ref.params, lr=0.05, momentum=0.9)
    r = fit(net, opt, x, y, batch_size=40, epochs=2)
    assert not r.compiled and r.steps == 6
    grad, loss = ref.params.zeros_like(), ResidualLoss((1.0,))
    for _ in range(2):
        for lo in range(0, 120, 40):
            loss.target = y[lo:lo + 40]
            ref.loss_and_grad(x[lo:lo + 40], loss, 0, grad)
            ref_opt.step(grad)
    np.testing.assert_array_equal(net.params.data, ref.params.data)
    with pytest.raises(ValueError, match="compiled=True"):
        fit(net, opt, x, y, compiled=True)


def test_permutations_are_the_order_of_the_points():
    x, y = _data(60)
    perms = [np.random.default_rng(k).permutation(60) for k in range(2)]
    a, b = MLP(1, (8,), seed=0), MLP(1, (8,), seed=0)
    fit(a, Adam(a.params, lr=1e-2), x, y, batch_size=20, epochs=2, permutations=perms)
    ob = Adam(b.params, lr=1e-2)
    for p in perms:
        fit(b, ob, x[p], y[p], batch_size=20, epochs=1)
    np.testing.assert_array_equal(a.params.data, b.params.data)


BAD = [
    (dict(x=np.zeros((10, 2))), ValueError, "x"),
    (dict(x=np.zeros((10, 1), np.float32)), (TypeError, ValueError), "x"),
    (dict(x=np.full((10, 1), np.nan)), ValueError, "x"),
    (dict(target=np.zeros(9)), ValueError, "target"),
    (dict(target=np.full(10, np.inf)), ValueError, "target"),
    (dict(operator=(1.0, 2.0, 3.0, 4.0)), ValueError, "operator"),
    (dict(operator=(1.0, np.nan)), ValueError, "operator"),
    (dict(operator="u"), (TypeError, ValueError), "operator"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=11), ValueError, "batch_size"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(permutations=[np.arange(10)[::-1]]), ValueError, "permutations"),
    (dict(permutations=[np.zeros(10, int), np.arange(10)]), ValueError, "permutations"),
    (dict(compiled="yes"), TypeError, "compiled"),
]


@pytest.mark.parametrize("bad,exc,name", BAD)
def test_bad_input_is_refused_before_any_step(bad, exc, name):
    net = MLP(1, (6,), seed=0)
    opt = Adam(net.params, lr=1e-2)
    args = dict(x=np.linspace(0, 1, 10)[:, None], target=np.zeros(10), epochs=2)
    args.update(bad)
    before = net.params.data.copy()
    with pytest.raises(exc, match=name):
        fit(net, opt, args.pop("x"), args.pop("target"), **args)
    np.testing.assert_array_equal(net.params.data, before)
    assert opt.step_count == 0


def test_the_optimiser_must_be_the_networks():
    net, other = MLP(1, (6,), seed=0), MLP(1, (6,), seed=1)
    with pytest.raises(ValueError, match="optimizer"):
        fit(net, Adam(other.params), np.zeros((4, 1)), np.zeros(4))
    with pytest.raises(TypeError, match="net"):
        fit(object(), Adam(other.params), np.zeros((4, 1)), np.zeros(4))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_several_residuals_sobolev_loss(dtype):
    """R = 3 residuals on (u, u', u''): the bench's PINN loss mean(u^2) + mean(u'^2) + mean((u'' - f)^2)."""
    x = np.linspace(-1.0, 1.0, 100, dtype=dtype)[:, None]
    t = np.zeros((100, 3), dtype)
    t[:, 2] = np.sin(3 * x[:, 0])
    A = np.eye(3)
    (net_c, opt_c), (net_p, opt_p) = _pair(lambda: MLP(1, (20, 20), seed=5, dtype=dtype),
                                           lambda net: Adam(net.params, lr=1e-3))
    rc = fit(net_c, opt_c, x, t, operator=A, epochs=20)
    rp = fit(net_p, opt_p, x, t, operator=A, epochs=20, compiled=False)
    assert rc.compiled
    np.testing.assert_array_equal(net_c.params.data, net_p.params.data)
    np.testing.assert_allclose(rc.losses, rp.losses, rtol=1e-5 if dtype == np.float32 else 1e-13)
    # the first loss is the three mean squares at the initial network
    net0 = MLP(1, (20, 20), seed=5, dtype=dtype)
    u = net0.forward(x, 2).u.astype(np.float64)
    expect = np.mean(u[0] ** 2) + np.mean(u[1] ** 2) + np.mean((u[2] - t[:, 2]) ** 2)
    np.testing.assert_allclose(rc.losses[0], expect, rtol=1e-5 if dtype == np.float32 else 1e-13)
    with pytest.raises(ValueError, match="target"):
        fit(net_c, opt_c, x, t[:, :2], operator=A)


@pytest.mark.gpu
def test_gpu_network_runs_the_python_loop_with_the_cpu_steps():
    """On the GPU, fit is the Python loop of loss_and_grad and Adam.step (CuPy arrays throughout,
    the epoch's order as a device array); float64 parameters agree with the compiled CPU epochs."""
    from tests.conftest import require_backend, to_device, to_host

    require_backend("gpu")
    x, y = _data(200)
    cpu = MLP(1, (12, 10), seed=1)
    gpu = MLP(1, (12, 10), seed=1, backend="gpu")
    rc = fit(cpu, Adam(cpu.params, lr=1e-2), x, y, batch_size=64, epochs=3, seed=2)
    rg = fit(gpu, Adam(gpu.params, lr=1e-2), to_device(x, "gpu"), to_device(y, "gpu"), batch_size=64, epochs=3, seed=2)
    assert rc.compiled and not rg.compiled
    np.testing.assert_allclose(to_host(gpu.params.data), cpu.params.data, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rg.losses, rc.losses, rtol=1e-10)


def test_strided_points_and_targets_are_read_not_refused():
    """x and target are inputs only: a column of a table works (a copy is read), dtype still checked."""
    table = np.random.default_rng(0).uniform(0.0, 1.0, (50, 3))
    a, b = MLP(1, (6,), seed=0), MLP(1, (6,), seed=0)
    fit(a, Adam(a.params, lr=1e-2), table[:, :1], table[:, 2], epochs=3)
    fit(b, Adam(b.params, lr=1e-2), np.ascontiguousarray(table[:, :1]), table[:, 2].copy(), epochs=3)
    np.testing.assert_array_equal(a.params.data, b.params.data)
    with pytest.raises((TypeError, ValueError), match="target"):
        fit(a, Adam(a.params, lr=1e-2), table[:, :1], table[:, 2].astype(np.float32))
