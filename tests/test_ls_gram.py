r"""Gram assembly (``fastopt.ls.gram``, ``GramAccumulator``) and operator rows on the CPU against the float64 reference.

The CPU kernels (``kernels/cpu/gram.py``: BLAS ``syrk`` on ``sqrt(w)``-scaled tiles, a Numba loop
for the operator rows) are compared with the explicit NumPy oracle (``kernels/reference_ls.py``)
for float32 and float64 rows, J not a multiple of the tile, J = 0, J < N (rank-deficient), N in
{1, 7, 64}, weights None / one number / one per row, y None / given.

Tolerances: worst-case bounds, element by element. Every entry of ``A`` (and of ``b``) is a sum of J
products ``r_ji r_jk`` with ``r_j = fl(fl(sqrt(w_j)) x_j)`` formed in float64 (float32 rows are
upcast exactly); each factor carries at most two roundings, a product of two factors at most
five, and a sum of J terms in any order adds ``gamma_(J-1)`` (Higham, *Accuracy and Stability*,
eq. 3.5 and 4.4), so::

    |A - A_ref| <= (J + 5) eps_64 (|Phi|^T W |Phi|),     likewise b with |y| and ywy with y^2.

This is float64 accuracy whatever the rows' dtype: a float32 accumulation would miss it by a
factor ~1e8 (``test_float32_rows_accumulate_in_float64`` checks both sides). The reference is
itself off by such a bound; the check allows twice the bound.
"""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from fastopt import ls
from fastopt.kernels import reference_ls as ref
from fastopt.kernels.cpu import gram as cpu
from tests.conftest import assert_within, gram_bounds, reference_system, tile_problem, w_vector, weights_for

F32, F64 = np.float32, np.float64
EPS64 = float(np.finfo(F64).eps)
TILE = 128


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(("ls_gram",) + key).encode()))


# --------------------------------------------------------------------------- gram vs reference
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("J", [0, 1, 5, 300, 1000])
@pytest.mark.parametrize("N", [1, 7, 64])
@pytest.mark.parametrize("wmode", ["none", "scalar", "array"])
@pytest.mark.parametrize("with_y", [False, True], ids=["no_y", "y"])
def test_gram_matches_reference(dtype, J, N, wmode, with_y):
    rng = _rng(dtype.__name__, J, N, wmode, with_y)
    Phi = rng.standard_normal((J, N)).astype(dtype)
    y = rng.standard_normal(J).astype(dtype) if with_y else None
    weights = weights_for(wmode, J, rng)
    s = ls.gram(Phi, weights, y, tile=TILE)
    wv = w_vector(wmode, weights, J)
    A_ref, b_ref, ywy_ref = reference_system(Phi, wv, y)
    bA, bb, bywy = gram_bounds(Phi, wv, y)
    assert s.A.dtype == F64 and s.A.shape == (N, N) and s.n_rows == J
    assert np.array_equal(s.A, s.A.T), "A must be exactly symmetric"
    assert_within(s.A, A_ref, bA, "A")
    if with_y:
        assert s.b.dtype == F64 and s.b.shape == (N,)
        assert_within(s.b, b_ref, bb, "b")
        assert abs(s.ywy - ywy_ref) <= 2 * bywy + 1e-300
    else:
        assert s.b is None and s.ywy == 0.0
    if J == 0:
        assert not s.A.any() and (s.b is None or not s.b.any())
    # the public reference backend is the same oracle
    s_ref = ls.gram(Phi, weights, y, tile=TILE, backend="reference")
    assert_within(s_ref.A, A_ref, bA, "reference backend A", k=0.0)


@pytest.mark.parametrize("J,N", [(3, 7), (10, 64)])
def test_fewer_points_than_functions_is_rank_deficient(J, N):
    rng = _rng("rankdef", J, N)
    Phi = rng.standard_normal((J, N))
    s = ls.gram(Phi, tile=4)
    assert np.linalg.matrix_rank(s.A) == J
    lam = np.linalg.eigvalsh(s.A)
    assert lam[: N - J].max() <= 100 * N * EPS64 * lam[-1]  # the null space is there, to rounding


def test_weights_are_the_quadrature_weights():
    """sum_j w_j Phi_j Phi_j^T with W diag: one weight per row, None = 1/J, a number for every row."""
    rng = _rng("weights")
    Phi = rng.standard_normal((37, 3))
    w = rng.uniform(0, 1, 37)
    explicit = sum(w[j] * np.outer(Phi[j], Phi[j]) for j in range(37))
    assert np.allclose(ls.gram(Phi, w).A, explicit, rtol=1e-13, atol=0)
    assert np.allclose(ls.gram(Phi).A, Phi.T @ Phi / 37, rtol=1e-13, atol=0)
    assert np.allclose(ls.gram(Phi, 2.5).A, 2.5 * Phi.T @ Phi, rtol=1e-13, atol=0)
    assert np.allclose(ls.gram(Phi, np.ones(37, np.int64)).A, Phi.T @ Phi, rtol=1e-13, atol=0)


def test_loss_from_the_system_equals_the_weighted_residual():
    rng = _rng("loss")
    Phi, y, w = rng.standard_normal((200, 5)), rng.standard_normal(200), rng.uniform(0, 1, 200)
    c = rng.standard_normal(5)
    s = ls.gram(Phi, w, y)
    direct = float(w @ (Phi @ c - y) ** 2)
    assert s.loss(c) == pytest.approx(direct, rel=1e-12)
    assert s.ywy == pytest.approx(float(w @ y**2), rel=1e-14)


# --------------------------------------------------------------------------- float64 accumulation
def test_float32_rows_accumulate_in_float64():
    """float32 rows: A agrees with float64 arithmetic on the same float32 data to the float64 bound;
    a float32 accumulator (dtype=float32, ssyrk) is float32-accurate only."""
    rng = _rng("f32acc")
    J, N = 20000, 16
    x = np.linspace(0.0, 1.0, J)[:, None]
    Phi = np.tanh(x * rng.standard_normal((1, N)) * 3 + rng.standard_normal(N)).astype(F32)  # correlated basis
    w = rng.uniform(0.5, 1.5, J).astype(F32)
    wv = w.astype(F64)
    A_ref, _, _ = reference_system(Phi, wv, None)
    bA, _, _ = gram_bounds(Phi, wv, None)
    s = ls.gram(Phi, w)
    assert s.A.dtype == F64
    assert_within(s.A, A_ref, bA, "float64 accumulation of float32 rows")
    scale = np.abs(A_ref).max()
    assert np.abs(s.A - A_ref).max() <= 1e-13 * scale
    s32 = ls.gram(Phi, w, dtype=F32)
    assert s32.A.dtype == F32
    err32 = np.abs(s32.A.astype(F64) - A_ref).max() / scale
    assert err32 <= J ** 0.5 * float(np.finfo(F32).eps) * 8  # float32-accurate
    assert err32 > 1e3 * np.abs(s.A - A_ref).max() / scale  # ... and visibly less accurate than float64


# --------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("wmode", ["scalar", "array"])
def test_tiling_changes_rounding_only_and_is_deterministic(dtype, wmode):
    rng = _rng("tiles", dtype.__name__, wmode)
    Phi, y, weights, wv = tile_problem(rng, dtype, wmode)
    A_ref, b_ref, _ = reference_system(Phi, wv, y)
    bA, bb, _ = gram_bounds(Phi, wv, y)
    for tile in (1, 7, 128, 1499, 1500, 100000, None):
        s = ls.gram(Phi, weights, y, tile=tile)
        assert_within(s.A, A_ref, bA, f"A, tile={tile}")
        assert_within(s.b, b_ref, bb, f"b, tile={tile}")
        again = ls.gram(Phi, weights, y, tile=tile)
        assert s.A.tobytes() == again.A.tobytes() and s.b.tobytes() == again.b.tobytes(), \
            f"tile={tile}: not bit-identical across runs"


def test_strided_and_read_only_rows():
    rng = _rng("strided")
    big = rng.standard_normal((400, 12))
    Phi = big[::2, 1:8]  # neither C- nor F-contiguous
    y = rng.standard_normal(400)[::2]
    w = rng.uniform(0, 1, 200)
    want = ls.gram(np.ascontiguousarray(Phi), w, np.ascontiguousarray(y), tile=64)
    got = ls.gram(Phi, w, y, tile=64)
    assert np.allclose(got.A, want.A, rtol=1e-14, atol=0) and np.allclose(got.b, want.b, rtol=1e-14, atol=0)
    ro = np.ascontiguousarray(Phi)
    ro.flags.writeable = False
    assert np.array_equal(ls.gram(ro, 0.5, tile=64).A, ls.gram(np.ascontiguousarray(Phi), 0.5, tile=64).A)


def test_out_is_filled_in_place():
    rng = _rng("out")
    Phi = rng.standard_normal((100, 6))
    out = np.full((6, 6), np.nan)
    s = ls.gram(Phi, 0.1, out=out)
    assert s.A is out
    assert np.allclose(out, 0.1 * Phi.T @ Phi, rtol=1e-13, atol=0)
    out32 = np.empty((6, 6), F32)
    assert ls.gram(Phi.astype(F32), out=out32).A.dtype == F32  # out's dtype is the accumulation dtype


def test_kernel_updates_the_upper_triangle_in_place():
    """gram_accumulate writes A's upper triangle through BLAS (no hidden copy); symmetrize completes it."""
    rng = _rng("upper")
    rows = rng.standard_normal((50, 5))
    A = np.zeros((5, 5))
    lower = np.tril_indices(5, -1)
    for w in (np.array([0.5]), rng.uniform(0, 1, 50)):  # the zero-copy path and the scaled-tile path
        A[...] = 0.0
        A[lower] = -7.0
        cpu.gram_accumulate(rows, w, np.empty(0), A, np.empty(0), 16)
        assert np.all(A[lower] == -7.0)
        upper = np.triu_indices(5)
        want = rows.T @ (np.broadcast_to(w, (50,))[:, None] * rows)
        assert np.allclose(A[upper], want[upper], rtol=1e-13, atol=0)
        cpu.symmetrize(A)
        assert np.array_equal(A, A.T)


# --------------------------------------------------------------------------- accumulator
def test_accumulator_equals_the_gram_of_the_stacked_blocks():
    rng = _rng("acc")
    N = 7
    blocks = [  # (J, weights mode, with y, dtype)
        (300, "array", True, F64),
        (41, "scalar", True, F32),
        (5, "none", False, F64),  # no y: contributes nothing to b
        (0, "none", True, F64),
        (129, "none", True, F32),
    ]
    acc = ls.GramAccumulator(N, tile=64)
    stacked_P, stacked_w, stacked_y = [], [], []
    for J, mode, with_y, dt in blocks:
        P = rng.standard_normal((J, N)).astype(dt)
        y = rng.standard_normal(J).astype(dt) if with_y else None
        weights = weights_for(mode, J, rng)
        assert acc.add(P, weights, y) is acc
        stacked_P.append(P.astype(F64))
        stacked_w.append(w_vector(mode, weights, J))
        stacked_y.append(y.astype(F64) if with_y else np.zeros(J))
    s = acc.finish()
    P, wv, y = np.vstack(stacked_P), np.concatenate(stacked_w), np.concatenate(stacked_y)
    A_ref, b_ref, ywy_ref = reference_system(P, wv, y)
    bA, bb, bywy = gram_bounds(P, wv, y)
    assert s.n_rows == P.shape[0]
    assert np.array_equal(s.A, s.A.T)
    assert_within(s.A, A_ref, bA, "A")
    assert_within(s.b, b_ref, bb, "b")
    assert abs(s.ywy - ywy_ref) <= 2 * bywy
    # finish hands the buffers over and starts again
    s2 = acc.add(P[:10], None, y[:10]).finish()
    assert s2.n_rows == 10 and s2.A is not s.A
    assert np.allclose(s2.A, P[:10].T @ P[:10] / 10, rtol=1e-13, atol=0)


def test_accumulator_tiles_of_one_block_with_the_blocks_weight():
    """A fused assembly splits a block into tiles and passes the block's weight (1/J) with each."""
    rng = _rng("acc_tiles")
    J, N = 1000, 12
    P, y = rng.standard_normal((J, N)), rng.standard_normal(J)
    acc = ls.GramAccumulator(N)
    for lo in range(0, J, 300):
        acc.add(P[lo:lo + 300], 1.0 / J, y[lo:lo + 300])
    s = acc.finish()
    whole = ls.gram(P, None, y)
    assert np.allclose(s.A, whole.A, rtol=1e-13, atol=1e-16) and np.allclose(s.b, whole.b, rtol=1e-12, atol=1e-16)
    assert s.ywy == pytest.approx(whole.ywy, rel=1e-13)


def test_accumulator_is_deterministic_and_empty_is_zero():
    rng = _rng("acc_det")
    P1, P2, w = rng.standard_normal((77, 4)), rng.standard_normal((33, 4)), rng.uniform(0, 1, 77)
    runs = [ls.GramAccumulator(4, tile=16).add(P1, w).add(P2, 3.0).finish().A.tobytes() for _ in range(2)]
    assert runs[0] == runs[1]
    empty = ls.GramAccumulator(3).finish()
    assert empty.A.shape == (3, 3) and not empty.A.any() and empty.b is None and empty.n_rows == 0
    acc = ls.GramAccumulator(4).add(P1)
    acc.start()  # drops what was added
    assert acc.finish().n_rows == 0


def test_accumulator_bad_block_adds_nothing():
    rng = _rng("acc_bad")
    P = rng.standard_normal((20, 3))
    acc = ls.GramAccumulator(3).add(P, 1.0, np.ones(20))
    bad = P.copy()
    bad[4, 1] = np.nan
    for args, exc in [((bad, 1.0, np.ones(20)), ValueError),
                      ((P, -1.0, np.ones(20)), ValueError),
                      ((P, 1.0, np.ones(19)), ValueError),
                      ((P[:, :2], 1.0, None), ValueError),
                      ((P.astype(np.int64), None, None), TypeError)]:
        with pytest.raises(exc):
            acc.add(*args)
    s = acc.finish()
    assert s.n_rows == 20
    assert np.allclose(s.A, P.T @ P, rtol=1e-13, atol=0) and np.allclose(s.b, P.sum(0), rtol=1e-13, atol=0)


# --------------------------------------------------------------------------- operator rows
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("C", [1, 2, 3, 4])
@pytest.mark.parametrize("per_point", [True, False], ids=["coef_CJ", "coef_C"])
def test_operator_rows_match_reference(dtype, C, per_point):
    rng = _rng("oprows", dtype.__name__, C, per_point)
    J, N = 333, 17
    channels = rng.standard_normal((C, J, N)).astype(dtype)
    coef = rng.standard_normal((C, J) if per_point else (C,)).astype(dtype)
    if C > 2:
        (coef[1] if per_point else coef[1:2])[...] = 0  # an unused channel
    got = ls.operator_rows(channels, coef)
    coef_cj = coef if per_point else np.broadcast_to(coef[:, None], (C, J))
    want = np.empty((J, N))
    ref.operator_rows(channels, np.ascontiguousarray(coef_cj), want)
    bound = (C + 1) * float(np.finfo(dtype).eps) * np.einsum("cj,cjn->jn", np.abs(coef_cj.astype(F64)),
                                                               np.abs(channels.astype(F64)))
    assert got.dtype == dtype and got.shape == (J, N)
    assert_within(got, want, bound, "operator rows", k=1.0)
    out = np.empty((J, N), dtype)
    assert ls.operator_rows(channels, coef, out=out) is out and np.array_equal(out, got)


def test_operator_rows_serial_and_threaded_agree_bit_for_bit():
    rng = _rng("op_threads")
    C, J, N = 3, 5000, 64
    assert J * N >= cpu.PARALLEL_MIN_SIZE
    channels, coef = rng.standard_normal((C, J, N)), rng.standard_normal((C, J))
    a, b = np.empty((J, N)), np.empty((J, N))
    cpu._operator_rows(channels, coef, a)
    cpu._operator_rows_threaded(channels, coef, b)
    assert a.tobytes() == b.tobytes()


def _sine_basis(x, n):
    """u_n(x) = sin(n x): channels u, u', u'' in closed form, (3, J, N)."""
    nx = np.outer(x, n)
    return np.stack([np.sin(nx), n * np.cos(nx), -(n**2) * np.sin(nx)])


def test_operator_rows_against_finite_differences():
    """Rows of u'' and of the Helmholtz residual -u'' - k^2 u match central differences of sin(n x).

    Central second differences: error h^2 max|u''''| / 12 = h^2 n^4 / 12, plus rounding 4 eps / h^2.
    """
    x = np.linspace(-1.0, 2.0, 41)
    n = np.arange(1.0, 8.0)
    h = 1e-3
    channels = _sine_basis(x, n)
    u = lambda t: np.sin(np.outer(t, n))  # noqa: E731
    fd_uxx = (u(x + h) - 2 * u(x) + u(x - h)) / h**2
    tol = h**2 * n**4 / 12 + 4 * EPS64 / h**2
    rows_uxx = ls.operator_rows(channels, np.array([0.0, 0.0, 1.0]))
    assert np.all(np.abs(rows_uxx - fd_uxx) <= 1.5 * tol)
    k2 = 9.0
    coef = np.stack([np.full(41, -k2), np.zeros(41), np.full(41, -1.0)])
    rows_h = ls.operator_rows(channels, coef)
    assert np.all(np.abs(rows_h - (-fd_uxx - k2 * u(x))) <= 1.5 * tol)
    # a variable coefficient a(x) u': first central differences, error h^2 n^3 / 6
    a = 1.0 + x**2
    rows_adv = ls.operator_rows(channels, np.stack([np.zeros(41), a, np.zeros(41)]))
    fd_ux = (u(x + h) - u(x - h)) / (2 * h)
    assert np.all(np.abs(rows_adv - a[:, None] * fd_ux) <= a[:, None] * (h**2 * n**3 / 6 + EPS64 / h) * 1.5)


def test_operator_rows_then_gram_of_a_pinn_operator():
    """The rows feed the Gram system: -u'' = f with u = sum c_n sin(n x) recovers c exactly."""
    from fastopt import quadrature

    x, w = quadrature.gauss_legendre(8, 0.0, np.pi, cells=4)
    n = np.arange(1.0, 6.0)
    c_true = np.array([1.0, -0.5, 0.25, 0.0, 0.1])
    f = (np.sin(np.outer(x[:, 0], n)) * n**2) @ c_true
    rows = ls.operator_rows(_sine_basis(x[:, 0], n), np.array([0.0, 0.0, -1.0]))
    s = ls.gram(rows, w, f)
    sol = ls.solve(s.A, s.b)
    assert np.allclose(sol.c, c_true, atol=1e-12)


# --------------------------------------------------------------------------- bad input
def _bad_gram_calls():
    rng = _rng("bad")
    P = rng.standard_normal((10, 3))
    y = rng.standard_normal(10)
    nanP = P.copy()
    nanP[2, 1] = np.nan
    infy = y.copy()
    infy[7] = np.inf
    negw = np.ones(10)
    negw[5] = -1e-3
    nanw = np.ones(10)
    nanw[0] = np.nan
    ro = np.zeros((3, 3))
    ro.flags.writeable = False
    return [
        ("Phi 1-D", (P[:, 0],), {}, ValueError, "Phi"),
        ("Phi int", (P.astype(np.int64),), {}, TypeError, "Phi"),
        ("Phi NaN", (nanP,), {}, ValueError, "Phi"),
        ("Phi no columns", (P[:, :0],), {}, ValueError, "Phi"),
        ("Phi list", (P.tolist(),), {}, TypeError, "Phi"),
        ("y inf", (P, None, infy), {}, ValueError, "y"),
        ("y shape", (P, None, y[:9]), {}, ValueError, "y"),
        ("y 2-D", (P, None, y[:, None]), {}, ValueError, "y"),
        ("y int", (P, None, np.arange(10)), {}, TypeError, "y"),
        ("weights negative", (P, negw), {}, ValueError, "weights"),
        ("weights scalar negative", (P, -2.0), {}, ValueError, "weights"),
        ("weights NaN", (P, nanw), {}, ValueError, "weights"),
        ("weights scalar inf", (P, np.inf), {}, ValueError, "weights"),
        ("weights shape", (P, np.ones(9)), {}, ValueError, "weights"),
        ("weights bool", (P, True), {}, TypeError, "weights"),
        ("weights str", (P, "1/J"), {}, TypeError, "weights"),
        ("tile 0", (P,), dict(tile=0), ValueError, "tile"),
        ("tile float", (P,), dict(tile=64.0), TypeError, "tile"),
        ("dtype int", (P,), dict(dtype=np.int32), TypeError, "dtype"),
        ("out shape", (P,), dict(out=np.zeros((3, 4))), ValueError, "out"),
        ("out dtype", (P,), dict(out=np.zeros((3, 3), F32), dtype=F64), TypeError, "out"),
        ("out read-only", (P,), dict(out=ro), ValueError, "out"),
        ("out non-contiguous", (P,), dict(out=np.zeros((3, 6))[:, ::2]), ValueError, "out"),
        ("backend gpu on NumPy arrays", (P,), dict(backend="gpu"), (TypeError, RuntimeError), "gpu"),
        ("backend name", (P,), dict(backend="tpu"), ValueError, "backend"),
    ]


@pytest.mark.parametrize("case", _bad_gram_calls(), ids=lambda c: c[0])
def test_bad_input_raises_before_touching_out(case):
    _, args, kwargs, exc, word = case
    out = kwargs.pop("out", None)
    if out is None:
        out = np.full((3, 3), 42.0)
        if "dtype" in kwargs and kwargs["dtype"] is not F64:
            out = None
    before = None if out is None else out.copy()
    with pytest.raises(exc, match=word):
        ls.gram(*args, **kwargs, **({} if out is None else {"out": out}))
    if out is not None:
        assert np.array_equal(out, before), "a failed call changed out"


def test_overlapping_out_is_refused():
    buf = np.zeros((3, 3))
    with pytest.raises(ValueError, match="overlap|same array"):
        ls.gram(buf, out=buf)


def test_operator_rows_bad_input():
    ch = np.zeros((3, 5, 4))
    for args, kw, exc, word in [((ch[0], np.ones(3)), {}, ValueError, "channels"),
                                ((ch, np.ones((3, 4))), {}, ValueError, "coef"),
                                ((ch, np.ones(2)), {}, ValueError, "coef"),
                                ((ch.astype(np.int32), np.ones(3)), {}, TypeError, "channels"),
                                ((ch, np.array([1.0, np.nan, 0.0])), {}, ValueError, "coef"),
                                ((ch, np.ones(3)), dict(out=np.zeros((5, 4), F32)), TypeError, "out"),
                                ((ch, "x"), {}, TypeError, "coef")]:
        with pytest.raises(exc, match=word):
            ls.operator_rows(*args, **kw)


def test_accumulator_constructor_checks():
    for kw, exc in [(dict(n_basis=0), ValueError), (dict(n_basis=2.0), TypeError),
                    (dict(n_basis=3, dtype=np.int64), TypeError), (dict(n_basis=3, tile=0), ValueError),
                    (dict(n_basis=3, backend="nope"), ValueError)]:
        with pytest.raises(exc):
            ls.GramAccumulator(**kw)


# --------------------------------------------------------------------------- fused assembly from a network (CPU path)
def _plain_assembly(net, x, problem, tile):
    """The general (unfused) path of ``ls.assemble``: per tile the NumPy rows into a GramAccumulator."""
    from fastopt import _ls_hybrid as H

    nb = net.n_basis + (1 if net.out_bias else 0)
    acc = ls.GramAccumulator(nb)
    for lo in range(0, x.shape[0], tile):
        hi = min(x.shape[0], lo + tile)
        Vt, G, _ = H._basis_channels(net, x[lo:hi], problem.order)
        H._add_tile(acc, None, problem, Vt, G, lo, hi)
    return acc.finish()


def _network_problem(kind, dtype, ansatz, out_bias, J=257, seed=0):
    from fastopt.nn import MLP, Ansatz
    from fastopt.problems import LeastSquares

    rng = _rng("fused", kind, dtype.__name__, ansatz, out_bias, J, seed)
    net = MLP(1, (9, 7), seed=seed, dtype=dtype, out_bias=out_bias,
              ansatz=Ansatz.box(0.0, 1.0) if ansatz else None)
    x = np.sort(rng.uniform(0, 1, (J, 1)), axis=0).astype(dtype)
    w = rng.uniform(0.1, 1.0, J) / J
    if kind == "regression":
        problem = LeastSquares.regression(np.sin(6 * x[:, 0].astype(F64)), w)
    elif kind == "pinn":   # two channels, per-point coefficients with both signs
        problem = LeastSquares(np.stack([rng.uniform(-2, 2, J), np.zeros(J), -np.ones(J)]), np.cos(3 * x[:, 0]), w)
    else:                  # one channel that is zero at some points: an operator with empty rows
        coef = np.zeros((3, J))
        coef[1, ::3] = rng.uniform(-1, 1, len(range(0, J, 3)))
        problem = LeastSquares(coef, rng.standard_normal(J), w)
    return net, x, problem


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["regression", "pinn", "sparse"])
@pytest.mark.parametrize("ansatz,out_bias", [(False, False), (False, True), (True, True)],
                         ids=["plain", "bias", "ansatz"])
@pytest.mark.parametrize("tile", [3, 50, 1000])   # 257 points: tiles of 3 end with 2 rows, of 50 with 7
def test_fused_cpu_assembly_equals_the_plain_path_bit_for_bit(dtype, kind, ansatz, out_bias, tile):
    """The CPU fast path (one kernel per tile) performs the plain path's operations in the same order.

    (Not with one-row tiles: there the accumulator takes the row's weight as one weight for every row
    and hands it to syrk as alpha instead of scaling the row by its square root: other rounding.)
    """
    net, x, problem = _network_problem(kind, dtype, ansatz, out_bias)
    fused = ls.assemble(net, x, problem, tile=tile)
    plain = _plain_assembly(net, x, problem, tile)
    assert fused.A.dtype == F64 and fused.A.tobytes() == plain.A.tobytes()
    assert fused.b.tobytes() == plain.b.tobytes()
    assert fused.ywy == plain.ywy and fused.n_rows == plain.n_rows == x.shape[0]
    assert np.array_equal(fused.A, fused.A.T)


@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_fused_assembly_tile_changes_rounding_only_and_is_deterministic(dtype):
    """Any tile size (the default's equal tiles included) gives the materialised system to rounding;
    the same tile size the same bits."""
    net, x, problem = _network_problem("pinn", dtype, True, True, J=3001)
    Vt = net.basis(x, 2)
    phi, g = net.ansatz_channels(x, 2)
    Phi = np.concatenate([Vt, phi[:, :, None]], axis=2)
    a, w = problem.coef, problem.weights
    rows = sum(a[ch][:, None] * Phi[ch].astype(F64) for ch in (0, 2))
    y = problem.target - sum(a[ch] * g[ch] for ch in (0, 2))
    A = rows.T @ (w[:, None] * rows)
    b = rows.T @ (w * y)
    # float64: rounding of the sums only; float32: the forward's float32 rounding of a point's channels
    # also depends on where the point falls in the forward's blocks of 64 (the micro-kernel's tails)
    tol = 1e-13 if dtype == F64 else 1e-6
    for tile in [None, 7, 1024, 1500, 2999, 5000]:
        s = ls.assemble(net, x, problem, tile=tile)
        assert np.max(np.abs(s.A - A)) <= tol * np.abs(A).max(), tile
        assert np.max(np.abs(s.b - b)) <= tol * np.abs(b).max(), tile
        assert s.ywy == pytest.approx(float(w @ (y * y)), rel=tol)
        again = ls.assemble(net, x, problem, tile=tile)
        assert s.A.tobytes() == again.A.tobytes() and s.b.tobytes() == again.b.tobytes()


def test_fused_assembly_default_tiles_are_equal():
    """The default tile is cut to equal tiles: J = 1e4 at N = 32 runs two forwards of 5000 points."""
    from fastopt.nn import MLP
    from fastopt.problems import LeastSquares

    net = MLP(1, (8, 32), seed=0, out_bias=False)
    x = np.linspace(0, 1, 10_000)[:, None]
    sizes = []
    forward = net.forward
    net.forward = lambda xt, order=0: (sizes.append(xt.shape[0]), forward(xt, order))[1]
    s = ls.assemble(net, x, LeastSquares.regression(np.sin(x[:, 0])))
    assert sizes == [5000, 5000] and s.n_rows == 10_000


@pytest.mark.parametrize("name", ["dense0.W", "dense1.b"])
def test_fused_assembly_refuses_non_finite_rows(name):
    net, x, problem = _network_problem("regression", F64, False, True)
    net.params[name][0] = np.nan
    with pytest.raises(ValueError, match="ls.assemble: the basis rows at points 0:50 contain NaN or inf"):
        ls.assemble(net, x, problem, tile=50)


def test_fused_assembly_of_no_points_is_zero():
    from fastopt.nn import MLP
    from fastopt.problems import LeastSquares

    net = MLP(1, (4, 3), seed=0)
    s = ls.assemble(net, np.empty((0, 1)), LeastSquares(np.ones((1, 0)), np.empty(0), np.empty(0)))
    assert s.A.shape == (4, 4) and not s.A.any() and not s.b.any() and s.n_rows == 0 and s.ywy == 0.0


def test_tiles_run_blas_on_one_thread():
    """Tiles of ordinary size run BLAS on one thread (measured: a tile's syrk is too small to share two
    busy cores); the caller's setting is restored afterwards, and huge tiles keep it."""
    from threadpoolctl import ThreadpoolController

    blas = ThreadpoolController().select(user_api="blas")
    before = [info["num_threads"] for info in blas.info()]
    with cpu.blas_threads(4096):
        assert all(info["num_threads"] == 1 for info in blas.info())
    assert [info["num_threads"] for info in blas.info()] == before
    with cpu.blas_threads(cpu.SERIAL_BLAS_MAX_ROWS + 1):
        assert [info["num_threads"] for info in blas.info()] == before
