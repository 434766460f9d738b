"""The public network API: ``fastopt.nn.MLP``, ``Ansatz`` and ``fastopt.fourier``.

The kernels themselves are tested against the float64 oracle in ``test_mlp_cpu.py`` and
``test_fourier_cpu.py``; here the front ends are: the CPU backend against the "reference"
backend through the same public calls, the parameter gradients through u'' (with an ansatz and
trainable frequencies) against central finite differences of the loss, the derivative channels
against finite differences in x, the initialisations against the oracle's ``init_network``, and
bad input: a clear error naming the argument, raised before any buffer changes.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import fastopt
from fastopt import fourier as ff
from fastopt.kernels import reference_nn
from fastopt.nn import MLP, Ansatz

F32, F64 = np.float32, np.float64


def make_net(d=1, hidden=(6, 5), fourier=None, ansatz=None, dtype=F64, backend="cpu", seed=3, **kw):
    return MLP(d, hidden, fourier=fourier, ansatz=ansatz, dtype=dtype, backend=backend, seed=seed, **kw)


CONFIGS = {
    "plain_1d": dict(d=1),
    "sin_2d": dict(d=2, activation="sin"),
    "fourier_trainable_1d": dict(d=1, fourier="trainable"),
    "fourier_fixed_nox_2d": dict(d=2, fourier="fixed_nox"),
    "ansatz_box_1d": dict(d=1, ansatz=True),
    "ansatz_fourier_2d": dict(d=2, ansatz=True, fourier="trainable"),
    "wide_blas_1d": dict(d=1, hidden=(20, 20)),
}


def build(cfg, dtype=F64, backend="cpu"):
    cfg = dict(cfg)
    d = cfg.pop("d")
    kind = cfg.pop("fourier", None)
    fourier = None
    if kind == "trainable":
        fourier = ff.FourierFeatures.gaussian(d, 3, sigma=0.7, seed=1, keep_x=True, trainable=True, dtype=dtype)
    elif kind == "fixed_nox":
        fourier = ff.FourierFeatures.gaussian(d, 4, sigma=0.5, seed=2, dtype=dtype)
    ansatz = Ansatz.box(0.0, 1.0) if cfg.pop("ansatz", False) else None
    return make_net(d, fourier=fourier, ansatz=ansatz, dtype=dtype, backend=backend, **cfg)


def points(d, J=37, dtype=F64, seed=0):
    return np.random.default_rng(seed).uniform(0.05, 0.95, (J, d)).astype(dtype)


# ----------------------------------------------------------------------------- backends agree
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_cpu_matches_reference_backend(name, order, dtype):
    cfg = CONFIGS[name]
    cpu, ref = build(cfg, dtype, "cpu"), build(cfg, dtype, "reference")
    np.testing.assert_array_equal(cpu.params.data, ref.params.data)
    x = points(cfg["d"], dtype=dtype)
    o_cpu, o_ref = cpu.forward(x, order), ref.forward(x, order)
    rtol = 1e-11 if dtype == F64 else 5e-5
    for a, b in ((o_cpu.u, o_ref.u), (o_cpu.basis, o_ref.basis)):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=rtol * np.max(np.abs(b)))
    adj = np.random.default_rng(1).standard_normal(o_cpu.u.shape).astype(dtype)
    g_cpu, g_ref = cpu.backward(adj), ref.backward(adj)
    assert g_cpu.names == cpu.params.names
    for n in g_cpu.names:
        np.testing.assert_allclose(g_cpu[n], g_ref[n], rtol=0, atol=rtol * max(np.max(np.abs(g_ref[n])), 1e-30),
                                   err_msg=n)


def test_same_seed_same_network_as_the_oracle():
    net = MLP(2, (7, 4), seed=11, first_init="uniform")
    spec = reference_nn.NetSpec(d=2, hidden=(7, 4))
    params, _ = reference_nn.init_network(spec, np.random.default_rng(11), first="uniform")
    assert net.params.names == params.names
    np.testing.assert_array_equal(net.params.data, params.data)


# ----------------------------------------------------------------------------- finite differences
def _pinn_loss(net, x, f_rhs):
    """L = mean (lap u - f)^2 + 0.1 mean |grad u|^2 + 0.3 mean u^2: every channel enters."""
    d = net.d
    J = x.shape[0]

    def loss(u, adj):
        r = u[d + 1] - f_rhs
        adj[...] = 0.0
        adj[d + 1] = 2 * r / J
        adj[1:1 + d] = 0.2 * u[1:1 + d] / J
        adj[0] = 0.6 * u[0] / J
        return np.mean(r ** 2) + 0.1 * np.mean(np.sum(u[1:1 + d] ** 2, axis=0)) + 0.3 * np.mean(u[0] ** 2)

    return loss


@pytest.mark.parametrize("name", ["plain_1d", "fourier_trainable_1d", "ansatz_fourier_2d", "sin_2d"])
def test_parameter_gradient_through_the_laplacian_matches_finite_differences(name):
    net = build(CONFIGS[name])
    x = points(net.d, J=23)
    f_rhs = np.sin(3 * x[:, 0])
    loss = _pinn_loss(net, x, f_rhs)
    _, grad = net.loss_and_grad(x, loss, order=2)
    theta = net.params.data
    h = 1e-6
    fd = np.empty_like(theta)
    adj = np.zeros((net.d + 2, x.shape[0]))
    for i in range(theta.size):
        old = theta[i]
        theta[i] = old + h
        lp = loss(net.forward(x, 2).u, adj)
        theta[i] = old - h
        lm = loss(net.forward(x, 2).u, adj)
        theta[i] = old
        fd[i] = (lp - lm) / (2 * h)
    scale = np.max(np.abs(fd))
    np.testing.assert_allclose(grad.data, fd, rtol=0, atol=1e-6 * scale)
    if net.train_B:
        assert np.max(np.abs(grad["fourier.B"])) > 1e-3 * scale   # the frequencies really get a gradient


@pytest.mark.parametrize("name", ["plain_1d", "fourier_fixed_nox_2d", "ansatz_fourier_2d"])
def test_derivative_channels_match_finite_differences_in_x(name):
    net = build(CONFIGS[name])
    d = net.d
    x = points(d, J=9)
    u = net.forward(x, 2).u.copy()
    lap = np.zeros(x.shape[0])
    for k in range(d):
        e = np.zeros(d)
        e[k] = 1e-5                       # central difference: truncation ~h^2 |u'''|, rounding ~eps/h
        grad_fd = (net(x + e) - net(x - e)) / 2e-5
        np.testing.assert_allclose(u[1 + k], grad_fd, rtol=0, atol=1e-7 * max(np.max(np.abs(u[1 + k])), 1.0))
        e[k] = 1e-4                       # second difference: truncation ~h^2 |u''''|, rounding ~eps/h^2
        lap += (net(x + e) - 2 * u[0] + net(x - e)) / 1e-8
    np.testing.assert_allclose(u[d + 1], lap, rtol=0, atol=1e-4 * max(np.max(np.abs(lap)), 1.0))


def test_box_ansatz_vanishes_on_the_boundary_with_exact_channels():
    net = make_net(2, ansatz=Ansatz.box(0.0, 1.0))
    edge = np.array([[0.0, 0.3], [1.0, 0.7], [0.4, 0.0], [0.6, 1.0]])
    np.testing.assert_array_equal(net(edge), 0.0)
    x = points(2, J=5)
    phi = Ansatz.box(0.0, 1.0).channels("t", x, 4)[0]
    p = x * (1 - x)
    np.testing.assert_allclose(phi[0], p[:, 0] * p[:, 1])
    np.testing.assert_allclose(phi[1], (1 - 2 * x[:, 0]) * p[:, 1])
    np.testing.assert_allclose(phi[2], (1 - 2 * x[:, 1]) * p[:, 0])
    np.testing.assert_allclose(phi[3], -2 * p[:, 1] - 2 * p[:, 0])


def test_transformed_basis_reproduces_the_output():
    net = build(CONFIGS["ansatz_fourier_2d"])
    x = points(2)
    u = net.forward(x, 2).u.copy()
    basis = net.basis(x, 2)
    phi, g = net.ansatz_channels(x, 2)
    recon = basis @ net.params["out.c"] + phi * net.params["out.c0"][0] + g
    np.testing.assert_allclose(recon, u, rtol=0, atol=1e-12 * np.max(np.abs(u)))


def test_workspace_is_reused_and_bounded():
    net = make_net()
    x = points(1, J=10)
    a = net.forward(x, 1).u
    b = net.forward(x, 1).u
    assert a is b
    for J in range(11, 20):
        net.forward(points(1, J=J))
    assert len(net._workspaces) <= 4


def test_train_step_with_an_optimizer_lowers_the_loss():
    net = make_net(1, hidden=(16, 16), seed=0)
    x = np.linspace(-1, 1, 64)[:, None]
    y = np.sin(3 * x[:, 0])

    def mse(u, adj):
        adj[0] = 2 * (u[0] - y) / y.size
        return np.mean((u[0] - y) ** 2)

    opt = fastopt.optim.Adam(net.params, lr=1e-2)
    first, grad = net.loss_and_grad(x, mse)
    for _ in range(200):
        last, _ = net.loss_and_grad(x, mse, grad=grad)
        opt.step(grad)
    assert last < 0.05 * first


# ----------------------------------------------------------------------------- bad input
@pytest.fixture
def net_and_x():
    net = make_net(2, hidden=(5, 4))
    return net, points(2)


def test_forward_rejects_bad_points(net_and_x):
    net, x = net_and_x
    before = net.params.data.copy()
    with pytest.raises(ValueError, match=r"MLP.forward: x must have shape \(J, 2\)"):
        net.forward(x[:, :1].copy())
    with pytest.raises(TypeError, match="MLP.forward: x must have the network's dtype float64"):
        net.forward(x.astype(F32))
    with pytest.raises(ValueError, match="MLP.forward: x must be C-contiguous"):
        net.forward(np.asfortranarray(np.ones((4, 2))))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="MLP.forward: x holds NaN or inf"):
        net.forward(bad)
    with pytest.raises(ValueError, match="MLP.forward: order must be 0"):
        net.forward(x, 3)
    with pytest.raises(TypeError, match="MLP.forward: x must be a NumPy or CuPy array"):
        net.forward([[0.1, 0.2]])
    np.testing.assert_array_equal(net.params.data, before)


def test_backward_rejects_bad_adjoints_and_buffers(net_and_x):
    net, x = net_and_x
    with pytest.raises(RuntimeError, match="call forward"):
        net.backward(np.zeros((1, x.shape[0])))
    u = net.forward(x, 1).u
    grad = net.params.zeros_like()
    grad.data[:] = 7.0
    with pytest.raises(ValueError, match=r"MLP.backward: adj must have shape \(3, 37\)"):
        net.backward(np.zeros((1, x.shape[0])), grad)
    with pytest.raises(TypeError, match="MLP.backward: adj must have dtype float64"):
        net.backward(np.zeros(u.shape, F32), grad)
    other = make_net(2, hidden=(5, 3)).params.zeros_like()
    with pytest.raises(ValueError, match="grad must be a FlatParams with the network's layout"):
        net.backward(np.zeros(u.shape), other)
    with pytest.raises(ValueError, match="grad must not share memory"):
        net.backward(np.zeros(u.shape), net.params)
    np.testing.assert_array_equal(grad.data, 7.0)     # nothing written by the failed calls


def test_nonfinite_adjoints_reach_the_optimizer_which_skips_them(net_and_x):
    net, x = net_and_x
    u = net.forward(x).u
    adj = np.zeros(u.shape)
    adj[0, 0] = np.inf                        # a diverged loss: not an input error
    grad = net.backward(adj)
    assert not np.all(np.isfinite(grad.data))
    before = net.params.data.copy()
    info = fastopt.optim.Adam(net.params, lr=1e-3, skip_nonfinite=True).step(grad)
    assert not info.applied
    np.testing.assert_array_equal(net.params.data, before)


def test_constructor_rejects_bad_configurations():
    with pytest.raises(ValueError, match="MLP: activation must be one of"):
        MLP(1, activation="relu6")
    with pytest.raises(ValueError, match="MLP: hidden must name at least one layer"):
        MLP(1, hidden=())
    with pytest.raises(ValueError, match="MLP: d must be >= 1"):
        MLP(0)
    with pytest.raises(ValueError, match="MLP: fourier has input dimension 2 but d = 1"):
        MLP(1, fourier=ff.FourierFeatures.gaussian(2, 3))
    with pytest.raises(ValueError, match="MLP: init must be one of"):
        MLP(1, init="he")
    with pytest.raises(TypeError, match="MLP: dtype must be float32 or float64"):
        MLP(1, dtype=np.int32)
    with pytest.raises(ValueError, match="MLP: backend must be one of"):
        MLP(1, backend="tpu")


def test_ansatz_output_is_checked():
    net = make_net(1, ansatz=Ansatz(lambda x, C: np.ones((C, x.shape[0] + 1))))
    with pytest.raises(ValueError, match=r"ansatz phi\(x\) must have shape"):
        net.forward(points(1))
    net = make_net(1, ansatz=Ansatz(lambda x, C: np.full((C, x.shape[0]), np.nan)))
    with pytest.raises(ValueError, match=r"ansatz phi\(x\) holds NaN"):
        net.forward(points(1))


# ----------------------------------------------------------------------------- Fourier features
@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize("keep_x,two_pi", [(True, True), (False, False)])
@pytest.mark.parametrize("dtype", [F32, F64])
def test_fourier_features_cpu_matches_reference(order, keep_x, two_pi, dtype):
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (41, 2)).astype(dtype)
    B = rng.standard_normal((2, 6)).astype(dtype)
    F = ff.fourier_features(x, B, order=order, keep_x=keep_x, two_pi=two_pi)
    R = ff.fourier_features(x, B, order=order, keep_x=keep_x, two_pi=two_pi, backend="reference")
    tol = 1e-12 if dtype == F64 else 2e-5 * (1 + 2 * math.pi * 6)
    np.testing.assert_allclose(F, R, rtol=0, atol=tol * np.max(np.abs(R)))
    adj = rng.standard_normal(F.shape).astype(dtype)
    gB, gx = ff.fourier_features_backward(x, B, adj, keep_x=keep_x, two_pi=two_pi, want_grad_x=True)
    rB, rx = ff.fourier_features_backward(x, B, adj, keep_x=keep_x, two_pi=two_pi, want_grad_x=True,
                                          backend="reference")
    np.testing.assert_allclose(gB, rB, rtol=0, atol=tol * np.max(np.abs(rB)) * 10)
    np.testing.assert_allclose(gx, rx, rtol=0, atol=tol * np.max(np.abs(rx)) * 10)


def test_fourier_backward_matches_finite_differences_in_B():
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (13, 2))
    layer = ff.FourierFeatures.gaussian(2, 3, sigma=0.5, seed=4, keep_x=True)
    W = rng.standard_normal((4, 13, layer.n_features))     # L = sum W * features (all channels)
    gB, _ = layer.backward(x, W)
    B = layer.B
    h = 1e-6
    for idx in np.ndindex(B.shape):
        old = B[idx]
        B[idx] = old + h
        lp = np.sum(W * layer(x, 2))
        B[idx] = old - h
        lm = np.sum(W * layer(x, 2))
        B[idx] = old
        assert abs(gB[idx] - (lp - lm) / (2 * h)) < 1e-6 * np.max(np.abs(gB))


def test_fourier_constructors():
    lec = ff.FourierFeatures.from_wavenumbers([1.0, 2.0, 3.0])
    assert (lec.d, lec.K, lec.n_features, lec.scale) == (1, 3, 7, 1.0)
    ms = ff.FourierFeatures.multiscale(2, 4, [1.0, 10.0], seed=0)
    assert ms.B.shape == (2, 8) and not ms.keep_x
    assert np.std(ms.B[:, 4:]) > 3 * np.std(ms.B[:, :4])      # the second block is the larger scale
    g32 = ff.FourierFeatures.gaussian(1, 5, dtype=F32)
    assert g32.B.dtype == F32


def test_fourier_bad_input_and_out_untouched():
    x = np.random.default_rng(0).uniform(size=(10, 2))
    B = np.ones((2, 3))
    out = np.full((3, 10, 8), 5.0)
    with pytest.raises(ValueError, match=r"fourier_features: x must have shape \(J, 2\)"):
        ff.fourier_features(x[:, :1].copy(), B, order=1, out=out)
    with pytest.raises(ValueError, match=r"fourier_features: out must have shape \(3, 10, 8\)"):
        ff.fourier_features(x, B, order=1, out=np.empty((2, 10, 8)))
    with pytest.raises(TypeError, match="fourier_features: x must have the network's dtype"):
        ff.fourier_features(x.astype(F32), B, order=1, out=out)
    with pytest.raises(ValueError, match="fourier_features: B holds NaN"):
        ff.fourier_features(x, np.full((2, 3), np.nan), order=1, out=out)
    with pytest.raises(ValueError, match="fourier_features: B must have shape"):
        ff.fourier_features(x, np.ones(3), order=1, out=out)
    with pytest.raises(ValueError, match="no features"):
        ff.fourier_features(x, np.ones((2, 0)), keep_x=False)
    np.testing.assert_array_equal(out, 5.0)
    ff.fourier_features(x, B, order=1, out=out)
    assert not np.any(out == 5.0)
    with pytest.raises(ValueError, match=r"fourier_features_backward: adj must have shape \(C, 10, 8\)"):
        ff.fourier_features_backward(x, B, np.ones((3, 10, 7)))
    with pytest.raises(ValueError, match="FourierFeatures: B must have shape"):
        ff.FourierFeatures(np.ones(3))
