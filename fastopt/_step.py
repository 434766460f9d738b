"""The machinery shared by every functional optimiser step: validate, prepare host scalars, launch.

A step call goes through :class:`StepCall`:

1. ``StepCall(func, p, g, state, backend)`` resolves the backend (DLPack tensors
   become zero-copy NumPy/CuPy views) and checks every array (dtype, shape,
   contiguity, writability, aliasing) before anything is touched;
2. :meth:`StepCall.segment_scalars` validates the learning rates and weight decays
   (one value or one per segment) and folds them into the kernel's per-segment
   arrays ``lr``, ``l2`` and ``shrink``;
3. :meth:`StepCall.grad_multiplier` turns ``maximize``, ``grad_scale`` and
   ``max_grad_norm`` into the one scalar ``grad_mul`` the kernels apply, running the
   single norm/finiteness pass over ``g`` only when clipping or skipping needs it;
4. :meth:`StepCall.launch` casts the scalars to the arrays' dtype and calls the kernel.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _dispatch
from . import _validate as V

#: ``max_grad_norm / (norm + CLIP_EPS)``, as ``torch.nn.utils.clip_grad_norm_``.
CLIP_EPS = 1e-6


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


class StepCall:
    """One validated call of a fused update kernel (see the module docstring)."""

    __slots__ = ("func", "backend", "p", "g", "state", "n_segments", "bounds")

    def __init__(self, func, p, g, state, backend=None):
        named = [("p", p), ("g", g)] + [(name, a) for name, a in state]
        self.func = func
        self.backend, arrays = _dispatch.resolve(func, named, backend)
        self.p, self.g = arrays[0], arrays[1]
        self.state = arrays[2:]
        V.float_array(func, "p", self.p, writable=True)
        V.float_array(func, "g", self.g, writable=False)
        V.same_layout(func, "p", self.p, "g", self.g)
        for (name, _), a in zip(state, self.state):
            V.float_array(func, name, a, writable=True)
            V.same_layout(func, "p", self.p, name, a)
        outputs = [("p", self.p)] + [(name, a) for (name, _), a in zip(state, self.state)]
        V.no_aliasing(func, outputs + [("g", self.g)])
        if self.p.ndim != 1:  # contiguous, so these are views
            self.p, self.g = self.p.reshape(-1), self.g.reshape(-1)
            self.state = [a.reshape(-1) for a in self.state]

    def segment_scalars(self, segments, lr, weight_decay, decoupled, lr_factor=1.0, step_factor=1.0):
        """Validate lr/weight_decay and return the kernel's per-segment (bounds, lr, l2, shrink).

        ``lr_eff = lr * lr_factor`` is the scheduled rate (e.g. Adagrad's decay);
        the kernel's step size is ``lr_eff * step_factor`` (e.g. Adam's 1/(1 - beta1^k));
        decoupled weight decay shrinks p by ``1 - lr_eff * wd`` as AdamW does.
        """
        func, n = self.func, self.p.size
        if segments is None:
            bounds = _single_segment(n)
        else:
            bounds = V.segments(func, segments, n)
            bounds.flags.writeable = False  # one kernel specialisation: offsets are always read-only
        n_seg = bounds.size - 1
        lrs = V.per_segment(func, "lr", lr, n_seg, V.nonnegative)
        wds = V.per_segment(func, "weight_decay", weight_decay, n_seg, V.nonnegative)
        dtype = self.p.dtype
        lr_eff = [x * lr_factor for x in lrs]
        step = np.array([x * step_factor for x in lr_eff], dtype=dtype)
        if decoupled:
            l2 = np.zeros(n_seg, dtype=dtype)
            shrink = np.array([1.0 - a * w for a, w in zip(lr_eff, wds)], dtype=dtype)
        else:
            l2 = np.array(wds, dtype=dtype)
            shrink = np.ones(n_seg, dtype=dtype)
        return bounds, step, l2, shrink

    def grad_multiplier(self, maximize, grad_scale, max_grad_norm, skip_nonfinite):
        """Return ``(grad_mul, StepInfo-or-None)``; a StepInfo means: skip, touch nothing."""
        func = self.func
        maximize = V.flag(func, "maximize", maximize)
        scale = V.grad_scale(func, grad_scale)
        max_norm = V.max_grad_norm(func, max_grad_norm)
        skip_nonfinite = V.flag(func, "skip_nonfinite", skip_nonfinite)
        mul = (-1.0 if maximize else 1.0) / scale
        norm = None
        if max_norm is not None or skip_nonfinite:
            sumsq = _dispatch.get_kernel("optim", "grad_sumsq", self.backend)(self.g)
            norm = math.sqrt(sumsq) / scale if math.isfinite(sumsq) else float(sumsq) / scale
            if skip_nonfinite and not math.isfinite(norm):
                return mul, StepInfo(False, norm)
            if max_norm is not None:
                mul *= min(1.0, max_norm / (norm + CLIP_EPS))
        return mul, StepInfo(True, norm)

    def launch(self, kernel, state_order, bounds, lr, l2, shrink, grad_mul, *scalars):
        """Call ``kernel`` with arrays, per-segment arrays and scalars of the arrays' dtype.

        ``scalars``: floats are cast to the dtype; bools stay bools; ints stay ints.
        """
        cast = self.p.dtype.type
        args = [self.p, self.g, *state_order, bounds, lr, l2, shrink, cast(grad_mul)]
        for x in scalars:
            args.append(x if isinstance(x, (bool, np.bool_, int)) else cast(x))
        _dispatch.get_kernel("optim", kernel, self.backend)(*args)


_SINGLE = {}


def _single_segment(n: int) -> np.ndarray:
    """The offsets [0, n] of one segment, cached read-only per n."""
    b = _SINGLE.get(n)
    if b is None:
        if len(_SINGLE) > 256:
            _SINGLE.clear()
        b = np.array([0, n], dtype=np.int64)
        b.flags.writeable = False
        _SINGLE[n] = b
    return b


def empty_state(p):
    """A size-0 array of p's kind and dtype, for a state buffer the algorithm does not use."""
    return p[:0]
