r"""Small networks that carry their input derivatives, forward and backward, over one flat buffer.

The networks of PINNs, Deep Ritz and physical regression are small (1-3 inputs, a few tanh layers
of 10-200 units) and their losses need ``u``, its gradient and its Laplacian (``u'`` and ``u''`` in
1D). :class:`MLP` evaluates them all in one forward pass and returns the gradient of any loss on
them with respect to every parameter in one backward pass, into one flat buffer laid out like the
network's :class:`fastopt.FlatParams`, so that one fused optimiser call updates the whole model::

    z_0 = gamma(x)                       optional Fourier features (fastopt.fourier), else x
    z_l = sigma(z_{l-1} W_l + b_l)       l = 1..L  (tanh, sin)
    u   = z_L c + c0                     the last hidden layer z_L: N basis functions u_n(x)
    u_out = g + phi u                    optional ansatz for boundary conditions (Ansatz)

Channels (module docstring of :mod:`fastopt.kernels.reference_nn`): ``order`` 0, 1, 2 gives
``C = 1, 1 + d, 2 + d`` channels (value; gradient; Laplacian), arrays ``(C, J)`` for the output
and ``(C, J, N)`` for the basis, whose channels are the rows of the LS Gram matrix
(:mod:`fastopt.ls`). The coefficients ``c`` are the parameter ``"out.c"``: the LS solver writes them.

Parameter layout in the flat buffer: ``"fourier.B"`` (when the frequencies are trainable),
``"dense0.W"`` (n_0, n_1), ``"dense0.b"``, ..., ``"out.c"`` (N,), ``"out.c0"`` (1,) (with an output bias).

Initialisations: ``"glorot"`` (Glorot & Bengio; biases 0), ``"uniform"`` (weights and biases
U(uniform_range), the lecture's U(-3 pi, 3 pi) first layer) and ``"box"`` (Cyr et al.), per layer:
``init`` for the hidden layers, ``first_init`` for the first.

Kernels: family "mlp" of the backend the network lives on ("cpu": Numba, "gpu": CuPy + cuBLAS,
"reference": the float64 NumPy oracle). A forward keeps its tape (workspace reused per batch
shape, never reallocated in a training loop) for the next :meth:`MLP.backward`.

Example: fit u(x) = sin(3x) on 64 points with Adam, the value channel only.
  >>> import numpy as np
  >>> from fastopt.nn import MLP
  >>> from fastopt.optim import Adam
  >>> net = MLP(1, hidden=(16, 16), seed=0)
  >>> x = np.linspace(-1, 1, 64)[:, None]; y = np.sin(3 * x[:, 0])
  >>> opt = Adam(net.params, lr=1e-2)
  >>> adj = np.zeros((1, 64))
  >>> for step in range(1000):
  ...     u = net.forward(x).u                       # (C=1, J)
  ...     adj[0] = 2 * (u[0] - y) / 64               # dL/du of L = mean (u - y)^2
  ...     _ = opt.step(net.backward(adj))
  >>> bool(np.mean((net(x) - y) ** 2) < 1e-4)
  True

References:
  E. C. Cyr et al., Robust training and initialization of deep neural networks: an adaptive basis
  viewpoint, MSML 2020.  X. Glorot, Y. Bengio, AISTATS 2010.  M. Raissi, P. Perdikaris, G. E.
  Karniadakis, Physics-informed neural networks, J. Comput. Phys. 378 (2019).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from . import _dispatch
from . import _validate as V
from . import init as _init
from .fourier import FourierFeatures
from .params import FlatParams

__all__ = ["MLP", "Ansatz", "Output", "ACTIVATIONS", "INITS"]

#: Activation name -> the integer code of the kernels (kernels/reference_nn.ACTIVATIONS).
ACTIVATIONS = {"tanh": 0, "sin": 1}
#: Initialisation schemes of the dense layers (:mod:`fastopt.init`).
INITS = _init.SCHEMES
#: How many batch shapes keep their workspace (out, basis, tape, adjoint) at once.
_WORKSPACES = 4


class Output(NamedTuple):
    """What a forward pass gives: ``u`` (C, J) output channels and ``basis`` (C, J, N) channels of z_L.

    Both are the network's workspace: overwritten by the next forward on the same batch shape;
    copy them to keep them.
    """

    u: object
    basis: object


class Ansatz:
    r"""An output transform ``u_out = g + phi u`` that builds boundary conditions into the network.

    ``phi`` vanishes on the boundary and ``g`` carries the boundary values, so ``u_out`` satisfies
    Dirichlet conditions whatever the network's parameters (the lecture's Deep Ritz example
    multiplies by ``x (1 - x)``). The derivative channels follow from the product rule::

        grad u_out = grad g + u grad phi + phi grad u
        lap u_out  = lap g + u lap phi + 2 grad phi . grad u + phi lap u

    Args:
      phi: callable ``phi(x, C) -> (C, J)`` array: the channels of phi at the points (value,
        gradient, Laplacian as in the module docstring), of x's dtype and backend.
      g: the same for g, or None (g = 0).
    """

    def __init__(self, phi, g=None):
        if not callable(phi) or (g is not None and not callable(g)):
            raise TypeError("Ansatz: phi and g must be callables (x, C) -> (C, J) channels")
        self.phi, self.g = phi, g

    @classmethod
    def box(cls, low=0.0, high=1.0, value=None):
        r"""Zero Dirichlet conditions on the box ``[low, high]^d``: ``phi = prod_k (x_k - low_k)(high_k - x_k)``.

        ``value``: optional callable ``g(x, C)`` for non-zero boundary data (a lift that takes the
        boundary values; its channels as for ``phi``). In 1D on [0, 1] ``phi = x (1 - x)``.
        """
        def phi(x, C):
            xp = _array_module(x)
            J, d = x.shape
            lo = xp.broadcast_to(xp.asarray(low, dtype=x.dtype), (d,))
            hi = xp.broadcast_to(xp.asarray(high, dtype=x.dtype), (d,))
            p = (x - lo) * (hi - x)                     # (J, d): the factor of each coordinate
            dp = (hi + lo) - 2 * x                      # its derivative; second derivative -2
            out = xp.empty((C, J), dtype=x.dtype)
            out[0] = xp.prod(p, axis=1)
            if C > 1:
                for k in range(d):
                    others = xp.prod(xp.delete(p, k, axis=1), axis=1) if d > 1 else 1.0
                    out[1 + k] = dp[:, k] * others
            if C == d + 2:
                lap = xp.zeros(J, dtype=x.dtype)
                for k in range(d):
                    others = xp.prod(xp.delete(p, k, axis=1), axis=1) if d > 1 else 1.0
                    lap += -2 * others
                out[d + 1] = lap
            return out

        return cls(phi, value)

    def channels(self, func, x, C):
        """The validated ``(phi, g)`` channels at ``x`` (g: a size-0 array when absent)."""
        phi = self.phi(x, C)
        V.array_of(func, "ansatz phi(x)", phi, (C, x.shape[0]), x.dtype, writable=False, finite=True)
        if self.g is None:
            return phi, _array_module(x).empty(0, dtype=x.dtype)
        g = self.g(x, C)
        V.array_of(func, "ansatz g(x)", g, (C, x.shape[0]), x.dtype, writable=False, finite=True)
        return phi, g


def _array_module(x):
    return _dispatch.array_module(x)  # CuPy imported only for a CuPy array


class MLP:
    r"""A small tanh (or sin) network with optional Fourier features, carrying derivative channels.

    Args:
      d: input dimension.
      hidden: widths of the hidden layers; the last is the number N of basis functions.
      activation: "tanh" or "sin".
      fourier: a :class:`fastopt.fourier.FourierFeatures` first layer, or None (the network sees x).
      ansatz: an :class:`Ansatz` output transform, or None.
      out_bias: whether the output has a bias ``c0``.
      init, first_init: initialisation of the hidden layers and of the first one: "glorot",
        "uniform" (U(uniform_range) weights and biases) or "box" (Cyr et al.; ``box`` is the first
        layer's input box, [-1, 1] for later layers).
      uniform_range, box: as above.
      dtype: float64 (default: PDE work) or float32.
      seed: seed of the initialisation (``numpy.random.default_rng``).
      backend: "cpu" (default), "gpu" or "reference" (the float64 oracle; for tests).
    Attributes:
      params: :class:`fastopt.FlatParams` (one buffer) holding every trained parameter.
      B: the (d, K) frequencies (a view of ``params["fourier.B"]`` when trainable).
    """

    def __init__(self, d, hidden=(20, 20), activation="tanh", *, fourier=None, ansatz=None, out_bias=True,
                 init="glorot", first_init=None, uniform_range=(-3 * math.pi, 3 * math.pi), box=(0.0, 1.0),
                 dtype=np.float64, seed=None, backend="cpu"):
        f = "MLP"
        self.d = V.integer(f, "d", d, 1)
        try:
            hidden = tuple(int(V.integer(f, "hidden", h, 1)) for h in hidden)
        except TypeError:
            raise TypeError(f"{f}: hidden must be a sequence of layer widths (ints >= 1), got {hidden!r}") from None
        if not hidden:
            raise ValueError(f"{f}: hidden must name at least one layer (the basis functions)")
        if activation not in ACTIVATIONS:
            raise ValueError(f"{f}: activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
        for name, scheme in (("init", init), ("first_init", first_init)):
            if scheme is not None and scheme not in INITS:
                raise ValueError(f"{f}: {name} must be one of {list(INITS)}, got {scheme!r}")
        if fourier is not None and not isinstance(fourier, FourierFeatures):
            raise TypeError(f"{f}: fourier must be a fastopt.fourier.FourierFeatures, got {type(fourier).__name__}")
        if fourier is not None and fourier.d != self.d:
            raise ValueError(f"{f}: fourier has input dimension {fourier.d} but d = {self.d}")
        if ansatz is not None and not isinstance(ansatz, Ansatz):
            raise TypeError(f"{f}: ansatz must be a fastopt.nn.Ansatz, got {type(ansatz).__name__}")
        self.dtype = np.dtype(dtype)
        if self.dtype.char not in "fd":
            raise TypeError(f"{f}: dtype must be float32 or float64, got {self.dtype}")
        _dispatch.check_backend_name(backend, f"{f}: backend")
        if backend == "gpu":
            _dispatch.require_gpu()
        self.backend = backend
        self.hidden, self.activation, self.out_bias = hidden, activation, V.flag(f, "out_bias", out_bias)
        self.fourier, self.ansatz = fourier, ansatz
        self.seed = seed
        self._init_params(init, first_init, uniform_range, box, seed)
        self._workspaces = OrderedDict()
        self._last = None
        self._bind_kernels()

    # ----------------------------------------------------------------- construction
    @property
    def K(self) -> int:
        return 0 if self.fourier is None else self.fourier.K

    @property
    def keep_x(self) -> bool:
        return True if self.fourier is None else self.fourier.keep_x

    @property
    def train_B(self) -> bool:
        return self.fourier is not None and self.fourier.trainable

    @property
    def scale(self) -> float:
        return 1.0 if self.fourier is None else self.fourier.scale

    @property
    def widths(self) -> np.ndarray:
        """int64 ``[n_0, n_1, ..., n_L]`` (n_0: the number of features)."""
        n0 = self.d if self.fourier is None else self.fourier.n_features
        return np.array((n0,) + self.hidden, dtype=np.int64)

    @property
    def n_basis(self) -> int:
        return self.hidden[-1]

    def layout(self) -> list:
        """``[(name, shape), ...]`` in buffer order."""
        w = [int(n) for n in self.widths]
        layout = [("fourier.B", (self.d, self.K))] if self.train_B else []
        for l in range(len(w) - 1):
            layout += [(f"dense{l}.W", (w[l], w[l + 1])), (f"dense{l}.b", (w[l + 1],))]
        layout.append(("out.c", (w[-1],)))
        if self.out_bias:
            layout.append(("out.c0", (1,)))
        return layout

    def _init_params(self, init, first_init, uniform_range, box, seed):
        """Draw in the order of ``reference_nn.init_network`` (layers, then c): same seed, same network."""
        rng = np.random.default_rng(seed)
        arrays = {"fourier.B": _to_host(self.fourier.B)} if self.train_B else {}
        arrays.update(_init.dense_layers(rng, self.widths, init, first_init, uniform_range, box))
        arrays["out.c"] = _init.glorot_uniform(rng, self.n_basis, 1)[:, 0]
        if self.out_bias:
            arrays["out.c0"] = np.zeros(1)
        if self.backend == "gpu":
            import cupy

            arrays = {k: cupy.asarray(v) for k, v in arrays.items()}
        self.params = FlatParams(arrays, dtype=self.dtype)
        if self.train_B:
            self.B = self.params["fourier.B"]
        elif self.fourier is not None:
            xp = _array_module(self.params.data)
            self.B = xp.ascontiguousarray(xp.asarray(self.fourier.B), dtype=self.dtype)
        else:
            self.B = _array_module(self.params.data).empty((self.d, 0), dtype=self.dtype)

    def __repr__(self) -> str:
        feats = "" if self.fourier is None else f", fourier={self.fourier!r}"
        return (f"MLP(d={self.d}, hidden={self.hidden}, activation={self.activation!r}{feats}, "
                f"ansatz={self.ansatz is not None}, dtype={self.dtype}, backend={self.backend!r}, "
                f"n_params={self.params.size})")

    # ----------------------------------------------------------------- kernels
    def _kernel(self, name):
        return _dispatch.get_kernel("mlp", name, self.backend)

    def _config(self):
        """The kernels' configuration arguments after ``(x, B, theta)`` (fixed at construction)."""
        return (self.widths, ACTIVATIONS[self.activation], self.scale, self.keep_x, self.train_B, self.out_bias)

    def _bind_kernels(self):
        """Look the kernels and the configuration up once: a training step pays no lookup."""
        self._fwd, self._bwd = self._kernel("mlp_forward"), self._kernel("mlp_backward")
        self._cfg = self._config()
        self._host = self.backend != "gpu"
        self._grad_ok = None      # the last grad buffer that passed its checks (layouts never change)
        self._theta = self.params.data           # FlatParams never reallocates its buffer
        self._none = self._theta[:0]             # "no ansatz": a size-0 array of the dtype

    def _workspace(self, J, order):
        key = (J, order)
        ws = self._workspaces.get(key)
        if ws is None:
            xp = _array_module(self.params.data)
            C = V.n_channels(order, self.d)
            n_tape = int(self._kernel("mlp_tape_size")(J, self.d, self.widths, order))
            ws = {"out": xp.empty((C, J), self.dtype), "basis": xp.empty((C, J, self.n_basis), self.dtype),
                  "tape": xp.empty(n_tape, self.dtype), "adj": xp.zeros((C, J), self.dtype)}
            self._workspaces[key] = ws
            if len(self._workspaces) > _WORKSPACES:
                self._workspaces.popitem(last=False)
        else:
            self._workspaces.move_to_end(key)
        return ws

    # ----------------------------------------------------------------- forward / backward
    def forward(self, x, order=0) -> Output:
        """Evaluate the network and ``order`` derivative channels at the points ``x``.

        Args:
          x: (J, d) points of the network's dtype and backend (C-contiguous, finite).
          order: 0 (u), 1 (u and its gradient) or 2 (u, gradient and Laplacian).
        Returns:
          :class:`Output` ``(u, basis)``: ``u`` (C, J) the output channels (after the ansatz),
          ``basis`` (C, J, N) the last hidden layer's channels (before the ansatz). Workspace
          arrays: valid until the next forward on the same shape.
        """
        f = "MLP.forward"
        # the common case (a contiguous NumPy batch of the right shape and dtype) in a few attribute tests
        if not (self._host and type(x) is np.ndarray and x.dtype == self.dtype and x.ndim == 2
                and x.shape[1] == self.d and x.flags.c_contiguous and (order == 0 or order == 1 or order == 2)
                and type(order) is int):
            _, (x,) = _dispatch.resolve(f, [("x", x)], "cpu" if self.backend == "reference" else self.backend)
            V.points(f, "x", x, self.d, self.dtype)
            order = V.derivative_order(f, order)
        elif x.size and not np.isfinite(x).all():
            V.all_finite(f, "x", x)                  # raises, with the message
        C = 1 if order == 0 else (1 + self.d if order == 1 else 2 + self.d)
        J = x.shape[0]
        if self.ansatz is not None:
            phi, g = self.ansatz.channels(f, x, C)
        else:
            phi = g = self._none
        ws = self._workspace(J, order)
        self._fwd(x, self.B, self._theta, *self._cfg, phi, g, ws["out"], ws["basis"], ws["tape"])
        self._last = (x, phi, ws)
        return Output(ws["out"], ws["basis"])

    def __call__(self, x):
        """The network's values at ``x``: a new (J,) array (the value channel of :meth:`forward`)."""
        return self.forward(x, 0).u[0].copy()

    def backward(self, adj, grad=None) -> FlatParams:
        """Gradient of a loss on the last forward's output channels with respect to every parameter.

        Args:
          adj: (C, J) adjoints ``dL/d(channel)`` of the output channels of the last :meth:`forward`
            (channels of any order; zeros where the loss does not look). Not checked for NaN/inf:
            a diverged loss gives a non-finite gradient, which an optimiser with
            ``skip_nonfinite=True`` skips (and ``fastopt.optim`` reports).
          grad: optional :class:`FlatParams` with this network's layout (overwritten); a new one if None.
        Returns:
          ``grad``: every parameter's gradient, laid out like :attr:`params` (pass it to an optimiser).
        Raises:
          RuntimeError: no forward pass to differentiate. ValueError/TypeError: bad ``adj`` or ``grad``.

        Call it before the parameters change: the tape holds the forward's intermediate values.
        """
        f = "MLP.backward"
        if self._last is None:
            raise RuntimeError(f"{f}: call forward(x, order) first; backward differentiates the last forward pass")
        x, phi, ws = self._last
        out = ws["out"]
        if adj is not ws["adj"]:     # the network's own adjoint buffer (loss_and_grad) needs no checks
            _, (adj,) = _dispatch.resolve(f, [("adj", adj)], "cpu" if self.backend == "reference" else self.backend)
            V.array_of(f, "adj", adj, out.shape, self.dtype, writable=False)
        if grad is None:
            grad = self.params.zeros_like()
        elif grad is not self._grad_ok:
            self._check_grad(f, grad)
            self._grad_ok = grad
        self._bwd(x, self.B, self._theta, *self._cfg, phi, ws["basis"], ws["tape"], adj, grad.data)
        return grad

    def _check_grad(self, f, grad):
        if not isinstance(grad, FlatParams) or grad._slots != self.params._slots:
            raise ValueError(f"{f}: grad must be a FlatParams with the network's layout (net.params.zeros_like())")
        if grad.data is self.params.data or np.shares_memory(_to_host_view(grad.data), _to_host_view(self.params.data)):
            raise ValueError(f"{f}: grad must not share memory with the parameters")

    def loss_and_grad(self, x, loss, order=0, grad=None):
        """Forward, the loss and its adjoints, backward: ``(L, grad)`` in one call.

        Args:
          x: (J, d) points.  order: derivative channels the loss needs.
          loss: callable ``loss(u, adj) -> float`` given the output channels ``u`` (C, J); it writes
            ``dL/du`` into ``adj`` (C, J) (every entry: the array holds the last call's values).
          grad: optional output :class:`FlatParams`.
        """
        u = self.forward(x, order).u
        adj = self._last[2]["adj"]
        value = float(loss(u, adj))
        return value, self.backward(adj, grad)

    def basis(self, x, order=0, *, transformed=True):
        """The channels ``(C, J, N)`` of the N basis functions (a new array).

        With an ansatz and ``transformed``, the basis of the transformed problem ``phi z_n`` (what an
        LS solve for ``c`` needs: ``u_out = g + sum_n c_n phi z_n + phi c0``); else ``z_n`` themselves.
        """
        out = self.forward(x, order)
        basis = out.basis.copy()
        if transformed and self.ansatz is not None:
            _, phi, _ = self._last
            self._kernel("ansatz_forward")(self.d, basis, phi, phi[:0], basis)
        return basis

    def ansatz_channels(self, x, order=0):
        """The ``(phi, g)`` channels at ``x`` (ones and zeros without an ansatz)."""
        f = "MLP.ansatz_channels"
        C = V.n_channels(V.derivative_order(f, order), self.d)
        xp = _array_module(self.params.data)
        if self.ansatz is None:
            phi = xp.zeros((C, x.shape[0]), self.dtype)
            phi[0] = 1
            return phi, xp.zeros((C, x.shape[0]), self.dtype)
        phi, g = self.ansatz.channels(f, x, C)
        return phi, (g if g.size else xp.zeros((C, x.shape[0]), self.dtype))


def _to_host(a):
    return a if isinstance(a, np.ndarray) else a.get()


def _to_host_view(a):
    return a if isinstance(a, np.ndarray) else np.empty(0)
