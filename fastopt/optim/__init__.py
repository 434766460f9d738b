"""Optimisers: fused functional steps, optimiser classes over flat buffers, and L-BFGS.

- functional, in-place steps: :func:`sgd_step`, :func:`momentum_step`,
  :func:`sgd_momentum_step`, :func:`adam_step`, :func:`nadam_step`,
  :func:`rmsprop_step`, :func:`adagrad_step`, :func:`lion_step`;
- classes with state, parameter groups and checkpoints: :class:`SGD`,
  :class:`Momentum`, :class:`Adam`, :class:`AdamW`, :class:`AMSGrad`, :class:`NAdam`,
  :class:`RMSprop`, :class:`Adagrad`, :class:`Lion`;
- :func:`lbfgs`: SciPy's L-BFGS-B on the flat buffer.
"""
from .algorithms import SGD, AMSGrad, Adagrad, Adam, AdamW, Lion, Momentum, NAdam, RMSprop
from .functional import (StepInfo, adagrad_step, adam_step, lion_step, momentum_step, nadam_mu, nadam_step,
                         rmsprop_step, sgd_momentum_step, sgd_step)
from .lbfgs import lbfgs
from .optimizer import Optimizer
from .._validate import Segments

__all__ = ["Optimizer", "Segments", "SGD", "Momentum", "Adam", "AdamW", "AMSGrad", "NAdam", "RMSprop", "Adagrad",
           "Lion", "StepInfo", "sgd_step", "momentum_step", "sgd_momentum_step", "adam_step", "nadam_step",
           "rmsprop_step", "adagrad_step", "lion_step", "nadam_mu", "lbfgs"]
