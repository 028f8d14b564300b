"""Every registered loss x models on one workload, against random scores: a markdown table.

Each loss gets its own run directory (records + report.md) under --out, so the usual
report tooling applies; the combined table goes to stdout and <out>/losses.md.

    python benchmarks/loss_table.py --models transformer,mlp --profile default --epochs 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from bench.cell import evaluate
from bench.config import CellConfig, RunConfig
from bench.losses import loss_names
from bench.records import load_records
from bench.report import write_report
from bench.runner import run_cells
from bench.sweep import build_cells
from bench.workloads import load_workload

COLUMNS = ("slate_acc", "ndcg@5", "map@5", "regret")


def random_baseline(cell: CellConfig) -> dict[str, float]:
    """Metrics of uniformly random scores on the cell's own test split."""
    test = load_workload(cell.workload, cell.seed).test
    g = torch.Generator().manual_seed(cell.seed)
    scores = torch.rand(test.inputs.mask.shape, generator=g).masked_fill(~test.inputs.mask, float("-inf"))
    metrics, _ = evaluate(scores, test, synthetic=cell.workload.data == "synthetic")
    return metrics


def _number_or_text(text: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", default="all", help="comma list, or all")
    parser.add_argument("--models", default="transformer,mlp")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default="process", help="inline | process | ray")
    parser.add_argument("--out", type=Path, default=Path("results/losses"))
    parser.add_argument(
        "--workload", nargs="*", default=[], help="workload overrides KEY=VALUE, e.g. click_model=cascade labels=graded"
    )
    args = parser.parse_args()
    losses = loss_names() if args.losses == "all" else args.losses.split(",")
    models = args.models.split(",")
    overrides = {}
    for item in args.workload:
        key, _, value = item.partition("=")
        overrides[key] = _number_or_text(value)
    results: dict[tuple[str, str], dict] = {}
    base = None
    for loss in losses:
        settings = {"profile": args.profile, "models": models, "loss": loss, "seed": args.seed, **overrides}
        if args.epochs is not None:
            settings["epochs"] = args.epochs
        cells = build_cells(settings)
        base = cells[0]
        run_dir = args.out / loss
        run_cells(
            cells,
            run_dir,
            RunConfig(executor=args.executor),
            on_done=lambda r: print(
                f"{r['model']:<12} {r['config']['train']['loss']:<11} {r['status']}", file=sys.stderr
            ),
        )
        write_report(run_dir, baseline=models[-1])
        for record in load_records(run_dir / "records.jsonl"):
            if record["key"] in {c.key() for c in cells}:
                results[(loss, record["model"])] = record
    assert base is not None
    random = random_baseline(base)
    header = ["loss"] + [f"{m} {c}" for m in models for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for loss in losses:
        row = [loss]
        for model in models:
            record = results.get((loss, model))
            ok = record is not None and record["status"] == "ok"
            row += [f"{record['metrics'][c]:.3f}" if ok else (record or {}).get("status", "–") for c in COLUMNS]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("| random scores | " + " | ".join(f"{random[c]:.3f}" for _ in models for c in COLUMNS) + " |")
    w, t = base.workload, base.train
    caption = (
        f"Profile {args.profile}: batch {w.batch_size} x {w.batches} batches x {t.epochs} epochs, "
        f"{w.candidates} candidates, slate {w.slate_length}, click model {w.click_model}, labels {w.labels}, "
        f"test {w.test_slates} slates, seed {base.seed}; model options {base.model_kwargs}."
    )
    text = caption + "\n\n" + "\n".join(lines) + "\n"
    (args.out / "losses.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
