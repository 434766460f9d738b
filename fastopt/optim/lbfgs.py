"""L-BFGS on a flat parameter buffer, through SciPy's L-BFGS-B (no hand-written quasi-Newton).

The usual end game of PINN training: Adam first, then L-BFGS from where Adam
stopped. SciPy works on a float64 copy of the parameters; the wrapper writes
each trial point into the caller's buffers before calling ``fun_and_grad``, and
the best point into them at the end.

BLAS threads. L-BFGS-B's own work per iteration is a few dot products and small matrix-vector
products over ``n`` parameters and ``history`` pairs: at the sizes of these networks a second
OpenBLAS thread only adds its wake-up, and on a busy 2-core machine much more (measured here,
n = 561, history 30: SciPy's ``setulb`` 3.4 ms per call with OpenBLAS's 2 threads against 47 us
with one, 17x slower training; a quiet run of 300 iterations on a quadratic: 0.47 s against
0.11 s). Up to ``SERIAL_BLAS_MAX_PARAMS`` parameters the SciPy loop therefore runs with one BLAS
thread (``threadpoolctl``), and ``fun_and_grad`` with the thread count its caller had.
"""
from __future__ import annotations

import numpy as np

from .. import _validate as V
from ..kernels.cpu import _blas_threads
from ..params import FlatParams

__all__ = ["lbfgs", "SERIAL_BLAS_MAX_PARAMS"]

#: Up to this many parameters, SciPy's L-BFGS-B loop runs with one BLAS thread (module docstring).
SERIAL_BLAS_MAX_PARAMS = 1 << 17


def lbfgs(fun_and_grad, params, *, max_iter=500, max_eval=None, history=10, gtol=1e-10, ftol=1e-15,
          callback=None):
    """Minimise ``fun_and_grad`` over the parameters with L-BFGS(-B), in place.

    Args:
      fun_and_grad: called with ``params`` (holding the trial point) and returning
        ``(loss, grad)``: a float and the gradient, laid out as the parameters (a
        flat array, or a FlatParams like ``params``).
      params: a :class:`fastopt.FlatParams` (every dtype buffer) or a 1-D float array
        (NumPy; for CuPy buffers copy to the host first).
      max_iter, max_eval: iteration and function-evaluation limits.
      history: number of correction pairs kept (SciPy's ``maxcor``).
      gtol, ftol: SciPy's stopping tolerances on the projected gradient and the
        relative reduction of the loss.
      callback: called with the iteration number and the loss after each iteration.
    Returns:
      ``scipy.optimize.OptimizeResult``; ``params`` holds ``result.x`` (cast to its dtypes).

    Example:
      >>> import numpy as np
      >>> from fastopt.optim import lbfgs
      >>> x = np.array([3.0, -2.0])
      >>> res = lbfgs(lambda p: (float(p @ p), 2 * p), x)
      >>> bool(np.allclose(x, 0.0, atol=1e-6))
      True
    """
    f = "lbfgs"
    if not callable(fun_and_grad):
        raise TypeError(f"{f}: fun_and_grad must be callable")
    buffers = list(params.buffers.values()) if isinstance(params, FlatParams) else [params]
    for i, b in enumerate(buffers):
        if type(b) is not np.ndarray:
            raise TypeError(f"{f}: params must live on the CPU (NumPy), got {type(b).__name__}")
        V.float_array(f, "params", b, writable=True)
    max_iter = int(V.hyper(f, "max_iter", max_iter, low=1))
    max_eval = max_iter * 5 // 4 if max_eval is None else int(V.hyper(f, "max_eval", max_eval, low=1))
    history = int(V.hyper(f, "history", history, low=1))
    sizes = np.cumsum([0] + [b.size for b in buffers])
    x0 = np.concatenate([b.ravel().astype(np.float64) for b in buffers])

    def scatter(x):
        for b, lo, hi in zip(buffers, sizes[:-1], sizes[1:]):
            b.reshape(-1)[...] = x[lo:hi]

    import scipy.optimize  # imported here: it costs 0.3 s, more than `import fastopt` itself

    serial = x0.size <= SERIAL_BLAS_MAX_PARAMS
    caller_threads = _blas_threads.threads() if serial else None

    def objective(x):
        scatter(x)
        with _blas_threads.limit(caller_threads):         # the caller's BLAS threads inside fun_and_grad
            loss, grad = fun_and_grad(params)
        parts = list(grad.buffers.values()) if isinstance(grad, FlatParams) else [grad]
        g = np.concatenate([np.asarray(q, dtype=np.float64).ravel() for q in parts])
        if g.shape != x.shape:
            raise ValueError(f"{f}: fun_and_grad returned a gradient of {g.size} values for {x.size} parameters")
        return float(loss), g

    iteration = [0]

    def on_iteration(intermediate_result):
        iteration[0] += 1
        if callback is not None:
            callback(iteration[0], float(intermediate_result.fun))

    with _blas_threads.limit(1 if serial else None):
        result = scipy.optimize.minimize(objective, x0, jac=True, method="L-BFGS-B", callback=on_iteration,
                                         options=dict(maxiter=max_iter, maxfun=max_eval, maxcor=history,
                                                      gtol=gtol, ftol=ftol))
    scatter(result.x)
    return result
