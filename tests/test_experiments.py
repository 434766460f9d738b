"""The lecture's experiments at `--quick` size: every claim holds, results are deterministic, figures draw.

Each experiment runs once per module (fixtures); the quick sizes are what `fastopt demo --quick`
runs, so a claim that fails here fails the demo too.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastopt.experiments import gd_quadratic, ls_deep_ritz, multilevel, pinn_optimisers, report, sgd_noise
from fastopt.experiments._common import moving_average

QUICK = [gd_quadratic, sgd_noise, report.BatchSizeExperiment, pinn_optimisers, ls_deep_ritz, multilevel]


@pytest.fixture(scope="module")
def results():
    return {}


def _result(results, exp):
    if exp.__name__ not in results:
        results[exp.__name__] = exp.run(quick=True, seed=0)
    return results[exp.__name__]


@pytest.mark.parametrize("exp", QUICK, ids=lambda e: e.__name__.rsplit(".", 1)[-1])
def test_claims_hold_at_quick_size(exp, results):
    result = _result(results, exp)
    claims = exp.claims(result)
    assert claims, "an experiment must make at least one claim"
    for claim, number, passed in claims:
        assert isinstance(claim, str) and isinstance(number, str)
        assert passed is True or passed is False or isinstance(passed, np.bool_)
    failed = [(c, n) for c, n, ok in claims if not ok]
    assert not failed, failed
    speed = result["speed"]
    assert speed["what"] and any(k.endswith("_us") for k in speed)


@pytest.mark.parametrize("exp", [gd_quadratic, sgd_noise], ids=["gd_quadratic", "sgd_noise"])
def test_deterministic_for_a_seed(exp, results):
    again = exp.run(quick=True, seed=0)
    first = _result(results, exp)
    assert [c[:2] for c in exp.claims(again)] == [c[:2] for c in exp.claims(first)]


def test_gd_rates_match_the_prediction(results):
    r = _result(results, gd_quadratic)
    for row in r["rows"]:
        assert row["measured"] == pytest.approx(row["predicted"], abs=5e-3), row["rate"]


def test_sgd_plateau_prediction():
    lam = np.array([0.5, 2.0])
    # per eigenvalue gamma s^2 / (2 l - gamma l^2)
    assert sgd_noise.plateau(lam, 0.1, 1e-2) == pytest.approx(1e-3 / (1 - 0.025) + 1e-3 / (4 - 0.4))


def test_multilevel_levels_rise_in_frequency():
    specs = multilevel.level_specs(quick=False)
    assert [max(s.wavenumbers) / np.pi for s in specs] == [2, 4, 8, 16]
    single = multilevel.single_spec(quick=False)
    n_levels = sum(s.make_net(0).params.size for s in specs)
    assert abs(single.make_net(0).params.size - n_levels) < 0.05 * n_levels      # comparable size
    total = lambda specs, name: sum(st.steps for s in specs for st in s.stages if st.name == name)
    assert total([single], "adam") == total(specs, "adam") and total([single], "lbfgs") == total(specs, "lbfgs")


def test_moving_average():
    np.testing.assert_allclose(moving_average([1.0, 3.0, 5.0, 7.0], 2), [1.0, 2.0, 4.0, 6.0])
    assert moving_average([], 5).size == 0


@pytest.mark.parametrize("exp", QUICK, ids=lambda e: e.__name__.rsplit(".", 1)[-1])
def test_plots_write_a_png(exp, results, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "fig.png"
    exp.plot(_result(results, exp), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
