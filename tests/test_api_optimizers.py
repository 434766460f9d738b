"""The Optimizer classes over FlatParams: equal to the functional steps, parameter groups,
several dtype buffers, schedules, checkpoints, skipping and global-norm clipping.

"Equal" means bit-identical: the class is a thin layer that computes the same host
scalars and calls the same functional step, so nothing may differ by even one ulp.
"""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

import numpy as np
import pytest

import fastopt
from fastopt import FlatParams, optim, schedules
from fastopt.optim import functional as F


# ---------------------------------------------------------------------------
# The registry: each optimiser, its hyperparameters and the same update by hand.
# ---------------------------------------------------------------------------
class Spec(NamedTuple):
    cls: type
    kwargs: dict              # algorithm hyperparameters (not lr / weight_decay)
    state: tuple              # state buffer names, in the class's order
    hand: Callable            # hand(p, g, s, k, lr, wd, **options) -> StepInfo
    init: dict = {}           # initial values of state buffers other than 0


def _nadam_hand(p, g, s, k, lr, wd, **o):
    s["mu"] = s.get("mu", 1.0) * F.nadam_mu(k, 0.85, 5e-3)
    return F.nadam_step(p, g, s["m"], s["v"], step=k, lr=lr, mu_product=s["mu"], beta1=0.85, beta2=0.995,
                        eps=1e-7, momentum_decay=5e-3, weight_decay=wd, **o)


SPECS = {
    "SGD": Spec(optim.SGD, {}, (), lambda p, g, s, k, lr, wd, **o: F.sgd_step(p, g, lr=lr, weight_decay=wd, **o)),
    "SGD_momentum": Spec(
        optim.SGD, {"momentum": 0.9, "dampening": 0.1}, ("buf",),
        lambda p, g, s, k, lr, wd, **o: F.sgd_momentum_step(p, g, s["buf"], step=k, lr=lr, momentum=0.9,
                                                            dampening=0.1, weight_decay=wd, **o)),
    "SGD_nesterov": Spec(
        optim.SGD, {"momentum": 0.8, "nesterov": True}, ("buf",),
        lambda p, g, s, k, lr, wd, **o: F.sgd_momentum_step(p, g, s["buf"], step=k, lr=lr, momentum=0.8,
                                                            nesterov=True, weight_decay=wd, **o)),
    "Momentum": Spec(
        optim.Momentum, {"beta": 0.8}, ("m",),
        lambda p, g, s, k, lr, wd, **o: F.momentum_step(p, g, s["m"], lr=lr, beta=0.8, weight_decay=wd, **o)),
    "Adam": Spec(
        optim.Adam, {"betas": (0.8, 0.99), "eps": 1e-7}, ("m", "v"),
        lambda p, g, s, k, lr, wd, **o: F.adam_step(p, g, s["m"], s["v"], step=k, lr=lr, beta1=0.8, beta2=0.99,
                                                    eps=1e-7, weight_decay=wd, **o)),
    "AdamW": Spec(
        optim.AdamW, {"betas": (0.85, 0.98)}, ("m", "v"),
        lambda p, g, s, k, lr, wd, **o: F.adam_step(p, g, s["m"], s["v"], step=k, lr=lr, beta1=0.85, beta2=0.98,
                                                    weight_decay=wd, decoupled_weight_decay=True, **o)),
    "AMSGrad": Spec(
        optim.AMSGrad, {"betas": (0.9, 0.95)}, ("m", "v", "vmax"),
        lambda p, g, s, k, lr, wd, **o: F.adam_step(p, g, s["m"], s["v"], step=k, lr=lr, beta1=0.9, beta2=0.95,
                                                    weight_decay=wd, amsgrad=True, vmax=s["vmax"], **o)),
    "NAdam": Spec(optim.NAdam, {"betas": (0.85, 0.995), "eps": 1e-7, "momentum_decay": 5e-3}, ("m", "v"),
                  _nadam_hand),
    "RMSprop": Spec(
        optim.RMSprop, {"alpha": 0.9, "eps": 1e-6}, ("sq",),
        lambda p, g, s, k, lr, wd, **o: F.rmsprop_step(p, g, s["sq"], lr=lr, alpha=0.9, eps=1e-6,
                                                       weight_decay=wd, **o)),
    "RMSprop_centered_momentum": Spec(
        optim.RMSprop, {"alpha": 0.95, "centered": True, "momentum": 0.5}, ("sq", "gavg", "buf"),
        lambda p, g, s, k, lr, wd, **o: F.rmsprop_step(p, g, s["sq"], gavg=s["gavg"], buf=s["buf"], lr=lr,
                                                       alpha=0.95, centered=True, momentum=0.5, weight_decay=wd,
                                                       **o)),
    "Adagrad": Spec(
        optim.Adagrad, {"lr_decay": 0.05, "eps": 1e-9, "initial_accumulator_value": 0.1}, ("ssum",),
        lambda p, g, s, k, lr, wd, **o: F.adagrad_step(p, g, s["ssum"], step=k, lr=lr, lr_decay=0.05, eps=1e-9,
                                                       weight_decay=wd, **o),
        {"ssum": 0.1}),
    "Lion": Spec(
        optim.Lion, {"betas": (0.9, 0.97)}, ("m",),
        lambda p, g, s, k, lr, wd, **o: F.lion_step(p, g, s["m"], lr=lr, beta1=0.9, beta2=0.97, weight_decay=wd,
                                                    **o)),
}
NAMES = list(SPECS)

LAYOUT = {"W1": (3, 4), "b1": (4,), "W2": (4, 2), "b2": (2,)}


def make_params(dtype=np.float64, layout=LAYOUT, seed=0):
    rng = np.random.default_rng(seed)
    return FlatParams({n: rng.standard_normal(s).astype(dtype) for n, s in layout.items()})


def make_mixed(seed=0):
    """Two dtype buffers: float32 {W, c} and float64 {b, d}, interleaved in the mapping."""
    rng = np.random.default_rng(seed)
    return FlatParams({"W": rng.standard_normal((3, 2)).astype(np.float32),
                       "b": rng.standard_normal(4),
                       "c": rng.standard_normal(5).astype(np.float32),
                       "d": rng.standard_normal((2, 2))})


def grad_seq(params, n_steps, seed=1):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_steps):
        g = params.zeros_like()
        for b in g.buffers.values():
            b[...] = rng.standard_normal(b.size).astype(b.dtype)
        out.append(g)
    return out


def hand_state(spec, p):
    return {name: np.full_like(p, spec.init.get(name, 0.0)) for name in spec.state}


def opt_state(opt):
    return {k: v.copy() for k, v in opt.state_dict()["state"].items()}


def assert_params_identical(a: FlatParams, b: FlatParams):
    assert a.names == b.names
    for name in a.names:
        x, y = a[name], b[name]
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes(), f"parameter {name} differs: max |diff| {np.max(np.abs(x - y))}"


def assert_states_identical(sa: dict, sb: dict):
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].tobytes() == sb[k].tobytes(), f"state {k} differs"


# ---------------------------------------------------------------------------
# Class == functional step by hand, 10 steps, bit for bit.
# ---------------------------------------------------------------------------
OPTIONS = [
    pytest.param({}, id="plain"),
    pytest.param({"maximize": True, "grad_scale": 4.0}, id="maximize-scaled"),
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
def test_class_equals_functional_by_hand(name, dtype, options):
    spec = SPECS[name]
    params = make_params(dtype)
    p_hand = params.data.copy()
    s_hand = hand_state(spec, p_hand)
    lr, wd = 0.03, 0.02
    opt = spec.cls(params, lr=lr, weight_decay=wd, **spec.kwargs, **options)
    for k, grads in enumerate(grad_seq(params, 10), start=1):
        info = opt.step(grads)
        hinfo = spec.hand(p_hand, grads.data, s_hand, k, lr, wd, **options)
        assert info.applied and hinfo.applied
        assert opt.step_count == k
    assert params.data.tobytes() == p_hand.tobytes()
    key = np.dtype(dtype).name
    state = opt.state_dict()
    assert sorted(state["state"]) == sorted(f"{n}.{key}" for n in spec.state)
    for n in spec.state:
        assert state["state"][f"{n}.{key}"].tobytes() == s_hand[n].tobytes(), n
    if name == "NAdam":
        assert state["host"]["mu_product"] == s_hand["mu"]
    assert np.all(np.isfinite(params.data))
    assert not np.array_equal(params.data, make_params(dtype).data)


@pytest.mark.parametrize("name", NAMES)
def test_class_over_flat_array_equals_flatparams(name):
    spec = SPECS[name]
    params = make_params()
    flat = params.data.copy()
    opt_a = spec.cls(params, lr=0.02, **spec.kwargs)
    opt_b = spec.cls(flat, lr=0.02, **spec.kwargs)
    for grads in grad_seq(params, 4):
        opt_a.step(grads)
        opt_b.step(grads.data)
    assert params.data.tobytes() == flat.tobytes()
    assert_states_identical(opt_state(opt_a), opt_state(opt_b))


# ---------------------------------------------------------------------------
# Parameter groups.
# ---------------------------------------------------------------------------
def _sub(params, names):
    return FlatParams({n: params[n] for n in names})


def _sub_grads(grads, names):
    return FlatParams({n: grads[n] for n in names})


@pytest.mark.parametrize("grouping", [
    pytest.param((["W2", "b2"], ["W1", "b1"]), id="tail"),
    pytest.param((["b1", "b2"], ["W1", "W2"]), id="interleaved"),
    pytest.param((["W1"], ["b1", "W2", "b2"]), id="head"),
])
@pytest.mark.parametrize("name", NAMES)
def test_groups_by_name_equal_separate_optimisers(name, grouping):
    spec = SPECS[name]
    grouped, rest = grouping
    params = make_params()
    part_g, part_r = _sub(params, grouped), _sub(params, rest)
    opt = spec.cls(params, lr=0.01, weight_decay=0.0,
                   groups=[{"params": grouped, "lr": 0.07, "weight_decay": 0.1}], **spec.kwargs)
    opt_g = spec.cls(part_g, lr=0.07, weight_decay=0.1, **spec.kwargs)
    opt_r = spec.cls(part_r, lr=0.01, weight_decay=0.0, **spec.kwargs)
    assert opt.learning_rates() == [0.01, 0.07]
    for grads in grad_seq(params, 6):
        opt.step(grads)
        opt_g.step(_sub_grads(grads, grouped))
        opt_r.step(_sub_grads(grads, rest))
    for n in grouped:
        assert params[n].tobytes() == part_g[n].tobytes(), n
    for n in rest:
        assert params[n].tobytes() == part_r[n].tobytes(), n
    # with one lr for everything the grouped names would have moved differently
    single = make_params()
    opt_single = spec.cls(single, lr=0.01, weight_decay=0.0, **spec.kwargs)
    for grads in grad_seq(params, 6):
        opt_single.step(grads)
    assert any(params[n].tobytes() != single[n].tobytes() for n in grouped)
    assert all(params[n].tobytes() == single[n].tobytes() for n in rest)


@pytest.mark.parametrize("name", NAMES)
def test_two_groups_and_default(name):
    """Two explicit groups plus the default group; each name gets its own group's lr/wd."""
    spec = SPECS[name]
    params = make_params()
    groups = [{"params": ["b2"], "lr": 0.2}, {"params": ["W1", "b1"], "weight_decay": 0.3}]
    opt = spec.cls(params, lr=0.05, weight_decay=0.01, groups=groups, **spec.kwargs)
    assert opt.learning_rates() == [0.05, 0.2, 0.05]
    lr_wd = {"b2": (0.2, 0.01), "W1": (0.05, 0.3), "b1": (0.05, 0.3), "W2": (0.05, 0.01)}
    sep = {}
    for n, (lr, wd) in lr_wd.items():
        fp = _sub(params, [n])
        sep[n] = (fp, spec.cls(fp, lr=lr, weight_decay=wd, **spec.kwargs))
    for grads in grad_seq(params, 5):
        opt.step(grads)
        for n, (fp, o) in sep.items():
            o.step(_sub_grads(grads, [n]))
    for n, (fp, _) in sep.items():
        assert params[n].tobytes() == fp[n].tobytes(), n


@pytest.mark.parametrize("name", NAMES)
def test_groups_over_flat_array_by_slice(name):
    spec = SPECS[name]
    rng = np.random.default_rng(5)
    n = 20
    p = rng.standard_normal(n)
    q = p.copy()
    groups = [{"params": slice(12, None), "lr": 0.2}, {"params": slice(2, 6), "weight_decay": 0.3, "lr": 0.02}]
    opt = spec.cls(p, lr=0.05, weight_decay=0.01, groups=groups, **spec.kwargs)
    pieces = [(slice(0, 2), 0.05, 0.01), (slice(2, 6), 0.02, 0.3), (slice(6, 12), 0.05, 0.01),
              (slice(12, 20), 0.2, 0.01)]
    seps = [(sl, spec.cls(q[sl], lr=lr, weight_decay=wd, **spec.kwargs)) for sl, lr, wd in pieces]
    for _ in range(6):
        g = rng.standard_normal(n)
        opt.step(g)
        for sl, o in seps:
            o.step(g[sl])
    assert p.tobytes() == q.tobytes()
    assert not np.array_equal(p[12:], np.random.default_rng(5).standard_normal(n)[12:])


@pytest.mark.parametrize("name", ["Adam", "SGD_momentum", "Lion"])
def test_group_slices_with_negative_indices_and_full_cover(name):
    spec = SPECS[name]
    p = np.linspace(-1, 1, 10)
    q = p.copy()
    opt = spec.cls(p, lr=0.1, groups=[{"params": slice(-4, None), "lr": 0.3}, {"params": slice(0, 6)}],
                   **spec.kwargs)
    o1 = spec.cls(q[:6], lr=0.1, **spec.kwargs)
    o2 = spec.cls(q[6:], lr=0.3, **spec.kwargs)
    g = np.linspace(2, -1, 10)
    for _ in range(3):
        opt.step(g)
        o1.step(g[:6])
        o2.step(g[6:])
    assert p.tobytes() == q.tobytes()


# ---------------------------------------------------------------------------
# Several dtype buffers.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_float32_and_float64_parameters(name):
    spec = SPECS[name]
    params = make_mixed()
    assert sorted(np.dtype(d).name for d in params.buffers) == ["float32", "float64"]
    p32, p64 = _sub(params, ["W", "c"]), _sub(params, ["b", "d"])
    opt = spec.cls(params, lr=0.05, weight_decay=0.01, **spec.kwargs)
    o32 = spec.cls(p32, lr=0.05, weight_decay=0.01, **spec.kwargs)
    o64 = spec.cls(p64, lr=0.05, weight_decay=0.01, **spec.kwargs)
    for grads in grad_seq(params, 5):
        assert opt.step(grads).applied
        o32.step(_sub_grads(grads, ["W", "c"]))
        o64.step(_sub_grads(grads, ["b", "d"]))
    for n in ("W", "c"):
        assert params[n].dtype == np.float32 and params[n].tobytes() == p32[n].tobytes()
    for n in ("b", "d"):
        assert params[n].dtype == np.float64 and params[n].tobytes() == p64[n].tobytes()
    keys = set(opt.state_dict()["state"])
    assert keys == {f"{s}.{d}" for s in spec.state for d in ("float32", "float64")}
    for k, v in opt.state_dict()["state"].items():
        assert v.dtype == np.dtype(k.split(".")[1])


# ---------------------------------------------------------------------------
# Schedules as learning rates: lr at step k is schedule(k - 1).
# ---------------------------------------------------------------------------
SCHEDULES = [
    pytest.param(lambda: schedules.constant(0.05), id="constant"),
    pytest.param(lambda: schedules.exponential(0.1, 0.5, transition_steps=2), id="exponential"),
    pytest.param(lambda: schedules.algebraic(0.1, alpha=1.0, k0=2.0), id="algebraic"),
    pytest.param(lambda: schedules.step(0.1, {2: 0.5, 4: 0.1}), id="step"),
    pytest.param(lambda: schedules.cosine(0.1, 5), id="cosine"),
    pytest.param(lambda: schedules.linear_warmup(3, 0.1, init_value=0.01), id="warmup"),
    pytest.param(lambda: (lambda k: 0.1 / (1 + k)), id="callable"),
]


@pytest.mark.parametrize("make_schedule", SCHEDULES)
@pytest.mark.parametrize("name", ["SGD", "Adam", "Momentum", "Adagrad", "NAdam"])
def test_schedule_lr_at_step_k_is_schedule_k_minus_1(name, make_schedule):
    spec = SPECS[name]
    sched = make_schedule()
    params = make_params()
    p_hand = params.data.copy()
    s_hand = hand_state(spec, p_hand)
    opt = spec.cls(params, lr=sched, **spec.kwargs)
    assert opt.learning_rates() == [float(sched(0))]
    assert opt.learning_rates(step=4) == [float(sched(3))]
    for k, grads in enumerate(grad_seq(params, 7), start=1):
        assert opt.learning_rates() == [float(sched(k - 1))]
        opt.step(grads)
        spec.hand(p_hand, grads.data, s_hand, k, float(sched(k - 1)), 0.0)
        assert params.data.tobytes() == p_hand.tobytes(), f"step {k}"


def test_schedule_per_group():
    params = make_params()
    s_default = schedules.exponential(0.1, 0.5)
    s_group = schedules.cosine(0.2, 4)
    opt = optim.SGD(params, lr=s_default, groups=[{"params": ["b1"], "lr": s_group}])
    p_hand = params.data.copy()
    sl = params.slots["b1"]
    for k, grads in enumerate(grad_seq(params, 5), start=1):
        assert opt.learning_rates() == [s_default(k - 1), s_group(k - 1)]
        opt.step(grads)
        lr = np.full(p_hand.size, s_default(k - 1))
        lr[sl.start:sl.stop] = s_group(k - 1)
        segs = [0, sl.start, sl.stop, p_hand.size]
        F.sgd_step(p_hand, grads.data, lr=[s_default(k - 1), s_group(k - 1), s_default(k - 1)], segments=segs)
    assert params.data.tobytes() == p_hand.tobytes()


def test_skipped_step_does_not_advance_the_schedule():
    sched = schedules.exponential(0.1, 0.5)
    params = FlatParams({"w": np.zeros(2)})
    opt = optim.SGD(params, lr=sched, skip_nonfinite=True)
    g = params.zeros_like()
    g.data[:] = [np.nan, 1.0]
    assert opt.step(g).applied is False
    g.data[:] = 1.0
    opt.step(g)
    np.testing.assert_array_equal(params.data, [-0.1, -0.1])  # schedule(0), not schedule(1)


# ---------------------------------------------------------------------------
# Checkpoints: state_dict / load_state_dict / save / load.
# ---------------------------------------------------------------------------
def _ckpt_setup(name):
    spec = SPECS[name]
    params = make_mixed()
    kwargs = dict(lr=schedules.exponential(0.05, 0.8), weight_decay=0.01,
                  groups=[{"params": ["c"], "lr": 0.02, "weight_decay": 0.0}], **spec.kwargs)
    return spec, params, kwargs


def _snapshot(opt, params):
    sd = opt.state_dict()
    return ({n: params[n].tobytes() for n in params.names}, {k: v.tobytes() for k, v in sd["state"].items()},
            sd["step"], dict(sd["host"]), opt.step_count, getattr(opt, "mu_product", None))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip(name):
    spec, params, kwargs = _ckpt_setup(name)
    grads = grad_seq(params, 10)
    opt = spec.cls(params, **kwargs)
    for g in grads[:5]:
        opt.step(g)
    sd = opt.state_dict()
    saved_bytes = {k: v.tobytes() for k, v in sd["state"].items()}
    p5 = params.copy()
    assert sd["algorithm"] == spec.cls.algorithm and sd["step"] == 5
    for g in grads[5:]:
        opt.step(g)
    # state_dict() is a copy: later steps did not change it
    assert {k: v.tobytes() for k, v in sd["state"].items()} == saved_bytes
    params_b = p5.copy()
    opt_b = spec.cls(params_b, **kwargs)
    opt_b.load_state_dict(sd)
    assert opt_b.step_count == 5
    assert_states_identical(opt_state(opt_b), {k: v for k, v in sd["state"].items()})
    for g in grads[5:]:
        opt_b.step(g)
    assert_params_identical(params, params_b)
    assert_states_identical(opt_state(opt), opt_state(opt_b))
    assert opt.state_dict()["host"] == opt_b.state_dict()["host"]
    assert opt_b.step_count == opt.step_count == 10


def test_nadam_state_dict_keeps_mu_product():
    spec, params, kwargs = _ckpt_setup("NAdam")
    opt = spec.cls(params, **kwargs)
    mu = 1.0
    for k, g in enumerate(grad_seq(params, 5), start=1):
        opt.step(g)
        mu *= F.nadam_mu(k, 0.85, 5e-3)
    assert opt.state_dict()["host"] == {"mu_product": mu}
    assert mu != 1.0


def test_load_state_dict_without_step_restores_nothing_different():
    """The round trip has teeth: a state dict with another step count gives another trajectory."""
    spec, params, kwargs = _ckpt_setup("Adam")
    grads = grad_seq(params, 8)
    opt = spec.cls(params, **kwargs)
    for g in grads[:4]:
        opt.step(g)
    sd = opt.state_dict()
    p4 = params.copy()
    for g in grads[4:]:
        opt.step(g)
    wrong = dict(sd, step=1)
    params_b = p4.copy()
    opt_b = spec.cls(params_b, **kwargs)
    opt_b.load_state_dict(wrong)
    for g in grads[4:]:
        opt_b.step(g)
    assert params_b["b"].tobytes() != params["b"].tobytes()


@pytest.mark.parametrize("as_str", [False, True], ids=["Path", "str"])
@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, tmp_path, as_str):
    spec, params, kwargs = _ckpt_setup(name)
    grads = grad_seq(params, 10)
    opt = spec.cls(params, **kwargs)
    for g in grads[:5]:
        opt.step(g)
    path = tmp_path / "ckpt.npz"
    opt.save(str(path) if as_str else path)
    p5 = params.copy()
    for g in grads[5:]:
        opt.step(g)
    params_b = p5.copy()
    opt_b = spec.cls(params_b, **kwargs)
    opt_b.load(str(path) if as_str else path)
    assert opt_b.step_count == 5
    for g in grads[5:]:
        opt_b.step(g)
    assert_params_identical(params, params_b)
    assert_states_identical(opt_state(opt), opt_state(opt_b))
    assert opt.state_dict()["host"] == opt_b.state_dict()["host"]
    with np.load(path, allow_pickle=False) as data:  # a plain .npz, no pickles
        assert str(data["algorithm"]) == spec.cls.algorithm
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_save_is_atomic(tmp_path, monkeypatch, exc):
    spec, params, kwargs = _ckpt_setup("NAdam")
    opt = spec.cls(params, **kwargs)
    grads = grad_seq(params, 3)
    opt.step(grads[0])
    path = tmp_path / "ckpt.npz"
    opt.save(path)
    good = path.read_bytes()
    opt.step(grads[1])
    calls = []

    def broken_savez(file, *args, **kwds):
        calls.append(1)
        file.write(b"PK\x03\x04 half a checkpoint")
        raise exc

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(type(exc)):
        opt.save(path)
    assert calls, "the fake savez was not used: the test would prove nothing"
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "a temporary file was left behind"
    monkeypatch.undo()
    # the previous checkpoint still loads
    opt_b = spec.cls(make_mixed(), **kwargs)
    opt_b.load(path)
    assert opt_b.step_count == 1


def test_failed_first_save_leaves_no_file(tmp_path, monkeypatch):
    spec, params, kwargs = _ckpt_setup("Adam")
    opt = spec.cls(params, **kwargs)

    def broken_savez(file, *args, **kwds):
        file.write(b"garbage")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        opt.save(tmp_path / "new.npz")
    assert os.listdir(tmp_path) == []


def test_save_overwrites_previous_checkpoint(tmp_path):
    spec, params, kwargs = _ckpt_setup("Adam")
    opt = spec.cls(params, **kwargs)
    path = tmp_path / "ckpt.npz"
    for g in grad_seq(params, 3):
        opt.step(g)
        opt.save(path)
    opt_b = spec.cls(make_mixed(), **kwargs)
    opt_b.load(path)
    assert opt_b.step_count == 3
    assert_states_identical(opt_state(opt), opt_state(opt_b))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def _stepped(name, n=3, params=None, **extra):
    spec, p, kwargs = _ckpt_setup(name)
    params = p if params is None else params
    opt = spec.cls(params, **dict(kwargs, **extra))
    for g in grad_seq(params, n, seed=7):
        opt.step(g)
    return spec, params, opt


def _bad_state_dicts():
    """(label, make(sd_of_target, target_name) -> bad sd, exception, message)."""

    def other_algo(sd, name):
        src = "Adagrad" if name != "Adagrad" else "Adam"
        return _stepped(src)[2].state_dict()

    def wrong_shape(sd, name):
        bad = dict(sd, state=dict(sd["state"]))
        k = sorted(bad["state"])[-1]  # the last key: the earlier ones would be written first
        bad["state"][k] = np.zeros(bad["state"][k].size + 1, bad["state"][k].dtype)
        return bad

    def wrong_dtype(sd, name):
        bad = dict(sd, state=dict(sd["state"]))
        k = sorted(bad["state"])[-1]
        bad["state"][k] = bad["state"][k].astype(np.float32 if bad["state"][k].dtype == np.float64 else np.float64)
        return bad

    def other_params(sd, name):
        spec, _, kwargs = _ckpt_setup(name)
        params = FlatParams({"W": np.ones((3, 3), np.float32), "b": np.ones(4), "c": np.ones(5, np.float32),
                             "d": np.ones((2, 2))})
        o = spec.cls(params, **kwargs)
        return o.state_dict()

    def missing_key(sd, name):
        bad = dict(sd, state=dict(sd["state"]))
        bad["state"].pop(sorted(bad["state"])[-1])
        return bad

    def extra_key(sd, name):
        bad = dict(sd, state=dict(sd["state"]))
        bad["state"]["zzz.float64"] = np.zeros(3)
        return bad

    def step_value(v):
        return lambda sd, name: dict(sd, step=v)

    return [
        ("other algorithm", other_algo, ValueError, r"load_state_dict: state_dict is for '\w+', not '\w+'"),
        ("not a dict", lambda sd, name: [sd], ValueError, r"state_dict is for 'list'"),
        ("wrong shape", wrong_shape, ValueError, r"must have shape"),
        ("wrong dtype", wrong_dtype, ValueError, r"must have shape .* and dtype"),
        ("other params", other_params, ValueError, r"must have shape"),
        ("missing buffer", missing_key, ValueError, r"state has buffers"),
        ("extra buffer", extra_key, ValueError, r"state has buffers"),
        ("step -1", step_value(-1), ValueError, r"step must be an int >= 0"),
        ("step 1.5", step_value(1.5), ValueError, r"step must be an int >= 0"),
        ("step True", step_value(True), ValueError, r"step must be an int >= 0"),
        ("step None", step_value(None), ValueError, r"step must be an int >= 0"),
    ]


_BAD_SD_LABELS = [r[0] for r in _bad_state_dicts()]


@pytest.mark.parametrize("label", _BAD_SD_LABELS)
@pytest.mark.parametrize("name", ["SGD_momentum", "Adam", "AMSGrad", "NAdam", "RMSprop_centered_momentum",
                                  "Adagrad", "Lion"])
def test_load_state_dict_bad_input_changes_nothing(name, label):
    _, make, exc, msg = next(r for r in _bad_state_dicts() if r[0] == label)
    source = _stepped(name, 5)[2].state_dict()
    spec, params, opt = _stepped(name, 2)
    bad = make(source, name)
    before = _snapshot(opt, params)
    with pytest.raises(exc, match=msg):
        opt.load_state_dict(bad)
    assert _snapshot(opt, params) == before


@pytest.mark.parametrize("host", [{"mu_product": "x"}, {"mu_product": float("nan")}, {"mu_product": 1.5},
                                  {"mu_product": None}], ids=["str", "nan", "above-1", "None"])
def test_load_state_dict_bad_host_state_changes_nothing(host):
    """NAdam's mu_product is part of the state: a bad one is refused before any buffer is overwritten."""
    source = _stepped("NAdam", 5)[2].state_dict()
    spec, params, opt = _stepped("NAdam", 2)
    bad = dict(source, host=host)
    before = _snapshot(opt, params)
    with pytest.raises((ValueError, TypeError), match="mu_product"):
        opt.load_state_dict(bad)
    assert _snapshot(opt, params) == before


def test_load_wrong_algorithm_file(tmp_path):
    _, _, adam = _stepped("Adam", 3)
    adam.save(tmp_path / "adam.npz")
    spec, params, adamw = _stepped("AdamW", 2)
    before = _snapshot(adamw, params)
    with pytest.raises(ValueError, match=r"AdamW.load_state_dict: state_dict is for 'adam', not 'adamw'"):
        adamw.load(tmp_path / "adam.npz")
    assert _snapshot(adamw, params) == before


# ---------------------------------------------------------------------------
# skip_nonfinite: a skipped step changes nothing, the step count included.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("where, bad", [("b", np.nan), ("W", np.inf), ("d", -np.inf), ("c", np.nan)])
@pytest.mark.parametrize("name", NAMES)
def test_skip_nonfinite_changes_nothing(name, where, bad):
    spec = SPECS[name]
    params = make_mixed()
    twin = make_mixed()
    kwargs = dict(lr=0.05, weight_decay=0.01, skip_nonfinite=True, **spec.kwargs)
    opt = spec.cls(params, **kwargs)
    opt_twin = spec.cls(twin, **kwargs)
    grads = grad_seq(params, 3)
    opt.step(grads[0])
    opt_twin.step(grads[0])
    bad_grads = grads[1].copy()
    bad_grads[where].reshape(-1)[1] = bad
    before = _snapshot(opt, params)
    info = opt.step(bad_grads)
    assert info.applied is False
    assert info.grad_norm is not None and not np.isfinite(info.grad_norm)
    assert opt.step_count == 1
    assert _snapshot(opt, params) == before
    # the next good step is the twin's step 2, bit for bit
    opt.step(grads[2])
    opt_twin.step(grads[2])
    assert opt.step_count == 2
    assert_params_identical(params, twin)
    assert_states_identical(opt_state(opt), opt_state(opt_twin))


@pytest.mark.parametrize("name", NAMES)
def test_nonfinite_gradient_without_skip_is_applied(name):
    """Without skip_nonfinite the step is taken (and counted): skipping is opt-in."""
    spec = SPECS[name]
    params = make_params()
    opt = spec.cls(params, lr=0.05, **spec.kwargs)
    g = params.zeros_like()
    g.data[:] = 1.0
    g.data[0] = np.nan
    info = opt.step(g)
    assert info.applied is True and opt.step_count == 1


@pytest.mark.parametrize("fname, state", [("adam_step", 2), ("sgd_momentum_step", 1), ("lion_step", 1),
                                          ("rmsprop_step", 1), ("adagrad_step", 1)])
def test_functional_skip_nonfinite(fname, state):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(6)
    g = rng.standard_normal(6)
    g[3] = np.nan
    bufs = [np.abs(rng.standard_normal(6)) for _ in range(state)]
    extra = {"step": 2} if fname in ("adam_step", "sgd_momentum_step", "adagrad_step") else {}
    before = [a.tobytes() for a in [p, g, *bufs]]
    info = getattr(fastopt, fname)(p, g, *bufs, lr=0.1, skip_nonfinite=True, **extra)
    assert info.applied is False and np.isnan(info.grad_norm)
    assert [a.tobytes() for a in [p, g, *bufs]] == before


# ---------------------------------------------------------------------------
# Global-norm clipping over every dtype buffer.
# ---------------------------------------------------------------------------
def test_max_grad_norm_uses_global_norm_of_both_buffers():
    params = FlatParams({"a": np.zeros(2, np.float32), "b": np.zeros(1)})
    grads = params.zeros_like()
    grads["a"][:] = [3.0, 0.0]
    grads["b"][:] = [4.0]
    opt = optim.SGD(params, lr=1.0, max_grad_norm=1.0)
    info = opt.step(grads)
    assert info.applied and info.grad_norm == pytest.approx(5.0, rel=1e-15)
    factor = 1.0 / (5.0 + 1e-6)
    np.testing.assert_allclose(params["a"], [-3.0 * factor, 0.0], rtol=1e-6)
    np.testing.assert_allclose(params["b"], [-4.0 * factor], rtol=1e-12)
    # per-buffer clipping would have given a = [-1, 0] and b = [-1]
    assert abs(params["a"][0] + 1.0) > 0.3 and abs(params["b"][0] + 1.0) > 0.1
    # the global norm is the length of the clipped update (one step of SGD, lr 1)
    total = np.sqrt(float(params["a"].astype(np.float64) @ params["a"]) + float(params["b"] @ params["b"]))
    assert total == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_max_grad_norm_two_buffers_equals_functional_with_global_scale(name):
    spec = SPECS[name]
    params = make_mixed()
    grads_all = grad_seq(params, 4)
    max_norm, scale = 0.7, 2.0
    opt = spec.cls(params, lr=0.05, weight_decay=0.0, max_grad_norm=max_norm, grad_scale=scale, **spec.kwargs)
    hand = {d: (params.buffers[d].copy(), hand_state(spec, params.buffers[d])) for d in params.buffers}
    for k, grads in enumerate(grads_all, start=1):
        info = opt.step(grads)
        gb = grads.buffers
        norm = np.sqrt(sum(float(np.dot(b.astype(np.float64), b.astype(np.float64))) for b in gb.values())) / scale
        assert info.grad_norm == pytest.approx(norm, rel=1e-12)
        eff_scale = scale / min(1.0, max_norm / (norm + 1e-6))
        for d, (p, s) in hand.items():
            spec.hand(p, gb[d], s, k, 0.05, 0.0, grad_scale=eff_scale)
    for d, (p, s) in hand.items():
        assert params.buffers[d].tobytes() == p.tobytes(), d
    key = {np.dtype(d).name: d for d in hand}
    for k2, v in opt.state_dict()["state"].items():
        n, dn = k2.split(".")
        np.testing.assert_array_equal(v, hand[key[dn]][1][n])


def test_clipping_inactive_below_the_threshold():
    params = make_mixed()
    twin = make_mixed()
    grads = grad_seq(params, 3)
    big = 1e6
    o1 = optim.Adam(params, lr=0.01, max_grad_norm=big)
    o2 = optim.Adam(twin, lr=0.01)
    for g in grads:
        o1.step(g)
        o2.step(g)
    assert_params_identical(params, twin)


# ---------------------------------------------------------------------------
# Bookkeeping.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_zero_state_restarts(name):
    spec = SPECS[name]
    params = make_params()
    grads = grad_seq(params, 3)
    opt = spec.cls(params, lr=0.05, **spec.kwargs)
    opt.step(grads[0])
    opt.zero_state()
    assert opt.step_count == 0
    p_after_reset = params.copy()
    opt.step(grads[1])
    fresh_params = p_after_reset.copy()
    fresh = spec.cls(fresh_params, lr=0.05, **spec.kwargs)
    fresh.step(grads[1])
    assert_params_identical(params, fresh_params)
    assert_states_identical(opt_state(opt), opt_state(fresh))


def test_repr_and_algorithm_names():
    assert {SPECS[n].cls.algorithm for n in NAMES} == {"sgd", "momentum", "adam", "adamw", "amsgrad", "nadam",
                                                      "rmsprop", "adagrad", "lion"}
    opt = optim.Adam(make_params(), lr=0.1, groups=[{"params": ["b1"]}])
    assert repr(opt) == "Adam(step_count=0, groups=2)"


def test_adamw_default_weight_decay_is_decoupled():
    params = FlatParams({"w": np.full(3, 2.0)})
    opt = optim.AdamW(params, lr=0.1)
    opt.step(np.zeros(3))  # zero gradient: only the decay moves p
    np.testing.assert_allclose(params.data, 2.0 * (1 - 0.1 * 1e-2), rtol=1e-15)
