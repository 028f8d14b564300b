#!/usr/bin/env bash
# The speed issue's GPU check as one script: first that a seed's data is bit-identical on CPU and GPU
# (OUT/data_identity.txt), then the seed profile (the blog's configuration) for the transformer and the
# MLP in fp32 and in bf16, then a bf16 batch-size sweep of the transformer.
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

# A seed's data drawn for a CUDA cell must be the CPU cell's data, bit for bit (bench/data.py draws on the
# CPU and moves it once). Without a GPU (a dry run) only the smoke workload's CPU digests are listed.
data_status=0
python - "$out/data_identity.txt" <<'EOF' || data_status=1
import sys

import torch

from bench.config import PROFILES
from bench.data import digest, generate

cuda = torch.cuda.is_available()
lines, same = [], True
for name in ("seed", "default", "smoke") if cuda else ("smoke",):
    for seed in (0, 1):
        on_cpu = digest(generate(PROFILES[name]["workload"], seed, "cpu"))
        if cuda:
            on_gpu = digest(generate(PROFILES[name]["workload"], seed, "cuda"))  # hashed back on the CPU
            same &= on_gpu == on_cpu
            verdict = "identical" if on_gpu == on_cpu else "DIFFERENT"
            lines.append(f"{name} seed {seed}: cpu {on_cpu[:16]} cuda {on_gpu[:16]} {verdict}")
        else:
            lines.append(f"{name} seed {seed}: cpu {on_cpu[:16]} (no CUDA device: nothing to compare)")
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if same else 1)
EOF

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
[ "$data_status" -eq 0 ] || { echo "error: a seed's data differs between CPU and CUDA ($out/data_identity.txt)" >&2; exit 1; }
