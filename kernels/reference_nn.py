r"""Readable float64 NumPy reference of the "fourier" and "mlp" kernel families: the test oracle.

Every kernel here (``fourier_forward``, ``fourier_backward``, ``activation_derivatives``,
``ansatz_forward``, ``ansatz_backward``, ``mlp_tape_size``, ``mlp_forward``, ``mlp_backward``)
has the same name and signature as its fast twins in ``kernels/cpu/{fourier,mlp}.py`` and
``kernels/gpu/{fourier,mlp}.py``. Each computes in float64 whatever the dtype of its
arguments and writes its results into arrays the caller preallocated (rounded to their
dtype); outputs are overwritten, never accumulated. Inputs are trusted: :mod:`fastopt`
validates them. Kernel arguments are arrays, ints, floats and bools only (no Python
objects), so that Numba and CUDA kernels can take the same ones. An unused optional array
is passed with size 0 (as in the "optim" family).

The host-side helpers at the end (``ACTIVATIONS``, ``param_layout``, ``param_views``,
``NetSpec`` and the initialisations) are not kernels: they define the parameter layout that
every backend reads and build the arrays a caller passes in.

Derivative channels
===================
A quantity ``v`` that depends on the input point ``x in R^d`` is carried as a stack of
``C`` channels along the first axis, for ``J`` points:

====================  ==============  ====================================================
order (C)             channel index   meaning
====================  ==============  ====================================================
0  (C = 1)            0               v
1  (C = 1 + d)        1 + k           d v / d x_k,  k = 0..d-1
2  (C = 2 + d)        1 + d           Laplacian sum_k d^2 v / d x_k^2
====================  ==============  ====================================================

so a layer's channels have shape ``(C, J, n)`` and the network output's ``(C, J)``. A kernel
reads the order from the first axis of its output (or adjoint) array. In 1D the three
channels are ``u, u', u''``. Every channel of a dense layer is the same linear map
(``grad a = grad z W``, ``lap a = lap z W``; only the value channel gets the bias), so the
stacked layout lets one GEMM with ``C J`` rows do a whole layer, and each channel is a
contiguous ``J x n`` matrix: the rows of the LS Gram matrix for that derivative.

Family "fourier": Fourier features
==================================
For ``x`` of shape ``(J, d)``, frequencies ``B`` of shape ``(d, K)`` (columns ``b_j``) and a scale
``s`` (``2 pi`` or ``1``, chosen on the host)::

    gamma(x) = [x (if keep_x), cos(s x B), sin(s x B)]          n0 = [d] + 2K features

With ``psi_j = s x . b_j``, in closed form::

    d/dx_k cos(psi_j) = -s B_kj sin(psi_j)      d/dx_k sin(psi_j) = s B_kj cos(psi_j)
    lap cos(psi_j) = -s^2 |b_j|^2 cos(psi_j)     lap sin(psi_j) = -s^2 |b_j|^2 sin(psi_j)

and the kept ``x`` has gradient channels ``e_k`` and Laplacian 0. ``K = 0`` with ``keep_x``
is the plain network on ``x``.

Backward. Given adjoints ``Cb, Sb`` of the cos/sin columns (every channel; ``Cb_k`` the
gradient channel ``k``, ``Cb_L`` the Laplacian) and ``Xb`` of the kept-x value columns,
write every channel as a function of ``psi_j`` and, explicitly, of ``B``. Its derivative in
``psi_j``, summed against the adjoints, is::

    psib_j = -sin Cb_0 + cos Sb_0 - s sum_m B_mj (cos Cb_m + sin Sb_m)
            + s^2 |b_j|^2 (sin Cb_L - cos Sb_L)

and the explicit dependence on ``B_kj`` (through ``-s B_kj sin``, ``s B_kj cos``, ``|b_j|^2``) gives::

    dL/dB_kj = sum_points [ s x_k psib_j - s sin Cb_k + s cos Sb_k - 2 s^2 B_kj (cos Cb_L + sin Sb_L) ]
    dL/dx_k  = Xb_k + s sum_j B_kj psib_j

The latter is the full gradient in ``x`` through all channels: apart from the kept-x
value, every channel depends on ``x`` through ``psi`` only.

Family "mlp": small networks that carry derivative channels
===========================================================
Layers (``L >= 0`` hidden layers of widths ``n_1..n_L``; ``n_0`` the feature width)::

    z_0 = gamma(x)                       (channels from the Fourier layer)
    a_l = z_{l-1} W_l + b_l              W_l: (n_{l-1}, n_l), b_l: (n_l,), l = 1..L
    z_l = sigma(a_l)
    u   = z_L c + c0                     c: (N,), N = n_L, c0 optional scalar
    u_out = g + phi u                    optional ansatz (phi, g given with their channels)

The last hidden layer ``z_L`` (channels ``(C, J, N)``) is the basis ``u_n`` of the LS solver; it is
an output of the forward kernel. Channels through the activation (``s1, s2, s3 = sigma', sigma'',
sigma'''`` at ``a``)::

    z = sigma(a);   grad z = s1 grad a;   lap z = s2 sum_k (d_k a)^2 + s1 lap a

Through the ansatz (product rule)::

    u_out = g + phi u;   grad u_out = grad g + u grad phi + phi grad u
    lap u_out = lap g + u lap phi + 2 grad phi . grad u + phi lap u

Backward: reverse mode through the forward-mode channels. Bars are adjoints (``vb = dL/dv``),
given for the output channels ``(ub, grad ub, lap ub)``, any of them possibly zero.

1. Ansatz (linear in ``u``; ``phi`` and ``g`` do not depend on the parameters)::

       ub      = phi ub_out + grad phi . grad ub_out + lap phi lap ub_out
       d_k ub  = phi d_k ub_out + 2 d_k phi lap ub_out
       lap ub  = phi lap ub_out

2. Output layer, every channel ``ch`` (only the value channel carries ``c0``)::

       cb = sum_ch sum_j z_L[ch, j, :] ub[ch, j];   c0b = sum_j ub[0, j];   zb_L[ch] = ub[ch] c^T

3. Activation. From ``(zb, d_k zb, lap zb)`` to ``(ab, d_k ab, lap ab)``, differentiating the three
   channel formulas above in ``a``, ``d_k a`` and ``lap a``::

       ab      = s1 zb + s2 sum_k d_k a d_k zb + (s3 sum_k (d_k a)^2 + s2 lap a) lap zb
       d_k ab  = s1 d_k zb + 2 s2 d_k a lap zb
       lap ab  = s1 lap zb

   (this is where ``sigma'''`` enters: the Laplacian channel's gradient needs it).

4. Dense layer, every channel the same linear map (one GEMM over the stacked channels)::

       Wb_l = sum_ch z_{l-1}[ch]^T ab_l[ch];   bb_l = sum_j ab_l[0, j];   zb_{l-1}[ch] = ab_l[ch] W_l^T

5. Fourier layer: ``zb_0`` are the adjoints of the feature channels; ``fourier_backward`` gives
   ``dL/dB`` when the frequencies are trained.

Parameter layout
================
All parameters live in one flat buffer ``theta`` (a :class:`fastopt.FlatParams`), in this order,
each array row-major; the gradient buffer has the same layout::

    "fourier.B"   (d, K)            only when the frequencies are trainable
    "dense0.W"    (n_0, n_1)        first hidden layer: a_1 = z_0 W + b
    "dense0.b"    (n_1,)
    ...
    "dense{L-1}.W", "dense{L-1}.b"
    "out.c"       (n_L,)            the linear output coefficients (what the LS solver solves for)
    "out.c0"      (1,)              only with an output bias

A kernel gets the layout from ``widths = [n_0, n_1, ..., n_L]`` (int64), ``d``, ``K``, ``train_B``
and ``has_c0`` (:func:`param_layout`). When trainable, the kernel's ``B`` argument is the
``"fourier.B"`` view of ``theta``; otherwise a separate fixed array.

Activations
===========
Integer codes (:data:`ACTIVATIONS`): ``0`` tanh, ``1`` sin. A new activation is one entry in
:data:`ACTIVATIONS`, one branch in :func:`_activation_table` (its value and first three
derivatives) and the same branch in each fast kernel; the test suite checks every code's
derivatives against finite differences.

Example:
  >>> import numpy as np
  >>> from fastopt.kernels import reference_nn as nn
  >>> spec = nn.NetSpec(d=1, hidden=(20, 20))
  >>> params, B = nn.init_network(spec, np.random.default_rng(0))
  >>> x = np.linspace(0.0, 1.0, 5)[:, None]
  >>> C = 2 + spec.d                                   # u, u', u''
  >>> out, basis = np.empty((C, 5)), np.empty((C, 5, 20))
  >>> tape = np.empty(nn.mlp_tape_size(5, spec.d, spec.widths, 2))
  >>> nn.mlp_forward(x, B, params.data, *spec.config, np.empty(0), np.empty(0), out, basis, tape)
  >>> adj = np.zeros_like(out); adj[0] = 2 * out[0] / 5   # L = mean(u^2)
  >>> grad = params.zeros_like()
  >>> nn.mlp_backward(x, B, params.data, *spec.config, np.empty(0), basis, tape, adj, grad.data)
  >>> grad.names[:3], grad["dense1.W"].shape
  (['dense0.W', 'dense0.b', 'dense1.W'], (20, 20))
  >>> bool(grad["out.c0"][0] == adj[0].sum())        # dL/dc0 = sum_j dL/du_j
  True

References:
  M. Tancik et al., Fourier features let networks learn high frequency functions in low
  dimensional domains, NeurIPS 2020.
  E. C. Cyr, M. A. Gulian, R. G. Patel, M. Perego, N. A. Trask, Robust training and
  initialization of deep neural networks: an adaptive basis viewpoint, MSML 2020.
  X. Glorot, Y. Bengio, Understanding the difficulty of training deep feedforward neural
  networks, AISTATS 2010.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The initialisations live in fastopt.init (host NumPy shared with fastopt.nn.MLP); the old names stay here.
from fastopt.init import box as init_box
from fastopt.init import dense_layers
from fastopt.init import fourier_gaussian as init_fourier_gaussian
from fastopt.init import glorot_uniform as init_glorot_uniform
from fastopt.init import uniform as init_uniform

F64 = np.float64

#: Activation name -> the integer code a kernel receives.
ACTIVATIONS = {"tanh": 0, "sin": 1}


# =========================================================================== family "fourier"
def _fourier_channels(x, B, s, keep_x, C):
    """The ``(C, J, n0)`` feature channels and (cos, sin) of ``psi = s x B``, in float64."""
    x = np.asarray(x, F64)
    B = np.asarray(B, F64)
    J, d = x.shape
    K = B.shape[1]
    s = F64(s)
    off = d if keep_x else 0
    psi = s * (x @ B)
    cs, sn = np.cos(psi), np.sin(psi)
    F = np.zeros((C, J, off + 2 * K), F64)
    if keep_x:
        F[0, :, :d] = x
    F[0, :, off:off + K] = cs
    F[0, :, off + K:] = sn
    if C > 1:
        for k in range(d):
            if keep_x:
                F[1 + k, :, k] = 1.0
            F[1 + k, :, off:off + K] = -s * B[k] * sn
            F[1 + k, :, off + K:] = s * B[k] * cs
    if C == d + 2:
        nb = s * s * np.sum(B * B, axis=0)
        F[d + 1, :, off:off + K] = -nb * cs
        F[d + 1, :, off + K:] = -nb * sn
    return F, cs, sn


def fourier_forward(x, B, s, keep_x, out):
    """Fourier features with their derivative channels: ``out <- gamma(x)`` and its x-derivatives.

    gamma(x) = [x (if keep_x), cos(s x B), sin(s x B)]; channel ``1 + k`` is d/dx_k, channel
    ``1 + d`` the Laplacian (closed forms in the module docstring).

    Args:
      x: (J, d) points.
      B: (d, K) frequencies.
      s: float, the scale of the argument (2 pi or 1).
      keep_x: bool, whether the features start with x itself.
      out: (C, J, [d] + 2K), written; C in {1, 1 + d, 2 + d} selects the channels.
    """
    F, _, _ = _fourier_channels(x, B, s, keep_x, out.shape[0])
    out[...] = F


def fourier_backward(x, B, s, keep_x, adj, gB, gx):
    """Gradients of a loss through the Fourier features: ``gB <- dL/dB``, ``gx <- dL/dx``.

    With ``adj[ch, j, f] = dL/d(channel ch of feature f at point j)``; formulas in the module
    docstring. ``gx`` is the full gradient in x through every channel of ``adj``.

    Args:
      x: (J, d) points.  B: (d, K) frequencies.  s: float scale.  keep_x: bool.
      adj: (C, J, [d] + 2K) adjoints of the feature channels.
      gB: (d, K) written, or size 0 (not wanted).
      gx: (J, d) written, or size 0 (not wanted).
    """
    x64 = np.asarray(x, F64)
    B64 = np.asarray(B, F64)
    A = np.asarray(adj, F64)
    J, d = x64.shape
    K = B64.shape[1]
    C = A.shape[0]
    s = F64(s)
    off = d if keep_x else 0
    psi = s * (x64 @ B64)
    cs, sn = np.cos(psi), np.sin(psi)
    Cb, Sb = A[:, :, off:off + K], A[:, :, off + K:]
    psib = -sn * Cb[0] + cs * Sb[0]                     # (J, K)
    gB_explicit = np.zeros((d, K), F64)
    if C > 1:
        for m in range(d):
            psib -= s * B64[m] * (cs * Cb[1 + m] + sn * Sb[1 + m])
            gB_explicit[m] = s * np.sum(-sn * Cb[1 + m] + cs * Sb[1 + m], axis=0)
    if C == d + 2:
        nb = s * s * np.sum(B64 * B64, axis=0)
        psib += nb * (sn * Cb[d + 1] - cs * Sb[d + 1])
        gB_explicit -= 2.0 * s * s * B64 * np.sum(cs * Cb[d + 1] + sn * Sb[d + 1], axis=0)
    if gB.size:
        gB[...] = s * (x64.T @ psib) + gB_explicit
    if gx.size:
        g = s * (psib @ B64.T)
        if keep_x:
            g += A[0, :, :d]
        gx[...] = g


# =========================================================================== family "mlp"
def _activation_table(act, a, order):
    """[sigma(a), sigma'(a), ..., sigma^(order)(a)] in float64 (order <= 3)."""
    a = np.asarray(a, F64)
    if act == 0:  # tanh: t' = 1 - t^2, t'' = -2 t (1 - t^2), t''' = -2 (1 - t^2)(1 - 3 t^2)
        t = np.tanh(a)
        q = 1.0 - t * t
        table = [t, q, -2.0 * t * q, -2.0 * q * (1.0 - 3.0 * t * t)]
    elif act == 1:  # sin
        sn, cs = np.sin(a), np.cos(a)
        table = [sn, cs, -sn, -cs]
    else:
        raise ValueError(f"unknown activation code {act}; known: {ACTIVATIONS}")
    return table[:order + 1]


def activation_derivatives(act, a, out):
    """``out[k] <- sigma^(k)(a)`` for k = 0 .. out.shape[0] - 1 (at most 3).

    Args:
      act: int activation code (:data:`ACTIVATIONS`).
      a: array of pre-activations, any shape.
      out: (m, *a.shape) with m <= 4, written.
    """
    table = _activation_table(act, a, out.shape[0] - 1)
    for k, v in enumerate(table):
        out[k] = v


def _act_forward(act, A, d):
    """Channels of z = sigma(a) from the channels ``A`` (C, J, n) of a."""
    C = A.shape[0]
    sig = _activation_table(act, A[0], 0 if C == 1 else (1 if C == 1 + d else 2))
    Z = np.empty_like(A)
    Z[0] = sig[0]
    if C > 1:
        Z[1:1 + d] = sig[1] * A[1:1 + d]
    if C == d + 2:
        Z[d + 1] = sig[2] * np.sum(A[1:1 + d] ** 2, axis=0) + sig[1] * A[d + 1]
    return Z


def _act_backward(act, A, Zb, d):
    """Adjoints of the channels of a from those of z = sigma(a) (module docstring, step 3)."""
    C = A.shape[0]
    sig = _activation_table(act, A[0], 1 if C == 1 else (2 if C == 1 + d else 3))
    Ab = np.empty_like(Zb)
    Ab[0] = sig[1] * Zb[0]
    if C > 1:
        Ab[0] += sig[2] * np.sum(A[1:1 + d] * Zb[1:1 + d], axis=0)
        Ab[1:1 + d] = sig[1] * Zb[1:1 + d]
    if C == d + 2:
        lap_zb = Zb[d + 1]
        Ab[0] += (sig[3] * np.sum(A[1:1 + d] ** 2, axis=0) + sig[2] * A[d + 1]) * lap_zb
        Ab[1:1 + d] += 2.0 * sig[2] * A[1:1 + d] * lap_zb
        Ab[d + 1] = sig[1] * lap_zb
    return Ab


def _phi_b(phi, v):
    """``phi`` (C, J) broadcast against channels ``v`` of shape (C, J) or (C, J, n)."""
    p = np.asarray(phi, F64)
    return p if v.ndim == 2 else p[..., None]


def ansatz_forward(d, v, phi, g, out):
    """Output transform ``out <- g + phi v`` with its derivative channels (product rule).

    grad(g + phi v) = grad g + v grad phi + phi grad v;
    lap(g + phi v) = lap g + v lap phi + 2 grad phi . grad v + phi lap v.

    Args:
      d: int input dimension.
      v: (C, J) or (C, J, n) channels (the network output, or the basis: then the result is
        the basis of the transformed problem when ``g`` is size 0).
      phi: (C, J) channels of phi.
      g: (C, J) channels of g, or size 0 for g = 0.
      out: like ``v``, written (may be ``v`` itself).
    """
    V = np.asarray(v, F64)
    P = _phi_b(phi, V)
    C = V.shape[0]
    R = np.empty_like(V)
    R[0] = P[0] * V[0]
    if C > 1:
        R[1:1 + d] = P[1:1 + d] * V[0] + P[0] * V[1:1 + d]
    if C == d + 2:
        R[d + 1] = P[d + 1] * V[0] + 2.0 * np.sum(P[1:1 + d] * V[1:1 + d], axis=0) + P[0] * V[d + 1]
    if np.size(g):
        R = R + _phi_b(g, V)
    out[...] = R


def ansatz_backward(d, adj_out, phi, adj_v):
    """Adjoints of ``v``'s channels from those of ``g + phi v`` (module docstring, step 1).

    Args:
      d: int input dimension.
      adj_out: (C, J) or (C, J, n) adjoints of the transformed channels.
      phi: (C, J) channels of phi.
      adj_v: like ``adj_out``, written (may be ``adj_out`` itself).
    """
    Ub = np.asarray(adj_out, F64)
    P = _phi_b(phi, Ub)
    C = Ub.shape[0]
    R = np.empty_like(Ub)
    R[0] = P[0] * Ub[0]
    if C > 1:
        R[0] += np.sum(P[1:1 + d] * Ub[1:1 + d], axis=0)
        R[1:1 + d] = P[0] * Ub[1:1 + d]
    if C == d + 2:
        R[0] += P[d + 1] * Ub[d + 1]
        R[1:1 + d] += 2.0 * P[1:1 + d] * Ub[d + 1]
        R[d + 1] = P[0] * Ub[d + 1]
    adj_v[...] = R


def mlp_tape_size(J, d, widths, order):
    """Length of the ``tape`` workspace that ``mlp_forward`` fills and ``mlp_backward`` reads.

    Each backend sizes its own tape (same signature in every module). The reference needs
    none (0): its backward recomputes the forward in float64 so that the oracle does not
    depend on intermediate values rounded to the caller's dtype.
    """
    return 0


def _forward_channels(x, B, theta, widths, act, s, keep_x, train_B, has_c0, C):
    """All layers' channels in float64: (list of z_l, list of a_l, views of theta)."""
    J, d = np.shape(x)
    K = np.shape(B)[1]
    views = param_views(np.asarray(theta, F64), d, K, widths, train_B, has_c0)
    Z, _, _ = _fourier_channels(x, B, s, keep_x, C)
    Zs, As = [Z], []
    for l in range(len(widths) - 1):
        A = Z @ views[f"dense{l}.W"]
        A[0] += views[f"dense{l}.b"]
        Z = _act_forward(act, A, d)
        Zs.append(Z)
        As.append(A)
    return Zs, As, views


def mlp_forward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, g, out, basis, tape):
    """Forward pass carrying derivative channels: output ``u`` and the basis ``z_L``.

    Math in the module docstring (sections "Derivative channels" and "Family mlp").

    Args:
      x: (J, d) points.
      B: (d, K) frequencies (the ``"fourier.B"`` view of ``theta`` when trainable); K = 0
        for no Fourier layer (then ``keep_x`` must be True).
      theta: (P,) the flat parameter buffer (layout: :func:`param_layout`).
      widths: int64 (L + 1,) ``[n_0, n_1, ..., n_L]``, n_0 = [d] + 2K.
      act: int activation code.  s: float Fourier scale.  keep_x: bool.
      train_B: bool, whether ``"fourier.B"`` heads ``theta``.  has_c0: bool, output bias.
      phi: (C, J) channels of the ansatz factor, or size 0 (no ansatz).
      g: (C, J) channels of the ansatz offset, or size 0 (g = 0).
      out: (C, J) written: the channels of u (after the ansatz).
      basis: (C, J, n_L) written: the channels of the last hidden layer (before the ansatz).
      tape: (mlp_tape_size(J, d, widths, order),) workspace for ``mlp_backward``.
    """
    C = out.shape[0]
    d = np.shape(x)[1]
    Zs, _, views = _forward_channels(x, B, theta, widths, act, s, keep_x, train_B, has_c0, C)
    ZL = Zs[-1]
    basis[...] = ZL
    u = ZL @ views["out.c"]
    if has_c0:
        u[0] += views["out.c0"][0]
    if np.size(phi):
        ansatz_forward(d, u, phi, g, u)
    out[...] = u


def mlp_backward(x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi, basis, tape, adj, grad):
    """Gradient of a loss on the output channels w.r.t. every parameter: ``grad <- dL/dtheta``.

    Reverse mode through the forward-mode channels (module docstring, steps 1-5). Call after
    ``mlp_forward`` with the same arguments; ``basis`` and ``tape`` are what it wrote.

    Args:
      x, B, theta, widths, act, s, keep_x, train_B, has_c0, phi: as in ``mlp_forward``.
      basis: (C, J, n_L) the forward's basis channels.  tape: the forward's tape.
      adj: (C, J) adjoints dL/d(channel) of the output channels (after the ansatz).
      grad: (P,) written, laid out like ``theta``: the B block (when trainable), every W_l,
        b_l, c and c0.
    """
    C = adj.shape[0]
    J, d = np.shape(x)
    K = np.shape(B)[1]
    Zs, As, views = _forward_channels(x, B, theta, widths, act, s, keep_x, train_B, has_c0, C)
    G = np.zeros(np.shape(theta)[0], F64)
    gviews = param_views(G, d, K, widths, train_B, has_c0)
    Ub = np.array(adj, F64)
    if np.size(phi):
        ansatz_backward(d, Ub, phi, Ub)
    ZL = Zs[-1]
    gviews["out.c"][...] = np.einsum("cjn,cj->n", ZL, Ub)
    if has_c0:
        gviews["out.c0"][0] = np.sum(Ub[0])
    Zb = Ub[:, :, None] * views["out.c"]
    for l in range(len(widths) - 2, -1, -1):
        Ab = _act_backward(act, As[l], Zb, d)
        W = views[f"dense{l}.W"]
        gviews[f"dense{l}.W"][...] = np.einsum("cjn,cjm->nm", Zs[l], Ab)
        gviews[f"dense{l}.b"][...] = np.sum(Ab[0], axis=0)
        Zb = Ab @ W.T
    if train_B:
        fourier_backward(x, B, s, keep_x, Zb, gviews["fourier.B"], np.empty(0))
    grad[...] = G


# =========================================================================== layout (host)
def param_layout(d, K, widths, train_B, has_c0):
    """The names and shapes of the parameters, in buffer order (module docstring, "Parameter layout").

    Args:
      d: input dimension.  K: number of Fourier frequencies (0: none).
      widths: ``[n_0, n_1, ..., n_L]``.  train_B: bool.  has_c0: bool.
    Returns:
      list of ``(name, shape)``.
    """
    widths = [int(w) for w in widths]
    layout = []
    if train_B:
        layout.append(("fourier.B", (int(d), int(K))))
    for l in range(len(widths) - 1):
        layout.append((f"dense{l}.W", (widths[l], widths[l + 1])))
        layout.append((f"dense{l}.b", (widths[l + 1],)))
    layout.append(("out.c", (widths[-1],)))
    if has_c0:
        layout.append(("out.c0", (1,)))
    return layout


def param_views(theta, d, K, widths, train_B, has_c0):
    """name -> a view of the flat buffer ``theta`` (a dict, in buffer order)."""
    views, start = {}, 0
    for name, shape in param_layout(d, K, widths, train_B, has_c0):
        n = math.prod(shape)
        views[name] = theta[start:start + n].reshape(shape)
        start += n
    return views


@dataclass(frozen=True)
class NetSpec:
    """A network's architecture, from which its layout and kernel arguments follow.

    Attributes:
      d: input dimension.
      hidden: widths of the hidden layers (the last one is the basis width N); may be empty.
      activation: name in :data:`ACTIVATIONS`.
      fourier_K: number of Fourier frequencies (0: no Fourier layer).
      keep_x: whether the features start with x (must be True without a Fourier layer).
      two_pi: whether the Fourier argument is 2 pi x B (else x B).
      train_B: whether the frequencies are trainable parameters.
      out_bias: whether the output has a bias c0.
    """

    d: int
    hidden: tuple = (20, 20)
    activation: str = "tanh"
    fourier_K: int = 0
    keep_x: bool = True
    two_pi: bool = True
    train_B: bool = False
    out_bias: bool = True

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.d < 1:
            raise ValueError(f"NetSpec: d must be >= 1, got {self.d}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"NetSpec: activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.fourier_K < 0 or any(h < 1 for h in self.hidden):
            raise ValueError(f"NetSpec: fourier_K must be >= 0 and hidden widths >= 1, got "
                             f"{self.fourier_K}, {self.hidden}")
        if self.fourier_K == 0 and not self.keep_x:
            raise ValueError("NetSpec: without Fourier features (fourier_K=0) keep_x must be True")
        if self.train_B and self.fourier_K == 0:
            raise ValueError("NetSpec: train_B needs fourier_K > 0")

    @property
    def n_features(self) -> int:
        return (self.d if self.keep_x else 0) + 2 * self.fourier_K

    @property
    def widths(self) -> np.ndarray:
        """int64 ``[n_0, n_1, ..., n_L]``."""
        return np.array((self.n_features,) + self.hidden, dtype=np.int64)

    @property
    def n_basis(self) -> int:
        return int(self.widths[-1])

    @property
    def act(self) -> int:
        return ACTIVATIONS[self.activation]

    @property
    def s(self) -> float:
        return 2.0 * math.pi if self.two_pi else 1.0

    @property
    def config(self) -> tuple:
        """The kernels' configuration arguments after ``(x, B, theta)``:
        ``(widths, act, s, keep_x, train_B, has_c0)``."""
        return (self.widths, self.act, self.s, self.keep_x, self.train_B, self.out_bias)

    def layout(self) -> list:
        return param_layout(self.d, self.fourier_K, self.widths, self.train_B, self.out_bias)

    @property
    def n_params(self) -> int:
        return sum(math.prod(shape) for _, shape in self.layout())

    def flat_params(self, dtype=F64):
        """A zero :class:`fastopt.FlatParams` with this layout (one buffer of ``dtype``)."""
        from fastopt.params import FlatParams  # the API imports kernels lazily; keep the reverse lazy too

        return FlatParams({name: np.zeros(shape, dtype) for name, shape in self.layout()}, dtype=dtype)

    def views(self, theta) -> dict:
        """name -> view of the flat buffer ``theta``."""
        return param_views(theta, self.d, self.fourier_K, self.widths, self.train_B, self.out_bias)


# =========================================================================== initialisations (host)
def init_network(spec, rng, *, hidden="glorot", first=None, uniform_range=(-3 * math.pi, 3 * math.pi),
                 box=(0.0, 1.0), fourier_sigma=1.0, dtype=F64):
    """A FlatParams for ``spec``, initialised, and the frequencies ``B``.

    Args:
      spec: :class:`NetSpec`.
      rng: ``numpy.random.Generator``.
      hidden: scheme of the dense layers: "glorot" (biases 0), "uniform" (weights and biases
        U(uniform_range)) or "box" (:func:`init_box`; hidden layers use the box [-1, 1]).
      first: scheme of the first dense layer (default: ``hidden``); the lecture uses "uniform".
      uniform_range: (low, high) of "uniform".
      box: (lo, hi) of the first layer's input box for "box" (the domain; [-1, 1] suits
        Fourier features).
      fourier_sigma: standard deviation of the Gaussian frequencies.
      dtype: the buffer's dtype.
    Returns:
      ``(params, B)``: the parameters (output coefficients c Glorot, c0 = 0) and the (d, K)
      frequencies: the ``"fourier.B"`` view of ``params`` when trainable, else a new array.
    """
    params = spec.flat_params(dtype)
    for name, value in dense_layers(rng, spec.widths, hidden, first, uniform_range, box).items():
        params[name] = value
    params["out.c"] = init_glorot_uniform(rng, spec.n_basis, 1)[:, 0]
    B = init_fourier_gaussian(rng, spec.d, spec.fourier_K, fourier_sigma).astype(dtype)
    if spec.train_B:
        params["fourier.B"] = B
        B = params["fourier.B"]
    return params, B
