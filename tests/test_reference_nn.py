"""The float64 reference of the "fourier" and "mlp" families against finite differences.

What is proven here, in float64:

- the activation table: each derivative is the central difference of the one before;
- Fourier features: the closed-form gradient and Laplacian channels are the x-derivatives of
  the value channel; the backward (to B and to x) is the gradient of a scalar loss on every
  channel;
- MLP forward: every derivative channel of the output and of the basis (the last hidden
  layer) is the x-derivative of the value channel, for d = 1, 2, 3, tanh and sin, with and
  without Fourier features and the ansatz; in 1D (1-20-20-1 tanh) u, u', u'' also agree with
  PyTorch's double backward;
- MLP backward: the gradient with respect to every parameter (W, b, c, c0, trainable B) of a
  loss on the value, gradient and Laplacian channels, alone and together, through the ansatz,
  matches central differences of the loss to ~1e-6 relative;
- zero points, float32 arguments, the parameter layout and the initialisations.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from fastopt import FlatParams
from fastopt.kernels import reference_nn as nn

F64 = np.float64
EMPTY = np.empty(0)


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


def n_channels(d, order):
    return (1, 1 + d, 2 + d)[order]


def assert_matches(actual, expected, rtol, what=""):
    """max|actual - expected| <= rtol max|expected|, and the comparison is not vacuous."""
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = float(np.max(np.abs(expected)))
    assert scale > 1e-8, f"{what}: the expected values are all ~0: the check would prove nothing"
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol:g} * {scale:.3g}"


# --------------------------------------------------------------------------- ansatz functions
def ansatz_channels(x, C):
    """phi = prod_k x_k (1 - x_k) (zero on the boundary of the unit box) and
    g = 1 + 0.5 sum_k sin(3 x_k), each with its (C, J) channels in closed form."""
    J, d = x.shape
    f = x * (1.0 - x)
    phi = np.zeros((C, J))
    g = np.zeros((C, J))
    phi[0] = np.prod(f, axis=1)
    g[0] = 1.0 + 0.5 * np.sum(np.sin(3 * x), axis=1)
    for k in range(d):
        others = np.prod(np.delete(f, k, axis=1), axis=1)
        if C > 1:
            phi[1 + k] = (1.0 - 2.0 * x[:, k]) * others
            g[1 + k] = 1.5 * np.cos(3 * x[:, k])
        if C == d + 2:
            phi[d + 1] += -2.0 * others
            g[d + 1] += -4.5 * np.sin(3 * x[:, k])
    return phi, g


# --------------------------------------------------------------------------- a network under test
@dataclass(frozen=True)
class Case:
    name: str
    spec: nn.NetSpec
    ansatz: bool = False
    J: int = 7
    first: str = "glorot"


CASES = [
    Case("d1_tanh", nn.NetSpec(d=1, hidden=(6, 5), activation="tanh")),
    Case("d1_sin_lecture_init", nn.NetSpec(d=1, hidden=(5, 4), activation="sin"), first="uniform"),
    Case("d2_fourier_trainB_sin_ansatz",
         nn.NetSpec(d=2, hidden=(5, 4), activation="sin", fourier_K=3, train_B=True), ansatz=True),
    Case("d3_fourier_trainB_noX_no2pi_noc0_tanh",
         nn.NetSpec(d=3, hidden=(4,), activation="tanh", fourier_K=2, keep_x=False, two_pi=False,
                    train_B=True, out_bias=False)),
    Case("d2_fixedB_random_features", nn.NetSpec(d=2, hidden=(), fourier_K=4)),
    Case("d1_fourier_trainB_3layers_deep_ritz_ansatz",
         nn.NetSpec(d=1, hidden=(5, 5, 5), activation="tanh", fourier_K=3, train_B=True), ansatz=True),
    Case("d3_tanh_box_init_ansatz", nn.NetSpec(d=3, hidden=(5, 3), activation="tanh"), ansatz=True,
         first="box"),
]


def case_params(case):
    return [pytest.param(c, id=c.name) for c in case]


def build(case, rng):
    """(x, params, B): points in (0, 1)^d, initialised parameters and frequencies."""
    spec = case.spec
    params, B = nn.init_network(spec, rng, first=case.first, uniform_range=(-1.5, 1.5))
    # non-zero biases and output bias, so that every parameter matters
    for name in params.names:
        if name.endswith(".b") or name == "out.c0":
            params[name] = rng.uniform(-0.5, 0.5, params[name].shape)
    x = rng.uniform(0.05, 0.95, size=(case.J, spec.d))
    return x, params, B


def forward(case, x, B, theta, C):
    """(out, basis) channels at the points x."""
    spec = case.spec
    J = x.shape[0]
    phi, g = ansatz_channels(x, C) if case.ansatz else (EMPTY, EMPTY)
    out = np.full((C, J), np.nan)
    basis = np.full((C, J, spec.n_basis), np.nan)
    tape = np.empty(nn.mlp_tape_size(J, spec.d, spec.widths, [1, 1 + spec.d, 2 + spec.d].index(C)))
    nn.mlp_forward(x, B, theta, *spec.config, phi, g, out, basis, tape)
    return out, basis, tape


def backward(case, x, B, theta, adj, basis, tape):
    phi = ansatz_channels(x, adj.shape[0])[0] if case.ansatz else EMPTY
    grad = np.full_like(theta, np.nan)
    nn.mlp_backward(x, B, theta, *case.spec.config, phi, basis, tape, adj, grad)
    return grad


# --------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name", list(nn.ACTIVATIONS))
def test_activation_derivatives_are_derivatives(name):
    a = np.linspace(-3.0, 3.0, 41)
    h = 1e-5
    out, up, dn = (np.empty((4, a.size)) for _ in range(3))
    nn.activation_derivatives(nn.ACTIVATIONS[name], a, out)
    nn.activation_derivatives(nn.ACTIVATIONS[name], a + h, up)
    nn.activation_derivatives(nn.ACTIVATIONS[name], a - h, dn)
    assert_matches(out[0], {"tanh": np.tanh, "sin": np.sin}[name](a), 1e-15, "sigma")
    for k in range(3):
        assert_matches(out[k + 1], (up[k] - dn[k]) / (2 * h), 1e-8, f"{name}: derivative {k + 1}")
    few = np.empty((2, a.size))  # fewer derivatives on request
    nn.activation_derivatives(nn.ACTIVATIONS[name], a, few)
    np.testing.assert_array_equal(few, out[:2])


# --------------------------------------------------------------------------- Fourier features
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("keep_x", [True, False], ids=["x", "noX"])
@pytest.mark.parametrize("two_pi", [True, False], ids=["2pi", "1"])
def test_fourier_forward_closed_forms(rng, d, keep_x, two_pi):
    J, K = 6, 4
    s = 2 * math.pi if two_pi else 1.0
    x = rng.uniform(0, 1, (J, d))
    B = rng.standard_normal((d, K))
    C = d + 2
    F = np.full((C, J, (d if keep_x else 0) + 2 * K), np.nan)
    nn.fourier_forward(x, B, s, keep_x, F)
    # the value channel is gamma(x), written out independently
    expected = np.concatenate(([x] if keep_x else []) + [np.cos(s * x @ B), np.sin(s * x @ B)], axis=1)
    assert_matches(F[0], expected, 1e-14, "gamma(x)")  # s (x B) vs (s x) B: arguments ~10

    def value(xx):
        V = np.empty((1,) + F.shape[1:])
        nn.fourier_forward(xx, B, s, keep_x, V)
        return V[0]

    def channels(xx):
        V = np.empty_like(F)
        nn.fourier_forward(xx, B, s, keep_x, V)
        return V

    h1, h2 = 1e-5, 1e-4
    lap_2nd, lap_of_grad = np.zeros(F.shape[1:]), np.zeros(F.shape[1:])
    for k in range(d):
        e = np.zeros(d)
        e[k] = 1.0
        assert_matches(F[1 + k], (value(x + h1 * e) - value(x - h1 * e)) / (2 * h1), 1e-8, f"d/dx_{k}")
        lap_2nd += (value(x + h2 * e) - 2 * value(x) + value(x - h2 * e)) / h2 ** 2
        lap_of_grad += (channels(x + h1 * e)[1 + k] - channels(x - h1 * e)[1 + k]) / (2 * h1)
    assert_matches(F[d + 1], lap_of_grad, 1e-8, "Laplacian = div of the gradient channels")
    assert_matches(F[d + 1], lap_2nd, 1e-5, "Laplacian = second differences")
    # lower orders are the leading channels of the higher ones
    for order in (0, 1):
        low = np.empty((n_channels(d, order),) + F.shape[1:])
        nn.fourier_forward(x, B, s, keep_x, low)
        np.testing.assert_array_equal(low, F[:low.shape[0]])


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("keep_x", [True, False], ids=["x", "noX"])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_fourier_backward_is_the_gradient(rng, d, keep_x, order):
    """L = sum adj * channels(x, B): gB and gx against central differences."""
    J, K, s = 5, 3, 2 * math.pi
    C = n_channels(d, order)
    x = rng.uniform(0, 1, (J, d))
    B = rng.standard_normal((d, K))
    n0 = (d if keep_x else 0) + 2 * K
    R = rng.standard_normal((C, J, n0))

    def loss(xx, BB):
        F = np.empty((C, J, n0))
        nn.fourier_forward(xx, BB, s, keep_x, F)
        return float(np.sum(R * F))

    gB, gx = np.full((d, K), np.nan), np.full((J, d), np.nan)
    nn.fourier_backward(x, B, s, keep_x, R, gB, gx)
    h = 1e-6
    fdB = np.zeros_like(B)
    for i in np.ndindex(B.shape):
        E = np.zeros_like(B)
        E[i] = h
        fdB[i] = (loss(x, B + E) - loss(x, B - E)) / (2 * h)
    fdx = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        E = np.zeros_like(x)
        E[i] = h
        fdx[i] = (loss(x + E, B) - loss(x - E, B)) / (2 * h)
    assert_matches(gB, fdB, 1e-7, "dL/dB")
    assert_matches(gx, fdx, 1e-7, "dL/dx")
    # each output is optional
    gB2 = np.full((d, K), np.nan)
    nn.fourier_backward(x, B, s, keep_x, R, gB2, EMPTY)
    np.testing.assert_array_equal(gB2, gB)


# --------------------------------------------------------------------------- MLP forward channels
@pytest.mark.parametrize("case", case_params(CASES))
def test_mlp_forward_channels_are_x_derivatives(rng, case):
    x, params, B = build(case, rng)
    theta = params.data
    d = case.spec.d
    C = d + 2
    out, basis, _ = forward(case, x, B, theta, C)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(basis))

    def at(xx, CC=1):
        o, b, _ = forward(case, xx, B, theta, CC)
        return o, b

    h1, h2 = 1e-5, 1e-4
    lap_2nd_u, lap_2nd_b = 0.0, 0.0
    lap_div_u, lap_div_b = 0.0, 0.0
    for k in range(d):
        e = np.zeros(d)
        e[k] = 1.0
        (up, bp), (dn, bd) = at(x + h1 * e), at(x - h1 * e)
        assert_matches(out[1 + k], (up[0] - dn[0]) / (2 * h1), 1e-7, f"du/dx_{k}")
        assert_matches(basis[1 + k], (bp[0] - bd[0]) / (2 * h1), 1e-7, f"d basis/dx_{k}")
        (up2, bp2), (dn2, bd2) = at(x + h2 * e), at(x - h2 * e)
        lap_2nd_u = lap_2nd_u + (up2[0] - 2 * out[0] + dn2[0]) / h2 ** 2
        lap_2nd_b = lap_2nd_b + (bp2[0] - 2 * basis[0] + bd2[0]) / h2 ** 2
        (gp, gbp), (gd, gbd) = at(x + h1 * e, C), at(x - h1 * e, C)
        lap_div_u = lap_div_u + (gp[1 + k] - gd[1 + k]) / (2 * h1)
        lap_div_b = lap_div_b + (gbp[1 + k] - gbd[1 + k]) / (2 * h1)
    assert_matches(out[d + 1], lap_div_u, 1e-7, "lap u = div grad u")
    assert_matches(basis[d + 1], lap_div_b, 1e-7, "lap basis = div grad basis")
    assert_matches(out[d + 1], lap_2nd_u, 1e-5, "lap u = second differences")
    assert_matches(basis[d + 1], lap_2nd_b, 1e-5, "lap basis = second differences")
    # lower orders are the leading channels of the higher ones
    for order in (0, 1):
        o, b, _ = forward(case, x, B, theta, n_channels(d, order))
        np.testing.assert_allclose(o, out[:o.shape[0]], rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(b, basis[:b.shape[0]], rtol=1e-14, atol=1e-14)


def test_ansatz_of_the_basis_is_the_basis_of_the_ansatz(rng):
    """g + phi (z_L c + c0) = ansatz_{g=0}(z_L) c + ansatz_g(c0): the LS rows under the ansatz."""
    case = CASES[2]
    x, params, B = build(case, rng)
    d, C = case.spec.d, case.spec.d + 2
    out, basis, _ = forward(case, x, B, params.data, C)
    phi, g = ansatz_channels(x, C)
    tb = np.empty_like(basis)
    nn.ansatz_forward(d, basis, phi, EMPTY, tb)
    c0 = np.zeros((C, x.shape[0]))
    c0[0] = params["out.c0"][0]
    t0 = np.empty_like(c0)
    nn.ansatz_forward(d, c0, phi, g, t0)
    assert_matches(tb @ params["out.c"] + t0, out, 1e-13, "ansatz by linearity")
    u = basis[0] @ params["out.c"] + params["out.c0"][0]
    assert_matches(out[0], g[0] + phi[0] * u, 1e-14, "u_out = g + phi u")


def test_deep_ritz_ansatz_vanishes_on_the_boundary(rng):
    """u_out = x (1 - x) net(x): zero at x = 0 and x = 1 whatever the network."""
    spec = nn.NetSpec(d=1, hidden=(20, 20))
    params, B = nn.init_network(spec, rng, first="uniform")
    x = np.array([[0.0], [0.5], [1.0]])
    phi = np.stack([x[:, 0] * (1 - x[:, 0]), 1 - 2 * x[:, 0], -2 * np.ones(3)])
    out, basis, tape = np.empty((3, 3)), np.empty((3, 3, 20)), np.empty(0)
    nn.mlp_forward(x, B, params.data, *spec.config, phi, EMPTY, out, basis, tape)
    assert out[0, 0] == 0.0 and out[0, 2] == 0.0 and out[0, 1] != 0.0
    raw = np.empty((3, 3))
    nn.mlp_forward(x, B, params.data, *spec.config, EMPTY, EMPTY, raw, basis, tape)
    # u_out' = (1 - 2x) u + x (1 - x) u' = u at x = 0 and -u at x = 1
    assert_matches(out[1, [0, 2]], [raw[0, 0], -raw[0, 2]], 1e-15, "u_out' on the boundary")


# --------------------------------------------------------------------------- 1D, against PyTorch
def torch_1d_net(torch, params, x, act="tanh"):
    """u, u', u'' of the same network by PyTorch's autograd (double backward), and the leaves."""
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.to_dict().items()}
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    sigma = {"tanh": torch.tanh, "sin": torch.sin}[act]
    z, l = xt, 0
    while f"dense{l}.W" in leaves:
        z = sigma(z @ leaves[f"dense{l}.W"] + leaves[f"dense{l}.b"])
        l += 1
    u = z @ leaves["out.c"] + leaves["out.c0"]
    du = torch.autograd.grad(u.sum(), xt, create_graph=True)[0][:, 0]
    d2u = torch.autograd.grad(du.sum(), xt, create_graph=True)[0][:, 0]
    return u, du, d2u, leaves


@pytest.mark.parametrize("act", ["tanh", "sin"])
def test_1d_1_20_20_1_u_du_d2u(rng, act):
    """The lecture's 1-20-20-1 network: u, u', u'' against FD and PyTorch; the gradient of a
    PINN-like loss against PyTorch's double backward."""
    spec = nn.NetSpec(d=1, hidden=(20, 20), activation=act)
    params, B = nn.init_network(spec, rng, first="uniform", uniform_range=(-3 * math.pi, 3 * math.pi))
    params["out.c0"] = [0.3]
    J = 25
    x = np.linspace(0.0, 1.0, J)[:, None]
    out, basis, tape = np.empty((3, J)), np.empty((3, J, 20)), np.empty(0)
    nn.mlp_forward(x, B, params.data, *spec.config, EMPTY, EMPTY, out, basis, tape)

    def u(xx):
        o = np.empty((1, J))
        nn.mlp_forward(xx, B, params.data, *spec.config, EMPTY, EMPTY, o, np.empty((1, J, 20)), tape)
        return o[0]

    h = 1e-5
    assert_matches(out[1], (u(x + h) - u(x - h)) / (2 * h), 1e-7, "u'")
    h = 1e-4
    assert_matches(out[2], (u(x + h) - 2 * u(x) + u(x - h)) / h ** 2, 1e-5, "u''")

    torch = pytest.importorskip("torch")
    tu, tdu, td2u, leaves = torch_1d_net(torch, params, x, act)
    for ours, theirs, what in ((out[0], tu, "u"), (out[1], tdu, "u'"), (out[2], td2u, "u''")):
        assert_matches(ours, theirs.detach().numpy(), 1e-12, f"{what} vs torch")
    f = np.sin(3 * x[:, 0])
    loss = (tu ** 2).mean() + (tdu ** 2).mean() + ((td2u - torch.tensor(f)) ** 2).mean()
    loss.backward()
    adj = np.stack([2 * out[0], 2 * out[1], 2 * (out[2] - f)]) / J
    grad = params.zeros_like()
    nn.mlp_backward(x, B, params.data, *spec.config, EMPTY, basis, tape, adj, grad.data)
    for name, leaf in leaves.items():
        assert_matches(grad[name], leaf.grad.numpy(), 1e-11, f"dL/d{name} vs torch")


# --------------------------------------------------------------------------- MLP backward
def channel_loss(out, f, which, d):
    """L and dL/d(out) for L = mean(u^2) + mean(|grad u|^2) + mean((lap u - f)^2) (terms per ``which``,
    those of the channels that ``out`` holds)."""
    C, J = out.shape
    adj = np.zeros_like(out)
    L = 0.0
    if which in ("u", "all"):
        L += np.mean(out[0] ** 2)
        adj[0] = 2 * out[0] / J
    if which in ("grad", "all") and C > 1:
        L += np.sum(out[1:1 + d] ** 2) / J
        adj[1:1 + d] = 2 * out[1:1 + d] / J
    if which in ("lap", "all") and C == d + 2:
        L += np.mean((out[d + 1] - f) ** 2)
        adj[d + 1] = 2 * (out[d + 1] - f) / J
    return L, adj


def check_param_gradient(case, rng, order, which):
    x, params, B = build(case, rng)
    theta = params.data  # B is params["fourier.B"] when trainable: perturbing theta moves it too
    d = case.spec.d
    C = n_channels(d, order)
    f = np.sin(np.sum(x, axis=1))
    out, basis, tape = forward(case, x, B, theta, C)
    L0, adj = channel_loss(out, f, which, d)
    grad = backward(case, x, B, theta, adj, basis, tape)
    assert np.all(np.isfinite(grad))

    fd = np.zeros_like(theta)
    for i in range(theta.size):
        h = 1e-5 * max(1.0, abs(theta[i]))
        keep = theta[i]
        theta[i] = keep + h
        Lp = channel_loss(forward(case, x, B, theta, C)[0], f, which, d)[0]
        theta[i] = keep - h
        Lm = channel_loss(forward(case, x, B, theta, C)[0], f, which, d)[0]
        theta[i] = keep
        fd[i] = (Lp - Lm) / (2 * h)
    rel = np.linalg.norm(grad - fd) / np.linalg.norm(fd)
    assert rel < 1e-6, f"relative error of the gradient {rel:.3g}"
    scale = np.max(np.abs(fd))
    for name in params.names:  # per parameter, so that a small block cannot hide
        sl = params.slots[name]
        if np.max(np.abs(fd[sl.start:sl.stop])) < 1e-9 * scale:  # e.g. c0 when L ignores the value
            assert np.max(np.abs(grad[sl.start:sl.stop])) < 1e-9 * scale, f"dL/d{name} should vanish"
        else:
            assert_matches(grad[sl.start:sl.stop], fd[sl.start:sl.stop], 2e-6, f"dL/d{name}")


@pytest.mark.parametrize("case", case_params(CASES))
def test_mlp_parameter_gradients_all_channels(rng, case):
    check_param_gradient(case, rng, order=2, which="all")


@pytest.mark.parametrize("which", ["u", "grad", "lap"])
@pytest.mark.parametrize("case", case_params([CASES[0], CASES[2], CASES[3]]))
def test_mlp_parameter_gradients_one_channel(rng, case, which):
    """Each channel's own path, so that no term of the backward hides behind another."""
    check_param_gradient(case, rng, order=2, which=which)


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("case", case_params([CASES[2], CASES[5]]))
def test_mlp_parameter_gradients_lower_orders(rng, case, order):
    check_param_gradient(case, rng, order=order, which="all")


# --------------------------------------------------------------------------- edge cases
@pytest.mark.parametrize("case", case_params([CASES[0], CASES[2]]))
@pytest.mark.parametrize("order", [0, 2])
def test_zero_points(rng, case, order):
    _, params, B = build(case, rng)
    d = case.spec.d
    C = n_channels(d, order)
    x = np.empty((0, d))
    out, basis, tape = forward(case, x, B, params.data, C)
    assert out.shape == (C, 0) and basis.shape == (C, 0, case.spec.n_basis)
    grad = backward(case, x, B, params.data, np.empty((C, 0)), basis, tape)
    np.testing.assert_array_equal(grad, np.zeros_like(grad))  # written (it was NaN) and zero
    F = np.empty((C, 0, case.spec.n_features))
    nn.fourier_forward(x, B, case.spec.s, case.spec.keep_x, F)
    gB, gx = np.full(B.shape, np.nan), np.empty((0, d))
    nn.fourier_backward(x, B, case.spec.s, case.spec.keep_x, F, gB, gx)
    np.testing.assert_array_equal(gB, np.zeros_like(gB))


def test_float32_arguments_compute_in_float64(rng):
    """float32 arrays in, float32 results out: the float64 results rounded once."""
    case = CASES[2]
    x, params, B = build(case, rng)
    x = x.astype(np.float32).astype(F64)  # the same points in both runs
    p32 = FlatParams(params.to_dict(), dtype=np.float32)
    params.data[...] = p32.data  # the same (representable) parameters in both runs
    C = case.spec.d + 2
    phi, g = (a.astype(np.float32) for a in ansatz_channels(x, C))  # the same values in both runs
    out64, basis64, tape = np.empty((C, x.shape[0])), np.empty((C, x.shape[0], case.spec.n_basis)), EMPTY
    nn.mlp_forward(x, params["fourier.B"], params.data, *case.spec.config, phi.astype(F64), g.astype(F64),
                   out64, basis64, tape)
    out32, basis32 = np.empty((C, x.shape[0]), np.float32), np.empty(basis64.shape, np.float32)
    nn.mlp_forward(x.astype(np.float32), p32["fourier.B"], p32.data, *case.spec.config,
                   phi, g, out32, basis32, tape)
    np.testing.assert_array_equal(out32, out64.astype(np.float32))
    np.testing.assert_array_equal(basis32, basis64.astype(np.float32))
    adj = channel_loss(out64, 0.0, "all", case.spec.d)[1].astype(np.float32).astype(F64)
    g64 = np.empty_like(params.data)
    nn.mlp_backward(x, params["fourier.B"], params.data, *case.spec.config, phi.astype(F64), basis64, tape,
                    adj, g64)
    g32 = p32.zeros_like().data
    nn.mlp_backward(x.astype(np.float32), p32["fourier.B"], p32.data, *case.spec.config,
                    phi, basis32, tape, adj.astype(np.float32), g32)
    assert g32.dtype == np.float32
    np.testing.assert_array_equal(g32, g64.astype(np.float32))


# --------------------------------------------------------------------------- layout
def test_param_layout_names_order_and_views(rng):
    spec = nn.NetSpec(d=2, hidden=(7, 5), fourier_K=3, keep_x=True, train_B=True)
    assert [n for n, _ in spec.layout()] == ["fourier.B", "dense0.W", "dense0.b", "dense1.W", "dense1.b",
                                              "out.c", "out.c0"]
    assert dict(spec.layout()) == {"fourier.B": (2, 3), "dense0.W": (8, 7), "dense0.b": (7,),
                                   "dense1.W": (7, 5), "dense1.b": (5,), "out.c": (5,), "out.c0": (1,)}
    assert list(spec.widths) == [8, 7, 5] and spec.widths.dtype == np.int64
    params, B = nn.init_network(spec, rng)
    assert params.size == spec.n_params == 6 + 56 + 7 + 35 + 5 + 5 + 1
    assert np.shares_memory(B, params.data) and B is not None
    views = spec.views(params.data)
    assert list(views) == params.names
    for name in params.names:  # the kernels' views and FlatParams' views are the same memory
        assert np.shares_memory(views[name], params[name])
        np.testing.assert_array_equal(views[name], params[name])
        assert params.slots[name].start == views[name].ctypes.data - params.data.ctypes.data >> 3
    fixed = nn.NetSpec(d=1, hidden=(4,), fourier_K=2, out_bias=False)
    assert [n for n, _ in fixed.layout()] == ["dense0.W", "dense0.b", "out.c"]
    widths, *scalars = fixed.config
    assert list(widths) == [5, 4] and scalars == [0, 2 * math.pi, True, False, False]


@pytest.mark.parametrize("kwargs", [dict(d=0), dict(d=1, activation="relu"), dict(d=1, keep_x=False),
                                    dict(d=1, train_B=True), dict(d=1, hidden=(3, 0))])
def test_netspec_rejects_inconsistent_architectures(kwargs):
    with pytest.raises(ValueError, match="NetSpec"):
        nn.NetSpec(**kwargs)


# --------------------------------------------------------------------------- initialisations
def test_glorot_and_uniform_ranges(rng):
    W = nn.init_glorot_uniform(rng, 30, 20)
    r = math.sqrt(6 / 50)
    assert W.shape == (30, 20) and np.max(np.abs(W)) <= r and np.max(np.abs(W)) > 0.9 * r
    assert abs(np.std(W) - r / math.sqrt(3)) < 0.1 * r  # the variance 2 / (fan_in + fan_out)
    U = nn.init_uniform(rng, (1, 2000), -3 * math.pi, 3 * math.pi)
    assert U.min() >= -3 * math.pi and U.max() <= 3 * math.pi and U.max() - U.min() > 5.9 * math.pi
    spec = nn.NetSpec(d=1, hidden=(20, 20))
    params, _ = nn.init_network(spec, rng, first="uniform")
    assert np.max(np.abs(params["dense0.W"])) > 5.0 and np.max(np.abs(params["dense0.b"])) > 5.0
    assert np.max(np.abs(params["dense1.W"])) <= math.sqrt(6 / 40)
    assert np.all(params["dense1.b"] == 0.0) and np.all(params["out.c0"] == 0.0)


@pytest.mark.parametrize("fan_in, lo, hi, scale", [(1, 0.0, 1.0, 1.0), (2, 0.0, 1.0, 1.0), (5, -1.0, 1.0, 2.0)])
def test_box_init_hyperplanes_cross_the_box(rng, fan_in, lo, hi, scale):
    """Each unit: largest pre-activation over the box = scale, its zero level set cuts the box,
    and the cut points are spread over the box (in 1D: the kinks are uniform in [lo, hi])."""
    fan_out = 400
    W, b = nn.init_box(rng, fan_in, fan_out, lo, hi, scale)
    corners = np.array(np.meshgrid(*[[lo, hi]] * fan_in, indexing="ij")).reshape(fan_in, -1).T
    pre = corners @ W + b  # (2^fan_in, fan_out): a linear function's extremes over a box are at corners
    np.testing.assert_allclose(pre.max(axis=0), scale, rtol=1e-12)
    assert np.all(pre.min(axis=0) < 0)
    normals = W / np.linalg.norm(W, axis=0)
    assert abs(np.mean(normals ** 2) - 1.0 / fan_in) < 0.1 / fan_in + 0.02  # random directions
    if fan_in == 1:  # the kink -b / w is the sampled point: uniform in [lo, hi]
        kinks = np.sort(-b / W[0])
        ecdf_gap = np.max(np.abs((kinks - lo) / (hi - lo) - (np.arange(fan_out) + 0.5) / fan_out))
        assert ecdf_gap < 0.1  # Kolmogorov-Smirnov: ~0.07 at 1% for n = 400


def test_init_network_box_and_gaussian_frequencies(rng):
    spec = nn.NetSpec(d=2, hidden=(50, 30), fourier_K=200)
    params, B = nn.init_network(spec, rng, hidden="box", fourier_sigma=3.0)
    assert B.shape == (2, 200) and not np.shares_memory(B, params.data)
    assert abs(np.std(B) - 3.0) < 0.3
    for l, (lo, hi) in enumerate([(0.0, 1.0), (-1.0, 1.0)]):
        W, b = params[f"dense{l}.W"], params[f"dense{l}.b"]
        best = np.sum(np.where(W > 0, hi, lo) * W, axis=0) + b
        np.testing.assert_allclose(best, 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="scheme"):
        nn.init_network(spec, rng, hidden="he")
