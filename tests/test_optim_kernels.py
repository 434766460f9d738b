"""Kernel level: every Numba (and CUDA) optimiser kernel against the float64 reference kernel.

The kernels are called directly, with the host scalars a public call would pass
(cast to the arrays' dtype, booleans as ``bool``, ``bounds`` read-only int64), so
these tests see the kernel contract of ``kernels/reference.py`` with nothing of the
public API in between. The reference gets float64 copies and the *same* scalar
values (the dtype-rounded ones), so the only differences left are the kernels'
own roundings: tolerance ``K eps max|x| sqrt(steps)`` (``tests/conftest.py``).

Also here: serial vs threaded entry points and 1 vs 2 Numba threads, bit for bit.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from fastopt import _dispatch
from fastopt.kernels import reference
from fastopt.kernels.cpu import optim as cpu_optim
from tests.conftest import (BLOCK, DTYPES, F64, PARALLEL_MIN_SIZE, assert_close, backend_params, require_backend,
                            to_device, to_host)

# name -> (kernel, state buffers, scalars after grad_mul). Scalars are floats unless bool.
VARIANTS = {
    "sgd": ("sgd", (), dict()),
    "heavy_ball": ("heavy_ball", ("m",), dict(beta=0.9)),
    "sgd_momentum_first": ("sgd_momentum", ("buf",),
                           dict(momentum=0.9, dampening=0.0, nesterov=False, first_step=True)),
    "sgd_momentum_dampening": ("sgd_momentum", ("buf",),
                               dict(momentum=0.8, dampening=0.3, nesterov=False, first_step=False)),
    "sgd_nesterov": ("sgd_momentum", ("buf",), dict(momentum=0.9, dampening=0.0, nesterov=True, first_step=False)),
    "adam": ("adam", ("m", "v", "vmax"), dict(beta1=0.9, beta2=0.999, eps=1e-8, bc2_sqrt=0.3, amsgrad=False)),
    "amsgrad": ("adam", ("m", "v", "vmax"), dict(beta1=0.9, beta2=0.999, eps=1e-8, bc2_sqrt=0.3, amsgrad=True)),
    "nadam": ("nadam", ("m", "v"), dict(beta1=0.9, beta2=0.999, eps=1e-8, bc2=0.05, coef_g=0.12, coef_m=3.9)),
    "rmsprop": ("rmsprop", ("sq", "gavg", "buf"), dict(alpha=0.99, eps=1e-8, momentum=0.0, centered=False)),
    "rmsprop_centered": ("rmsprop", ("sq", "gavg", "buf"), dict(alpha=0.99, eps=1e-8, momentum=0.0, centered=True)),
    "rmsprop_momentum": ("rmsprop", ("sq", "gavg", "buf"), dict(alpha=0.9, eps=1e-6, momentum=0.9, centered=False)),
    "rmsprop_centered_momentum": ("rmsprop", ("sq", "gavg", "buf"),
                                  dict(alpha=0.9, eps=1e-6, momentum=0.5, centered=True)),
    "adagrad": ("adagrad", ("ssum",), dict(eps=1e-10)),
    "lion": ("lion", ("m",), dict(beta1=0.9, beta2=0.99)),
}
#: State buffers the variant does not use: passed as size-0 arrays (the kernel contract).
UNUSED = {"adam": ("vmax",), "rmsprop": ("gavg", "buf"), "rmsprop_centered": ("buf",),
          "rmsprop_momentum": ("gavg",)}
SIZES = [0, 1, 7, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3, PARALLEL_MIN_SIZE + 7]
dtype_params = [pytest.param(d, id=np.dtype(d).name) for d in DTYPES]


def segment_bounds(n):
    """Offsets that cut blocks on both sides of their edges, with an empty segment."""
    cuts = sorted({c for c in (n // 3, BLOCK - 1, BLOCK + 1, 2 * BLOCK, PARALLEL_MIN_SIZE) if 0 < c < n})
    b = np.array([0] + cuts[:1] + cuts + [n], dtype=np.int64)  # cuts[0] twice: an empty segment
    b.flags.writeable = False  # as the public API passes them (one kernel specialisation)
    return b


class Problem:
    """Arrays and scalars of one kernel call sequence, in a dtype, for one variant."""

    def __init__(self, variant, n, dtype, rng, steps=3):
        self.kernel, self.state_names, scalars = VARIANTS[variant]
        self.dtype = dtype
        self.bounds = segment_bounds(n)
        n_seg = self.bounds.size - 1
        self.lr = rng.uniform(1e-3, 5e-2, n_seg).astype(dtype)
        self.l2 = rng.uniform(0.0, 0.1, n_seg).astype(dtype)
        self.shrink = rng.uniform(0.99, 1.0, n_seg).astype(dtype)
        self.p = rng.standard_normal(n).astype(dtype)
        self.grads = [rng.standard_normal(n).astype(dtype) for _ in range(steps)]
        self.grad_muls = [dtype(x) for x in rng.uniform(-1.5, 1.5, steps)]  # negative: maximize
        unused = UNUSED.get(variant, ())
        self.state = {}
        for name in self.state_names:
            if name in unused:
                self.state[name] = self.p[:0].copy()
                continue
            a = rng.standard_normal(n).astype(dtype)
            if name in ("v", "vmax", "sq", "ssum"):
                a = (np.abs(a) + 0.5).astype(dtype)
            if name == "gavg":
                a = (0.5 * np.clip(a, -1, 1)).astype(dtype)  # sq >= 0.5 > gavg^2: sqrt of a positive
            self.state[name] = a
        self.scalars = [x if isinstance(x, bool) else dtype(x) for x in scalars.values()]

    def args(self, p, g, state, grad_mul, scalars):
        return [p, g, *[state[k] for k in self.state_names], self.bounds, self.lr, self.l2, self.shrink,
                grad_mul, *scalars]

    def run(self, kernel, *, as_dtype=None, xp=None):
        """Apply ``kernel`` for every gradient to copies; return host copies of p and the state."""
        dt = as_dtype or self.dtype
        conv = (lambda a: to_device(np.array(a, dtype=dt), xp)) if xp else (lambda a: np.array(a, dtype=dt))
        p = conv(self.p)
        state = {k: conv(v) for k, v in self.state.items()}
        for g, mul in zip(self.grads, self.grad_muls):
            cast = np.dtype(dt).type
            scalars = [x if isinstance(x, bool) else cast(x) for x in self.scalars]
            kernel(*self.args(p, conv(g), state, cast(mul), scalars))
        return to_host(p), {k: to_host(v) for k, v in state.items()}


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_kernel_matches_reference(variant, n, dtype, backend, optim_rng):
    """3 calls over segments that straddle blocks (and the threshold): p and every state buffer."""
    require_backend(backend)
    prob = Problem(variant, n, dtype, optim_rng)
    kernel = _dispatch.get_kernel("optim", prob.kernel, backend)
    p, state = prob.run(kernel, xp=backend if backend == "gpu" else None)
    p_ref, state_ref = prob.run(getattr(reference, prob.kernel), as_dtype=F64)
    steps = len(prob.grads)
    if n:
        assert np.any(p_ref != prob.p.astype(F64)), "the update must move p"
    assert p.dtype == dtype and all(v.dtype == dtype for v in state.values())
    assert_close(p, p_ref, dtype=dtype, steps=steps, what=f"{variant} p")
    for name in state:
        assert_close(state[name], state_ref[name], dtype=dtype, steps=steps, what=f"{variant} {name}")
        if state[name].size == 0:
            assert prob.state[name].size == 0


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("n", [0, 1, 3, BLOCK + 5, PARALLEL_MIN_SIZE + 7])
def test_grad_sumsq_matches_reference(n, dtype, backend, optim_rng):
    """The one reduction: float64 sum of squares, NaN/inf propagated."""
    require_backend(backend)
    g = (optim_rng.standard_normal(n) * 10.0 ** optim_rng.uniform(-5, 5, n)).astype(dtype)
    kernel = _dispatch.get_kernel("optim", "grad_sumsq", backend)
    expected = reference.grad_sumsq(g)
    got = kernel(to_device(g, backend))
    assert isinstance(got, float)
    # n terms of one sign: relative error of any summation order <= n eps64 (bound), ~sqrt(n) eps64 (typical)
    assert got == pytest.approx(expected, rel=max(n, 1) * np.finfo(F64).eps, abs=0.0)
    if n:
        for bad in (np.nan, np.inf):
            h = g.copy()
            h[-1] = bad
            r = kernel(to_device(h, backend))
            assert (math.isnan(r) if np.isnan(bad) else r == math.inf)


# ------------------------------------------------------------------ determinism
def _call_all(kernel, prob):
    p, state = prob.run(kernel)
    return [p.tobytes()] + [state[k].tobytes() for k in sorted(state)]


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("n", [3 * BLOCK + 5, PARALLEL_MIN_SIZE + 7])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_serial_and_threaded_bit_identical(variant, n, dtype, optim_rng):
    """``kernel.serial`` and ``kernel.threaded`` (prange) give the same bits, and the
    size-dispatching entry point agrees with both."""
    prob = Problem(variant, n, dtype, optim_rng)
    entry = getattr(cpu_optim, prob.kernel)
    serial = _call_all(entry.serial, prob)
    assert _call_all(entry.threaded, prob) == serial
    assert _call_all(entry, prob) == serial


def _thread_counts():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has a single thread here (NUMBA_NUM_THREADS < 2)")
    return 1, 2


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_and_two_threads_bit_identical(variant, dtype, optim_rng):
    """The threaded kernels give the same bits with 1 and with 2 Numba threads."""
    counts = _thread_counts()
    prob = Problem(variant, PARALLEL_MIN_SIZE + 7, dtype, optim_rng)
    entry = getattr(cpu_optim, prob.kernel)
    before = numba.get_num_threads()
    results = []
    try:
        for t in counts:
            numba.set_num_threads(t)
            results.append(_call_all(entry, prob))
    finally:
        numba.set_num_threads(before)
    assert results[0] == results[1]


@pytest.mark.parametrize("dtype", dtype_params)
@pytest.mark.parametrize("n", [3 * BLOCK + 5, 2 * PARALLEL_MIN_SIZE + 11])
def test_grad_sumsq_deterministic(n, dtype, optim_rng):
    """The reduction's value depends neither on the entry point nor on the thread count."""
    counts = _thread_counts()
    g = (optim_rng.standard_normal(n) * 10.0 ** optim_rng.uniform(-8, 8, n)).astype(dtype)
    k = cpu_optim.grad_sumsq
    values = {k.serial(g), k.threaded(g), k(g)}
    before = numba.get_num_threads()
    try:
        for t in counts:
            numba.set_num_threads(t)
            values |= {k.threaded(g), k(g)}
    finally:
        numba.set_num_threads(before)
    assert len(values) == 1, values


@pytest.mark.parametrize("dtype", dtype_params)
def test_public_step_one_and_two_threads_bit_identical(dtype, optim_rng):
    """Through the public API, with clipping (the reduction runs) and segments."""
    import fastopt

    counts = _thread_counts()
    n = PARALLEL_MIN_SIZE + 7
    p0 = optim_rng.standard_normal(n).astype(dtype)
    grads = [(optim_rng.standard_normal(n) * 10.0 ** optim_rng.uniform(-4, 4, n)).astype(dtype)
             for _ in range(3)]
    bounds = [int(b) for b in segment_bounds(n)]
    lrs = [1e-3 * (1 + s) for s in range(len(bounds) - 1)]
    before = numba.get_num_threads()
    out = []
    try:
        for t in counts:
            numba.set_num_threads(t)
            p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
            norms = []
            for k, g in enumerate(grads, 1):
                info = fastopt.adam_step(p, g, m, v, step=k, lr=lrs, segments=bounds, max_grad_norm=1.0,
                                         weight_decay=0.01, decoupled_weight_decay=True, backend="cpu")
                norms.append(info.grad_norm)
            out.append((p.tobytes(), m.tobytes(), v.tobytes(), norms))
    finally:
        numba.set_num_threads(before)
    assert out[0] == out[1]
