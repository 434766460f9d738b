r"""CuPy launchers of the "mlp" family: small networks carrying derivative channels, forward and backward.

Same names, signatures and math as :mod:`fastopt.kernels.reference_nn` (read the channel layout
``(C, J, n)``, ``C in {1, 1 + d, 2 + d}``, the flat parameter layout of ``theta`` and the backward
derivation there); the CUDA kernels are in ``mlp.cu`` beside this file. Computation is in the
arrays' dtype (float32 or float64).

How a pass is built
-------------------
Forward (``L`` hidden layers; ``CJ = C J`` stacked rows)::

    z_0 = gamma(x)                        fourier_forward (fourier.cu) into the tape
    a_l = z_{l-1} W_l                     one cuBLAS GEMM (CJ, n_{l-1}) x (n_{l-1}, n_l), every channel
    z_l = sigma(a_l + b_l) + channels     bias_act_forward: value, grad z = s1 grad a,
                                          lap z = s2 |grad a|^2 + s1 lap a; a's value row <- s1
    u = z_L c + c0, then g + phi u        output_forward (one warp per point)

Backward (reverse mode through the forward-mode channels, reference steps 1-5)::

    ub = ansatz adjoint; zb_L = ub c^T    output_backward, with the partial sums of dc, dc0
    ab_l = act adjoint of zb_l            act_backward in place (s2, s3 from z and s1: no
                                          transcendental function), with the partial sums of db_l
    dW_l = z_{l-1}^T ab_l                 one cuBLAS GEMM (n_{l-1}, CJ) x (CJ, n_l) into grad
    zb_{l-1} = ab_l W_l^T                 one cuBLAS GEMM into the other adjoint buffer
    dB                                    fourier_backward on zb_0 (trainable frequencies only)

The GEMMs go through ``cupy.matmul(..., out=view)``: for 2-D operands that are C- or
F-contiguous views CuPy calls cuBLAS (``cublasGemmEx``) with transpose flags, without copies,
writing straight into the tape or the gradient buffer. CuPy computes float32 GEMMs in full
float32 unless ``CUPY_TF32=1`` is set (TF32 would break the float32 tolerances of the tests).

Tape (:func:`mlp_tape_size`; every region starts at a multiple of ``ALIGN`` elements)::

    z_l   (C, J, n_l)   l = 0..L-1   the features and hidden channels (z_L is the basis output)
    a_l   (C, J, n_l)   l = 1..L     pre-activation channels, value row overwritten by s1
    buf0, buf1  (C, J, max n)        the backward's adjoint buffers (ping-pong; zb_0 ends in buf0)
    partial  (ceil(J / CHUNK), max(n_L + 1, max_l n_l))   per-chunk partial sums (db, dc, dc0)
    fourier  ceil(J / 256) (2 d + 1) floor(n_0 / 2)       dL/dB partials of fourier_backward

``floor(n_0 / 2)`` bounds ``K`` (``n_0 = [d] + 2K``; the size function is not told ``keep_x``).
Neither pass allocates: CuPy's GEMM call needs no workspace beyond cuBLAS's own.

Launch configuration
--------------------
- elementwise kernels (``bias_act_forward``, the ansatz, ``activation_table``): ``_module.THREADS``
  (256) threads per block, ``_module.grid_size(J n)`` blocks, a grid-stride loop over the
  ``J n`` elements of one channel, each thread doing every channel of its element (so the
  ansatz may work in place); consecutive threads touch consecutive addresses of each channel;
- ``output_forward``: one warp per point (lanes stride over the N units, a warp butterfly
  adds them), 8 warps per block, ``grid_size(32 J)`` blocks;
- tiled reductions (``output_backward``, ``act_backward``): a grid of
  ``(ceil(J / CHUNK), ceil(n / 32))`` blocks of ``8 x 32`` threads: a lane owns a unit (column),
  a warp every 8th point of the block's ``CHUNK`` = 64 points. A thread adds its points in
  order, the warps are added in warp order, and ``sum_chunks`` (one block of 256 threads per
  parameter) adds the chunks in a fixed tree: dL/db, dL/dc and dL/dc0 are deterministic, as
  are the cuBLAS GEMMs for a fixed configuration (same device, library, shapes, one stream),
  so two runs give the same bits. CHUNK = 64 gives ``J / 64`` blocks per column tile: over a
  thousand at J = 1e5, enough to fill an H100/H200 (132 SMs) while the partial sums stay small.

Launches per pass with L hidden layers: forward 2 + 2L (features, a GEMM and bias_act_forward per
layer, output_forward); backward 1 + 4L (output_backward and sum_chunks; per layer act_backward,
sum_chunks and two GEMMs, except the first layer's zb GEMM), 4 + 4L with trainable frequencies
(that GEMM, and ``fourier_backward``'s two passes). At small J (the lecture's 1-20-20-1 at
J = 100) the time is these launches' host overhead.

Arguments: contiguous CuPy arrays of one dtype on the current device (``widths`` a host int64
array; ``phi``/``g`` of size 0 when unused), trusted (validated by the caller); ``s`` any real
number, rounded to the dtype; flags as bools. Every function launches on the current stream and
returns without synchronising.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cupy
import numpy as np

from . import _module
from . import fourier as _fourier

__all__ = ["activation_derivatives", "ansatz_forward", "ansatz_backward", "mlp_tape_size", "mlp_forward",
           "mlp_backward", "CHUNK", "LANES", "WARPS", "FINISH_THREADS", "ALIGN"]

_FILE = "mlp.cu"
#: Must equal MLP_CHUNK, MLP_LANES, MLP_WARPS and FINISH_THREADS in mlp.cu.
CHUNK = 64
LANES = 32
WARPS = 8
FINISH_THREADS = 256
#: Tape regions start at multiples of this many elements (256 B in float32): aligned GEMM operands.
ALIGN = 64
_NULL = np.uint64(0)


def _ptr(a):
    """An array as a kernel argument: itself, or a null pointer when it has no elements."""
    return a if a.size else _NULL


def _ceil(a, b):
    return -(-a // b)


def _align(n):
    return _ceil(n, ALIGN) * ALIGN


# =========================================================================== layouts
@dataclass(frozen=True)
class _Layout:
    z: tuple        # offset of z_l, l = 0..L-1
    a: tuple        # offset of a_l, l = 1..L (index l - 1)
    buf: tuple      # the two adjoint buffers
    partial: int
    fourier: int
    fourier_size: int
    size: int


@functools.lru_cache(maxsize=256)
def _tape_layout(C: int, J: int, d: int, widths: tuple) -> _Layout:
    L = len(widths) - 1
    CJ = C * J
    p = 0
    z, a = [], []
    for l in range(L):
        z.append(p)
        p += _align(CJ * widths[l])
    for l in range(1, L + 1):
        a.append(p)
        p += _align(CJ * widths[l])
    buf = []
    for _ in range(2):
        buf.append(p)
        p += _align(CJ * max(widths))
    partial = p
    p += _align(_ceil(J, CHUNK) * max((widths[-1] + 1,) + widths[1:]))
    fourier = p
    fourier_size = _fourier.backward_workspace_size(J, d, widths[0] // 2, True, False)
    p += fourier_size
    return _Layout(tuple(z), tuple(a), tuple(buf), partial, fourier, fourier_size, p)


@functools.lru_cache(maxsize=256)
def _param_offsets(pB: int, widths: tuple):
    """(offsets of W_l, offsets of b_l, offset of c), l = 1..L, in the flat buffer (reference layout)."""
    W, b = [], []
    p = pB
    for l in range(len(widths) - 1):
        W.append(p)
        p += widths[l] * widths[l + 1]
        b.append(p)
        p += widths[l + 1]
    return tuple(W), tuple(b), p


def _widths(widths) -> tuple:
    return tuple(int(w) for w in widths)


def _view(tape, offset, shape):
    n = 1
    for s in shape:
        n *= s
    return tape[offset:offset + n].reshape(shape)


def mlp_tape_size(J, d, widths, order):
    """Length of the ``tape`` that :func:`mlp_forward` fills and :func:`mlp_backward` reads.

    Holds (module docstring) the feature, hidden and pre-activation channels, the backward's
    two adjoint buffers, the per-chunk partial sums and the Fourier layer's dL/dB partials:
    about ``C J (n_0 + 2 (n_1 + ... + n_{L-1}) + n_L + 2 max n) + (J / 64) max n
    + (J / 256)(2d + 1) n_0 / 2`` elements of the arrays' dtype.

    Args:
      J: number of points.  d: input dimension.  widths: ``[n_0, ..., n_L]``.
      order: 0, 1 or 2: the channels (C = 1, 1 + d, 2 + d) the passes will carry.
    """
    C = (1, 1 + int(d), 2 + int(d))[int(order)]
    return _tape_layout(C, int(J), int(d), _widths(widths)).size


# =========================================================================== building blocks
def activation_derivatives(act, a, out):
    """``out[k] <- sigma^(k)(a)`` for k = 0 .. out.shape[0] - 1 (at most 3), in ``out``'s dtype.

    Args:
      act: int activation code (0 tanh, 1 sin).
      a: array of pre-activations, any shape (cast to ``out``'s dtype, made contiguous if needed).
      out: (m, *a.shape) with m <= 4, C-contiguous, written.
    """
    m = out.shape[0]
    n = a.size
    if m == 0 or n == 0:
        return
    a = cupy.ascontiguousarray(cupy.asarray(a, dtype=out.dtype))
    _module.get_kernel(_FILE, "activation_table", out.dtype)(
        (_module.grid_size(n),), (_module.THREADS,), (a, out, np.int64(n), np.int64(m), np.int32(act)))


def _cjn(v):
    C, J = v.shape[:2]
    return C, J, (v.shape[2] if v.ndim == 3 else 1)


def ansatz_forward(d, v, phi, g, out):
    """Output transform ``out <- g + phi v`` with its derivative channels (product rule).

    grad(g + phi v) = grad g + v grad phi + phi grad v;
    lap(g + phi v) = lap g + v lap phi + 2 grad phi . grad v + phi lap v.

    Args:
      d: int input dimension.
      v: (C, J) or (C, J, n) channels.  phi: (C, J) channels of phi.
      g: (C, J) channels of g, or size 0 for g = 0.
      out: like ``v``, written (may be ``v`` itself).
    """
    C, J, n = _cjn(v)
    if J * n == 0:
        return
    _module.get_kernel(_FILE, "ansatz_forward", out.dtype)(
        (_module.grid_size(J * n),), (_module.THREADS,),
        (v, phi, _ptr(g), out, np.int64(J), np.int64(n), np.int64(C), np.int64(d)))


def ansatz_backward(d, adj_out, phi, adj_v):
    """Adjoints of ``v``'s channels from those of ``g + phi v`` (reference step 1).

    Args:
      d: int input dimension.
      adj_out: (C, J) or (C, J, n) adjoints of the transformed channels.
      phi: (C, J) channels of phi.
      adj_v: like ``adj_out``, written (may be ``adj_out`` itself).
    """
    C, J, n = _cjn(adj_out)
    if J * n == 0:
        return
    _module.get_kernel(_FILE, "ansatz_backward", adj_v.dtype)(
        (_module.grid_size(J * n),), (_module.THREADS,),
        (adj_out, phi, adj_v, np.int64(J), np.int64(n), np.int64(C), np.int64(d)))


def _sum_chunks(dtype, partial, n_chunks, stride, n_out, out):
    """``out[q] <- sum_c partial[c, q]`` for q < n_out (fixed order)."""
    _module.get_kernel(_FILE, "sum_chunks", dtype)(
        (n_out,), (FINISH_THREADS,), (partial, np.int64(n_chunks), np.int64(stride), out))


# =========================================================================== the passes
def mlp_forward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, g, out, basis, tape):
    """Forward pass carrying derivative channels: output ``u`` and the basis ``z_L``; fills ``tape``.

    Args:
      x: (J, d) points.  B: (d, K) frequencies (the ``"fourier.B"`` view of ``theta`` when
        trainable); K = 0 for no Fourier layer (then ``keep_x``).
      theta: (P,) the flat parameter buffer (layout: ``reference_nn.param_layout``).
      widths: int64 (L + 1,) ``[n_0, n_1, ..., n_L]``, n_0 = [d] + 2K (host array).
      act: int activation code.  s: float Fourier scale.  keep_x: bool.
      train_B: bool, whether ``"fourier.B"`` heads ``theta``.  has_c0: bool, output bias.
      phi: (C, J) channels of the ansatz factor, or size 0 (no ansatz).
      g: (C, J) channels of the ansatz offset, or size 0 (g = 0).
      out: (C, J) written: the channels of u (after the ansatz).
      basis: (C, J, n_L) written: the channels of the last hidden layer (before the ansatz).
      tape: (mlp_tape_size(J, d, widths, order),) workspace, written; read by :func:`mlp_backward`.
    """
    C, J = out.shape
    d = x.shape[1]
    if J == 0:
        return
    w = _widths(widths)
    L = len(w) - 1
    N = w[-1]
    CJ = C * J
    dtype = out.dtype
    lay = _tape_layout(C, J, d, w)
    W_off, b_off, c_off = _param_offsets(B.size if train_B else 0, w)
    feats = basis if L == 0 else _view(tape, lay.z[0], (C, J, w[0]))
    _fourier.fourier_forward(x, B, s, keep_x, feats)
    bias_act = _module.get_kernel(_FILE, "bias_act_forward", dtype)
    for l in range(1, L + 1):
        n_in, n_out = w[l - 1], w[l]
        A = _view(tape, lay.a[l - 1], (CJ, n_out))
        cupy.matmul(_view(tape, lay.z[l - 1], (CJ, n_in)), _view(theta, W_off[l - 1], (n_in, n_out)), out=A)
        Z = basis if l == L else _view(tape, lay.z[l], (C, J, n_out))
        bias_act((_module.grid_size(J * n_out),), (_module.THREADS,),
                 (A, theta[b_off[l - 1]:b_off[l - 1] + n_out], Z, np.int64(J), np.int64(n_out), np.int64(C),
                  np.int64(d), np.int32(act)))
    c0 = theta[c_off + N:c_off + N + 1] if has_c0 else _NULL
    _module.get_kernel(_FILE, "output_forward", dtype)(
        (_module.grid_size(LANES * J),), (_module.THREADS,),
        (basis, theta[c_off:c_off + N], c0, _ptr(phi), _ptr(g) if phi.size else _NULL, out, np.int64(J),
         np.int64(N), np.int64(C), np.int64(d)))


def mlp_backward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, basis, tape, adj, grad):
    """Gradient of a loss on the output channels w.r.t. every parameter: ``grad <- dL/dtheta``.

    Reverse mode through the forward-mode channels (reference steps 1-5). Call after
    :func:`mlp_forward` with the same arguments; ``basis`` and ``tape`` are what it wrote (the
    tape's workspace part is overwritten). Every sum over points has a fixed order.

    Args:
      x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi: as in :func:`mlp_forward`.
      basis: (C, J, n_L) the forward's basis channels.  tape: the forward's tape.
      adj: (C, J) adjoints dL/d(channel) of the output channels (after the ansatz).
      grad: (P,) written, laid out like ``theta``.
    """
    C, J = adj.shape
    d = x.shape[1]
    if J == 0:
        grad.fill(0)  # every gradient is a sum over no points
        return
    w = _widths(widths)
    L = len(w) - 1
    N = w[-1]
    CJ = C * J
    dtype = adj.dtype
    lay = _tape_layout(C, J, d, w)
    pB = B.size if train_B else 0
    W_off, b_off, c_off = _param_offsets(pB, w)
    n_chunks = _ceil(J, CHUNK)
    partial = tape[lay.partial:]
    # output layer: dc, dc0 and zb_L = ub c^T (into the buffer the last layer's ab will use)
    zb = _view(tape, lay.buf[L % 2], (C, J, N)) if (L > 0 or train_B) else _NULL
    _module.get_kernel(_FILE, "output_backward", dtype)(
        (n_chunks, _ceil(N + 1, LANES)), (LANES * WARPS,),
        (adj, _ptr(phi), theta[c_off:c_off + N], basis, zb, partial, np.int64(J), np.int64(N), np.int64(C),
         np.int64(d)))
    _sum_chunks(dtype, partial, n_chunks, N + 1, N + int(bool(has_c0)), grad[c_off:])
    act_bwd = _module.get_kernel(_FILE, "act_backward", dtype)
    for l in range(L, 0, -1):
        n_in, n_out = w[l - 1], w[l]
        X = _view(tape, lay.buf[l % 2], (CJ, n_out))
        Z = basis if l == L else _view(tape, lay.z[l], (C, J, n_out))
        act_bwd((n_chunks, _ceil(n_out, LANES)), (LANES * WARPS,),
                (_view(tape, lay.a[l - 1], (CJ, n_out)), Z, X, partial, np.int64(J), np.int64(n_out), np.int64(C),
                 np.int64(d), np.int32(act)))
        _sum_chunks(dtype, partial, n_chunks, n_out, n_out, grad[b_off[l - 1]:])
        Zin = _view(tape, lay.z[l - 1], (CJ, n_in))
        cupy.matmul(Zin.T, X, out=_view(grad, W_off[l - 1], (n_in, n_out)))
        if l > 1 or train_B:
            cupy.matmul(X, _view(theta, W_off[l - 1], (n_in, n_out)).T,
                        out=_view(tape, lay.buf[(l - 1) % 2], (CJ, n_in)))
    if train_B:
        zb0 = _view(tape, lay.buf[0], (C, J, w[0]))
        _fourier._backward(x, B, s, keep_x, zb0, grad[:pB].reshape(B.shape), grad[:0],
                           tape[lay.fourier:lay.fourier + lay.fourier_size])
