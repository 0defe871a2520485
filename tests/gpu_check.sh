#!/usr/bin/env bash
# The prepared GPU check: run on a machine with a real NVIDIA GPU (e.g. through the device tool),
# in one call of a few minutes. It runs the CUDA kernel tests on CuPy arrays without Numba's
# simulator (MINICLIP_REAL_GPU=1 enables the tests marked `gpu`), then the CPU kernel
# benchmarks, a training step on the GPU next to OpenCLIP's (CuPy vs torch CUDA; fp32 and
# --precision amp), and short training runs with --device cuda (fp32 and amp); everything goes
# to ${OUT:-/tmp}/gpu_check.log.
#
#   bash tests/gpu_check.sh            # installs miniclip[gpu,test] into the current Python first
set -uo pipefail
cd "$(dirname "$0")/.."
log="${OUT:-/tmp}/gpu_check.log"
export MINICLIP_REAL_GPU=1 PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    python3 -m pip install -q -e ".[gpu,test,distributed]" || echo "pip install failed: using what is installed"
    python3 -c "import cupy, numba; print('cupy', cupy.__version__, 'numba', numba.__version__, 'devices', cupy.cuda.runtime.getDeviceCount())"
    timeout 240 python3 -m pytest tests/kernels tests/functional tests/nn tests/test_optim.py tests/test_amp.py tests/distributed -q -m "gpu" -p no:cacheprovider
    echo "kernel tests exit code: $?"
    timeout 120 python3 -m miniclip.bench kernels
    echo "benchmark exit code: $?"
    timeout 120 python3 -m miniclip.bench step --device cuda --model tiny-vit-s --batch 64 --batch 256 --vs-openclip
    echo "step benchmark exit code: $?"
    timeout 90 python3 -m miniclip.bench step --device cuda --model tiny-vit-s --batch 256 --precision amp --vs-openclip
    echo "mixed-precision step benchmark exit code: $?"
    timeout 120 python3 -m miniclip.train --device cuda --max-steps 30 --logs "${OUT:-/tmp}/gpu_logs" --name gpu --no-progress
    echo "GPU training run exit code: $?"
    timeout 90 python3 -m miniclip.train --device cuda --precision amp --max-steps 30 --logs "${OUT:-/tmp}/gpu_logs" --name gpu_amp --no-progress
    echo "GPU float16 training run exit code: $?"
} 2>&1 | tee "$log"
