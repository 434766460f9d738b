"""Learning-rate schedules: plain ``step -> float`` callables.

A schedule maps the step ``k >= 0`` to a learning rate ``gamma_k`` as a Python
``float``. ``k`` is the number of updates already taken, so the first update
uses ``k = 0``. The optimisers evaluate the schedule once per step on the host
and pass the resulting scalar to the kernel (see ``kernels/reference.py``).

Every constructor validates its arguments when it is called, so that a bad
hyperparameter fails at set-up, not a thousand steps into training. A call
only checks that ``k >= 0`` and costs well under a microsecond. Schedules are
small immutable objects with a readable ``repr`` that can be pickled (for
checkpoints and multiprocessing), unlike closures.

Schedules available:

========================  ==================================================
``constant``              ``gamma_0``
``exponential``           ``gamma_0 r^(k / T)``, optionally staircase, floor
``algebraic``             ``gamma_0 (1 + k / k0)^(-alpha)``, alpha in (1/2, 1]
``step``                  piecewise constant, scaled at boundaries
``cosine``                cosine decay to ``alpha gamma_0`` over ``T`` steps
``linear_warmup``         linear ramp, then another schedule
``join``                  schedules one after another
``as_schedule``           a float, a schedule or a callable, as a schedule
========================  ==================================================

Why decay at all: with noisy gradients, SGD with a constant step stalls at a
noise floor of size ``O(gamma)``. Decreasing ``gamma_k`` removes the floor, at
the price of slower convergence. The Robbins-Monro conditions
``sum_k gamma_k = inf`` (the iterates can still travel any distance) and
``sum_k gamma_k^2 < inf`` (the injected noise has finite total variance) hold
for the algebraic decay ``gamma_k ~ k^(-alpha)`` exactly when
``alpha in (1/2, 1]``. An exponential decay has a finite sum, so it can stop
short of the minimum, though it is common in practice.

Example:
  >>> from fastopt import schedules
  >>> lr = schedules.join(
  ...     [schedules.linear_warmup(10, 1e-3),
  ...      schedules.cosine(1e-3, 990, alpha=0.01)],
  ...     boundaries=[10])
  >>> lr(0), lr(5), lr(10), lr(1000)
  (0.0, 0.0005, 0.001, 1e-05)

References:
  H. Robbins and S. Monro, "A stochastic approximation method",
  Ann. Math. Statist. 22(3), 400-407, 1951.
  L. Bottou, F. E. Curtis and J. Nocedal, "Optimization methods for
  large-scale machine learning", SIAM Review 60(2), 223-311, 2018,
  Section 4 (diminishing step sizes).
"""
from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Mapping
from typing import Callable, Optional, Sequence, Union

from . import _validate as V

__all__ = [
    "Schedule",
    "ScheduleLike",
    "constant",
    "exponential",
    "algebraic",
    "step",
    "cosine",
    "linear_warmup",
    "join",
    "as_schedule",
]

#: A schedule: maps the step ``k >= 0`` (updates already taken) to a float.
Schedule = Callable[[int], float]
#: What :func:`as_schedule` accepts: a non-negative number or a schedule.
ScheduleLike = Union[float, int, Schedule]

_INF = math.inf


def _is_real(x) -> bool:
    # bool is an int subclass, but True as a learning rate is a bug, not 1.0.
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _is_numpy_bool(x) -> bool:
    # numpy.bool_ (NumPy 1) is numpy.bool (NumPy 2).
    t = type(x)
    return t.__module__ == "numpy" and t.__name__ in ("bool_", "bool")


def _bad_step(where: str, k):
    # Out of the hot path: only reached when the step is wrong.
    return ValueError(f"{where}: step k must be >= 0, got {k!r}")


def _coerce(where: str, name: str, lr) -> "_Schedule":
    """A number, one of our schedules, or a user callable, as a schedule."""
    if isinstance(lr, _Schedule):
        return lr
    if _is_real(lr):
        return _Constant(V.nonnegative(where, name, lr))
    if isinstance(lr, (str, bytes)) or not callable(lr):
        raise TypeError(
            f"{where}: {name} must be a non-negative number or a callable "
            f"step -> float, got {type(lr).__name__} {lr!r}")
    return _Checked(lr)


# ---------------------------------------------------------------------------
# Schedule objects. Classes rather than closures: they pickle, compare by
# identity, and print their parameters. The public API is the functions below.
# ---------------------------------------------------------------------------

class _Schedule:
    """Base class of fastopt's schedules (their output needs no re-checking)."""

    __slots__ = ()

    def __call__(self, k) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _set(self, **kw):
        for name, value in kw.items():
            object.__setattr__(self, name, value)

    def __getstate__(self):
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state):
        self._set(**state)


class _Constant(_Schedule):
    __slots__ = ("_value",)

    def __init__(self, value: float):
        self._set(_value=value)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.constant", k)
        return self._value

    def __repr__(self):
        return f"schedules.constant({self._value!r})"


class _Exponential(_Schedule):
    __slots__ = ("_init", "_rate", "_T", "_staircase", "_end", "_floor")

    def __init__(self, init, rate, T, staircase, end):
        self._set(_init=init, _rate=rate, _T=T, _staircase=staircase,
                  _end=end, _floor=0.0 if end is None else end)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.exponential", k)
        p = k // self._T if self._staircase else k / self._T
        v = self._init * math.pow(self._rate, p)
        return v if v >= self._floor else self._floor

    def __repr__(self):
        return (f"schedules.exponential(init_value={self._init!r}, "
                f"decay_rate={self._rate!r}, transition_steps={self._T}, "
                f"staircase={self._staircase}, end_value={self._end!r})")


class _Algebraic(_Schedule):
    __slots__ = ("_init", "_alpha", "_k0", "_strict", "_neg_alpha")

    def __init__(self, init, alpha, k0, strict):
        self._set(_init=init, _alpha=alpha, _k0=k0, _strict=strict,
                  _neg_alpha=-alpha)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.algebraic", k)
        return self._init * math.pow(1.0 + k / self._k0, self._neg_alpha)

    def __repr__(self):
        s = "" if self._strict else ", strict=False"
        return (f"schedules.algebraic(init_value={self._init!r}, "
                f"alpha={self._alpha!r}, k0={self._k0!r}{s})")


class _Step(_Schedule):
    __slots__ = ("_init", "_bounds", "_scales", "_values")

    def __init__(self, init, bounds, scales):
        values = [init]
        for s in scales:
            values.append(values[-1] * s)
        self._set(_init=init, _bounds=bounds, _scales=scales,
                  _values=tuple(values))

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.step", k)
        # bisect_right: at k == boundary the new scale already applies.
        return self._values[bisect.bisect_right(self._bounds, k)]

    def __repr__(self):
        pairs = ", ".join(f"{b}: {s!r}"
                          for b, s in zip(self._bounds, self._scales))
        return f"schedules.step({self._init!r}, {{{pairs}}})"


class _Cosine(_Schedule):
    __slots__ = ("_init", "_T", "_alpha", "_end", "_half_amp", "_w")

    def __init__(self, init, T, alpha):
        self._set(_init=init, _T=T, _alpha=alpha, _end=alpha * init,
                  _half_amp=0.5 * (1.0 - alpha) * init, _w=math.pi / T)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.cosine", k)
        if k >= self._T:
            return self._end
        return self._end + self._half_amp * (1.0 + math.cos(self._w * k))

    def __repr__(self):
        return (f"schedules.cosine(init_value={self._init!r}, "
                f"decay_steps={self._T}, alpha={self._alpha!r})")


class _LinearWarmup(_Schedule):
    __slots__ = ("_W", "_peak", "_init", "_then", "_rise")

    def __init__(self, W, peak, init, then):
        self._set(_W=W, _peak=peak, _init=init, _then=then, _rise=peak - init)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.linear_warmup", k)
        if k < self._W:
            # float(): a NumPy step would otherwise give a numpy.float64.
            return float(self._init + self._rise * (k / self._W))
        if self._then is None:
            return self._peak
        return self._then(k - self._W)

    def __repr__(self):
        return (f"schedules.linear_warmup(warmup_steps={self._W}, "
                f"peak_value={self._peak!r}, init_value={self._init!r}, "
                f"then={self._then!r})")


class _Join(_Schedule):
    __slots__ = ("_schedules", "_bounds", "_offsets")

    def __init__(self, schedules, bounds):
        self._set(_schedules=schedules, _bounds=bounds, _offsets=(0,) + bounds)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.join", k)
        i = bisect.bisect_right(self._bounds, k)
        return self._schedules[i](k - self._offsets[i])

    def __repr__(self):
        inner = ", ".join(repr(s) for s in self._schedules)
        return f"schedules.join([{inner}], boundaries={list(self._bounds)})"


class _Checked(_Schedule):
    """A user callable whose output is checked at every call."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        self._set(_fn=fn)

    def __call__(self, k) -> float:
        if not k >= 0:
            raise _bad_step("schedules.as_schedule", k)
        v = self._fn(k)
        if isinstance(v, bool) or not isinstance(v, (float, int)):
            v = self._convert(k, v)
        else:
            v = float(v)
        # One chained comparison rejects negatives, NaN and +inf alike.
        if not 0.0 <= v < _INF:
            raise ValueError(
                f"schedules.as_schedule: the learning rate at step {k!r} must "
                f"be finite and >= 0, got {v!r} from {self._fn!r}")
        return v

    def _convert(self, k, v) -> float:
        # NumPy/JAX/torch scalars and 0-d arrays: anything float() accepts,
        # except a bool, which is a bug rather than a learning rate.
        # float() would also parse strings and accept bools: both are bugs.
        if isinstance(v, (bool, str, bytes)) or _is_numpy_bool(v):
            raise TypeError(
                f"schedules.as_schedule: the learning rate at step {k!r} must "
                f"be a number, got {type(v).__name__} {v!r} from {self._fn!r}")
        try:
            return float(v)
        except (TypeError, ValueError):
            raise TypeError(
                f"schedules.as_schedule: the learning rate at step {k!r} must "
                f"be a number, got {type(v).__name__} {v!r} from {self._fn!r}"
            ) from None

    def __repr__(self):
        return f"schedules.as_schedule({self._fn!r})"


# ---------------------------------------------------------------------------
# Public constructors.
# ---------------------------------------------------------------------------

def constant(value: float) -> Schedule:
    r"""A constant learning rate.

    .. math:: \gamma_k = \gamma_0 .

    Args:
      value: the learning rate :math:`\gamma_0`, a finite number ``>= 0``.

    Returns:
      A schedule ``k -> float(value)``.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.constant(1e-3)
      >>> lr(0), lr(10_000)
      (0.001, 0.001)
    """
    return _Constant(V.nonnegative("schedules.constant", "value", value))


def exponential(init_value: float, decay_rate: float, transition_steps: int = 1,
                staircase: bool = False,
                end_value: Optional[float] = None) -> Schedule:
    r"""Exponential decay, continuous or in stairs, with an optional floor.

    .. math::
        \gamma_k = \max\!\left(\gamma_0\, r^{\,p_k},\ \gamma_{\mathrm{end}}\right),
        \qquad p_k = k / T \ \text{or, with staircase,}\ \lfloor k / T \rfloor .

    The rate is multiplied by ``r`` every ``T`` steps. As in
    ``optax.exponential_decay``, ``end_value`` clips the decay; since
    :math:`r \le 1` here the schedule never grows, so it is always a floor
    (optax uses it as a ceiling only for :math:`r > 1`). Note that
    :math:`\sum_k \gamma_k < \infty` without a floor: the iterates travel a
    bounded distance, so a too-fast decay stops SGD short of the minimum.

    Args:
      init_value: :math:`\gamma_0`, finite, ``>= 0``.
      decay_rate: :math:`r \in (0, 1]`; ``1`` gives a constant.
      transition_steps: :math:`T`, an int ``>= 1``: steps per factor ``r``.
      staircase: if True, decay in whole factors of ``r`` every ``T`` steps.
      end_value: ``None`` or a floor :math:`0 \le \gamma_{\mathrm{end}} \le
        \gamma_0`.

    Returns:
      A non-increasing schedule.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.exponential(1.0, 0.5, transition_steps=10)
      >>> lr(0), lr(10), lr(20)
      (1.0, 0.5, 0.25)
      >>> round(lr(5), 6)
      0.707107
      >>> stairs = schedules.exponential(1.0, 0.5, 10, staircase=True,
      ...                                end_value=0.2)
      >>> stairs(9), stairs(10), stairs(25), stairs(1000)
      (1.0, 0.5, 0.25, 0.2)

    References:
      optax, ``optax.exponential_decay`` (google-deepmind/optax,
      ``optax/schedules/_schedule.py``).
    """
    where = "schedules.exponential"
    init = V.nonnegative(where, "init_value", init_value)
    rate = V.hyper(where, "decay_rate", decay_rate)
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"{where}: decay_rate must be in (0, 1], got {decay_rate!r}")
    T = V.integer(where, "transition_steps", transition_steps, 1)
    stair = V.flag(where, "staircase", staircase)
    end = None
    if end_value is not None:
        end = V.nonnegative(where, "end_value", end_value)
        if end > init:
            raise ValueError(
                f"{where}: end_value is a floor and must be <= init_value "
                f"{init!r}, got {end_value!r}")
    return _Exponential(init, rate, T, stair, end)


def algebraic(init_value: float, alpha: float, k0: float = 1.0, *,
              strict: bool = True) -> Schedule:
    r"""Algebraic (polynomial) decay, the Robbins-Monro step size.

    .. math:: \gamma_k = \gamma_0 \left(1 + \frac{k}{k_0}\right)^{-\alpha} .

    So :math:`\gamma_0` is used at the first update and
    :math:`\gamma_k \sim \gamma_0 (k / k_0)^{-\alpha}` for large ``k``;
    ``k0`` sets how long the rate stays near :math:`\gamma_0`. For
    :math:`\alpha \in (1/2, 1]`,
    :math:`\sum_k \gamma_k = \infty` and :math:`\sum_k \gamma_k^2 < \infty`
    (compare with :math:`\int (1 + x/k_0)^{-\alpha}\,dx`): SGD on a noisy
    gradient still reaches the minimum and the noise is averaged out. The
    lecture recommends this range; ``alpha = 1`` is the classical
    :math:`\gamma_k \sim 1/k`.

    Args:
      init_value: :math:`\gamma_0`, finite, ``>= 0``.
      alpha: the decay exponent, in :math:`(1/2, 1]` unless ``strict=False``.
      k0: the time scale :math:`k_0 > 0` (finite, need not be an integer).
      strict: keyword only. With ``strict=False`` any finite ``alpha > 0`` is
        accepted, for experiments outside the Robbins-Monro range:
        :math:`\alpha \le 1/2` makes :math:`\sum \gamma_k^2` diverge (the
        noise floor is not removed), :math:`\alpha > 1` makes
        :math:`\sum \gamma_k` finite (SGD may stop short of the minimum).

    Returns:
      A non-increasing schedule.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.algebraic(0.1, alpha=1.0, k0=10)
      >>> lr(0), lr(10), lr(30)
      (0.1, 0.05, 0.025)
      >>> schedules.algebraic(0.1, alpha=2.0, strict=False)(1)
      0.025

    References:
      H. Robbins and S. Monro, "A stochastic approximation method",
      Ann. Math. Statist. 22(3), 400-407, 1951.
      B. T. Polyak and A. B. Juditsky, "Acceleration of stochastic
      approximation by averaging", SIAM J. Control Optim. 30(4), 838-855,
      1992 (step sizes :math:`k^{-\alpha}`, :math:`\alpha \in (1/2, 1)`).
      L. Bottou, F. E. Curtis and J. Nocedal, SIAM Review 60(2), 2018,
      Section 4.
    """
    where = "schedules.algebraic"
    init = V.nonnegative(where, "init_value", init_value)
    a = V.hyper(where, "alpha", alpha)
    strict = V.flag(where, "strict", strict)
    if strict:
        if not 0.5 < a <= 1.0:
            raise ValueError(
                f"{where}: alpha must be in (1/2, 1] (Robbins-Monro: sum "
                f"gamma_k = inf, sum gamma_k^2 < inf), got {alpha!r}; pass "
                f"strict=False to allow any alpha > 0")
    elif not a > 0.0:
        raise ValueError(f"{where}: alpha must be > 0, got {alpha!r}")
    k0v = V.positive(where, "k0", k0)
    return _Algebraic(init, a, k0v, strict)


def step(init_value: float,
         boundaries_and_scales: Union[Mapping[int, float],
                                      Sequence[tuple]]) -> Schedule:
    r"""Piecewise constant: multiply by a scale at each boundary.

    .. math:: \gamma_k = \gamma_0 \prod_{i:\ b_i \le k} s_i .

    As ``optax.piecewise_constant_schedule``: at ``k == b_i`` the scale
    ``s_i`` already applies.

    Args:
      init_value: :math:`\gamma_0`, finite, ``>= 0``.
      boundaries_and_scales: ``{b_i: s_i}`` or a sequence of ``(b_i, s_i)``
        pairs, with boundaries ints ``>= 0``, strictly increasing in the order
        given (an unsorted mapping is refused rather than silently sorted),
        and scales finite and ``>= 0`` (a scale above 1 raises the rate).
        May be empty (a constant).

    Returns:
      A piecewise-constant schedule.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.step(1.0, {100: 0.5, 200: 0.5})
      >>> lr(99), lr(100), lr(199), lr(200), lr(10**9)
      (1.0, 0.5, 0.5, 0.25, 0.25)

    References:
      K. He, X. Zhang, S. Ren and J. Sun, "Deep residual learning for image
      recognition", CVPR 2016 (rate divided by 10 at fixed steps).
    """
    where = "schedules.step"
    init = V.nonnegative(where, "init_value", init_value)
    name = "boundaries_and_scales"
    if isinstance(boundaries_and_scales, Mapping):
        pairs = list(boundaries_and_scales.items())
    elif (isinstance(boundaries_and_scales, (str, bytes))
          or not isinstance(boundaries_and_scales, (list, tuple))):
        raise TypeError(
            f"{where}: {name} must be a mapping {{boundary: scale}} or a list "
            f"of (boundary, scale) pairs, got "
            f"{type(boundaries_and_scales).__name__}")
    else:
        pairs = list(boundaries_and_scales)
        for i, p in enumerate(pairs):
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise TypeError(
                    f"{where}: {name}[{i}] must be a (boundary, scale) pair, "
                    f"got {p!r}")
    bounds = V.boundaries(where, f"{name} boundaries", [b for b, _ in pairs], 0)
    scales = tuple(V.nonnegative(where, f"{name} scale at boundary {b}", s)
                   for b, s in pairs)
    return _Step(init, bounds, scales)


def cosine(init_value: float, decay_steps: int, alpha: float = 0.0) -> Schedule:
    r"""Cosine decay from ``init_value`` to ``alpha * init_value``.

    .. math::
        \gamma_k = \gamma_0\left[\alpha + \frac{1 - \alpha}{2}
        \left(1 + \cos\frac{\pi \min(k, T)}{T}\right)\right],

    so :math:`\gamma_0` at ``k = 0`` and :math:`\alpha\gamma_0` for
    :math:`k \ge T`. As ``optax.cosine_decay_schedule`` (with ``exponent=1``).

    Args:
      init_value: :math:`\gamma_0`, finite, ``>= 0``.
      decay_steps: :math:`T`, an int ``>= 1``.
      alpha: the final fraction of :math:`\gamma_0`, in ``[0, 1]``.

    Returns:
      A non-increasing schedule.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.cosine(1.0, 100, alpha=0.1)
      >>> [round(lr(k), 12) for k in (0, 50, 100, 500)]
      [1.0, 0.55, 0.1, 0.1]

    References:
      I. Loshchilov and F. Hutter, "SGDR: Stochastic gradient descent with
      warm restarts", ICLR 2017, Eq. (5).
    """
    where = "schedules.cosine"
    init = V.nonnegative(where, "init_value", init_value)
    T = V.integer(where, "decay_steps", decay_steps, 1)
    a = V.hyper(where, "alpha", alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"{where}: alpha must be in [0, 1], got {alpha!r}")
    return _Cosine(init, T, a)


def linear_warmup(warmup_steps: int, peak_value: float, init_value: float = 0.0,
                  then: Optional[ScheduleLike] = None) -> Schedule:
    r"""Linear warm-up from ``init_value`` to ``peak_value``, then ``then``.

    .. math::
        \gamma_k = \begin{cases}
          \gamma_{\mathrm{init}} + (\gamma_{\mathrm{peak}} -
            \gamma_{\mathrm{init}})\, k / W, & k < W, \\
          \mathrm{then}(k - W) \ \text{(or } \gamma_{\mathrm{peak}}
            \text{ when then is None)}, & k \ge W.
        \end{cases}

    With the default ``init_value=0`` the first update (``k = 0``) has a zero
    learning rate, as in ``optax.linear_schedule``; pass a small positive
    ``init_value`` if every step should move the parameters. ``then``
    normally starts at ``peak_value`` (e.g. ``cosine(peak_value, ...)``); this
    is not enforced.

    Args:
      warmup_steps: :math:`W`, an int ``>= 0`` (``0``: no warm-up).
      peak_value: :math:`\gamma_{\mathrm{peak}}`, finite, ``>= 0``.
      init_value: :math:`\gamma_{\mathrm{init}}`, finite, ``>= 0``.
      then: ``None``, a schedule, a callable ``step -> float`` (checked at
        every call, see :func:`as_schedule`) or a number; it is evaluated at
        ``k - W``.

    Returns:
      A schedule.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.linear_warmup(4, 1.0, then=schedules.exponential(1.0, 0.5))
      >>> [lr(k) for k in range(7)]
      [0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.25]

    References:
      P. Goyal et al., "Accurate, large minibatch SGD: training ImageNet in
      1 hour", arXiv:1706.02677, 2017, Section 2.2 (gradual warm-up).
    """
    where = "schedules.linear_warmup"
    W = V.integer(where, "warmup_steps", warmup_steps, 0)
    peak = V.nonnegative(where, "peak_value", peak_value)
    init = V.nonnegative(where, "init_value", init_value)
    nxt = None if then is None else _coerce(where, "then", then)
    return _LinearWarmup(W, peak, init, nxt)


def join(schedules: Sequence[ScheduleLike], boundaries: Sequence[int]) -> Schedule:
    r"""Run schedules one after another; each restarts its count at its boundary.

    .. math::
        \gamma_k = s_i(k - b_i) \quad\text{for}\quad b_i \le k < b_{i+1},
        \qquad b_0 = 0,\ b_n = \infty .

    As ``optax.join_schedules``: at ``k == b_i`` schedule ``i`` is used, at
    its own step 0.

    Args:
      schedules: a non-empty list of ``n`` schedules, callables or numbers
        (callables and numbers go through :func:`as_schedule`).
      boundaries: ``n - 1`` ints, strictly increasing and ``>= 1`` (a boundary
        at 0 would make the first schedule unreachable, almost surely a
        mistake).

    Returns:
      A schedule.

    Example:
      >>> from fastopt import schedules
      >>> lr = schedules.join([0.1, schedules.exponential(0.1, 0.5)],
      ...                     boundaries=[3])
      >>> [lr(k) for k in range(6)]
      [0.1, 0.1, 0.1, 0.1, 0.05, 0.025]

    References:
      optax, ``optax.join_schedules`` (google-deepmind/optax,
      ``optax/schedules/_join.py``).
    """
    where = "schedules.join"
    if isinstance(schedules, (str, bytes)) or not isinstance(schedules, (list, tuple)):
        raise TypeError(
            f"{where}: schedules must be a list of schedules, got "
            f"{type(schedules).__name__}")
    if not schedules:
        raise ValueError(f"{where}: schedules must not be empty")
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, (list, tuple)):
        raise TypeError(
            f"{where}: boundaries must be a list of ints, got "
            f"{type(boundaries).__name__}")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"{where}: boundaries must have len(schedules) - 1 = "
            f"{len(schedules) - 1} entries, got {len(boundaries)}")
    scheds = tuple(_coerce(where, f"schedules[{i}]", s)
                   for i, s in enumerate(schedules))
    bounds = V.boundaries(where, "boundaries", boundaries, 1)
    return _Join(scheds, bounds)


def as_schedule(lr: ScheduleLike) -> Schedule:
    r"""Turn what a user passes as ``lr`` into a schedule.

    - A finite number ``>= 0`` (``int``, ``float``, NumPy scalar; not
      ``bool``) becomes :func:`constant`.
    - A schedule from this module is returned as is.
    - Any other callable ``step -> float`` is wrapped so that each call checks
      its output: a value that is not a number, is NaN, infinite or negative
      raises an error naming the step. NumPy/JAX/torch scalars are converted
      with ``float``. The wrapper is what the optimisers rely on to pass a
      trusted scalar to the kernel.

    Args:
      lr: a number, a schedule or a callable.

    Returns:
      A schedule returning Python floats.

    Raises:
      TypeError: ``lr`` is a bool, a string, or neither a number nor callable.
      ValueError: ``lr`` is a negative, NaN or infinite number.

    Example:
      >>> from fastopt import schedules
      >>> schedules.as_schedule(0.01)(7)
      0.01
      >>> lr = schedules.as_schedule(lambda k: 0.1 - 0.01 * k)
      >>> round(lr(3), 12)
      0.07
      >>> lr(11)   # doctest: +IGNORE_EXCEPTION_DETAIL
      Traceback (most recent call last):
      ValueError: schedules.as_schedule: the learning rate at step 11 must be finite and >= 0, ...
    """
    return _coerce("schedules.as_schedule", "lr", lr)
