"""fastopt: compiled kernels and optimisation strategies for small scientific-ML networks.

Fused optimiser updates over one flat parameter buffer, small networks that carry
their input derivatives (fastopt.nn, fastopt.fourier), on Numba (CPU) and CuPy (GPU)
kernels behind one thin dispatcher. Importing fastopt never imports CuPy.

Example:
  >>> import numpy as np, fastopt
  >>> p = np.ones(3); g = np.ones(3); m = np.zeros(3); v = np.zeros(3)
  >>> fastopt.adam_step(p, g, m, v, step=1, lr=0.1).applied
  True
"""
from . import fourier, init, nn, optim, schedules
from .backend import available_backends, gpu_status, to_backend, use_backend
from .optim import (StepInfo, adagrad_step, adam_step, lion_step, momentum_step, nadam_step, rmsprop_step,
                    sgd_momentum_step, sgd_step)
from .params import FlatParams

__version__ = "0.1.0"

__all__ = ["optim", "schedules", "nn", "fourier", "init", "FlatParams", "StepInfo", "use_backend", "available_backends", "gpu_status",
           "to_backend", "sgd_step", "momentum_step", "sgd_momentum_step", "adam_step", "nadam_step",
           "rmsprop_step", "adagrad_step", "lion_step", "__version__"]
