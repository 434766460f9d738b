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

    class Spy:
        """The kernel's entry point and its serial / threaded builds (lean paths call a build directly),
        each recording the launch."""

        def __init__(self, kernel):
            self._kernel = kernel
            self.parallel_min_size = getattr(kernel, "parallel_min_size", None)

        def _recording(self, target):
            def record(*args):
                seen["kernel"], seen["args"] = self._kernel, args
                return target(*args)
            return record

        def __call__(self, *args):
            return self._recording(self._kernel)(*args)

        def __getattr__(self, name):  # serial, threaded
            return self._recording(getattr(self._kernel, name))

    def spy(family, name, backend):
        return Spy(real(family, name, backend))

    _dispatch.get_kernel = spy
    try:
        call()
    finally:
        _dispatch.get_kernel = real
    if "kernel" not in seen:
        pytest.fail("the functional step did not look its kernel up through fastopt._dispatch.get_kernel; "
                    "update captured_launch()")
    return seen["kernel"], seen["args"]
