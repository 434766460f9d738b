"""fastopt against ``torch.optim`` (float32, 20 steps, the same random gradients fed to both).

Parameters *and* state are compared (torch's state names: exp_avg, exp_avg_sq,
max_exp_avg_sq, momentum_buffer, square_avg, grad_avg, sum, mu_product).

Tolerance, per array, measured in the same test: PyTorch's own spread between two of
its implementations on the same problem, ``spread = max|alt - loop|`` where ``loop`` is
``foreach=False`` and ``alt`` is ``fused=True`` (Adam, AdamW, SGD, Adagrad: fused on the
CPU in torch >= 2.4) or else ``foreach=True`` (RMSprop, NAdam). fastopt must satisfy

    max|fastopt - loop| <= SPREAD_FACTOR * spread + FLOOR_ULPS * eps32 * max|loop| * sqrt(steps)

The floor is the registry's float32 tolerance (``tests/conftest.py``): PyTorch's
implementations are often bit-identical to each other (spread 0) and fastopt rounds in
its own order, which must cost no more than a few ulps per step.

The torch model has several parameter tensors plus a zero-size one (as PyTorch's own
optimiser tests do); fastopt updates them as one flat buffer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

import fastopt
from tests.conftest import ALGO_BY_NAME, F32, F64, ULP_FACTOR, assert_close, run_public

STEPS = 20
SIZES = (300, 517, 211, 0)
N = sum(SIZES)
SPREAD_FACTOR = 4.0
FLOOR_ULPS = ULP_FACTOR
EPS32 = float(np.finfo(F32).eps)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@dataclass(frozen=True)
class Case:
    name: str
    torch_cls: str  # attribute of torch.optim
    torch_kw: dict
    algo: str  # fastopt registry entry
    fast_kw: dict
    state_map: dict  # torch state name -> fastopt state name ("mu_product": the driver's scalar)
    fused: bool  # torch has fused=True on the CPU for this class
    extra: dict = field(default_factory=dict)


def _adam(name, torch_cls="Adam", algo="adam", state_extra=None, **kw):
    torch_kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, **kw)
    fast_kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8)
    fast_kw.update({k: v for k, v in kw.items() if k in ("weight_decay", "maximize")})
    if torch_cls == "AdamW":
        fast_kw["decoupled_weight_decay"] = True
    state = {"exp_avg": "m", "exp_avg_sq": "v", **(state_extra or {})}
    return Case(name, torch_cls, torch_kw, algo, fast_kw, state, fused=True)


def _sgd(name, momentum=0.0, dampening=0.0, nesterov=False, **kw):
    torch_kw = dict(lr=0.02, momentum=momentum, dampening=dampening, nesterov=nesterov, **kw)
    if momentum == 0:
        return Case(name, "SGD", torch_kw, "sgd", dict(lr=0.02, **kw), {}, fused=True)
    fast_kw = dict(lr=0.02, momentum=momentum, dampening=dampening, nesterov=nesterov, **kw)
    return Case(name, "SGD", torch_kw, "sgd_momentum", fast_kw, {"momentum_buffer": "buf"}, fused=True)


def _rmsprop(name, centered=False, momentum=0.0, **kw):
    torch_kw = dict(lr=1e-3, alpha=0.99, eps=1e-8, centered=centered, momentum=momentum, **kw)
    algo = "rmsprop" + ("_centered" if centered else "") + ("_momentum" if momentum else "")
    state = {"square_avg": "sq"}
    if centered:
        state["grad_avg"] = "gavg"
    if momentum:
        state["momentum_buffer"] = "buf"
    fast_kw = dict(lr=1e-3, alpha=0.99, eps=1e-8, centered=centered, momentum=momentum, **kw)
    return Case(name, "RMSprop", torch_kw, algo, fast_kw, state, fused=False)


def _adagrad(name, **kw):
    torch_kw = dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1, eps=1e-10, **kw)
    fast_kw = dict(lr=0.1, lr_decay=0.05, eps=1e-10, **kw)  # initial_accumulator_value: ssum starts at 0.1
    return Case(name, "Adagrad", torch_kw, "adagrad", fast_kw, {"sum": "ssum"}, fused=True)


def _nadam(name, **kw):
    torch_kw = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3, **kw)
    fast_kw = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3, **kw)
    state = {"exp_avg": "m", "exp_avg_sq": "v", "mu_product": "mu_product"}
    return Case(name, "NAdam", torch_kw, "nadam", fast_kw, state, fused=False)


CASES = [
    _adam("adam"),
    _adam("adam_l2", weight_decay=0.1),
    _adam("adam_maximize", maximize=True),
    _adam("adamw", torch_cls="AdamW", weight_decay=0.1),
    _adam("amsgrad", algo="amsgrad", amsgrad=True, state_extra={"max_exp_avg_sq": "vmax"}),
    _sgd("sgd"),
    _sgd("sgd_l2_maximize", weight_decay=0.1, maximize=True),
    _sgd("sgd_momentum", momentum=0.9),
    _sgd("sgd_dampening", momentum=0.8, dampening=0.3),
    _sgd("sgd_nesterov_l2", momentum=0.9, nesterov=True, weight_decay=0.1),
    _rmsprop("rmsprop"),
    _rmsprop("rmsprop_centered", centered=True),
    _rmsprop("rmsprop_momentum", momentum=0.9),
    _rmsprop("rmsprop_centered_momentum_l2_maximize", centered=True, momentum=0.9, weight_decay=0.1,
             maximize=True),
    _adagrad("adagrad"),
    _adagrad("adagrad_l2_maximize", weight_decay=0.1, maximize=True),
    _nadam("nadam"),
    _nadam("nadam_l2", weight_decay=0.1),
    _nadam("nadam_decoupled", weight_decay=0.1, decoupled_weight_decay=True),
]


def _problem(seed=1234):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(N).astype(F32)
    grads = [rng.standard_normal(N).astype(F32) for _ in range(STEPS)]
    return p0, grads


def _spans():
    out, lo = [], 0
    for s in SIZES:
        out.append((lo, lo + s))
        lo += s
    return out


def run_torch(torch, cls_name, kw, p0, grads, impl):
    """Run ``torch.optim.<cls_name>`` with ``impl`` ("loop", "foreach" or "fused") on the split model.

    Returns (flat params, {state name: flat array or python float}, step count).
    """
    flags = {"loop": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}[impl]
    spans = _spans()
    params = [torch.tensor(p0[a:b].copy(), requires_grad=True) for a, b in spans]
    opt = getattr(torch.optim, cls_name)(params, **kw, **flags)
    for g in grads:
        for t, (a, b) in zip(params, spans):
            t.grad = torch.tensor(g[a:b].copy())
        opt.step()
    p = np.concatenate([t.detach().numpy() for t in params])
    names = set().union(*(opt.state[t].keys() for t in params))
    state = {}
    for name in names - {"step"}:
        values = [opt.state[t][name] for t in params]
        if values[0].ndim == 0:
            state[name] = float(values[0])
        else:
            state[name] = np.concatenate([v.detach().numpy() for v in values])
    steps = {float(opt.state[t]["step"]) for t in params if "step" in opt.state[t]}
    return p, state, steps


def assert_within_torch_spread(ours, loop, alt, *, what):
    """max|ours - loop| <= SPREAD_FACTOR max|alt - loop| + FLOOR_ULPS eps32 max|loop| sqrt(steps)."""
    ours, loop, alt = (np.asarray(x, F64) for x in (ours, loop, alt))
    spread = float(np.max(np.abs(alt - loop), initial=0.0))
    floor = FLOOR_ULPS * EPS32 * float(np.max(np.abs(loop), initial=0.0)) * math.sqrt(STEPS)
    err = float(np.max(np.abs(ours - loop), initial=0.0))
    assert np.all(np.isfinite(ours)) and np.all(np.isfinite(loop))
    assert err <= SPREAD_FACTOR * spread + floor, (
        f"{what}: |fastopt - torch| = {err:.3g} > {SPREAD_FACTOR} x torch spread {spread:.3g} + floor {floor:.3g} "
        f"(max|x| = {np.max(np.abs(loop)):.3g})")
    return err, spread, floor


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES])
def test_matches_torch(case, torch):
    p0, grads = _problem()
    loop = run_torch(torch, case.torch_cls, case.torch_kw, p0, grads, "loop")
    alt = run_torch(torch, case.torch_cls, case.torch_kw, p0, grads, "fused" if case.fused else "foreach")
    algo = ALGO_BY_NAME[case.algo]
    ours = run_public(algo, backend="cpu", p0=p0, grads=grads, **case.fast_kw)

    assert ours.step == STEPS
    assert loop[2] <= {float(STEPS)}  # torch counted the same steps (SGD keeps no step)
    assert np.any(loop[0] != p0), "the problem must move the parameters"
    assert set(loop[1]) == set(case.state_map), f"torch state {sorted(loop[1])}"
    assert_within_torch_spread(ours.p, loop[0], alt[0], what="params")
    for tname, fname in case.state_map.items():
        if fname == "mu_product":
            # torch keeps mu_product as a float32 tensor, fastopt's caller as a Python float
            assert ours.mu_product == pytest.approx(loop[1][tname], rel=4 * EPS32)
            continue
        assert_within_torch_spread(ours.state[fname], loop[1][tname], alt[1][tname], what=tname)


def test_heavy_ball_equals_torch_sgd_momentum(torch):
    """With a constant lr, heavy ball (m <- beta m - lr g; p <- p + m) is torch's SGD(momentum=beta,
    dampening=0): m = -lr buf at every step."""
    beta, lr = 0.9, 0.02
    p0, grads = _problem(seed=77)
    kw = dict(lr=lr, momentum=beta, dampening=0.0)
    loop = run_torch(torch, "SGD", kw, p0, grads, "loop")
    fused = run_torch(torch, "SGD", kw, p0, grads, "fused")
    ours = run_public(ALGO_BY_NAME["heavy_ball"], backend="cpu", p0=p0, grads=grads, lr=lr, beta=beta)
    assert_within_torch_spread(ours.p, loop[0], fused[0], what="params")
    buf_loop = loop[1]["momentum_buffer"].astype(F64)
    buf_fused = fused[1]["momentum_buffer"].astype(F64)
    assert_within_torch_spread(ours.state["m"], -lr * buf_loop, -lr * buf_fused, what="m = -lr buf")


# ------------------------------------------------------------------ Lion: the paper's algorithm
def lion_paper(p, grads, *, lr, beta1, beta2, wd, maximize=False):
    """Chen et al. 2023, Algorithm 2, in float64 NumPy, line by line."""
    theta = np.asarray(p, F64).copy()
    m = np.zeros_like(theta)
    for g in grads:
        g = np.asarray(g, F64) * (-1.0 if maximize else 1.0)
        c = beta1 * m + (1.0 - beta1) * g  # update = interp(g, m) ...
        theta = theta - lr * (np.sign(c) + wd * theta)  # ... sign, plus decoupled weight decay
        m = beta2 * m + (1.0 - beta2) * g  # momentum tracked with beta2
    return theta, m


@pytest.mark.parametrize("dtype", [pytest.param(F32, id="float32"), pytest.param(F64, id="float64")])
@pytest.mark.parametrize("wd,maximize", [(0.0, False), (0.1, False), (0.3, True)])
def test_lion_matches_paper_algorithm(wd, maximize, dtype):
    lr, beta1, beta2 = 1e-3, 0.9, 0.99
    rng = np.random.default_rng(2023)
    p0 = rng.standard_normal(N).astype(dtype)
    grads = [rng.standard_normal(N).astype(dtype) for _ in range(STEPS)]
    theta, m = lion_paper(p0, grads, lr=lr, beta1=beta1, beta2=beta2, wd=wd, maximize=maximize)
    ours = run_public(ALGO_BY_NAME["lion"], backend="cpu", p0=p0, grads=grads, lr=lr, beta1=beta1, beta2=beta2,
                      weight_decay=wd, maximize=maximize)
    assert np.any(theta != p0)
    assert_close(ours.p, theta, dtype=dtype, steps=STEPS, what="theta")
    assert_close(ours.state["m"], m, dtype=dtype, steps=STEPS, what="m")
