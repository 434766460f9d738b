"""Capture the exact kernel launch a public fastopt call makes (kernel object and arguments)."""
from __future__ import annotations

import pytest

from fastopt import _dispatch

__all__ = ["captured_launch"]


def captured_launch(call):
    """Run ``call()`` once and return (kernel, args) of the kernel launch it makes.

    The kernel lookup goes through ``fastopt._dispatch.get_kernel``; a spy there sees
    the exact arguments the functional step passes.
    """
    seen = {}
    real = _dispatch.get_kernel

    def spy(family, name, backend):
        kernel = real(family, name, backend)

        def record(*args):
            seen["kernel"], seen["args"] = kernel, args
            return kernel(*args)

        return record

    _dispatch.get_kernel = spy
    try:
        call()
    finally:
        _dispatch.get_kernel = real
    if "kernel" not in seen:
        pytest.fail("the functional step did not look its kernel up through fastopt._dispatch.get_kernel; "
                    "update captured_launch()")
    return seen["kernel"], seen["args"]
