#!/usr/bin/env bash
# A representative subset of the GPU tests, run on the CPU under the CUDA emulator (README.md here).
#
#   bash tests/gpu_emulator/run_subset.sh [extra pytest args]     # from anywhere; PYTHON=... to choose
#
# Every kernel of optim.cu, fourier.cu and mlp.cu runs at least once in float32 and in float64
# (--emu-require-all-kernels fails the run otherwise), plus the whole LS path on CuPy arrays
# (tests/test_gpu_ls.py and the GPU solve of tests/test_ls_solve.py). Well under 90 s on the
# 2-core development machine (measured: see README.md). Exit status: pytest's (non-zero only
# when a test fails); 0 with a "SKIPPED" line when there is no C++ compiler or no CuPy.
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 2
PY=${PYTHON:-python}

if ! command -v "${CXX:-g++}" >/dev/null 2>&1; then
    echo "SKIPPED: no C++ compiler (${CXX:-g++}): the GPU emulator needs one to build the .cu sources"
    exit 0
fi
if ! "$PY" -c "import cupy" >/dev/null 2>&1; then
    echo "SKIPPED: CuPy is not importable by $PY: the GPU emulator stands in for the device, not for CuPy"
    exit 0
fi

NN=tests/test_gpu_nn.py
nn_tests=(
    "$NN::test_fourier_matches_reference[2-lap-keep_x-K37-2pi-float32]"
    "$NN::test_fourier_matches_reference[2-lap-keep_x-K37-2pi-float64]"
    "$NN::test_fourier_matches_reference[1-value-fourier-K5-s1-float32]"
    "$NN::test_fourier_matches_reference[3-grad-fourier-K37-s1-float64]"
    "$NN::test_fourier_more_dims_than_one_launch[lap-float32]"
    "$NN::test_fourier_more_dims_than_one_launch[lap-float64]"
    "$NN::test_fourier_one_gradient_only[40-gB-float64]"
    "$NN::test_fourier_one_gradient_only[9-gx-float32]"
    "$NN::test_fourier_no_frequencies[lap-float64]"
    "$NN::test_fourier_no_points[float32]"
    "$NN::test_mlp_matches_reference[d1-o2-tanh-tiny-train-float32]"
    "$NN::test_mlp_matches_reference[d1-o2-tanh-tiny-train-float64]"
    "$NN::test_mlp_matches_reference[d2-o1-sin-tiny-none-float32]"
    "$NN::test_mlp_matches_reference[d3-o2-sin-tiny-fixed-float64]"
    "$NN::test_mlp_matches_reference[d1-o2-tanh-wide-train-float32]"
    "$NN::test_mlp_matches_reference[d2-o2-tanh-wide-fixed-float64]"
    "$NN::test_mlp_fourier_options[keepx-2pi-trainB-float32]"
    "$NN::test_mlp_fourier_options[nox-s1-trainB-float64]"
    "$NN::test_mlp_ansatz_and_bias_both_ways[c0-phi-and-g-float32]"
    "$NN::test_mlp_ansatz_and_bias_both_ways[noc0-phi-only-float64]"
    "$NN::test_mlp_shallow"
    "$NN::test_mlp_lecture_1_20_20_1_tanh"
    "$NN::test_mlp_zero_points"
    "$NN::test_tape_size_grows_with_points_and_order"
    "$NN::test_activation_derivatives"
    "$NN::test_ansatz_kernels[basis-3-2-float32]"
    "$NN::test_ansatz_kernels[output-1-0-float64]"
    "$NN::test_launch_constants_match_sources"
)
OPT=tests/test_gpu_optim.py
optim_tests=(
    "$OPT::test_matches_reference"
    "$OPT::test_segment_layouts"
    "$OPT::test_large_buffer_many_segments[adam-amsgrad=False-float32]"
    "$OPT::test_zero_size_is_a_no_op"
    "$OPT::test_grad_sumsq_matches_reference"
    "$OPT::test_grad_sumsq_empty"
    "$OPT::test_grad_sumsq_non_finite"
    "$OPT::test_adam_plain_matches_reference_and_refuses_overlap"
)

start=$SECONDS
"$PY" -m pytest -p tests.gpu_emulator.plugin -p no:cacheprovider -q --emu-require-all-kernels \
    -W ignore::DeprecationWarning \
    "${optim_tests[@]}" "${nn_tests[@]}" tests/test_gpu_ls.py "tests/test_ls_solve.py::test_gpu_solve_matches_cpu" \
    "$@"
rc=$?
echo "gpu emulator subset: exit status $rc in $((SECONDS - start)) s"
exit $rc
