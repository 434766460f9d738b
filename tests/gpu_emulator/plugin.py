"""pytest plugin: run fastopt's GPU tests on the CPU, the ``.cu`` kernels through a C++ emulator of CUDA.

Activate it explicitly (it is never collected and does nothing when merely imported)::

    python -m pytest -p tests.gpu_emulator.plugin tests/test_gpu_ls.py -q
    bash tests/gpu_emulator/run_subset.sh          # the representative subset, < 90 s

What it installs, in ``pytest_configure`` (so before any test module is imported):

- **Device arrays.** ``cupy.ndarray`` becomes :class:`ndarray`, a NumPy subclass whose class looks
  like CuPy's to fastopt's dispatcher (so CuPy arrays resolve to the "gpu" backend). Constructors
  (``cupy.empty``, ``zeros``, ``full``, ``asarray``, ...) return such arrays, float ones inside a
  NaN *guard region* that is checked after every kernel launch (an out-of-bounds write fails the
  test). Operations that CuPy refuses are refused: a ufunc, ``cupy.*`` function or kernel launch
  that mixes a NumPy array (ndim > 0) with device arrays raises ``TypeError`` -- the implicit
  host/device copy real CuPy would not make. ``.get()``, ``cupy.asnumpy``, ``float(x)`` work as in CuPy;
  reductions and indexing return 0-d arrays, not NumPy scalars.
- **CuPy's namespace.** Every ``cupy.<f>`` that NumPy also has runs NumPy's on the arrays' memory;
  ``cupy.linalg`` likewise, except ``cholesky``, which fails the way cuSOLVER does (``info`` only;
  a finite partial factor unless ``cupyx.errstate(linalg="raise")``); ``cupy.cublas.syrk``,
  ``gemv``, ``gemm`` with CuPy's argument rules and ``syrk`` writing *only* the asked triangle;
  ``cupyx.scipy.linalg.solve_triangular`` by SciPy. ``cupy.cuda``: one device, no-op
  synchronisation.
- **Kernels.** ``fastopt.kernels.gpu._module.get_kernel`` returns the kernel compiled from the real
  ``.cu`` source with ``emu.h`` by g++ (one shared library per source, cached under
  ``$FASTOPT_GPU_EMULATOR_CACHE`` or ``~/.cache/fastopt/gpu-emulator``), launched with the grid
  and block it is given, after strict checks of every argument against the ``__global__``
  signature (device array of the right dtype, contiguous, non-empty or a null pointer; scalars of
  the exact NumPy type). ``_module.grid_size`` is capped at ``EMU_MAX_BLOCKS`` (default 3) blocks,
  so that every grid-stride loop strides.

Options: ``--emu-require-all-kernels`` fails the session unless every kernel of
``_module.KERNELS`` was launched in both float32 and float64 (the subset script uses it); the
terminal summary lists what ran. Read ``README.md`` beside this file for what the emulator cannot
check.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import types
import weakref

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GUARD = 97
MAX_BLOCKS = int(os.environ.get("EMU_MAX_BLOCKS", "3"))
_bases = []        # weak references to the guarded base buffers
LAUNCHES = {}      # (file, kernel, ctype) -> number of launches
_installed = False


# =========================================================================== device arrays
def _plain(x):
    return x.view(np.ndarray) if isinstance(x, ndarray) else x


def _wrap(r):
    """NumPy results as device arrays (0-d for scalars, as CuPy returns them)."""
    if type(r) is np.ndarray:
        return r.view(ndarray)
    if isinstance(r, np.generic):
        return np.asarray(r).view(ndarray)
    if isinstance(r, tuple):
        items = [_wrap(v) for v in r]
        return type(r)(*items) if hasattr(r, "_fields") else tuple(items)
    if isinstance(r, list):
        return [_wrap(v) for v in r]
    return r


def _host_arrays(values, depth=0):
    """NumPy arrays (ndim > 0) among ``values`` (one level into lists/tuples/dicts)."""
    found = []
    for v in values:
        if type(v) is np.ndarray and v.ndim > 0:
            found.append(v)
        elif depth == 0 and isinstance(v, (list, tuple)):
            found += _host_arrays(v, 1)
        elif depth == 0 and isinstance(v, dict):
            found += _host_arrays(list(v.values()), 1)
    return found


def _refuse_host(what, *groups):
    for group in groups:
        host = _host_arrays(group)
        if host:
            raise TypeError(f"emulated CuPy: {what} got a NumPy array {host[0].shape} {host[0].dtype} among device "
                            f"arrays; real CuPy refuses an implicit host/device transfer (use cupy.asarray / .get())")


def _unwrap_all(values):
    if isinstance(values, dict):
        return {k: _unwrap_all(v) for k, v in values.items()}
    if isinstance(values, (list, tuple)) and not hasattr(values, "_fields"):
        return type(values)(_plain(v) if not isinstance(v, (list, tuple)) else _unwrap_all(v) for v in values)
    return _plain(values)


class ndarray(np.ndarray):
    """An emulated ``cupy.ndarray``: host memory, CuPy's class name and module for the dispatcher."""

    __module__ = "cupy._emulated"

    def get(self, stream=None, order="C", out=None, blocking=True):
        host = np.array(self.view(np.ndarray), copy=True, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, arr, stream=None):
        self.view(np.ndarray)[...] = arr

    def __getitem__(self, key):
        r = super().__getitem__(key)
        return np.asarray(r).view(ndarray) if isinstance(r, np.generic) else r

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        outs = kwargs.get("out")
        _refuse_host(f"ufunc {ufunc.__name__}.{method}", inputs, outs or ())
        if outs:
            kwargs["out"] = tuple(_plain(o) for o in outs)
        result = getattr(ufunc, method)(*[_plain(x) for x in inputs], **kwargs)
        if outs:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        _refuse_host(f"numpy.{func.__name__}", args, kwargs)
        out = kwargs.get("out")
        result = func(*_unwrap_all(args), **_unwrap_all(kwargs))
        return out if out is not None and result is not None and isinstance(out, ndarray) else _wrap(result)


def check_guards():
    alive = [r for r in _bases if r() is not None]
    _bases[:] = alive
    for r in alive:
        base = r()
        if base is not None:
            for part in (base[:GUARD], base[-GUARD:]):
                if not np.all(np.isnan(part)):
                    raise AssertionError("emulator: a guard region was written (an out-of-bounds write)")


def _guarded(shape, dtype, fill=None, order="C"):
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape) if isinstance(shape, (tuple, list)) else (int(shape),)
    n = int(np.prod(shape)) if shape else 1
    if dtype.kind == "f" and order in ("C", "K", "A", None):
        base = np.full(n + 2 * GUARD, np.nan, dtype)
        _bases.append(weakref.ref(base))
        a = base[GUARD:GUARD + n].reshape(shape).view(ndarray)
    else:
        a = np.empty(shape, dtype, order="F" if order == "F" else "C").view(ndarray)
    if fill is not None:
        a.view(np.ndarray)[...] = fill
    return a


def _default(dtype):
    return np.float64 if dtype is None else dtype


def empty(shape, dtype=float, order="C"):
    return _guarded(shape, dtype, None, order)


def zeros(shape, dtype=float, order="C"):
    return _guarded(shape, dtype, 0, order)


def ones(shape, dtype=float, order="C"):
    return _guarded(shape, dtype, 1, order)


def full(shape, fill_value, dtype=None, order="C"):
    dtype = np.asarray(_plain(fill_value)).dtype if dtype is None else dtype
    return _guarded(shape, dtype, _plain(fill_value), order)


def _like(fill):
    def like(a, dtype=None, order="K", subok=None, shape=None):
        return _guarded(a.shape if shape is None else shape, a.dtype if dtype is None else dtype, fill)
    return like


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    return _guarded(a.shape if shape is None else shape, a.dtype if dtype is None else dtype, _plain(fill_value))


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray) and (dtype is None or a.dtype == np.dtype(dtype)) and order in (None, "K", "A"):
        return a  # already on the device: no copy, as CuPy
    host = np.asarray(_plain(a), dtype=dtype, order=order)
    out = _guarded(host.shape, host.dtype)
    out.view(np.ndarray)[...] = host
    return out


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if not copy and isinstance(obj, ndarray) and (dtype is None or obj.dtype == np.dtype(dtype)):
        return obj
    host = np.array(_plain(obj), dtype=dtype, ndmin=ndmin)
    out = _guarded(host.shape, host.dtype)
    out.view(np.ndarray)[...] = host
    return out


def ascontiguousarray(a, dtype=None):
    if type(a) is np.ndarray and a.ndim > 0:
        raise TypeError("emulated CuPy: ascontiguousarray of a NumPy array (real CuPy takes device arrays only)")
    a = asarray(a)
    if a.flags.c_contiguous and (dtype is None or a.dtype == np.dtype(dtype)):
        return a
    out = _guarded(a.shape, a.dtype if dtype is None else dtype)
    out.view(np.ndarray)[...] = _plain(a)
    return out


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    host = np.array(a, copy=True, order=order)
    if out is not None:
        out[...] = host
        return out
    return host


def get_array_module(*args):
    import cupy

    return cupy if any(isinstance(a, ndarray) for a in args) else np


class _DeviceUfunc:
    """A NumPy ufunc behaving as CuPy's: device arrays only, device results."""

    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.__doc__ = uf.__doc__

    def __call__(self, *args, **kwargs):
        outs = kwargs.get("out")
        outs = outs if isinstance(outs, tuple) else (() if outs is None else (outs,))
        _refuse_host(f"cupy.{self.__name__}", args, outs)
        if outs:
            kwargs["out"] = tuple(_plain(o) for o in outs)
        result = self._uf(*[_plain(a) for a in args], **kwargs)
        if outs:
            return outs[0] if len(outs) == 1 else outs
        return _wrap(result)

    def __getattr__(self, name):
        return getattr(self._uf, name)


def _device_function(name, func, host_ok=False):
    @functools.wraps(func)
    def run(*args, **kwargs):
        if not host_ok:
            _refuse_host(f"cupy.{name}", args, kwargs)
        out = kwargs.get("out")
        result = func(*_unwrap_all(args), **_unwrap_all(kwargs))
        if out is not None and isinstance(out, ndarray) and result is not None:
            return out
        return _wrap(result)
    return run


# Constructors that build device arrays from host data or from nothing.
_CONSTRUCTORS = {"arange", "eye", "identity", "tri", "tril_indices", "triu_indices", "diag_indices", "indices",
                 "mask_indices", "fromfunction", "fromiter", "bartlett", "blackman", "hamming", "hanning", "kaiser",
                 "asanyarray", "asfortranarray", "require", "asarray_chkfinite"}
_SPECIAL = dict(empty=empty, zeros=zeros, ones=ones, full=full, empty_like=_like(None), zeros_like=_like(0),
                ones_like=_like(1), full_like=full_like, asarray=asarray, array=array,
                ascontiguousarray=ascontiguousarray, asnumpy=asnumpy, get_array_module=get_array_module)


def _install_namespace(cupy):
    for name in dir(cupy):
        if name.startswith("_") or name in _SPECIAL or not hasattr(np, name):
            continue
        obj = getattr(np, name)
        if isinstance(obj, np.ufunc):
            setattr(cupy, name, _DeviceUfunc(obj))
        elif hasattr(obj, "_implementation"):
            setattr(cupy, name, _device_function(name, obj))
        elif name in _CONSTRUCTORS:
            setattr(cupy, name, _device_function(name, obj, host_ok=True))
    for name, f in _SPECIAL.items():
        setattr(cupy, name, f)
    cupy.ndarray = ndarray


# =========================================================================== linear algebra
def _cholesky(a):
    """cuSOLVER's potrf as CuPy calls it: stops at the first non-positive pivot, reporting it only in info.

    With CuPy's default ``linalg="ignore"`` the partial, finite factor comes back as if it were the
    answer; under ``cupyx.errstate(linalg="raise")`` a ``LinAlgError``.
    """
    import cupyx._ufunc_config as config

    _refuse_host("cupy.linalg.cholesky", (a,))
    x = np.array(_plain(a), dtype=np.result_type(a.dtype, np.float32), copy=True)
    n = x.shape[0]
    info = 0
    L = np.tril(x)
    for j in range(n):
        d = L[j, j] - L[j, :j] @ L[j, :j]
        if not d > 0:
            info = j + 1
            break
        L[j, j] = np.sqrt(d)
        L[j + 1:, j] = (L[j + 1:, j] - L[j + 1:, :j] @ L[j, :j]) / L[j, j]
    if info and config.get_config_linalg() == "raise":
        raise np.linalg.LinAlgError(f"Error reported by potrf in cuSOLVER. devInfo = [{info}]. (emulated)")
    return _wrap(np.tril(L))


def _install_linalg(cupy):
    for name in dir(cupy.linalg):
        if name.startswith("_") or not hasattr(np.linalg, name):
            continue
        obj = getattr(np.linalg, name)
        if callable(obj) and not isinstance(obj, type):
            setattr(cupy.linalg, name, _device_function(f"linalg.{name}", obj))
    cupy.linalg.cholesky = _cholesky


def _scalar(v, dtype):
    return np.asarray(_plain(v), dtype=dtype).reshape(())[()]


def _op(a, trans):
    t = {"N": 0, "T": 1, 0: 0, 1: 1}.get(trans)
    if t is None:
        raise TypeError(f"invalid trans (actual: {trans})")
    return a.T if t else a


def _syrk(trans, a, out=None, alpha=1.0, beta=0.0, lower=False):
    """CuPy's cublas.syrk: out := alpha op(a) op(a)^T + beta out on one triangle of out (as indexed)."""
    _refuse_host("cupy.cublas.syrk", (a,), (out,) if out is not None else ())
    assert isinstance(a, ndarray) and a.ndim == 2
    assert a.dtype.char in "fd", "invalid dtype"
    A = _op(_plain(a), trans)
    n = A.shape[0]
    if out is None:
        out = zeros((n, n), dtype=a.dtype)
        beta = 0.0
    assert out.ndim == 2 and out.shape == (n, n) and out.dtype == a.dtype, "syrk: out must be (n, n) of a's dtype"
    t = a.dtype.type
    full_ = _scalar(alpha, a.dtype) * (A @ A.T) + _scalar(beta, a.dtype) * _plain(out)
    mask = np.tril(np.ones((n, n), bool)) if lower else np.triu(np.ones((n, n), bool))
    o = _plain(out)
    o[mask] = full_.astype(t, copy=False)[mask]
    return out


def _gemv(transa, alpha, a, x, beta, y):
    """CuPy's cublas.gemv: y = alpha op(a) x + beta y (in place)."""
    _refuse_host("cupy.cublas.gemv", (a, x, y))
    assert a.ndim == 2 and x.ndim == y.ndim == 1
    assert a.dtype == x.dtype == y.dtype, "gemv: a, x and y must share a dtype"
    # CuPy hands x and y to cuBLAS with increment 1 whatever their strides: a strided vector is misread
    assert x.flags.c_contiguous and y.flags.c_contiguous, "gemv: CuPy passes x and y with stride 1 (not contiguous)"
    A = _op(_plain(a), transa)
    assert x.shape[0] == A.shape[1] and y.shape[0] == A.shape[0]
    yp = _plain(y)
    yp[...] = _scalar(alpha, a.dtype) * (A @ _plain(x)) + _scalar(beta, a.dtype) * yp


def _gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
    """CuPy's cublas.gemm: out = alpha op(a) op(b) + beta out."""
    _refuse_host("cupy.cublas.gemm", (a, b), (out,) if out is not None else ())
    assert a.ndim == b.ndim == 2 and a.dtype == b.dtype
    C = _op(_plain(a), transa) @ _op(_plain(b), transb)
    if out is None:
        out = zeros(C.shape, dtype=a.dtype)
        beta = 0.0
    assert out.shape == C.shape and out.dtype == a.dtype
    o = _plain(out)
    o[...] = _scalar(alpha, a.dtype) * C + _scalar(beta, a.dtype) * o
    return out


def _solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False, check_finite=False):
    from scipy.linalg import solve_triangular

    _refuse_host("cupyx.scipy.linalg.solve_triangular", (a, b))
    return _wrap(solve_triangular(_plain(a), _plain(b), trans=trans, lower=lower, unit_diagonal=unit_diagonal))


def _install_modules(cupy):
    cublas = types.ModuleType("cupy.cublas", "cupy.cublas, emulated: syrk, gemv, gemm")
    cublas.syrk, cublas.gemv, cublas.gemm = _syrk, _gemv, _gemm
    sys.modules["cupy.cublas"] = cublas
    cupy.cublas = cublas
    import cupyx
    import cupyx.scipy

    la = types.ModuleType("cupyx.scipy.linalg", "cupyx.scipy.linalg, emulated: solve_triangular")
    la.solve_triangular = _solve_triangular
    sys.modules["cupyx.scipy.linalg"] = la
    cupyx.scipy.linalg = la


# =========================================================================== cuda runtime
class _Device:
    attributes = {"MultiProcessorCount": 132}
    compute_capability = "90"

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def synchronize(self):
        pass

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    ptr = 0

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _RandomState:
    """``cupy.random.RandomState`` on NumPy's generator of the same name (other streams than CuPy's)."""

    def __init__(self, seed=None):
        self._rs = np.random.RandomState(seed)

    def __getattr__(self, name):
        method = getattr(self._rs, name)

        def draw(*args, dtype=None, **kwargs):
            out = asarray(method(*args, **kwargs))
            return out if dtype is None else out.astype(dtype)
        return draw


class _MemoryPool:
    def free_all_blocks(self, stream=None):
        pass

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0


def _install_cuda(cupy):
    rt = cupy.cuda.runtime
    rt.getDeviceCount = lambda: 1
    rt.getDevice = lambda: 0
    rt.deviceSynchronize = lambda: None
    cupy.cuda.Device = _Device
    cupy.cuda.get_current_stream = lambda *a, **k: _Stream()
    cupy.cuda.Stream = _Stream
    cupy.random.RandomState = _RandomState
    pool = _MemoryPool()
    cupy.get_default_memory_pool = lambda: pool
    cupy.get_default_pinned_memory_pool = lambda: pool


# =========================================================================== kernels
_KERNEL_RE = re.compile(
    r"__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
    r"(?:__launch_bounds__\s*\([^)]*\)\s*)?(\w+)\s*\(([^)]*)\)", re.S)
CTYPE = {"T*": "T*", "T": "T", "i64": "long long", "int": "int", "double": "double",
         "double*": "double*", "i64*": "long long*"}


def _strip_comments(source):
    return re.sub(r"/\*.*?\*/", " ", re.sub(r"//[^\n]*", " ", source), flags=re.S)


def signatures(source):
    """``{kernel: [(C type, parameter name), ...]}`` of the ``__global__`` functions of a source."""
    out = {}
    for name, params in _KERNEL_RE.findall(_strip_comments(source)):
        parsed = []
        for param in params.split(","):
            tokens = [t for t in param.replace("*", " * ").split() if t not in ("const", "__restrict__")]
            parsed.append(("".join(tokens[:-1]), tokens[-1]))
        out[name] = parsed
    return out


def cache_dir():
    d = os.environ.get("FASTOPT_GPU_EMULATOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fastopt", "gpu-emulator")
    os.makedirs(d, exist_ok=True)
    return d


def _wrapper(name, params, T):
    decl = []
    for i, (ct, _) in enumerate(params):
        c = CTYPE[ct].replace("T", T) if ct.startswith("T") else CTYPE[ct]
        decl.append(f"    {c} a{i} = *({c}*)args[{i}];")
    call = ", ".join(f"a{i}" for i in range(len(params)))
    suffix = f"_{T}" if T else ""
    target = f"{name}<{T}>" if T else name
    return ([f'extern "C" int emu_{name}{suffix}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
             f'unsigned bz, void** args) {{'] + decl
            + [f"    return emu::launch(gx, gy, gz, bx, by, bz, [=]{{ {target}({call}); }});", "}"])


def build(filename):
    """Compile ``filename`` with emu.h into a shared library (cached by content); ``(lib, signatures)``."""
    from fastopt.kernels.gpu import _module

    source = _module.read_source(filename)
    sigs = signatures(source)
    templated, plain = _module.KERNELS[filename]
    lines = ['#include "emu.h"', f'#include "{_module.source_path(filename)}"']
    for name in templated:
        for T in ("float", "double"):
            lines += _wrapper(name, sigs[name], T)
    for name in plain:
        lines += _wrapper(name, sigs[name], "")
    code = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "emu.h"), encoding="utf-8") as f:
        header = f.read()
    digest = hashlib.sha1((code + source + header).encode()).hexdigest()[:16]
    d = cache_dir()
    so = os.path.join(d, f"{filename[:-3]}_{digest}.so")
    if not os.path.exists(so):
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=d)
        os.close(fd)
        cpp = tmp[:-3] + ".cpp"
        with open(cpp, "w", encoding="utf-8") as f:
            f.write(code)
        try:
            subprocess.run([os.environ.get("CXX", "g++"), "-O1", "-std=c++17", "-fPIC", "-shared", f"-I{HERE}",
                            "-o", tmp, cpp], check=True)
            os.replace(tmp, so)   # atomic: parallel sessions never load a half-written library
        finally:
            for p in (tmp, cpp):
                if os.path.exists(p):
                    os.remove(p)
    return ctypes.CDLL(so), sigs


@functools.lru_cache(maxsize=None)
def _lib(filename):
    return build(filename)


def get_kernel(filename, name, dtype):
    """The emulated kernel ``name`` of ``filename`` for ``dtype``: ``kernel(grid, block, args)``."""
    from fastopt.kernels.gpu import _module

    lib, sigs = _lib(filename)
    templated, _ = _module.KERNELS[filename]
    T = _module.ctype_of(dtype)
    fn = getattr(lib, f"emu_{name}_{T}" if name in templated else f"emu_{name}")
    fn.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p]
    lib.emu_error.restype = ctypes.c_char_p
    sig = sigs[name]
    t = np.dtype(dtype).type

    def launch(grid, block, args):
        where = f"{filename}:{name}<{T}>"
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        block = tuple(int(b) for b in block) + (1,) * (3 - len(block))
        assert all(g >= 1 for g in grid), f"{where}: grid {grid} has a zero dimension (invalid launch)"
        assert grid[1] <= 65535 and grid[2] <= 65535, f"{where}: grid {grid}"
        assert all(b >= 1 for b in block) and block[0] * block[1] * block[2] <= 1024, f"{where}: block {block}"
        assert len(args) == len(sig), f"{where}: {len(args)} arguments for {len(sig)} parameters"
        keep, ptrs = [], []
        for arg, (ct, pname) in zip(args, sig):
            w = f"{where} parameter {pname} ({ct})"
            if ct.endswith("*"):
                want = {"T*": np.dtype(dtype), "double*": np.dtype(np.float64), "i64*": np.dtype(np.int64)}[ct]
                if type(arg) is np.uint64:
                    assert arg == 0, f"{w}: a non-zero integer as a pointer"
                    v = ctypes.c_void_p(0)
                else:
                    assert type(arg) is ndarray, f"{w}: {type(arg).__module__}.{type(arg).__name__} (a device array " \
                                                 f"is needed)"
                    assert arg.dtype == want, f"{w}: dtype {arg.dtype}"
                    assert arg.flags.c_contiguous, f"{w}: not contiguous"
                    assert arg.size > 0, f"{w}: size-0 array passed (pass a null pointer)"
                    v = ctypes.c_void_p(arg.ctypes.data)
            elif ct == "T":
                assert type(arg) is t, f"{w}: {type(arg)}"
                v = (ctypes.c_float if t is np.float32 else ctypes.c_double)(arg)
            elif ct == "double":
                assert type(arg) is np.float64, f"{w}: {type(arg)}"
                v = ctypes.c_double(arg)
            elif ct == "i64":
                assert type(arg) is np.int64, f"{w}: {type(arg)}"
                v = ctypes.c_longlong(int(arg))
            elif ct == "int":
                assert type(arg) is np.int32, f"{w}: {type(arg)}"
                v = ctypes.c_int(int(arg))
            else:
                raise AssertionError(f"{w}: unknown C type")
            keep.append(v)
            ptrs.append(ctypes.cast(ctypes.pointer(v), ctypes.c_void_p))
        argv = (ctypes.c_void_p * len(ptrs))(*ptrs)
        if fn(*grid, *block, argv):
            raise AssertionError(f"{where}: emulator error: {lib.emu_error().decode()}")
        key = (filename, name, T)
        LAUNCHES[key] = LAUNCHES.get(key, 0) + 1
        check_guards()

    return launch


def grid_size(n, device_id=None):
    assert n >= 1, "grid_size of 0 elements"
    return int(max(1, min(-(-n // 256), MAX_BLOCKS)))


# =========================================================================== pytest hooks
def install():
    """Patch CuPy and fastopt's kernel loader (idempotent)."""
    global _installed
    if _installed:
        return
    import cupy

    from fastopt.kernels.gpu import _module

    _install_cuda(cupy)
    _install_namespace(cupy)
    _install_linalg(cupy)
    _install_modules(cupy)
    _module.get_kernel = get_kernel
    _module.grid_size = grid_size
    _installed = True


def pytest_addoption(parser):
    parser.addoption("--emu-require-all-kernels", action="store_true", default=False,
                     help="gpu emulator: fail unless every kernel of every .cu ran in float32 and float64")


def pytest_configure(config):
    install()


def _expected():
    from fastopt.kernels.gpu import _module

    want = set()
    for filename, (templated, plain) in _module.KERNELS.items():
        for name in templated:
            want |= {(filename, name, T) for T in ("float", "double")}
        for name in plain:
            want.add((filename, name, "float"))   # a plain kernel runs for either dtype
    return want


def _ran():
    from fastopt.kernels.gpu import _module

    ran = set()
    for filename, name, T in LAUNCHES:
        templated, _ = _module.KERNELS[filename]
        ran.add((filename, name, T if name in templated else "float"))
    return ran


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = sorted(_expected() - _ran())
    tr = terminalreporter
    tr.section("gpu emulator")
    tr.write_line(f"kernel launches: {sum(LAUNCHES.values())} of {len(LAUNCHES)} kernel x dtype pairs "
                  f"(libraries in {cache_dir()})")
    if missing:
        tr.write_line("not launched: " + ", ".join(f"{f}:{n}<{T}>" for f, n, T in missing))
        if config.getoption("--emu-require-all-kernels"):
            tr.write_line("FAILED: --emu-require-all-kernels and some kernels never ran", red=True)
    else:
        tr.write_line("every kernel of every .cu ran in float32 and float64")


def pytest_sessionfinish(session, exitstatus):
    if session.config.getoption("--emu-require-all-kernels") and exitstatus == 0 and _expected() - _ran():
        session.exitstatus = 1
