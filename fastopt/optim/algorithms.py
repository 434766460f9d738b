"""Optimiser classes over a FlatParams: each names its state and calls one functional step.

Every class takes the base options of :class:`fastopt.optim.Optimizer` (``lr``,
``weight_decay``, ``groups``, ``maximize``, ``grad_scale``, ``max_grad_norm``,
``skip_nonfinite``, ``backend``) and its algorithm's hyperparameters, with
PyTorch's defaults. The update rules are in :mod:`fastopt.optim.functional`.

Example:
  >>> import numpy as np
  >>> from fastopt import FlatParams, optim, schedules
  >>> params = FlatParams({"W": np.ones((3, 2)), "b": np.zeros(2)})
  >>> grads = params.zeros_like()
  >>> opt = optim.Adam(params, lr=schedules.algebraic(1e-2, alpha=1.0, k0=100))
  >>> grads.data[:] = 1.0
  >>> opt.step(grads).applied, opt.step_count
  (True, 1)
"""
from __future__ import annotations

import math

from .. import _validate as V
from .._step import adam_corrections
from . import functional as F
from .optimizer import Optimizer

__all__ = ["SGD", "Momentum", "Adam", "AdamW", "AMSGrad", "NAdam", "RMSprop", "Adagrad", "Lion"]


def _betas(func, betas, *, first_may_be_one=False):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{func}: betas must be a pair (beta1, beta2), got {betas!r}")
    b1 = (V.hyper(func, "betas[0]", betas[0], low=0.0, high=1.0) if first_may_be_one
          else V.beta(func, "betas[0]", betas[0]))
    return b1, V.beta(func, "betas[1]", betas[1])


class SGD(Optimizer):
    """SGD, with PyTorch's momentum, dampening and Nesterov options (``torch.optim.SGD``).

    With ``momentum=0`` this is plain gradient descent and keeps no state.
    """

    algorithm = "sgd"

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, **options):
        f = type(self).__name__
        self.momentum = V.beta(f, "momentum", momentum)
        self.dampening = V.hyper(f, "dampening", dampening, low=0.0, high=1.0)
        self.nesterov = V.flag(f, "nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError(f"{f}: nesterov needs momentum > 0 and dampening == 0")
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("buf",) if self.momentum > 0 else ()

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        common = dict(lr=lrs, weight_decay=wds, segments=part.segments, maximize=self.maximize,
                      grad_scale=grad_scale, backend=self.backend)
        if self.momentum == 0:
            return F.sgd_step(part.p, g, **common)
        return F.sgd_momentum_step(part.p, g, part.state["buf"], step=step, momentum=self.momentum,
                                   dampening=self.dampening, nesterov=self.nesterov, **common)


class Momentum(Optimizer):
    """Heavy-ball momentum in the lecture's form: m <- beta m - lr g; p <- p + m."""

    algorithm = "momentum"

    def __init__(self, params, lr=1e-3, beta=0.9, **options):
        self.beta = V.beta(type(self).__name__, "beta", beta)
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("m",)

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        return F.momentum_step(part.p, g, part.state["m"], lr=lrs, beta=self.beta, weight_decay=wds,
                               segments=part.segments, maximize=self.maximize, grad_scale=grad_scale,
                               backend=self.backend)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``), with ``amsgrad`` and ``decoupled_weight_decay`` options."""

    algorithm = "adam"
    _decoupled_default = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, amsgrad=False,
                 decoupled_weight_decay=None, **options):
        f = type(self).__name__
        self.betas = _betas(f, betas)
        self.eps = V.positive(f, "eps", eps)
        self.amsgrad = V.flag(f, "amsgrad", amsgrad)
        self.decoupled_weight_decay = V.flag(f, "decoupled_weight_decay", self._decoupled_default
                                             if decoupled_weight_decay is None else decoupled_weight_decay)
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("m", "v", "vmax") if self.amsgrad else ("m", "v")

    _fast_family = "optim"

    def _fast_apply(self, part, g, step, lr, wd):
        (b1, b2), eps, amsgrad, decoupled = self.betas, self.eps, self.amsgrad, self.decoupled_weight_decay
        # the checks of V.beta / V.positive / V.flag, inline; anything else: the full path, which raises
        if not (type(b1) is float and 0.0 <= b1 < 1.0 and type(b2) is float and 0.0 <= b2 < 1.0
                and type(eps) is float and 0.0 < eps < math.inf
                and (amsgrad is True or amsgrad is False) and (decoupled is True or decoupled is False)):
            return False
        s = part.state
        inv_bc1, bc2_sqrt = adam_corrections(b1, b2, step)
        if amsgrad:
            lrs, l2, shrink = self._fast_segment_arrays(lr, wd, decoupled, inv_bc1)
            self._fast_kernel_named("adam", g.size)(part.p, g, s["m"], s["v"], s["vmax"], part.segments.bounds, lrs,
                                                    l2, shrink, 1.0, b1, b2, eps, bc2_sqrt, True)
            return True
        # one segment's scalars as segment_arrays computes them (same operations: the same bits)
        l2, shrink = (0.0, 1.0 - lr * wd) if decoupled else (wd, 1.0)
        try:
            return self._fast_kernel_named("adam_plain", g.size)(part.p, g, s["m"], s["v"], lr * inv_bc1, l2, shrink,
                                                                 1.0, b1, b2, eps, bc2_sqrt)
        except (TypeError, RuntimeError):  # types its checked path has not admitted (_jit.admit): take that path
            return False

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        s = part.state
        return F.adam_step(part.p, g, s["m"], s["v"], vmax=s.get("vmax"), step=step, lr=lrs,
                           beta1=self.betas[0], beta2=self.betas[1], eps=self.eps, weight_decay=wds,
                           decoupled_weight_decay=self.decoupled_weight_decay, amsgrad=self.amsgrad,
                           segments=part.segments, maximize=self.maximize, grad_scale=grad_scale,
                           backend=self.backend)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (default 1e-2, as ``torch.optim.AdamW``)."""

    algorithm = "adamw"
    _decoupled_default = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, **options):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **options)


class AMSGrad(Adam):
    """AMSGrad: Adam with the running maximum of the second moment."""

    algorithm = "amsgrad"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, **options):
        super().__init__(params, lr=lr, betas=betas, eps=eps, amsgrad=True, **options)


class NAdam(Optimizer):
    """NAdam (``torch.optim.NAdam``); keeps the product of the momentum coefficients on the host."""

    algorithm = "nadam"

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, momentum_decay=4e-3,
                 decoupled_weight_decay=False, **options):
        f = type(self).__name__
        self.betas = _betas(f, betas)
        self.eps = V.positive(f, "eps", eps)
        self.momentum_decay = V.nonnegative(f, "momentum_decay", momentum_decay)
        self.decoupled_weight_decay = V.flag(f, "decoupled_weight_decay", decoupled_weight_decay)
        self.mu_product = 1.0
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("m", "v")

    def _mu(self, step):
        return F.nadam_mu(step, self.betas[0], self.momentum_decay)

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        s = part.state
        return F.nadam_step(part.p, g, s["m"], s["v"], step=step, lr=lrs, mu_product=self.mu_product * self._mu(step),
                            beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
                            momentum_decay=self.momentum_decay, weight_decay=wds,
                            decoupled_weight_decay=self.decoupled_weight_decay, segments=part.segments,
                            maximize=self.maximize, grad_scale=grad_scale, backend=self.backend)

    def _advance(self, step):
        self.mu_product *= self._mu(step)

    def zero_state(self):
        super().zero_state()
        self.mu_product = 1.0

    def _host_state(self):
        return {"mu_product": self.mu_product}

    def _check_host_state(self, values):
        f = f"{type(self).__name__}.load_state_dict"
        if set(values) != {"mu_product"}:
            raise ValueError(f"{f}: host state must hold exactly 'mu_product', got {sorted(values)}")
        mu_product = V.hyper(f, "host['mu_product']", values["mu_product"], low=0.0, high=1.0, high_open=True)
        return {"mu_product": mu_product}

    def _load_host_state(self, values):
        self.mu_product = values["mu_product"]


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``), centred or not, with or without momentum."""

    algorithm = "rmsprop"

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, **options):
        f = type(self).__name__
        self.alpha = V.hyper(f, "alpha", alpha, low=0.0, high=1.0, high_open=True)
        self.eps = V.positive(f, "eps", eps)
        self.momentum = V.beta(f, "momentum", momentum)
        self.centered = V.flag(f, "centered", centered)
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("sq",) + (("gavg",) if self.centered else ()) + (("buf",) if self.momentum > 0 else ())

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        s = part.state
        return F.rmsprop_step(part.p, g, s["sq"], gavg=s.get("gavg"), buf=s.get("buf"), lr=lrs, alpha=self.alpha,
                              eps=self.eps, momentum=self.momentum, centered=self.centered, weight_decay=wds,
                              segments=part.segments, maximize=self.maximize, grad_scale=grad_scale,
                              backend=self.backend)


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``)."""

    algorithm = "adagrad"

    def __init__(self, params, lr=1e-2, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0, **options):
        f = type(self).__name__
        self.lr_decay = V.nonnegative(f, "lr_decay", lr_decay)
        self.eps = V.positive(f, "eps", eps)
        self.initial_accumulator_value = V.nonnegative(f, "initial_accumulator_value", initial_accumulator_value)
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("ssum",)

    def _init_state(self, name, p):
        buf = super()._init_state(name, p)
        buf[...] = self.initial_accumulator_value
        return buf

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        return F.adagrad_step(part.p, g, part.state["ssum"], step=step, lr=lrs, lr_decay=self.lr_decay,
                              eps=self.eps, weight_decay=wds, segments=part.segments, maximize=self.maximize,
                              grad_scale=grad_scale, backend=self.backend)


class Lion(Optimizer):
    """Lion (Chen et al. 2023), decoupled weight decay."""

    algorithm = "lion"

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), **options):
        self.betas = _betas(type(self).__name__, betas, first_may_be_one=True)
        super().__init__(params, lr=lr, **options)

    def _state_names(self):
        return ("m",)

    def _apply(self, part, g, step, lrs, wds, grad_scale):
        return F.lion_step(part.p, g, part.state["m"], lr=lrs, beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=wds, segments=part.segments, maximize=self.maximize,
                           grad_scale=grad_scale, backend=self.backend)
