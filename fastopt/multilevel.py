r"""Multilevel networks: train a network, freeze it, train the next one on the residual equation.

Aldirany, Cottereau, Laforest and Prudhomme's multilevel neural networks, in the spirit of the
lecture (not their exact method). For a linear problem ``L u = f`` on (0, 1) with
``u(0) = u(1) = 0`` and ``L u = sign * u''``:

1. train a network ``u_0`` on the PDE residual ``L u_0 - f``;
2. freeze it. The error ``e_1 = u - u_0`` solves the *residual equation* of the same type
   ``L e_1 = r_1 := f - L u_0`` (same operator, same boundary conditions), so train ``u_1`` on it;
3. repeat: level ``l`` solves ``L e_l = r_l := f - L (u_0 + ... + u_{l-1})``; the approximation is the
   sum ``u_0 + u_1 + ... + u_l``.

Spectral bias (the F-principle) makes the error of a trained network high-frequency, so later
levels get Fourier-feature first layers ``(x, cos k_1 x, sin k_1 x, ...)`` of higher wavenumbers
(:meth:`fastopt.fourier.FourierFeatures.from_wavenumbers`).

**Scaling.** The error ``e_l`` is small (it falls level by level) while a freshly initialised
network is of order one, so each level trains a *normalised* network ``v_l = e_l / s_l`` on
``L v_l = r_l / s_l`` and the sum carries ``s_l v_l``. The scale ``s_l`` should be the size of
``e_l``, which is unknown; the rules (:class:`LevelSpec` ``scale``):

- ``"solve"`` (the default): solve the residual equation cheaply for the size only. ``r_l`` is
  sampled on a uniform grid of ``scale_grid`` cells and ``sign e'' = r_l`` with zero boundary values
  is solved by second-order finite differences (one tridiagonal solve, O(M)); ``s_l`` is the RMS of
  that solution. In 1D this is the size of ``e_l`` up to O(h^2) (relative), whatever its frequency
  content, which is why it is the default here. Only the number ``s_l`` is used: the network still
  learns ``e_l``.
- ``"rms"``: ``s_l = RMS(r_l) / kappa_l^2``: for ``e = a sin(kappa x)``, ``|e''| = kappa^2 |e|``.
  ``kappa_l`` is the level's typical wavenumber, :attr:`LevelSpec.wavenumber` (default: the
  largest Fourier wavenumber of the level, or pi without features). Dimension-free, but off by
  ``(kappa_true / kappa_l)^2`` when the guess is wrong.
- a positive number: that scale; ``None``: no scaling (``s_l = 1``).

The losses are weighted by a composite Gauss-Legendre rule on (0, 1) (weights summing to one),
so level ``l``'s loss times ``s_l^2`` is ``int_0^1 (L(u_0 + .. + u_l) - f)^2 dx``: the PINN loss of
the *summed* solution, which :attr:`MultilevelResult.histories` records step by step.

**Optimisers.** Each level runs a schedule of stages, e.g. ``Stage("adam", 2000, {"lr": 1e-3})``
then ``Stage("lbfgs", 1000)`` (SciPy's L-BFGS-B on the flat parameters, :func:`fastopt.optim.lbfgs`).

Example: two small levels for ``-u'' = pi^2 sin(pi x)`` (exact ``u = sin(pi x)``).
  >>> import numpy as np
  >>> from fastopt.multilevel import Poisson1D, LevelSpec, Stage, train_levels
  >>> problem = Poisson1D.sine(1)
  >>> levels = [LevelSpec(hidden=(8,), stages=(Stage("adam", 200, {"lr": 1e-2}),), n_points=32),
  ...           LevelSpec(hidden=(8,), wavenumbers=(np.pi, 2 * np.pi), stages=(Stage("lbfgs", 100),), n_points=32)]
  >>> res = train_levels(problem, levels, seed=0)
  >>> len(res.nets), res.errors[1]["l2"] < res.errors[0]["l2"]
  (2, True)
  >>> u = res.solution.channels(np.array([[0.0], [0.5]]), order=2)      # (value, u', u'') at 2 points
  >>> u.shape, abs(float(u[0, 0])) < 1e-14                                # the box ansatz: u(0) = 0
  ((3, 2), True)

References:
  Z. Aldirany, R. Cottereau, M. Laforest, S. Prudhomme, Multi-level neural networks for accurate
  solutions of boundary-value problems, Comput. Methods Appl. Mech. Engrg. 418 (2024) 116666
  (arXiv:2308.11503), Sections 3-4 (the residual equations and their normalisation).
  Z.-Q. J. Xu et al., Frequency principle: Fourier analysis sheds light on deep neural networks,
  Commun. Comput. Phys. 28 (2020).  M. Tancik et al., Fourier features let networks learn high
  frequency functions in low dimensional domains, NeurIPS 2020.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from . import _validate as V
from .fourier import FourierFeatures
from .nn import MLP, Ansatz
from .optim import Adam, Momentum, SGD, lbfgs
from .problems import LeastSquares

__all__ = ["Poisson1D", "Stage", "LevelSpec", "MultilevelSolution", "MultilevelResult", "train_levels",
           "residual_scale", "gauss_legendre", "relative_errors", "OPTIMISERS", "SCALE_RULES"]

#: The optimisers a :class:`Stage` may name (first-order ones take their class's keyword options).
OPTIMISERS = ("adam", "sgd", "momentum", "lbfgs")
#: The scale rules of :class:`LevelSpec` (besides a positive number and None).
SCALE_RULES = ("solve", "rms")
_FIRST_ORDER = {"adam": Adam, "sgd": SGD, "momentum": Momentum}
#: Most points per forward pass when evaluating a solution (see ``_Objective``).
_CHUNK = 256


# --------------------------------------------------------------------------------------------- problem
@dataclass(frozen=True)
class Poisson1D:
    r"""``sign * u''(x) = f(x)`` on (0, 1) with ``u(0) = u(1) = 0``; optional exact solution.

    Args:
      f: callable ``f(x) -> (J,)`` on a (J,) array of points.
      sign: +1 for ``u'' = f``, -1 for ``-u'' = f`` (the default).
      u, du: optional exact solution and its derivative (callables on (J,) arrays) for the errors.
      name: a label for reports.

    The zero Dirichlet conditions are built into every network by the ansatz ``x (1 - x) N(x)``
    (:meth:`fastopt.nn.Ansatz.box`), so the loss is the PDE residual alone.
    """

    f: Callable
    sign: float = -1.0
    u: Optional[Callable] = None
    du: Optional[Callable] = None
    name: str = "poisson1d"

    def __post_init__(self):
        fn = "Poisson1D"
        if not callable(self.f):
            raise TypeError(f"{fn}: f must be a callable x -> f(x), got {type(self.f).__name__}")
        if self.sign not in (1, -1, 1.0, -1.0) or isinstance(self.sign, bool):
            raise ValueError(f"{fn}: sign must be +1 (u'' = f) or -1 (-u'' = f), got {self.sign!r}")
        for name in ("u", "du"):
            v = getattr(self, name)
            if v is not None and not callable(v):
                raise TypeError(f"{fn}: {name} must be a callable or None, got {type(v).__name__}")
        if (self.u is None) != (self.du is None):
            raise ValueError(f"{fn}: give both the exact u and du (for L2 and H1 errors), or neither")

    @property
    def has_exact(self) -> bool:
        return self.u is not None

    @classmethod
    def sine(cls, n=1, sign=-1.0):
        r"""Exact ``u = sin(n pi x)``: ``f = -sign (n pi)^2 sin(n pi x)``."""
        k = n * math.pi
        return cls(f=lambda x: -sign * k * k * np.sin(k * x), sign=sign, u=lambda x: np.sin(k * x),
                   du=lambda x: k * np.cos(k * x), name=f"sin({n} pi x)")

    @classmethod
    def exp_sine(cls):
        r"""The lecture's multilevel example: ``-u'' = f``, exact ``u = exp(sin 2 pi x) - 1 + x^3 - x``.

        ``u' = 2 pi cos(2 pi x) e^{sin 2 pi x} + 3 x^2 - 1``,
        ``u'' = 4 pi^2 (cos^2(2 pi x) - sin(2 pi x)) e^{sin 2 pi x} + 6 x``. Its Fourier content
        falls geometrically (the harmonics of 2 pi carry the Bessel weights ``I_n(1)``:
        0.57, 0.14, 0.022, 2.7e-3, 2.7e-4, 2.2e-5, ...): every level has finer detail to find.
        """
        w = 2 * math.pi

        def u(x):
            return np.exp(np.sin(w * x)) - 1 + x ** 3 - x

        def du(x):
            return w * np.cos(w * x) * np.exp(np.sin(w * x)) + 3 * x ** 2 - 1

        def f(x):
            s, c = np.sin(w * x), np.cos(w * x)
            return -(w * w * (c * c - s) * np.exp(s) + 6 * x)

        return cls(f=f, sign=-1.0, u=u, du=du, name="exp(sin 2 pi x) - 1 + x^3 - x")


# --------------------------------------------------------------------------------------------- levels
class Stage(NamedTuple):
    """One optimiser stage of a level: ``name`` in :data:`OPTIMISERS`, ``steps`` and keyword ``options``.

    First-order stages take their class's options (``{"lr": 1e-3}``, a schedule as ``lr``, ...);
    ``"lbfgs"`` takes those of :func:`fastopt.optim.lbfgs` (``history``, ``gtol``, ``ftol``) and counts
    iterations (each costs about 1.1 loss-and-gradient evaluations).
    """

    name: str
    steps: int
    options: dict = {}


def _default_stages():
    return (Stage("adam", 1000, {"lr": 1e-3}), Stage("lbfgs", 1000))


@dataclass
class LevelSpec:
    r"""The network, points, optimisers and scale rule of one level.

    Args:
      hidden: hidden-layer widths of the level's tanh MLP.
      wavenumbers: angular wavenumbers ``k_i`` of a Fourier-feature first layer
        ``(x, cos k_i x, sin k_i x)``; empty: the network sees x alone.
      stages: the optimiser schedule (:class:`Stage` tuples, run in order).
      n_points: collocation points (a multiple of ``gauss_order``): a composite Gauss-Legendre rule
        on equal cells of (0, 1).
      gauss_order: points per cell of that rule.
      scale: the scale rule (module docstring): "solve", "rms", a positive number or None.
      wavenumber: ``kappa`` of the "rms" rule (default: the largest of ``wavenumbers``, else pi).
      activation: "tanh" or "sin".
      zero_output: whether a correction (level >= 1) starts with its output layer at zero, so that
        the sum starts exactly where the previous level ended; False keeps the random (Glorot)
        output layer, a random O(1) function (times the scale) added to the sum.
      seed: the initialisation seed (default: ``seed + level`` of :func:`train_levels`).
    """

    hidden: Sequence[int] = (20, 20)
    wavenumbers: Sequence[float] = ()
    stages: Sequence[Stage] = field(default_factory=_default_stages)
    n_points: int = 256
    gauss_order: int = 8
    scale: object = "solve"
    wavenumber: Optional[float] = None
    activation: str = "tanh"
    zero_output: bool = True
    seed: Optional[int] = None

    def typical_wavenumber(self) -> float:
        """``kappa`` of the "rms" scale rule."""
        if self.wavenumber is not None:
            return float(self.wavenumber)
        return float(max(self.wavenumbers)) if len(self.wavenumbers) else math.pi

    def make_net(self, seed, dtype=np.float64, backend="cpu") -> MLP:
        """A fresh network of this level (box ansatz: zero Dirichlet values)."""
        ff = FourierFeatures.from_wavenumbers(list(self.wavenumbers), dtype=dtype) if len(self.wavenumbers) else None
        return MLP(1, tuple(self.hidden), self.activation, fourier=ff, ansatz=Ansatz.box(0.0, 1.0), dtype=dtype,
                   seed=seed, backend=backend)


def _check_level(i, spec):
    f = "train_levels"
    if not isinstance(spec, LevelSpec):
        raise TypeError(f"{f}: levels[{i}] must be a LevelSpec, got {type(spec).__name__}")
    w = f"levels[{i}]"
    V.integer(f, f"{w}.gauss_order", spec.gauss_order, 1)
    V.integer(f, f"{w}.n_points", spec.n_points, 1)
    if spec.n_points % spec.gauss_order:
        raise ValueError(f"{f}: {w}.n_points ({spec.n_points}) must be a multiple of gauss_order "
                         f"({spec.gauss_order})")
    ks = np.asarray(spec.wavenumbers, dtype=float).ravel() if len(spec.wavenumbers) else np.zeros(0)
    if not np.all(np.isfinite(ks)) or np.any(ks <= 0):
        raise ValueError(f"{f}: {w}.wavenumbers must be finite and > 0, got {list(spec.wavenumbers)}")
    if spec.wavenumber is not None:
        V.positive(f, f"{w}.wavenumber", spec.wavenumber)
    s = spec.scale
    if not (s is None or (isinstance(s, str) and s in SCALE_RULES)):
        if isinstance(s, str):
            raise ValueError(f"{f}: {w}.scale must be one of {list(SCALE_RULES)}, a number > 0 or None, got {s!r}")
        V.positive(f, f"{w}.scale", s)
    if not len(spec.stages):
        raise ValueError(f"{f}: {w}.stages is empty: a level needs at least one optimiser stage")
    for j, st in enumerate(spec.stages):
        if not isinstance(st, tuple) or len(st) not in (2, 3):
            raise TypeError(f"{f}: {w}.stages[{j}] must be a Stage(name, steps, options), got {st!r}")
        st = Stage(*st)
        if st.name not in OPTIMISERS:
            raise ValueError(f"{f}: {w}.stages[{j}] names the optimiser {st.name!r}; choose from {list(OPTIMISERS)}")
        V.integer(f, f"{w}.stages[{j}].steps", st.steps, 1)
        if not isinstance(st.options, dict):
            raise TypeError(f"{f}: {w}.stages[{j}].options must be a dict, got {type(st.options).__name__}")


# --------------------------------------------------------------------------------------------- numerics
def gauss_legendre(n_cells, order=8):
    """A composite Gauss-Legendre rule on ``n_cells`` equal cells of (0, 1): ``(x (J, 1), w (J,))``, sum(w) = 1."""
    t, wt = np.polynomial.legendre.leggauss(int(order))
    edges = np.linspace(0.0, 1.0, int(n_cells) + 1)
    h = np.diff(edges)
    x = (edges[:-1, None] + 0.5 * h[:, None] * (t[None, :] + 1)).reshape(-1)
    w = (0.5 * h[:, None] * wt[None, :]).reshape(-1)
    return np.ascontiguousarray(x[:, None]), w


def residual_scale(rhs, sign=-1.0):
    r"""The RMS of the solution of ``sign * e'' = rhs`` on (0, 1), ``e(0) = e(1) = 0`` (the "solve" rule).

    Args:
      rhs: (M + 1,) right-hand side on the uniform grid ``x_i = i / M`` (end values unused).
      sign: the operator's sign.
    Returns:
      ``sqrt(h sum_i e_i^2)`` (the trapezoidal L2 norm on (0, 1)), with ``e`` the second-order finite-difference solution
      (``sign (e_{i-1} - 2 e_i + e_{i+1}) / h^2 = rhs_i``): one tridiagonal solve.
    """
    import scipy.linalg  # noqa: PLC0415 - 0.3 s to import: only when a level needs it

    rhs = np.asarray(rhs, dtype=np.float64)
    M = rhs.size - 1
    if M < 2:
        raise ValueError(f"residual_scale: need at least 3 grid values, got {rhs.size}")
    h2 = (1.0 / M) ** 2
    n = M - 1
    ab = np.empty((3, n))
    ab[0], ab[1], ab[2] = 1.0, -2.0, 1.0
    e = scipy.linalg.solve_banded((1, 1), ab, rhs[1:-1] * h2 / sign)
    return float(math.sqrt(np.sum(e * e) / M))         # the trapezoidal rule (e = 0 at the ends)


def relative_errors(solution, problem, x, w):
    """Relative L2 and H1 errors of ``solution`` (channels callable) against ``problem``'s exact u, u'.

    ``||e||_{L2} / ||u||_{L2}`` and ``||e||_{H1} / ||u||_{H1}`` with the full H1 norm
    ``||v||_{H1}^2 = ||v||^2 + ||v'||^2``, by the quadrature ``(x, w)``.
    """
    U = solution.channels(x, order=1)
    xs = x[:, 0]
    e0, e1 = U[0] - problem.u(xs), U[1] - problem.du(xs)
    n0, n1 = problem.u(xs), problem.du(xs)
    l2e, l2u = float(w @ (e0 * e0)), float(w @ (n0 * n0))
    h1e, h1u = l2e + float(w @ (e1 * e1)), l2u + float(w @ (n1 * n1))
    return {"l2": math.sqrt(l2e / l2u), "h1": math.sqrt(h1e / h1u)}


class MultilevelSolution:
    r"""The summed approximation ``u = sum_l s_l v_l`` of a multilevel run, with derivative channels.

    Args:
      nets: the level networks ``v_l`` (:class:`fastopt.nn.MLP`, d = 1).
      scales: their scales ``s_l``.
    Calling it gives the values (J,); :meth:`channels` gives ``(C, J)`` channels (value, u', u'').
    Points: (J,) or (J, 1) arrays.
    """

    def __init__(self, nets, scales):
        if len(nets) != len(scales):
            raise ValueError(f"MultilevelSolution: {len(nets)} networks but {len(scales)} scales")
        self.nets, self.scales = list(nets), [float(s) for s in scales]

    def __len__(self):
        return len(self.nets)

    def truncated(self, n_levels):
        """The sum of the first ``n_levels`` levels."""
        return MultilevelSolution(self.nets[:n_levels], self.scales[:n_levels])

    def channels(self, x, order=0):
        """``sum_l s_l`` (channels of level l): a new ``(C, J)`` array, C = 1, 2, 3 for order 0, 1, 2."""
        x = _points(x)
        C = V.n_channels(V.derivative_order("MultilevelSolution.channels", order), 1)
        out = np.zeros((C, x.shape[0]))
        for net, s in zip(self.nets, self.scales):
            for lo in range(0, x.shape[0], _CHUNK):         # bounded passes: see _Objective
                xn = np.ascontiguousarray(x[lo:lo + _CHUNK], dtype=net.dtype)
                out[:, lo:lo + _CHUNK] += s * net.forward(xn, order).u
        return out

    def __call__(self, x):
        return self.channels(x, 0)[0]


def _points(x):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[1] != 1:
        raise ValueError(f"MultilevelSolution: points must have shape (J,) or (J, 1), got {x.shape}")
    return np.ascontiguousarray(x)


@dataclass
class MultilevelResult:
    """What :func:`train_levels` returns.

    Attributes:
      nets: the level networks ``v_l`` (frozen; their parameters are the trained ones).
      scales: the scales ``s_l`` (the level's correction is ``s_l v_l``).
      solution: :class:`MultilevelSolution` of all levels (``solution.truncated(l + 1)``: after level l).
      histories: per level, the loss before training, at each first-order step (before its update)
        or after each L-BFGS iteration, and at the end (``2 + sum(stage_steps[l])`` entries), in the
        units of the original problem: ``int (L(u_0 + .. + u_l) - f)^2`` (level loss times ``s_l^2``).
      stage_steps: per level, the number of history entries of each stage (to mark them in plots).
      errors: per level, ``{"l2", "h1"}`` relative errors of the sum so far on the evaluation rule
        (None without an exact solution).
      residuals: per level, ``int (L(u_0 + .. + u_l) - f)^2`` on the (finer) evaluation rule: the
        loss away from the collocation points, which a level that overfits them cannot hide.
      rhs: per level, ``(x, r_l)``: the collocation points and the unscaled right-hand side
        ``r_l = f - L(u_0 + .. + u_{l-1})`` there.
      times: per level, seconds spent training (optimiser steps, L-BFGS, the scale estimate).
      evaluations: per level, the number of loss-and-gradient evaluations.
    """

    nets: list
    scales: list
    solution: MultilevelSolution
    histories: list
    stage_steps: list
    errors: list
    residuals: list
    rhs: list
    times: list
    evaluations: list

    def summary(self) -> list:
        """One dict per level: scale, final loss, errors, time, evaluations."""
        return [{"level": l, "scale": self.scales[l], "loss": float(self.histories[l][-1]),
                 "residual": self.residuals[l],
                 "l2": None if self.errors[l] is None else self.errors[l]["l2"],
                 "h1": None if self.errors[l] is None else self.errors[l]["h1"],
                 "time_s": self.times[l], "evaluations": self.evaluations[l]} for l in range(len(self.nets))]


# --------------------------------------------------------------------------------------------- training
def _scale_of(spec, problem, previous, rhs_x, scale_grid):
    rule = spec.scale
    if rule is None:
        return 1.0
    if not isinstance(rule, str):
        return float(rule)
    if rule == "rms":
        return float(np.sqrt(np.mean(rhs_x ** 2))) / spec.typical_wavenumber() ** 2
    grid = np.linspace(0.0, 1.0, scale_grid + 1)
    r = _rhs(problem, previous, grid[:, None])
    return residual_scale(r, problem.sign)


def _rhs(problem, previous, x):
    """``r = f - L(sum of the previous levels)`` at the points x (J, 1)."""
    r = np.asarray(problem.f(x[:, 0]), dtype=np.float64).copy()
    if r.shape != (x.shape[0],):
        raise ValueError(f"train_levels: problem.f must return one value per point, got shape {r.shape}")
    if len(previous):
        r -= problem.sign * previous.channels(x, 2)[2]
    return r


class _Objective:
    """The level's loss and gradient over the collocation points, in chunks of at most ``chunk`` points.

    Chunks bound the size of one forward pass. They were introduced when the CPU kernels called one
    BLAS GEMM per layer over ``C J`` rows, which OpenBLAS ran multithreaded above a size threshold:
    on a machine whose cores are busy that measured 30x slower than the single-threaded call (7.7 ms
    against 0.26 ms CPU time for a forward at J = 1024, order 2, widths (20, 20)). The kernels no
    longer call BLAS (a register-tiled micro-kernel), but their own threaded build starts at ~300 us
    of work per pass (``fastopt.kernels.cpu.mlp._use_threads``), which a level of 768-1024 points
    reaches: 256-point chunks keep every pass serial (this module's levels run one after another on
    one core; two parallel regions per evaluation cost 100-200 us of wake-ups) and keep the summation
    order the experiments' numbers were measured with. The sum over chunks is the same loss (the
    quadrature weights are sliced with the points).
    """

    def __init__(self, net, x, target, w, sign, chunk):
        self.net = net
        self.parts = [(np.ascontiguousarray(x[i:i + chunk]),
                       LeastSquares.pinn(x[i:i + chunk], target[i:i + chunk], w[i:i + chunk], sign=sign))
                      for i in range(0, x.shape[0], chunk)]
        self.tmp = net.params.zeros_like() if len(self.parts) > 1 else None
        self.count = 0

    def __call__(self, grad):
        """The loss; ``grad`` (FlatParams) receives its gradient."""
        self.count += 1
        if self.tmp is None:
            x, loss = self.parts[0]
            return self.net.loss_and_grad(x, loss, 2, grad)[0]
        total, g = 0.0, grad.data
        for i, (x, loss) in enumerate(self.parts):
            value, _ = self.net.loss_and_grad(x, loss, 2, grad if i == 0 else self.tmp)
            if i:
                g += self.tmp.data
            total += value
        return total


def _train_level(objective, spec, scale2, progress_bar):
    """Run the level's stages on ``objective.net``; returns (history, stage_steps)."""
    net = objective.net
    grad = net.params.zeros_like()
    history, stage_steps = [objective(grad) * scale2], []
    for st in spec.stages:
        st = Stage(*st)
        before = len(history)
        if st.name == "lbfgs":
            def fun_and_grad(_params):
                return objective(grad), grad

            def on_iteration(_k, value):
                history.append(value * scale2)
                if progress_bar is not None:
                    progress_bar.update(1)

            lbfgs(fun_and_grad, net.params, max_iter=st.steps, callback=on_iteration, **st.options)
        else:
            # a noisy first-order stage ends at the best parameters it visited (Adam's loss "jumps")
            opt = _FIRST_ORDER[st.name](net.params, **st.options)
            best, best_value = net.params.data.copy(), math.inf
            for _ in range(st.steps):
                value = objective(grad)
                if value < best_value:
                    best_value = value
                    best[...] = net.params.data
                opt.step(grad)
                history.append(value * scale2)
                if progress_bar is not None:
                    progress_bar.update(1)
            if not objective(grad) <= best_value:
                net.params.data[...] = best
        stage_steps.append(len(history) - before)
    # the loss at the final parameters
    history.append(objective(grad) * scale2)
    return np.asarray(history), stage_steps


def train_levels(problem, levels, *, seed=0, eval_cells=512, scale_grid=4096, chunk=256, dtype=np.float64,
                 backend="cpu", progress=False, callback=None) -> MultilevelResult:
    r"""Train the levels of a multilevel network one after the other (module docstring).

    Level ``l`` trains a fresh network ``v_l`` of ``levels[l]`` on ``L v_l = r_l / s_l`` with
    ``r_l = f - L(u_0 + ... + u_{l-1})`` (the previous levels frozen) and the level's scale ``s_l``;
    its correction to the sum is ``u_l = s_l v_l``.

    Args:
      problem: a :class:`Poisson1D`.
      levels: a non-empty sequence of :class:`LevelSpec`.
      seed: level ``l``'s networks are initialised with ``seed + l`` unless the spec names a seed.
      eval_cells: cells of the 8-point Gauss-Legendre rule of the errors (8 * eval_cells points).
      scale_grid: cells of the uniform grid of the "solve" scale rule.
      chunk: most points per forward pass (the loss and gradient sum over chunks; see ``_Objective``).
      dtype: float64 (default; the accuracy multilevel training is for) or float32.
      backend: the networks' backend ("cpu", "gpu", "reference").
      progress: show a tqdm bar per level.
      callback: called as ``callback(level, result_so_far_dict)`` after each level.
    Returns:
      :class:`MultilevelResult`.
    Raises:
      TypeError / ValueError naming the bad argument, before anything is trained.
    """
    f = "train_levels"
    if not isinstance(problem, Poisson1D):
        raise TypeError(f"{f}: problem must be a Poisson1D, got {type(problem).__name__}")
    if isinstance(levels, LevelSpec):
        levels = [levels]
    try:
        levels = list(levels)
    except TypeError:
        raise TypeError(f"{f}: levels must be a sequence of LevelSpec, got {type(levels).__name__}") from None
    if not levels:
        raise ValueError(f"{f}: levels is empty: give at least one LevelSpec")
    for i, spec in enumerate(levels):
        _check_level(i, spec)
    seed = V.integer(f, "seed", seed, 0)
    eval_cells = V.integer(f, "eval_cells", eval_cells, 1)
    scale_grid = V.integer(f, "scale_grid", scale_grid, 2)
    chunk = V.integer(f, "chunk", chunk, 1)
    if callback is not None and not callable(callback):
        raise TypeError(f"{f}: callback must be callable or None")
    xe, we = gauss_legendre(eval_cells, 8)
    nets, scales, histories, stage_steps, errors, residuals, rhs, times, evals = [], [], [], [], [], [], [], [], []
    solution = MultilevelSolution([], [])
    for l, spec in enumerate(levels):
        t0 = time.perf_counter()
        x, w = gauss_legendre(spec.n_points // spec.gauss_order, spec.gauss_order)
        r = _rhs(problem, solution, x)
        s = _scale_of(spec, problem, solution, r, scale_grid)
        if not (math.isfinite(s) and s > 0):
            raise FloatingPointError(f"{f}: level {l} got the scale {s!r} (a zero or non-finite residual?)")
        net = spec.make_net(spec.seed if spec.seed is not None else seed + l, dtype, backend)
        if l > 0 and spec.zero_output:
            # a correction starts at zero (its output layer zeroed), so the sum starts where the
            # previous level ended and the optimiser can only improve on it; the hidden layers
            # keep their random initialisation (the basis the output layer combines).
            net.params["out.c"][...] = 0
            if net.out_bias:
                net.params["out.c0"][...] = 0
        xd = np.ascontiguousarray(x, dtype=dtype)
        objective = _Objective(net, xd, r / s, w, problem.sign, chunk)
        bar = None
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            bar = tqdm(total=sum(Stage(*st).steps for st in spec.stages), desc=f"multilevel: level {l}",
                       unit="step", leave=False)
        hist, steps = _train_level(objective, spec, s * s, bar)
        if bar is not None:
            bar.close()
        times.append(time.perf_counter() - t0)
        nets.append(net)
        scales.append(s)
        solution = MultilevelSolution(nets, scales)
        histories.append(hist)
        stage_steps.append(steps)
        evals.append(objective.count)
        rhs.append((x, r))
        errors.append(relative_errors(solution, problem, xe, we) if problem.has_exact else None)
        re = _rhs(problem, solution, xe)
        residuals.append(float(we @ (re * re)))
        if callback is not None:
            callback(l, {"scale": s, "loss": float(hist[-1]), "errors": errors[-1], "time_s": times[-1]})
    return MultilevelResult(nets, scales, solution, histories, stage_steps, errors, residuals, rhs, times, evals)
