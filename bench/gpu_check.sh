#!/usr/bin/env bash
# The GPU checks of fastopt, for a lent GPU machine (CuPy for CUDA 13, Numba,
# PyTorch and pytest installed; no package registry reachable).
#
#   bash bench/gpu_check.sh            # from anywhere; PYTHON=python3.12 to choose the interpreter
#
# Stages: editable install (no dependencies, no build isolation), nvidia-smi, the
# NVRTC compile check, the GPU tests (-m gpu), the GPU benchmarks (optim; fourier
# and mlp; the LS system: Gram and fused assembly). Every stage runs even when an
# earlier one failed; the exit status is non-zero if any failed.
# Each stage has a time limit, so the whole script ends within a few minutes.
set -u

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1

failed=()

stage() {
    # stage NAME TIMEOUT_S COMMAND...: run, print, remember a failure
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== ${name}: $*"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "=== ${name}: ok ($((SECONDS - start)) s)"
    else
        [ "$rc" -eq 124 ] && echo "=== ${name}: timed out after ${limit} s"
        echo "=== ${name}: FAILED with status ${rc} ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

stage install 120 "$PY" -m pip install --no-deps --no-build-isolation -e .
stage nvidia-smi 30 nvidia-smi
stage versions 60 "$PY" -c "import sys, numpy, cupy; print(sys.version); print('numpy', numpy.__version__); \
print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), \
'NVRTC', cupy.cuda.nvrtc.getVersion(), 'devices', cupy.cuda.runtime.getDeviceCount())"
stage compile-check 120 "$PY" -m fastopt.kernels.gpu.compile_check
stage gpu-tests 300 "$PY" -m pytest -m gpu tests -q -rs -p no:cacheprovider
stage gpu-bench 300 "$PY" -m pytest bench/bench_gpu_optim.py --benchmark-only -q -s -rs \
    -p no:cacheprovider --benchmark-columns=min,median,max,rounds --benchmark-sort=name
stage gpu-bench-nn 240 "$PY" -m pytest bench/bench_gpu_nn.py --benchmark-only -q -s -rs \
    -p no:cacheprovider --benchmark-columns=min,median,max,rounds --benchmark-sort=name
stage gpu-bench-ls 180 "$PY" -m pytest bench/bench_gpu_ls.py --benchmark-only -q -s -rs \
    -p no:cacheprovider --benchmark-columns=min,median,max,rounds --benchmark-sort=name

echo
if [ "${#failed[@]}" -eq 0 ]; then
    echo "=== all stages passed"
    exit 0
fi
echo "=== FAILED stages: ${failed[*]}"
exit 1
