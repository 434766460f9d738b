"""Readable float64 NumPy reference of every kernel: the test oracle.

Every function here has the same name and signature as its fast twins in
``kernels/cpu/<family>.py`` and ``kernels/gpu/<family>.py``. Each computes in
float64 whatever the dtype of its arguments and writes the result back in place
(rounded to the arrays' dtype). Inputs are trusted: :mod:`fastopt` validates them.

Family "optim": fused optimiser updates
======================================
All updates act on one flat buffer ``p`` with gradient ``g`` and the algorithm's
state buffers, split into segments ``bounds[s] <= i < bounds[s+1]`` with their own
scalars (parameter groups). Per segment ``s``:

- ``lr[s]``: the step size, with every step-dependent factor already folded in on
  the host (schedule, and Adam's first-moment bias correction ``1 / (1 - beta1^k)``);
- ``l2[s]``: L2 weight decay, added to the gradient: ``g <- g + l2 p``;
- ``shrink[s]``: decoupled weight decay as a factor ``p <- shrink p`` (``1 - lr wd``),
  1 when unused.

The gradient seen by every algorithm is ``g_e = grad_mul * g + l2 * p`` where the host
folds into ``grad_mul`` the gradient scale (1/scale), global-norm clipping and the sign
of ``maximize``. Unused state buffers are passed as size-0 arrays.
"""
from __future__ import annotations

import numpy as np

F64 = np.float64


def _segments(bounds):
    """Yield ``(s, slice)`` for every segment of the flat buffer."""
    for s in range(len(bounds) - 1):
        yield s, slice(int(bounds[s]), int(bounds[s + 1]))


def _effective_grad(p, g, grad_mul, l2):
    """g_e = grad_mul * g + l2 * p, in float64."""
    return F64(grad_mul) * g.astype(F64) + F64(l2) * p.astype(F64)


def _lerp(a, b, w):
    """(1 - w) a + w b: the exponential moving average of ``b`` with weight ``w``.

    Written as a weighted sum, exact at w = 0 and w = 1 (``a + w (b - a)`` loses ``b``
    when w = 1 and |a| >> |b|); the fast kernels use PyTorch's two-branch lerp.
    """
    w = F64(w)
    return (1.0 - w) * a + w * b


def grad_sumsq(g):
    """sum_i g_i^2 in float64; inf or NaN when ``g`` holds a non-finite value.

    The finiteness check and the global norm share this one pass over ``g``.
    """
    g64 = g.astype(F64)
    return float(np.dot(g64, g64)) if g64.size else 0.0


def sgd(p, g, bounds, lr, l2, shrink, grad_mul):
    """Plain gradient descent: p <- shrink p - lr g_e."""
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * ge


def heavy_ball(p, g, m, bounds, lr, l2, shrink, grad_mul, beta):
    """Heavy-ball momentum in the lecture's form.

    m <- beta m - lr g_e;  p <- shrink p + m.
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        m_new = F64(beta) * m[sl].astype(F64) - F64(lr[s]) * ge
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) + m_new
        m[sl] = m_new


def sgd_momentum(p, g, buf, bounds, lr, l2, shrink, grad_mul, momentum, dampening, nesterov, first_step):
    """SGD with momentum in PyTorch's form (``torch.optim.SGD``).

    buf <- g_e on the first step, else buf <- momentum buf + (1 - dampening) g_e;
    d = g_e + momentum buf (Nesterov) or buf;  p <- shrink p - lr d.
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        if first_step:
            b = ge.copy()
        else:
            b = F64(momentum) * buf[sl].astype(F64) + (1.0 - F64(dampening)) * ge
        d = ge + F64(momentum) * b if nesterov else b
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * d
        buf[sl] = b


def adam(p, g, m, v, vmax, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt, amsgrad):
    """Adam (Kingma & Ba 2015), with AdamW and AMSGrad as options.

    m <- m + (1 - beta1)(g_e - m);  v <- beta2 v + (1 - beta2) g_e^2;
    AMSGrad: vmax <- max(vmax, v), used in place of v;
    p <- shrink p - lr m / (sqrt(v) / bc2_sqrt + eps),
    with ``lr`` already divided by 1 - beta1^k and ``bc2_sqrt = sqrt(1 - beta2^k)``.
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        m_new = _lerp(m[sl].astype(F64), ge, 1.0 - F64(beta1))
        v_new = F64(beta2) * v[sl].astype(F64) + (1.0 - F64(beta2)) * ge * ge
        if amsgrad:
            vmax_new = np.maximum(vmax[sl].astype(F64), v_new)
            vmax[sl] = vmax_new
            second = vmax_new
        else:
            second = v_new
        denom = np.sqrt(second) / F64(bc2_sqrt) + F64(eps)
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * (m_new / denom)
        m[sl] = m_new
        v[sl] = v_new



def adam_plain(p, g, m, v, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt):
    """``adam`` on one segment without AMSGrad, the segment's ``lr``, ``l2``, ``shrink`` as scalars.

    Returns False and touches nothing when the arrays' sizes differ or their memory overlaps
    (the CPU kernel's lean entry relies on this check), True after the update.
    """
    arrays = (p, g, m, v)
    if any(a.size != p.size for a in arrays) or any(
            np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]):
        return False
    adam(p, g, m, v, p[:0], np.array([0, p.size]), np.array([lr]), np.array([l2]), np.array([shrink]),
         grad_mul, beta1, beta2, eps, bc2_sqrt, False)
    return True


def nadam(p, g, m, v, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2, coef_g, coef_m):
    """NAdam (Dozat 2016) in PyTorch's form, with momentum decay folded into two scalars.

    m <- m + (1 - beta1)(g_e - m);  v <- beta2 v + (1 - beta2) g_e^2;
    denom = sqrt(v / bc2) + eps;
    p <- shrink p - lr coef_g g_e / denom - lr coef_m m / denom,
    where the host computes coef_g = (1 - mu_k) / (1 - prod_{i<=k} mu_i) and
    coef_m = mu_{k+1} / (1 - prod_{i<=k+1} mu_i), with mu_k = beta1 (1 - 0.96^(k psi) / 2).
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        m_new = _lerp(m[sl].astype(F64), ge, 1.0 - F64(beta1))
        v_new = F64(beta2) * v[sl].astype(F64) + (1.0 - F64(beta2)) * ge * ge
        denom = np.sqrt(v_new / F64(bc2)) + F64(eps)
        step_g = F64(lr[s]) * F64(coef_g)
        step_m = F64(lr[s]) * F64(coef_m)
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) - step_g * ge / denom - step_m * m_new / denom
        m[sl] = m_new
        v[sl] = v_new


def rmsprop(p, g, sq, gavg, buf, bounds, lr, l2, shrink, grad_mul, alpha, eps, momentum, centered):
    """RMSprop (Hinton 2012) in PyTorch's form, centred or not, with or without momentum.

    sq <- alpha sq + (1 - alpha) g_e^2;  centred: gavg <- gavg + (1 - alpha)(g_e - gavg),
    avg = sqrt(sq - gavg^2) + eps, else avg = sqrt(sq) + eps;
    momentum > 0: buf <- momentum buf + g_e / avg, p <- shrink p - lr buf;
    else p <- shrink p - lr g_e / avg.  ``gavg`` / ``buf`` are size 0 when unused.
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        sq_new = F64(alpha) * sq[sl].astype(F64) + (1.0 - F64(alpha)) * ge * ge
        if centered:
            gavg_new = _lerp(gavg[sl].astype(F64), ge, 1.0 - F64(alpha))
            avg = np.sqrt(sq_new - gavg_new * gavg_new) + F64(eps)
            gavg[sl] = gavg_new
        else:
            avg = np.sqrt(sq_new) + F64(eps)
        if momentum > 0:
            b = F64(momentum) * buf[sl].astype(F64) + ge / avg
            p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * b
            buf[sl] = b
        else:
            p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * (ge / avg)
        sq[sl] = sq_new


def adagrad(p, g, ssum, bounds, lr, l2, shrink, grad_mul, eps):
    """Adagrad (Duchi et al. 2011): ssum <- ssum + g_e^2;  p <- shrink p - lr g_e / (sqrt(ssum) + eps).

    ``lr`` already holds PyTorch's decayed rate lr / (1 + (k - 1) lr_decay).
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        ssum_new = ssum[sl].astype(F64) + ge * ge
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * (ge / (np.sqrt(ssum_new) + F64(eps)))
        ssum[sl] = ssum_new


def lion(p, g, m, bounds, lr, l2, shrink, grad_mul, beta1, beta2):
    """Lion (Chen et al. 2023): the sign of an interpolated momentum.

    c = m + (1 - beta1)(g_e - m);  p <- shrink p - lr sign(c);  m <- m + (1 - beta2)(g_e - m).
    """
    for s, sl in _segments(bounds):
        ge = _effective_grad(p[sl], g[sl], grad_mul, l2[s])
        m64 = m[sl].astype(F64)
        c = _lerp(m64, ge, 1.0 - F64(beta1))
        p[sl] = F64(shrink[s]) * p[sl].astype(F64) - F64(lr[s]) * np.sign(c)
        m[sl] = _lerp(m64, ge, 1.0 - F64(beta2))
