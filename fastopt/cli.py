"""The ``fastopt`` command (also ``python -m fastopt``): ``info``, ``demo``.

``fastopt demo [EXPERIMENT ...] [--backend cpu|gpu] [--quick] [--out DIR] [--seed N]`` runs the
lecture's experiments (all by default; :mod:`fastopt.experiments.report`), prints each claim and a
summary table, writes ``DIR/report.md`` with a PNG per experiment, and exits with status 1 when a
claim fails (2 for a usage error or an unavailable backend).
"""
from __future__ import annotations

import argparse
import platform
import sys
from importlib import metadata

__all__ = ["main", "info_lines"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def info_lines() -> list[str]:
    """What ``fastopt info`` prints: versions, backends, threading and the kernel cache."""
    import numba
    import numpy as np

    import fastopt
    from fastopt import _dispatch
    from fastopt.kernels.cpu import _jit
    from fastopt.kernels.cpu import optim as cpu_optim

    cpu_optim.grad_sumsq.threaded(np.zeros(1))  # starts Numba's thread pool so the layer is known
    ok, reason = _dispatch.gpu_status()
    lines = [
        f"fastopt {fastopt.__version__}",
        f"python {platform.python_version()} ({platform.machine()}, {platform.system()})",
        "versions: " + ", ".join(f"{d} {_version(d)}" for d in ("numpy", "numba", "llvmlite", "scipy")),
        "backends: cpu (always), reference (float64 NumPy oracle), "
        + (f"gpu ({reason})" if ok else f"gpu unavailable: {reason}"),
        f"numba threading layer: {numba.threading_layer()}, threads: {numba.get_num_threads()} "
        f"(NUMBA_NUM_THREADS to change)",
        f"kernel cache: {_jit.cache_dir}",
        f"parallel threshold: {cpu_optim.PARALLEL_MIN_SIZE} elements (optim kernels)",
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastopt", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, backends, threads and the kernel cache")
    from fastopt.experiments.report import EXPERIMENTS

    demo = sub.add_parser("demo", help="the lecture's experiments: claims checked, report.md and figures written",
                          description="Run the lecture's experiments, check their claims, write DIR/report.md "
                                      "with a PNG per experiment. Exit status 1 if a claim fails.")
    demo.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                      help="experiments to run (default: all): " + ", ".join(EXPERIMENTS))
    demo.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    demo.add_argument("--quick", action="store_true", help="small sizes: the whole demo in well under a minute")
    demo.add_argument("--out", default="fastopt-report", metavar="DIR", help="report folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    unknown = [e for e in args.experiments if e not in EXPERIMENTS]
    if unknown:
        demo.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    if args.backend == "gpu":
        from fastopt import _dispatch

        ok, reason = _dispatch.gpu_status()
        if not ok:
            print(f"fastopt demo: the gpu backend is unavailable: {reason}", file=sys.stderr)
            return 2
    from fastopt.experiments.report import run_report

    names = list(dict.fromkeys(args.experiments)) or None
    result = run_report(names, quick=args.quick, seed=args.seed, backend=args.backend, out=args.out,
                        progress=not args.no_progress)
    return 0 if result["passed"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
