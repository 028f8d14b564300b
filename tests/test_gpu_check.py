"""The prepared GPU check script still matches the CLI (its cells listed by a dry run on CPU)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_script_lists_its_cells(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", str(out), "--device", "cpu", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        # the script's `python` is this interpreter, activated or not
        env={**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])},
    )
    assert done.returncode == 0, done.stderr
    for cells, run_id in ((2, "seed-fp32"), (2, "seed-bf16"), (5, "batch-sweep-bf16")):
        assert f"{cells} cells: {cells} to run, 0 already recorded in {out / run_id}" in done.stdout
    assert "--precision bf16" in done.stdout and "8192" in done.stdout
    assert (out / "device.txt").read_text().count(" s wall ") == 3
    identity = (out / "data_identity.txt").read_text().splitlines()
    if torch.cuda.is_available():
        assert len(identity) == 6 and all(line.endswith(" identical") for line in identity)
    else:
        assert [line.split(":")[0] for line in identity] == ["smoke seed 0", "smoke seed 1"]
        assert all("no CUDA device" in line for line in identity)
