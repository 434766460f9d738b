"""Every input check of fastopt and every error message, in one place.

A public function validates *before* it touches any buffer, so that a bad call
leaves the caller's arrays byte-for-byte unchanged. Kernels trust their inputs.
Messages name the function and the argument: ``adam_step: m must have the
shape of p (1000,), got (999,)``.

The checks are written for speed as well as clarity: a functional optimiser
step spends its whole overhead budget (about 2 µs) here.
"""
from __future__ import annotations

import math
from numbers import Real

import numpy as np

_FLOAT_CHARS = "fd"  # float32, float64


def _where(func: str, name: str) -> str:
    return f"{func}: {name}" if func else name


def hyper(func: str, name: str, value, *, low=None, high=None, low_open=False, high_open=False,
          allow_int=True) -> float:
    """A finite real hyperparameter within [low, high] (or open ends); returned as float."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{_where(func, name)} must be a real number, got {type(value).__name__}")
    try:
        x = float(value)
    except OverflowError:
        raise ValueError(f"{_where(func, name)} must be finite, got an integer too large for a float") from None
    if not math.isfinite(x):
        raise ValueError(f"{_where(func, name)} must be finite, got {x}")
    if low is not None and (x < low or (low_open and x == low)):
        raise ValueError(f"{_where(func, name)} must be {'>' if low_open else '>='} {low}, got {x}")
    if high is not None and (x > high or (high_open and x == high)):
        raise ValueError(f"{_where(func, name)} must be {'<' if high_open else '<='} {high}, got {x}")
    return x


# The checks below test the common case (a Python float in range) first and leave
# everything else, and every message, to ``hyper``.

def beta(func: str, name: str, value) -> float:
    """A decay rate in [0, 1)."""
    if type(value) is float and 0.0 <= value < 1.0:
        return value
    return hyper(func, name, value, low=0.0, high=1.0, high_open=True)


def positive(func: str, name: str, value) -> float:
    """A finite number > 0."""
    if type(value) is float and 0.0 < value < math.inf:
        return value
    return hyper(func, name, value, low=0.0, low_open=True)


def nonnegative(func: str, name: str, value) -> float:
    """A finite number >= 0."""
    if type(value) is float and 0.0 <= value < math.inf:
        return value
    return hyper(func, name, value, low=0.0)


def step_count(func: str, value) -> int:
    """The 1-based index of the update being taken (an int >= 1)."""
    if type(value) is int and value >= 1:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{_where(func, 'step')} must be an int >= 1, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{_where(func, 'step')} must be >= 1 (the first update is step 1), got {value}")
    return int(value)


def integer(func: str, name: str, value, minimum: int) -> int:
    """An int >= ``minimum``; floats such as 100.0 and bools are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{_where(func, name)} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{_where(func, name)} must be >= {minimum}, got {value!r}")
    return int(value)


def boundaries(func: str, name: str, values, minimum: int) -> tuple:
    """Strictly increasing ints >= ``minimum``, in the order given."""
    out = []
    for i, b in enumerate(values):
        v = integer(func, f"{name}[{i}]", b, minimum)
        if out and v <= out[-1]:
            raise ValueError(f"{_where(func, name)} must be strictly increasing, got {out[-1]} then {v}")
        out.append(v)
    return tuple(out)


def flag(func: str, name: str, value) -> bool:
    if value is True or value is False:
        return value
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_where(func, name)} must be a bool, got {type(value).__name__}")
    return bool(value)


def float_array(func: str, name: str, a, *, writable: bool):
    """A C-contiguous float32/float64 array (NumPy or CuPy), writable if it is an output."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or not hasattr(a, "flags"):
        raise TypeError(f"{_where(func, name)} must be an array, got {type(a).__name__}")
    if dtype.char not in _FLOAT_CHARS:
        raise TypeError(f"{_where(func, name)} must be float32 or float64, got {dtype}")
    if not dtype.isnative:
        raise TypeError(f"{_where(func, name)} must be in the machine's byte order, got {dtype.str}; "
                        f"convert it with a.astype(a.dtype.newbyteorder('='))")
    flags = a.flags
    if not flags.c_contiguous:
        raise ValueError(f"{_where(func, name)} must be C-contiguous; fastopt never updates a hidden copy "
                         f"(pass a contiguous array, e.g. a FlatParams buffer)")
    if writable and not getattr(flags, "writeable", True):  # CuPy arrays have no read-only flag
        raise ValueError(f"{_where(func, name)} is read-only but is updated in place")


def same_layout(func: str, ref_name: str, ref, name: str, a) -> None:
    """``a`` has the dtype and shape of ``ref``."""
    if a.dtype != ref.dtype:
        raise TypeError(f"{_where(func, name)} must have the dtype of {ref_name} ({ref.dtype}), got {a.dtype}")
    if a.shape != ref.shape:
        raise ValueError(f"{_where(func, name)} must have the shape of {ref_name} {ref.shape}, got {a.shape}")


def no_aliasing(func: str, named_arrays) -> None:
    """No two of the arrays overlap in memory (``p is m``, or views of one buffer that overlap).

    Two distinct arrays that each own their memory cannot overlap, which settles the
    common case without the costlier bounds test.
    """
    items = list(named_arrays)
    for i, (name_a, a) in enumerate(items):
        if a.size == 0:
            continue
        for name_b, b in items[i + 1:]:
            if b.size == 0:
                continue
            if a is b:
                raise ValueError(f"{func}: {name_a} and {name_b} are the same array; each must have its own memory")
            if type(a) is np.ndarray and type(b) is np.ndarray and a.flags.owndata and b.flags.owndata:
                continue
            if _may_overlap(a, b):
                raise ValueError(f"{func}: {name_a} and {name_b} overlap in memory; each must have its own memory")


def _may_overlap(a, b) -> bool:
    if type(a) is np.ndarray:
        return bool(np.may_share_memory(a, b))
    import cupy  # only reached with CuPy arrays in play

    return bool(cupy.may_share_memory(a, b))


class Segments:
    """Validated segment offsets ``0 = b[0] <= b[1] <= ... <= b[-1] = n`` (parameter groups).

    Build it once and pass it as ``segments=`` to every step of a training loop: the
    offsets are then not checked again (only their total against ``p.size``).
    ``bounds`` is a read-only int64 array.

    Example:
      >>> from fastopt.optim import Segments
      >>> Segments([0, 6, 6, 9]).n_segments
      3
    """

    __slots__ = ("bounds",)

    def __init__(self, offsets):
        bounds = _offsets("Segments", "offsets", offsets)
        bounds.flags.writeable = False
        self.bounds = bounds

    @property
    def n(self) -> int:
        return int(self.bounds[-1])

    @property
    def n_segments(self) -> int:
        return self.bounds.size - 1

    def __repr__(self) -> str:
        return f"Segments({self.bounds.tolist()})"


def segments(func: str, value, n: int) -> np.ndarray:
    """Read-only int64 offsets from a :class:`Segments` or a sequence, ending at ``n``."""
    if type(value) is Segments:
        if value.n != n:
            raise ValueError(f"{_where(func, 'segments')} cover {value.n} elements but p.size is {n}")
        return value.bounds
    bounds = _offsets(func, "segments", value, n)
    bounds.flags.writeable = False  # one kernel specialisation: offsets are always read-only
    return bounds


def _offsets(func: str, name: str, bounds, n=None) -> np.ndarray:
    """Int offsets: a 1-D sequence starting at 0, non-decreasing (ending at ``n`` if given), as new int64."""
    try:
        b = np.asarray(bounds)
    except Exception as exc:  # pragma: no cover - exotic input
        raise TypeError(f"{_where(func, name)} must be a sequence of ints") from exc
    if b.ndim != 1 or b.size < 2 or b.dtype.kind not in "iu":
        raise TypeError(f"{_where(func, name)} must be a 1-D sequence of at least two ints "
                        f"(offsets 0 = b[0] <= ... <= b[-1] = n), got {bounds!r}")
    if b[0] != 0 or np.any(np.diff(b) < 0) or (n is not None and b[-1] != n):
        end = "" if n is None else f" and end at p.size = {n}"
        raise ValueError(f"{_where(func, name)} must start at 0, be non-decreasing{end}, got {b.tolist()}")
    return np.array(b, dtype=np.int64)  # a copy: the caller's array is never frozen or kept


def per_segment(func: str, name: str, value, n_segments: int, check) -> list[float]:
    """A hyperparameter given once (float) or per segment (sequence of floats)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
        if len(values) != n_segments:
            raise ValueError(f"{_where(func, name)} has {len(values)} values for {n_segments} segments")
        return [check(func, f"{name}[{i}]", x) for i, x in enumerate(values)]
    return [check(func, name, value)] * n_segments


def grad_scale(func: str, value) -> float:
    return positive(func, "grad_scale", value)


def max_grad_norm(func: str, value):
    return None if value is None else positive(func, "max_grad_norm", value)


# =========================================================================== networks ("fourier", "mlp")
#: Derivative order -> number of channels for input dimension d: u; u, grad u; u, grad u, Laplacian.
def n_channels(order: int, d: int) -> int:
    return 1 if order == 0 else (1 + d if order == 1 else 2 + d)


def derivative_order(func: str, value) -> int:
    """The derivative channels wanted: 0 (value), 1 (+ gradient) or 2 (+ gradient and Laplacian)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) not in (0, 1, 2):
        raise ValueError(f"{_where(func, 'order')} must be 0 (u), 1 (u and its gradient) or 2 "
                         f"(u, gradient and Laplacian), got {value!r}")
    return int(value)


def all_finite(func: str, name: str, a) -> None:
    """Every entry of ``a`` is finite (one pass; NumPy or CuPy)."""
    if a.size == 0:
        return
    if type(a) is np.ndarray:
        ok = bool(np.isfinite(a).all())
    else:  # CuPy: the same reduction on the device (one synchronisation)
        ok = _cupy_isfinite_all(a)
    if not ok:
        raise ValueError(f"{_where(func, name)} holds NaN or inf values; fastopt computes nothing from them")


def _cupy_isfinite_all(a) -> bool:
    import cupy  # only reached with CuPy arrays in play

    return bool(cupy.isfinite(a).all())


def points(func: str, name: str, x, d: int, dtype) -> None:
    """Input points: a finite, C-contiguous ``(J, d)`` array of the network's dtype."""
    float_array(func, name, x, writable=False)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"{_where(func, name)} must have shape (J, {d}) (points x input dimension {d}), "
                         f"got {tuple(x.shape)}")
    if x.dtype != dtype:
        raise TypeError(f"{_where(func, name)} must have the network's dtype {np.dtype(dtype)}, got {x.dtype}; "
                        f"convert it with x.astype(np.{np.dtype(dtype)})")
    all_finite(func, name, x)


def array_of(func: str, name: str, a, shape: tuple, dtype, *, writable: bool, finite: bool = False) -> None:
    """A C-contiguous array of exactly this shape and dtype (an output if ``writable``)."""
    float_array(func, name, a, writable=writable)
    if a.dtype != dtype:
        raise TypeError(f"{_where(func, name)} must have dtype {np.dtype(dtype)}, got {a.dtype}")
    if tuple(a.shape) != tuple(shape):
        raise ValueError(f"{_where(func, name)} must have shape {tuple(shape)}, got {tuple(a.shape)}")
    if finite:
        all_finite(func, name, a)


# =========================================================================== least squares ("gram") and quadrature
# The checks of fastopt.ls and fastopt.quadrature. Inputs (rows, weights, y, A, b) may have any
# strides (they are only read); outputs must be C-contiguous and writable (``array_of``).
LS_METHODS = ("auto", "cholesky", "eigh")


def ls_input(func: str, name: str, a, ndim: int, what: str) -> None:
    """A float32/float64 input array with ``ndim`` dimensions (``what`` describes the shape)."""
    dtype = getattr(a, "dtype", None)
    if dtype is None or not hasattr(a, "shape"):
        raise TypeError(f"{_where(func, name)} must be an array, got {type(a).__name__}")
    if dtype.char not in _FLOAT_CHARS:
        raise TypeError(f"{_where(func, name)} must be float32 or float64, got {dtype}")
    if not dtype.isnative:
        raise TypeError(f"{_where(func, name)} must be in the machine's byte order, got {dtype.str}")
    if a.ndim != ndim:
        raise ValueError(f"{_where(func, name)} must have shape {what}, got {tuple(a.shape)}")


def ls_finite(func: str, name: str, a) -> None:
    """Every entry of ``a`` is finite. One pass of ``sum`` first (no temporary of ``a``'s size, unlike
    ``isfinite``); only when the sum is not finite does :func:`all_finite` look element by element
    (a sum of huge finite values may overflow: those are accepted)."""
    if a.size == 0:
        return
    if math.isfinite(float(a.sum(dtype=np.float64))):
        return
    all_finite(func, name, a)


def ls_rows(func: str, name: str, rows, *, check_finite: bool) -> tuple:
    """Rows ``(J, N)`` of the LS system with N >= 1; returns ``(J, N)``."""
    ls_input(func, name, rows, 2, "(J, N) (points x basis functions)")
    if rows.shape[1] < 1:
        raise ValueError(f"{_where(func, name)} must have at least one column (basis function), got shape "
                         f"{tuple(rows.shape)}")
    if check_finite:
        ls_finite(func, name, rows)
    return tuple(rows.shape)


def ls_weights(func: str, weights, J: int, *, check_finite: bool):
    """Quadrature/loss weights: None (1/J each), one number >= 0 for every row, or an array ``(J,)`` >= 0.

    Returns the kernel's float64 weight vector: ``(J,)``, or ``(1,)`` for one weight for every row.
    NumPy or CuPy, as given (a Python scalar or None gives NumPy).
    """
    if weights is None:
        return np.array([1.0 / J if J else 0.0])
    if getattr(weights, "ndim", None) == 0 and getattr(weights, "dtype", np.dtype(object)).kind in "fiu":
        weights = weights.item()  # a 0-d array is one number
    if isinstance(weights, (Real, np.floating, np.integer)) and not isinstance(weights, bool):
        return np.array([nonnegative(func, "weights", weights)])
    if isinstance(weights, bool):
        raise TypeError(f"{_where(func, 'weights')} must be None, a number >= 0 or an array of shape ({J},), "
                        f"got bool")
    dtype = getattr(weights, "dtype", None)
    if dtype is None or dtype.kind not in "fiu" or getattr(weights, "ndim", None) != 1:
        what = f"{type(weights).__name__} of dtype {dtype}" if dtype is not None else type(weights).__name__
        raise TypeError(f"{_where(func, 'weights')} must be None, a number >= 0 or a 1-D real array of shape "
                        f"({J},), got {what}")
    if weights.shape[0] != J:
        raise ValueError(f"{_where(func, 'weights')} must have shape ({J},) (one weight per row), "
                         f"got {tuple(weights.shape)}")
    w = weights.astype(np.float64, copy=False)
    if J == 0:
        return w
    if check_finite:
        ls_finite(func, "weights", w)
    low = float(w.min())
    if not low >= 0.0:  # NaN reaches here only with check_finite=False
        raise ValueError(f"{_where(func, 'weights')} must be >= 0 (W = diag(w) weighs squared residuals; "
                         f"a negative weight makes the loss unbounded below), got a minimum of {low}")
    return w


def ls_rhs(func: str, y, J: int, *, check_finite: bool) -> None:
    """The right-hand side ``y`` of shape ``(J,)``."""
    ls_input(func, "y", y, 1, f"({J},)")
    if y.shape[0] != J:
        raise ValueError(f"{_where(func, 'y')} must have shape ({J},) (one value per row), got {tuple(y.shape)}")
    if check_finite:
        ls_finite(func, "y", y)


def ls_dtype(func: str, dtype) -> np.dtype:
    """The accumulation dtype of a Gram system: float64 (default) or float32."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{_where(func, 'dtype')} must be float32 or float64, got {dtype!r}") from None
    if dt.char not in _FLOAT_CHARS:
        raise TypeError(f"{_where(func, 'dtype')} must be float32 or float64, got {dt}")
    return dt


def tile_rows(func: str, tile) -> int:
    """Rows per tile of a Gram assembly: an int >= 1."""
    return integer(func, "tile", tile, 1)


def ls_system(func: str, A, b) -> int:
    """``A`` square ``(N, N)``, symmetric, finite; ``b`` ``(N,)`` finite; N >= 1. Returns N.

    Symmetric means ``max|A - A^T| <= sqrt(eps) max|A|`` (eps of A's dtype): rounding in an
    assembly that did not symmetrise passes, a matrix that is not a Gram matrix does not.
    """
    ls_input(func, "A", A, 2, "(N, N)")
    N = A.shape[0]
    if A.shape[1] != N or N < 1:
        raise ValueError(f"{_where(func, 'A')} must be a square (N, N) matrix with N >= 1, got {tuple(A.shape)}")
    ls_input(func, "b", b, 1, f"({N},)")
    if b.shape[0] != N:
        raise ValueError(f"{_where(func, 'b')} must have shape ({N},) to match A {tuple(A.shape)}, "
                         f"got {tuple(b.shape)}")
    scale = float(abs(A).max())
    if not math.isfinite(scale):  # NaN and inf reach the max: only then the element-wise check (message)
        all_finite(func, "A", A)
    all_finite(func, "b", b)
    asym = float(abs(A - A.T).max())
    if asym > math.sqrt(float(np.finfo(A.dtype).eps)) * scale:
        raise ValueError(f"{_where(func, 'A')} must be symmetric (a Gram matrix), but max|A - A^T| = {asym:.3g} "
                         f"with max|A| = {scale:.3g}")
    return N


def ls_method(func: str, method) -> str:
    if method not in LS_METHODS:
        raise ValueError(f"{_where(func, 'method')} must be one of {', '.join(map(repr, LS_METHODS))}, "
                         f"got {method!r}")
    return method


def ls_rcond(func: str, rcond):
    """None (the default cut) or a relative eigenvalue cut-off in [0, 1)."""
    return None if rcond is None else hyper(func, "rcond", rcond, low=0.0, high=1.0, high_open=True)


def operator_channels(func: str, channels, coef) -> tuple:
    """Basis channels ``(C, J, N)`` and operator coefficients ``(C, J)`` or ``(C,)``; returns ``(C, J, N)``."""
    ls_input(func, "channels", channels, 3, "(C, J, N) (channels x points x basis functions)")
    C, J, N = channels.shape
    if C < 1:
        raise ValueError(f"{_where(func, 'channels')} must have at least one channel, got {tuple(channels.shape)}")
    ls_input(func, "coef", coef, coef.ndim if coef.ndim in (1, 2) else 2, f"({C}, {J}) or ({C},)")
    if coef.shape not in ((C, J), (C,)):
        raise ValueError(f"{_where(func, 'coef')} must have shape ({C}, {J}) (one coefficient per channel and "
                         f"point) or ({C},) (the same at every point), got {tuple(coef.shape)}")
    all_finite(func, "channels", channels)
    all_finite(func, "coef", coef)
    return C, J, N


# --------------------------------------------------------------------------- quadrature
def quad_box(func: str, a, b, counts=None) -> tuple:
    """The box ``[a, b]`` (numbers, or sequences of one entry per dimension) as float64 arrays ``(d,)``.

    The dimension d is the longest of ``a``, ``b`` and ``counts`` (a length-1 entry broadcasts).
    """
    arrays = []
    for name, v in (("a", a), ("b", b)):
        try:
            x = np.atleast_1d(np.asarray(v, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{_where(func, name)} must be a number or a sequence of numbers, got {v!r}") from None
        if x.ndim != 1 or x.size < 1:
            raise ValueError(f"{_where(func, name)} must be a number or a 1-D sequence of numbers, got {v!r}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{_where(func, name)} must be finite, got {v!r}")
        arrays.append(x)
    lengths = {x.size for x in arrays} | ({len(counts)} if counts is not None else set())
    d = max(lengths)
    if lengths - {1, d}:
        raise ValueError(f"{func}: a, b (and the per-dimension counts) must have one entry per dimension or a "
                         f"single one, got lengths {sorted(lengths)}")
    lo, hi = (np.broadcast_to(x, (d,)).copy() for x in arrays)
    if not np.all(lo < hi):
        raise ValueError(f"{func}: the box needs a < b in every dimension, got a = {lo.tolist()}, b = {hi.tolist()}")
    return lo, hi


def quad_counts(func: str, name: str, n) -> tuple:
    """A count >= 1 per dimension: an int (every dimension) or a sequence of ints."""
    if isinstance(n, (list, tuple)):
        if not n:
            raise ValueError(f"{_where(func, name)} must not be empty")
        return tuple(integer(func, f"{name}[{i}]", v, 1) for i, v in enumerate(n))
    return (integer(func, name, n, 1),)


def quad_rng(func: str, rng):
    """A NumPy Generator from a Generator, an int seed or None (fresh entropy)."""
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if isinstance(rng, bool) or not isinstance(rng, (int, np.integer, np.random.SeedSequence,
                                                     np.random.BitGenerator)):
        raise TypeError(f"{_where(func, 'rng')} must be a numpy.random.Generator, an int seed or None, "
                        f"got {type(rng).__name__}")
    if isinstance(rng, (int, np.integer)) and rng < 0:
        raise ValueError(f"{_where(func, 'rng')} must be a non-negative seed, got {rng}")
    return np.random.default_rng(rng)


def strata_per_dim(func: str, J: int, d: int, antithetic: bool) -> int:
    """Strata per dimension m of a stratified rule with J points: J = (2 if antithetic else 1) m^d."""
    per = 2 if antithetic else 1
    if J % per:
        raise ValueError(f"{_where(func, 'J')} must be even with antithetic=True (each stratum holds a point "
                         f"and its mirror image), got {J}")
    cells = J // per
    m = int(round(cells ** (1.0 / d)))
    for cand in (m - 1, m, m + 1):
        if cand >= 1 and cand ** d == cells:
            return cand
    raise ValueError(f"{_where(func, 'J')} must be {'2 ' if per == 2 else ''}m^{d} for an integer m (m^{d} equal "
                     f"strata of the {d}-D box{', two points each' if per == 2 else ''}), got {J}")
