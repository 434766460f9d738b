"""fastopt.kernels: the compute kernels behind fastopt's public API.

Mirrored trees with the same function names and signatures:

- ``reference``: readable float64 NumPy, the test oracle;
- ``cpu``: Numba JIT kernels;
- ``gpu``: CUDA C sources (``*.cu``) with thin CuPy launchers.

Nothing here validates its inputs: the public API in :mod:`fastopt` does that once.
Installed as ``fastopt.kernels`` (setuptools ``package-dir`` mapping).
"""
