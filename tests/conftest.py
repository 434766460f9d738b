"""Shared helpers of the optimiser tests (the registry, the step driver, the tolerances) and of the LS tests.

Test modules import these names with ``from tests.conftest import ...`` (pytest's
``--import-mode=importlib`` registers this file as the module ``tests.conftest``).
Nothing here is autouse and every fixture name starts with ``optim_`` so that other
test files can define their own fixtures freely.

The registry
------------
``ALGOS`` lists each optimiser configuration once (sgd, heavy-ball momentum, PyTorch
momentum with dampening / Nesterov, Adam, AMSGrad, NAdam, RMSprop centred x momentum,
Adagrad with lr_decay and an initial accumulator, Lion). ``OPTIONS`` lists the shared
options (weight decay L2 and decoupled, maximize, grad_scale, clipping, per-segment
rates with an empty segment, skip_nonfinite). :func:`run_public` drives any of them
for N steps through the public functional API, on any backend, keeping the step
count (and NAdam's ``mu_product``) the way a caller must: only applied steps count.

Tolerances
----------
:func:`assert_close` allows ``|actual - expected| <= K eps(dtype) max|expected| sqrt(steps)``
element-wise, with ``K = ULP_FACTOR``. Why this form:

- each step rounds every buffer once or twice in the kernel's dtype (a relative error
  of ``eps/2`` per rounding, with ``|x| <= max|x|``);
- the roundings of independent steps behave like a random walk, hence ``sqrt(steps)``
  (a systematic per-step error, e.g. a biased scalar, grows like ``steps`` and is
  *meant* to fail);
- ``K = 4`` leaves room for the 2-3 roundings of one update (e.g. ``m / denom``,
  ``lr * (...)`` and the final subtraction) without admitting any algorithmic
  difference. Measured on this registry (3 and 20 steps, every option): the worst
  ratio is 1.6 in float32 and 1.2 in float64 wherever the difference is arithmetic
  only. (Hyperparameters such as beta2 = 0.999 that float32 cannot hold exactly cost
  more today: see ``test_float32_first_moment_update_weights``.)
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import fastopt
from fastopt.kernels import reference_ls
from fastopt.kernels.cpu import optim as cpu_optim

#: tests/gpu_emulator/ holds the CPU emulator of the CUDA kernels (a plugin, used only with
#: ``-p tests.gpu_emulator.plugin``, and its scripts): never collected, never imported by a plain run.
collect_ignore = ["gpu_emulator"]

F32, F64 = np.float32, np.float64
DTYPES = (F32, F64)
ULP_FACTOR = 4.0
BLOCK = cpu_optim.BLOCK
PARALLEL_MIN_SIZE = cpu_optim.PARALLEL_MIN_SIZE


# --------------------------------------------------------------------------- backends
def backend_params(include_reference: bool = False):
    """``pytest.param`` list of backends: "cpu" always, "gpu" marked ``gpu`` (skipped
    at run time by :func:`require_backend` when no device), optionally "reference"."""
    params = [pytest.param("cpu", id="cpu")]
    if include_reference:
        params.append(pytest.param("reference", id="reference"))
    params.append(pytest.param("gpu", id="gpu", marks=pytest.mark.gpu))
    return params


def require_backend(backend: str) -> None:
    """Skip the calling test cleanly when ``backend`` cannot run here."""
    if backend == "gpu":
        ok, reason = fastopt.gpu_status()
        if not ok:
            pytest.skip(f"gpu backend unavailable: {reason}")


def to_device(a: np.ndarray, backend: str):
    if backend == "gpu":
        import cupy

        return cupy.asarray(a)
    return a


def to_host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Algo:
    """One optimiser configuration of the public functional API.

    Attributes:
      name: test id.
      func: the public step function (``fastopt.adam_step`` ...).
      positional: state buffers passed positionally after ``p, g``.
      keyword: state buffers passed by keyword (``vmax``, ``gavg``, ``buf``).
      hyper: the algorithm's own hyperparameters (keyword arguments).
      lr: a learning rate that moves parameters visibly in 20 steps.
      takes_step: whether the function needs ``step=`` (the 1-based update index).
      nadam: whether the caller must keep ``mu_product``.
      state_fill: initial value of state buffers (default 0), e.g. Adagrad's
        ``initial_accumulator_value``.
      kernel: the kernel's name in ``kernels/*/optim.py``.
    """

    name: str
    func: Callable
    positional: tuple
    keyword: tuple = ()
    hyper: dict = field(default_factory=dict)
    lr: float = 1e-2
    takes_step: bool = False
    nadam: bool = False
    state_fill: dict = field(default_factory=dict)
    kernel: str = ""

    @property
    def state_names(self) -> tuple:
        return self.positional + self.keyword


ALGOS = [
    Algo("sgd", fastopt.sgd_step, (), lr=0.05, kernel="sgd"),
    Algo("heavy_ball", fastopt.momentum_step, ("m",), hyper=dict(beta=0.9), lr=0.02, kernel="heavy_ball"),
    Algo("sgd_momentum", fastopt.sgd_momentum_step, ("buf",), hyper=dict(momentum=0.9), lr=0.02,
         takes_step=True, kernel="sgd_momentum"),
    Algo("sgd_dampening", fastopt.sgd_momentum_step, ("buf",), hyper=dict(momentum=0.8, dampening=0.3),
         lr=0.02, takes_step=True, kernel="sgd_momentum"),
    Algo("sgd_nesterov", fastopt.sgd_momentum_step, ("buf",), hyper=dict(momentum=0.9, nesterov=True),
         lr=0.02, takes_step=True, kernel="sgd_momentum"),
    Algo("adam", fastopt.adam_step, ("m", "v"), lr=1e-2, takes_step=True, kernel="adam"),
    Algo("amsgrad", fastopt.adam_step, ("m", "v"), ("vmax",), hyper=dict(amsgrad=True), lr=1e-2,
         takes_step=True, kernel="adam"),
    Algo("nadam", fastopt.nadam_step, ("m", "v"), lr=1e-2, takes_step=True, nadam=True, kernel="nadam"),
    Algo("rmsprop", fastopt.rmsprop_step, ("sq",), lr=1e-3, kernel="rmsprop"),
    Algo("rmsprop_centered", fastopt.rmsprop_step, ("sq",), ("gavg",), hyper=dict(centered=True), lr=1e-3,
         kernel="rmsprop"),
    Algo("rmsprop_momentum", fastopt.rmsprop_step, ("sq",), ("buf",), hyper=dict(momentum=0.9), lr=1e-3,
         kernel="rmsprop"),
    Algo("rmsprop_centered_momentum", fastopt.rmsprop_step, ("sq",), ("gavg", "buf"),
         hyper=dict(centered=True, momentum=0.9), lr=1e-3, kernel="rmsprop"),
    Algo("adagrad", fastopt.adagrad_step, ("ssum",), hyper=dict(lr_decay=0.05), lr=0.1, takes_step=True,
         state_fill=dict(ssum=0.1), kernel="adagrad"),
    Algo("lion", fastopt.lion_step, ("m",), lr=1e-3, kernel="lion"),
]
ALGO_BY_NAME = {a.name: a for a in ALGOS}
#: One configuration per kernel (for the more expensive tests).
ONE_PER_KERNEL = [a for a in ALGOS if a.name in ("sgd", "heavy_ball", "sgd_dampening", "adam", "amsgrad",
                                                  "nadam", "rmsprop_centered_momentum", "adagrad", "lion")]


def algo_params(algos=ALGOS):
    return [pytest.param(a, id=a.name) for a in algos]


# --------------------------------------------------------------------------- options
REGISTRY_SIZE = 1037
#: Offsets of the per-segment option: five segments, the second one empty.
SEGMENTS = (0, 211, 211, 600, 990, REGISTRY_SIZE)
#: Steps of the skip_nonfinite option that carry a NaN / +inf / -inf (0-based call index).
NONFINITE_AT = {5: np.nan, 11: np.inf, 16: -np.inf}


def option_kwargs(option: str, algo: Algo, n: int) -> dict:
    """Keyword arguments of ``option`` for ``algo`` on a buffer of ``n`` elements."""
    lr = algo.lr
    if option == "plain":
        return dict(lr=lr)
    if option == "l2":
        return dict(lr=lr, weight_decay=0.1, decoupled_weight_decay=False)
    if option == "decoupled":  # adam + decoupled = AdamW
        return dict(lr=lr, weight_decay=0.1, decoupled_weight_decay=True)
    if option == "maximize":
        return dict(lr=lr, maximize=True)
    if option == "grad_scale":
        return dict(lr=lr, grad_scale=8.0)
    if option == "clip":
        # random normal gradients have norm ~ sqrt(n): 0.3 sqrt(n) clips every step
        return dict(lr=lr, max_grad_norm=0.3 * math.sqrt(n), grad_scale=2.0)
    if option in ("segments_l2", "segments_decoupled"):
        bounds = list(SEGMENTS[:-1]) + [n]
        assert bounds == sorted(bounds), "the segment option needs n >= 990"
        return dict(lr=[lr, 3 * lr, 0.5 * lr, 0.0, 2 * lr], weight_decay=[0.0, 0.2, 0.05, 0.1, 0.3],
                    decoupled_weight_decay=option == "segments_decoupled", segments=bounds)
    if option == "skip_nonfinite":
        return dict(lr=lr, skip_nonfinite=True)
    raise KeyError(option)


OPTIONS = ("plain", "l2", "decoupled", "maximize", "grad_scale", "clip", "segments_l2", "segments_decoupled",
           "skip_nonfinite")


def make_problem(rng, n: int, steps: int, dtype, option: str = "plain"):
    """Initial parameters and ``steps`` gradients, in ``dtype`` (standard normal)."""
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]
    if option == "skip_nonfinite" and n:
        for k, bad in NONFINITE_AT.items():
            if k < steps:
                grads[k][(7 * k) % n] = bad
    return p0, grads


# --------------------------------------------------------------------------- driver
@dataclass
class Run:
    """The outcome of :func:`run_public`: host copies of every buffer and the StepInfos."""

    p: np.ndarray
    state: dict
    infos: list
    step: int
    mu_product: float


def initial_state(algo: Algo, p0: np.ndarray, state0: dict | None = None) -> dict:
    state = {}
    for name in algo.state_names:
        if state0 is not None and name in state0:
            state[name] = np.array(state0[name], dtype=p0.dtype, copy=True)
        else:
            state[name] = np.full_like(p0, algo.state_fill.get(name, 0.0))
    return state


def step_once(algo: Algo, p, g, state: dict, *, step: int, mu_product: float, backend=None, **kwargs):
    """One public call of ``algo`` (``mu_product``: the product before this step)."""
    args = [state[name] for name in algo.positional]
    kw = dict(algo.hyper)
    kw.update({name: state[name] for name in algo.keyword})
    if algo.takes_step:
        kw["step"] = step
    if algo.nadam:
        beta1 = kw.get("beta1", 0.9)
        kw["mu_product"] = mu_product * fastopt.optim.nadam_mu(step, beta1, kw.get("momentum_decay", 4e-3))
    kw.update(kwargs)
    return algo.func(p, g, *args, backend=backend, **kw), kw.get("mu_product", mu_product)


def run_public(algo: Algo, *, backend: str, p0: np.ndarray, grads, state0: dict | None = None, **kwargs) -> Run:
    """Run ``algo`` through the public API on copies of ``p0`` for ``len(grads)`` calls.

    The arrays keep ``p0``'s dtype (pass float64 copies and ``backend="reference"``
    for the oracle). A step that returns ``applied=False`` is not counted, as the
    docstring of ``skip_nonfinite`` asks of the caller.
    """
    p = to_device(p0.copy(), backend)
    state = {k: to_device(v, backend) for k, v in initial_state(algo, p0, state0).items()}
    step, mu_product, infos = 0, 1.0, []
    for g in grads:
        g = to_device(np.asarray(g, dtype=p0.dtype), backend)
        info, mu_next = step_once(algo, p, g, state, step=step + 1, mu_product=mu_product, backend=backend,
                                  **kwargs)
        infos.append(info)
        if info.applied:
            step, mu_product = step + 1, mu_next
    return Run(to_host(p), {k: to_host(v) for k, v in state.items()}, infos, step, mu_product)


def run_oracle(algo: Algo, *, p0, grads, state0=None, **kwargs) -> Run:
    """The float64 reference run of the same calls (float64 copies of every input)."""
    s64 = None if state0 is None else {k: np.asarray(v, F64) for k, v in state0.items()}
    return run_public(algo, backend="reference", p0=np.asarray(p0, F64),
                      grads=[np.asarray(g, F64) for g in grads], state0=s64, **kwargs)


# --------------------------------------------------------------------------- tolerances
def ulp_ratio(actual, expected, dtype, steps: int) -> float:
    """max|actual - expected| in units of ``eps(dtype) max|expected| sqrt(steps)``.

    Non-finite entries must agree exactly (same NaN positions, same infinities);
    the ratio is ``inf`` when they do not, 0 when both arrays are all zero.
    """
    a = np.asarray(actual, dtype=F64)
    e = np.asarray(expected, dtype=F64)
    assert a.shape == e.shape, (a.shape, e.shape)
    if a.size == 0:
        return 0.0
    fin = np.isfinite(e)
    if not np.array_equal(np.isfinite(a), fin) or not np.array_equal(a[~fin], e[~fin], equal_nan=True):
        return math.inf
    err = float(np.max(np.abs(a[fin] - e[fin]), initial=0.0))
    if err == 0.0:
        return 0.0
    scale = float(np.max(np.abs(e[fin]), initial=0.0))
    unit = float(np.finfo(dtype).eps) * scale * math.sqrt(max(steps, 1))
    return err / unit if unit > 0 else math.inf


def assert_close(actual, expected, *, dtype, steps: int, what: str = "", k: float = ULP_FACTOR):
    """``|actual - expected| <= k eps(dtype) max|expected| sqrt(steps)`` element-wise."""
    r = ulp_ratio(actual, expected, dtype, steps)
    if not r <= k:
        a = np.asarray(actual, F64)
        e = np.asarray(expected, F64)
        d = np.abs(a - e)
        i = int(np.nanargmax(np.where(np.isnan(d), np.inf, d)))
        raise AssertionError(
            f"{what}: error {r:.3g} x eps*max|x|*sqrt(steps) exceeds {k} (dtype {np.dtype(dtype).name}, "
            f"steps {steps}); worst index {i}: actual {a[i]!r}, expected {e[i]!r}, "
            f"relative {d[i] / max(abs(e[i]), 1e-300):.3g}")


def norm_discrepancy(run: Run, oracle: Run) -> float:
    """The largest relative difference of the gradient norms two runs reported.

    The kernels sum g^2 in float64 in a fixed block order, NumPy's reference in its
    own (pairwise) order: both are accurate, neither is exact, and for n ~ 1e4-1e5 they
    differ by ~1e-15 relative. Through clipping that difference enters ``grad_mul``
    and every quantity homogeneous of degree <= 2 in g (m, p's displacement: 1;
    v, sq, ssum: 2), so :func:`assert_runs_match` allows ``2 delta max|x|`` on top.
    """
    delta = 0.0
    for a, b in zip(run.infos, oracle.infos):
        assert (a.grad_norm is None) == (b.grad_norm is None), "grad_norm reported by one run only"
        if a.grad_norm is None:
            continue
        if math.isfinite(b.grad_norm):
            assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-12), "grad_norm"
            if b.grad_norm > 0:
                delta = max(delta, abs(a.grad_norm / b.grad_norm - 1.0))
        else:
            assert not math.isfinite(a.grad_norm), "grad_norm should be non-finite"
    return delta


def assert_runs_match(run: Run, oracle: Run, *, dtype, steps: int, what: str = "", k: float = ULP_FACTOR):
    """Parameters, every state buffer and the StepInfos of two runs agree.

    Tolerance: :func:`assert_close`'s ``k eps max|x| sqrt(steps)``, plus ``2 delta max|x|``
    where ``delta`` is the measured relative difference of the two runs' gradient norms
    (0 unless clipping is on; see :func:`norm_discrepancy`).
    """
    assert [i.applied for i in run.infos] == [i.applied for i in oracle.infos], f"{what}: applied flags differ"
    assert run.step == oracle.step
    delta = norm_discrepancy(run, oracle)
    unit = float(np.finfo(dtype).eps) * math.sqrt(max(steps, 1))
    k_eff = k + 2.0 * delta / unit
    assert_close(run.p, oracle.p, dtype=dtype, steps=steps, what=f"{what} p", k=k_eff)
    assert set(run.state) == set(oracle.state)
    for name in run.state:
        assert_close(run.state[name], oracle.state[name], dtype=dtype, steps=steps, what=f"{what} {name}",
                     k=k_eff)


def state_bytes(p, g, state: dict) -> dict:
    """Raw bytes of every buffer (to prove that nothing at all was written)."""
    out = {"p": to_host(p).tobytes(), "g": to_host(g).tobytes()}
    out.update({k: to_host(v).tobytes() for k, v in state.items()})
    return out


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def optim_rng(request):
    """A NumPy Generator seeded from the test's node id (reproducible, distinct per test)."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# --------------------------------------------------------------------------- LS system (Gram) helpers
# Shared by tests/test_ls_gram.py (CPU) and tests/test_gpu_ls.py (GPU): the weight forms of the
# public API, the float64 oracle's system and the worst-case rounding bounds of the assembly.
EPS64 = float(np.finfo(F64).eps)


def weights_for(mode, J, rng):
    """The ``weights`` argument of a test: None, one number, or one per row (one of them zero)."""
    if mode == "none":
        return None
    if mode == "scalar":
        return 0.37
    w = rng.uniform(0.0, 2.0, J)
    if J > 3:
        w[3] = 0.0  # a zero weight is allowed
    return w


def w_vector(mode, weights, J):
    """The weight of every row as the public API defines it."""
    if mode == "none":
        return np.full(J, 1.0 / J if J else 0.0)
    if mode == "scalar":
        return np.full(J, weights)
    return np.asarray(weights, F64)


def tile_problem(rng, dtype, wmode, J=1500, N=9):
    """Rows, values and weights of the tiling tests (CPU and GPU): ``(Phi, y, weights, wv)``."""
    Phi = rng.standard_normal((J, N)).astype(dtype)
    y = rng.standard_normal(J).astype(dtype)
    weights = weights_for(wmode, J, rng)
    return Phi, y, weights, w_vector(wmode, weights, J)


def assert_within(actual, expected, bound, what, k=2.0):
    """``|actual - expected| <= k bound`` element-wise (the reference itself is off by up to one bound)."""
    actual, expected = np.asarray(actual, F64), np.asarray(expected, F64)
    err = np.abs(actual - expected)
    ok = err <= k * np.asarray(bound) + 1e-300
    if not np.all(ok):
        i = np.unravel_index(np.argmax(err - k * bound), err.shape)
        raise AssertionError(f"{what}: |error| {err[i]:.3g} exceeds {k} x bound {np.asarray(bound)[i]:.3g} "
                             f"at {i} (actual {actual[i]!r}, expected {expected[i]!r})")


def gram_bounds(Phi, wv, y):
    """Element-wise bounds for A, b and ywy: ``(J + 5) eps_64 |Phi|^T W |Phi|`` (tests/test_ls_gram.py derives them)."""
    J = Phi.shape[0]
    P = np.abs(Phi.astype(F64))
    g = (J + 5) * EPS64
    bA = g * (P.T @ (wv[:, None] * P))
    if y is None:
        return bA, None, 0.0
    ya = np.abs(np.asarray(y, F64))
    return bA, g * (P.T @ (wv * ya)), g * float(wv @ (ya * ya))


def reference_system(Phi, wv, y):
    """``(A, b, ywy)`` by the float64 oracle (``b`` None without ``y``)."""
    N = Phi.shape[1]
    A, b = np.empty((N, N)), np.empty(N if y is not None else 0)
    ywy = reference_ls.gram(Phi, wv if wv.size else np.zeros(1), y if y is not None else np.empty(0), A, b, 0)
    return A, (b if y is not None else None), ywy
