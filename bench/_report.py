"""Timing, ratios and the end-of-session summary shared by the bench_*.py suites.

The rule (CONVENTIONS.md, rule 10): warm up the JIT first, time the reference and the
fast path in the same run, report ratios against a ceiling measured in that run. The
machine is shared, so a lone absolute time means little; a ratio of two rows timed
minutes apart in the same process means more.

How a suite uses it:

- ``timed(benchmark, fn, group=..., label=...)`` warms ``fn`` up, picks rounds and
  iterations from a time budget, runs ``benchmark.pedantic`` (so pytest-benchmark
  prints the rows of one ``group`` side by side), and records the per-call min and
  median under ``(group, label)``;
- ``record_samples(group, label, samples)`` records times measured another way (in a
  child process, for instance);
- ``ratio(...)``, ``difference(...)`` and ``value(...)``, called at import time, declare
  what to report and the target, if any. A ratio is ``time(baseline) / time(subject)``:
  a speed-up of the subject, or, against the probe, the fraction of the ceiling it
  reaches. Each is computed as soon as both rows exist and written into the
  ``extra_info`` of the benchmark that completed it (so it lands in
  ``--benchmark-json``), and again in the summary at the end of the session.

The verdict uses the *minimum* per-call time of each row (best of N rounds: on a
shared machine noise only ever adds time); the ratio of medians is printed beside it.

The machine is shared: before each row ``timed`` waits (up to ``QUIET_WAIT_S``) for the
other processes to leave the cores idle, and it records how many cores *other*
processes used while the row ran (``/proc/stat`` busy time minus this process's own
CPU time, per second of wall time) and the hypervisor's steal time. The summary shows
the worst of the two rows of each ratio; above ``CONTENDED`` the ratio is flagged.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field

__all__ = ["timed", "record_samples", "ratio", "difference", "value", "best_of", "summary_section", "RESULTS",
           "Target", "fmt_n"]

#: wait at most this long for quiet cores before a row; flag rows where others used more
QUIET_WAIT_S = float(os.environ.get("BENCH_QUIET_WAIT_S", "20"))
QUIET_BUDGET_S = float(os.environ.get("BENCH_QUIET_BUDGET_S", "240"))  # in all, per session
QUIET_CORES = 0.15
CONTENDED = 0.25

#: (group, label) -> {"min": s, "median": s, "rounds": int, "iterations": int, "others_cores": ...}
RESULTS: dict[tuple[str, str], dict] = {}
_TARGETS: list["Target"] = []
_BEST_OF: list[tuple[str, str, tuple]] = []
_SECTIONS: list = []


def fmt_n(n: int) -> str:
    """1000 -> '1e3', 30000000 -> '3e7', 4096 -> '2^12'."""
    if n > 0 and n & (n - 1) == 0 and n >= 4096:
        return f"2^{n.bit_length() - 1}"
    e = int(math.floor(math.log10(n))) if n > 0 else 0
    mant = n / 10 ** e
    return f"{mant:g}e{e}" if mant != 1 else f"1e{e}"


@dataclass
class Target:
    """One reported quantity: a ratio, a difference or a value, with an optional target."""

    name: str
    kind: str  # "ratio" | "difference" | "value"
    subject: tuple
    baseline: tuple | None = None
    at_least: float | None = None
    at_most: float | None = None
    unit: str = "x"
    note: str = ""
    listed: bool = True  # False: shown in a section's table instead of the "Other ratios" list
    #: supplementary rows: the threshold of the target they stand beside (shown, never a verdict)
    info_at_least: float | None = None
    result: dict = field(default_factory=dict)

    def compute(self) -> bool:
        """Fill ``result`` if the rows exist; True when it did."""
        s = RESULTS.get(self.subject)
        b = RESULTS.get(self.baseline) if self.baseline is not None else None
        if s is None or (self.baseline is not None and b is None):
            return False
        scale = {"x": 1.0, "s": 1.0, "ms": 1e3, "us": 1e6}[self.unit]
        if self.kind == "ratio":
            best, typical = b["min"] / s["min"], b["median"] / s["median"]
        elif self.kind == "difference":
            best, typical = (s["min"] - b["min"]) * scale, (s["median"] - b["median"]) * scale
        else:
            best, typical = s["min"] * scale, s["median"] * scale
        verdict = None
        if self.at_least is not None:
            verdict = best >= self.at_least
        elif self.at_most is not None:
            verdict = best <= self.at_most
        loads = [r.get("others_cores") for r in (s, b) if r is not None and r.get("others_cores") is not None]
        self.result = {"best": best, "median": typical, "pass": verdict,
                       "others_cores": max(loads) if loads else None}
        return True

    @property
    def load_text(self) -> str:
        x = self.result.get("others_cores") if self.result else None
        if x is None:
            return "-"
        return f"{x:.2f}" + (" (contended)" if x > CONTENDED else "")

    @property
    def target_text(self) -> str:
        if self.at_least is not None:
            return f">= {self.at_least:g}{'' if self.unit == 'x' else ' ' + self.unit}"
        if self.at_most is not None:
            return f"<= {self.at_most:g}{'' if self.unit == 'x' else ' ' + self.unit}"
        return ""

    @property
    def verdict_text(self) -> str:
        if not self.result:
            return "not run"
        v = self.result["pass"]
        return "" if v is None else ("PASS" if v else "FAIL")

    def value_text(self, key="best") -> str:
        if not self.result:
            return "-"
        x = self.result[key]
        if self.unit == "x":
            return f"{x:.3g}" if x < 100 else f"{x:.0f}"
        return f"{x:.3g} {self.unit}"


# -- how busy the machine is -------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _snapshot():
    """(wall, busy CPU-seconds of all processes, steal CPU-seconds, this process's CPU-seconds incl. children)."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    t = os.times()
    return (time.perf_counter(), (user + nice + system + irq + softirq) / _TICK, steal / _TICK,
            t.user + t.system + t.children_user + t.children_system)


def others_load(a, b) -> tuple[float, float] | tuple[None, None]:
    """Cores used by other processes, and cores stolen by the hypervisor, between two snapshots."""
    if a is None or b is None or b[0] <= a[0]:
        return None, None
    wall = b[0] - a[0]
    others = ((b[1] - a[1]) - (b[3] - a[3])) / wall
    return max(0.0, others), (b[2] - a[2]) / wall


def wait_quiet(max_wait=None, window=0.25, threshold=QUIET_CORES) -> float | None:
    """Wait until other processes use less than ``threshold`` cores over ``window`` s (at most ``max_wait`` s)."""
    global _waited
    max_wait = QUIET_WAIT_S if max_wait is None else max_wait
    max_wait = max(0.0, min(max_wait, QUIET_BUDGET_S - _waited))
    start = time.perf_counter()
    deadline = start + max_wait
    load = None
    try:
        while True:
            a = _snapshot()
            time.sleep(window)
            load, _ = others_load(a, _snapshot())
            if load is None or load < threshold or time.perf_counter() >= deadline:
                return load
    finally:
        _waited += time.perf_counter() - start


_waited = 0.0


def _declare(t: Target) -> Target:
    _TARGETS.append(t)
    return t


def ratio(name, subject, baseline, *, at_least=None, at_most=None, note="", listed=True, info_at_least=None):
    """Report ``time(baseline) / time(subject)``; ``subject``/``baseline`` are (group, label).

    ``info_at_least``: a supplementary ratio shown beside a target (the same threshold, for
    the reader) in the "Supplementary" table of the summary; it never gives a verdict.
    """
    return _declare(Target(name, "ratio", tuple(subject), tuple(baseline), at_least, at_most, "x", note, listed,
                           info_at_least))


def difference(name, subject, baseline, *, at_most=None, unit="us", note=""):
    """Report ``time(subject) - time(baseline)`` in ``unit`` (both timed in this run)."""
    return _declare(Target(name, "difference", tuple(subject), tuple(baseline), None, at_most, unit, note))


def value(name, subject, *, at_most=None, unit="s", note=""):
    """Report one time (for targets that are absolute by nature, e.g. start-up)."""
    return _declare(Target(name, "value", tuple(subject), None, None, at_most, unit, note))


def best_of(group, label, labels):
    """Declare a derived row ``(group, label)``: whichever of ``labels`` (same group) has the lowest min.

    For a rival measured in several configurations (PyTorch with 2 threads and with 1):
    a target against the derived row is a target against the rival at its best.
    """
    _BEST_OF.append((group, label, tuple(labels)))


def summary_section(fn):
    """Register ``fn(RESULTS) -> list[str]`` (markdown lines) for the end-of-session summary."""
    _SECTIONS.append(fn)
    return fn


def relative_table(results, title, key, rows, impls, ref="fastopt", digits=1):
    """Markdown lines: one row per ``rows`` entry (its group is ``group_of(row)``), each of ``impls``
    as its best time in microseconds and its ratio to ``ref`` in the same group.

    Args: results (RESULTS), title, key ``(first column name, group_of)``, rows, impls, ref, digits."""
    name, group_of = key
    lines = [title, "", f"| {name} | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
    for row in rows:
        base = results.get((group_of(row), ref))
        if base is None:
            continue
        cells = []
        for impl in impls:
            st = results.get((group_of(row), impl))
            cells.append("-" if st is None else f"{st['min'] * 1e6:.{digits}f} us ({st['min'] / base['min']:.1f}x)")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _store(group, label, stats: dict, benchmark=None):
    key = (group, label)
    RESULTS[key] = stats
    for g, derived, labels in _BEST_OF:
        if g == group and label in labels and all((g, x) in RESULTS for x in labels):
            winner = min(labels, key=lambda x: RESULTS[(g, x)]["min"])
            _store(g, derived, {**RESULTS[(g, winner)], "source": f"best of {', '.join(labels)}", "from": winner},
                   benchmark)
    for t in _TARGETS:
        if key in (t.subject, t.baseline) and t.compute() and benchmark is not None:
            benchmark.extra_info.setdefault("ratios", {})[t.name] = {
                "best": t.result["best"], "median": t.result["median"], "target": t.target_text,
                "verdict": t.verdict_text}


def record_samples(group, label, samples, benchmark=None, **extra):
    """Record times (seconds) measured outside pytest-benchmark's timer."""
    samples = list(samples)
    stats = {"min": min(samples), "median": statistics.median(samples), "rounds": len(samples), "iterations": 1,
             "source": "samples", **extra}
    if benchmark is not None:
        benchmark.extra_info.setdefault("samples", {})[label] = samples
    _store(group, label, stats, benchmark)
    return stats


def _per_call(fn, min_time=0.02):
    """Rough time of one call: loop until ``min_time`` has passed."""
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_time or n >= 1_000_000:
            return dt / n


def timed(benchmark, fn, *, group, label, budget_s=1.5, min_rounds=3, max_rounds=200, round_s=2e-3,
          warmup=2, **extra):
    """Time ``fn()`` with pytest-benchmark under ``group`` and record it as ``(group, label)``.

    ``warmup`` calls first (JIT compilation or cache load, first touch of the pages,
    PyTorch's lazy state), then one calibration; a round lasts at least ``round_s`` (many
    iterations of a tiny call, so the timer's resolution does not matter) and the rounds
    fill about ``budget_s``, between ``min_rounds`` and ``max_rounds``.
    """
    benchmark.group = group
    benchmark.extra_info.update({"label": label, **extra})
    for _ in range(warmup):
        fn()
    if getattr(benchmark, "disabled", False):
        return benchmark.pedantic(fn)
    t_call = _per_call(fn)
    iterations = max(1, int(math.ceil(round_s / t_call)))
    rounds = int(budget_s / (t_call * iterations))
    rounds = max(min_rounds, min(max_rounds, rounds))
    before = wait_quiet()
    a = _snapshot()
    benchmark.pedantic(fn, rounds=rounds, iterations=iterations, warmup_rounds=0)
    others, steal = others_load(a, _snapshot())
    st = benchmark.stats.stats
    stats = {"min": st.min, "median": st.median, "mean": st.mean, "rounds": rounds, "iterations": iterations,
             "source": "pytest-benchmark", "others_cores": others, "steal_cores": steal,
             "others_cores_before": before}
    benchmark.extra_info.update(others_cores=others, steal_cores=steal)
    _store(group, label, stats, benchmark)
    return stats


# -- the summary --------------------------------------------------------------------------

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def library_state() -> str:
    """The git commit of the checkout and a digest of the tracked library sources (kernels/, fastopt/).

    The library may change while a long run is in progress (several people work in the
    checkout): the summary compares the state at the start and at the end of the session.
    """
    import hashlib
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    try:  # the tracked sources (an untracked work-in-progress file of someone else does not count)
        listed = subprocess.run(["git", "ls-files", "kernels", "fastopt"], cwd=_ROOT, capture_output=True, text=True,
                                timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        listed = []
    h = hashlib.sha1()
    for rel in sorted(listed):
        if rel.endswith((".py", ".cu", ".cuh")):
            h.update(rel.encode())
            try:
                with open(os.path.join(_ROOT, rel), "rb") as fh:
                    h.update(fh.read())
            except OSError:
                pass
    return f"{commit} (sources {h.hexdigest()[:10]})"


LIBRARY_AT_START = library_state()


def environment() -> dict:
    end = library_state()
    env = {"library_at_start": LIBRARY_AT_START, "library_at_end": end}
    if end != LIBRARY_AT_START:
        env["WARNING"] = "the library changed during this session: the rows may mix two versions"
    env.update({"python": platform.python_version(), "machine": platform.machine(),
           "loadavg_1_5_15": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?",
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)"), "cpu_count": os.cpu_count()})
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    env["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import numba
        import numpy

        env.update(numpy=numpy.__version__, numba=numba.__version__, numba_threads=numba.get_num_threads())
        try:
            env["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel ran
            env["numba_threading_layer"] = "(not initialised)"
    except ImportError:
        pass
    try:
        import torch

        env.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        env["torch"] = "(not installed)"
    try:
        from fastopt.kernels.cpu import optim

        env["PARALLEL_MIN_SIZE"] = optim.PARALLEL_MIN_SIZE
        env["BLOCK"] = optim.BLOCK
    except ImportError:
        pass
    return env


def summary_lines() -> list[str]:
    """The summary as markdown: targets, then every reported ratio, then the extra sections."""
    for t in _TARGETS:
        t.compute()
    env = environment()
    lines = ["## Environment", "", ", ".join(f"{k}={v}" for k, v in env.items()), ""]
    with_target = [t for t in _TARGETS if t.target_text and t.result]
    if with_target:
        lines += ["## Targets (best-of-rounds ratio; ratio of medians beside it)", "",
                  "| target | measured | median-based | required | verdict | other processes' cores |",
                  "|---|---|---|---|---|---|"]
        for t in with_target:
            lines.append(f"| {t.name} | {t.value_text()} | {t.value_text('median')} | {t.target_text} | "
                         f"**{t.verdict_text}** | {t.load_text} |")
        lines.append("")
    extra = [t for t in _TARGETS if t.info_at_least is not None and t.result]
    if extra:
        lines += ["## Supplementary (not verdicts): the same targets against PyTorch at its best", "",
                  "| quantity | measured | median-based | the target's threshold | would meet it | "
                  "other processes' cores |", "|---|---|---|---|---|---|"]
        for t in extra:
            meets = "yes" if t.result["best"] >= t.info_at_least else "no"
            lines.append(f"| {t.name} | {t.value_text()} | {t.value_text('median')} | >= {t.info_at_least:g} | "
                         f"{meets} | {t.load_text} |")
        lines.append("")
    plain = [t for t in _TARGETS if not t.target_text and t.result and t.listed and t.info_at_least is None]
    if plain:
        lines += ["## Other ratios", "", "| quantity | measured | median-based | other processes' cores | note |",
                  "|---|---|---|---|---|"]
        for t in plain:
            lines.append(f"| {t.name} | {t.value_text()} | {t.value_text('median')} | {t.load_text} | {t.note} |")
        lines.append("")
    for fn in _SECTIONS:
        try:
            lines += fn(RESULTS) + [""]
        except Exception as exc:  # a summary must not hide the results of the others
            lines += [f"(section {fn.__name__} failed: {exc!r})", ""]
    return lines


def summary_json() -> dict:
    return {
        "environment": environment(),
        "results": [{"group": g, "label": lab, **st} for (g, lab), st in RESULTS.items()],
        "targets": [{"name": t.name, "kind": t.kind, "subject": list(t.subject),
                     "baseline": list(t.baseline) if t.baseline else None, "unit": t.unit,
                     "required": t.target_text, "verdict": t.verdict_text, "note": t.note,
                     "info_at_least": t.info_at_least, **t.result}
                    for t in _TARGETS if t.result],
    }


def write_summary(prefix: str) -> list[str]:
    """Write ``<prefix>.md`` and ``<prefix>.json``; return the paths."""
    folder = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(folder, exist_ok=True)
    with open(prefix + ".md", "w") as fh:
        fh.write("\n".join(summary_lines()) + "\n")
    with open(prefix + ".json", "w") as fh:
        json.dump(summary_json(), fh, indent=1, default=str)
    return [prefix + ".md", prefix + ".json"]
