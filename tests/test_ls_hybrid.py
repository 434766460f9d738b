"""The LS system assembled from a network (fused, tile by tile) and the LS-hybrid trainer.

Oracles: the plain path (the whole basis materialised with ``MLP.basis``, the operator rows and
the Gram matrix built explicitly in NumPy), the quadratic's own optimality (the energy at the
solved coefficients is below every perturbation), central finite differences of the reduced loss
``L(c(w), w)`` for the variable-projection gradient, and plain Adam on the same problem.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from fastopt import ls, quadrature
from fastopt.nn import MLP, Ansatz
from fastopt.optim import Adam
from fastopt.problems import Energy, LeastSquares


def _explicit_basis(net, x, order):
    """(C, J, N + bias) channels of the transformed basis and the offset channels, by NumPy alone."""
    Z = net.basis(x, order, transformed=False)
    phi, g = net.ansatz_channels(x, order)
    d = net.d
    C = Z.shape[0]
    Vt = np.empty_like(Z)
    Vt[0] = phi[0][:, None] * Z[0]
    if C > 1:
        for m in range(d):
            Vt[1 + m] = phi[1 + m][:, None] * Z[0] + phi[0][:, None] * Z[1 + m]
    if C == d + 2:
        Vt[d + 1] = (phi[d + 1][:, None] * Z[0] + 2 * sum(phi[1 + m][:, None] * Z[1 + m] for m in range(d))
                     + phi[0][:, None] * Z[d + 1])
    if net.out_bias:
        Vt = np.concatenate([Vt, phi[:, :, None]], axis=2)
    return Vt, g


@pytest.mark.parametrize("ansatz", [False, True])
@pytest.mark.parametrize("tile", [7, 1000])
def test_fused_pinn_system_equals_the_materialised_one(ansatz, tile):
    net = MLP(1, (6, 5), seed=1, ansatz=Ansatz.box(0.0, 1.0) if ansatz else None)
    x, w = quadrature.gauss_legendre(5, 0.0, 1.0, cells=9)
    f = np.cos(3 * x[:, 0])
    problem = LeastSquares.pinn(x, f, w, k=2.0)
    system = ls.assemble(net, x, problem, tile=tile)
    Vt, g = _explicit_basis(net, x, 2)
    Phi = 2.0 * Vt[0] + Vt[2]
    y = f - (2.0 * g[0] + g[2])
    A = Phi.T @ (w[:, None] * Phi)
    b = Phi.T @ (w * y)
    np.testing.assert_allclose(system.A, A, rtol=0, atol=1e-12 * np.abs(A).max())
    np.testing.assert_allclose(system.b, b, rtol=0, atol=1e-12 * np.abs(b).max())
    assert system.A.shape == (net.n_basis + 1,) * 2


def test_fused_energy_system_and_its_minimiser():
    net = MLP(1, (8, 6), seed=2, ansatz=Ansatz.box(0.0, 1.0))
    x, w = quadrature.gauss_legendre(6, 0.0, 1.0, cells=10)
    f = 32 * math.pi * np.cos(16 * math.pi * x[:, 0])
    problem = Energy(x, f, w, k=0.5)
    system = ls.assemble(net, x, problem, tile=13)
    Vt, g = _explicit_basis(net, x, 1)
    A = Vt[1].T @ (w[:, None] * Vt[1]) + 0.5 * Vt[0].T @ (w[:, None] * Vt[0])
    b = -(Vt[0].T @ (w * (f + 0.5 * g[0])) + Vt[1].T @ (w * g[1]))
    np.testing.assert_allclose(system.A, A, rtol=0, atol=1e-12 * np.abs(A).max())
    np.testing.assert_allclose(system.b, b, rtol=0, atol=1e-12 * np.abs(b).max())
    c = ls.solve(system.A, system.b, reg=0.0).c
    N = net.n_basis
    net.params["out.c"], net.params["out.c0"] = c[:N], c[N:]
    adj = np.empty((2, x.shape[0]))
    best = problem(net.forward(x, 1).u, adj)
    rng = np.random.default_rng(0)
    for _ in range(5):                              # the quadratic's minimum: every perturbation is worse
        delta = 1e-3 * rng.standard_normal(c.size)
        net.params["out.c"], net.params["out.c0"] = c[:N] + delta[:N], c[N:] + delta[N:]
        assert problem(net.forward(x, 1).u, adj) > best


def test_variable_projection_gradient_matches_finite_differences_of_the_reduced_loss():
    net = MLP(1, (5, 4), seed=3, ansatz=Ansatz.box(0.0, 1.0))
    x, w = quadrature.gauss_legendre(6, 0.0, 1.0, cells=8)
    make = lambda x, w: LeastSquares.pinn(x, -np.sin(2 * math.pi * x[:, 0]) * 4 * math.pi ** 2, w)   # noqa: E731
    trainer = ls.LSHybrid(net, (x, w), make)

    def reduced_loss():
        trainer.solve_coefficients(x, w)
        adj = np.empty((3, x.shape[0]))
        return make(x, w)(net.forward(x, 2).u, adj)

    reduced_loss()
    _, grad = net.loss_and_grad(x, make(x, w), 2)
    hidden = [n for n in net.params.names if not n.startswith("out.")]
    theta = net.params.data
    h = 1e-6
    checked = 0
    for name in hidden:
        sl = net.params.slots[name]
        for i in range(sl.start, sl.stop):
            old = theta[i]
            theta[i] = old + h
            lp = reduced_loss()
            theta[i] = old - h
            lm = reduced_loss()
            theta[i] = old
            fd = (lp - lm) / (2 * h)
            assert abs(grad.data[i] - fd) <= 1e-6 * max(1.0, np.abs(grad.data).max()), (name, i)
            checked += 1
    reduced_loss()
    assert checked == sum(net.params[n].size for n in hidden)


def test_ls_hybrid_beats_adam_on_an_oscillatory_regression():
    target = lambda x: np.sin(6 * math.pi * x[:, 0]) * np.exp(-x[:, 0])   # noqa: E731
    x, w = quadrature.gauss_legendre(8, 0.0, 1.0, cells=64)
    kw = dict(hidden=(20, 20), seed=0, init="box", first_init="box")
    net = MLP(1, **kw)
    trainer = ls.LSHybrid(net, (x, w), lambda x, w: LeastSquares.regression(target(x), w), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.IllConditionedWarning)
        trainer.run(300)
    adam_net = MLP(1, **kw)
    opt, grad = Adam(adam_net.params, lr=1e-3), adam_net.params.zeros_like()
    problem = LeastSquares.regression(target(x), w)
    for _ in range(300):
        adam_loss, _ = adam_net.loss_and_grad(x, problem, 0, grad)
        opt.step(grad)
    ls_loss = trainer.history["loss"][-1]
    assert ls_loss < 1e-2 * adam_loss
    assert len(trainer.history["condition"]) == 300 and all(np.isfinite(trainer.history["loss"]))


def test_fresh_points_and_error_history():
    exact = lambda x: (x[:, 0] * np.sin(4 * math.pi * x[:, 0]),                       # noqa: E731
                       np.sin(4 * math.pi * x[:, 0]) + 4 * math.pi * x[:, 0] * np.cos(4 * math.pi * x[:, 0]))
    f = lambda x: (8 * math.pi * np.cos(4 * math.pi * x[:, 0])                         # noqa: E731
                   - 16 * math.pi ** 2 * x[:, 0] * np.sin(4 * math.pi * x[:, 0]))
    net = MLP(1, (20, 10), seed=0, ansatz=Ansatz.box(0.0, 1.0), first_init="uniform")
    trainer = ls.LSHybrid(net, lambda k, rng: quadrature.stratified(400, rng), lambda x, w: Energy(x, f(x), w),
                          fresh_points=True, exact=exact, eval_points=quadrature.gauss_legendre(8, cells=100),
                          record_every=5, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.IllConditionedWarning)
        hist = trainer.run(40)
    assert hist["step"] == list(range(0, 40, 5))
    assert len(hist["h1_error"]) == 8 and all(0 < e < 1 for e in hist["h1_error"])
    assert hist["l2_error"][-1] < 0.2


def test_bad_input():
    net = MLP(1, (4,), seed=0)
    x, w = quadrature.uniform(10)
    with pytest.raises(TypeError, match="ls.assemble: problem must be"):
        ls.assemble(net, x, object())
    with pytest.raises(ValueError, match="ls.assemble: x must have one row per point"):
        ls.assemble(net, x[:5], LeastSquares.regression(np.zeros(10), w))
    with pytest.raises(TypeError, match="LSHybrid: sample must be"):
        ls.LSHybrid(net, 3, lambda x, w: None)
    with pytest.raises(ValueError, match="LSHybrid: eval_points"):
        ls.LSHybrid(net, (x, w), lambda x, w: None, exact=lambda x: x)
    with pytest.raises(ValueError, match="LSHybrid: reg must be >= 0"):
        ls.LSHybrid(net, (x, w), lambda x, w: None, reg=-1.0)
