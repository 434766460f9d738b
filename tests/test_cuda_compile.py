"""Every CUDA source compiles for sm_90 with NVRTC and CuPy's flags, without a GPU.

Also: the compile check really fails on broken sources (and reports NVRTC's log),
the kernel registry lists every kernel of every source, and each GPU launcher passes
arguments that match its kernel's parameter list (names, order, C types), checked by
launching into a recording stub, so no device is needed.
"""
from __future__ import annotations

import glob
import inspect
import os
import re
import types

import numpy as np
import pytest

from fastopt.kernels.gpu import _module, compile_check


def _nvrtc_missing() -> str | None:
    """Why NVRTC cannot be used here, or None when it can."""
    try:
        from cupy.cuda import nvrtc
    except Exception as exc:
        return f"CuPy is not importable: {exc!r}"
    try:
        nvrtc.getVersion()
    except Exception as exc:
        return f"the NVRTC library cannot be loaded: {exc!r}"
    return None


def _cupy_missing() -> str | None:
    try:
        import cupy  # noqa: F401
    except Exception as exc:
        return f"CuPy is not importable: {exc!r}"
    return None


needs_nvrtc = pytest.mark.skipif(_nvrtc_missing() is not None, reason=str(_nvrtc_missing()))
needs_cupy = pytest.mark.skipif(_cupy_missing() is not None, reason=str(_cupy_missing()))

GPU_DIR = os.path.dirname(os.path.abspath(_module.__file__))
CU_FILES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(GPU_DIR, "*.cu")))


# ---------------------------------------------------------------------------
# Parsing the CUDA sources (enough C++ for our own kernels)
# ---------------------------------------------------------------------------

_KERNEL_RE = re.compile(
    r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)", re.S)


def _strip_comments(source: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", re.sub(r"//[^\n]*", " ", source), flags=re.S)


def kernel_signatures(filename: str) -> dict[str, list[tuple[str, str]]]:
    """{kernel: [(C type without const/__restrict__, parameter name), ...]} of a .cu file."""
    source = _strip_comments(_module.read_source(filename))
    out = {}
    for name, params in _KERNEL_RE.findall(source):
        parsed = []
        for param in params.split(","):
            tokens = param.replace("*", " * ").split()
            tokens = [t for t in tokens if t not in ("const", "__restrict__")]
            parsed.append(("".join(tokens[:-1]), tokens[-1]))
        out[name] = parsed
    return out


# ---------------------------------------------------------------------------
# The real sources compile
# ---------------------------------------------------------------------------

def test_there_are_sources():
    assert "optim.cu" in CU_FILES


@needs_nvrtc
@pytest.mark.parametrize("filename", CU_FILES)
def test_source_compiles_for_sm90(filename):
    expressions = _module.name_expressions(filename)
    result = compile_check.check_file(os.path.join(GPU_DIR, filename), arch="sm_90")
    assert result.ok, f"{filename} does not compile for sm_90:\n{result.log}"
    # Every template instantiation was compiled to a kernel with a mangled name.
    assert sorted(result.lowered) == sorted(expressions)
    assert all(result.lowered[e] for e in expressions)
    assert result.cubin_size > 0


@needs_nvrtc
def test_check_all_and_main(capsys):
    results = compile_check.check_all("sm_90")
    assert [f for f, _, _ in results] == CU_FILES
    failures = {f: log for f, ok, log in results if not ok}
    assert not failures, failures
    assert compile_check.main(["--arch", "sm_90"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(CU_FILES)
    assert all(line.startswith("OK") for line in lines)


@needs_nvrtc
def test_options_are_cupys():
    options = compile_check.compile_options("sm_90")
    for flag in ("-arch=sm_90", "--std=c++17", "--device-as-default-execution-space"):
        assert flag in options
    assert any(o.startswith("-I") and o.endswith("include") for o in options), options


# ---------------------------------------------------------------------------
# The checker fails on broken sources, with NVRTC's log
# ---------------------------------------------------------------------------

GOOD = """
template <typename T>
__global__ void scale(T* __restrict__ x, T a, long long n)
{
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        x[i] = a * x[i];
    }
}
"""


@needs_nvrtc
def test_checker_accepts_a_good_template():
    result = compile_check.compile_source(GOOD, "sm_90", ["scale<float>", "scale<double>"])
    assert result.ok, result.log
    assert set(result.lowered) == {"scale<float>", "scale<double>"}


@needs_nvrtc
def test_checker_fails_on_syntax_error():
    broken = GOOD.replace("x[i] = a * x[i];", "x[i] = a * x[i]")  # missing ';'
    result = compile_check.compile_source(broken, "sm_90", ["scale<float>"], name="broken.cu")
    assert not result.ok
    assert "error" in result.log and "broken.cu" in result.log, result.log
    assert 'expected a ";"' in result.log, result.log


@needs_nvrtc
def test_checker_fails_on_undefined_identifier():
    broken = GOOD.replace("a * x[i]", "a * y[i]")
    result = compile_check.compile_source(broken, "sm_90", ["scale<float>"])
    assert not result.ok
    assert 'identifier "y" is undefined' in result.log, result.log


@needs_nvrtc
def test_checker_instantiates_templates():
    # Only the instantiation reveals this error: T = float has no member `real`.
    broken = GOOD.replace("a * x[i]", "a.real * x[i]")
    assert compile_check.compile_source(broken, "sm_90", []).ok
    result = compile_check.compile_source(broken, "sm_90", ["scale<float>"])
    assert not result.ok
    assert "instantiation" in result.log, result.log


@needs_nvrtc
def test_checker_fails_on_missing_kernel():
    result = compile_check.compile_source(GOOD, "sm_90", ["nonexistent<float>"])
    assert not result.ok
    assert "nonexistent" in result.log, result.log


@needs_nvrtc
def test_checker_rejects_host_headers():
    # NVRTC has no host standard library: <cmath> is an error, as at run time.
    result = compile_check.compile_source("#include <cmath>\n" + GOOD, "sm_90", ["scale<float>"])
    assert not result.ok
    assert "cmath" in result.log, result.log


@needs_nvrtc
def test_check_all_reports_a_broken_file(tmp_path, monkeypatch):
    (tmp_path / "good.cu").write_text(GOOD)
    (tmp_path / "zbroken.cu").write_text(GOOD.replace("a * x[i]", "a * undefined_name[i]"))
    (tmp_path / "unregistered.cu").write_text(GOOD)
    registry = dict(_module.KERNELS, **{"good.cu": (("scale",), ()), "zbroken.cu": (("scale",), ())})
    monkeypatch.setattr(_module, "KERNELS", registry)
    results = compile_check.check_all("sm_90", directory=str(tmp_path))
    assert [(f, ok) for f, ok, _ in results] == [("good.cu", True), ("unregistered.cu", False),
                                                  ("zbroken.cu", False)]
    assert "_module.KERNELS" in results[1][2]
    assert 'identifier "undefined_name" is undefined' in results[2][2]


# ---------------------------------------------------------------------------
# The registry and the launchers agree with the sources (no NVRTC, no device)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("filename", CU_FILES)
def test_registry_lists_every_kernel(filename):
    assert filename in _module.KERNELS, f"register the kernels of {filename} in _module.KERNELS"
    templated, plain = _module.KERNELS[filename]
    assert sorted(kernel_signatures(filename)) == sorted(templated + plain)


@needs_cupy
def test_sumsq_constants_match():
    from fastopt.kernels.gpu import optim as gpu_optim

    source = _module.read_source("optim.cu")
    threads = int(re.search(r"constexpr int SUMSQ_THREADS = (\d+);", source).group(1))
    chunk = int(re.search(r"constexpr i64 SUMSQ_CHUNK = (\d+);", source).group(1))
    assert (gpu_optim.SUMSQ_THREADS, gpu_optim.SUMSQ_CHUNK) == (threads, chunk)


@needs_cupy
def test_launchers_have_reference_signatures():
    from fastopt.kernels import reference
    from fastopt.kernels.gpu import optim as gpu_optim

    for name in gpu_optim.__all__:
        assert inspect.signature(getattr(gpu_optim, name)) == inspect.signature(getattr(reference, name)), name


class _Recorder:
    """Stands in for ``_module.get_kernel``: records each launch instead of running it."""

    def __init__(self):
        self.launches = []

    def get_kernel(self, filename, name, dtype):
        def launch(grid, block, args):
            self.launches.append(types.SimpleNamespace(filename=filename, name=name, dtype=np.dtype(dtype),
                                                       grid=grid, block=block, args=args))
        return launch


@pytest.fixture
def recorder(monkeypatch):
    pytest.importorskip("cupy")
    from fastopt.kernels.gpu import optim as gpu_optim

    rec = _Recorder()
    class DeviceArray(np.ndarray):  # stands for cupy.ndarray: no input here is one
        pass

    fake_cupy = types.SimpleNamespace(asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
                                      empty=np.empty, asnumpy=np.asarray, ndarray=DeviceArray)
    monkeypatch.setattr(gpu_optim, "cupy", fake_cupy)
    monkeypatch.setattr(_module, "get_kernel", rec.get_kernel)
    monkeypatch.setattr(_module, "grid_size", lambda n, device_id=None: 3)
    return rec


def _inputs(name, dtype, full):
    """Keyword arguments for launcher ``name``: distinct arrays and distinct scalar values.

    ``full``: every option on and every state buffer present; else options off and
    optional buffers of size 0.
    """
    from fastopt.kernels import reference

    n, bounds = 10, np.array([0, 4, 4, 10], dtype=np.int64)
    params = list(inspect.signature(getattr(reference, name)).parameters)
    optional = {"vmax": "amsgrad", "gavg": "centered", "buf": "momentum"} if name != "sgd_momentum" else {}
    kwargs = {}
    for k, param in enumerate(params):
        if param == "bounds":
            kwargs[param] = bounds
        elif param in ("lr", "l2", "shrink"):
            kwargs[param] = np.array([0.1, 0.2, 0.3]) * (k + 1)  # float64: the launcher casts
        elif param in ("p", "g", "m", "v", "vmax", "buf", "sq", "gavg", "ssum"):
            size = n if (full or param not in optional) else 0
            kwargs[param] = np.full(size, k, dtype=dtype)
        elif param in ("amsgrad", "centered", "nesterov"):
            kwargs[param] = full
        elif param == "first_step":
            kwargs[param] = not full
        else:
            kwargs[param] = 0.01 * (k + 1)  # a float: the launcher casts to dtype
    if name == "rmsprop" and not full:
        kwargs["momentum"] = 0.0
    return kwargs


def _check_args(launch, signature, kwargs, dtype):
    """Each argument of ``launch`` matches the parameter of the same name in ``signature``."""
    assert len(launch.args) == len(signature), (launch.name, len(launch.args), signature)
    t = np.dtype(dtype).type
    for arg, (ctype, pname) in zip(launch.args, signature):
        where = f"{launch.name}: parameter {pname} ({ctype})"
        if ctype == "T*":
            given = kwargs[pname]
            if pname in ("lr", "l2", "shrink"):
                assert isinstance(arg, np.ndarray) and arg.dtype == dtype, where
                np.testing.assert_array_equal(arg, given.astype(dtype), err_msg=where)
            elif given.size == 0:
                assert type(arg) is np.uint64 and arg == 0, f"{where}: expected a null pointer, got {arg!r}"
            else:
                assert arg is given, where
        elif ctype == "i64*":
            assert isinstance(arg, np.ndarray) and arg.dtype == np.int64, where
            np.testing.assert_array_equal(arg, kwargs[pname], err_msg=where)
        elif ctype == "T":
            assert type(arg) is t, f"{where}: {type(arg)} is not {t}"
            assert arg == t(kwargs[pname]), where
        elif ctype == "double":
            assert type(arg) is np.float64, f"{where}: {type(arg)} is not float64"
            assert arg == np.float64(kwargs[pname]), where
        elif ctype == "int":
            assert type(arg) is np.int32, where
            assert arg == int(bool(kwargs[pname])), where
        elif ctype == "i64":
            assert type(arg) is np.int64, where
            if pname == "n":
                assert arg == (kwargs["p"] if "p" in kwargs else kwargs["g"]).size, where
            elif pname == "n_seg":
                assert arg == len(kwargs["bounds"]) - 1, where
        elif ctype == "double*":
            assert isinstance(arg, np.ndarray) and arg.dtype == np.float64, where
        else:
            raise AssertionError(f"{where}: unknown C type")


UPDATES = ["sgd", "heavy_ball", "sgd_momentum", "adam", "nadam", "rmsprop", "adagrad", "lion"]


@pytest.mark.parametrize("full", [True, False], ids=["options-on", "options-off"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", UPDATES)
def test_launcher_arguments_match_kernel(recorder, name, dtype, full):
    from fastopt.kernels.gpu import optim as gpu_optim

    signatures = kernel_signatures("optim.cu")
    kwargs = _inputs(name, dtype, full)
    getattr(gpu_optim, name)(**kwargs)
    assert len(recorder.launches) == 1
    launch = recorder.launches[0]
    assert (launch.filename, launch.name, launch.dtype) == ("optim.cu", name, np.dtype(dtype))
    assert launch.grid == (3,) and launch.block == (_module.THREADS,)
    # Every reference parameter reaches the kernel, by name.
    names = {pname for _, pname in signatures[name]}
    assert set(kwargs) <= names, set(kwargs) - names
    _check_args(launch, signatures[name], kwargs, dtype)


@pytest.mark.parametrize("name", UPDATES)
def test_launcher_zero_size_launches_nothing(recorder, name):
    from fastopt.kernels.gpu import optim as gpu_optim

    kwargs = _inputs(name, np.float32, True)
    for key, value in kwargs.items():
        if isinstance(value, np.ndarray) and value.dtype == np.float32:
            kwargs[key] = value[:0]
    kwargs["bounds"] = np.zeros(4, dtype=np.int64)
    getattr(gpu_optim, name)(**kwargs)
    assert recorder.launches == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_sumsq_launch_arguments(recorder, dtype):
    from fastopt.kernels.gpu import optim as gpu_optim

    signatures = kernel_signatures("optim.cu")
    g = np.ones(gpu_optim.SUMSQ_CHUNK * 2 + 1, dtype=dtype)
    gpu_optim.grad_sumsq(g)
    partial, finish = recorder.launches
    assert partial.name == "grad_sumsq_partial" and finish.name == "grad_sumsq_finish"
    assert partial.grid == (3,) and partial.block == (gpu_optim.SUMSQ_THREADS,)
    assert finish.grid == (1,) and finish.block == (gpu_optim.SUMSQ_THREADS,)
    _check_args(partial, signatures["grad_sumsq_partial"], {"g": g}, dtype)
    _check_args(finish, signatures["grad_sumsq_finish"], {}, dtype)
    assert partial.args[2] is finish.args[0]  # the partial sums feed the second pass
    assert finish.args[1] == 3
    assert recorder.launches and gpu_optim.grad_sumsq(g[:0]) == 0.0 and len(recorder.launches) == 2
