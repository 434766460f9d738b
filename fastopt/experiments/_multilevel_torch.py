r"""A PyTorch twin of one multilevel level's training: the same network, weights, loss and Adam.

Issue 5 asks for the multilevel experiment "at a small fraction of the time that a PyTorch
implementation needs on the same machine". This module is that implementation, written the way
a PyTorch user would write a level of :func:`fastopt.multilevel.train_levels`:

- the network: the level's :class:`fastopt.nn.MLP` with its fixed Fourier features
  ``z_0 = (x, cos s x B, sin s x B)``, tanh (or sin) hidden layers ``z_l = sigma(z_{l-1} W_l + b_l)``,
  the linear output ``N = z_L c + c0`` and the box ansatz ``u = x (1 - x) N`` (every level's,
  :meth:`fastopt.multilevel.LevelSpec.make_net`), with parameters copied out of ``net.params``
  into leaf tensors (one per named parameter, as ``torch.nn.Linear`` would hold them);
- the loss: the level's PDE residual loss on its Gauss-Legendre points ``x_j`` and weights
  ``w_j`` (summing to one)::

      L(theta) = sum_j w_j (sign * u''(x_j) - r_l(x_j) / s_l)^2,
      r_l = f - sign * sum_{m < l} s_m u_m''

  with ``u''`` by double backward (``torch.autograd.grad(..., create_graph=True)`` twice) and
  the frozen lower levels' right-hand side ``r_l`` computed in PyTorch too (once, by the same
  double backward through their twins: :func:`lower_levels_rhs`);
- the optimiser: ``torch.optim.Adam`` (its default CPU implementation) with the level's lr;
  one step is ``zero_grad``, the loss, ``backward``, ``step``.

:func:`compare_level` trains the level from the same start (the fresh level network of
``train_levels``, its output layer zeroed for a correction) with fastopt (the ``_Objective`` and
:class:`fastopt.optim.Adam` that ``train_levels`` runs) and with the twin, after a warm-up of
both (no JIT compilation, cache load, workspace allocation or PyTorch first call is timed), in
alternating blocks of steps (a burst of load from other processes hits both; PyTorch at the
faster of its default thread count and one, each on its own copy), and reports the
time per Adam step of each (best block: noise only adds time; and the mean), the per-step losses
of both and their agreement, and the time of one loss-and-gradient evaluation: what an L-BFGS
iteration costs (fastopt runs SciPy's L-BFGS-B; for PyTorch, the closure ``torch.optim.LBFGS``
evaluates: ``zero_grad``, the loss, ``backward``).

Loss agreement (float64): both sides train on the same data (fastopt's right-hand side;
PyTorch's own, :func:`lower_levels_rhs`, is checked against it) and evaluate the same sums in
different orders (fastopt in chunks of 256 points with closed-form derivative channels, PyTorch by
autograd), so the losses and gradients at the start agree to rounding, and Adam's trajectories stay
together (measured on the experiment's levels: <= 1.5e-15 relative over 40 steps; the tolerances
:data:`START_RTOL`, :data:`TRACK_RTOL` leave room for other machines' BLAS and libm).

Example: the loss and gradient at a level network's start, both ways (needs PyTorch).
  >>> import numpy as np, pytest
  >>> _ = pytest.importorskip("torch")                    # the comparison is skipped without PyTorch
  >>> from fastopt.multilevel import LevelSpec, Poisson1D, gauss_legendre
  >>> from fastopt.problems import LeastSquares
  >>> from fastopt.experiments._multilevel_torch import TorchLevel
  >>> net = LevelSpec(hidden=(8,), wavenumbers=(np.pi, 2 * np.pi), n_points=32).make_net(seed=0)
  >>> x, w = gauss_legendre(4, 8)                          # 32 points, weights summing to one
  >>> f = Poisson1D.exp_sine().f(x[:, 0])
  >>> value, grad = net.loss_and_grad(x, LeastSquares.pinn(x, f, w, sign=-1.0), 2)
  >>> tvalue, tgrad = TorchLevel(net, x, f, w, sign=-1.0).loss_and_grad()
  >>> float(abs(tvalue - value) / value) < 1e-13, float(abs(tgrad - grad.data).max() / abs(grad.data).max()) < 1e-13
  (True, True)

References:
  Z. Aldirany, R. Cottereau, M. Laforest, S. Prudhomme, Multi-level neural networks for accurate
  solutions of boundary-value problems, CMAME 418 (2024) 116666.  PyTorch, ``torch.optim.Adam``
  and ``torch.autograd.grad`` (double backward).
"""
from __future__ import annotations

import time

import numpy as np

from ..multilevel import MultilevelSolution, Stage, _Objective, _rhs, gauss_legendre
from ..optim import Adam
from ._common import to_host

__all__ = ["torch_params", "TorchLevel", "lower_levels_rhs", "level_start", "compare_level", "START_RTOL",
           "TRACK_RTOL"]

#: Relative agreement of the two implementations' loss and gradient (max |difference| / max |g|) at the
#: same parameters, float64, and of the two right-hand sides (relative to max |f|). Measured on the
#: experiment's levels: losses 0 .. 1.1e-16, gradients 2e-16 .. 1.5e-15, right-hand sides <= 6e-16.
START_RTOL = 1e-12
#: Relative agreement of the losses along the first :data:`TRACK_STEPS` Adam steps from the same start.
#: Measured: <= 4e-16 over 40 steps on every level of the quick experiment.
TRACK_RTOL = 1e-11
#: Steps over which the losses are compared at ``TRACK_RTOL``; later ones are reported, not checked
#: (Adam divides by sqrt(v): a gradient entry near zero turns a 1e-14 difference into a larger one).
TRACK_STEPS = 20


def _torch():
    import torch  # noqa: PLC0415 - 1.5 s to import: only when the comparison runs

    return torch


def torch_params(net, dtype=None):
    """Leaf tensors (``requires_grad``) holding copies of ``net``'s parameters: ``{name: tensor}`` in buffer order.

    Args:
      net: a :class:`fastopt.nn.MLP` (any backend: the values are copied to the host).
      dtype: a torch dtype (default: ``net``'s: float64 -> torch.float64, float32 -> torch.float32).
    """
    torch = _torch()
    dt = dtype or {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[net.dtype]
    return {name: torch.tensor(to_host(net.params[name]), dtype=dt, requires_grad=True) for name in net.params.names}


def _check_box_ansatz(net):
    """The twin hard-codes ``u = x (1 - x) N`` (every level's ansatz): check ``net``'s against it."""
    if net.d != 1 or net.ansatz is None or net.ansatz.g is not None:
        raise ValueError("TorchLevel: the network must be 1D with the box ansatz x (1 - x) (LevelSpec.make_net)")
    t = np.linspace(0.0, 1.0, 5)[:, None].astype(net.dtype)
    phi = to_host(net.ansatz.phi(t, 3))
    want = np.stack([t[:, 0] * (1 - t[:, 0]), 1 - 2 * t[:, 0], np.full(5, -2.0)])
    if not np.allclose(phi, want, rtol=0, atol=1e-6):
        raise ValueError("TorchLevel: the network's ansatz is not x (1 - x): the twin implements that one only")


def _forward(net, p, x):
    """``u(x)`` (J,) of the level network ``net`` (its configuration) with the parameters ``p`` (tensors)."""
    torch = _torch()
    z = x
    if net.fourier is not None:
        B = p["fourier.B"] if net.train_B else torch.as_tensor(to_host(net.B), dtype=x.dtype)
        psi = net.scale * (x @ B)
        z = torch.cat(([x] if net.keep_x else []) + [torch.cos(psi), torch.sin(psi)], dim=1)
    act = torch.tanh if net.activation == "tanh" else torch.sin
    for l in range(len(net.hidden)):
        z = act(z @ p[f"dense{l}.W"] + p[f"dense{l}.b"])
    u = z @ p["out.c"]
    if net.out_bias:
        u = u + p["out.c0"]
    t = x[:, 0]
    return t * (1 - t) * u


def _second_derivative(net, p, x, create_graph=True):
    """``u''`` (J,) at the points ``x`` (J, 1) (``requires_grad``) by double backward (u_j depends on x_j alone)."""
    torch = _torch()
    u = _forward(net, p, x)
    du = torch.autograd.grad(u.sum(), x, create_graph=True)[0]
    return torch.autograd.grad(du.sum(), x, create_graph=create_graph)[0][:, 0]


class TorchLevel:
    r"""One level's network and residual loss in PyTorch, from a fastopt level network's weights.

    ``L = sum_j w_j (sign * u''(x_j) - target_j)^2`` (module docstring).

    Args:
      net: the fastopt level network (:class:`fastopt.nn.MLP`, 1D, box ansatz); its parameters
        are copied (``net`` is not changed).
      x: (J, 1) collocation points.  target: (J,) the scaled right-hand side ``r_l / s_l``.
      w: (J,) quadrature weights.  sign: the operator's sign (-1 for ``-u'' = f``).
    Attributes:
      params: ``{name: leaf tensor}`` in ``net.params`` order.
    """

    def __init__(self, net, x, target, w, sign=-1.0):
        _check_box_ansatz(net)
        torch = _torch()
        self.net, self.sign = net, float(sign)
        self.params = torch_params(net)
        dt = next(iter(self.params.values())).dtype
        self.x = torch.tensor(np.asarray(to_host(x)).reshape(-1, 1), dtype=dt, requires_grad=True)
        self.target = torch.tensor(np.asarray(to_host(target)), dtype=dt)
        self.w = torch.tensor(np.asarray(to_host(w)), dtype=dt)

    def set_params(self, net):
        """Copy ``net``'s current parameters into the leaves (in place: an optimiser keeps them)."""
        torch = _torch()
        with torch.no_grad():
            for name, t in self.params.items():
                t.copy_(torch.as_tensor(to_host(net.params[name])))

    def loss(self):
        """The residual loss (a 0-d tensor with its graph)."""
        r = self.sign * _second_derivative(self.net, self.params, self.x) - self.target
        return (self.w * r * r).sum()

    def closure(self):
        """What ``torch.optim.LBFGS``'s closure evaluates: ``zero_grad``, the loss, ``backward``; the loss (float)."""
        for t in self.params.values():
            t.grad = None
        value = self.loss()
        value.backward()
        return value.item()

    def loss_and_grad(self):
        """``(L, dL/dtheta)``: the loss and the flat gradient (NumPy, ``net.params`` layout)."""
        value = self.closure()
        return value, np.concatenate([t.grad.detach().numpy().ravel() for t in self.params.values()])

    def adam(self, lr):
        """``torch.optim.Adam`` over the leaves (default implementation and options but lr)."""
        return _torch().optim.Adam(list(self.params.values()), lr=lr)

    def step(self, opt):
        """One Adam step; the loss before it (float)."""
        opt.zero_grad(set_to_none=True)
        value = self.loss()
        value.backward()
        opt.step()
        return value.item()


def lower_levels_rhs(problem, nets, scales, x):
    r"""``r = f - sign * sum_m s_m u_m''`` at ``x`` (J, 1), the frozen levels' ``u_m''`` by PyTorch (double backward).

    The PyTorch way to build a level's right-hand side (once per level); equal to fastopt's
    ``train_levels`` right-hand side up to rounding. Returns a (J,) float64 NumPy array.
    """
    torch = _torch()
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    r = np.asarray(problem.f(x[:, 0]), dtype=np.float64).copy()
    for net, s in zip(nets, scales):
        p = {k: v.detach() for k, v in torch_params(net, torch.float64).items()}
        xt = torch.tensor(x, requires_grad=True)
        r -= problem.sign * float(s) * _second_derivative(net, p, xt, create_graph=False).detach().numpy()
    return r


def level_start(spec, level, seed, dtype=np.float64, backend="cpu"):
    """The network level ``level`` of ``train_levels`` starts from (seed ``seed + level`` unless the spec names one).

    Repeats ``train_levels``' two lines: a fresh :meth:`LevelSpec.make_net`, and for a correction
    (``level >= 1`` with ``zero_output``) the output layer zeroed.
    """
    net = spec.make_net(spec.seed if spec.seed is not None else seed + level, dtype, backend)
    if level > 0 and spec.zero_output:
        net.params["out.c"][...] = 0
        if net.out_bias:
            net.params["out.c0"][...] = 0
    return net


def _adam_lr(spec):
    for st in spec.stages:
        st = Stage(*st)
        if st.name == "adam":
            return float(st.options.get("lr", 1e-3))
    return 1e-3


def _blocks(steps, n_blocks):
    n_blocks = max(1, min(int(n_blocks), int(steps)))
    return [len(b) for b in np.array_split(np.arange(int(steps)), n_blocks)]


def compare_level(problem, spec, level, nets, scales, *, seed=0, steps=100, evaluations=20, warmup=3, blocks=4,
                  chunk=256, threads=None):
    r"""Time one level's Adam training in fastopt and in PyTorch from the same start; compare the losses.

    Args:
      problem: the :class:`fastopt.multilevel.Poisson1D`.
      spec: the level's :class:`fastopt.multilevel.LevelSpec` (its first Adam stage's lr is used).
      level: its index; ``nets[:level]``, ``scales[:level]`` are the frozen lower levels (from
        :class:`fastopt.multilevel.MultilevelResult`) and ``scales[level]`` is the level's scale.
      seed: the ``seed`` of ``train_levels`` (the start is :func:`level_start`).
      steps: Adam steps timed for each, in ``blocks`` alternating blocks (fastopt, PyTorch, ...).
      evaluations: loss-and-gradient evaluations timed for each (at the start), after the Adam steps.
      warmup: Adam steps of each on throw-away copies before any timing.
      chunk: fastopt's points per forward pass (``train_levels``' default).
      threads: PyTorch's intra-op thread counts to time, each with its own twin on the same
        trajectory (default: PyTorch's default and 1). PyTorch's time is that of the faster: with
        two OpenMP threads on two cores one of which another process uses, a step measured up to
        75x slower than with one, and fastopt's level training is single-threaded.
    Returns:
      dict: ``adam_us`` / ``torch_adam_us`` (best block, us per step; PyTorch: its faster thread
      count), ``adam_mean_us`` / ``torch_adam_mean_us``, ``eval_us`` / ``torch_eval_us`` (best of
      the evaluations), ``torch_by_threads`` ({threads: (adam_us, eval_us)}), ``threads`` (the
      faster count), ``losses`` / ``torch_losses`` (per step, before its update; PyTorch: the first
      thread count's), ``start_rel_diff`` (the losses at the start), ``grad_rel_diff`` (max
      |g_torch - g| / max |g| at the start), ``track_rel_diff`` (max over the first
      :data:`TRACK_STEPS` steps and the twins), ``final_rel_diff`` (the last step's),
      ``rhs_rel_diff`` (PyTorch's right-hand side against fastopt's, relative to max |f|),
      ``agree`` (all within :data:`START_RTOL` / :data:`TRACK_RTOL`), and the set-up (``level``,
      ``n_points``, ``n_params``, ``steps``, ``track_steps``, ``lr``, ``blocks``).

    Both sides train on fastopt's right-hand side (the same data: the implementations are compared);
    PyTorch's own (:func:`lower_levels_rhs`) is checked against it.
    """
    torch = _torch()
    old = torch.get_num_threads()
    counts = [old, 1] if threads is None else [int(t) for t in np.atleast_1d(threads)]
    counts = list(dict.fromkeys(counts))          # PyTorch's default may be 1 already
    try:
        return _compare(problem, spec, level, nets, scales, seed, steps, evaluations, warmup, blocks, chunk, counts,
                        torch)
    finally:
        torch.set_num_threads(old)


def _compare(problem, spec, level, nets, scales, seed, steps, evaluations, warmup, blocks, chunk, counts, torch):
    x, w = gauss_legendre(spec.n_points // spec.gauss_order, spec.gauss_order)
    s = float(scales[level])
    r_fast = _rhs(problem, MultilevelSolution(nets[:level], scales[:level]), x)
    r_torch = lower_levels_rhs(problem, nets[:level], scales[:level], x)
    # relative to |f|: r = f - L(u_0 + ...) cancels more digits at every level, and the rounding of the
    # terms that cancel (~1e-16 |f|) is what the two computations of r can differ by
    rhs_diff = float(np.max(np.abs(r_torch - r_fast)) / np.max(np.abs(problem.f(x[:, 0]))))
    lr = _adam_lr(spec)
    net = level_start(spec, level, seed)
    start = net.params.copy()
    objective = _Objective(net, np.ascontiguousarray(x, dtype=net.dtype), r_fast / s, w, problem.sign, chunk)
    twins = {n: TorchLevel(net, x, r_fast / s, w, problem.sign) for n in counts}
    grad = net.params.zeros_like()

    # the loss and gradient at the start, both ways
    value = objective(grad)
    tvalue, tgrad = twins[counts[0]].loss_and_grad()
    g = to_host(grad.data)
    grad_diff = float(np.max(np.abs(tgrad - g)) / max(np.max(np.abs(g)), np.finfo(float).tiny))

    # warm-up: compiled kernels loaded, workspaces allocated, PyTorch's first calls made; then back to the start
    opt = Adam(net.params, lr=lr)
    topts = {n: twin.adam(lr) for n, twin in twins.items()}
    for _ in range(warmup):
        objective(grad)
        opt.step(grad)
        for n, twin in twins.items():
            torch.set_num_threads(n)
            twin.step(topts[n])
    net.params.data[...] = start.data
    for twin in twins.values():
        twin.set_params(net)
    opt, topts = Adam(net.params, lr=lr), {n: twin.adam(lr) for n, twin in twins.items()}

    losses, t_fast = [], []
    tlosses, t_torch = {n: [] for n in counts}, {n: [] for n in counts}
    for k in _blocks(steps, blocks):
        t0 = time.perf_counter()
        for _ in range(k):
            losses.append(objective(grad))
            opt.step(grad)
        t_fast.append((time.perf_counter() - t0) / k)
        for n, twin in twins.items():
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            for _ in range(k):
                tlosses[n].append(twin.step(topts[n]))
            t_torch[n].append((time.perf_counter() - t0) / k)

    # one loss-and-gradient evaluation (an L-BFGS iteration's work), at the start, best of `evaluations`
    net.params.data[...] = start.data
    e_fast, e_torch = [], {n: [] for n in counts}
    for twin in twins.values():
        twin.set_params(net)
    for _ in range(evaluations):
        t0 = time.perf_counter()
        objective(grad)
        e_fast.append(time.perf_counter() - t0)
        for n, twin in twins.items():
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            twin.closure()
            e_torch[n].append(time.perf_counter() - t0)

    a = np.asarray(losses)
    rel = {n: np.abs(np.asarray(b) - a) / np.maximum(np.abs(a), np.finfo(float).tiny) for n, b in tlosses.items()}
    start_diff = abs(tvalue - value) / abs(value)
    track = max(float(np.max(r[:TRACK_STEPS])) for r in rel.values())
    by_threads = {n: (1e6 * min(t_torch[n]), 1e6 * min(e_torch[n])) for n in counts}
    best = min(counts, key=lambda n: by_threads[n][0])
    finite = bool(np.isfinite(a).all() and all(np.isfinite(b).all() for b in tlosses.values()))
    return {"level": int(level), "n_points": int(x.shape[0]), "n_params": int(net.params.size), "steps": len(a),
            "track_steps": min(len(a), TRACK_STEPS), "lr": lr, "blocks": len(t_fast), "threads": int(best),
            "adam_us": 1e6 * min(t_fast), "torch_adam_us": by_threads[best][0],
            "adam_mean_us": 1e6 * float(np.mean(t_fast)), "torch_adam_mean_us": 1e6 * float(np.mean(t_torch[best])),
            "eval_us": 1e6 * min(e_fast), "torch_eval_us": min(e for _, e in by_threads.values()),
            "torch_by_threads": by_threads,
            "losses": a, "torch_losses": np.asarray(tlosses[counts[0]]), "start_loss": float(value),
            "torch_start_loss": float(tvalue), "start_rel_diff": float(start_diff), "grad_rel_diff": grad_diff,
            "track_rel_diff": track, "final_rel_diff": max(float(r[-1]) for r in rel.values()),
            "rhs_rel_diff": rhs_diff,
            "agree": bool(finite and start_diff <= START_RTOL and grad_diff <= START_RTOL and track <= TRACK_RTOL
                          and rhs_diff <= START_RTOL)}
