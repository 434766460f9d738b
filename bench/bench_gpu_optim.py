"""GPU Adam (float32) beside a bandwidth probe and PyTorch's fused Adam.

An Adam step moves 28 bytes per float32 element: it reads p, g, m, v and writes
p, m, v. The probe is a trivial kernel with exactly that traffic (one element per
thread, nothing to compute), so its bandwidth is the ceiling measured in this run
on this device; each benchmark reports its achieved bandwidth and the ratio to it.

Each timed call makes ``REPS`` launches and then synchronises, so one
synchronisation is shared by many steps; times are per step. At 1e6 elements a
step moves 28 MB (a few microseconds on an H100/H200), so there the Python launch
overhead, not memory, may set the pace: that is reported as it is.

Run on a GPU machine (skips without one)::

    python -m pytest bench/bench_gpu_optim.py --benchmark-only -s
"""
from __future__ import annotations

import time

import numpy as np
import pytest

import fastopt

_gpu_ok, _gpu_why = fastopt.gpu_status()      # CuPy and a usable device (the emulator's, under it)
if not _gpu_ok:
    pytest.skip(f"gpu backend unavailable: {_gpu_why}", allow_module_level=True)

import cupy  # noqa: E402

pytestmark = pytest.mark.gpu

from fastopt.kernels.gpu import optim as gpu_optim  # noqa: E402

SIZES = [10**6, 10**7, 10**8]
BYTES_PER_ELEMENT = 28  # float32: read p, g, m, v; write p, m, v
REPS = 20  # steps per timed call
ROUNDS = 5

_PROBE_SOURCE = r"""
extern "C" __global__ void probe(float* __restrict__ p, const float* __restrict__ g,
                                 float* __restrict__ m, float* __restrict__ v, long long n)
{
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float pi = p[i], gi = g[i], mi = m[i], vi = v[i];
        p[i] = pi + gi;
        m[i] = mi - gi;
        v[i] = vi + mi;
    }
}
"""
_probe_kernel = cupy.RawKernel(_PROBE_SOURCE, "probe")

#: Results of this run: (what, n) -> GB/s.
RESULTS: dict[tuple[str, int], float] = {}


def _synchronize():
    cupy.cuda.Device().synchronize()


def _seconds_per_step(run_reps) -> float:
    """Median over ROUNDS of the wall time of ``run_reps`` (REPS steps + sync), per step."""
    run_reps()  # warm-up: compilation, allocation, caches
    times = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        run_reps()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) / REPS


def _report(benchmark, what, n, seconds):
    gbps = BYTES_PER_ELEMENT * n / seconds / 1e9
    RESULTS[(what, n)] = gbps
    probe = RESULTS.get(("probe", n))
    benchmark.extra_info.update({"n": n, "us_per_step": seconds * 1e6, "GB/s": gbps})
    line = f"{what:>12} n={n:>11,}: {seconds * 1e6:10.1f} us/step {gbps:8.0f} GB/s"
    if probe:
        benchmark.extra_info["ratio_to_probe"] = gbps / probe
        line += f"  {gbps / probe:6.1%} of the probe ({probe:.0f} GB/s)"
    print("\n" + line, flush=True)


def _arrays(n, seed=0):
    rs = cupy.random.RandomState(seed)
    p = rs.standard_normal(n, dtype=np.float32)
    g = rs.standard_normal(n, dtype=np.float32)
    m = cupy.zeros(n, dtype=np.float32)
    v = cupy.zeros(n, dtype=np.float32)
    return p, g, m, v


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    _synchronize()
    cupy.get_default_memory_pool().free_all_blocks()


def _probe_seconds(n):
    """(seconds per probe step, the timed callable) at size ``n``."""
    p, g, m, v = _arrays(n)
    grid = (-(-n // 256),)

    def run_reps():
        for _ in range(REPS):
            _probe_kernel(grid, (256,), (p, g, m, v, np.int64(n)))
        _synchronize()

    return _seconds_per_step(run_reps), run_reps


@pytest.mark.parametrize("n", SIZES)
def test_probe(benchmark, n):
    seconds, run_reps = _probe_seconds(n)
    _report(benchmark, "probe", n, seconds)
    benchmark.pedantic(run_reps, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def _probe_gbps(n) -> float:
    if ("probe", n) not in RESULTS:  # run alone (-k): measure the ceiling here
        seconds, _ = _probe_seconds(n)
        RESULTS[("probe", n)] = BYTES_PER_ELEMENT * n / seconds / 1e9
        _synchronize()
        cupy.get_default_memory_pool().free_all_blocks()
    return RESULTS[("probe", n)]


@pytest.mark.parametrize("n", SIZES)
def test_fastopt_adam(benchmark, n):
    _probe_gbps(n)
    p, g, m, v = _arrays(n)
    vmax = cupy.empty(0, dtype=np.float32)
    # Segment arrays staged on the device once, as a trainer does: no copies per step.
    bounds = cupy.asarray(np.array([0, n], dtype=np.int64))
    lr = cupy.full(1, 1e-3 / (1 - 0.9), dtype=np.float32)
    l2 = cupy.zeros(1, dtype=np.float32)
    shrink = cupy.ones(1, dtype=np.float32)
    f = np.float32
    scalars = (f(1.0), f(0.9), f(0.999), f(1e-8), f(np.sqrt(1 - 0.999)), False)

    def run_reps():
        for _ in range(REPS):
            gpu_optim.adam(p, g, m, v, vmax, bounds, lr, l2, shrink, *scalars)
        _synchronize()

    seconds = _seconds_per_step(run_reps)
    _report(benchmark, "fastopt", n, seconds)
    benchmark.pedantic(run_reps, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert bool(cupy.isfinite(p).all())


@pytest.mark.parametrize("n", SIZES)
def test_torch_fused_adam(benchmark, n):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA here")
    _probe_gbps(n)
    gen = torch.Generator(device="cuda").manual_seed(0)
    param = torch.nn.Parameter(torch.randn(n, device="cuda", generator=gen))
    param.grad = torch.randn(n, device="cuda", generator=gen)
    opt = torch.optim.Adam([param], lr=1e-3, fused=True)

    def run_reps():
        for _ in range(REPS):
            opt.step()
        torch.cuda.synchronize()

    try:
        seconds = _seconds_per_step(run_reps)
        _report(benchmark, "torch fused", n, seconds)
        benchmark.pedantic(run_reps, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    finally:
        del opt, param
        torch.cuda.empty_cache()
