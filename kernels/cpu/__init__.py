"""Numba CPU kernels, one module per family (``optim``, ...). See ``_jit`` for the one decorator."""
