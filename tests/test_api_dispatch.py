"""Backend resolution, use_backend, to_backend, lazy imports and DLPack interop.

Resolution order (DESIGN.md, "The dispatcher"): an explicit ``backend=`` argument,
then an active ``use_backend(...)`` context, then the arrays' type. The kernel a call
really runs is observed by wrapping ``fastopt._dispatch.get_kernel``, the one door
into ``kernels/``.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastopt
from fastopt import _dispatch, optim

try:  # torch is optional: DLPack tests skip without it
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
GPU_OK, GPU_REASON = fastopt.gpu_status()


@pytest.fixture
def kernel_log(monkeypatch):
    """Record (family, name, backend, module of the kernel) for every kernel lookup."""
    log = []
    real = _dispatch.get_kernel

    def recording(family, name, backend):
        fn = real(family, name, backend)
        log.append((family, name, backend, getattr(fn, "__module__", None)))
        return fn

    monkeypatch.setattr(_dispatch, "get_kernel", recording)
    return log


def _adam_arrays(n=6, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype),
            np.zeros(n, dtype), np.zeros(n, dtype))


def _update_backends(log):
    """Backends of the update kernels looked up (grad_sumsq excluded)."""
    return [b for fam, name, b, _ in log if name != "grad_sumsq"]


# ---------------------------------------------------------------------------
# Resolution order.
# ---------------------------------------------------------------------------
def test_numpy_arrays_resolve_to_cpu(kernel_log):
    p, g, m, v = _adam_arrays()
    fastopt.adam_step(p, g, m, v, step=1, lr=0.1)
    # one lookup, or two when the lean path's kernel has not run these types yet in this process
    # and the call goes on through the checked path (adam_step's docstring)
    assert set(_update_backends(kernel_log)) == {"cpu"}
    assert kernel_log[-1][3] == "fastopt.kernels.cpu.optim"


def test_context_beats_array_type(kernel_log):
    p, g, m, v = _adam_arrays()
    with fastopt.use_backend("reference") as name:
        assert name == "reference"
        assert _dispatch.active_backend() == "reference"
        fastopt.adam_step(p, g, m, v, step=1, lr=0.1)
    assert _update_backends(kernel_log) == ["reference"]
    assert kernel_log[-1][3] == "fastopt.kernels.reference"


def test_explicit_backend_beats_context(kernel_log):
    p, g, m, v = _adam_arrays()
    with fastopt.use_backend("reference"):
        fastopt.adam_step(p, g, m, v, step=1, lr=0.1, backend="cpu")
        fastopt.sgd_step(p, g, lr=0.1, backend="cpu")
    with fastopt.use_backend("cpu"):
        fastopt.sgd_step(p, g, lr=0.1, backend="reference")
    assert _update_backends(kernel_log) == ["cpu", "cpu", "reference"]


def test_explicit_backend_without_context(kernel_log):
    p, g, m, v = _adam_arrays()
    fastopt.adam_step(p, g, m, v, step=1, lr=0.1, backend="reference")
    assert _update_backends(kernel_log) == ["reference"]


def test_context_is_reset_after_block_and_on_error(kernel_log):
    p, g, _, _ = _adam_arrays()
    assert _dispatch.active_backend() is None
    with pytest.raises(KeyError):
        with fastopt.use_backend("reference"):
            raise KeyError("boom")
    assert _dispatch.active_backend() is None
    fastopt.sgd_step(p, g, lr=0.1)
    assert _update_backends(kernel_log) == ["cpu"]


def test_nested_contexts_innermost_wins(kernel_log):
    p, g, _, _ = _adam_arrays()
    with fastopt.use_backend("reference"):
        with fastopt.use_backend("cpu"):
            fastopt.sgd_step(p, g, lr=0.1)
        fastopt.sgd_step(p, g, lr=0.1)
    fastopt.sgd_step(p, g, lr=0.1)
    assert _update_backends(kernel_log) == ["cpu", "reference", "cpu"]


def test_skip_and_clip_pass_uses_the_resolved_backend(kernel_log):
    p, g, m, v = _adam_arrays()
    with fastopt.use_backend("reference"):
        fastopt.adam_step(p, g, m, v, step=1, lr=0.1, max_grad_norm=1.0, skip_nonfinite=True)
    assert {b for _, _, b, _ in kernel_log} == {"reference"}
    assert ("optim", "grad_sumsq", "reference", "fastopt.kernels.reference") in kernel_log


def test_optimizer_class_respects_context_and_explicit_backend(kernel_log):
    params = fastopt.FlatParams({"w": np.ones(4)})
    grads = params.zeros_like()
    grads.data[:] = 0.5
    with fastopt.use_backend("reference"):
        opt = optim.Adam(params, lr=0.1)
    assert opt.backend == "reference"
    opt.step(grads)  # the backend was fixed at construction
    opt2 = optim.Adam(params, lr=0.1, backend="reference")
    opt2.step(grads)
    opt3 = optim.Adam(params, lr=0.1)
    opt3.step(grads)
    assert _update_backends(kernel_log) == ["reference", "reference", "cpu"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_reference_backend_runs_the_numpy_oracle(dtype, kernel_log):
    """backend="reference" calls fastopt.kernels.reference and gives textbook Adam (Kingma & Ba, Alg. 1)."""
    p, g, m, v = _adam_arrays(9, dtype)
    p0 = p.astype(np.float64)
    g64 = g.astype(np.float64)
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    m_ref, v_ref, p_ref = np.zeros(9), np.zeros(9), p0.copy()
    for k in (1, 2, 3):
        fastopt.adam_step(p, g, m, v, step=k, lr=lr, beta1=b1, beta2=b2, eps=eps, backend="reference")
        m_ref = b1 * m_ref + (1 - b1) * g64
        v_ref = b2 * v_ref + (1 - b2) * g64 ** 2
        p_ref = p_ref - lr * (m_ref / (1 - b1 ** k)) / (np.sqrt(v_ref / (1 - b2 ** k)) + eps)
    assert {mod for _, _, _, mod in kernel_log} == {"fastopt.kernels.reference"}
    assert p.dtype == dtype and m.dtype == dtype and v.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(p, p_ref, rtol=rtol)
    np.testing.assert_allclose(m, m_ref, rtol=rtol)
    np.testing.assert_allclose(v, v_ref, rtol=rtol)


def test_reference_and_cpu_agree():
    p, g, m, v = _adam_arrays(50)
    q, mq, vq = p.copy(), m.copy(), v.copy()
    for k in range(1, 6):
        fastopt.adam_step(p, g, m, v, step=k, lr=0.01, backend="cpu")
        fastopt.adam_step(q, g, mq, vq, step=k, lr=0.01, backend="reference")
    np.testing.assert_allclose(p, q, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(v, vq, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------
# use_backend, available_backends, gpu_status, to_backend.
# ---------------------------------------------------------------------------
@pytest.mark.skipif(GPU_OK, reason="a usable GPU is present")
def test_use_backend_gpu_without_device_says_what_is_missing():
    with pytest.raises(RuntimeError) as info:
        with fastopt.use_backend("gpu"):
            pytest.fail("the block must not run")  # pragma: no cover
    msg = str(info.value)
    assert "gpu" in msg
    if importlib.util.find_spec("cupy") is None:
        assert "CuPy is not installed" in msg
    else:
        assert "CuPy" in msg and "installed" in msg and "no CUDA device" in msg, msg
    assert _dispatch.active_backend() is None


@pytest.mark.skipif(GPU_OK, reason="a usable GPU is present")
def test_gpu_status_reason_matches_environment():
    ok, reason = fastopt.gpu_status()
    assert ok is False
    assert isinstance(reason, str) and reason
    if importlib.util.find_spec("cupy") is not None:
        import cupy

        assert cupy.__version__ in reason
    assert "gpu" not in fastopt.available_backends()


@pytest.mark.parametrize("bad", ["tpu", "GPU", "", None, 3])
def test_use_backend_bad_name(bad):
    with pytest.raises(ValueError, match=r"use_backend: name must be one of 'cpu', 'gpu', 'reference'"):
        with fastopt.use_backend(bad):
            pytest.fail("the block must not run")  # pragma: no cover
    assert _dispatch.active_backend() is None


def test_available_backends():
    names = fastopt.available_backends()
    assert isinstance(names, list)
    assert "cpu" in names and "reference" in names
    assert ("gpu" in names) == GPU_OK
    assert names[0] == "cpu"


def test_to_backend_numpy_to_cpu_is_identity():
    x = np.arange(5.0)
    assert fastopt.to_backend(x, "cpu") is x
    assert fastopt.to_backend(x, "reference") is x


@pytest.mark.skipif(GPU_OK, reason="a usable GPU is present")
def test_to_backend_gpu_without_device():
    with pytest.raises(RuntimeError, match="the 'gpu' backend is not available"):
        fastopt.to_backend(np.zeros(3), "gpu")


@pytest.mark.parametrize("bad", ["tpu", None])
def test_to_backend_bad_name(bad):
    with pytest.raises(ValueError, match=r"to_backend: backend must be one of"):
        fastopt.to_backend(np.zeros(3), bad)


def test_to_backend_rejects_non_arrays():
    with pytest.raises(TypeError, match=r"x must be a NumPy or CuPy array"):
        fastopt.to_backend([1.0, 2.0], "cpu")


def test_get_kernel_unknown_names():
    with pytest.raises(LookupError, match=r"backend 'cpu' has no kernel optim.no_such_kernel"):
        _dispatch.get_kernel("optim", "no_such_kernel", "cpu")
    with pytest.raises(ValueError, match="backend must be one of"):
        _dispatch.get_kernel("optim", "adam", "tpu")


def test_get_kernel_is_cached():
    assert _dispatch.get_kernel("optim", "adam", "cpu") is _dispatch.get_kernel("optim", "adam", "cpu")


# ---------------------------------------------------------------------------
# Lazy imports: a subprocess proves what `import fastopt` and a CPU step pull in.
# ---------------------------------------------------------------------------
def _run_python(code, env=None, timeout=120):
    full_env = dict(os.environ)
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=timeout, env=full_env, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.returncode == 0, f"subprocess failed:\nSTDOUT:\n{out.stdout}\nSTDERR:\n{out.stderr}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_and_cpu_step_do_not_import_cupy_or_torch():
    res = _run_python("""
        import json, sys
        import numpy as np
        import fastopt
        after_import = sorted(m for m in ("cupy", "torch", "scipy.optimize") if m in sys.modules)
        p = np.ones(4); g = np.full(4, 0.5); m = np.zeros(4); v = np.zeros(4)
        info = fastopt.adam_step(p, g, m, v, step=1, lr=0.1)
        fastopt.sgd_step(p, g, lr=0.1, max_grad_norm=1.0, skip_nonfinite=True)
        with fastopt.use_backend("cpu"):
            fastopt.sgd_step(p, g, lr=0.1)
        fastopt.sgd_step(p, g, lr=0.1, backend="reference")
        params = fastopt.FlatParams({"w": np.ones(3)})
        fastopt.optim.Adam(params, lr=0.1).step(np.ones(3))
        print(json.dumps({"after_import": after_import,
                          "cupy": any(k == "cupy" or k.startswith("cupy.") for k in sys.modules),
                          "torch": any(k == "torch" or k.startswith("torch.") for k in sys.modules),
                          "applied": info.applied, "p0": float(p[0])}))
    """)
    assert res["applied"] is True
    assert res["p0"] < 1.0
    assert res["after_import"] == [], f"`import fastopt` imported {res['after_import']}"
    assert res["cupy"] is False, "a CPU step imported cupy"
    assert res["torch"] is False, "a CPU step imported torch"


def test_works_when_cupy_cannot_be_imported():
    """With CuPy blocked, fastopt imports, steps on the CPU, and says CuPy is missing."""
    res = _run_python("""
        import json, sys
        sys.modules["cupy"] = None  # any `import cupy` raises ImportError
        import numpy as np
        import fastopt
        p = np.ones(3); g = np.ones(3)
        fastopt.sgd_step(p, g, lr=0.5)
        ok, reason = fastopt.gpu_status()
        try:
            with fastopt.use_backend("gpu"):
                pass
            err = None
        except RuntimeError as exc:
            err = str(exc)
        print(json.dumps({"p": p.tolist(), "ok": ok, "reason": reason, "err": err,
                          "backends": fastopt.available_backends()}))
    """)
    assert res["p"] == [0.5, 0.5, 0.5]
    assert res["ok"] is False
    assert "CuPy is not installed" in res["reason"]
    assert res["err"] is not None and "CuPy is not installed" in res["err"]
    assert res["backends"] == ["cpu", "reference"]


# ---------------------------------------------------------------------------
# DLPack: torch CPU tensors are updated in place, for their owner.
# ---------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("shape", [(7,), (3, 4)], ids=["1-D", "2-D"])
@pytest.mark.parametrize("tdtype", ["float32", "float64"])
def test_torch_tensors_updated_in_place(shape, tdtype):
    tdt = getattr(torch, tdtype)
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(shape, generator=gen, dtype=tdt)
    g = torch.randn(shape, generator=gen, dtype=tdt)
    m = torch.zeros(shape, dtype=tdt)
    v = torch.zeros(shape, dtype=tdt)
    ptr = p.data_ptr()
    # the same update on NumPy copies, for the expected values
    pn, gn, mn, vn = (t.numpy().copy() for t in (p, g, m, v))
    for k in (1, 2):
        fastopt.adam_step(p, g, m, v, step=k, lr=0.01)
        fastopt.adam_step(pn, gn, mn, vn, step=k, lr=0.01)
    assert p.data_ptr() == ptr and p.shape == shape and p.dtype == tdt
    assert np.array_equal(p.numpy(), pn)
    assert np.array_equal(m.numpy(), mn) and np.abs(mn).sum() > 0
    assert np.array_equal(v.numpy(), vn) and vn.sum() > 0
    assert np.array_equal(g.numpy(), gn)


@needs_torch
def test_torch_parameter_requires_grad_updated_in_place():
    w = torch.nn.Parameter(torch.ones(3, 2, dtype=torch.float64))
    w.grad = torch.full((3, 2), 0.5, dtype=torch.float64)
    m = torch.zeros(3, 2, dtype=torch.float64)
    v = torch.zeros(3, 2, dtype=torch.float64)
    info = fastopt.adam_step(w, w.grad, m, v, step=1, lr=0.1)
    assert info.applied
    assert isinstance(w, torch.nn.Parameter) and w.requires_grad
    np.testing.assert_allclose(w.detach().numpy(), 1.0 - 0.1 * 0.5 / (0.5 + 1e-8), rtol=1e-14)
    np.testing.assert_allclose(m.numpy(), 0.05, rtol=1e-12)
    # autograd still works on the updated parameter
    (w * 2.0).sum().backward()
    assert w.grad is not None


@needs_torch
def test_torch_and_numpy_in_one_call_are_not_mixed():
    p = torch.ones(4, dtype=torch.float64)
    g = np.full(4, 0.5)
    m = np.zeros(4)
    fastopt.momentum_step(p, g, m, lr=0.1, beta=0.9)
    np.testing.assert_allclose(p.numpy(), 0.95)
    np.testing.assert_allclose(m, -0.05)


@needs_torch
@pytest.mark.parametrize("which", ["p", "g", "m"])
def test_non_contiguous_torch_tensor_refused_and_unchanged(which):
    base = {n: torch.arange(24, dtype=torch.float64).reshape(4, 6) + i for i, n in enumerate("pgm")}
    args = {n: base[n][:, :3].contiguous() for n in "pgm"}
    args[which] = base[which][:, ::2]
    assert not args[which].is_contiguous()
    before = {n: t.clone() for n, t in base.items()}
    before_args = {n: t.clone() for n, t in args.items()}
    with pytest.raises(ValueError, match=rf"momentum_step: {which} must be C-contiguous"):
        fastopt.momentum_step(args["p"], args["g"], args["m"], lr=0.1)
    for n in "pgm":
        assert torch.equal(base[n], before[n])
        assert torch.equal(args[n], before_args[n])


@needs_torch
def test_transposed_torch_tensor_refused():
    t = torch.ones(3, 4, dtype=torch.float64).T
    with pytest.raises(ValueError, match="contiguous"):
        fastopt.sgd_step(t, torch.ones(4, 3, dtype=torch.float64), lr=0.1)
    assert torch.all(t == 1.0)


@needs_torch
def test_torch_tensor_sharing_storage_is_aliasing():
    buf = torch.zeros(10, dtype=torch.float64)
    p, m = buf[:6], buf[4:10]
    g = torch.ones(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="momentum_step: p and m overlap in memory"):
        fastopt.momentum_step(p, g, m, lr=0.1)
    with pytest.raises(ValueError, match=r"momentum_step: p and m (are the same array|overlap in memory)"):
        fastopt.momentum_step(buf[:6], g, buf[:6], lr=0.1)
    assert torch.all(buf == 0)


@needs_torch
@pytest.mark.parametrize("tdtype", ["float16", "int64", "bfloat16"])
def test_torch_unsupported_dtype_names_the_argument(tdtype):
    p = torch.ones(4, dtype=getattr(torch, tdtype))
    g = torch.ones(4, dtype=getattr(torch, tdtype))
    before = p.clone()
    with pytest.raises(TypeError, match=r"sgd_step: p must be float32 or float64"):
        fastopt.sgd_step(p, g, lr=0.1)
    assert torch.equal(p, before)


@needs_torch
def test_to_backend_torch_is_a_zero_copy_view():
    t = torch.arange(4, dtype=torch.float64)
    x = fastopt.to_backend(t, "cpu")
    assert isinstance(x, np.ndarray)
    x[0] = 42.0
    assert t[0].item() == 42.0


@needs_torch
def test_flatparams_from_torch_copies():
    t = torch.ones(2, 3, dtype=torch.float32)
    params = fastopt.FlatParams({"W": t})
    assert params.data.dtype == np.float32 and params["W"].shape == (2, 3)
    params["W"][...] = 5.0
    assert torch.all(t == 1.0)


@needs_torch
@pytest.mark.parametrize("options", [{}, {"max_grad_norm": 10.0}, {"skip_nonfinite": True}],
                         ids=["plain", "clip", "skip"])
def test_optimizer_over_torch_tensor_with_torch_grads(options):
    """An optimiser over a torch tensor takes torch gradients, with or without the global-norm pass."""
    p = torch.ones(5, dtype=torch.float64)
    ref = np.ones(5)
    grads = torch.linspace(-1, 1, 5, dtype=torch.float64)
    opt = optim.Adam(p, lr=0.1, **options)
    opt_ref = optim.Adam(ref, lr=0.1, **options)
    for _ in range(3):
        assert opt.step(grads).applied
        opt_ref.step(grads.numpy().copy())
    assert np.array_equal(p.numpy(), ref)
    assert opt.step_count == 3
