"""The same sweep with the local executor and on a local Ray cluster: same cells, same accuracies, wall time.

    python benchmarks/ray_vs_local.py --out results/reference > results/reference/ray.md

Both runs use one torch thread per cell, so the results are identical and a 2-CPU Ray cluster runs two
cells at once where the local executor runs them one after another.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.records import cpu_name, load_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/reference"))
    parser.add_argument("--cells", type=int, default=8, help="seeds of the transformer, one cell each")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    common = ["--models", "transformer", "--seeds", str(args.cells), "--epochs", str(args.epochs), "--threads", "1",
              "--out", str(args.out)]  # fmt: skip
    runs = {"local": ["--run-id", "ray-vs-local-local"], "ray": ["--run-id", "ray-vs-local-ray", "--executor", "ray"]}
    walls, records = {}, {}
    for name, extra in runs.items():
        run_dir = args.out / extra[1]
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [sys.executable, "-m", "bench.cli", "run", *common, *extra]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls[name] = time.perf_counter() - start
        records[name] = {r["key"]: r for r in load_records(run_dir / "records.jsonl")}
        print(f"{name}: {' '.join(command[2:])}: {walls[name]:.1f} s", file=sys.stderr)
    local, ray = records["local"], records["ray"]
    same_keys = set(local) == set(ray)
    same_acc = same_keys and all(local[k]["metrics"]["slate_acc"] == ray[k]["metrics"]["slate_acc"] for k in local)
    cell_seconds = [r["measurements"]["wall_seconds"] for r in local.values()]
    print("# Ray executor vs local executor\n")
    print(f"Machine: {cpu_name()}, 2 cores; command: `python benchmarks/ray_vs_local.py --out {args.out}`.\n")
    print(
        f"Sweep: `bench run {' '.join(common)}` ({len(local)} cells of {min(cell_seconds):.1f}-"
        f"{max(cell_seconds):.1f} s each, locally), once with the local executor (one cell process after another)"
        " and once with `--executor ray` on a local Ray cluster started by the driver (2 CPUs, one CPU per cell).\n"
    )
    print("| executor | wall (s) | cells | same cell keys | same slate_acc per cell |")
    print("|---|---|---|---|---|")
    print(f"| local | {walls['local']:.1f} | {len(local)} | | |")
    print(f"| ray | {walls['ray']:.1f} | {len(ray)} | {'yes' if same_keys else 'NO'} | {'yes' if same_acc else 'NO'} |")
    print(f"\nray / local wall-clock: {walls['ray'] / walls['local']:.2f} (target: at most 1.5).")


if __name__ == "__main__":
    main()
