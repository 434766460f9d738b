"""Load the CUDA sources of this package as CuPy modules, and pick launch configurations.

Every ``*.cu`` file beside this module is a whole CUDA C++ source. Its kernels are
listed in :data:`KERNELS`; templated ones are instantiated for each element type by
NVRTC name expressions (``"adam<float>"``, ``"adam<double>"``). The same list drives
the compile check (:mod:`.compile_check`), so CI builds exactly what runs.

A module is compiled once per (device, file, element type) and kept
(:func:`functools.lru_cache`); CuPy also keeps the binary in its on-disk kernel
cache (``~/.cupy/kernel_cache``), so a new process loads it without recompiling.

Nothing here imports CuPy until a kernel is asked for.
"""
from __future__ import annotations

import functools
import os

import numpy as np

__all__ = [
    "KERNELS", "OPTIONS", "THREADS", "BLOCKS_PER_SM", "CTYPES",
    "source_path", "read_source", "name_expressions", "ctype_of",
    "get_kernel", "grid_size", "sm_count",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

#: Kernels of each source file: (templated on the element type T, plain).
KERNELS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "optim.cu": (
        ("sgd", "heavy_ball", "sgd_momentum", "adam", "nadam", "rmsprop", "adagrad",
         "lion", "grad_sumsq_partial"),
        ("grad_sumsq_finish",),
    ),
    "fourier.cu": (
        ("fourier_forward", "fourier_backward_partial", "fourier_backward_finish_B",
         "fourier_backward_finish_x"),
        (),
    ),
    "mlp.cu": (
        ("activation_table", "ansatz_forward", "ansatz_backward", "bias_act_forward", "output_forward",
         "output_backward", "act_backward", "sum_chunks"),
        (),
    ),
}

#: Element types: NumPy dtype -> C++ type of the template argument.
CTYPES: dict[np.dtype, str] = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

#: Options given to ``cupy.RawModule``. CuPy adds ``-arch=sm_XX`` for the device,
#: ``--device-as-default-execution-space``, ``-ftz=true`` and its include directories.
OPTIONS: tuple[str, ...] = ("--std=c++17",)

#: Threads per block of the element-wise updates.
THREADS = 256
#: Upper bound on blocks per SM for the grid-stride updates (see :func:`grid_size`).
BLOCKS_PER_SM = 32


def source_path(filename: str) -> str:
    """Absolute path of a ``.cu`` file of this package."""
    return os.path.join(_PACKAGE_DIR, filename)


@functools.lru_cache(maxsize=None)
def read_source(filename: str) -> str:
    """The text of a ``.cu`` file of this package."""
    with open(source_path(filename), encoding="utf-8") as f:
        return f.read()


def ctype_of(dtype) -> str:
    """C++ type name for a NumPy dtype (``float32`` -> ``"float"``); KeyError otherwise."""
    return CTYPES[np.dtype(dtype)]


def name_expressions(filename: str, ctypes=tuple(CTYPES.values())) -> list[str]:
    """NVRTC name expressions of every kernel of ``filename`` for the given C++ types.

    Templated kernels give ``"name<ctype>"`` for each type; plain kernels their name.
    A file missing from :data:`KERNELS` gives an empty list.
    """
    if isinstance(ctypes, str):
        ctypes = (ctypes,)
    templated, plain = KERNELS.get(filename, ((), ()))
    return [f"{k}<{c}>" for c in ctypes for k in templated] + list(plain)


@functools.lru_cache(maxsize=None)
def _raw_module(device_id: int, filename: str, ctype: str):
    """The ``cupy.RawModule`` of ``filename`` instantiated for ``ctype`` (compiled lazily by CuPy)."""
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=read_source(filename), options=OPTIONS,
                              name_expressions=name_expressions(filename, ctype))


@functools.lru_cache(maxsize=None)
def _kernel(device_id: int, filename: str, name: str, ctype: str):
    import cupy

    templated, _ = KERNELS[filename]
    expression = f"{name}<{ctype}>" if name in templated else name
    with cupy.cuda.Device(device_id):
        # get_function compiles (or loads from CuPy's disk cache) on first use.
        return _raw_module(device_id, filename, ctype).get_function(expression)


def get_kernel(filename: str, name: str, dtype):
    """The kernel ``name`` of ``filename`` for element type ``dtype`` on the current device.

    Templated kernels are the ``dtype`` instantiation; plain kernels come from the
    module of that ``dtype``. Returns a ``cupy.RawKernel``, launched as
    ``kernel((blocks,), (threads,), args)`` on the current device and stream.
    """
    import cupy

    return _kernel(cupy.cuda.runtime.getDevice(), filename, name, ctype_of(dtype))


@functools.lru_cache(maxsize=None)
def sm_count(device_id: int) -> int:
    """Number of streaming multiprocessors of a device."""
    import cupy

    return int(cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])


def grid_size(n: int, device_id: int | None = None) -> int:
    """Blocks of :data:`THREADS` threads for a grid-stride loop over ``n >= 1`` elements.

    ``min(ceil(n / THREADS), BLOCKS_PER_SM * SMs)``: one element per thread up to
    about a million elements (132 SMs x 32 x 256 on an H100/H200), then a fixed grid
    in which each thread strides over several elements. 32 blocks per SM is four
    times what can be resident at once (2048 threads = 8 blocks of 256 per SM), so
    the last wave leaves little idle, while each thread's segment lookup and scalar
    loads are paid once for many elements. A choice by reasoning, not by sweep:
    these kernels are bound by memory bandwidth, which any grid that fills the
    device reaches (bench/bench_gpu_optim.py measures it against a copy probe).
    """
    if device_id is None:
        import cupy

        device_id = cupy.cuda.runtime.getDevice()
    return int(min(-(-n // THREADS), BLOCKS_PER_SM * sm_count(device_id)))
