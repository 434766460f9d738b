"""`fastopt demo`: parsing, the report folder, and the exit status when a claim fails."""
from __future__ import annotations

import subprocess
import sys

import pytest

from fastopt import cli
from fastopt.experiments import gd_quadratic, report


def test_demo_writes_report_and_figure(tmp_path, capsys):
    out = tmp_path / "rep"
    assert cli.main(["demo", "gd_quadratic", "--quick", "--out", str(out), "--seed", "3", "--no-progress"]) == 0
    text = (out / "report.md").read_text()
    assert "## gd_quadratic" in text and "| experiment | claim | number | result |" in text
    assert "seed 3" in text and "quick" in text
    printed = capsys.readouterr().out
    assert "PASS" in printed and "claims passed" in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in text
    else:
        assert (out / "gd_quadratic.png").read_bytes()[:4] == b"\x89PNG"
        assert "![gd_quadratic](gd_quadratic.png)" in text


def test_demo_exits_1_when_a_claim_fails(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gd_quadratic, "claims", lambda result: [("the moon is cheese", "42", False)])
    assert cli.main(["demo", "gd_quadratic", "--quick", "--out", str(tmp_path), "--no-progress"]) == 1
    assert "**FAIL**" in (tmp_path / "report.md").read_text()
    assert "FAIL" in capsys.readouterr().out


def test_an_experiment_that_raises_fails_the_demo(tmp_path, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(gd_quadratic, "run", broken)
    r = report.run_report(["gd_quadratic"], quick=True, out=tmp_path, progress=False, stream=None)
    assert not r["passed"]
    assert r["rows"] == [{"experiment": "gd_quadratic", "claim": "the experiment runs",
                          "number": "RuntimeError: boom", "passed": False}]


def test_a_missing_experiment_module_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setitem(report.EXPERIMENTS, "ls_deep_ritz", "fastopt.experiments._not_written_yet")
    r = report.run_report(["ls_deep_ritz"], quick=True, out=tmp_path, progress=False, stream=None)
    assert r["passed"] and r["rows"] == []
    assert "ls_deep_ritz" in r["skipped"]
    assert "Skipped: module fastopt.experiments._not_written_yet does not exist yet" in r["report"].read_text()


@pytest.mark.parametrize("argv", [["demo", "bogus"], ["demo", "--backend", "tpu"], ["demo", "--seed", "x"]])
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "usage: fastopt demo" in capsys.readouterr().err


def test_registry_lists_the_lecture_experiments():
    assert list(report.EXPERIMENTS) == ["gd_quadratic", "sgd_noise", "batch_size", "pinn_optimisers",
                                        "ls_deep_ritz", "multilevel"]
    with pytest.raises(ValueError, match="unknown experiment"):
        report.run_report(["nope"], stream=None)


def test_python_m_fastopt_demo(tmp_path):
    """The real entry point, in a subprocess: exit status 0 and the report on disk."""
    out = subprocess.run([sys.executable, "-m", "fastopt", "demo", "sgd_noise", "--quick", "--out", str(tmp_path),
                          "--no-progress"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "report.md").is_file()
    assert "sgd_noise" in out.stdout
