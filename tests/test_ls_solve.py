r"""The robust LS solve (``fastopt.ls.solve``): Cholesky with a condition estimate, eigendecomposition with truncation.

Bounds used (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., ch. 10 and 15):

- **Residual.** Cholesky and the symmetric eigensolver are backward stable: the computed ``c``
  solves ``(A + E) c = b`` with ``||E|| <= p(N) eps ||A||``, so ``||A c - b|| <= p(N) eps ||A|| ||c||``.
  The truncated eigen-solution also leaves out the components of ``b`` along the dropped
  eigenvectors; for a consistent ``b = A x`` those are at most ``rcond lambda_max ||x||`` with
  ``rcond = N eps``. The tests check::

      ||A c - b|| <= 10 N eps ||A||_2 (||c|| + ||x||)

  for every condition number from 1e2 to 1e20, "to what conditioning allows": the residual is
  small relative to ``||A|| ||c||``, not to ``||b||`` (which can be ~``lambda_min ||x||``).
- **Forward error** (well-conditioned, ``kappa eps < 1``): ``||c - x|| / ||x|| <= 10 N kappa eps``.
- **Warning.** ``IllConditionedWarning`` exactly when the reported ``condition_number > 1/eps``
  (eps of A's dtype); systems built with ``kappa_2 <= 1e12`` (N = 20: the 1-norm estimate is
  within a factor N of kappa_2, so below 1/eps = 4.5e15) never warn, ``kappa_2 >= 1e17`` always do.
"""
from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastopt import ls

F32, F64 = np.float32, np.float64
EPS64 = float(np.finfo(F64).eps)


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(("ls_solve",) + key).encode()))


def spd_with_condition(N, kappa, rng):
    """A = Q diag(s) Q^T with s log-spaced from 1 down to 1/kappa (kappa_2 = kappa in exact arithmetic)."""
    Q, _ = np.linalg.qr(rng.standard_normal((N, N)))
    s = np.logspace(0.0, -math.log10(kappa), N)
    A = (Q * s) @ Q.T
    return 0.5 * (A + A.T)


def solve_recording(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = ls.solve(*args, **kwargs)
    ill = [w for w in caught if issubclass(w.category, ls.IllConditionedWarning)]
    return sol, ill


def residual_bound(A, c, x):
    N = A.shape[0]
    return 10 * N * EPS64 * np.linalg.norm(A, 2) * (np.linalg.norm(c) + np.linalg.norm(x))


# --------------------------------------------------------------------------- well-posed systems
@pytest.mark.parametrize("N", [1, 5, 50])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["f32", "f64"])
def test_spd_matches_numpy(N, dtype):
    rng = _rng("spd", N, dtype.__name__)
    M = rng.standard_normal((3 * N, N))
    A = (M.T @ M + N * np.eye(N)).astype(dtype)
    A = (0.5 * (A + A.T)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype)
    sol, ill = solve_recording(A, b)
    want = np.linalg.solve(A.astype(F64), b.astype(F64))
    kappa = np.linalg.cond(A.astype(F64))
    assert sol.method == "cholesky" and sol.rank == N and not ill and sol.warnings == ()
    assert sol.c.dtype == F64 and sol.c.shape == (N,)
    assert np.linalg.norm(sol.c - want) <= 10 * N * kappa * EPS64 * np.linalg.norm(want)
    assert kappa / N <= sol.condition_number <= 3 * N * kappa  # LAPACK's 1-norm estimate vs kappa_2


@pytest.mark.parametrize("kappa", [1e2, 1e6, 1e10, 1e12, 1e17, 1e20])
def test_condition_sweep(kappa):
    N = 20
    rng = _rng("sweep", kappa)
    A = spd_with_condition(N, kappa, rng)
    x = rng.standard_normal(N)
    b = A @ x
    sol, ill = solve_recording(A, b)
    c = sol.c
    assert np.all(np.isfinite(c))
    assert np.linalg.norm(A @ c - b) <= residual_bound(A, c, x)
    assert (len(ill) == 1) == (sol.condition_number > 1 / EPS64)  # the warning rule, exactly
    if kappa <= 1e12:
        assert not ill and sol.method == "cholesky"
        assert np.linalg.norm(c - x) <= 10 * N * kappa * EPS64 * np.linalg.norm(x)
    else:
        assert len(ill) == 1 and sol.method == "eigh" and sol.rank < N
        assert sol.warnings and "exceeds 1/eps" in sol.warnings[-1]
        # the truncated solution is the minimum-norm one of the resolved subspace: no larger than x
        assert np.linalg.norm(c) <= np.linalg.norm(x) * (1 + 1e-6)


@pytest.mark.parametrize("method", ["auto", "cholesky", "eigh"])
def test_methods_agree_on_a_definite_system(method):
    rng = _rng("methods", method)
    N = 30
    A = spd_with_condition(N, 1e4, rng)
    b = rng.standard_normal(N)
    sol = ls.solve(A, b, method=method)
    want = np.linalg.solve(A, b)
    assert sol.method == ("eigh" if method == "eigh" else "cholesky")
    assert np.linalg.norm(sol.c - want) <= 10 * N * 1e4 * EPS64 * np.linalg.norm(want)
    if method == "eigh":
        assert sol.condition_number == pytest.approx(1e4, rel=1e-6) and sol.rank == N


def test_float32_system_uses_float32_eps():
    """A float32 A resolves ~7 digits: cond 1e9 > 1/eps_32 warns (and goes to eigh), float64 does not."""
    rng = _rng("f32eps")
    A = spd_with_condition(10, 1e9, rng)
    b = rng.standard_normal(10)
    sol64, ill64 = solve_recording(A, b)
    assert not ill64 and sol64.method == "cholesky"
    sol32, ill32 = solve_recording(A.astype(F32), b.astype(F32))
    assert len(ill32) == 1 and sol32.method == "eigh" and np.all(np.isfinite(sol32.c))
    assert sol32.rcond == pytest.approx(10 * float(np.finfo(F32).eps))


# --------------------------------------------------------------------------- singular systems
def test_duplicate_columns_give_the_minimum_norm_solution():
    rng = _rng("dup")
    J = 60
    base = rng.standard_normal((J, 4))
    Phi = np.column_stack([base, base[:, 1], 2.0 * base[:, 0]])  # rank 4 of 6
    y = rng.standard_normal(J)
    s = ls.gram(Phi, None, y)
    sol, ill = solve_recording(s.A, s.b)
    want = np.linalg.pinv(s.A) @ s.b  # numpy's cut: N eps sigma_max, the same as solve's default
    assert sol.method == "eigh" and sol.rank == 4
    assert sol.condition_number > 1 / EPS64 and len(ill) == 1
    assert np.all(np.isfinite(sol.c))
    assert np.linalg.norm(sol.c - want) <= 1e-9 * np.linalg.norm(want)
    # it is a least-squares minimiser of the original problem
    c_lstsq = np.linalg.lstsq(Phi, y, rcond=None)[0]
    assert np.allclose(Phi @ sol.c, Phi @ c_lstsq, atol=1e-10)
    # and its duplicate columns share the weight equally
    assert sol.c[1] == pytest.approx(sol.c[4], rel=1e-9)
    assert sol.c[5] == pytest.approx(2.0 * sol.c[0], rel=1e-9)


def test_forced_cholesky_on_a_singular_system_raises():
    A = np.ones((3, 3))
    with pytest.raises(np.linalg.LinAlgError, match="not numerically positive definite"):
        ls.solve(A, np.ones(3), method="cholesky")


def test_zero_matrix_gives_zero_with_a_warning():
    sol, ill = solve_recording(np.zeros((4, 4)), np.zeros(4))
    assert np.array_equal(sol.c, np.zeros(4)) and sol.rank == 0 and math.isinf(sol.condition_number)
    assert len(ill) == 1
    sol, ill = solve_recording(np.zeros((4, 4)), np.ones(4))  # inconsistent: still finite, zero
    assert np.array_equal(sol.c, np.zeros(4)) and len(ill) == 1


def test_regularisation_equals_the_shifted_solve():
    rng = _rng("reg")
    N = 12
    A = spd_with_condition(N, 1e14, rng)
    b = rng.standard_normal(N)
    for reg in (1e-8, 1e-3, 10.0):
        sol, ill = solve_recording(A, b, reg=reg)
        want = np.linalg.solve(A + reg * np.eye(N), b)
        kappa = np.linalg.cond(A + reg * np.eye(N))
        assert sol.method == "cholesky" and sol.reg == reg and not ill
        assert np.linalg.norm(sol.c - want) <= 10 * N * kappa * EPS64 * np.linalg.norm(want)
    singular = np.ones((3, 3))
    sol = ls.solve(singular, np.ones(3), reg=1e-6)
    assert sol.method == "cholesky" and np.allclose((singular + 1e-6 * np.eye(3)) @ sol.c, np.ones(3))


def test_indefinite_matrix_is_reported():
    sol, ill = solve_recording(np.diag([1.0, -1.0]), np.array([1.0, 1.0]))
    assert np.array_equal(sol.c, [1.0, 0.0]) and sol.rank == 1 and len(ill) == 1
    assert any("negative eigenvalue" in m for m in sol.warnings)


def test_rcond_controls_the_truncation():
    A = np.diag([1.0, 1e-3, 1e-9])
    b = np.ones(3)
    assert ls.solve(A, b, method="eigh").rank == 3
    sol = ls.solve(A, b, method="eigh", rcond=1e-6)
    assert sol.rank == 2 and np.allclose(sol.c, [1.0, 1e3, 0.0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(N=st.integers(1, 25), rank=st.integers(0, 25), log_scale=st.floats(-100, 100), seed=st.integers(0, 2**31),
       consistent=st.booleans())
def test_never_nan_on_rank_deficient_matrices(N, rank, log_scale, seed, consistent):
    """Random PSD matrices of any rank and scale: c is finite, and A c reproduces the part of b A can reach."""
    rng = np.random.default_rng(seed)
    rank = min(rank, N)
    M = rng.standard_normal((N, rank)) * 10.0 ** (log_scale / 2)
    A = M @ M.T
    x = rng.standard_normal(N)
    b = A @ x if consistent else rng.standard_normal(N) * 10.0**log_scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.IllConditionedWarning)
        sol = ls.solve(A, b)
    assert np.all(np.isfinite(sol.c))
    assert 0 <= sol.rank <= N
    if consistent:
        assert np.linalg.norm(A @ sol.c - b) <= residual_bound(A, sol.c, x) + 1e-300


# --------------------------------------------------------------------------- input handling
def test_inputs_are_never_changed():
    rng = _rng("nochange")
    A = spd_with_condition(6, 1e20, rng)
    b = rng.standard_normal(6)
    A0, b0 = A.copy(), b.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.IllConditionedWarning)
        for method in ("auto", "eigh"):
            ls.solve(A, b, reg=0.1, method=method)
            ls.solve(A, b, method=method)
    assert np.array_equal(A, A0) and np.array_equal(b, b0)


def test_symmetric_part_is_used_and_asymmetry_refused():
    rng = _rng("sym")
    A = spd_with_condition(5, 10.0, rng)
    b = rng.standard_normal(5)
    noisy = A.copy()
    noisy[0, 1] += 1e-14  # rounding-level asymmetry: accepted, the symmetric part is solved
    sol = ls.solve(noisy, b)
    assert np.allclose(sol.c, np.linalg.solve(0.5 * (noisy + noisy.T), b), rtol=1e-12)
    bad = A.copy()
    bad[0, 1] += 0.1
    with pytest.raises(ValueError, match="symmetric"):
        ls.solve(bad, b)


@pytest.mark.parametrize("args,kwargs,exc,word", [
    ((np.eye(3)[:2], np.ones(2)), {}, ValueError, "A"),
    ((np.eye(3), np.ones(2)), {}, ValueError, "b"),
    ((np.eye(3), np.ones((3, 1))), {}, ValueError, "b"),
    ((np.eye(3).astype(np.int64), np.ones(3)), {}, TypeError, "A"),
    ((np.eye(3), np.ones(3, np.int32)), {}, TypeError, "b"),
    ((np.diag([1.0, np.nan, 1.0]), np.ones(3)), {}, ValueError, "A"),
    ((np.eye(3), np.array([1.0, np.inf, 0.0])), {}, ValueError, "b"),
    ((np.zeros((0, 0)), np.ones(0)), {}, ValueError, "A"),
    ((np.eye(3), np.ones(3)), dict(reg=-1e-3), ValueError, "reg"),
    ((np.eye(3), np.ones(3)), dict(reg=float("nan")), ValueError, "reg"),
    ((np.eye(3), np.ones(3)), dict(method="lstsq"), ValueError, "method"),
    ((np.eye(3), np.ones(3)), dict(rcond=1.5), ValueError, "rcond"),
    ((np.eye(3), np.ones(3)), dict(rcond="tiny"), TypeError, "rcond"),
    ((np.eye(3), np.ones(3)), dict(backend="gpu"), (TypeError, RuntimeError), "gpu"),
    (([[1.0]], np.ones(1)), {}, TypeError, "A"),
], ids=["A not square", "b shape", "b 2-D", "A int", "b int", "A NaN", "b inf", "N = 0", "reg < 0", "reg NaN",
        "method", "rcond range", "rcond type", "gpu backend on NumPy", "A list"])
def test_bad_input(args, kwargs, exc, word):
    with pytest.raises(exc, match=word):
        ls.solve(*args, **kwargs)


def test_warning_class():
    assert issubclass(ls.IllConditionedWarning, RuntimeWarning)  # filterable apart from other warnings


# --------------------------------------------------------------------------- GPU (CuPy / cuSOLVER)
@pytest.mark.gpu
@pytest.mark.parametrize("kappa", [1e3, 1e20])
def test_gpu_solve_matches_cpu(kappa):
    from fastopt import gpu_status

    ok, reason = gpu_status()
    if not ok:
        pytest.skip(f"gpu backend unavailable: {reason}")
    import cupy

    rng = _rng("gpu", kappa)
    A = spd_with_condition(16, kappa, rng)
    x = rng.standard_normal(16)
    b = A @ x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ls.IllConditionedWarning)
        cpu = ls.solve(A, b)
        gpu = ls.solve(cupy.asarray(A), cupy.asarray(b))
    assert isinstance(gpu.c, cupy.ndarray) and gpu.method == cpu.method and gpu.rank == cpu.rank
    c = cupy.asnumpy(gpu.c)
    assert np.all(np.isfinite(c))
    assert np.linalg.norm(A @ c - b) <= residual_bound(A, c, x)
    zero = ls.solve(cupy.zeros((3, 3)), cupy.ones(3), method="eigh")
    assert not cupy.asnumpy(zero.c).any()
