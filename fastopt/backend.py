"""Choosing and moving between backends: ``use_backend``, ``available_backends``, ``to_backend``.

Example:
  >>> import numpy as np, fastopt
  >>> with fastopt.use_backend("cpu"):
  ...     p = np.zeros(3); g = np.ones(3)
  ...     _ = fastopt.sgd_step(p, g, lr=0.1)
  >>> p
  array([-0.1, -0.1, -0.1])
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import _dispatch

__all__ = ["use_backend", "available_backends", "to_backend", "gpu_status"]


@contextlib.contextmanager
def use_backend(name: str):
    """Run the calls in this block on backend ``name`` ("cpu", "gpu" or "reference").

    An explicit ``backend=`` argument still wins. Asking for "gpu" without CuPy or
    without a device raises at once, saying which is missing. The choice lives in a
    :mod:`contextvars` variable: it holds in this thread and its asyncio tasks, not in
    threads started inside the block (enter ``use_backend`` in each thread).
    """
    _dispatch.check_backend_name(name, "use_backend: name")
    if name == "gpu":
        _dispatch.require_gpu()
    token = _dispatch._active.set(name)
    try:
        yield name
    finally:
        _dispatch._active.reset(token)


def available_backends() -> list[str]:
    """Backends that can run here: always "cpu" and "reference"; "gpu" with CuPy and a device."""
    names = ["cpu", "reference"]
    if _dispatch.gpu_status()[0]:
        names.insert(1, "gpu")
    return names


def gpu_status() -> tuple[bool, str]:
    """(available, reason) for the "gpu" backend."""
    return _dispatch.gpu_status()


def to_backend(x, backend: str):
    """Copy (or view, when already there) an array onto ``backend``: NumPy for "cpu", CuPy for "gpu".

    This is the one place where fastopt copies between devices, and only on request.
    """
    _dispatch.check_backend_name(backend, "to_backend: backend")
    kind, arr = _dispatch.as_native("to_backend: x", x)
    target = "cpu" if backend == "reference" else backend
    if kind == target:
        return arr
    if target == "gpu":
        _dispatch.require_gpu()
        import cupy

        return cupy.asarray(arr)
    return arr.get()  # CuPy -> NumPy
