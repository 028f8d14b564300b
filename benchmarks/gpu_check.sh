#!/usr/bin/env bash
# The speed issue's GPU check as one script: the seed profile (the blog's configuration) for the
# transformer and the MLP in fp32 and in bf16, then a bf16 batch-size sweep of the transformer.
# Each cell's record holds its wall time, training throughput and MFU; the reports go under OUT.
#
#   bash benchmarks/gpu_check.sh [OUT] [extra `bench run` flags, which override the script's]
#   bash benchmarks/gpu_check.sh /tmp/gpu-dry --device cpu --profile smoke --batches 2   # a CPU dry run
set -euo pipefail
out=${1:-results/reference/gpu}
shift || true
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"
{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"
} | tee "$out/device.txt"

run() {  # run-id, then bench run flags
    local id=$1
    shift
    local start=$SECONDS
    python -m bench run --out "$out" --run-id "$id" "$@"
    echo "$id: $((SECONDS - start)) s wall (python -m bench run $*)" | tee -a "$out/device.txt"
}

run seed-fp32 --profile seed --models transformer,mlp --precision fp32 "$@"
run seed-bf16 --profile seed --models transformer,mlp --precision bf16 "$@"
run batch-sweep-bf16 --profile seed --models transformer --precision bf16 --epochs 2 \
    --batch-sizes 512,1024,2048,4096,8192 "$@"
