"""CUDA kernels launched through CuPy, one family per pair of files: ``<family>.cu`` + ``<family>.py``.

The ``.cu`` files are whole CUDA C++ sources compiled by NVRTC (``cupy.RawModule``,
see ``_module``); the ``.py`` launchers have the names and signatures of
``fastopt.kernels.reference`` (``reference_nn``, ``reference_ls``). The "gram" family is
``gram.py`` alone: cuBLAS (``syrk``, ``gemv``) and CuPy array operations, no ``.cu``.
``compile_check`` builds every source for sm_90 without a GPU
(``python -m fastopt.kernels.gpu.compile_check``).

Importing this package imports nothing heavy; the launcher modules import CuPy.
"""
