"""The one Numba decorator of the project, and where its cache lives.

Every CPU kernel is compiled with the same options:

- ``cache=True``: the first call in a new process loads machine code from disk;
- ``error_model="numpy"``: a division by zero gives inf/NaN as in NumPy instead of
  raising, which lets LLVM vectorise divisions (2.5-4.8x faster, measured);
- ``nogil=True``: kernels release the GIL;
- no ``fastmath``: results must match the float64 reference to a few ulps.

``parallel_twin(f)`` compiles the same source a second time with ``parallel=True`` so
that a kernel has a serial version (no thread start-up, for small arrays) and a
``prange`` version (for large ones), without a second copy of its code.

The cache directory: Numba writes next to the sources when it can. An installed,
read-only package would make ``cache=True`` fail at the first call when no other
location is writable, so :func:`choose_cache_dir` picks a writable directory first.

The cache's validity: Numba keys a cached kernel on the hash of *its own* source file, but a
kernel that calls or inlines another module's functions carries their compiled code (``train``
carries ``mlp``'s forward and backward, ``mlp`` and ``fourier`` carry ``_vecmath``'s sin/cos). A
change to ``mlp.py`` alone (an edit, a ``git pull`` into an editable install) left ``train``'s
cached kernel with the old forward, whose workspace layout no longer matched the new front end's:
heap corruption, seen once. So the kernels of this package are keyed on the hash of *every*
source file of the package (:func:`sources_stamp`, through the locators of :func:`_install_locators`):
any change recompiles them all.
"""
from __future__ import annotations

import glob
import hashlib
import os
import tempfile
import types

import numba
from numba.core import caching
from numba.core.compiler_lock import global_compiler_lock

__all__ = ["jit", "parallel_twin", "closed", "admit", "choose_cache_dir", "cache_dir"]

_OPTIONS = dict(cache=True, error_model="numpy", nogil=True)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _writable(path: str) -> bool:
    """True when files can be created in ``path`` (or in its nearest existing parent)."""
    while not os.path.isdir(path):
        if os.path.exists(path):  # a file where a folder is needed
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.access(path, os.W_OK | os.X_OK)


def choose_cache_dir(package_dir: str = _PACKAGE_DIR, environ=os.environ, writable=_writable) -> str | None:
    """Where compiled kernels are cached.

    Returns ``None`` to keep Numba's own choice (``__pycache__`` beside the sources),
    else a directory to use instead, in this order: ``$NUMBA_CACHE_DIR`` if set;
    ``None`` if the package directory is writable; ``$XDG_CACHE_HOME/fastopt/numba``
    (default ``~/.cache``) if writable; a per-user folder in the temporary directory.
    """
    if environ.get("NUMBA_CACHE_DIR"):
        return environ["NUMBA_CACHE_DIR"]
    if writable(os.path.join(package_dir, "__pycache__")):
        return None
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    user_dir = os.path.join(xdg, "fastopt", "numba")
    if writable(user_dir):
        return user_dir
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"fastopt-numba-{uid}")


def _configure_cache() -> str:
    chosen = choose_cache_dir()
    if chosen is None:
        return os.path.join(_PACKAGE_DIR, "__pycache__")
    os.makedirs(chosen, exist_ok=True)
    numba.config.CACHE_DIR = chosen  # read by Numba's user-provided cache locator
    return chosen


cache_dir = _configure_cache()


_STAMPS = {}


def sources_stamp(package_dir: str = _PACKAGE_DIR) -> bytes:
    """The SHA-256 of the contents of every ``*.py`` file of ``package_dir``, in name order (memoised on
    their sizes and modification times): the cache key of every kernel of the package."""
    files = sorted(glob.glob(os.path.join(package_dir, "*.py")))
    key = (package_dir,) + tuple((f, os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    stamp = _STAMPS.get(key)
    if stamp is None:
        digest = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                digest.update(os.path.basename(f).encode() + b"\0" + fh.read() + b"\0")
        stamp = _STAMPS[key] = digest.digest()
    return stamp


class _PackageStamp:
    """A Numba cache locator for this package's files only, keyed on :func:`sources_stamp`."""

    def get_source_stamp(self):
        return sources_stamp(os.path.dirname(self._py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _PACKAGE_DIR:
            return None
        return super().from_function(py_func, py_file)


def _numba(name):
    """A class of ``numba.core.caching`` by its public name (Numba >= 0.61) or its older private one."""
    return getattr(caching, name, None) or getattr(caching, "_" + name)


class _PackageUserProvidedLocator(_PackageStamp, _numba("UserProvidedCacheLocator")):
    """``NUMBA_CACHE_DIR`` / :func:`choose_cache_dir`'s directory."""


class _PackageInTreeLocator(_PackageStamp, _numba("InTreeCacheLocator")):
    """``__pycache__`` beside the sources."""


def _install_locators() -> None:
    """Put the package's locators first in Numba's list, in Numba's own order (a user-provided
    directory before the one beside the sources)."""
    ours = [_PackageUserProvidedLocator, _PackageInTreeLocator]
    classes = _numba("CacheImpl")._locator_classes
    if classes[:2] != ours:
        classes[:0] = ours


_install_locators()


def jit(func=None, *, parallel: bool = False, inline: str = "never", signature=None):
    """``numba.njit`` with the project's options. Usable bare or with keywords."""

    def wrap(f):
        options = dict(_OPTIONS, parallel=parallel, inline=inline)
        if signature is not None:
            return numba.njit(signature, **options)(f)
        return numba.njit(**options)(f)

    return wrap(func) if func is not None else wrap


def parallel_twin(dispatcher):
    """Compile a serial kernel's source again with ``parallel=True``.

    The twin gets its own ``__qualname__`` so that Numba's on-disk cache keeps the
    two builds apart (the cache index does not key on ``parallel``).
    """
    py_func = dispatcher.py_func
    twin = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + "_parallel",
                              py_func.__defaults__, py_func.__closure__)
    twin.__qualname__ = py_func.__qualname__ + "_parallel"
    twin.__doc__ = py_func.__doc__
    twin.__module__ = py_func.__module__
    return jit(twin, parallel=True)


def closed(dispatcher):
    """Stop ``dispatcher`` compiling on call: it then runs only the argument types admitted by
    :func:`admit`, and a call with any other types raises ``TypeError`` in Numba's C dispatcher,
    before the kernel runs.

    This lets a lean Python entry skip its own dtype / dimension / contiguity / writability
    checks: Numba's type match is those checks (a read-only, strided, 2-D or other-dtype array has
    another Numba type), and it costs nothing beyond the call. The flag is Numba's own
    ``_can_compile``, which ``Dispatcher.disable_compile`` sets (that method refuses a dispatcher
    that has no signature yet); ``tests/test_optim_fast_path.py`` checks that it still works.
    """
    dispatcher._can_compile = False
    return dispatcher


def admit(dispatcher, *args):
    """Run a :func:`closed` dispatcher on trusted (validated) ``args``, compiling, or loading from the
    on-disk cache, their specialisation first when it is new to this process.

    The flag is open only while Numba's global compiler lock is held: a call from another thread
    that saw it open then waits for that lock inside Numba's ``compile``, finds the flag closed again
    and raises ``RuntimeError`` (never compiles its own types); the lean paths treat that as a refusal.
    """
    signature = tuple(dispatcher.typeof_pyval(a) for a in args)
    if signature not in dispatcher.overloads:
        with global_compiler_lock:
            dispatcher._can_compile = True
            try:
                dispatcher.compile(signature)
            finally:
                dispatcher._can_compile = False
    return dispatcher(*args)
