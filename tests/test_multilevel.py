"""fastopt.multilevel: the residual equations, the summed solution, the scales, and bad input.

A tiny two-level run (a few hundred optimiser steps on 32-64 points, well under a second of
arithmetic) is shared by the tests of the API; the accuracy the method is for (relative L2
~1e-7 after four levels) is the experiment's (tests/test_experiments.py, and `fastopt demo`).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt.multilevel import (LevelSpec, MultilevelSolution, Poisson1D, Stage, gauss_legendre, relative_errors,
                                residual_scale, train_levels)

PI = math.pi


def _levels(scale="solve", second_points=64):
    return [LevelSpec(hidden=(10,), wavenumbers=(PI,), n_points=64, stages=(Stage("adam", 150, {"lr": 1e-2}),
                                                                              Stage("lbfgs", 100))),
            LevelSpec(hidden=(10,), wavenumbers=(PI, 2 * PI, 3 * PI), n_points=second_points, scale=scale,
                      stages=(Stage("lbfgs", 150),))]


@pytest.fixture(scope="module")
def two_levels():
    return train_levels(Poisson1D.exp_sine(), _levels(), seed=0)


def test_level_one_solves_the_residual_equation(two_levels):
    """The right-hand side of level 1 is f - L u_0 = f + u_0'' (for -u'' = f) at its points."""
    problem = Poisson1D.exp_sine()
    x, r1 = two_levels.rhs[1]
    u0 = two_levels.nets[0].forward(x, 2).u * two_levels.scales[0]
    np.testing.assert_allclose(r1, problem.f(x[:, 0]) - problem.sign * u0[2], rtol=0, atol=1e-12 * np.abs(r1).max())
    x0, r0 = two_levels.rhs[0]
    np.testing.assert_array_equal(r0, problem.f(x0[:, 0]))     # level 0 solves the PDE itself


def test_summed_solution_is_the_scaled_sum_of_the_levels(two_levels):
    x = np.linspace(0, 1, 37)
    got = two_levels.solution.channels(x, order=2)
    want = sum(s * net.forward(np.ascontiguousarray(x[:, None]), 2).u for net, s in
               zip(two_levels.nets, two_levels.scales))
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(two_levels.solution(x), want[0], rtol=1e-13, atol=1e-15)
    assert got.shape == (3, 37)
    assert abs(got[0, 0]) < 1e-15 and abs(got[0, -1]) < 1e-15        # the box ansatz: u(0) = u(1) = 0
    first = two_levels.solution.truncated(1).channels(x, 1)
    np.testing.assert_allclose(first, two_levels.scales[0] * two_levels.nets[0].forward(
        np.ascontiguousarray(x[:, None]), 1).u, rtol=1e-14)


def test_error_falls_from_level_0_to_level_1(two_levels):
    e0, e1 = two_levels.errors
    # The residual loss weighs the error's high frequencies most, so H1 falls (0.41e-3 -> 0.18e-3 .. 0.22e-3
    # depending on the kernels' rounding: this tiny run's trajectory is sensitive to it), while L2 of a single
    # level may stall (its smooth part is removed last; the experiment claims L2 only over all levels).
    assert e1["h1"] < e0["h1"], two_levels.errors
    r0, r1 = two_levels.residuals
    assert r1 < r0


def test_scale_is_the_size_of_the_error(two_levels):
    """The "solve" rule: s_1 is the RMS of e_1 = u - u_0, up to the grid's O(h^2)."""
    problem = Poisson1D.exp_sine()
    x = np.linspace(0, 1, 2001)
    e1 = problem.u(x) - two_levels.solution.truncated(1)(x)
    rms = math.sqrt(np.mean(e1 ** 2))
    assert two_levels.scales[0] == pytest.approx(residual_scale(problem.f(np.linspace(0, 1, 4097)), -1.0))
    assert two_levels.scales[1] == pytest.approx(rms, rel=0.05)


def test_a_correction_starts_where_the_previous_level_ended(two_levels):
    """The correction's output layer starts at zero: level 1's first loss is the sum's loss before it."""
    x1, r1 = two_levels.rhs[1]
    x, w = gauss_legendre(8, 8)
    np.testing.assert_array_equal(x, x1)
    assert two_levels.histories[1][0] == pytest.approx(float(w @ (r1 * r1)), rel=1e-12)
    assert two_levels.histories[1][-1] < two_levels.histories[1][0]
    assert [len(h) for h in two_levels.histories] == [sum(s) + 2 for s in two_levels.stage_steps]


@pytest.mark.parametrize("stage", [Stage("lbfgs", 150), Stage("adam", 200, {"lr": 1e-2})], ids=["lbfgs", "adam"])
def test_scaling_helps(stage):
    """A level's right-hand side is as small as the error left (1e-7 of u deep in a run).

    Scaled, the level's problem is the same whatever that size: the same relative error as for
    a solution of size one. Unscaled, a freshly initialised O(1) network must shrink to 1e-7 (Adam
    moves each weight by ~lr per step) and L-BFGS stops at its absolute tolerances.
    """
    def level(amp, scale):
        problem = Poisson1D(f=lambda x: amp * PI ** 2 * np.sin(PI * x), u=lambda x: amp * np.sin(PI * x),
                            du=lambda x: amp * PI * np.cos(PI * x))
        spec = LevelSpec(hidden=(10,), n_points=32, scale=scale, stages=(stage,))
        return train_levels(problem, [spec], seed=0).errors[0]["l2"]

    reference = level(1.0, "solve")
    # the same problem up to rounding (which the optimiser's path amplifies a little)
    assert reference / 3 < level(1e-7, "solve") < 3 * reference
    assert level(1e-7, None) > 100 * reference                              # stalled or O(1) relative error
    assert reference < 0.05


def test_rms_rule_and_fixed_scale():
    problem = Poisson1D.sine(1)
    spec = LevelSpec(hidden=(4,), n_points=16, scale="rms", wavenumber=2.0, stages=(Stage("sgd", 2, {"lr": 0.0}),))
    res = train_levels(problem, [spec, LevelSpec(hidden=(4,), n_points=16, scale=0.25,
                                                 stages=(Stage("momentum", 2, {"lr": 0.0}),))])
    x, r = res.rhs[0]
    assert res.scales[0] == pytest.approx(math.sqrt(np.mean(r ** 2)) / 4.0)
    assert res.scales[1] == 0.25


def test_residual_scale_of_a_sine():
    x = np.linspace(0, 1, 2049)
    # sign u'' = rhs with u = sin(pi x): rhs = -sign pi^2 sin(pi x); RMS of sin(pi x) on the grid ~ 1/sqrt(2)
    for sign in (1.0, -1.0):
        assert residual_scale(-sign * PI ** 2 * np.sin(PI * x), sign) == pytest.approx(1 / math.sqrt(2), rel=1e-5)


def test_gauss_legendre_rule():
    x, w = gauss_legendre(5, 4)
    assert x.shape == (20, 1) and w.shape == (20,)
    assert w.sum() == pytest.approx(1.0, abs=1e-15)
    assert float(w @ x[:, 0] ** 7) == pytest.approx(1 / 8, rel=1e-14)


def test_relative_errors_of_the_exact_solution_vanish():
    problem = Poisson1D.sine(2)

    class Exact:
        def channels(self, x, order):
            return np.stack([problem.u(x[:, 0]), problem.du(x[:, 0])])

    x, w = gauss_legendre(32)
    assert relative_errors(Exact(), problem, x, w) == {"l2": 0.0, "h1": 0.0}


def test_problem_without_exact_solution_has_no_errors():
    problem = Poisson1D(f=lambda x: np.ones_like(x))
    res = train_levels(problem, [LevelSpec(hidden=(4,), n_points=16, stages=(Stage("lbfgs", 5),))])
    assert res.errors == [None]
    assert res.summary()[0]["l2"] is None


def test_float32_levels_run():
    res = train_levels(Poisson1D.sine(1), [LevelSpec(hidden=(6,), n_points=16, stages=(Stage("adam", 20, {"lr": 1e-2}),))],
                       dtype=np.float32)
    assert res.nets[0].dtype == np.float32
    assert np.isfinite(res.solution(np.linspace(0, 1, 5))).all()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(problem="poisson"), TypeError, "problem must be a Poisson1D"),
    (dict(levels=[]), ValueError, "levels is empty"),
    (dict(levels=[object()]), TypeError, r"levels\[0\] must be a LevelSpec"),
    (dict(levels=[LevelSpec(n_points=30)]), ValueError, "multiple of gauss_order"),
    (dict(levels=[LevelSpec(scale="maximum")]), ValueError, "scale must be one of"),
    (dict(levels=[LevelSpec(scale=-1.0)]), ValueError, "scale must be > 0"),
    (dict(levels=[LevelSpec(wavenumbers=(PI, -1.0))]), ValueError, "wavenumbers must be finite and > 0"),
    (dict(levels=[LevelSpec(stages=())]), ValueError, "stages is empty"),
    (dict(levels=[LevelSpec(stages=(Stage("newton", 10),))]), ValueError, "names the optimiser 'newton'"),
    (dict(levels=[LevelSpec(stages=(Stage("adam", 0),))]), ValueError, r"stages\[0\].steps"),
    (dict(levels=[LevelSpec(stages=(Stage("adam", 5, "lr"),))]), TypeError, "options must be a dict"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(chunk=0), ValueError, "chunk"),
])
def test_bad_input_is_refused_before_training(kwargs, error, match):
    args = dict(problem=Poisson1D.sine(1), levels=[LevelSpec(hidden=(4,), n_points=16)])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        train_levels(args.pop("problem"), args.pop("levels"), **args)


def test_bad_problems():
    with pytest.raises(ValueError, match="sign must be"):
        Poisson1D(f=np.sin, sign=2.0)
    with pytest.raises(TypeError, match="f must be a callable"):
        Poisson1D(f=1.0)
    with pytest.raises(ValueError, match="both the exact u and du"):
        Poisson1D(f=np.sin, u=np.sin)
    with pytest.raises(ValueError, match="networks but"):
        MultilevelSolution([], [1.0])
