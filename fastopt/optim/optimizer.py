"""The optimiser base class: parameter groups, step counting, state, checkpoints.

An :class:`Optimizer` updates a :class:`fastopt.FlatParams` (or one flat array) with
one fused kernel call per step and per dtype buffer, whatever the number of
tensors. Subclasses (:mod:`fastopt.optim.algorithms`) name their state buffers and
call one functional step of :mod:`fastopt.optim.functional`.

Parameter groups are runs of the flat buffer with their own learning rate and
weight decay: ``groups=[{"params": ["layer2.W", "layer2.b"], "lr": 1e-2}]`` for a
FlatParams (names), or ``{"params": slice(0, 100), ...}`` for a flat array. The
rest of the buffer forms the default group with the optimiser's ``lr`` and
``weight_decay``. A learning rate is a float or a schedule (``step -> float``,
where ``step`` counts the updates already taken; see :mod:`fastopt.schedules`).

Global-norm clipping and the skip on a non-finite gradient look at the whole
model (every dtype buffer) before any buffer changes. A skipped step changes
nothing, the step count included (PyTorch's ``found_inf`` semantics).
"""
from __future__ import annotations

import math
import os
import tempfile

import numpy as np

from .. import _dispatch
from .. import _validate as V
from .._step import CLIP_EPS, ONE, ZERO, StepInfo
from ..params import FlatParams
from ..schedules import as_schedule

__all__ = ["Optimizer"]

_APPLIED = StepInfo(True, None)


class _Part:
    """One dtype buffer of the parameters (``key``: its dtype) with its segments and optimiser state."""

    __slots__ = ("key", "p", "segments", "groups", "state")

    def __init__(self, key, p, segments, groups):
        self.key, self.p, self.segments, self.groups = key, p, segments, groups
        self.state = {}


class Optimizer:
    """Base class of fastopt's optimisers (see the module docstring).

    Args:
      params: a :class:`fastopt.FlatParams`, or a 1-D contiguous float array.
      lr: learning rate of the default group: a float >= 0 or a schedule.
      weight_decay: weight decay of the default group.
      groups: parameter groups (see the module docstring).
      maximize, grad_scale, max_grad_norm, skip_nonfinite: as in the functional steps.
      backend: "cpu", "gpu" or "reference" (default: from the arrays).
    """

    #: name of the algorithm, stored in checkpoints.
    algorithm = "optimizer"

    def __init__(self, params, *, lr, weight_decay=0.0, groups=None, maximize=False, grad_scale=1.0,
                 max_grad_norm=None, skip_nonfinite=False, backend=None):
        f = type(self).__name__
        self._func = f
        self.maximize = V.flag(f, "maximize", maximize)
        self.grad_scale = V.grad_scale(f, grad_scale)
        self.max_grad_norm = V.max_grad_norm(f, max_grad_norm)
        self.skip_nonfinite = V.flag(f, "skip_nonfinite", skip_nonfinite)
        default = {"lr": _lr_schedule(f, "lr", lr), "weight_decay": V.nonnegative(f, "weight_decay", weight_decay)}
        self.params = params
        self._groups, self._parts = _build_groups(f, params, groups, default)
        self.backend, _ = _dispatch.resolve(f, [(f"params[{p.key}]", p.p) for p in self._parts], backend)
        self.step_count = 0
        self._checked_grad = None   # the fast path (see step): the gradient buffer a full step checked
        self._fast_lr = None
        self._fast_kernels = {}     # kernel name -> the serial or threaded build chosen for this size
        self._has_host_state = type(self)._advance is not Optimizer._advance

    # -- what subclasses provide ---------------------------------------------------
    def _state_names(self) -> tuple[str, ...]:
        return ()

    def _init_state(self, name, p):
        """Initial value of state buffer ``name`` for parameters ``p`` (zeros by default)."""
        xp = _xp(p)
        return xp.zeros_like(p)

    def _apply(self, part, g, step, lrs, wds, grad_scale) -> StepInfo:  # pragma: no cover - abstract
        raise NotImplementedError

    def _advance(self, step) -> None:
        """Update host-side state after an applied step (e.g. NAdam's mu product)."""

    # -- stepping -------------------------------------------------------------------------
    def _ensure_state(self):
        for part in self._parts:
            for name in self._state_names():
                if name not in part.state:
                    part.state[name] = self._init_state(name, part.p)

    def learning_rates(self, step=None) -> list[float]:
        """The learning rate of each group at 1-based update ``step`` (default: the next one)."""
        k = self.step_count + 1 if step is None else step
        return [grp["lr"](k - 1) for grp in self._groups]

    def step(self, grads) -> StepInfo:
        """Apply one update with gradients ``grads`` (FlatParams laid out as the params, or an array).

        Returns:
          StepInfo(applied, grad_norm). When ``applied`` is False (non-finite gradient
          with ``skip_nonfinite=True``) nothing changed and ``step_count`` did not advance.

        The common case of a training loop (CPU, one dtype buffer, one parameter group, no
        clipping, skipping, maximising or loss scale, a gradient buffer already checked by an
        earlier step) goes straight to the kernel: see :meth:`_fast_step`.
        """
        if self._checked_grad is not None and self._fast_step(grads):
            return _APPLIED
        g_parts = self._grad_parts(grads)
        self._ensure_state()
        scale, norm = self.grad_scale, None
        if self.max_grad_norm is not None or self.skip_nonfinite:
            sumsq = 0.0
            _, g_parts = _dispatch.resolve(self._func, [("grads", g) for g in g_parts], self.backend)
            for part, g in zip(self._parts, g_parts):
                V.float_array(self._func, "grads", g, writable=False)
                V.same_layout(self._func, "params", part.p, "grads", g)
                sumsq += _dispatch.get_kernel("optim", "grad_sumsq", self.backend)(g)
            norm = math.sqrt(sumsq) / self.grad_scale if math.isfinite(sumsq) else sumsq / self.grad_scale
            if self.skip_nonfinite and not math.isfinite(norm):
                return StepInfo(False, norm)
            if self.max_grad_norm is not None:
                scale = self.grad_scale / min(1.0, self.max_grad_norm / (norm + CLIP_EPS))
        k = self.step_count + 1
        lrs = self.learning_rates(k)
        for part, g in zip(self._parts, g_parts):
            if len(part.groups) == 1:  # one value, not a list: the functional step's fast path
                seg_lr, seg_wd = lrs[part.groups[0]], self._groups[part.groups[0]]["weight_decay"]
            else:
                seg_lr = [lrs[i] for i in part.groups]
                seg_wd = [self._groups[i]["weight_decay"] for i in part.groups]
            self._apply(part, g, k, seg_lr, seg_wd, scale)
        self.step_count = k
        self._advance(k)
        self._remember_checked(g_parts)
        return StepInfo(True, norm)

    # -- the fast path of a training loop ------------------------------------------------
    #: Set by subclasses that implement :meth:`_fast_apply`: the kernel family they launch from.
    _fast_family = None

    def _remember_checked(self, g_parts) -> None:
        """After a step whose checks passed, remember its gradient buffer for the fast path."""
        if self._fast_family is None or self.backend != "cpu" or len(self._parts) != 1 \
                or len(self._parts[0].groups) != 1 or type(g_parts[0]) is not np.ndarray:
            return
        self._checked_grad = g_parts[0]
        if self._fast_lr is None:
            self._fast_lr = np.zeros(1)
            self._fast_l2 = np.zeros(1)
            self._fast_shrink = np.ones(1)

    def _fast_step(self, grads) -> bool:
        """One update without the per-step checks, when they cannot find anything new; else False.

        Taken when: the gradient buffer is the very array object an earlier step of this optimiser
        checked (dtype, shape, layout and no aliasing with the parameters or the state: an
        ndarray's memory never changes), the options are the plain ones (read at every step, so
        changing them later is honoured), and the learning rate of this step is a float >= 0.
        The kernel gets the same scalars as the functional step, so the result has the same bits.
        Anything else returns False and the step takes the full path, which checks and raises.
        """
        if type(grads) is FlatParams:
            if grads._slots is not self.params._slots:
                return False
            g = grads._buffers.get(self._parts[0].key)
        else:
            g = grads
        if g is not self._checked_grad or self.maximize is not False or self.grad_scale != 1.0 \
                or self.max_grad_norm is not None or self.skip_nonfinite is not False:
            return False
        k = self.step_count + 1
        group = self._groups[0]
        lr, wd = group["lr"](k - 1), group["weight_decay"]
        if type(lr) is not float or not 0.0 <= lr < math.inf:
            return False
        if not self._fast_apply(self._parts[0], g, k, lr, wd):
            return False
        self.step_count = k
        if self._has_host_state:
            self._advance(k)
        return True

    def _fast_kernel_named(self, name, size):
        """The serial or threaded build of CPU kernel ``name`` (of family ``_fast_family``) for ``size``
        elements, chosen once (the size never changes), as the kernel's own size dispatcher would choose
        it at every call."""
        kernel = self._fast_kernels.get(name)
        if kernel is None:
            kernel = _dispatch.get_kernel(self._fast_family, name, "cpu")
            kernel = self._fast_kernels[name] = getattr(
                kernel, "threaded" if size >= kernel.parallel_min_size else "serial", kernel)
        return kernel

    def _fast_apply(self, part, g, step, lr, wd) -> bool:  # pragma: no cover - subclasses
        """Launch the kernel (:meth:`_fast_kernel_named`) for one plain step; False if this step needs the
        full path."""
        return False

    def _fast_segment_arrays(self, lr, wd, decoupled, step_factor):
        """The kernel's one-segment ``lr, l2, shrink`` arrays, as :func:`fastopt._step.segment_arrays`
        computes them (same operations, so the same bits), written into reused buffers."""
        self._fast_lr[0] = lr * step_factor
        if wd == 0.0:           # l2 = 0, shrink = 1 (1 - lr 0 = 1 exactly): the constant arrays
            return self._fast_lr, ZERO, ONE
        if decoupled:
            self._fast_l2[0] = 0.0
            self._fast_shrink[0] = 1.0 - lr * wd
        else:
            self._fast_l2[0] = wd
            self._fast_shrink[0] = 1.0
        return self._fast_lr, self._fast_l2, self._fast_shrink

    def _grad_parts(self, grads):
        if isinstance(grads, FlatParams):
            # private attributes: the public properties copy their dicts, a cost on every step
            if not isinstance(self.params, FlatParams) or (grads._slots is not self.params._slots
                                                           and grads._slots != self.params._slots):
                raise ValueError(f"{self._func}.step: grads must be laid out like the parameters "
                                 f"(use params.zeros_like())")
            return [grads._buffers[part.key] for part in self._parts]
        if len(self._parts) != 1:
            raise TypeError(f"{self._func}.step: the parameters span {len(self._parts)} dtype buffers; "
                            f"grads must be a FlatParams laid out like them")
        return [grads]

    def zero_state(self) -> None:
        """Forget the state and the step count (as a new optimiser)."""
        for part in self._parts:
            part.state.clear()
        self.step_count = 0
        self._checked_grad = None   # the next step takes the full path, which makes the new state

    # -- checkpoints -----------------------------------------------------------------------
    def _host_state(self) -> dict:
        """Host-side scalars of the state (floats), beside the buffers."""
        return {}

    def _check_host_state(self, values: dict) -> dict:
        """Validate host state to be loaded (raise before anything is written); return it cleaned."""
        if values:
            raise ValueError(f"{self._func}.load_state_dict: unexpected host state {sorted(values)}")
        return {}

    def _load_host_state(self, values: dict) -> None:
        """Restore what :meth:`_check_host_state` accepted."""

    def state_dict(self) -> dict:
        """A copy of the state: ``{"algorithm", "step", "state": {"<name>.<dtype>": array}, ...}``."""
        self._ensure_state()
        state = {f"{name}.{part.key}": buf.copy() for part in self._parts for name, buf in part.state.items()}
        return {"algorithm": self.algorithm, "step": self.step_count, "state": state,
                "host": dict(self._host_state())}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore a :meth:`state_dict`; every buffer is checked before any is overwritten."""
        f = f"{self._func}.load_state_dict"
        if not isinstance(state_dict, dict) or state_dict.get("algorithm") != self.algorithm:
            got = state_dict.get("algorithm") if isinstance(state_dict, dict) else type(state_dict).__name__
            raise ValueError(f"{f}: state_dict is for {got!r}, not {self.algorithm!r}")
        step = state_dict.get("step")
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"{f}: step must be an int >= 0, got {step!r}")
        self._ensure_state()
        expected = {f"{name}.{part.key}": buf for part in self._parts for name, buf in part.state.items()}
        given = state_dict.get("state", {})
        if set(given) != set(expected):
            raise ValueError(f"{f}: state has buffers {sorted(given)}, expected {sorted(expected)}")
        for key, buf in expected.items():
            src = given[key]
            if getattr(src, "shape", None) != buf.shape or getattr(src, "dtype", None) != buf.dtype:
                raise ValueError(f"{f}: state[{key!r}] must have shape {buf.shape} and dtype {buf.dtype}, got "
                                 f"{getattr(src, 'shape', None)} {getattr(src, 'dtype', None)}")
        host = self._check_host_state(dict(state_dict.get("host", {})))
        for key, buf in expected.items():
            buf[...] = _xp(buf).asarray(given[key])
        self._load_host_state(host)
        self.step_count = int(step)

    def save(self, path) -> None:
        """Write the state to ``path`` (.npz) atomically: a crash mid-write keeps the previous file."""
        sd = self.state_dict()
        arrays = {f"state/{k}": _to_numpy(v) for k, v in sd["state"].items()}
        arrays.update({f"host/{k}": np.float64(v) for k, v in sd["host"].items()})
        arrays["algorithm"] = np.array(sd["algorithm"])
        arrays["step"] = np.int64(sd["step"])
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fastopt-", suffix=".npz.tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def load(self, path) -> None:
        """Restore the state written by :meth:`save`."""
        with np.load(os.fspath(path), allow_pickle=False) as data:
            sd = {"algorithm": str(data["algorithm"]), "step": int(data["step"]),
                  "state": {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")},
                  "host": {k[len("host/"):]: float(data[k]) for k in data.files if k.startswith("host/")}}
        self.load_state_dict(sd)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step_count={self.step_count}, groups={len(self._groups)})"


def _lr_schedule(func, name, lr):
    try:
        return as_schedule(lr)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{func}: {name}: {exc}") from None


def _xp(a):
    return np if type(a) is np.ndarray else __import__("cupy")


def _to_numpy(a):
    return a if type(a) is np.ndarray else a.get()


def _build_groups(func, params, groups, default):
    """Resolve groups into per-dtype parts with segment offsets and group indices."""
    groups = list(groups or [])
    resolved = [default]
    if isinstance(params, FlatParams):
        owner = {}
        for gi, grp in enumerate(groups, start=1):
            names = _group_entry(func, gi, grp, default, resolved)
            if isinstance(names, str) or not all(isinstance(n, str) for n in names):
                raise TypeError(f"{func}: groups[{gi - 1}]['params'] must be a list of parameter names")
            for n in names:
                if n not in params:
                    raise ValueError(f"{func}: groups[{gi - 1}] names {n!r}, which is not a parameter")
                if n in owner:
                    raise ValueError(f"{func}: parameter {n!r} is in two groups")
                owner[n] = gi
        parts = []
        for dtype, buf in params.buffers.items():
            bounds, seg_groups = params.segments(dtype, lambda n: owner.get(n, 0))
            parts.append(_Part(np.dtype(dtype), buf, V.Segments(bounds), seg_groups))
        return resolved, parts
    _, (arr,) = _dispatch.resolve(func, [("params", params)])
    V.float_array(func, "params", arr, writable=True)
    if arr.ndim != 1:
        raise ValueError(f"{func}: params must be a FlatParams or a 1-D array, got shape {arr.shape}")
    n = arr.size
    cuts = []
    for gi, grp in enumerate(groups, start=1):
        sl = _group_entry(func, gi, grp, default, resolved)
        if not isinstance(sl, slice) or sl.step not in (None, 1):
            raise TypeError(f"{func}: groups[{gi - 1}]['params'] must be a slice of the flat array")
        start, stop, _ = sl.indices(n)
        cuts.append((start, max(start, stop), gi))
    cuts.sort()
    bounds, seg_groups, pos = [0], [], 0
    for start, stop, gi in cuts:
        if start < pos:
            raise ValueError(f"{func}: parameter groups overlap at index {start}")
        if start > pos:
            bounds.append(start)
            seg_groups.append(0)
        bounds.append(stop)
        seg_groups.append(gi)
        pos = stop
    if pos < n or not seg_groups:
        bounds.append(n)
        seg_groups.append(0)
    return resolved, [_Part(arr.dtype, arr, V.Segments(bounds), seg_groups)]


def _group_entry(func, gi, grp, default, resolved):
    if not isinstance(grp, dict) or "params" not in grp:
        raise TypeError(f"{func}: groups[{gi - 1}] must be a dict with a 'params' entry")
    unknown = set(grp) - {"params", "lr", "weight_decay"}
    if unknown:
        raise ValueError(f"{func}: groups[{gi - 1}] has unknown keys {sorted(unknown)}")
    resolved.append({
        "lr": _lr_schedule(func, f"groups[{gi - 1}]['lr']", grp["lr"]) if "lr" in grp else default["lr"],
        "weight_decay": V.nonnegative(func, f"groups[{gi - 1}]['weight_decay']", grp["weight_decay"])
        if "weight_decay" in grp else default["weight_decay"],
    })
    return grp["params"]

