"""The multilevel experiment against PyTorch (issue 5): the twin computes fastopt's loss, and the claim's wiring.

The PyTorch twin (``fastopt.experiments._multilevel_torch``) must be the same computation as a
fastopt level, so its loss and gradient at the same parameters are compared tightly (float64: the
same sums in different orders, measured <= 1e-15 relative; asserted at 1e-12). The timing claim's
structure is checked on a tiny run; no speed ratio is asserted (a shared machine makes any timing
assertion flaky). Tests that need PyTorch skip without it; the ones about its absence do not need it.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt.experiments import multilevel, report
from fastopt.multilevel import LevelSpec, Poisson1D, Stage, _Objective, gauss_legendre, train_levels

PI = math.pi
TORCH_CLAIM = "fastopt's level training takes a small fraction of PyTorch's time"


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed: the comparison is skipped")


@pytest.fixture(scope="module")
def mt(torch):
    from fastopt.experiments import _multilevel_torch

    return _multilevel_torch


def _tiny_levels():
    """Two small levels of the experiment's kind (Fourier features rising, Adam then L-BFGS): a second to train."""
    return [LevelSpec(hidden=(10, 10), wavenumbers=(PI, 2 * PI), n_points=64,
                      stages=(Stage("adam", 30, {"lr": 1e-2}), Stage("lbfgs", 40))),
            LevelSpec(hidden=(10, 10), wavenumbers=tuple(PI * np.arange(1, 5)), n_points=96,
                      stages=(Stage("adam", 30, {"lr": 1e-3}), Stage("lbfgs", 40)))]


@pytest.fixture(scope="module")
def two_levels():
    return train_levels(Poisson1D.exp_sine(), _tiny_levels(), seed=0)


def _level_data(res, level, spec):
    x, r = res.rhs[level]
    _, w = gauss_legendre(spec.n_points // spec.gauss_order, spec.gauss_order)
    return x, r / res.scales[level], w


@pytest.mark.parametrize("level", [0, 1])
def test_twin_loss_and_gradient_equal_fastopts(mt, two_levels, level):
    """At the trained parameters (every gradient entry non-zero) and in chunks (as train_levels sums them)."""
    spec = _tiny_levels()[level]
    x, target, w = _level_data(two_levels, level, spec)
    net = two_levels.nets[level]
    objective = _Objective(net, x, target, w, -1.0, chunk=32)           # 2-3 chunks
    grad = net.params.zeros_like()
    value = objective(grad)
    tvalue, tgrad = mt.TorchLevel(net, x, target, w, sign=-1.0).loss_and_grad()
    assert tvalue == pytest.approx(value, rel=1e-12, abs=0)
    g = grad.data
    assert np.all(g != 0)
    np.testing.assert_allclose(tgrad, g, rtol=0, atol=1e-12 * np.abs(g).max())


def test_twin_at_a_corrections_start_has_fastopts_zero_hidden_gradient(mt, two_levels):
    """A correction starts with its output layer zeroed: both see a gradient in c, c0 only."""
    spec = _tiny_levels()[1]
    x, target, w = _level_data(two_levels, 1, spec)
    net = mt.level_start(spec, 1, seed=0)
    assert not net.params["out.c"].any()
    objective = _Objective(net, x, target, w, -1.0, chunk=256)
    grad = net.params.zeros_like()
    value = objective(grad)
    tvalue, tgrad = mt.TorchLevel(net, x, target, w).loss_and_grad()
    assert tvalue == pytest.approx(value, rel=1e-12, abs=0)
    np.testing.assert_allclose(tgrad, grad.data, rtol=0, atol=1e-12 * np.abs(grad.data).max())
    hidden = net.params.size - net.params["out.c"].size - 1
    assert not tgrad[:hidden].any() and tgrad[hidden:].any()


def test_twins_second_derivative_is_fastopts_channel(mt, torch, two_levels):
    net = two_levels.nets[1]
    x = np.ascontiguousarray(np.linspace(0.0, 1.0, 41)[:, None])
    want = net.forward(x, 2).u[2]
    p = mt.torch_params(net)
    got = mt._second_derivative(net, p, torch.tensor(x, requires_grad=True)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())


def test_pytorch_right_hand_side_is_train_levels(mt, two_levels):
    """``f - L u_0`` by double backward through the frozen level-0 twin, against the rhs fastopt trained on."""
    problem = Poisson1D.exp_sine()
    x, r1 = two_levels.rhs[1]
    got = mt.lower_levels_rhs(problem, two_levels.nets[:1], two_levels.scales[:1], x)
    np.testing.assert_allclose(got, r1, rtol=0, atol=1e-13 * np.abs(problem.f(x[:, 0])).max())
    x0, r0 = two_levels.rhs[0]
    np.testing.assert_array_equal(mt.lower_levels_rhs(problem, [], [], x0), r0)


def test_twin_rejects_a_network_without_the_box_ansatz(mt):
    from fastopt.nn import MLP

    with pytest.raises(ValueError, match="box ansatz"):
        mt.TorchLevel(MLP(1, (4,), seed=0), np.zeros((3, 1)), np.zeros(3), np.ones(3) / 3)


def test_compare_level_tracks_fastopts_losses(mt, two_levels):
    """A few timed steps from the level's start: both trajectories, the agreement, the times (no ratio asserted)."""
    spec = _tiny_levels()[1]
    c = mt.compare_level(Poisson1D.exp_sine(), spec, 1, two_levels.nets, two_levels.scales, seed=0, steps=8,
                         evaluations=2, warmup=1, blocks=2, chunk=32)
    assert c["agree"], {k: c[k] for k in ("start_rel_diff", "grad_rel_diff", "track_rel_diff", "rhs_rel_diff")}
    assert c["steps"] == 8 and c["blocks"] == 2 and c["track_steps"] == 8 and c["lr"] == 1e-3
    assert c["losses"].shape == c["torch_losses"].shape == (8,)
    np.testing.assert_allclose(c["torch_losses"], c["losses"], rtol=1e-12)
    assert c["losses"][0] == pytest.approx(c["start_loss"], rel=1e-15)    # the same start as the first step's
    assert c["losses"][-1] < c["losses"][0]
    for key in ("adam_us", "torch_adam_us", "adam_mean_us", "torch_adam_mean_us", "eval_us", "torch_eval_us"):
        assert c[key] > 0 and math.isfinite(c[key]), key
    assert c["threads"] in c["torch_by_threads"]


def _tiny_specs(quick=False):
    return _tiny_levels()


def _tiny_single(quick=False):
    return LevelSpec(hidden=(12,), wavenumbers=tuple(PI * np.arange(1, 5)), n_points=96,
                     stages=(Stage("adam", 20, {"lr": 1e-2}), Stage("lbfgs", 20)))


@pytest.fixture
def tiny_experiment(monkeypatch):
    """The experiment's run at toy size (its level and single-network specs replaced), a few Adam steps compared."""
    monkeypatch.setattr(multilevel, "level_specs", _tiny_specs)
    monkeypatch.setattr(multilevel, "single_spec", _tiny_single)
    monkeypatch.setitem(multilevel.TORCH_STEPS, True, (6, 2, 2))
    return multilevel


def test_run_with_torch_reports_and_claims_the_comparison(torch, tiny_experiment):
    r = tiny_experiment.run(quick=True, seed=0, torch=True)
    assert [c["level"] for c in r["torch"]] == [0, 1]
    assert all(c["agree"] for c in r["torch"])
    assert r["torch_time_s"] > 0
    speed = r["speed"]
    assert set(speed["adam_us"]) == {f"Adam level {l} {who}" for l in (0, 1) for who in ("fastopt", "PyTorch")}
    assert set(speed["torch_eval_us"]) == {"eval level 0 PyTorch", "eval level 1 PyTorch"}
    assert "per Adam step" in speed["torch_ratio"] and "PyTorch twin" in speed["what"]
    assert report._speed_text(speed)                       # the demo can print it
    claims = tiny_experiment.claims(r)
    timing = [c for c in claims if c[0].startswith(TORCH_CLAIM)]
    assert len(timing) == 1 and len(claims) == 4
    claim, number, passed = timing[0]
    assert f">= {multilevel.TORCH_FACTOR}x per Adam step" in claim
    assert "per Adam step" in number and "losses agree" in number and "DIFFER" not in number
    assert passed in (True, False)                          # whether it held is a timing: not asserted


def test_without_torch_the_claim_is_absent_not_failed(tiny_experiment, monkeypatch):
    r = tiny_experiment.run(quick=True, seed=0)              # torch=False: the default
    assert r["torch"] is None and r["torch_time_s"] is None and "torch_ratio" not in r["speed"]
    claims = tiny_experiment.claims(r)
    assert len(claims) == 3 and not any(c[0].startswith(TORCH_CLAIM) for c in claims)
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None)   # PyTorch "not installed"
    assert multilevel._want_torch("auto", "cpu") is False


def test_torch_option_is_validated():
    assert multilevel._want_torch(False, "gpu") is False
    assert multilevel._want_torch("auto", "gpu") is False           # the comparison is on the CPU
    with pytest.raises(ValueError, match="runs on the CPU"):
        multilevel._want_torch(True, "gpu")
    with pytest.raises(ValueError, match="True, False or 'auto'"):
        multilevel._want_torch("yes", "cpu")


def test_the_demo_asks_for_the_comparison(tmp_path, monkeypatch):
    seen = {}

    def fake_run(**kwargs):
        seen.update(kwargs)
        return {"speed": None}

    monkeypatch.setattr(multilevel, "run", fake_run)
    monkeypatch.setattr(multilevel, "claims", lambda result: [("ok", "1", True)])
    monkeypatch.setattr(multilevel, "plot", lambda result, path: None)
    report.run_report(["multilevel"], quick=True, out=tmp_path, progress=False, stream=None)
    assert seen["torch"] == "auto" and seen["quick"] is True
