#!/usr/bin/env bash
# The GPU checks in one go, on a machine with an NVIDIA GPU and ntklab installed, run from
# the repository root: the CUDA tests, the NTK benchmark on the GPU and a width sweep up to
# m = 65536 with TensorBoard output and its sweep report.
#   bash benchmarks/gpu_suite.sh OUTPUT_DIR
# Each step's output is kept in OUTPUT_DIR (the sweep as a tarball), even if a later one fails.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_suite.sh OUTPUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$out/gpu.txt"

python3 -m pytest -q -p no:cacheprovider -m cuda tests 2>&1 | tee "$out/cuda_tests.txt"

sweep=$(mktemp -d)/width_sweep
start=$SECONDS
# from outside the source tree, so the installed package (with its configs) is the one run
(cd "$(dirname "$sweep")" && python3 -m ntklab -m model.width=1024,4096,16384,65536 \
    data.n=2048 data.d=128 epochs=100 ntk.every=5 device=cuda hydra.sweep.dir="$sweep") \
    2>&1 | tail -25 | tee "$out/sweep.txt"
echo "sweep wall time $((SECONDS - start)) s" | tee -a "$out/sweep.txt"
# checkpoints hold K_0 (n × n): left out to keep the tarball small
tar czf "$out/width_sweep.tgz" --exclude=checkpoints -C "$(dirname "$sweep")" width_sweep

python3 benchmarks/ntk_speed.py --device cuda --cases vs_jacobian,vs_matmul,wide_epoch,overhead \
    2>&1 | tee "$out/ntk_speed_cuda.txt"
timeout 180 python3 benchmarks/ntk_speed.py --device cuda \
    --cases validate,large_n --tol 1e-3 --max-iter 2000 2>&1 | tee "$out/ntk_speed_cuda_large.txt"
