"""Bad input to the public optimiser API: a clear TypeError/ValueError naming the argument,
raised before any buffer is touched.

Every rejection test snapshots the bytes of every array in play (the call's arrays, the
arrays they replaced and any buffer they are views of) and checks them byte for byte
after the call. Each case family has a positive control (the same harness with good
input does update ``p``), so a check that went missing would be seen: the kernel would
run and either not raise or change the buffers.

The tables are products: (functional step or optimiser class) x (bad input).
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
import pytest

import fastopt
from fastopt import FlatParams, optim, schedules

N = 8


# ---------------------------------------------------------------------------
# The functional steps: what arrays each takes and a valid set of scalars.
# ---------------------------------------------------------------------------
class Case(NamedTuple):
    id: str
    fname: str                 # the name error messages carry
    positional: tuple          # array arguments by position (p, g, state...)
    kw_arrays: tuple           # array arguments by keyword (vmax, gavg, buf)
    scalars: dict

    @property
    def func(self):
        return getattr(fastopt, self.fname)

    @property
    def outputs(self):
        """Arrays updated in place, in the order the step lists them (p first)."""
        return ("p",) + self.positional[2:] + self.kw_arrays

    @property
    def names(self):
        return self.positional + self.kw_arrays

    @property
    def takes_step(self):
        return "step" in self.scalars


CASES = [
    Case("sgd", "sgd_step", ("p", "g"), (), {"lr": 0.1}),
    Case("momentum", "momentum_step", ("p", "g", "m"), (), {"lr": 0.1, "beta": 0.9}),
    Case("sgd_momentum", "sgd_momentum_step", ("p", "g", "buf"), (), {"lr": 0.1, "step": 2, "momentum": 0.9}),
    Case("adam", "adam_step", ("p", "g", "m", "v"), (), {"lr": 0.1, "step": 1}),
    Case("amsgrad", "adam_step", ("p", "g", "m", "v"), ("vmax",), {"lr": 0.1, "step": 1, "amsgrad": True}),
    Case("nadam", "nadam_step", ("p", "g", "m", "v"), (), {"lr": 0.1, "step": 1, "mu_product": 0.45}),
    Case("rmsprop", "rmsprop_step", ("p", "g", "sq"), (), {"lr": 0.1}),
    Case("rmsprop_centered_momentum", "rmsprop_step", ("p", "g", "sq"), ("gavg", "buf"),
         {"lr": 0.1, "centered": True, "momentum": 0.5}),
    Case("adagrad", "adagrad_step", ("p", "g", "ssum"), (), {"lr": 0.1, "step": 1}),
    Case("lion", "lion_step", ("p", "g", "m"), (), {"lr": 0.1}),
]
CASE_IDS = [c.id for c in CASES]


def make_arrays(case, dtype=np.float64, n=N, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in case.names:
        a = rng.standard_normal(n)
        if name not in ("p", "g", "m", "buf", "gavg"):
            a = np.abs(a) + 1.0  # second moments and sums stay positive
        arrays[name] = a.astype(dtype)
    return arrays


def call(case, arrays, scalars=None, **extra):
    scalars = dict(case.scalars if scalars is None else scalars)
    scalars.update(extra)
    args = [arrays[n] for n in case.positional]
    kwargs = {n: arrays[n] for n in case.kw_arrays}
    return case.func(*args, **kwargs, **scalars)


def _watch(*groups):
    """Every NumPy array in the groups (dicts or iterables), each object once."""
    seen, out = set(), []
    for grp in groups:
        items = grp.values() if isinstance(grp, dict) else grp
        for a in items:
            if isinstance(a, np.ndarray) and id(a) not in seen:
                seen.add(id(a))
                out.append(a)
    return out


def assert_rejected(case, arrays, scalars, exc, match, *, extra=(), originals=None):
    """The call raises ``exc`` matching ``match``; every array's bytes are unchanged."""
    watched = _watch(arrays, extra, originals or {})
    before = [(a.dtype, a.shape, a.tobytes()) for a in watched]
    with pytest.raises(exc, match=match):
        call(case, arrays, scalars)
    after = [(a.dtype, a.shape, a.tobytes()) for a in watched]
    for (d, s, b0), (_, _, b1), a in zip(before, after, watched):
        assert b0 == b1, f"a buffer of dtype {d} shape {s} was modified by a rejected call"


def _msg(case, text):
    return re.escape(f"{case.fname}: ") + text


# ---------------------------------------------------------------------------
# Positive controls: the harness with good input updates the buffers.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_valid_call_updates_p(case, dtype):
    arrays = make_arrays(case, dtype)
    p0 = arrays["p"].copy()
    info = call(case, arrays)
    assert info.applied is True
    assert arrays["p"].dtype == dtype
    assert not np.array_equal(arrays["p"], p0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_read_only_gradient_is_accepted(case):
    arrays = make_arrays(case)
    arrays["g"].flags.writeable = False
    g0 = arrays["g"].tobytes()
    p0 = arrays["p"].copy()
    call(case, arrays)
    assert arrays["g"].tobytes() == g0
    assert not np.array_equal(arrays["p"], p0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_disjoint_views_of_one_buffer_are_accepted(case):
    """Non-overlapping views of one buffer are fine (only overlap is aliasing)."""
    k = len(case.names)
    base = np.abs(np.random.default_rng(1).standard_normal(k * N)) + 0.5
    arrays = {name: base[i * N:(i + 1) * N] for i, name in enumerate(case.names)}
    p0 = arrays["p"].copy()
    call(case, arrays)
    assert not np.array_equal(arrays["p"], p0)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_two_dimensional_arrays_are_accepted(case):
    arrays = {k: v.reshape(2, N // 2) for k, v in make_arrays(case).items()}
    p0 = arrays["p"].copy()
    call(case, arrays)
    assert arrays["p"].shape == (2, N // 2)
    assert not np.array_equal(arrays["p"], p0)


# ---------------------------------------------------------------------------
# Array checks, for every array argument of every step.
# ---------------------------------------------------------------------------
def _array_params(which="all"):
    out = []
    for case in CASES:
        names = {"all": case.names, "non_p": case.names[1:], "outputs": case.outputs}[which]
        for name in names:
            out.append(pytest.param(case, name, id=f"{case.id}-{name}"))
    return out


@pytest.mark.parametrize("case, name", _array_params("non_p"))
@pytest.mark.parametrize("shape", [(N + 1,), (N - 1,), (2, N // 2), (0,)], ids=str)
def test_shape_mismatch(case, name, shape):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays[name] = np.ones(shape)
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} must have the shape of p"), originals=orig)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_shape_mismatch_of_p_names_g(case):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays["p"] = np.ones(N + 2)
    assert_rejected(case, arrays, None, ValueError, _msg(case, "g must have the shape of p"), originals=orig)


@pytest.mark.parametrize("case, name", _array_params("non_p"))
@pytest.mark.parametrize("other", [np.float32, np.float64])
def test_dtype_mismatch_with_p(case, name, other):
    p_dtype = np.float64 if other == np.float32 else np.float32
    arrays = make_arrays(case, p_dtype)
    orig = dict(arrays)
    arrays[name] = arrays[name].astype(other)
    assert_rejected(case, arrays, None, TypeError,
                    _msg(case, re.escape(f"{name} must have the dtype of p ({np.dtype(p_dtype)})")), originals=orig)


@pytest.mark.parametrize("case, name", _array_params("all"))
@pytest.mark.parametrize("bad", ["int64", "int32", "uint8", "bool", "float16", "complex128", "longdouble"])
def test_non_float_dtype(case, name, bad):
    bad = np.dtype(bad)
    if bad == np.dtype(np.float64):  # longdouble is float64 on some platforms
        pytest.skip("longdouble is float64 here")
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays[name] = np.ones(N, dtype=bad)
    assert_rejected(case, arrays, None, TypeError, _msg(case, f"{name} must be float32 or float64"),
                    originals=orig)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_all_arrays_integer(case):
    arrays = {k: np.ones(N, dtype=np.int64) for k in case.names}
    assert_rejected(case, arrays, None, TypeError, _msg(case, "p must be float32 or float64"))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_all_arrays_float16(case):
    arrays = {k: np.ones(N, dtype=np.float16) for k in case.names}
    assert_rejected(case, arrays, None, TypeError, _msg(case, "p must be float32 or float64, got float16"))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_non_native_byte_order(case):
    """Byte-swapped float64 passes a dtype.char test ('d') but no kernel can take it:
    it must be refused by validation, naming p, not fail inside Numba."""
    arrays = {k: v.astype(">f8" if np.little_endian else "<f8") for k, v in make_arrays(case).items()}
    assert_rejected(case, arrays, None, (TypeError, ValueError), _msg(case, r"p\b"))


@pytest.mark.parametrize("case, name", _array_params("all"))
def test_strided_view(case, name):
    arrays = make_arrays(case)
    orig = dict(arrays)
    base = np.arange(2 * N, dtype=np.float64) + 1.0
    arrays[name] = base[::2]
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} must be C-contiguous"),
                    extra=[base], originals=orig)


@pytest.mark.parametrize("case, name", _array_params("all"))
def test_fortran_order(case, name):
    arrays = {k: v.reshape(2, N // 2) for k, v in make_arrays(case).items()}
    orig = dict(arrays)
    arrays[name] = np.asfortranarray(arrays[name])
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} must be C-contiguous"), originals=orig)


@pytest.mark.parametrize("case, name", _array_params("outputs"))
def test_read_only_output(case, name):
    arrays = make_arrays(case)
    arrays[name].flags.writeable = False
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} is read-only but is updated in place"))


@pytest.mark.parametrize("case, name", _array_params("outputs"))
def test_read_only_view_of_writable_buffer(case, name):
    arrays = make_arrays(case)
    base = arrays[name]
    view = base.view()
    view.flags.writeable = False
    arrays[name] = view
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} is read-only"), extra=[base])


def _output_pairs():
    out = []
    for case in CASES:
        outs = case.outputs
        for i, a in enumerate(outs):
            for b in outs[i + 1:]:
                out.append(pytest.param(case, a, b, id=f"{case.id}-{a}-{b}"))
    return out


@pytest.mark.parametrize("case, a, b", _output_pairs())
def test_outputs_are_the_same_array(case, a, b):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays[b] = arrays[a]
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{a} and {b} are the same array"), originals=orig)


@pytest.mark.parametrize("case, a, b", _output_pairs())
@pytest.mark.parametrize("shift", [1, N // 2, N - 1])
def test_outputs_overlap(case, a, b, shift):
    arrays = make_arrays(case)
    orig = dict(arrays)
    base = np.abs(np.random.default_rng(2).standard_normal(N + shift)) + 0.5
    arrays[a] = base[:N]
    arrays[b] = base[shift:shift + N]
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{a} and {b} overlap in memory"),
                    extra=[base], originals=orig)


@pytest.mark.parametrize("case, name", _array_params("outputs"))
def test_gradient_is_an_output(case, name):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays["g"] = arrays[name]
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} and g are the same array"),
                    originals=orig)


@pytest.mark.parametrize("case, name", _array_params("outputs"))
def test_gradient_overlaps_an_output(case, name):
    arrays = make_arrays(case)
    orig = dict(arrays)
    base = np.abs(np.random.default_rng(3).standard_normal(N + 3)) + 0.5
    arrays[name] = base[:N]
    g_view = base[3:].view()
    g_view.flags.writeable = False  # a read-only view still aliases the output
    arrays["g"] = g_view
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{name} and g overlap in memory"),
                    extra=[base], originals=orig)


@pytest.mark.parametrize("case, name", _array_params("outputs"))
def test_reshaped_view_aliasing(case, name):
    """A 2-D p and a reshaped view of the same memory as an output are the same memory."""
    arrays = {k: v.reshape(2, N // 2) for k, v in make_arrays(case).items()}
    orig = dict(arrays)
    if name == "p":
        other = case.outputs[1] if len(case.outputs) > 1 else "g"
        arrays[other] = arrays["p"].reshape(N).reshape(2, N // 2)
        first, second = ("p", other)
    else:
        arrays[name] = arrays["p"].reshape(N).reshape(2, N // 2)
        first, second = ("p", name)
    assert_rejected(case, arrays, None, ValueError, _msg(case, f"{first} and {second} overlap in memory"),
                    originals=orig)


# ---------------------------------------------------------------------------
# Backends and foreign objects.
# ---------------------------------------------------------------------------
class FakeArray:
    """Looks array-ish (dtype, shape, flags) but is no NumPy/CuPy array and has no DLPack."""

    def __init__(self, n=N):
        self.dtype = np.dtype(np.float64)
        self.shape = (n,)
        self.size = n
        self.ndim = 1
        self.flags = np.ones(1).flags


class FakeDLPack:
    """A DLPack producer on a device fastopt does not support (4 = OpenCL)."""

    def __dlpack_device__(self):
        return (4, 0)

    def __dlpack__(self, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("fastopt must not ask an unsupported device for its data")


@pytest.mark.parametrize("case, name", _array_params("all"))
def test_fake_array_class_is_type_error(case, name):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays[name] = FakeArray()
    assert_rejected(case, arrays, None, TypeError, rf"\b{name} must be a NumPy or CuPy array.*FakeArray",
                    originals=orig)


@pytest.mark.parametrize("case, name", _array_params("all"))
@pytest.mark.parametrize("bad", [[1.0] * N, (1.0,) * N, 3.0, None, "p"], ids=["list", "tuple", "float", "None", "str"])
def test_non_array_is_type_error(case, name, bad):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays[name] = bad
    if bad is None and name in case.kw_arrays:  # an optional buffer left out: "must be given"
        exc, msg = ValueError, _msg(case, rf"{name} must be given")
    else:
        exc, msg = TypeError, rf"\b{name} must be a NumPy or CuPy array"
    assert_rejected(case, arrays, None, exc, msg, originals=orig)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_unsupported_dlpack_device(case):
    arrays = make_arrays(case)
    orig = dict(arrays)
    arrays["g"] = FakeDLPack()
    assert_rejected(case, arrays, None, TypeError, r"\bg lives on DLPack device type 4", originals=orig)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_explicit_gpu_backend_with_numpy_arrays(case):
    arrays = make_arrays(case)
    assert_rejected(case, arrays, dict(case.scalars, backend="gpu"), TypeError,
                    _msg(case, "backend 'gpu' was requested but the arrays are cpu arrays"))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("bad", ["tpu", "CPU", "", 0])
def test_unknown_backend_name(case, bad):
    arrays = make_arrays(case)
    assert_rejected(case, arrays, dict(case.scalars, backend=bad), ValueError, r"backend must be one of 'cpu'")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gpu_context_with_numpy_arrays(case):
    """Inside use_backend('gpu') (when it can be entered) NumPy arrays are refused, not copied."""
    if not fastopt.gpu_status()[0]:
        with pytest.raises(RuntimeError, match="gpu"):
            with fastopt.use_backend("gpu"):
                pass  # pragma: no cover
        return
    arrays = make_arrays(case)
    with fastopt.use_backend("gpu"):
        assert_rejected(case, arrays, None, TypeError, "backend 'gpu' was requested")


# ---------------------------------------------------------------------------
# Scalars: one table per concern, crossed with every step that takes them.
# ---------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")

COMMON_BAD = [
    # (kwarg, value, exception, message after "<func>: ")
    ("lr", -0.1, ValueError, r"lr must be >= 0"),
    ("lr", -1e-300, ValueError, r"lr must be >= 0"),
    ("lr", NAN, ValueError, r"lr must be finite"),
    ("lr", INF, ValueError, r"lr must be finite"),
    ("lr", -INF, ValueError, r"lr must be finite"),
    ("lr", np.float32("nan"), ValueError, r"lr must be finite"),
    ("lr", "0.1", TypeError, r"lr must be a real number"),
    ("lr", None, TypeError, r"lr must be a real number"),
    ("lr", True, TypeError, r"lr must be a real number"),
    ("lr", 0.1 + 0j, TypeError, r"lr must be a real number"),
    ("weight_decay", -1e-3, ValueError, r"weight_decay must be >= 0"),
    ("weight_decay", NAN, ValueError, r"weight_decay must be finite"),
    ("weight_decay", INF, ValueError, r"weight_decay must be finite"),
    ("weight_decay", "0", TypeError, r"weight_decay must be a real number"),
    ("grad_scale", 0.0, ValueError, r"grad_scale must be > 0"),
    ("grad_scale", -2.0, ValueError, r"grad_scale must be > 0"),
    ("grad_scale", NAN, ValueError, r"grad_scale must be finite"),
    ("grad_scale", INF, ValueError, r"grad_scale must be finite"),
    ("grad_scale", None, TypeError, r"grad_scale must be a real number"),
    ("max_grad_norm", 0.0, ValueError, r"max_grad_norm must be > 0"),
    ("max_grad_norm", -1.0, ValueError, r"max_grad_norm must be > 0"),
    ("max_grad_norm", NAN, ValueError, r"max_grad_norm must be finite"),
    ("max_grad_norm", INF, ValueError, r"max_grad_norm must be finite"),
    ("max_grad_norm", "1", TypeError, r"max_grad_norm must be a real number"),
    ("maximize", 1, TypeError, r"maximize must be a bool"),
    ("maximize", "yes", TypeError, r"maximize must be a bool"),
    ("maximize", None, TypeError, r"maximize must be a bool"),
    ("skip_nonfinite", 0, TypeError, r"skip_nonfinite must be a bool"),
    ("skip_nonfinite", "no", TypeError, r"skip_nonfinite must be a bool"),
    ("decoupled_weight_decay", "no", TypeError, r"decoupled_weight_decay must be a bool"),
]

STEP_BAD = [
    ("step", 0, ValueError, r"step must be >= 1"),
    ("step", -3, ValueError, r"step must be >= 1"),
    ("step", np.int64(0), ValueError, r"step must be >= 1"),
    ("step", 1.0, TypeError, r"step must be an int"),
    ("step", np.float64(2.0), TypeError, r"step must be an int"),
    ("step", "1", TypeError, r"step must be an int"),
    ("step", None, TypeError, r"step must be an int"),
    ("step", True, TypeError, r"step must be an int"),
    ("step", np.bool_(True), TypeError, r"step must be an int"),
]


def _decay_bad(name, *, one_ok=False):
    """A decay rate: [0, 1) (or [0, 1] when one_ok)."""
    rows = [
        (name, -0.1, ValueError, rf"{name} must be >= 0"),
        (name, 1.5, ValueError, rf"{name} must be <"),
        (name, NAN, ValueError, rf"{name} must be finite"),
        (name, INF, ValueError, rf"{name} must be finite"),
        (name, "0.9", TypeError, rf"{name} must be a real number"),
        (name, None, TypeError, rf"{name} must be a real number"),
    ]
    if not one_ok:
        rows.append((name, 1.0, ValueError, rf"{name} must be < 1"))
    return rows


def _eps_bad():
    return [
        ("eps", 0.0, ValueError, r"eps must be > 0"),
        ("eps", -1e-8, ValueError, r"eps must be > 0"),
        ("eps", NAN, ValueError, r"eps must be finite"),
        ("eps", INF, ValueError, r"eps must be finite"),
        ("eps", None, TypeError, r"eps must be a real number"),
    ]


SPECIFIC_BAD = {
    "momentum": _decay_bad("beta"),
    "sgd_momentum": _decay_bad("momentum") + [
        ("dampening", -0.5, ValueError, r"dampening must be >= 0"),
        ("dampening", 1.5, ValueError, r"dampening must be <= 1"),
        ("dampening", NAN, ValueError, r"dampening must be finite"),
        ("nesterov", 1, TypeError, r"nesterov must be a bool"),
    ],
    "adam": _decay_bad("beta1") + _decay_bad("beta2") + _eps_bad() + [
        ("amsgrad", 1, TypeError, r"amsgrad must be a bool"),
        ("amsgrad", True, ValueError, r"vmax must be given when amsgrad=True"),
    ],
    "amsgrad": _decay_bad("beta1") + _decay_bad("beta2") + _eps_bad(),
    "nadam": _decay_bad("beta1") + _decay_bad("beta2") + _eps_bad() + [
        ("mu_product", 1.0, ValueError, r"mu_product must be < 1"),
        ("mu_product", -0.1, ValueError, r"mu_product must be >= 0"),
        ("mu_product", NAN, ValueError, r"mu_product must be finite"),
        ("mu_product", None, TypeError, r"mu_product must be a real number"),
        ("momentum_decay", -4e-3, ValueError, r"momentum_decay must be >= 0"),
        ("momentum_decay", NAN, ValueError, r"momentum_decay must be finite"),
        ("momentum_decay", INF, ValueError, r"momentum_decay must be finite"),
    ],
    "rmsprop": _decay_bad("alpha") + _decay_bad("momentum") + _eps_bad() + [
        ("centered", 1, TypeError, r"centered must be a bool"),
        ("centered", True, ValueError, r"gavg must be given when centered=True"),
    ],
    "rmsprop_centered_momentum": _decay_bad("alpha") + _eps_bad() + [
        ("momentum", 1.0, ValueError, r"momentum must be < 1"),
        ("momentum", -0.5, ValueError, r"momentum must be >= 0"),
        ("momentum", NAN, ValueError, r"momentum must be finite"),
    ],
    "adagrad": _eps_bad() + [
        ("lr_decay", -0.1, ValueError, r"lr_decay must be >= 0"),
        ("lr_decay", NAN, ValueError, r"lr_decay must be finite"),
        ("lr_decay", INF, ValueError, r"lr_decay must be finite"),
    ],
    "lion": _decay_bad("beta1", one_ok=True) + _decay_bad("beta2"),
}
# rmsprop with momentum > 0 but no buf
SPECIFIC_BAD["rmsprop"].append(("momentum", 0.5, ValueError, r"buf must be given when momentum > 0"))


def _scalar_params():
    out = []
    for case in CASES:
        rows = list(COMMON_BAD) + (STEP_BAD if case.takes_step else []) + SPECIFIC_BAD.get(case.id, [])
        for key, value, exc, msg in rows:
            out.append(pytest.param(case, key, value, exc, msg, id=f"{case.id}-{key}={value!r}"))
    return out


@pytest.mark.parametrize("case, key, value, exc, msg", _scalar_params())
def test_bad_scalar(case, key, value, exc, msg):
    arrays = make_arrays(case)
    scalars = dict(case.scalars)
    scalars[key] = value
    assert_rejected(case, arrays, scalars, exc, _msg(case, msg))


@pytest.mark.parametrize("case", [c for c in CASES if c.takes_step], ids=lambda c: c.id)
def test_step_numpy_integer_is_accepted(case):
    arrays = make_arrays(case)
    p0 = arrays["p"].copy()
    call(case, arrays, dict(case.scalars, step=np.int64(3)))
    assert not np.array_equal(arrays["p"], p0)


def test_lion_beta1_one_is_accepted():
    case = next(c for c in CASES if c.id == "lion")
    arrays = make_arrays(case)
    m0 = arrays["m"].copy()
    call(case, arrays, dict(case.scalars, beta1=1.0))
    assert not np.array_equal(arrays["m"], m0)


@pytest.mark.parametrize("momentum, dampening", [(0.0, 0.0), (0.9, 0.5)])
def test_nesterov_needs_momentum_and_no_dampening(momentum, dampening):
    case = next(c for c in CASES if c.id == "sgd_momentum")
    arrays = make_arrays(case)
    assert_rejected(case, arrays, dict(case.scalars, nesterov=True, momentum=momentum, dampening=dampening),
                    ValueError, _msg(case, "nesterov needs momentum > 0 and dampening == 0"))


# ---------------------------------------------------------------------------
# Segments (parameter groups) and per-segment hyperparameters.
# ---------------------------------------------------------------------------
SEGMENT_BAD = [
    # (segments, lr, weight_decay, exception, message)
    ([1, N], 0.1, 0.0, ValueError, r"segments must start at 0"),
    ([0, 5, 3, N], 0.1, 0.0, ValueError, r"segments must start at 0, be non-decreasing"),
    ([0, 4], 0.1, 0.0, ValueError, rf"segments must .* end at p.size = {N}, got \[0, 4\]"),
    ([0, N + 1], 0.1, 0.0, ValueError, rf"segments must .* end at p.size = {N}"),
    ([0, -1, N], 0.1, 0.0, ValueError, r"segments must start at 0, be non-decreasing"),
    ([0], 0.1, 0.0, TypeError, r"segments must be a 1-D sequence of at least two ints"),
    ([], 0.1, 0.0, TypeError, r"segments must be a 1-D sequence of at least two ints"),
    ([0.0, float(N)], 0.1, 0.0, TypeError, r"segments must be a 1-D sequence of at least two ints"),
    ([[0, N]], 0.1, 0.0, TypeError, r"segments must be a 1-D sequence of at least two ints"),
    ([0, None, N], 0.1, 0.0, TypeError, r"segments must be a 1-D sequence"),
    ("0,8", 0.1, 0.0, TypeError, r"segments must be a 1-D sequence"),
    ([0, 4, N], [0.1], 0.0, ValueError, r"lr has 1 values for 2 segments"),
    ([0, 4, N], [0.1, 0.2, 0.3], 0.0, ValueError, r"lr has 3 values for 2 segments"),
    ([0, 4, N], (), 0.0, ValueError, r"lr has 0 values for 2 segments"),
    ([0, 4, N], [0.1, -0.2], 0.0, ValueError, r"lr\[1\] must be >= 0"),
    ([0, 4, N], [NAN, 0.2], 0.0, ValueError, r"lr\[0\] must be finite"),
    ([0, 4, N], [0.1, "0.2"], 0.0, TypeError, r"lr\[1\] must be a real number"),
    ([0, 4, N], 0.1, [0.0], ValueError, r"weight_decay has 1 values for 2 segments"),
    ([0, 4, N], 0.1, [0.0, -1.0], ValueError, r"weight_decay\[1\] must be >= 0"),
    (None, [0.1, 0.2], 0.0, ValueError, r"lr has 2 values for 1 segments"),
]


def _segment_params():
    return [pytest.param(case, *row, id=f"{case.id}-{i}") for case in CASES for i, row in enumerate(SEGMENT_BAD)]


@pytest.mark.parametrize("case, segments, lr, wd, exc, msg", _segment_params())
def test_bad_segments(case, segments, lr, wd, exc, msg):
    arrays = make_arrays(case)
    scalars = dict(case.scalars, segments=segments, lr=lr, weight_decay=wd)
    assert_rejected(case, arrays, scalars, exc, _msg(case, msg))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_segments_as_numpy_array_are_not_frozen_or_kept(case):
    arrays = make_arrays(case)
    seg = np.array([0, 3, N])
    call(case, arrays, dict(case.scalars, segments=seg, lr=[0.1, 0.2], weight_decay=[0.0, 0.01]))
    assert seg.flags.writeable
    seg[1] = 5  # the caller may reuse the array


# ---------------------------------------------------------------------------
# The optimiser classes: constructor arguments and bad gradients at step().
# ---------------------------------------------------------------------------
CLASSES = {
    "SGD": (optim.SGD, {}),
    "SGD_momentum": (optim.SGD, {"momentum": 0.9}),
    "Momentum": (optim.Momentum, {}),
    "Adam": (optim.Adam, {}),
    "AdamW": (optim.AdamW, {}),
    "AMSGrad": (optim.AMSGrad, {}),
    "NAdam": (optim.NAdam, {}),
    "RMSprop": (optim.RMSprop, {"centered": True, "momentum": 0.5}),
    "Adagrad": (optim.Adagrad, {}),
    "Lion": (optim.Lion, {}),
}


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return FlatParams({"W": rng.standard_normal((3, 2)), "b": rng.standard_normal(2)})


def _snapshot_opt(opt, params):
    sd = opt.state_dict()
    return ([b.tobytes() for b in params.buffers.values()],
            {k: v.tobytes() for k, v in sd["state"].items()},
            sd["step"], dict(sd["host"]))


CTOR_COMMON_BAD = [
    ("lr", -0.1, ValueError, r"lr"),
    ("lr", NAN, ValueError, r"lr"),
    ("lr", INF, ValueError, r"lr"),
    ("lr", "0.1", TypeError, r"lr"),
    ("lr", None, TypeError, r"lr"),
    ("lr", True, TypeError, r"lr"),
    ("weight_decay", -1.0, ValueError, r"weight_decay must be >= 0"),
    ("weight_decay", NAN, ValueError, r"weight_decay must be finite"),
    ("grad_scale", 0.0, ValueError, r"grad_scale must be > 0"),
    ("grad_scale", NAN, ValueError, r"grad_scale must be finite"),
    ("max_grad_norm", 0.0, ValueError, r"max_grad_norm must be > 0"),
    ("max_grad_norm", -1.0, ValueError, r"max_grad_norm must be > 0"),
    ("max_grad_norm", INF, ValueError, r"max_grad_norm must be finite"),
    ("maximize", 1, TypeError, r"maximize must be a bool"),
    ("skip_nonfinite", "yes", TypeError, r"skip_nonfinite must be a bool"),
    ("backend", "gpu", TypeError, r"backend 'gpu' was requested"),
]

_BETAS_BAD = [
    ("betas", (1.0, 0.999), ValueError, r"betas\[0\] must be < 1"),
    ("betas", (-0.1, 0.999), ValueError, r"betas\[0\] must be >= 0"),
    ("betas", (0.9, 1.0), ValueError, r"betas\[1\] must be < 1"),
    ("betas", (0.9, NAN), ValueError, r"betas\[1\] must be finite"),
    ("betas", 0.9, TypeError, r"betas must be a pair"),
    ("betas", (0.9,), TypeError, r"betas must be a pair"),
    ("betas", (0.9, 0.99, 0.999), TypeError, r"betas must be a pair"),
]
CTOR_SPECIFIC_BAD = {
    "SGD": [("momentum", 1.0, ValueError, r"momentum must be < 1"), ("momentum", -0.1, ValueError, r"momentum"),
            ("dampening", 2.0, ValueError, r"dampening must be <= 1"),
            ("nesterov", True, ValueError, r"nesterov needs momentum > 0"),
            ("nesterov", "yes", TypeError, r"nesterov must be a bool")],
    "Momentum": [("beta", 1.0, ValueError, r"beta must be < 1"), ("beta", NAN, ValueError, r"beta must be finite")],
    "Adam": _BETAS_BAD + [("eps", 0.0, ValueError, r"eps must be > 0"), ("amsgrad", 1, TypeError, r"amsgrad"),
                          ("decoupled_weight_decay", "x", TypeError, r"decoupled_weight_decay must be a bool")],
    "AdamW": _BETAS_BAD + [("eps", -1.0, ValueError, r"eps must be > 0"),
                           ("weight_decay", -1e-2, ValueError, r"weight_decay must be >= 0")],
    "AMSGrad": _BETAS_BAD + [("eps", NAN, ValueError, r"eps must be finite")],
    "NAdam": _BETAS_BAD + [("eps", 0.0, ValueError, r"eps must be > 0"),
                           ("momentum_decay", -1.0, ValueError, r"momentum_decay must be >= 0"),
                           ("decoupled_weight_decay", 1, TypeError, r"decoupled_weight_decay must be a bool")],
    "RMSprop": [("alpha", 1.0, ValueError, r"alpha must be < 1"), ("alpha", -0.1, ValueError, r"alpha must be >= 0"),
                ("eps", 0.0, ValueError, r"eps must be > 0"), ("momentum", 1.0, ValueError, r"momentum must be < 1"),
                ("centered", 1, TypeError, r"centered must be a bool")],
    "Adagrad": [("lr_decay", -1.0, ValueError, r"lr_decay must be >= 0"), ("eps", 0.0, ValueError, r"eps must be > 0"),
                ("initial_accumulator_value", -1.0, ValueError, r"initial_accumulator_value must be >= 0")],
    "Lion": [r for r in _BETAS_BAD if r[1] != (1.0, 0.999)] + [
        ("betas", (1.5, 0.99), ValueError, r"betas\[0\] must be <= 1")],
}
# nesterov with dampening (the table below sets dampening=0.5 for this row)
CTOR_SPECIFIC_BAD["SGD_momentum"] = [("nesterov", True, ValueError, r"nesterov needs momentum > 0 and dampening == 0")]


def _ctor_params():
    out = []
    for key, (cls, base) in CLASSES.items():
        for name, value, exc, msg in CTOR_COMMON_BAD + CTOR_SPECIFIC_BAD.get(key, []):
            kwargs = dict(base, **{name: value})
            if key == "SGD_momentum" and name == "nesterov":
                kwargs["dampening"] = 0.5
            out.append(pytest.param(cls, kwargs, exc, msg, id=f"{key}-{name}={value!r}"))
    return out


@pytest.mark.parametrize("cls, kwargs, exc, msg", _ctor_params())
def test_optimizer_bad_constructor_argument(cls, kwargs, exc, msg):
    params = make_params()
    before = [b.tobytes() for b in params.buffers.values()]
    kwargs = dict(kwargs)
    kwargs.setdefault("lr", 0.01)
    with pytest.raises(exc, match=re.escape(cls.__name__) + r"\b.*" + msg):
        cls(params, **kwargs)
    assert [b.tobytes() for b in params.buffers.values()] == before


@pytest.mark.parametrize("key", list(CLASSES))
def test_optimizer_valid_constructor_control(key):
    """Positive control of the constructor table: the base arguments are valid and a step moves p."""
    cls, base = CLASSES[key]
    params = make_params()
    p0 = params.data.copy()
    opt = cls(params, lr=0.01, **base)
    grads = params.zeros_like()
    grads.data[:] = 1.0
    assert opt.step(grads).applied
    assert not np.array_equal(params.data, p0)


def test_lion_class_accepts_beta1_one():
    opt = optim.Lion(make_params(), lr=0.01, betas=(1.0, 0.99))
    assert opt.betas == (1.0, 0.99)


def test_unknown_backend_message_names_the_function():
    """'<function>: backend must be one of ...', like every other message (here the caller is unnamed)."""
    p, g = np.ones(4), np.ones(4)
    with pytest.raises(ValueError, match=r"^sgd_step: backend must be one of"):
        fastopt.sgd_step(p, g, lr=0.1, backend="tpu")
    with pytest.raises(ValueError, match=r"^Adam: backend must be one of"):
        optim.Adam(make_params(), lr=0.1, backend="tpu")
    assert np.all(p == 1.0)


GROUP_BAD = [
    ([{"params": ["nope"]}], ValueError, r"groups\[0\] names 'nope', which is not a parameter"),
    ([{"params": ["W"]}, {"params": ["b", "W"]}], ValueError, r"parameter 'W' is in two groups"),
    ([{"params": "W"}], TypeError, r"groups\[0\]\['params'\] must be a list of parameter names"),
    ([{"params": [0]}], TypeError, r"groups\[0\]\['params'\] must be a list of parameter names"),
    ([{"lr": 0.1}], TypeError, r"groups\[0\] must be a dict with a 'params' entry"),
    (["W"], TypeError, r"groups\[0\] must be a dict with a 'params' entry"),
    ([{"params": ["W"], "momentum": 0.5}], ValueError, r"groups\[0\] has unknown keys \['momentum'\]"),
    ([{"params": ["W"], "lr": -1.0}], ValueError, r"groups\[0\]\['lr'\]"),
    ([{"params": ["W"], "lr": NAN}], ValueError, r"groups\[0\]\['lr'\]"),
    ([{"params": ["W"], "lr": "x"}], TypeError, r"groups\[0\]\['lr'\]"),
    ([{"params": ["W"], "weight_decay": -1.0}], ValueError, r"groups\[0\]\['weight_decay'\] must be >= 0"),
    ([{"params": ["W"]}, {"params": ["b"], "weight_decay": INF}], ValueError,
     r"groups\[1\]\['weight_decay'\] must be finite"),
]


@pytest.mark.parametrize("key", ["Adam", "SGD_momentum", "NAdam"])
@pytest.mark.parametrize("groups, exc, msg", GROUP_BAD)
def test_optimizer_bad_groups_named(key, groups, exc, msg):
    cls, base = CLASSES[key]
    params = make_params()
    before = [b.tobytes() for b in params.buffers.values()]
    with pytest.raises(exc, match=re.escape(cls.__name__) + ": " + msg):
        cls(params, lr=0.01, groups=groups, **base)
    assert [b.tobytes() for b in params.buffers.values()] == before


FLAT_GROUP_BAD = [
    ([{"params": slice(0, 6, 2)}], TypeError, r"groups\[0\]\['params'\] must be a slice of the flat array"),
    ([{"params": ["W"]}], TypeError, r"groups\[0\]\['params'\] must be a slice"),
    ([{"params": slice(0, 5)}, {"params": slice(4, 8)}], ValueError, r"parameter groups overlap at index 4"),
    ([{"params": slice(2, 6)}, {"params": slice(0, 3)}], ValueError, r"parameter groups overlap at index 2"),
]


@pytest.mark.parametrize("groups, exc, msg", FLAT_GROUP_BAD)
def test_optimizer_bad_groups_flat(groups, exc, msg):
    p = np.arange(8.0)
    with pytest.raises(exc, match="Adam: " + msg):
        optim.Adam(p, lr=0.01, groups=groups)
    assert np.array_equal(p, np.arange(8.0))


def _ro(a):
    a.flags.writeable = False
    return a


FLAT_PARAMS_BAD = [
    (lambda: _ro(np.ones(4)), ValueError, r"params is read-only"),
    (lambda: np.ones(8)[::2], ValueError, r"params must be C-contiguous"),
    (lambda: np.ones((2, 3)), ValueError, r"params must be a FlatParams or a 1-D array"),
    (lambda: np.ones(4, dtype=np.int64), TypeError, r"params must be float32 or float64"),
    (lambda: np.ones(4, dtype=np.float16), TypeError, r"params must be float32 or float64"),
    (lambda: [1.0, 2.0], TypeError, r"params must be a NumPy or CuPy array"),
    (lambda: FakeArray(), TypeError, r"params must be a NumPy or CuPy array"),
]


@pytest.mark.parametrize("key", list(CLASSES))
@pytest.mark.parametrize("make, exc, msg", FLAT_PARAMS_BAD,
                         ids=["read-only", "strided", "2-D", "int", "float16", "list", "fake"])
def test_optimizer_bad_params(key, make, exc, msg):
    cls, base = CLASSES[key]
    p = make()
    before = p.tobytes() if isinstance(p, np.ndarray) else None
    with pytest.raises(exc, match=msg):
        cls(p, lr=0.01, **base)
    if before is not None:
        assert p.tobytes() == before


def _bad_grads(params):
    """(label, grads factory, exception, message) for a single-buffer FlatParams of size 8 (W 3x2, b 2)."""
    n = params.size
    other = FlatParams({"W": np.ones((2, 3)), "b": np.ones(2)})  # same size, other shapes
    return [
        ("longer", lambda: np.ones(n + 1), ValueError, r"\bg(rads)? must have the shape of p"),
        ("shorter", lambda: np.ones(n - 1), ValueError, r"\bg(rads)? must have the shape of p"),
        ("2-D", lambda: np.ones((2, n // 2)), ValueError, r"\bg(rads)? must have the shape of p"),
        ("float32", lambda: np.ones(n, np.float32), TypeError, r"\bg(rads)? must have the dtype of p"),
        ("int", lambda: np.ones(n, np.int64), TypeError, r"\bg(rads)? must be float32 or float64"),
        ("float16", lambda: np.ones(n, np.float16), TypeError, r"\bg(rads)? must be float32 or float64"),
        ("strided", lambda: np.ones(2 * n)[::2], ValueError, r"\bg(rads)? must be C-contiguous"),
        ("fake", lambda: FakeArray(n), TypeError, r"must be (a NumPy or CuPy array|an array)"),
        ("list", lambda: [1.0] * n, TypeError, r"must be (a NumPy or CuPy array|an array)"),
        ("other layout", lambda: other, ValueError, r"grads must be laid out like the parameters"),
        ("params itself", lambda: params, ValueError, r"p and g are the same array"),
        ("params buffer", lambda: params.data, ValueError, r"p and g are the same array"),
        ("view of params", lambda: params.data[:], ValueError, r"p and g overlap in memory"),
    ]


_BAD_GRAD_LABELS = [r[0] for r in _bad_grads(make_params())]


@pytest.mark.parametrize("clip", [False, True], ids=["plain", "clipped"])
@pytest.mark.parametrize("label", _BAD_GRAD_LABELS)
@pytest.mark.parametrize("key", list(CLASSES))
def test_optimizer_step_bad_grads_change_nothing(key, label, clip):
    cls, base = CLASSES[key]
    params = make_params()
    kwargs = dict(base, lr=0.05)
    if clip:
        kwargs["max_grad_norm"] = 0.5
    opt = cls(params, **kwargs)
    good = params.zeros_like()
    good.data[:] = np.linspace(-1, 1, params.size)
    assert opt.step(good).applied  # state is now non-trivial
    _, make, exc, msg = next(r for r in _bad_grads(params) if r[0] == label)
    grads = make()
    before = _snapshot_opt(opt, params)
    mu = getattr(opt, "mu_product", None)
    with pytest.raises(exc, match=msg):
        opt.step(grads)
    assert _snapshot_opt(opt, params) == before
    assert opt.step_count == 1
    assert getattr(opt, "mu_product", None) == mu


@pytest.mark.parametrize("key", list(CLASSES))
def test_optimizer_two_buffers_need_flatparams_grads(key):
    cls, base = CLASSES[key]
    params = FlatParams({"a": np.ones(3, np.float32), "b": np.ones(2)})
    opt = cls(params, lr=0.1, **base)
    before = [b.tobytes() for b in params.buffers.values()]
    with pytest.raises(TypeError, match=r"span 2 dtype buffers; grads must be a FlatParams"):
        opt.step(np.ones(5))
    assert [b.tobytes() for b in params.buffers.values()] == before
    assert opt.step_count == 0


@pytest.mark.parametrize("bad", [-1.0, NAN, INF, "0.1", None], ids=repr)
@pytest.mark.parametrize("key", list(CLASSES))
def test_optimizer_schedule_returning_bad_value_changes_nothing(key, bad):
    """A user schedule that turns bad at step k raises at that step; nothing moves."""
    cls, base = CLASSES[key]
    params = make_params()
    opt = cls(params, lr=lambda k: 0.05 if k < 2 else bad, **base)
    grads = params.zeros_like()
    grads.data[:] = 0.3
    opt.step(grads)
    opt.step(grads)
    before = _snapshot_opt(opt, params)
    mu = getattr(opt, "mu_product", None)
    with pytest.raises((ValueError, TypeError), match=r"learning rate at step 2"):
        opt.step(grads)
    assert _snapshot_opt(opt, params) == before
    assert opt.step_count == 2
    assert getattr(opt, "mu_product", None) == mu


def test_functional_validation_message_names_function_and_argument():
    """The documented message format: '<function>: <argument> must have the shape of p (n,), got (m,)'."""
    p = np.ones(1000)
    with pytest.raises(ValueError) as info:
        fastopt.adam_step(p, np.ones(1000), np.zeros(999), np.zeros(1000), step=1, lr=1e-3)
    assert str(info.value) == "adam_step: m must have the shape of p (1000,), got (999,)"
    assert not math.isnan(p[0]) and np.all(p == 1.0)


def test_schedule_lr_to_functional_step_is_refused():
    """Functional steps take numbers, not schedules (the classes own the step count)."""
    p, g = np.ones(4), np.ones(4)
    with pytest.raises(TypeError, match=r"sgd_step: lr must be a real number"):
        fastopt.sgd_step(p, g, lr=schedules.constant(0.1))
    assert np.all(p == 1.0)
