"""Position ablation: does a model's initial-rank embedding help on position-biased clicks?

Runs each pair of model specs, WITH and WITHOUT position information, on the same workloads
and seeds (same data, same seeds), with position-biased clicks and an informative initial
ranker, then writes the usual records + report.md per pair (the report's paired Δ slate_acc
column compares each section's models with the no-position variant) and prints a per-seed
summary.

A spec is ``name`` or ``name:key=value,key=value`` (model options). Each spec is registered
under its own display name at run time, so the report tells the variants apart; cells run
in this process (the inline executor).

By default it runs two pairs: ``prm`` against ``prm:position_embedding=false`` (PRM's paper
ablation), and ``setrank-init`` (SetRank_init, with the ordinal embedding) against
``setrank``; each pair writes ``<out>/<run-id>-<model>/``:

    python benchmarks/position_ablation.py --seeds 0,1,2 --initial-noise 0.5 --eta 0.2 --out results/reference

``--pair WITH WITHOUT`` (repeatable) replaces the default pairs.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from bench.config import RunConfig
from bench.records import load_records, unpack_bits
from bench.report import write_report
from bench.runner import run_cells
from bench.stats import paired_slates
from bench.sweep import build_cells
from rerankers import get_spec, model_names, register


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def register_spec(spec: str) -> str:
    """Register ``name:key=value,...`` under that display name; returns the name to run."""
    name, _, options = spec.partition(":")
    if not options:
        get_spec(name)  # unknown names fail here, with suggestions
        return name
    kwargs = {}
    for item in options.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: bad model option {item!r} in {spec!r} (expected key=value)")
        kwargs[key.strip()] = _value(value.strip())
    base = get_spec(name)
    display = f"{name}[{';'.join(f'{k}={v}' for k, v in kwargs.items())}]"  # no comma: names are listed with commas
    if display not in model_names():
        factory = functools.partial(base.factory, **kwargs)
        functools.update_wrapper(factory, base.factory)
        register(display, description=f"{base.description} ({', '.join(kwargs)} set)")(factory)
    return display


DEFAULT_PAIRS = [("prm", "prm:position_embedding=false"), ("setrank-init", "setrank")]


def run_pair(with_spec: str, without_spec: str, args: argparse.Namespace) -> Path:
    """Run one with/without pair on every seed; print its summary table; return the report's path."""
    with_name, without_name = register_spec(with_spec), register_spec(without_spec)
    cells = []
    for seed in (int(s) for s in args.seeds.split(",")):
        settings = {
            "profile": args.profile,
            "models": [with_name, without_name],
            "seed": seed,
            "initial_noise": args.initial_noise,
            "eta": args.eta,
            "click_model": args.click_model,
            "labels": args.labels,
        }
        if args.epochs is not None:
            settings["epochs"] = args.epochs
        cells += build_cells(settings)
    run_dir = args.out / f"{args.run_id}-{with_spec.partition(':')[0]}"

    def done(record: dict) -> None:
        m = record["metrics"]
        acc = f"slate_acc {m['slate_acc']:.4f}" if record["status"] == "ok" else record["error"]
        print(f"seed {record['config']['seed']} {record['model']:<40} {record['status']} {acc}", file=sys.stderr)

    run_cells(cells, run_dir, RunConfig(executor="inline"), on_done=done)
    report = write_report(run_dir, baseline=without_name)

    keys = {c.key() for c in cells}
    records = {
        (r["config"]["seed"], r["model"]): r for r in load_records(run_dir / "records.jsonl") if r["key"] in keys
    }
    columns = ("slate_acc", "ndcg@5", "map@5", "regret", "label_ndcg@5")
    print(f"\n{args.click_model} clicks (eta {args.eta}), initial noise {args.initial_noise}, profile {args.profile}")
    print(f"with: {with_name}; without: {without_name}\n")
    print(
        "| seed | "
        + " | ".join(f"{c} with / without" for c in columns)
        + " | Δ slate_acc (paired 95% CI) | judged slates |"
    )
    print("|---" * (len(columns) + 3) + "|")
    deltas: dict[str, list[float]] = {c: [] for c in columns}
    for seed in sorted({s for s, _ in records}):
        a, b = records.get((seed, with_name)), records.get((seed, without_name))
        if not a or not b or a["status"] != "ok" or b["status"] != "ok":
            print(f"| {seed} | (failed) |")
            continue
        ma, mb = a["metrics"], b["metrics"]
        n = ma["judged_slates"]
        hits_a = unpack_bits(a["per_slate"]["slate_hits"], n)
        hits_b = unpack_bits(b["per_slate"]["slate_hits"], n)
        delta, half, _ = paired_slates(hits_a, hits_b)
        for c in columns:
            deltas[c].append(ma[c] - mb[c])
        cells_text = " | ".join(f"{ma[c]:.4f} / {mb[c]:.4f}" for c in columns)
        print(f"| {seed} | {cells_text} | {delta:+.4f} ± {half:.4f} | {n} |")
    if deltas["slate_acc"]:
        means = " | ".join(f"Δ {statistics.mean(v):+.4f}" for v in deltas.values())
        print(f"| mean | {means} | | |")
        wins = int(np.sum(np.array(deltas["slate_acc"]) > 0))
        print(f"\nwith-position wins slate_acc on {wins} of {len(deltas['slate_acc'])} seeds")
    print(f"report: {report}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pair", nargs=2, action="append", metavar=("WITH", "WITHOUT"), help="a with/without pair (repeatable)"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--profile", default="default")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--initial-noise", type=float, default=0.5, help="std of the initial ranker's noise")
    parser.add_argument("--eta", type=float, default=0.2, help="position bias: examination 1/rank^eta")
    parser.add_argument("--click-model", default="position-biased")
    parser.add_argument("--labels", default="clicks")
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--run-id", default="position-ablation")
    args = parser.parse_args(argv)
    for with_spec, without_spec in args.pair or DEFAULT_PAIRS:
        run_pair(with_spec, without_spec, args)


if __name__ == "__main__":
    main()
