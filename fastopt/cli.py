"""The ``fastopt`` command (also ``python -m fastopt``): ``info``, ``demo``."""
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
    demo = sub.add_parser("demo", help="the fused optimiser updates at work (the lecture's experiments follow)")
    demo.add_argument("--backend", default="cpu", choices=["cpu", "gpu"])
    demo.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    demo.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    from fastopt.experiments import fused_updates

    return 0 if fused_updates.main(backend=args.backend, quick=args.quick, seed=args.seed) else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
