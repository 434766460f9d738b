"""Fused optimiser updates: functional in-place steps.

Each ``*_step`` function updates a flat parameter buffer ``p`` and the algorithm's
state in place, in one pass over memory (one kernel call, whatever the model's
number of tensors when they live in a :class:`fastopt.FlatParams`). The
optimiser classes in :mod:`fastopt.optim` keep the state and the step count.

Options shared by every step (keyword-only):

- ``lr``: learning rate, one float or one per segment (parameter group);
- ``weight_decay`` (one or per segment) and ``decoupled_weight_decay``: L2 decay
  adds ``wd * p`` to the gradient; decoupled decay (AdamW) shrinks ``p`` by
  ``1 - lr * wd`` before the update;
- ``segments``: offsets ``[0, ..., p.size]`` of the parameter groups in the buffer, or
  a :class:`fastopt.optim.Segments` built once (then not re-checked at every step);
- ``maximize``: ascend instead of descend;
- ``grad_scale``: the gradient is divided by it (a loss scale, or 1/J sums);
- ``max_grad_norm``: clip ``g`` to this global L2 norm (as ``clip_grad_norm_``);
- ``skip_nonfinite``: if ``g`` holds an inf/NaN, change nothing and return
  ``StepInfo(applied=False)`` (PyTorch's ``found_inf`` semantics: the caller must not
  count the step). The norm and the finiteness check share one pass over ``g``.
- ``backend``: "cpu", "gpu" or "reference" (default: from the arrays).

Every step returns a :class:`StepInfo`. Bad input raises ``TypeError`` or
``ValueError`` naming the argument before any buffer is touched.

References:
  Kingma & Ba, Adam (2015); Loshchilov & Hutter, AdamW (2019); Reddi et al.,
  AMSGrad (2018); Dozat, NAdam (2016); Hinton, RMSprop (2012); Duchi et al.,
  Adagrad (2011); Chen et al., Lion (2023); Polyak, heavy ball (1964).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _validate as V
from .. import _dispatch
from .._step import (APPLIED, StepInfo, adam_corrections, check_arrays, cpu_context, empty_state,
                     grad_multiplier, segment_arrays)

_NDARRAY = np.ndarray

__all__ = ["StepInfo", "sgd_step", "momentum_step", "sgd_momentum_step", "adam_step", "nadam_step",
           "rmsprop_step", "adagrad_step", "lion_step", "nadam_mu"]


def _common(f, backend, p, g, segments, lr, weight_decay, decoupled, maximize, grad_scale, max_grad_norm,
            skip_nonfinite, lr_factor=1.0, step_factor=1.0):
    """Per-segment arrays and the gradient multiplier; ``info.applied`` False means skip."""
    seg = segment_arrays(f, p.size, segments, lr, weight_decay, decoupled, lr_factor, step_factor)
    grad_mul, info = grad_multiplier(f, backend, g, maximize, grad_scale, max_grad_norm, skip_nonfinite)
    return seg, grad_mul, info


def _kernel(name, backend):
    return _dispatch.get_kernel("optim", name, backend)


def sgd_step(p, g, *, lr, weight_decay=0.0, decoupled_weight_decay=False, maximize=False, grad_scale=1.0,
             max_grad_norm=None, skip_nonfinite=False, segments=None, backend=None) -> StepInfo:
    """Plain gradient descent, in place: ``p <- p - lr g``.

    Example:
      >>> import numpy as np, fastopt
      >>> p = np.array([1.0, 2.0]); g = np.array([0.5, -1.0])
      >>> fastopt.sgd_step(p, g, lr=0.1).applied, p
      (True, array([0.95, 2.1 ]))
    """
    f = "sgd_step"
    backend, (p, g) = check_arrays(f, ("p", "g"), (p, g), backend)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize,
                             grad_scale, max_grad_norm, skip_nonfinite)
    if info.applied:
        _kernel("sgd", backend)(p, g, *seg, mul)
    return info


def momentum_step(p, g, m, *, lr, beta=0.9, weight_decay=0.0, decoupled_weight_decay=False, maximize=False,
                  grad_scale=1.0, max_grad_norm=None, skip_nonfinite=False, segments=None,
                  backend=None) -> StepInfo:
    """Heavy-ball momentum in the lecture's form, in place.

    m <- beta m - lr g;  p <- p + m.   (Polyak 1964; ``m`` starts at zero.)

    Unlike PyTorch's form (:func:`sgd_momentum_step`), the learning rate enters the
    velocity, so a decaying schedule also damps the momentum already accumulated.

    Example:
      >>> import numpy as np, fastopt
      >>> p, g, m = np.array([1.0]), np.array([1.0]), np.zeros(1)
      >>> _ = fastopt.momentum_step(p, g, m, lr=0.1, beta=0.9)
      >>> _ = fastopt.momentum_step(p, g, m, lr=0.1, beta=0.9)
      >>> m, p    # m = 0.9 (-0.1) - 0.1
      (array([-0.19]), array([0.71]))
    """
    f = "momentum_step"
    backend, (p, g, m) = check_arrays(f, ("p", "g", "m"), (p, g, m), backend)
    beta = V.beta(f, "beta", beta)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize,
                             grad_scale, max_grad_norm, skip_nonfinite)
    if info.applied:
        _kernel("heavy_ball", backend)(p, g, m, *seg, mul, beta)
    return info


def sgd_momentum_step(p, g, buf, *, step, lr, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0,
                      decoupled_weight_decay=False, maximize=False, grad_scale=1.0, max_grad_norm=None,
                      skip_nonfinite=False, segments=None, backend=None) -> StepInfo:
    """SGD with momentum in PyTorch's form (``torch.optim.SGD``), in place.

    buf <- g at step 1, else buf <- momentum buf + (1 - dampening) g;
    d = g + momentum buf (Nesterov) or buf;   p <- p - lr d.

    Args:
      step: the 1-based index of this update (step 1 initialises ``buf`` with ``g``).
    """
    f = "sgd_momentum_step"
    backend, (p, g, buf) = check_arrays(f, ("p", "g", "buf"), (p, g, buf), backend)
    step = V.step_count(f, step)
    momentum = V.beta(f, "momentum", momentum)
    dampening = V.hyper(f, "dampening", dampening, low=0.0, high=1.0)
    nesterov = V.flag(f, "nesterov", nesterov)
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError(f"{f}: nesterov needs momentum > 0 and dampening == 0, "
                         f"got momentum={momentum}, dampening={dampening}")
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize,
                             grad_scale, max_grad_norm, skip_nonfinite)
    if info.applied:
        _kernel("sgd_momentum", backend)(p, g, buf, *seg, mul, momentum, dampening, nesterov,
                                    step == 1)
    return info


def adam_step(p, g, m, v, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
              decoupled_weight_decay=False, amsgrad=False, vmax=None, maximize=False, grad_scale=1.0,
              max_grad_norm=None, skip_nonfinite=False, segments=None, backend=None) -> StepInfo:
    """Adam, AdamW (``decoupled_weight_decay=True``) and AMSGrad (``amsgrad=True``), in place.

    m <- beta1 m + (1 - beta1) g;   v <- beta2 v + (1 - beta2) g^2;
    AMSGrad: vmax <- max(vmax, v), used in place of v;
    p <- p - lr / (1 - beta1^k) * m / (sqrt(v / (1 - beta2^k)) + eps),   k = step.

    The bias corrections are computed on the host in float64 and passed to the
    kernel as scalars of p's dtype. ``m`` is updated as ``m + (1 - beta1)(g - m)``
    (PyTorch's ``lerp`` form).

    Args:
      p, g, m, v: flat (or same-shaped, contiguous) float32/float64 arrays; p, m, v
        are updated in place, dtype kept.
      step: 1-based index of this update (an int; the caller counts).
      vmax: the AMSGrad maximum of v (required when ``amsgrad=True``).
    Returns:
      StepInfo(applied, grad_norm).

    The plain call (NumPy arrays, float hyperparameters, an int step, one segment, no AMSGrad,
    weight decay, clipping, scaling or skipping) goes straight to the kernel ``adam_plain``, whose
    compiled types are the array checks: it runs only the types a fully checked call has run
    before in this process (the first call of each dtype takes the checked path), and refuses
    mismatched sizes or overlapping memory itself. Anything it refuses takes the checked path,
    which names the problem. Same bits either way (``tests/test_optim_fast_path.py``).

    Example:
      >>> import numpy as np, fastopt
      >>> p = np.ones(4, np.float32); g = np.full(4, 0.5, np.float32)
      >>> m = np.zeros_like(p); v = np.zeros_like(p)
      >>> _ = fastopt.adam_step(p, g, m, v, step=1, lr=1e-3)
      >>> p    # the first Adam step moves every coordinate by ~lr
      array([0.999, 0.999, 0.999, 0.999], dtype=float32)

    References:
      Kingma & Ba, "Adam: A method for stochastic optimization", ICLR 2015, Alg. 1;
      Loshchilov & Hutter, "Decoupled weight decay regularization", ICLR 2019;
      Reddi, Kale & Kumar, "On the convergence of Adam and beyond", ICLR 2018.
    """
    if (amsgrad is False and segments is None and maximize is False and grad_scale == 1.0 and max_grad_norm is None
            and skip_nonfinite is False and type(lr) is float and 0.0 <= lr < math.inf
            and type(weight_decay) is float and weight_decay == 0.0
            and (decoupled_weight_decay is False or decoupled_weight_decay is True)
            and type(step) is int and step >= 1 and type(beta1) is float and 0.0 <= beta1 < 1.0
            and type(beta2) is float and 0.0 <= beta2 < 1.0 and type(eps) is float and 0.0 < eps < math.inf
            and type(p) is _NDARRAY and type(g) is _NDARRAY and type(m) is _NDARRAY and type(v) is _NDARRAY
            and p.ndim == 1 and (backend == "cpu" or backend is None and cpu_context())):
        # The plain call, every scalar checked above; the arrays are checked by the kernel's entry:
        # Numba's type match (dtype, 1-D, contiguous, p/m/v writable: the types a checked call admitted)
        # and the kernel's own size and overlap test. The scalars are those of the full path below.
        kernel = _kernel("adam_plain", "cpu")
        inv_bc1, bc2_sqrt = adam_corrections(beta1, beta2, step)
        try:
            if (kernel.serial if p.size < kernel.parallel_min_size else kernel.threaded)(
                    p, g, m, v, lr * inv_bc1, 0.0, 1.0, 1.0, beta1, beta2, eps, bc2_sqrt):
                return APPLIED
        except (TypeError, RuntimeError):  # types not admitted (refused before the kernel ran, see _jit.admit):
            pass                           # the full path checks them
    f = "adam_step"
    amsgrad = V.flag(f, "amsgrad", amsgrad)
    if amsgrad and vmax is None:
        raise ValueError(f"{f}: vmax must be given when amsgrad=True")
    if amsgrad:
        backend, (p, g, m, v, vmax) = check_arrays(f, ("p", "g", "m", "v", "vmax"), (p, g, m, v, vmax), backend)
    else:
        backend, (p, g, m, v) = check_arrays(f, ("p", "g", "m", "v"), (p, g, m, v), backend)
        vmax = empty_state(p)
    step = V.step_count(f, step)
    beta1, beta2 = V.beta(f, "beta1", beta1), V.beta(f, "beta2", beta2)
    eps = V.positive(f, "eps", eps)
    inv_bc1, bc2_sqrt = adam_corrections(beta1, beta2, step)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize, grad_scale,
                             max_grad_norm, skip_nonfinite, step_factor=inv_bc1)
    if info.applied:
        bounds, lrs, l2, shrink = seg
        if not amsgrad and bounds.size == 2:  # the plain kernel (its types admitted for the lean path above)
            _kernel("adam_plain", backend)(p, g, m, v, float(lrs[0]), float(l2[0]), float(shrink[0]), mul, beta1,
                                           beta2, eps, bc2_sqrt)
        else:
            _kernel("adam", backend)(p, g, m, v, vmax, *seg, mul, beta1, beta2, eps, bc2_sqrt, amsgrad)
    return info


def nadam_mu(step: int, beta1: float, momentum_decay: float) -> float:
    """NAdam's momentum coefficient mu_k = beta1 (1 - 0.96^(k psi) / 2)."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_step(p, g, m, v, *, step, lr, mu_product, beta1=0.9, beta2=0.999, eps=1e-8, momentum_decay=4e-3,
               weight_decay=0.0, decoupled_weight_decay=False, maximize=False, grad_scale=1.0,
               max_grad_norm=None, skip_nonfinite=False, segments=None, backend=None) -> StepInfo:
    """NAdam (Nesterov-accelerated Adam) in PyTorch's form, in place.

    mu_k = beta1 (1 - 0.96^(k psi) / 2) with psi = momentum_decay;
    m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2;  d = sqrt(v / (1 - beta2^k)) + eps;
    p <- p - lr (1 - mu_k) / (1 - P_k) g / d - lr mu_{k+1} / (1 - P_k mu_{k+1}) m / d,
    where P_k = prod_{i<=k} mu_i.

    Args:
      mu_product: P_k, the product of mu_i up to and *including* this step
        (``mu_product_before * nadam_mu(step, beta1, momentum_decay)``); the caller keeps
        it, as the :class:`fastopt.optim.NAdam` class does.

    Reference: Dozat, "Incorporating Nesterov momentum into Adam", ICLR workshop 2016.
    """
    f = "nadam_step"
    backend, (p, g, m, v) = check_arrays(f, ("p", "g", "m", "v"), (p, g, m, v), backend)
    step = V.step_count(f, step)
    beta1, beta2 = V.beta(f, "beta1", beta1), V.beta(f, "beta2", beta2)
    eps = V.positive(f, "eps", eps)
    psi = V.nonnegative(f, "momentum_decay", momentum_decay)
    mu_product = V.hyper(f, "mu_product", mu_product, low=0.0, high=1.0, high_open=True)
    mu = nadam_mu(step, beta1, psi)
    mu_next = nadam_mu(step + 1, beta1, psi)
    coef_g = (1.0 - mu) / (1.0 - mu_product)
    coef_m = mu_next / (1.0 - mu_product * mu_next)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize,
                             grad_scale, max_grad_norm, skip_nonfinite)
    if info.applied:
        _kernel("nadam", backend)(p, g, m, v, *seg, mul, beta1, beta2, eps, 1.0 - beta2 ** step,
                             coef_g, coef_m)
    return info


def rmsprop_step(p, g, sq, *, lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, gavg=None, buf=None,
                 weight_decay=0.0, decoupled_weight_decay=False, maximize=False, grad_scale=1.0,
                 max_grad_norm=None, skip_nonfinite=False, segments=None, backend=None) -> StepInfo:
    """RMSprop in PyTorch's form, centred or not, with or without momentum, in place.

    sq <- alpha sq + (1 - alpha) g^2;  centred: gavg <- alpha gavg + (1 - alpha) g and
    a = sqrt(sq - gavg^2) + eps, else a = sqrt(sq) + eps;
    momentum: buf <- momentum buf + g / a, p <- p - lr buf; else p <- p - lr g / a.

    Args:
      gavg: running mean of g (required when ``centered=True``).
      buf: momentum buffer (required when ``momentum > 0``).

    Reference: Hinton, Neural Networks for Machine Learning, lecture 6e (2012);
    Graves, "Generating sequences with recurrent neural networks" (2013), eq. 38-45 (centred).
    """
    f = "rmsprop_step"
    centered = V.flag(f, "centered", centered)
    momentum = V.beta(f, "momentum", momentum)
    if centered and gavg is None:
        raise ValueError(f"{f}: gavg must be given when centered=True")
    if momentum > 0 and buf is None:
        raise ValueError(f"{f}: buf must be given when momentum > 0")
    state = [("sq", sq)] + ([("gavg", gavg)] if centered else []) + ([("buf", buf)] if momentum > 0 else [])
    backend, (p, g, sq, *rest) = check_arrays(f, ("p", "g") + tuple(n for n, _ in state),
                                              (p, g) + tuple(a for _, a in state), backend)
    alpha = V.hyper(f, "alpha", alpha, low=0.0, high=1.0, high_open=True)
    eps = V.positive(f, "eps", eps)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize,
                             grad_scale, max_grad_norm, skip_nonfinite)
    if info.applied:
        rest = iter(rest)
        gavg_ = next(rest) if centered else empty_state(p)
        buf_ = next(rest) if momentum > 0 else empty_state(p)
        _kernel("rmsprop", backend)(p, g, sq, gavg_, buf_, *seg, mul, alpha, eps, momentum, centered)
    return info


def adagrad_step(p, g, ssum, *, step, lr, lr_decay=0.0, eps=1e-10, weight_decay=0.0,
                 decoupled_weight_decay=False, maximize=False, grad_scale=1.0, max_grad_norm=None,
                 skip_nonfinite=False, segments=None, backend=None) -> StepInfo:
    """Adagrad in PyTorch's form, in place.

    lr_k = lr / (1 + (k - 1) lr_decay);  ssum <- ssum + g^2;  p <- p - lr_k g / (sqrt(ssum) + eps).
    ``ssum`` starts at PyTorch's ``initial_accumulator_value`` (default 0).

    Reference: Duchi, Hazan & Singer, JMLR 12 (2011).
    """
    f = "adagrad_step"
    backend, (p, g, ssum) = check_arrays(f, ("p", "g", "ssum"), (p, g, ssum), backend)
    step = V.step_count(f, step)
    lr_decay = V.nonnegative(f, "lr_decay", lr_decay)
    eps = V.positive(f, "eps", eps)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize, grad_scale,
                             max_grad_norm, skip_nonfinite, lr_factor=1.0 / (1.0 + (step - 1) * lr_decay))
    if info.applied:
        _kernel("adagrad", backend)(p, g, ssum, *seg, mul, eps)
    return info


def lion_step(p, g, m, *, lr, beta1=0.9, beta2=0.99, weight_decay=0.0, decoupled_weight_decay=True,
              maximize=False, grad_scale=1.0, max_grad_norm=None, skip_nonfinite=False, segments=None,
              backend=None) -> StepInfo:
    """Lion (EvoLved Sign Momentum), in place.

    c = beta1 m + (1 - beta1) g;  p <- (1 - lr wd) p - lr sign(c);  m <- beta2 m + (1 - beta2) g.
    Weight decay is decoupled by default, as in the paper. Use a learning rate
    3-10x smaller than AdamW's: every coordinate moves by exactly lr.

    Reference: Chen et al., "Symbolic discovery of optimization algorithms", NeurIPS 2023, Alg. 2.
    """
    f = "lion_step"
    backend, (p, g, m) = check_arrays(f, ("p", "g", "m"), (p, g, m), backend)
    beta1 = V.hyper(f, "beta1", beta1, low=0.0, high=1.0)
    beta2 = V.beta(f, "beta2", beta2)
    seg, mul, info = _common(f, backend, p, g, segments, lr, weight_decay, decoupled_weight_decay, maximize,
                             grad_scale, max_grad_norm, skip_nonfinite)
    if info.applied:
        _kernel("lion", backend)(p, g, m, *seg, mul, beta1, beta2)
    return info
