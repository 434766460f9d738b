"""The machinery shared by every functional optimiser step: validate, prepare host scalars, launch.

A step goes through three functions, then calls its kernel:

1. :func:`check_arrays` resolves the backend (DLPack tensors become zero-copy
   NumPy/CuPy views) and checks every array (dtype, shape, contiguity,
   writability, aliasing) before anything is touched;
2. :func:`segment_arrays` validates the learning rates and weight decays (one value
   or one per segment) and folds them into the kernel's per-segment float64 arrays
   ``lr``, ``l2`` and ``shrink``;
3. :func:`grad_multiplier` turns ``maximize``, ``grad_scale`` and ``max_grad_norm``
   into the one scalar ``grad_mul`` the kernels apply, running the single
   norm/finiteness pass over ``g`` only when clipping or skipping needs it.

Every scalar is computed on the host in float64; the kernels round them to the
arrays' dtype once, on entry (see ``kernels/cpu/optim.py``).

The common case (NumPy arrays that own their memory, one segment, float
hyperparameters) takes a fast path of identity and flag tests: a functional
step's overhead is measured in ``bench/bench_overhead.py``. Anything unusual
falls through to the full checks of :mod:`fastopt._validate`, which raise the
error messages. The plain ``adam_step`` call is leaner still: it leaves the array
checks to its kernel's entry (Numba's type match on the types a checked call admitted,
and the kernel's own size and overlap test; see ``adam_plain`` in ``kernels/cpu/optim.py``).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _dispatch
from . import _validate as V

#: ``max_grad_norm / (norm + CLIP_EPS)``, as ``torch.nn.utils.clip_grad_norm_``.
CLIP_EPS = 1e-6

_NDARRAY = np.ndarray
_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
# NPY_ARRAY_C_CONTIGUOUS | OWNDATA | ALIGNED | WRITEABLE, as in numpy/ndarraytypes.h
_PLAIN_FLAGS = 0x0001 | 0x0004 | 0x0100 | 0x0400
ZERO = np.zeros(1)  # constants (never written: the kernels only read them): l2 = 0 and shrink = 1 of
ONE = np.ones(1)    # a single segment; writable, since Numba compiles read-only arrays separately


class StepInfo(NamedTuple):
    """What a step did.

    Attributes:
      applied: False when the step was skipped because the gradient was not finite
        (``skip_nonfinite=True``): then no buffer changed.
      grad_norm: the global L2 norm of ``g / grad_scale`` when it was computed
        (clipping or skipping asked for it), else None.
    """

    applied: bool
    grad_norm: float | None = None


APPLIED = StepInfo(True, None)


_CPU_CONTEXT = (None, "cpu")


def check_arrays(func, names, arrays, backend=None):
    """Resolve the backend and check the arrays of one step; return ``(backend, flat arrays)``.

    Args:
      func: the public function's name, for messages.
      names: the arrays' argument names, ``("p", "g", <state>...)``.
      arrays: the arrays, in that order: ``p`` and the state are updated in place.
      backend: the explicit ``backend=`` argument, or None.
    Returns:
      the backend name and the arrays as 1-D views (NumPy or CuPy; DLPack tensors converted).
    """
    if (backend == "cpu" or (backend is None and cpu_context())) and _plain_arrays_ok(arrays):
        backend = "cpu"
    else:
        backend, arrays = _full_checks(func, names, arrays, backend)
    if arrays[0].ndim != 1:  # contiguous, so these are views
        arrays = tuple(a.reshape(-1) for a in arrays)
    return backend, arrays


def cpu_context() -> bool:
    """True when no ``fastopt.use_backend`` context is active, or a "cpu" one is."""
    return _dispatch._active.get() in _CPU_CONTEXT


def adam_corrections(beta1: float, beta2: float, step: int) -> tuple[float, float]:
    """Adam's bias corrections at 1-based ``step``, in float64: ``(1 / (1 - beta1^k), sqrt(1 - beta2^k))``.

    The one place they are computed: the functional step, the optimiser's fast path and the compiled
    training loop (:func:`fastopt.train.fit`) give the kernels the same scalars, hence the same bits.
    The step size is ``lr * (1 / (1 - beta1^k))`` (a product, not ``lr / (1 - beta1^k)``)."""
    return 1.0 / (1.0 - beta1 ** step), math.sqrt(1.0 - beta2 ** step)


def _full_checks(func, names, arrays, backend):
    backend, arrays = _dispatch.resolve(func, list(zip(names, arrays)), backend)
    p, g = arrays[0], arrays[1]
    V.float_array(func, "p", p, writable=True)
    V.float_array(func, "g", g, writable=False)
    V.same_layout(func, "p", p, "g", g)
    for name, a in zip(names[2:], arrays[2:]):
        V.float_array(func, name, a, writable=True)
        V.same_layout(func, "p", p, name, a)
    outputs = [(name, a) for name, a in zip(names, arrays) if name != "g"]
    V.no_aliasing(func, outputs + [("g", g)])
    return backend, tuple(arrays)


def segment_arrays(func, n, segments, lr, weight_decay, decoupled, lr_factor=1.0, step_factor=1.0):
    """Validate lr/weight_decay and return the kernel's per-segment (bounds, lr, l2, shrink).

    ``lr_eff = lr * lr_factor`` is the scheduled rate (e.g. Adagrad's decay);
    the kernel's step size is ``lr_eff * step_factor`` (e.g. Adam's 1/(1 - beta1^k));
    decoupled weight decay shrinks p by ``1 - lr_eff * wd`` as AdamW does.
    The arrays are float64 (the kernels round them on entry).
    """
    if decoupled is not False and decoupled is not True:
        decoupled = V.flag(func, "decoupled_weight_decay", decoupled)
    bounds = single_segment(n) if segments is None else V.segments(func, segments, n)
    if bounds.size == 2 and type(lr) is float and type(weight_decay) is float \
            and 0.0 <= lr < math.inf and weight_decay == 0.0:
        return bounds, np.array((lr * lr_factor * step_factor,)), ZERO, ONE
    n_seg = bounds.size - 1
    lrs = V.per_segment(func, "lr", lr, n_seg, V.nonnegative)
    wds = V.per_segment(func, "weight_decay", weight_decay, n_seg, V.nonnegative)
    lr_eff = [x * lr_factor for x in lrs]
    step = np.array([x * step_factor for x in lr_eff], dtype=np.float64)
    if decoupled:
        l2 = np.zeros(n_seg)
        shrink = np.array([1.0 - a * w for a, w in zip(lr_eff, wds)], dtype=np.float64)
    else:
        l2 = np.array(wds, dtype=np.float64)
        shrink = np.ones(n_seg)
    return bounds, step, l2, shrink


def grad_multiplier(func, backend, g, maximize, grad_scale, max_grad_norm, skip_nonfinite):
    """Return ``(grad_mul, StepInfo)``; ``StepInfo.applied`` False means: skip, touch nothing."""
    if maximize is False and grad_scale == 1.0 and max_grad_norm is None and skip_nonfinite is False \
            and type(grad_scale) in (float, int):
        return 1.0, APPLIED
    maximize = V.flag(func, "maximize", maximize)
    scale = V.grad_scale(func, grad_scale)
    max_norm = V.max_grad_norm(func, max_grad_norm)
    skip_nonfinite = V.flag(func, "skip_nonfinite", skip_nonfinite)
    mul = (-1.0 if maximize else 1.0) / scale
    norm = None
    if max_norm is not None or skip_nonfinite:
        sumsq = _dispatch.get_kernel("optim", "grad_sumsq", backend)(g)
        norm = math.sqrt(sumsq) / scale if math.isfinite(sumsq) else float(sumsq) / scale
        if skip_nonfinite and not math.isfinite(norm):
            return mul, StepInfo(False, norm)
        if max_norm is not None:
            mul *= min(1.0, max_norm / (norm + CLIP_EPS))
    return mul, StepInfo(True, norm)


def _plain_arrays_ok(arrays) -> bool:
    """True when the arrays are NumPy arrays that need no further check.

    Same float32/float64 dtype and shape; C-contiguous, aligned, writable and owning
    their memory (``flags.num`` tested against one mask); all distinct, so that none
    overlaps another. Conservative: False sends the call through the full checks,
    which find and name the problem (a read-only ``g`` is fine, and takes that path).
    """
    p = arrays[0]
    if type(p) is not _NDARRAY:
        return False
    dtype, shape = p.dtype, p.shape
    if dtype is not _F64 and dtype is not _F32:  # native byte order only
        return False
    for a in arrays:
        if type(a) is not _NDARRAY or a.dtype is not dtype or a.shape != shape \
                or a.flags.num & _PLAIN_FLAGS != _PLAIN_FLAGS:
            return False
    return len(set(map(id, arrays))) == len(arrays)


_SINGLE = {}


def single_segment(n: int) -> np.ndarray:
    """The offsets [0, n] of one segment, cached read-only per n."""
    b = _SINGLE.get(n)
    if b is None:
        if len(_SINGLE) > 256:
            _SINGLE.clear()
        b = np.array([0, n], dtype=np.int64)
        b.flags.writeable = False
        _SINGLE[n] = b
    return b


_EMPTY = {_F32: np.empty(0, _F32), _F64: np.empty(0, _F64)}


def empty_state(p):
    """A size-0 array of p's kind and dtype, for a state buffer the algorithm does not use."""
    if type(p) is _NDARRAY:
        return _EMPTY[p.dtype]
    return p[:0]
