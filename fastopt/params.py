"""FlatParams: a model's parameters in one contiguous buffer per dtype, with named views.

One buffer means one kernel call updates the whole model: with 1000 tensors this
is what makes fastopt's Adam step 20x faster than a per-tensor loop. The named
views are ordinary writable arrays of the layers' shapes, so a network reads and
writes its weights through them while the optimiser sees one flat array.

Example:
  >>> import numpy as np
  >>> from fastopt import FlatParams
  >>> params = FlatParams({"W": np.ones((2, 3)), "b": np.zeros(3)})
  >>> params.data.shape, params["W"].shape
  ((9,), (2, 3))
  >>> grads = params.zeros_like()      # the gradient buffer, laid out alike
  >>> params["b"][:] = 5.0             # views write into the flat buffer
  >>> params.data[-3:]
  array([5., 5., 5.])
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from . import _dispatch

__all__ = ["FlatParams", "Slot"]


class Slot(NamedTuple):
    """Where a named parameter lives: its buffer's dtype and [start, stop) in that buffer."""

    dtype: np.dtype
    start: int
    stop: int
    shape: tuple


class FlatParams:
    """Named arrays packed into one contiguous buffer per dtype.

    Args:
      arrays: mapping name -> array (NumPy, CuPy, or a DLPack tensor). The values are
        copied into the buffer in the mapping's order; use ``params[name]`` afterwards.
      dtype: cast every array to this float dtype (one buffer); default: keep each
        array's float dtype (float32 and float64 arrays give two buffers).
    Raises:
      TypeError: a non-float array, a name that is not a str, arrays of mixed backends.
      ValueError: an empty mapping.
    """

    def __init__(self, arrays: Mapping, *, dtype=None):
        if not isinstance(arrays, Mapping):
            raise TypeError(f"FlatParams: arrays must be a mapping name -> array, got {type(arrays).__name__}")
        if not arrays:
            raise ValueError("FlatParams: arrays must be a non-empty mapping name -> array")
        named = []
        for name, value in arrays.items():
            if not isinstance(name, str):
                raise TypeError(f"FlatParams: names must be str, got {name!r}")
            named.append((name, value))
        backend, natives = _dispatch.resolve("FlatParams", named)
        self._xp = np if backend in ("cpu", "reference") else _cupy()
        target = None if dtype is None else np.dtype(dtype)
        if target is not None and target.char not in "fd":
            raise TypeError(f"FlatParams: dtype must be float32 or float64, got {target}")
        slots, sizes = {}, {}
        for (name, _), arr in zip(named, natives):
            dt = target or arr.dtype
            if dt.char not in "fd":
                raise TypeError(f"FlatParams: {name} must be float32 or float64 (or pass dtype=), got {arr.dtype}")
            start = sizes.get(dt, 0)
            slots[name] = Slot(dt, start, start + int(arr.size), tuple(arr.shape))
            sizes[dt] = start + int(arr.size)
        self._slots = slots
        self._buffers = {dt: self._xp.empty(n, dtype=dt) for dt, n in sizes.items()}
        for (name, _), arr in zip(named, natives):
            self[name][...] = arr

    @classmethod
    def _from_layout(cls, slots, buffers, xp):
        self = cls.__new__(cls)
        self._slots, self._buffers, self._xp = dict(slots), buffers, xp
        return self

    # -- layout -------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._slots)

    @property
    def slots(self) -> dict[str, Slot]:
        """name -> Slot(dtype, start, stop, shape)."""
        return dict(self._slots)

    @property
    def buffers(self) -> dict:
        """dtype -> the flat buffer of that dtype."""
        return dict(self._buffers)

    @property
    def data(self):
        """The flat buffer, when all parameters share one dtype."""
        if len(self._buffers) != 1:
            raise ValueError(f"FlatParams.data: parameters span {len(self._buffers)} dtypes "
                             f"({', '.join(map(str, self._buffers))}); use .buffers")
        return next(iter(self._buffers.values()))

    @property
    def size(self) -> int:
        return sum(int(b.size) for b in self._buffers.values())

    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self):
        return iter(self._slots)

    def __contains__(self, name) -> bool:
        return name in self._slots

    def __getitem__(self, name: str):
        """The named parameter: a writable view of its part of the flat buffer."""
        try:
            slot = self._slots[name]
        except KeyError:
            raise KeyError(f"FlatParams has no parameter {name!r}; it has {self.names}") from None
        return self._buffers[slot.dtype][slot.start:slot.stop].reshape(slot.shape)

    def __setitem__(self, name: str, value) -> None:
        self[name][...] = value

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}: {s.shape} {s.dtype}" for n, s in self._slots.items())
        return f"FlatParams({parts})"

    # -- copies with the same layout ---------------------------------------------
    def zeros_like(self) -> "FlatParams":
        """A new FlatParams with the same names, shapes and dtypes, filled with zeros (gradients)."""
        buffers = {dt: self._xp.zeros_like(b) for dt, b in self._buffers.items()}
        return FlatParams._from_layout(self._slots, buffers, self._xp)

    def copy(self) -> "FlatParams":
        buffers = {dt: b.copy() for dt, b in self._buffers.items()}
        return FlatParams._from_layout(self._slots, buffers, self._xp)

    def to_dict(self) -> dict:
        """name -> a copy of the parameter (independent of the buffer)."""
        return {name: self[name].copy() for name in self._slots}

    def segments(self, dtype, group_of):
        """Offsets of runs of parameters with the same group, in buffer order.

        Args:
          dtype: which buffer.
          group_of: name -> group index.
        Returns:
          ``(bounds, groups)``: int64 offsets (n_seg + 1) and the group of each segment.
        """
        dtype = np.dtype(dtype)
        runs = sorted((s.start, s.stop, group_of(n)) for n, s in self._slots.items() if s.dtype == dtype)
        bounds, groups = [0], []
        for start, stop, grp in runs:
            if groups and groups[-1] == grp:
                bounds[-1] = stop
            else:
                bounds.append(stop)
                groups.append(grp)
        if not groups:  # a buffer with no parameters cannot exist; keep the shape valid anyway
            bounds.append(0)
            groups.append(0)
        return np.asarray(bounds, dtype=np.int64), groups


def _cupy():
    import cupy

    return cupy
