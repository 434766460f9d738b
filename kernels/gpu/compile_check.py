"""Compile every CUDA source of this package with NVRTC, as CuPy would, without a GPU.

``cupy.RawModule`` compiles a source at its first use on a device, so a typo in a
``.cu`` file would otherwise surface only on a GPU machine. This check runs the same
compiler (NVRTC, through ``cupy.cuda.nvrtc``) with the same options that CuPy uses
for a ``RawModule``, for a fixed architecture (sm_90 by default), and instantiates
every kernel template by its name expression (``nvrtcAddNameExpression``), so the
template bodies are really compiled down to a cubin. It needs CuPy and the NVRTC
library (the ``nvidia-cuda-nvrtc`` wheel is enough: CuPy 14 finds it through
``cuda.pathfinder``), but no device, driver or CUDA toolkit.

Options, as ``cupy.RawModule(code, options=("--std=c++17",))`` would pass them:
``-arch=sm_XX``, CuPy's include directories (bundled CCCL, CuPy's headers, the CUDA
include directory when one is found), ``--std=c++17``,
``--device-as-default-execution-space`` and ``-ftz=true``.

Usage::

    python -m fastopt.kernels.gpu.compile_check [--arch sm_90]

prints one line per ``.cu`` file (failures followed by the NVRTC log on stderr) and
exits with status 1 if any file fails to compile.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import sys

from . import _module

__all__ = ["CompileResult", "nvrtc_version", "compile_options", "compile_source", "check_file",
           "check_all", "main"]

#: What CuPy adds to every NVRTC compile of a RawModule (cupy/cuda/compiler.py).
CUPY_FLAGS = ("--device-as-default-execution-space", "-ftz=true")


@dataclasses.dataclass
class CompileResult:
    """Outcome of one NVRTC compile.

    ``ok``: it compiled; ``log``: NVRTC's log (errors, warnings; may be empty);
    ``lowered``: name expression -> mangled kernel name; ``cubin_size``: bytes of machine code.
    """

    ok: bool
    log: str
    lowered: dict = dataclasses.field(default_factory=dict)
    cubin_size: int = 0


def _nvrtc():
    """``cupy.cuda.nvrtc``, with a clear error when CuPy or the NVRTC library is missing."""
    try:
        from cupy.cuda import nvrtc
    except Exception as exc:  # ImportError, or CuPy's own failure to load
        raise RuntimeError(f"CuPy is not importable ({exc!r}); install cupy-cuda13x") from exc
    try:
        nvrtc.getVersion()
    except Exception as exc:
        raise RuntimeError(f"the NVRTC library cannot be loaded ({exc!r}); "
                           "install nvidia-cuda-nvrtc (the wheel for CuPy's CUDA major)") from exc
    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library that CuPy loads."""
    return tuple(_nvrtc().getVersion())


def _arch_option(arch: str) -> str:
    """``"sm_90"``, ``"90"`` or ``"compute_90"`` -> an ``-arch=`` option (cubin for sm_, PTX for compute_)."""
    arch = str(arch)
    if arch.isdigit():
        arch = f"sm_{arch}"
    return f"-arch={arch}"


def _include_options() -> tuple[str, ...]:
    """CuPy's ``-I`` options for NVRTC, taken from CuPy itself where it exposes them."""
    try:
        from cupy._core import core
    except Exception:
        return ()
    try:
        # The function RawModule uses; it also appends the CUDA include directory.
        options = core.assemble_cupy_compiler_options(_module.OPTIONS)
    except Exception:  # older/newer CuPy, or no CUDA root found: the bundled headers only
        options = ()
        try:
            options = tuple(core._get_cccl_include_options()) + (f"-I{core._get_header_dir_path()}",)
        except Exception:
            pass
    return tuple(o for o in options if o.startswith("-I"))


def compile_options(arch: str = "sm_90", extra=()) -> list[str]:
    """The NVRTC options of a CuPy RawModule compile for ``arch``."""
    return [_arch_option(arch), *_include_options(), *_module.OPTIONS, *CUPY_FLAGS, *extra]


def compile_source(source: str, arch: str = "sm_90", name_expressions=(), name: str = "kernel.cu",
                   extra_options=()) -> CompileResult:
    """Compile ``source`` with NVRTC for ``arch`` with CuPy's options; never raises for a bad source.

    Every name expression (``"adam<float>"``) is registered before compiling, which
    instantiates the template, and must resolve to a kernel afterwards. Returns a
    :class:`CompileResult`; ``ok`` is False with NVRTC's log when compilation fails.
    Raises ``RuntimeError`` only when CuPy or NVRTC is unavailable.
    """
    nvrtc = _nvrtc()
    options = compile_options(arch, extra_options)
    prog = nvrtc.createProgram(source, name, (), ())
    try:
        for expression in name_expressions:
            nvrtc.addNameExpression(prog, expression)
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog) or str(exc)
            return CompileResult(False, log)
        log = nvrtc.getProgramLog(prog)
        lowered = {}
        for expression in name_expressions:
            try:
                lowered[expression] = nvrtc.getLoweredName(prog, expression)
            except nvrtc.NVRTCError as exc:
                return CompileResult(False, f"{log}\nname expression {expression!r} did not resolve: {exc}")
        binary = nvrtc.getCUBIN(prog) if _arch_option(arch).startswith("-arch=sm_") else nvrtc.getPTX(prog)
        return CompileResult(True, log, lowered, len(binary))
    finally:
        nvrtc.destroyProgram(prog)


def check_file(path: str, arch: str = "sm_90") -> CompileResult:
    """Compile one ``.cu`` file with the name expressions registered for it in ``_module.KERNELS``.

    A file missing from the registry fails: its templates would go uncompiled.
    """
    filename = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        source = f.read()
    result = compile_source(source, arch, _module.name_expressions(filename), name=filename)
    if filename not in _module.KERNELS:
        # Unregistered, its templates were not instantiated (so hardly checked), and
        # the launchers could not load its kernels either.
        result.ok = False
        result.log = (f"{filename}: no entry in fastopt.kernels.gpu._module.KERNELS; register its "
                      f"kernels there\n{result.log}").rstrip("\n")
    return result


def check_all(arch: str = "sm_90", directory: str | None = None) -> list[tuple[str, bool, str]]:
    """Compile every ``*.cu`` of this package (or ``directory``): ``[(file, ok, log), ...]``."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    results = []
    for path in sorted(glob.glob(os.path.join(directory, "*.cu"))):
        r = check_file(path, arch)
        results.append((os.path.basename(path), r.ok, r.log))
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastopt.kernels.gpu.compile_check",
                                     description="Compile every CUDA source of fastopt with NVRTC (no GPU needed).")
    parser.add_argument("--arch", default="sm_90", help="target architecture (default: sm_90)")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the NVRTC log of every file")
    args = parser.parse_args(argv)
    try:
        version = nvrtc_version()
    except RuntimeError as exc:
        print(f"compile check: {exc}", file=sys.stderr)
        return 2
    directory = os.path.dirname(os.path.abspath(__file__))
    paths = sorted(glob.glob(os.path.join(directory, "*.cu")))
    if not paths:
        print(f"compile check: no .cu files in {directory}", file=sys.stderr)
        return 1
    failed = 0
    for path in paths:
        filename = os.path.basename(path)
        r = check_file(path, args.arch)
        kernels = len(r.lowered)
        status = "OK  " if r.ok else "FAIL"
        print(f"{status} {filename}: {args.arch}, NVRTC {version[0]}.{version[1]}, "
              f"{kernels} kernels, {r.cubin_size} bytes", flush=True)
        if not r.ok:
            failed += 1
            print(r.log, file=sys.stderr, flush=True)
        elif args.verbose and r.log.strip():
            print(r.log, file=sys.stderr, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
