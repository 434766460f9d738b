"""Vectorisable sin/cos and tanh for Numba kernels (no libm calls, no data-dependent branches).

Why: Numba lowers ``np.sin``/``np.cos``/``np.tanh`` to libm calls (``sin`` and ``cos`` of one
argument are even merged into one scalar ``sincos`` call); pip's llvmlite has no SVML, so a
loop calling them stays scalar: 0.1-0.2 billion sin/cos pairs per second on 2 threads, 10-30x
slower than the kernels below (``bench/bench_vecmath.py``). The functions below are written with
arithmetic, ``llvm.rint``/``llvm.floor``/``llvm.copysign``/``llvm.fma`` and selects only, so
that LLVM vectorises a loop that calls them (checked in the assembly: packed ``vfmadd...ps`` /
``...pd`` on ``ymm`` registers, LLVM's preferred width on this AVX-512 CPU; see
``tests/test_vecmath.py``).

Use from a kernel (both are inlined at Numba-IR level, so the caller's options apply)::

    s, c = sincos(x)      # float32 -> float32 pair, float64 -> float64 pair
    t = tanh(x)

Both also run from Python on a scalar (through a small compiled wrapper), and the array
kernels :func:`sincos_array` / :func:`tanh_array` fill 1-D output arrays.

sincos(x)
---------
Cody-Waite reduction by pi/2, then the Cephes minimax polynomials on [-pi/4, pi/4]:

- ``a = |x|``; ``q = rint(a * 2/pi)`` (an integer held in a float); ``r = a - q pi/2`` with
  pi/2 split in three parts ``C1 + C2 + C3`` (each the rounding of what the previous parts
  leave) and one ``fma`` per part. The first step is exact (the exact difference fits the
  format for any q below 2^24 / 2^53), so r carries about one rounding error (<= 1 ulp of r);
- ``sin r = r + r z S(z)`` and ``cos r = 1 + z (-1/2 + z C(z))``, ``z = r^2``, with S, C of
  degree 2 (float32) or 5 (float64): Cephes' ``sinf.c``/``sin.c`` coefficients;
- the quadrant ``m = q mod 4``, computed exactly in floating point as ``q - 4 floor(q/4)``
  (no float-to-int conversion: that is poison in LLVM for NaN and inf), picks
  ``(sin, cos) = (s, c), (c, -s), (-s, -c), (-c, s)`` by selects; the sign of x is put back on
  the sine by a multiplication with ``copysign(1, x)``, so ``sin(-x) == -sin(x)`` bit for bit
  and ``sin(-0.0) == -0.0``.

Range and accuracy (measured against NumPy in a wider type, see ``tests/test_vecmath.py``):

====================  ===============================  =====================================
dtype                 |x|                              max error measured
====================  ===============================  =====================================
float32               [0, 1e4], every float32          1.53 ulp (exhaustive)
float32               [1e4, 2^20 = 1048576)            1.87 ulp (1e6 random points/octave)
float64               [0, 1e5]                         1.52 ulp (2e6 random points/decade,
                                                       and 1.8e6 points next to k pi/2)
float64               [1e5, 2^47 ~ 1.4e14)             1.52 ulp (2e6 points/decade to 1e12,
                                                       1e6 points/octave from 2^42)
====================  ===============================  =====================================

Beyond ``SINCOS_MAX_ARG`` (2^20 in float32, 2^47 in float64) both results are **NaN**. There
``rint(a * 2/pi)`` is rounded too coarsely (its error reaches a visible fraction of a quadrant:
6 ulp just above 2^20 in float32, 8 ulp at 2^48 and 4400 ulp at 2^50 in float64, then values of
any size, 1e46 measured at 1e20) and only a Payne-Hanek reduction would do; NumPy/libm compute
those correctly. A NaN that a finiteness check catches beats a silently wrong value; the
Fourier layer needs |x| <= ~1e3. Special values: ``sin(+-0) = +-0``, ``cos(+-0) = 1``; +-inf and
NaN give NaN for both; subnormals give ``sin(x) = x``, ``cos(x) = 1``.

tanh(x)
-------
- float64: ``tanh a = u / (u + 2)`` with ``u = expm1(2a) >= 0`` (a = |x|, 2a clamped at 40,
  where tanh has rounded to 1 since 2a = 38.2). ``expm1`` is vectorised here: ``k = rint(v /
  ln 2)`` by adding 1.5 2^52, a two-part ``ln 2``, ``exp(r) - 1 = r + r^2 g(r)`` with g the
  degree-11 Taylor polynomial on [-ln2/2, ln2/2], 2^k built from the bits of the rounded sum,
  and ``u = 2^k (exp(r) - 1) + (2^k - 1)``. One branch for all x: the two-branch Cephes form
  below (a rational on |x| < 0.625) measured 2x slower in float64 (two divisions, or one with
  selected operands, plus both branches' work), for 1.5 instead of 2.6 ulp.
- float32: Cephes ``tanhf.c``, both branches computed and one selected: ``a + a z P(z)``
  (degree 4, ``z = a^2``) for ``a < 0.625``, else ``(1 - e) / (1 + e)`` with ``e = exp(-2a)``
  (Cephes' ``expf`` polynomial, the 2^k factor folded into two FMAs), 2a clamped at 20. Here
  the expm1 form measured only ~10% faster, for 2.4 instead of 1.5 ulp.
- Measured max error: float32 1.51 ulp (every float32 in [0, 9.5]; beyond, exactly 1);
  float64 2.56 ulp (4e6 random points per interval of [0, 25] and log-uniform down to
  1e-300; the worst near |x| = 0.2, where ``2 (exp(r) - 1) + 1`` cancels a little).
- The sign is put back with ``copysign``: ``tanh(-0.0) = -0.0``, ``tanh(+-inf) = +-1``,
  NaN propagates, subnormals give ``tanh(x) = x``.

Explicit vectors (``Vec``, ``vnative``, ``vload``/``vload_m``, ``vstore``/``vstore_m``, ``vsplat``,
``vfma``, ``vadd``/``vsub``/``vmul``, ``vhsum``): LLVM vector values as a Numba type, for kernels
that must keep a tile of accumulators in registers over a loop whose trip count is a runtime
value (the register-tiled micro-kernels of ``mlp.py``); see the section at the end of this file.

Caching caveat: a kernel in *another* module that inlines these functions is cached by Numba
with no record of this file; after editing this file, clear that module's cache.

References: S. L. Moshier, *Methods and Programs for Mathematical Functions* (1989) and the
Cephes library (sin.c, sinf.c, tanhf.c, expf.c); W. J. Cody and W. Waite, *Software
Manual for the Elementary Functions* (1980), ch. 8 (additive argument reduction).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from ._jit import jit, parallel_twin

__all__ = ["sincos", "tanh", "sincos_array", "tanh_array", "ACCURACY", "SINCOS_MAX_ARG", "PARALLEL_MIN_SIZE",
           "Vec", "VECTOR_BYTES", "vnative", "vlanes", "vzero", "vsplat", "vload", "vload_m", "vstore", "vstore_m",
           "vfma", "vadd", "vsub", "vmul", "vhsum", "prefer_512_bit"]

#: Below this many elements one thread runs the array kernels (measured crossover on the
#: 2-core development machine, under PASSIVE waits and with the other core partly busy: threads
#: win from 2^17 to 2^18 elements, as for the optimiser kernels).
PARALLEL_MIN_SIZE = 1 << 17

#: Max error in ulps measured (function, dtype, |x| range) -> ulps: every float32 where it says
#: "exhaustive", else millions of random points per range (see the docstring's tables).
ACCURACY = {
    ("sin/cos", "float32", "[0, 1e4], exhaustive"): 1.53,
    ("sin/cos", "float32", "[1e4, 2^20)"): 1.87,
    ("sin/cos", "float64", "[0, 1e5]"): 1.52,
    ("sin/cos", "float64", "[1e5, 2^47)"): 1.5,
    ("tanh", "float32", "all, exhaustive"): 1.51,
    ("tanh", "float64", "all"): 2.56,
}


# -- two LLVM operations that Numba does not expose -----------------------------------------

@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (``llvm.fma``: one instruction on any x86-64 with FMA3, AArch64).

    Explicit, not left to ``fastmath``: the reduction's exactness argument needs it, and the
    project compiles without fast-math. On a CPU without FMA, LLVM calls libm's ``fma``
    instead: still correct, but scalar and slow.
    """
    if isinstance(a, types.Float) and a == b == c:
        def codegen(context, builder, sig, args):
            return builder.fma(*args)
        return a(a, b, c), codegen
    return None


@intrinsic
def _pow2_from_rounded(typingctx, t):
    """2**k from ``t = k + 1.5 * 2**52`` (float64) or ``k + 1.5 * 2**23`` (float32).

    Adding that magic constant rounds to an integer and leaves k in the low bits of t, so
    ``(bits(t) + bias) << mantissa_bits`` are the bits of 2**k (valid for normal 2**k). A
    bit cast is defined for every input, NaN included, unlike a float-to-int conversion.
    """
    if t == types.float32:
        width, bias, mant = 32, 127, 23
    elif t == types.float64:
        width, bias, mant = 64, 1023, 52
    else:
        return None

    def codegen(context, builder, sig, args):
        ity = ir.IntType(width)
        bits = builder.bitcast(args[0], ity)
        bits = builder.shl(builder.add(bits, ity(bias)), ity(mant))
        return builder.bitcast(bits, args[0].type)

    return t(t), codegen


# -- constants, typed per precision (a float64 constant would promote a float32 loop) ----------

F32, F64 = np.float32, np.float64

# pi/2 = C1 + C2 + C3 (+ ~2^-160 in float64, ~2^-74 in float32): each part the rounding of the rest
_PIO2_1, _PIO2_2, _PIO2_3 = (F64(float.fromhex(h)) for h in ("0x1.921fb54442d18p+0", "0x1.1a62633145c07p-54",
                                                            "-0x1.f1976b7ed8fbcp-110"))
_PIO2_1F, _PIO2_2F, _PIO2_3F = (F32(float.fromhex(h)) for h in ("0x1.921fb6p+0", "-0x1.777a5cp-25", "-0x1.ee59dap-50"))
_TWO_OVER_PI, _TWO_OVER_PI_F = F64(0.6366197723675814), F32(0.6366197723675814)
#: sin/cos are NaN for |x| above these (see the module docstring: the reduction's limit)
SINCOS_MAX_ARG = {"float32": 2.0**20, "float64": 2.0**47}
_SC_MAX, _SC_MAX_F = F64(SINCOS_MAX_ARG["float64"]), F32(SINCOS_MAX_ARG["float32"])

# Cephes sin.c / cos.c (float64): relative error < 0.07 ulp on |r| <= pi/4
_S64 = tuple(F64(c) for c in (-1.66666666666666307295e-1, 8.33333333332211858878e-3, -1.98412698295895385996e-4,
                              2.75573136213857245213e-6, -2.50507477628578072866e-8, 1.58962301576546568060e-10))
_C64 = tuple(F64(c) for c in (4.16666666666665929218e-2, -1.38888888888730564116e-3, 2.48015872888517045348e-5,
                              -2.75573141792967388112e-7, 2.08757008419747316778e-9, -1.13585365213876817300e-11))
# Cephes sinf.c / cosf.c (float32)
_S32 = tuple(F32(c) for c in (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4))
_C32 = tuple(F32(c) for c in (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5))

# Cephes tanhf.c (float32): tanh a = a + a z P(z)
_TP32 = tuple(F32(c) for c in (-3.33332819422e-1, 1.33314422036e-1, -5.37397155531e-2, 2.06390887954e-2,
                               -5.70498872745e-3))
# exp: ln 2 = L1 + L2; float64: Taylor coefficients 1/n!, n = 2..13, of (e^r - 1 - r) / r^2 (the first
# omitted term, r^14/14! < 5e-18 on |r| <= ln2/2, is < 0.05 ulp of e^r - 1); float32: Cephes expf.c,
# exp r = 1 + r + r^2 E(r)
_LOG2E, _LN2_1, _LN2_2 = F64(1.4426950408889634), F64(0.6931471805599453), F64(2.3190468138462996e-17)
_LOG2E_F, _LN2_1F, _LN2_2F = F32(1.4426950408889634), F32(0.6931472), F32(-1.9046542e-09)
_E64 = tuple(F64(1.0 / float(np.prod(np.arange(1, n + 1, dtype=np.float64)))) for n in range(2, 14))
_E32 = tuple(F32(c) for c in (5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3, 1.3981999507e-3,
                              1.9875691500e-4))
_ROUND64, _ROUND32 = F64(1.5 * 2.0**52), F32(1.5 * 2.0**23)
_TANH_SMALL_F = F32(0.625)
_EXP_ARG_MAX = F64(40.0)  # tanh(20) rounds to 1 in float64
_EXP_ARG_MIN_F = F32(-20.0)  # exp(-20) < 2^-25: tanh(10) rounds to 1 in float32
_TWO, _MINUS_TWO_F = F64(2.0), F32(-2.0)

_HALF, _ONE, _THREE, _FOUR, _QUARTER, _NAN = (F64(v) for v in (0.5, 1.0, 3.0, 4.0, 0.25, np.nan))
_HALF_F, _ONE_F, _THREE_F, _FOUR_F, _QUARTER_F, _NAN_F = (F32(v) for v in (0.5, 1.0, 3.0, 4.0, 0.25, np.nan))
_S0, _S1, _S2, _S3, _S4, _S5 = _S64
_C0, _C1, _C2, _C3, _C4, _C5 = _C64
_S0F, _S1F, _S2F = _S32
_C0F, _C1F, _C2F = _C32
_TP0F, _TP1F, _TP2F, _TP3F, _TP4F = _TP32
_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13 = _E64
_E2F, _E3F, _E4F, _E5F, _E6F, _E7F = _E32


# -- sin and cos ------------------------------------------------------------------------------

@jit(inline="always")
def _by_quadrant(x, q, s, c, one, three, four, quarter):
    """(sin x, cos x) from (s, c) = (sin r, cos r), where |x| = q pi/2 + r and q >= 0 is an integer.

    ``m = q mod 4`` is exact in floating point (no float-to-int conversion); the four cases
    ``(s, c), (c, -s), (-s, -c), (-c, s)`` become selects, the signs multiplications by +-1
    (exact, NaN-preserving); the sine takes the sign of x, which keeps it odd bit for bit.
    """
    m = _fma(-four, np.floor(q * quarter), q)
    odd = (m == one) | (m == three)
    sin_mag = c if odd else s
    cos_mag = s if odd else c
    two = one + one
    sin_sign = -one if m >= two else one
    cos_sign = -one if (m == one) | (m == two) else one
    return sin_mag * (sin_sign * np.copysign(one, x)), cos_mag * cos_sign


@jit(inline="always")
def _sincos_f64(x):
    a = abs(x)
    q = np.rint(a * _TWO_OVER_PI)
    r = _fma(-q, _PIO2_1, a)  # exact
    r = _fma(-q, _PIO2_2, r)
    r = _fma(-q, _PIO2_3, r)
    r = r if a <= _SC_MAX else _NAN  # beyond the reduction's range: NaN, not silent garbage
    z = r * r
    ps = _fma(_fma(_fma(_fma(_S5, z, _S4), z, _S3), z, _S2), z, _S1)
    s = _fma(r * z, _fma(ps, z, _S0), r)
    pc = _fma(_fma(_fma(_fma(_C5, z, _C4), z, _C3), z, _C2), z, _C1)
    c = _fma(z, _fma(z, _fma(pc, z, _C0), -_HALF), _ONE)
    return _by_quadrant(x, q, s, c, _ONE, _THREE, _FOUR, _QUARTER)


@jit(inline="always")
def _sincos_f32(x):
    a = abs(x)
    q = np.rint(a * _TWO_OVER_PI_F)
    r = _fma(-q, _PIO2_1F, a)  # exact
    r = _fma(-q, _PIO2_2F, r)
    r = _fma(-q, _PIO2_3F, r)
    r = r if a <= _SC_MAX_F else _NAN_F
    z = r * r
    s = _fma(r * z, _fma(_fma(_S2F, z, _S1F), z, _S0F), r)
    c = _fma(z, _fma(z, _fma(_fma(_C2F, z, _C1F), z, _C0F), -_HALF_F), _ONE_F)
    return _by_quadrant(x, q, s, c, _ONE_F, _THREE_F, _FOUR_F, _QUARTER_F)


# -- tanh -------------------------------------------------------------------------------------

@jit(inline="always")
def _expm1_f64(v):
    """exp(v) - 1 for v in [0, 40]; NaN gives NaN.

    exp(v) = 2^k exp(r), k = rint(v / ln 2), |r| <= ln2/2; exp(r) - 1 = r + r^2 g(r) with g the
    Taylor polynomial of (e^r - 1 - r) / r^2 to degree 11 (omitted terms < 0.05 ulp);
    then exp(v) - 1 = 2^k (exp(r) - 1) + (2^k - 1), with 2^k - 1 exact and no cancellation
    beyond a factor ~1 (k >= 0).
    """
    t = _fma(v, _LOG2E, _ROUND64)  # k + 1.5 2^52: k = rint(v / ln 2), left in the low bits of t
    k = t - _ROUND64
    r = _fma(-k, _LN2_1, v)
    r = _fma(-k, _LN2_2, r)
    g = _fma(_fma(_fma(_fma(_fma(_fma(_E13, r, _E12), r, _E11), r, _E10), r, _E9), r, _E8), r, _E7)
    g = _fma(_fma(_fma(_fma(_fma(g, r, _E6), r, _E5), r, _E4), r, _E3), r, _E2)
    s = _pow2_from_rounded(t)
    return _fma(_fma(r * r, g, r), s, s - _ONE)


@jit(inline="always")
def _exp_parts_f32(v):
    """(p, s) with exp(v) = p * s, s = 2^k, p = exp(r) in [0.7, 1.42], for v in [-20, 0]; NaN gives NaN.

    Two factors, not their product, so that tanh folds the product into its two FMAs.
    """
    t = _fma(v, _LOG2E_F, _ROUND32)
    k = t - _ROUND32
    r = _fma(-k, _LN2_1F, v)
    r = _fma(-k, _LN2_2F, r)
    p = _fma(_fma(_fma(_fma(_fma(_E7F, r, _E6F), r, _E5F), r, _E4F), r, _E3F), r, _E2F)
    p = _fma(_fma(p, r, _ONE_F), r, _ONE_F)  # 1 + r (1 + r E(r))
    return p, _pow2_from_rounded(t)


@jit(inline="always")
def _tanh_f64(x):
    # tanh a = u / (u + 2), u = expm1(2a) >= 0: one branch, no cancellation (the two-branch form
    # of float32 below measured 2x slower in float64, for 1.5 instead of 2.6 ulp)
    a = abs(x)
    v = a + a
    v = _EXP_ARG_MAX if v > _EXP_ARG_MAX else v  # tanh rounds to 1 from 2a = 38.2; NaN stays NaN
    u = _expm1_f64(v)
    return np.copysign(u / (u + _TWO), x)


@jit(inline="always")
def _tanh_f32(x):
    a = abs(x)
    z = a * a
    t_small = _fma(a * z, _fma(_fma(_fma(_fma(_TP4F, z, _TP3F), z, _TP2F), z, _TP1F), z, _TP0F), a)
    v = a * _MINUS_TWO_F
    v = _EXP_ARG_MIN_F if v < _EXP_ARG_MIN_F else v
    p, s = _exp_parts_f32(v)
    t_large = _fma(-p, s, _ONE_F) / _fma(p, s, _ONE_F)
    return np.copysign(t_small if a < _TANH_SMALL_F else t_large, x)


# -- the public scalar functions: one name, the implementation chosen by the argument's type ------

def sincos(x):
    """(sin x, cos x), vectorisable; float32 in, float32 out; float64 (or a Python float) in, float64 out.

    Inside a Numba kernel the call is inlined (float32 and float64 only; other types do not
    compile); from Python it runs a small compiled wrapper. Accuracy and range: see the module
    docstring (measured <= 1.9 ulp for |x| < 2^20 in float32 and < 2^47 in float64; NaN beyond).

    Example:
        >>> import numpy as np
        >>> s, c = sincos(np.float32(1.0))
        >>> s, c                      # float32 in, float32 out (sin 1 = 0.8414709848...)
        (np.float32(0.841471), np.float32(0.5403023))
        >>> bool(abs(s - np.sin(1.0)) <= 2 * np.spacing(s))  # within 2 ulp
        True
    """
    t = F32 if isinstance(x, np.float32) else F64
    s, c = _sincos_scalar(t(x))
    return t(s), t(c)


def tanh(x):
    """tanh x, vectorisable; float32 in, float32 out; float64 (or a Python float) in, float64 out.

    Measured max error 1.51 ulp (float32, exhaustive) and 2.56 ulp (float64); exactly +-1
    where tanh rounds to +-1. Inlined in Numba kernels like :func:`sincos`.

    Example:
        >>> import numpy as np
        >>> tanh(np.float32(0.5)), tanh(-0.0), tanh(float("inf"))
        (np.float32(0.46211717), np.float64(-0.0), np.float64(1.0))
    """
    t = F32 if isinstance(x, np.float32) else F64
    return t(_tanh_scalar(t(x)))


@overload(sincos, inline="always")
def _sincos_overload(x):
    if x == types.float32:
        def impl(x):
            return _sincos_f32(x)
        return impl
    if x == types.float64:
        def impl(x):
            return _sincos_f64(x)
        return impl
    return None


@overload(tanh, inline="always")
def _tanh_overload(x):
    if x == types.float32:
        def impl(x):
            return _tanh_f32(x)
        return impl
    if x == types.float64:
        def impl(x):
            return _tanh_f64(x)
        return impl
    return None


@jit
def _sincos_scalar(x):
    return sincos(x)


@jit
def _tanh_scalar(x):
    return tanh(x)


# -- array kernels ----------------------------------------------------------------------------

def _by_size(serial):
    """One entry point: the serial kernel below ``PARALLEL_MIN_SIZE`` elements, its threaded twin above."""
    threaded = parallel_twin(serial)

    def run(x, *out):
        return (threaded if x.size >= PARALLEL_MIN_SIZE else serial)(x, *out)

    run.__name__ = serial.py_func.__name__.lstrip("_")
    run.__qualname__ = run.__name__
    run.__doc__ = serial.py_func.__doc__
    run.serial, run.threaded = serial, threaded
    return run


@jit
def _sincos_array(x, out_sin, out_cos):
    """out_sin[i], out_cos[i] = sin x[i], cos x[i] (see :func:`sincos`).

    Args:
        x: 1-D float32 or float64 array (any strides).
        out_sin, out_cos: 1-D arrays of x's dtype and size, written in place (may alias x).
    Returns:
        None. The kernel trusts its inputs (no checks).
    """
    for i in prange(x.size):
        s, c = sincos(x[i])
        out_sin[i] = s
        out_cos[i] = c


@jit
def _tanh_array(x, out):
    """out[i] = tanh x[i] (see :func:`tanh`); 1-D arrays of one dtype and size; out may alias x."""
    for i in prange(x.size):
        out[i] = tanh(x[i])


sincos_array = _by_size(_sincos_array)
tanh_array = _by_size(_tanh_array)


# -- explicit vectors: register-tiled micro-kernels ---------------------------------------------
#
# LLVM's loop vectoriser keeps an accumulator in a register only when it can unroll its loop,
# i.e. for a trip count known at compile time; the widths of a network are runtime values, so a
# hand-written "C += A B" loop over them loads and stores its accumulators on every step. The
# functions below expose LLVM vectors to Numba (a type ``Vec(dtype, lanes)`` whose values are
# ``<lanes x float>`` registers) so that a kernel can hold a tile of C in registers whatever the
# widths, as a BLAS micro-kernel does. Operations are plain LLVM vector instructions (``fma``,
# ``fadd``, masked loads and stores): no fast-math, one rounding per FMA, the same bits on every
# CPU; LLVM legalises a vector wider than the machine's into several registers (``<32 x double>``
# is four zmm registers on AVX-512, eight ymm on AVX2). ``lanes = 0`` is an absent vector: every
# operation on it compiles to nothing, which lets one micro-kernel body serve several column
# widths. Numba does not mark its functions with ``min-legal-vector-width``, so LLVM uses 512-bit
# registers for these explicit vectors on AVX-512 CPUs even where its loop vectoriser prefers
# 256 bits (measured on the development machine: a 4 x 32 register tile runs at the dgemm rate).

class Vec(types.Type):
    """Numba type of an LLVM vector of ``lanes`` elements of ``dtype`` (``lanes = 0``: absent)."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, int(lanes)
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        if fe_type.lanes:
            be = ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes)
        else:
            be = ir.IntType(8)
        super().__init__(dmm, fe_type, be)


#: bytes of the vectors the micro-kernels are built from (a zmm register)
VECTOR_BYTES = 64


@intrinsic
def prefer_512_bit(typingctx):
    """Marks the function being compiled ``"prefer-vector-width"="512"``: LLVM's loop vectoriser then
    uses zmm registers on AVX-512 CPUs, where its default tuning prefers 256 bits (measured: the
    vectorised tanh 0.76 instead of 1.0 ns per float64, 0.41 instead of 0.48 per float32; the same
    bits). A string attribute, ignored by other targets; llvmlite's attribute set only admits a fixed
    list of names, hence ``set.add``."""
    def codegen(context, builder, sig, args):
        try:
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # another llvmlite: only the speed-up is lost
            pass
        return context.get_dummy_value()
    return types.none(), codegen


def _is_vec(*ts):
    return all(isinstance(t, Vec) for t in ts) and len({(t.dtype, t.lanes) for t in ts}) == 1


def _flat_array(a):
    return isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, types.Float)


def _elt_ptr(context, builder, arrty, arr, off):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [off])


def _lane_mask(builder, lanes, n):
    """<lanes x i1>: lane i < n."""
    i64 = ir.IntType(64)
    vt = ir.VectorType(i64, lanes)
    if n.type.width < 64:
        n = builder.sext(n, i64)
    idx = ir.Constant(vt, [i64(i) for i in range(lanes)])
    spl = builder.insert_element(ir.Constant(vt, ir.Undefined), n, ir.IntType(32)(0))
    spl = builder.shuffle_vector(spl, spl, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
    return builder.icmp_signed("<", idx, spl)


def _vsuffix(v):
    return f"v{v.lanes}f{v.dtype.bitwidth}"


def _masked_ptr(builder, p, v, ty):
    """(pointer, name suffix) for ``llvm.masked.load/store``: opaque pointers (LLVM >= 15 in llvmlite) are
    ``.p0``; typed ones (older llvmlite) point to the vector type, ``.p0v8f64``."""
    if getattr(p.type, "is_opaque", False):
        return p, ".p0"
    return builder.bitcast(p, ty.as_pointer()), f".p0{_vsuffix(v)}"


def _dummy(context, v):
    return ir.Constant(context.get_value_type(v), 0 if not v.lanes else None)


@intrinsic
def vnative(typingctx, arr, mult):
    """A zero vector of ``mult`` native vectors (``VECTOR_BYTES`` each) of ``arr``'s dtype; mult a literal int."""
    if isinstance(arr, types.Array) and isinstance(mult, types.IntegerLiteral):
        lanes = mult.literal_value * (VECTOR_BYTES * 8 // arr.dtype.bitwidth)
        vt = Vec(arr.dtype, lanes)

        def codegen(context, builder, sig, args):
            return _dummy(context, vt)
        return vt(arr, mult), codegen
    return None


@intrinsic
def vlanes(typingctx, v):
    """The (compile-time) number of lanes of ``v``, as an int."""
    if isinstance(v, Vec):
        def codegen(context, builder, sig, args):
            return ir.IntType(64)(v.lanes)
        return types.int64(v), codegen
    return None


@intrinsic
def vzero(typingctx, v):
    """0 in every lane of a vector of ``v``'s type."""
    if isinstance(v, Vec):
        def codegen(context, builder, sig, args):
            return _dummy(context, v)
        return v(v), codegen
    return None


@intrinsic
def vsplat(typingctx, v, x):
    """``x`` (cast to the dtype) in every lane of a vector of ``v``'s type."""
    if isinstance(v, Vec) and isinstance(x, (types.Float, types.Integer)):
        def codegen(context, builder, sig, args):
            if not v.lanes:
                return _dummy(context, v)
            ty = context.get_value_type(v)
            xv = context.cast(builder, args[1], sig.args[1], v.dtype)
            e = builder.insert_element(ir.Constant(ty, ir.Undefined), xv, ir.IntType(32)(0))
            return builder.shuffle_vector(e, e, ir.Constant(ir.VectorType(ir.IntType(32), v.lanes), [0] * v.lanes))
        return v(v, x), codegen
    return None


@intrinsic
def vload(typingctx, v, arr, off):
    """The ``lanes`` elements ``arr.flat[off:off + lanes]`` (C-contiguous ``arr`` of v's dtype)."""
    if isinstance(v, Vec) and _flat_array(arr) and arr.dtype == v.dtype and isinstance(off, types.Integer):
        def codegen(context, builder, sig, args):
            if not v.lanes:
                return _dummy(context, v)
            ty = context.get_value_type(v)
            p = builder.bitcast(_elt_ptr(context, builder, arr, args[1], args[2]), ty.as_pointer())
            return builder.load(p, align=v.dtype.bitwidth // 8)
        return v(v, arr, off), codegen
    return None


@intrinsic
def vload_m(typingctx, v, arr, off, n):
    """Lanes i < n from ``arr.flat[off + i]``, the others 0 (and not read)."""
    if (isinstance(v, Vec) and _flat_array(arr) and arr.dtype == v.dtype and isinstance(off, types.Integer)
            and isinstance(n, types.Integer)):
        def codegen(context, builder, sig, args):
            if not v.lanes:
                return _dummy(context, v)
            ty = context.get_value_type(v)
            p, psfx = _masked_ptr(builder, _elt_ptr(context, builder, arr, args[1], args[2]), v, ty)
            m = _lane_mask(builder, v.lanes, args[3])
            fnty = ir.FunctionType(ty, [p.type, ir.IntType(32), m.type, ty])
            fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.{_vsuffix(v)}{psfx}")
            return builder.call(fn, [p, ir.IntType(32)(v.dtype.bitwidth // 8), m, ir.Constant(ty, None)])
        return v(v, arr, off, n), codegen
    return None


@intrinsic
def vstore(typingctx, arr, off, v):
    """``arr.flat[off:off + lanes] = v``."""
    if isinstance(v, Vec) and _flat_array(arr) and arr.dtype == v.dtype and isinstance(off, types.Integer):
        def codegen(context, builder, sig, args):
            if v.lanes:
                p = _elt_ptr(context, builder, arr, args[0], args[1])
                builder.store(args[2], builder.bitcast(p, args[2].type.as_pointer()), align=v.dtype.bitwidth // 8)
            return context.get_dummy_value()
        return types.none(arr, off, v), codegen
    return None


@intrinsic
def vstore_m(typingctx, arr, off, v, n):
    """``arr.flat[off + i] = v[i]`` for lanes i < n (the others untouched)."""
    if (isinstance(v, Vec) and _flat_array(arr) and arr.dtype == v.dtype and isinstance(off, types.Integer)
            and isinstance(n, types.Integer)):
        def codegen(context, builder, sig, args):
            if v.lanes:
                p, psfx = _masked_ptr(builder, _elt_ptr(context, builder, arr, args[0], args[1]), v, args[2].type)
                m = _lane_mask(builder, v.lanes, args[3])
                fnty = ir.FunctionType(ir.VoidType(), [args[2].type, p.type, ir.IntType(32), m.type])
                fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.{_vsuffix(v)}{psfx}")
                builder.call(fn, [args[2], p, ir.IntType(32)(v.dtype.bitwidth // 8), m])
            return context.get_dummy_value()
        return types.none(arr, off, v, n), codegen
    return None


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c per lane, one rounding (``llvm.fma``)."""
    if _is_vec(a, b, c):
        def codegen(context, builder, sig, args):
            if not a.lanes:
                return _dummy(context, a)
            ty = args[0].type
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]),
                                                f"llvm.fma.{_vsuffix(a)}")
            return builder.call(fn, args)
        return a(a, b, c), codegen
    return None


def _vbinop(name):
    def typer(typingctx, a, b):
        if _is_vec(a, b):
            def codegen(context, builder, sig, args):
                if not a.lanes:
                    return _dummy(context, a)
                return getattr(builder, name)(*args)
            return a(a, b), codegen
        return None
    typer.__name__ = "v" + name[1:]
    return intrinsic(typer)


vadd = _vbinop("fadd")
vsub = _vbinop("fsub")
vmul = _vbinop("fmul")


@intrinsic
def vhsum(typingctx, v):
    """The sum of the lanes, pairwise in a fixed order (halves added until one lane is left)."""
    if isinstance(v, Vec):
        def codegen(context, builder, sig, args):
            fty = context.get_value_type(v.dtype)
            if not v.lanes:
                return ir.Constant(fty, 0.0)
            x, n = args[0], v.lanes
            i32 = ir.IntType(32)
            while n > 1:
                h = n // 2
                lo = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, h), list(range(h))))
                hi = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, h), list(range(h, n))))
                x, n = builder.fadd(lo, hi), h
            return builder.extract_element(x, i32(0))
        return v.dtype(v), codegen
    return None

