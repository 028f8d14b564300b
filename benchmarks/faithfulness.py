"""Faithfulness check: the harness's slate_acc vs the founding blog code's, averaged over seeds.

Both sides use the same workload configuration, hyper-parameters and, per seed, the same
hidden value model (the world varies a lot between seeds, so comparing different worlds
would mostly measure that). Sizes default to the default profile's, which a CPU runs in minutes.
Prints a markdown table.

    python benchmarks/faithfulness.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import founding  # noqa: E402
from bench.cell import run_cell  # noqa: E402
from bench.config import CellConfig, TrainConfig, WorkloadConfig  # noqa: E402
from bench.data import generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    founding.add_size_arguments(parser)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for model in ("transformer", "mlp"):
        ours, theirs, theirs_heldout = [], [], []
        for seed in seeds:
            options = {"d_model": args.d_model}
            if model == "transformer":
                options["dim_feedforward"] = args.dim_feedforward
            cell = CellConfig(
                model=model,
                workload=WorkloadConfig(
                    batch_size=args.batch_size, batches=args.batches, valid_slates=2048, test_slates=8192
                ),
                train=TrainConfig(epochs=args.epochs),
                model_kwargs=options,
                seed=seed,
            )
            record = run_cell(cell)
            ours.append(record["metrics"]["slate_acc"])
            hidden = generate(cell.workload, seed).value_model
            blog = founding.run(
                model,
                seed,
                args.batch_size,
                args.batches,
                args.epochs,
                args.d_model,
                args.dim_feedforward,
                value_weights=(hidden.weight, hidden.bias),
            )
            theirs.append(blog["blog_test_batch_slate_acc"])
            theirs_heldout.append(blog["heldout_slate_acc"])
            print(
                f"{model} seed {seed}: harness {ours[-1]:.4f}  founding code {theirs[-1]:.4f} "
                f"(held-out {theirs_heldout[-1]:.4f})",
                file=sys.stderr,
            )
        mean_ours, mean_theirs = statistics.mean(ours), statistics.mean(theirs)
        rows.append((model, mean_ours, mean_theirs, statistics.mean(theirs_heldout), mean_ours - mean_theirs))
    print(
        f"\nbatch {args.batch_size} x {args.batches} batches x {args.epochs} epochs, d_model "
        f"{args.d_model}, feed-forward {args.dim_feedforward}, seeds {args.seeds}\n"
    )
    print(
        "| model | harness slate_acc | founding code slate_acc (its test batch) | founding code, held-out "
        "batches | difference |"
    )
    print("|---|---|---|---|---|")
    for model, a, b, c, d in rows:
        print(f"| {model} | {a:.4f} | {b:.4f} | {c:.4f} | {d:+.4f} |")


if __name__ == "__main__":
    main()
