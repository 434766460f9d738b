"""pytest configuration of the benchmark suites (bench/bench_*.py).

Run:  OMP_WAIT_POLICY=PASSIVE python -m pytest bench/ --benchmark-only -q [--bench-summary bench/results/run]

- ``OMP_WAIT_POLICY=PASSIVE``: PyTorch and Numba each bring an OpenMP runtime; with the
  default policy a runtime's idle threads spin for a while after each parallel region
  and steal the 2 cores from the other. Set here too (before either runtime starts) in
  case the caller forgot; the summary says which. ``BENCH_OMP_DEFAULT=1`` (with
  OMP_WAIT_POLICY unset) leaves the runtimes' default policy, for a sensitivity run only.
- ``--bench-summary PREFIX`` writes the end-of-session summary to ``PREFIX.md`` and
  ``PREFIX.json`` (it is always printed).

Helpers live in ``_report.py`` (timing, ratios, summary) and ``_probe.py`` (the
bandwidth ceiling); they are imported by plain name, so this folder goes on sys.path.
"""
from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

_OMP_GIVEN = "OMP_WAIT_POLICY" in os.environ
if os.environ.get("BENCH_OMP_DEFAULT") != "1":  # BENCH_OMP_DEFAULT=1: keep the runtimes' default policy
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import _report  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--bench-summary", default=None, metavar="PREFIX",
                     help="write the benchmark summary (ratios, targets) to PREFIX.md and PREFIX.json")


@pytest.fixture(scope="session")
def torch():
    """The torch module; every test that takes it skips cleanly when PyTorch is missing."""
    return pytest.importorskip("torch", reason="PyTorch is not installed: its rows are skipped")


@pytest.fixture
def timed():
    """``timed(benchmark, fn, group=..., label=...)``: see ``_report.timed``."""
    return _report.timed


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _report.RESULTS:
        return
    tr = terminalreporter
    tr.section("fastopt benchmark summary (ratios measured in this run)")
    if not _OMP_GIVEN:
        tr.write_line("note: OMP_WAIT_POLICY was not set by the caller; conftest set it to PASSIVE")
    for line in _report.summary_lines():
        tr.write_line(line)
    prefix = config.getoption("--bench-summary")
    if prefix:
        for path in _report.write_summary(prefix):
            tr.write_line(f"written: {path}")
