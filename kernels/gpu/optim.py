"""CuPy launchers of the "optim" family: fused, in-place optimiser updates on the GPU.

Same names, signatures and math as :mod:`fastopt.kernels.reference` (read the update
rules there); the CUDA kernels are in ``optim.cu`` beside this file. Each function
launches one kernel over the whole flat buffer (all segments at once) on the current
device and stream, and returns without synchronising.

Arguments:

- ``p``, ``g`` and the state buffers: contiguous 1-D CuPy arrays of one dtype,
  float32 or float64, on the current device (trusted: validated by the caller).
  Unused state buffers are size-0 arrays (CuPy or NumPy): the kernel gets a null
  pointer and never touches them.
- ``bounds`` (int64, ``n_seg + 1`` offsets) and the per-segment ``lr``, ``l2``,
  ``shrink``: NumPy or CuPy arrays. Host arrays are copied to the device at every
  call (two small transfers: ``bounds``, and ``lr``, ``l2``, ``shrink`` stacked); pass
  CuPy arrays of int64 / the parameters' dtype to avoid the copies.
- Scalars: any real numbers (the host computes them in float64); they are rounded
  once to the parameters' dtype and passed by value (float32 kernels get float32
  scalars), flags as ``int``. The decay rates whose complement the update needs
  (``beta1``, ``beta2``, ``alpha``, ``dampening``) go as double: the kernel forms
  ``1 - beta`` in double before rounding, as the CPU kernels and PyTorch do. Host ``lr``,
  ``l2``, ``shrink`` are rounded likewise.

A zero-size ``p`` launches nothing.
"""
from __future__ import annotations

import cupy
import numpy as np

from . import _module

__all__ = ["grad_sumsq", "sgd", "heavy_ball", "sgd_momentum", "adam", "adam_plain", "nadam", "rmsprop",
           "adagrad", "lion"]

_FILE = "optim.cu"
#: Must equal SUMSQ_THREADS and SUMSQ_CHUNK in optim.cu (tests/test_cuda_compile.py checks).
SUMSQ_THREADS = 256
SUMSQ_CHUNK = 8192
#: A null device pointer, passed by value (8 zero bytes) for unused state buffers.
_NULL = np.uint64(0)


def _device(a, dtype):
    """``a`` as a device array of ``dtype``: no copy when it already is one."""
    return cupy.asarray(a, dtype=dtype)


def _segments(p, bounds, lr, l2, shrink):
    """Device arrays ``bounds`` (int64), ``lr``, ``l2``, ``shrink`` (``p``'s dtype), and ``n_seg``."""
    if isinstance(lr, cupy.ndarray) or isinstance(l2, cupy.ndarray) or isinstance(shrink, cupy.ndarray):
        lr, l2, shrink = _device(lr, p.dtype), _device(l2, p.dtype), _device(shrink, p.dtype)
    else:  # host arrays: one transfer for the three instead of three
        lr, l2, shrink = _device(np.stack((lr, l2, shrink)).astype(p.dtype, copy=False), p.dtype)
    return _device(bounds, np.int64), lr, l2, shrink, np.int64(len(bounds) - 1)


def _state(a):
    """A state buffer as a kernel argument: the array, or a null pointer when unused (size 0)."""
    return a if a.size else _NULL


def _launch(name, p, args):
    """Launch kernel ``name`` for ``p``'s dtype with a grid-stride grid over ``p``."""
    kernel = _module.get_kernel(_FILE, name, p.dtype)
    kernel((_module.grid_size(p.size),), (_module.THREADS,), args)


def grad_sumsq(g):
    """sum_i g_i^2 in float64 (inf or NaN when ``g`` holds a non-finite value); a Python float.

    Deterministic: fixed chunks of ``SUMSQ_CHUNK`` elements give float64 partial sums
    that a second kernel adds in a fixed order. Synchronises (the result comes to the host).
    """
    n = g.size
    if n == 0:
        return 0.0
    n_partial = -(-n // SUMSQ_CHUNK)
    partial = cupy.empty(n_partial, dtype=np.float64)
    out = cupy.empty(1, dtype=np.float64)
    _module.get_kernel(_FILE, "grad_sumsq_partial", g.dtype)(
        (n_partial,), (SUMSQ_THREADS,), (g, np.int64(n), partial))
    _module.get_kernel(_FILE, "grad_sumsq_finish", g.dtype)(
        (1,), (SUMSQ_THREADS,), (partial, np.int64(n_partial), out))
    return float(cupy.asnumpy(out)[0])


def sgd(p, g, bounds, lr, l2, shrink, grad_mul):
    """Plain gradient descent: p <- shrink p - lr g_e (in place)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("sgd", p, (p, g, bounds, lr, l2, shrink, t(grad_mul), np.int64(p.size), n_seg))


def heavy_ball(p, g, m, bounds, lr, l2, shrink, grad_mul, beta):
    """Heavy-ball momentum: m <- beta m - lr g_e;  p <- shrink p + m (in place)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("heavy_ball", p, (p, g, m, bounds, lr, l2, shrink, t(grad_mul), t(beta),
                              np.int64(p.size), n_seg))


def sgd_momentum(p, g, buf, bounds, lr, l2, shrink, grad_mul, momentum, dampening, nesterov, first_step):
    """SGD with momentum in PyTorch's form, Nesterov optional (in place: ``p``, ``buf``)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("sgd_momentum", p, (p, g, buf, bounds, lr, l2, shrink, t(grad_mul), t(momentum),
                                np.float64(dampening), np.int32(bool(nesterov)), np.int32(bool(first_step)),
                                np.int64(p.size), n_seg))


def adam(p, g, m, v, vmax, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt, amsgrad):
    """Adam / AdamW / AMSGrad (in place: ``p``, ``m``, ``v`` and ``vmax`` with ``amsgrad``)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("adam", p, (p, g, m, v, _state(vmax), bounds, lr, l2, shrink, t(grad_mul), np.float64(beta1),
                        np.float64(beta2), t(eps), t(bc2_sqrt), np.int32(bool(amsgrad)),
                        np.int64(p.size), n_seg))



def adam_plain(p, g, m, v, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2_sqrt):
    """``adam`` on one segment without AMSGrad (scalars ``lr``, ``l2``, ``shrink``): one launch.

    Returns False and launches nothing when the sizes differ or any two arrays' memory overlaps,
    as the reference does, True after the launch.
    """
    arrays = (p, g, m, v)
    if any(a.size != p.size for a in arrays) or any(
            cupy.may_share_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:]):
        return False
    adam(p, g, m, v, p[:0], np.array([0, p.size], dtype=np.int64), np.array([lr]), np.array([l2]),
         np.array([shrink]), grad_mul, beta1, beta2, eps, bc2_sqrt, False)
    return True


def nadam(p, g, m, v, bounds, lr, l2, shrink, grad_mul, beta1, beta2, eps, bc2, coef_g, coef_m):
    """NAdam in PyTorch's form (in place: ``p``, ``m``, ``v``)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("nadam", p, (p, g, m, v, bounds, lr, l2, shrink, t(grad_mul), np.float64(beta1), np.float64(beta2),
                         t(eps), t(bc2), t(coef_g), t(coef_m), np.int64(p.size), n_seg))


def rmsprop(p, g, sq, gavg, buf, bounds, lr, l2, shrink, grad_mul, alpha, eps, momentum, centered):
    """RMSprop, centred or not, with or without momentum (in place: ``p``, ``sq``, ``gavg``, ``buf``)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("rmsprop", p, (p, g, sq, _state(gavg), _state(buf), bounds, lr, l2, shrink,
                           t(grad_mul), np.float64(alpha), t(eps), t(momentum), np.int32(bool(centered)),
                           np.int64(p.size), n_seg))


def adagrad(p, g, ssum, bounds, lr, l2, shrink, grad_mul, eps):
    """Adagrad (in place: ``p``, ``ssum``)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("adagrad", p, (p, g, ssum, bounds, lr, l2, shrink, t(grad_mul), t(eps),
                           np.int64(p.size), n_seg))


def lion(p, g, m, bounds, lr, l2, shrink, grad_mul, beta1, beta2):
    """Lion (in place: ``p``, ``m``)."""
    if p.size == 0:
        return
    t = p.dtype.type
    bounds, lr, l2, shrink, n_seg = _segments(p, bounds, lr, l2, shrink)
    _launch("lion", p, (p, g, m, bounds, lr, l2, shrink, t(grad_mul), np.float64(beta1), np.float64(beta2),
                        np.int64(p.size), n_seg))
