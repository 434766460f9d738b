"""Backend resolution and the kernel registry: fastopt's one door into ``kernels/``.

A public call resolves its backend, in order, from:

1. an explicit ``backend=`` argument;
2. an active ``with fastopt.use_backend(...)`` context;
3. the classes of its arrays: NumPy -> "cpu", CuPy -> "gpu".

Arrays of other frameworks enter zero-copy through DLPack (:func:`as_native`):
a PyTorch CPU tensor becomes a NumPy view of the same memory, a CUDA tensor a
CuPy view. Mixed backends in one call are a ``TypeError`` naming the arrays.

CuPy is never imported to find out what an array is: classes are recognised by
their module name, and the answer is cached per class.
"""
from __future__ import annotations

import contextvars
import importlib
from functools import lru_cache

import numpy as np

#: Backend name -> package of its kernels (one module per family inside).
BACKEND_PACKAGES = {
    "cpu": "fastopt.kernels.cpu",
    "gpu": "fastopt.kernels.gpu",
    "reference": "fastopt.kernels",  # the float64 oracle, one module per group of families below
}
#: The reference backend's module of each family (the others: ``<package>.<family>``).
REFERENCE_MODULES = {"optim": "reference", "fourier": "reference_nn", "mlp": "reference_nn",
                     "gram": "reference_ls", "ls": "reference_ls"}
BACKENDS = tuple(BACKEND_PACKAGES)

_active = contextvars.ContextVar("fastopt_backend", default=None)

_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_HOST, _DLPACK_ROCM, _DLPACK_CUDA_MANAGED = 1, 2, 3, 10, 13


def active_backend():
    """The backend of the innermost ``use_backend`` context, or None."""
    return _active.get()


def check_backend_name(name, where="backend"):
    if name not in BACKEND_PACKAGES:
        raise ValueError(f"{where} must be one of {', '.join(map(repr, BACKENDS))}, got {name!r}")
    return name


@lru_cache(maxsize=None)
def _native_kind(cls) -> str | None:
    """'cpu' for numpy.ndarray, 'gpu' for cupy.ndarray, None for anything else (cached per class)."""
    if cls is np.ndarray:
        return "cpu"
    if cls.__module__.split(".")[0] == "cupy" and cls.__name__ == "ndarray":
        return "gpu"
    return None


def array_module(a):
    """The array module of ``a``: ``cupy`` for a CuPy array, ``numpy`` for anything else.

    Decided by the array's class like :func:`resolve` (cached per class): CuPy is imported only
    when ``a`` is a CuPy array, and a NumPy array costs one type comparison.
    """
    if type(a) is np.ndarray or _native_kind(type(a)) != "gpu":
        return np
    import cupy

    return cupy


def as_native(name: str, x):
    """Return ``(backend, array)``: ``x`` itself if NumPy/CuPy, else a zero-copy DLPack view.

    Tensors that require grad are detached first (the update is then applied to
    the tensor's data, as ``torch.optim`` does under ``no_grad``).
    """
    kind = _native_kind(type(x))
    if kind is not None:
        return kind, x
    if not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"{name} must be a NumPy or CuPy array, or a DLPack-capable tensor; "
                        f"got {type(x).__module__}.{type(x).__name__}")
    if getattr(x, "requires_grad", False):
        x = x.detach()
    device_type = int(x.__dlpack_device__()[0])
    if device_type == _DLPACK_CPU:
        try:
            return "cpu", np.from_dlpack(x)
        except (RuntimeError, BufferError, TypeError) as exc:  # e.g. bfloat16, which NumPy lacks
            raise TypeError(f"{name} must be float32 or float64, got {getattr(x, 'dtype', '?')}, which NumPy "
                            f"cannot view through DLPack ({exc})") from None
    if device_type in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED, _DLPACK_ROCM):
        require_gpu()
        import cupy

        return "gpu", cupy.from_dlpack(x)
    raise TypeError(f"{name} lives on DLPack device type {device_type}, which fastopt does not support")


def resolve(func: str, named_arrays, backend=None):
    """Resolve the backend of one call and bring its arrays to native form.

    Args:
      func: name of the public function (for error messages).
      named_arrays: sequence of ``(name, array)``.
      backend: the explicit ``backend=`` argument, or None.
    Returns:
      ``(backend, [arrays...])`` where arrays are NumPy (cpu/reference) or CuPy (gpu).
    Raises:
      TypeError: arrays of different backends, or arrays that do not match the
        requested backend (fastopt never copies between devices behind your back).
    """
    kinds = []
    arrays = []
    for name, x in named_arrays:
        kind, arr = as_native(f"{func}: {name}", x)
        kinds.append((name, kind, type(x)))
        arrays.append(arr)
    first_name, first_kind, first_cls = kinds[0]
    for name, kind, cls in kinds[1:]:
        if kind != first_kind:
            raise TypeError(f"{func}: arrays from different backends: {first_name} is "
                            f"{first_cls.__module__}.{first_cls.__name__} ({first_kind}) but {name} is "
                            f"{cls.__module__}.{cls.__name__} ({kind}); move them with fastopt.to_backend")
    chosen = backend if backend is not None else _active.get()
    if chosen is None:
        chosen = first_kind
    else:
        check_backend_name(chosen, f"{func}: backend")
        array_kind = "cpu" if chosen == "reference" else chosen
        if array_kind != first_kind:
            raise TypeError(f"{func}: backend {chosen!r} was requested but the arrays are {first_kind} arrays "
                            f"({first_name} is {first_cls.__module__}.{first_cls.__name__}); "
                            f"move them with fastopt.to_backend(x, {array_kind!r})")
    if chosen == "gpu":
        require_gpu()
    return chosen, arrays


@lru_cache(maxsize=None)
def gpu_status() -> tuple[bool, str]:
    """(available, reason): whether the "gpu" backend can run here, and if not, why."""
    try:
        import cupy
    except ImportError as exc:
        return False, (f"CuPy is not installed ({exc}); install it with `pip install fastopt[gpu]` "
                       f"(CUDA 13) or `pip install cupy-cuda12x` (CUDA 12)")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device
        return False, f"CuPy {cupy.__version__} is installed but no CUDA device is usable ({exc})"
    if count < 1:
        return False, f"CuPy {cupy.__version__} is installed but no CUDA device was found"
    return True, f"CuPy {cupy.__version__}, {count} CUDA device(s)"


def require_gpu() -> None:
    ok, reason = gpu_status()
    if not ok:
        raise RuntimeError(f"the 'gpu' backend is not available: {reason}")


@lru_cache(maxsize=None)
def get_kernel(family: str, name: str, backend: str):
    """The kernel ``name`` of ``family`` ("optim", ...) for ``backend``, imported lazily and cached."""
    check_backend_name(backend)
    package = BACKEND_PACKAGES[backend]
    if backend == "reference":
        if family not in REFERENCE_MODULES:
            raise LookupError(f"no kernel family {family!r}; the families are {sorted(REFERENCE_MODULES)}")
        module_name = f"{package}.{REFERENCE_MODULES[family]}"
    else:
        module_name = f"{package}.{family}"
    module = importlib.import_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise LookupError(f"backend {backend!r} has no kernel {family}.{name}") from None
