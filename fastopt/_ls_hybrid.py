r"""The LS system from a network, fused tile by tile, and the LS-hybrid trainer (re-exported by :mod:`fastopt.ls`).

Basis of the LS solve. A network ``u = g + phi (z_L c + c0)`` (:class:`fastopt.nn.MLP`, optional
ansatz ``g + phi .``) is linear in its output coefficients ``theta_c = (c, c0)``::

    u = g + sum_n theta_c[n] v_n,     v_n = phi z_n (n < N),   v_N = phi   (the bias column, with c0)

and the channels of ``v_n`` (value, gradient, Laplacian) follow from those of ``z_n`` and ``phi`` by
the product rule (the "mlp" family's ``ansatz_forward``). For a loss of :mod:`fastopt.problems`:

- :class:`~fastopt.problems.LeastSquares` (``r = sum_ch a_ch U_ch - y``): rows ``Phi = sum_ch a_ch V_ch``,
  right-hand side ``y - sum_ch a_ch G_ch`` (the offset g moved over): ``A = Phi^T W Phi``, ``b = Phi^T W (y - a.G)``,
  and the loss in ``theta_c`` is ``theta_c^T A theta_c - 2 b^T theta_c + const`` (minimum at ``A theta_c = b``);
- :class:`~fastopt.problems.Energy` (``sum_j w_j (|grad u|^2/2 + k u^2/2 + f u)``): ``A = sum_m D_m^T W D_m + k V_0^T W V_0``
  (``D_m`` the rows of ``d_m v_n``), ``b = -(V_0^T W (f + k g) + sum_m D_m^T W d_m g)``, and the energy is
  ``theta_c^T A theta_c / 2 - b^T theta_c + const`` (minimum at ``A theta_c = b`` too).

Fused assembly (:func:`assemble`): the points are cut into tiles; each tile runs the network's
forward (its last hidden layer's channels), forms the tile's rows and adds them into a
:class:`~fastopt.ls.GramAccumulator` (float64, fixed tile order: deterministic); the ``J x N``
matrix never exists. Peak extra memory: one tile's channels (``C x tile x (N + 1)``) and rows.
On the CPU a least-squares problem skips the accumulator: one kernel per tile forms the scaled
rows and adds them (``_assemble_least_squares_cpu``: the same bits, without the per-tile NumPy
passes and re-validation, BLAS on one thread). Measured (1 -> 64 -> N tanh, value rows, float64,
interleaved best-of on the 2-core machine, idle / loaded): J = 1e4, N = 32 5.4 -> 2.6 ms / 6.2 ->
3.7 ms (loaded: the forward is 2.2 ms of it, the rows 0.3, ``syrk`` 0.6); J = 1e5, N = 256 337 ->
246 ms / 2.28 s -> 0.28 s (loaded, one BLAS thread alone: 0.41 s; now forward 128 ms, rows 23 ms,
``syrk`` 134 ms).

LS hybrid (:class:`LSHybrid`, Cyr et al. 2020): each step (1) assembles and solves for ``theta_c``
(robust :func:`~fastopt.ls.solve`), writes it into the network; (2) takes one optimiser step on the
hidden parameters ``w`` with ``theta_c`` held fixed (their learning rate is 0 in the optimiser's
groups). When ``theta_c`` minimises the same discrete loss that the gradient is taken of
(``fresh_points=False``), ``dL/dtheta_c = 0`` and the partial gradient in ``w`` *is* the gradient
of the reduced loss ``L(theta_c(w), w)`` (variable projection, Golub & Pereyra 1973): unbiased.
With ``fresh_points=True`` the system and the gradient use independent samples, as the lecture's
code does (each step draws new quadrature points).

Backends: everything follows the network's. With ``MLP(..., backend="gpu")`` the points, the
problem's arrays and the system live on the device (CuPy); the tiles are the "mlp" family's GPU
passes and the Gram family's cuBLAS ``syrk`` (``kernels/gpu/gram.py``). What comes to the host per
step is scalars (the loss, the checks' verdicts, ``y^T W y``) and, inside :func:`fastopt.ls.solve`,
the ``N x N`` Cholesky factor for LAPACK's condition estimate (or the ``N`` eigenvalues): nothing of
size J. The CPU path is the same code with NumPy as the array module.
"""
from __future__ import annotations

import math
import time

import numpy as np

from . import _dispatch
from . import _validate as V
from .problems import Energy, LeastSquares

__all__ = ["assemble", "LSHybrid", "coefficient_names"]


def coefficient_names(net) -> list:
    """The parameters the LS solve writes: ``["out.c"]`` and ``"out.c0"`` with an output bias."""
    return ["out.c", "out.c0"] if net.out_bias else ["out.c"]


def _basis_channels(net, x, order):
    """``(V, G, U)``: channels (C, T, N + bias) of the transformed basis, of the offset g (C, T), and of u.

    One forward; ``V`` and ``G`` are new arrays (the network's dtype, on its backend), ``U`` the
    forward's output (workspace).
    """
    out = net.forward(x, order)
    Z = out.basis
    xp = _dispatch.array_module(Z)
    C, T, N = Z.shape
    phi, g = net.ansatz_channels(x, order)
    nb = N + (1 if net.out_bias else 0)
    Vt = xp.empty((C, T, nb), dtype=Z.dtype)
    if net.ansatz is not None:         # phi z_n by the product rule, into a new array (Z is the tape's basis)
        transformed = xp.empty_like(Z)
        _dispatch.get_kernel("mlp", "ansatz_forward", net.backend)(net.d, Z, phi, phi[:0], transformed)
        Vt[:, :, :N] = transformed
    else:
        Vt[:, :, :N] = Z
    if net.out_bias:
        Vt[:, :, N] = phi
    return Vt, g, out.u


def _add_tile(acc, rhs, problem, Vt, G, lo, hi):
    """Add the rows of points ``lo:hi`` (channels ``Vt``, offset ``G``) to the accumulator / rhs."""
    if isinstance(problem, LeastSquares):
        a = problem.coef[:, lo:hi]
        rows = problem._xp.zeros(Vt.shape[1:], dtype=np.float64)
        y = problem.target[lo:hi].copy()
        for ch in problem._active:
            rows += a[ch][:, None] * Vt[ch]
            y -= a[ch] * G[ch]
        acc.add(rows, problem.weights[lo:hi], y)
        return
    w = problem.weights[lo:hi]
    d = problem.d
    for m in range(d):
        acc.add(Vt[1 + m], w, -G[1 + m])
    if problem.k:
        acc.add(Vt[0], problem.k * w, None)
    rhs -= Vt[0].T.astype(np.float64) @ (w * (problem.f[lo:hi] + problem.k * G[0]))


def assemble(net, x, problem, *, tile=None):
    """The LS system of ``problem`` in the network's output coefficients, fused tile by tile.

    Args:
      net: a :class:`fastopt.nn.MLP` (its hidden parameters define the basis).
      x: (J, d) points (those of ``problem``: its coefficients, targets and weights are per point).
      problem: a :class:`fastopt.problems.LeastSquares` or :class:`fastopt.problems.Energy`.
      tile: points per tile (default: a tile of channels of ~2 MiB on the CPU, where it stays in
        cache; ~64 MiB on the GPU, where each tile costs ~30 launches and a few synchronisations of
        fixed overhead: a million points are then ~20 tiles instead of ~700; the points are then
        cut into tiles of equal size, at most that). On the CPU, 1024 to 16384 points per tile
        measured within ~10 % of each other (1 -> 64 -> N tanh, N = 32 and 256, J = 1e4 and 1e5).
    Returns:
      :class:`fastopt.ls.GramSystem` ``(A, b, n_rows, ywy)`` in float64 with ``N + 1`` unknowns when
      the network has an output bias (the last one is ``c0``).
    """
    from .ls import GramAccumulator, GramSystem

    f = "ls.assemble"
    if not isinstance(problem, (LeastSquares, Energy)):
        raise TypeError(f"{f}: problem must be a fastopt.problems.LeastSquares or Energy, got "
                        f"{type(problem).__name__}")
    J = x.shape[0] if hasattr(x, "shape") and len(x.shape) == 2 else None
    if J != problem.n_points:
        raise ValueError(f"{f}: x must have one row per point of the problem ({problem.n_points}), got "
                         f"shape {getattr(x, 'shape', None)}")
    gpu = net.backend == "gpu"
    if problem.backend != ("gpu" if gpu else "cpu"):
        raise TypeError(f"{f}: the problem's arrays are {problem.backend} arrays but the network's backend is "
                        f"{net.backend!r}; build the problem from arrays on the network's backend "
                        f"(fastopt.to_backend)")
    order = problem.order
    C = V.n_channels(order, net.d)
    nb = net.n_basis + (1 if net.out_bias else 0)
    if tile is None:
        tile = max(64, ((64 << 20) if gpu else (2 << 20)) // (8 * C * nb))
        tile = -(-J // -(-J // tile)) if J else tile   # equal tiles: one forward workspace, no short last tile
    tile = V.integer(f, "tile", tile, 1)
    if net.backend == "cpu" and isinstance(problem, LeastSquares):
        return _assemble_least_squares_cpu(net, x, problem, tile, order, nb)
    acc = GramAccumulator(nb)
    rhs = problem._xp.zeros(nb)
    for lo in range(0, J, tile):
        hi = min(J, lo + tile)
        Vt, G, _ = _basis_channels(net, x[lo:hi], order)
        _add_tile(acc, rhs, problem, Vt, G, lo, hi)
    system = acc.finish()
    if isinstance(problem, Energy):
        b = rhs if system.b is None else system.b + rhs
        system = GramSystem(system.A, b, system.n_rows, 0.0)
    elif system.b is None:
        system = GramSystem(system.A, problem._xp.zeros(nb), system.n_rows, 0.0)
    return system


def _assemble_least_squares_cpu(net, x, problem, tile, order, nb):
    """:func:`assemble` of a :class:`~fastopt.problems.LeastSquares` problem on the CPU, one kernel per tile.

    Per tile: the network's forward, then ``gram.gram_accumulate_channels``, which forms the tile's
    ``sqrt(w)``-scaled rows (operator, output-bias column, offset) in one pass into a float64 scratch
    allocated once, and adds them with ``dsyrk`` and ``dgemv``. The general path (the other backends,
    and :class:`~fastopt.problems.Energy`) builds the same rows with several NumPy passes and hands
    them to :class:`~fastopt.ls.GramAccumulator`, which validates each tile again; here the inputs
    were validated once (the problem at its construction, ``x`` by the forward) and a tile's rows
    are checked for NaN/inf inside the kernel, for free. Same operations in the same order: the
    same bits as the general path (tested). BLAS runs on one thread for tiles of ordinary size
    (``gram.blas_threads``: measured, a tile's ``syrk`` is too small to share two busy cores).
    """
    from .ls import GramSystem

    J = x.shape[0]
    C = V.n_channels(order, net.d)
    N = net.n_basis
    accumulate = _dispatch.get_kernel("gram", "gram_accumulate_channels", "cpu")
    blas_threads = _dispatch.get_kernel("gram", "blas_threads", "cpu")
    A = np.zeros((nb, nb))
    b = np.zeros(nb)
    m = min(tile, J)
    R = np.empty((m, nb))
    ty = np.empty(m)
    active = np.asarray(problem._active, dtype=np.int64)
    coef, w, target = problem.coef, problem.weights, problem.target
    ansatz = net.ansatz is not None
    if ansatz:
        transform = _dispatch.get_kernel("mlp", "ansatz_forward", "cpu")
        scratch = np.empty(C * m * N, dtype=net.dtype)
        no_g = np.empty(0, dtype=net.dtype)
    else:
        unit = np.zeros((C, m), dtype=net.dtype)   # phi = 1: the bias column is the constant 1
        unit[0] = 1
        no_offset = np.empty((C, 0), dtype=net.dtype)
    ywy = 0.0
    with blas_threads(m):
        for lo in range(0, J, tile):
            hi = min(J, lo + tile)
            T = hi - lo
            Z = net.forward(x[lo:hi], order).basis
            if ansatz:
                phi, G = net.ansatz_channels(x[lo:hi], order)
                Vt = scratch[:C * T * N].reshape(C, T, N)
                transform(net.d, Z, phi, no_g, Vt)
            else:
                Vt, phi, G = Z, unit[:, :T], no_offset
            part, check = accumulate(Vt, phi, coef, active, w, target, G, lo, A, b, R, ty)
            if check != 0.0:
                raise ValueError(f"ls.assemble: the basis rows at points {lo}:{hi} contain NaN or inf "
                                 f"(the network's parameters or its output overflowed)")
            ywy += part
    _dispatch.get_kernel("gram", "symmetrize", "cpu")(A)
    return GramSystem(A, b, J, float(ywy))


def _set_coefficients(net, theta_c):
    N = net.n_basis
    net.params["out.c"] = theta_c[:N]
    if net.out_bias:
        net.params["out.c0"] = theta_c[N:N + 1]


class LSHybrid:
    r"""The LS-hybrid trainer of Cyr et al.: exact output coefficients, gradient steps on the rest.

    Args:
      net: :class:`fastopt.nn.MLP` to train (in place).
      sample: callable ``sample(step, rng) -> (x, weights)`` giving the quadrature points (J, d) and
        weights (J,) of a step (e.g. ``lambda k, rng: fastopt.quadrature.stratified(J, rng)``), or a
        fixed ``(x, weights)`` pair (then every step uses it).
      make_problem: callable ``make_problem(x, weights) -> LeastSquares | Energy``: the loss at those
        points (targets / source values evaluated there).
      optimizer: a :mod:`fastopt.optim` class (default Adam) for the hidden parameters.
      lr: its learning rate; ``optimizer_options``: its other keyword arguments.
      reg: ridge added to the LS matrix (``solve``'s ``reg``), ``method``: ``solve``'s method.
      fresh_points: draw independent points for the gradient step (the lecture's code); else the
        gradient uses the system's points (the unbiased variable-projection gradient).
      exact: optional callable ``exact(x) -> (u, grad u)`` ((J,), (J, d)) for the error history.
      eval_points: (x, weights) on which the errors are measured (required with ``exact``).
      seed: the sampler's seed.
    Attributes:
      history: dict of lists: ``step, loss, coef_norm, condition, method, rank`` and, with ``exact``,
        ``l2_error, h1_error`` (relative), ``time_s``.
    """

    def __init__(self, net, sample, make_problem, *, optimizer=None, lr=1e-3, optimizer_options=None, reg=0.0,
                 method="auto", fresh_points=False, exact=None, eval_points=None, record_every=1, seed=0):
        from .optim import Adam

        f = "LSHybrid"
        self.net = net
        if callable(sample):
            self._sample = sample
        else:
            try:
                xs, ws = sample
            except (TypeError, ValueError):
                raise TypeError(f"{f}: sample must be a callable (step, rng) -> (x, weights) or an (x, weights) "
                                f"pair") from None
            self._sample = lambda step, rng: (xs, ws)
        if not callable(make_problem):
            raise TypeError(f"{f}: make_problem must be a callable (x, weights) -> problem")
        self.make_problem = make_problem
        self.reg = V.nonnegative(f, "reg", reg)
        self.method = method
        self.fresh_points = V.flag(f, "fresh_points", fresh_points)
        if exact is not None and eval_points is None:
            raise ValueError(f"{f}: eval_points (x, weights) are needed to measure the error against exact")
        self.exact, self.eval_points = exact, eval_points
        self.record_every = V.integer(f, "record_every", record_every, 1)
        self.rng = np.random.default_rng(seed)
        opt_cls = Adam if optimizer is None else optimizer
        frozen = [{"params": coefficient_names(net), "lr": 0.0}]   # c is solved for, never stepped
        self.optimizer = opt_cls(net.params, lr=lr, groups=frozen, **(optimizer_options or {}))
        self.grad = net.params.zeros_like()
        self.step_count = 0
        self.history = {k: [] for k in ("step", "loss", "coef_norm", "condition", "method", "rank", "l2_error",
                                        "h1_error", "time_s")}
        self._elapsed = 0.0

    def solve_coefficients(self, x, weights):
        """Assemble at ``(x, weights)``, solve, write ``c`` into the network; returns ``(LSSolution, problem)``."""
        from .ls import solve

        problem = self.make_problem(x, weights)
        system = assemble(self.net, x, problem)
        sol = solve(system.A, system.b, reg=self.reg, method=self.method)
        _set_coefficients(self.net, sol.c)
        return sol, problem

    def step(self):
        """One LS-hybrid step; returns the loss at the gradient's points (after the solve, before the step).

        The history records the network as the solve left it (errors included), before the
        gradient step moves the hidden parameters.
        """
        t0 = time.perf_counter()
        k = self.step_count
        x, w = self._sample(k, self.rng)
        sol, problem = self.solve_coefficients(x, w)
        if self.fresh_points:
            x, w = self._sample(k, self.rng)
            problem = self.make_problem(x, w)
        loss, _ = self.net.loss_and_grad(x, problem, problem.order, self.grad)
        self._elapsed += time.perf_counter() - t0
        if k % self.record_every == 0:
            self._record(k, loss, sol)
        t0 = time.perf_counter()
        self.optimizer.step(self.grad)
        self._elapsed += time.perf_counter() - t0
        self.step_count += 1
        return loss

    def _record(self, k, loss, sol):
        h = self.history
        h["step"].append(k)
        h["loss"].append(loss)
        h["coef_norm"].append(float(_dispatch.array_module(sol.c).linalg.norm(sol.c)))
        h["condition"].append(sol.condition_number)
        h["method"].append(sol.method)
        h["rank"].append(sol.rank)
        h["time_s"].append(self._elapsed)
        if self.exact is not None:
            l2, h1 = relative_errors(self.net, self.exact, *self.eval_points)
            h["l2_error"].append(l2)
            h["h1_error"].append(h1)

    def run(self, steps, progress=False):
        """``steps`` LS-hybrid steps (a tqdm bar with ``progress``); returns :attr:`history`."""
        steps = V.integer("LSHybrid.run", "steps", steps, 0)
        it = range(steps)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="LS hybrid", leave=False)
        for _ in it:
            self.step()
        return self.history


def relative_errors(net, exact, x, weights):
    """Relative L2 and H1 (semi-norm included) errors of ``net`` against ``exact(x) -> (u, grad u)``.

    ``||e||^2 = sum_j w_j e_j^2`` with the quadrature ``(x, weights)``; H1 adds the gradient's error.
    Arrays on the network's backend (``exact`` gets and returns arrays of x's module).
    """
    U = net.forward(x, 1).u
    xp = _dispatch.array_module(U)
    u, du = exact(x)
    du = xp.reshape(du, (x.shape[0], -1))
    e0 = U[0] - u
    e1 = U[1:].T - du
    n0 = float(xp.dot(weights, u * u))
    n1 = float(xp.dot(weights, xp.sum(du * du, axis=1)))
    err0 = float(xp.dot(weights, e0 * e0))
    err1 = float(xp.dot(weights, xp.sum(e1 * e1, axis=1)))
    l2 = math.sqrt(err0 / n0) if n0 > 0 else math.sqrt(err0)
    h1 = math.sqrt((err0 + err1) / (n0 + n1)) if n0 + n1 > 0 else math.sqrt(err0 + err1)
    return l2, h1
