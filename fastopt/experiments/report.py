r"""Run the lecture's experiments, check their claims, and write a report (``fastopt demo``).

Each experiment is a module with ``run(quick, seed, backend, progress) -> dict``,
``claims(result) -> [(claim, number shown, passed)]`` and ``plot(result, path)``; the registry
:data:`EXPERIMENTS` names them in the lecture's order:

============================  ==================================================================
``gd_quadratic``              GD learning-rate sweep on a quadratic: the 2 / lambda_max threshold
``sgd_noise``                 noisy SGD: the constant rate's plateau, decaying rates beat it
``batch_size``                the batch-size experiment (:mod:`fastopt.experiments.batch_size`)
``pinn_optimisers``           SGD, heavy-ball momentum and Adam on a 1D PINN
``ls_deep_ritz``              LS hybrid vs Adam on an oscillatory Deep Ritz problem (skipped with a
                              note while its module is absent)
``multilevel``                multilevel networks with Fourier features vs one network
============================  ==================================================================

:func:`run_report` runs the chosen ones, prints each claim as it is checked and a summary
table at the end, and writes ``DIR/report.md`` with one PNG per experiment (matplotlib, Agg;
without matplotlib the report says so and has no figures). Results are deterministic for a
seed, except the timings.

Example:
  >>> import tempfile
  >>> from fastopt.experiments import report
  >>> out = tempfile.mkdtemp()
  >>> r = report.run_report(["gd_quadratic"], quick=True, out=out, progress=False, stream=None)
  >>> r["passed"], sorted(p.name for p in r["files"])[-1]
  (True, 'report.md')
"""
from __future__ import annotations

import datetime
import importlib
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from ._common import Claim, figure, fmt, save

__all__ = ["EXPERIMENTS", "load", "run_report", "summary_table", "BatchSizeExperiment"]


class BatchSizeExperiment:
    """The batch-size experiment (:func:`fastopt.experiments.batch_size.run`) with the report's interface.

    Full size: the lecture's (2000 samples, batches 100..2000, 100 epochs); quick: batches 100,
    500, 2000 for 40 epochs. Claims: smaller batches reach lower training and validation losses
    in the same epochs. The lecture's second observation, that time rises as the batch size falls
    (a fixed cost per update: 6.4 s at batch 100 against 4.0 s at 2000 in PyTorch), is reported with
    the speed, not claimed: fastopt's per-update cost is ~15 us, so its times at batch 100 and 2000
    are close, and a timing comparison on a shared machine is no pass/fail test.
    """

    __name__ = "fastopt.experiments.batch_size"
    __doc__ = __doc__

    @staticmethod
    def run(quick=False, seed=0, backend="cpu", progress=False):
        from . import batch_size

        sizes, epochs = ((100, 500, 2000), 40) if quick else (batch_size.BATCH_SIZES, 100)
        r = batch_size.run(batch_sizes=sizes, epochs=epochs, seed=seed, backend=backend, progress=progress)
        n_steps = sum(row["steps"] for row in r["rows"])
        r["speed"] = {"step_us": 1e6 * sum(row["time_s"] for row in r["rows"]) / n_steps,
                      "what": "one Adam step on a mini-batch (forward + backward + fused update), all sizes; "
                              "seconds per run: " + ", ".join(f"batch {row['batch_size']}: {row['time_s']:.2f} s"
                                                             for row in r["rows"])}
        return r

    @staticmethod
    def claims(result):
        rows = sorted(result["rows"], key=lambda row: row["batch_size"])
        sizes = [row["batch_size"] for row in rows]
        train = [row["train_loss"] for row in rows]
        val = [row["val_loss"] for row in rows]
        mono = all(a < b for a, b in zip(train, train[1:])) and all(a < b for a, b in zip(val, val[1:]))
        return [
            Claim(f"smaller batches reach lower losses in {result['epochs']} epochs (train and validation)",
                  "train " + ", ".join(f"{s}: {fmt(v)}" for s, v in zip(sizes, train))
                  + "; val " + ", ".join(fmt(v) for v in val), mono),
        ]

    @staticmethod
    def plot(result, path):
        from . import batch_size

        fig, (ax0, ax1) = figure(2)
        for i, row in enumerate(sorted(result["rows"], key=lambda r: r["batch_size"])):
            h = np.asarray(row["history"])
            ep = np.arange(1, len(h) + 1)
            ax0.semilogy(ep, h[:, 0], color=f"C{i}", label=f"batch {row['batch_size']} (train)")
            ax0.semilogy(ep, h[:, 1], color=f"C{i}", ls="--", lw=0.8)
        ax0.axhline(result["noise"] ** 2, color="gray", ls=":", label="noise variance")
        ax0.set_xlabel("epoch")
        ax0.set_ylabel("MSE (dashed: validation)")
        ax0.set_title(f"noisy 1D regression, {result['n_train']} samples, Adam lr {result['lr']:g}")
        ax0.legend(fontsize=7)
        rows = sorted(result["rows"], key=lambda r: r["batch_size"])
        sizes = [str(r["batch_size"]) for r in rows]
        ax1.bar(sizes, [r["time_s"] for r in rows], label="fastopt")
        lecture = [batch_size.LECTURE_TIMES_S.get(r["batch_size"], np.nan) * result["epochs"] / 100 for r in rows]
        ax1.plot(sizes, lecture, "ko--", label="lecture (scaled to these epochs)")
        ax1.set_yscale("log")
        ax1.set_xlabel("batch size")
        ax1.set_ylabel(f"time for {result['epochs']} epochs (s)")
        ax1.legend(fontsize=8)
        return save(fig, path)


#: Experiment name -> module (imported lazily); "batch_size" is wrapped by :class:`BatchSizeExperiment`.
EXPERIMENTS = {
    "gd_quadratic": "fastopt.experiments.gd_quadratic",
    "sgd_noise": "fastopt.experiments.sgd_noise",
    "batch_size": BatchSizeExperiment,
    "pinn_optimisers": "fastopt.experiments.pinn_optimisers",
    "ls_deep_ritz": "fastopt.experiments.ls_deep_ritz",
    "multilevel": "fastopt.experiments.multilevel",
}


#: Options the demo passes to an experiment's ``run`` beside quick, seed, backend and progress: the
#: multilevel experiment times itself against PyTorch whenever PyTorch is importable (issue 5).
RUN_OPTIONS = {"multilevel": {"torch": "auto"}}


def load(name):
    """The experiment ``name`` (a module or object with run/claims/plot), or None if its module is absent.

    Raises:
      KeyError: ``name`` is not in :data:`EXPERIMENTS`.
    """
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    target = EXPERIMENTS[name]
    if not isinstance(target, str):
        return target
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name == target:       # the experiment itself is missing, not one of its imports
            return None
        raise


def _speed_text(speed):
    if not speed:
        return ""
    parts = []
    for key, value in speed.items():
        if key == "what":
            continue
        if isinstance(value, dict):
            parts.append(", ".join(f"{k} {v:.0f} us" for k, v in value.items()))
        else:
            parts.append(f"{value:.1f} us" if key.endswith("_us") else f"{key} {value}")
    what = speed.get("what")
    return "; ".join(parts) + (f" ({what})" if what else "")


def summary_table(rows, markdown=False):
    """The claims as a text (or Markdown) table: experiment, claim, number, PASS/FAIL."""
    if markdown:
        lines = ["| experiment | claim | number | result |", "|---|---|---|---|"]
        for r in rows:
            cells = [r["experiment"], r["claim"], r["number"], "PASS" if r["passed"] else "**FAIL**"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)
    w_exp = max([len("experiment")] + [len(r["experiment"]) for r in rows])
    w_claim = max([len("claim")] + [len(r["claim"]) for r in rows])
    w_claim = min(w_claim, 72)
    lines = [f"{'experiment':{w_exp}}  {'claim':{w_claim}}  {'result':6}  number"]
    lines.append("-" * len(lines[0]) + "-" * 20)
    for r in rows:
        claim = r["claim"] if len(r["claim"]) <= w_claim else r["claim"][:w_claim - 3] + "..."
        lines.append(f"{r['experiment']:{w_exp}}  {claim:{w_claim}}  {'PASS' if r['passed'] else 'FAIL':6}  {r['number']}")
    return "\n".join(lines)


def _print(stream, text=""):
    if stream is not None:
        print(text, file=stream, flush=True)


_STDOUT = object()


def run_report(names=None, *, quick=False, seed=0, backend="cpu", out="fastopt-report", progress=True,
               stream=_STDOUT):
    """Run experiments, check their claims, write ``out/report.md`` and a PNG per experiment.

    Args:
      names: experiment names (default: all of :data:`EXPERIMENTS`, in order).
      quick: the small sizes (the whole set well under a minute on two cores).
      seed: the seed of every experiment.
      backend: "cpu" or "gpu".
      out: the report folder (created).
      progress: tqdm bars on the long loops.
      stream: where to print (default: ``sys.stdout`` at the time of the call; None: silent).
    Returns:
      dict: ``rows`` (experiment, claim, number, passed), ``passed`` (every claim held and no
      experiment failed), ``results`` {name: result dict}, ``times`` {name: seconds}, ``skipped``
      {name: reason}, ``files`` (paths written), ``report`` (the report.md path).
    """
    if stream is _STDOUT:
        stream = sys.stdout
    names = list(EXPERIMENTS) if not names else list(names)
    for name in names:
        if name not in EXPERIMENTS:
            raise ValueError(f"run_report: unknown experiment {name!r}; choose from {list(EXPERIMENTS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        import matplotlib  # noqa: F401

        can_plot, plot_note = True, ""
    except ImportError:
        can_plot, plot_note = False, "matplotlib is not installed (pip install 'fastopt[plot]'): no figures"
    rows, results, times, skipped, figures, errors, files = [], {}, {}, {}, {}, {}, []
    size = "quick" if quick else "full"
    _print(stream, f"fastopt demo: {len(names)} experiment(s), {size} size, seed {seed}, backend {backend}")
    t_all = time.perf_counter()
    for name in names:
        exp = load(name)
        _print(stream, f"\n== {name}")
        if exp is None:
            skipped[name] = f"module {EXPERIMENTS[name]} does not exist yet"
            _print(stream, f"   skipped: {skipped[name]}")
            continue
        t0 = time.perf_counter()
        try:
            result = exp.run(quick=quick, seed=seed, backend=backend, progress=progress, **RUN_OPTIONS.get(name, {}))
            claims = [Claim(*c) for c in exp.claims(result)]
        except Exception as exc:  # an experiment that breaks is a failed claim, not the end of the report
            times[name] = time.perf_counter() - t0
            errors[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            rows.append({"experiment": name, "claim": "the experiment runs", "number": errors[name],
                         "passed": False})
            _print(stream, f"   FAILED: {errors[name]}")
            if stream is not None:
                traceback.print_exc(file=sys.stderr)
            continue
        times[name] = time.perf_counter() - t0
        results[name] = result
        for c in claims:
            rows.append({"experiment": name, "claim": c.claim, "number": c.number, "passed": bool(c.passed)})
            _print(stream, f"   {'PASS' if c.passed else 'FAIL'}  {c.claim}: {c.number}")
        speed = _speed_text(result.get("speed"))
        _print(stream, f"   time {times[name]:.1f} s" + (f"; speed: {speed}" if speed else ""))
        if can_plot:
            path = out / f"{name}.png"
            try:
                exp.plot(result, str(path))
                figures[name] = path
                files.append(path)
            except Exception as exc:  # a figure that fails does not fail the claims
                figures[name] = None
                _print(stream, f"   (no figure: {type(exc).__name__}: {exc})")
    total = time.perf_counter() - t_all
    passed = all(r["passed"] for r in rows)
    _print(stream, "\n" + summary_table(rows))
    n_pass = sum(r["passed"] for r in rows)
    _print(stream, f"\n{n_pass}/{len(rows)} claims passed"
           + (f", {len(skipped)} experiment(s) skipped" if skipped else "") + f"; {total:.1f} s in all")
    report = out / "report.md"
    report.write_text(_markdown(names, quick, seed, backend, rows, results, times, skipped, figures, errors,
                                plot_note, total))
    files.append(report)
    _print(stream, f"report: {report}")
    return {"rows": rows, "passed": passed, "results": results, "times": times, "skipped": skipped,
            "files": files, "report": report}


def _markdown(names, quick, seed, backend, rows, results, times, skipped, figures, errors, plot_note, total):
    import fastopt

    lines = ["# fastopt demo: the lecture's optimisation experiments", "",
             f"- size: {'quick' if quick else 'full'}; seed {seed}; backend {backend}",
             f"- fastopt {fastopt.__version__}, numpy {np.__version__}, python {platform.python_version()}",
             f"- run {datetime.datetime.now().isoformat(timespec='seconds')}; {total:.1f} s in all "
             "(timings vary from run to run; every other number is fixed by the seed)"]
    if plot_note:
        lines.append(f"- {plot_note}")
    lines += ["", "## Summary", "", summary_table(rows, markdown=True), ""]
    for name in names:
        lines += [f"## {name}", ""]
        if name in skipped:
            lines += [f"Skipped: {skipped[name]}.", ""]
            continue
        if name in errors:
            lines += [f"The experiment failed: `{errors[name]}`", ""]
            continue
        mod = load(name)
        doc = (mod.__doc__ or "").strip().splitlines()
        if doc:
            lines += [doc[0], ""]
        speed = _speed_text(results[name].get("speed"))
        lines.append(f"Time: {times[name]:.1f} s." + (f" Speed: {speed}." if speed else ""))
        lines.append("")
        if figures.get(name) is not None:
            lines += [f"![{name}]({figures[name].name})", ""]
        lines += [summary_table([r for r in rows if r["experiment"] == name], markdown=True), ""]
    return "\n".join(lines) + "\n"
