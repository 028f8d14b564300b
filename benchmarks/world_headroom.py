"""What each world asks of a re-ranker: the value that simple orders of the displayed slate leave on the table.

For each world at its default parameters, on the test split of the default profile's workload, prints the
mean headroom per slate (the best order's value minus a random order's expected value, in units of the world's
scale, the spread of the context-free utility) and the share of it that two orders lose (``slate_regret_share``):
the context-free one (items sorted by their own utility: what a model that ignores the other items can at best
do) and the displayed (initial) order. Prints a markdown table.

    python benchmarks/world_headroom.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from bench.cell import evaluate
from bench.config import PROFILES, WORLDS
from bench.data import generate, make_world
from bench.worlds import value_metrics


def losses(world_name: str, seed: int) -> tuple[float, float, float]:
    """(mean headroom / scale, the context-free order's share lost, the displayed order's share lost)."""
    config = replace(PROFILES["default"]["workload"], batches=1, valid_slates=1, world=world_name)
    workload = generate(config, seed)
    test, world = workload.test, workload.world
    context_free, _ = evaluate(test.utility, test, True, world)
    displayed, _ = evaluate(-test.inputs.positions.double(), test, True, world)
    per_slate = value_metrics(world, test.slate_utility, test.slate_items, test.slate_utility, test.slate_mask)
    # the scale is the calibration draw's spread of context-free utility: the same in every world of a seed
    scale = make_world(replace(config, world=tuple(WORLDS)[1]), workload.value_model, seed).scale
    headroom = per_slate["slate_headroom"].mean().item() / scale
    return headroom, context_free["slate_regret_share"], displayed["slate_regret_share"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    test_slates = PROFILES["default"]["workload"].test_slates
    print(f"default profile's test split ({test_slates} slates), seeds {args.seeds}: mean (min..max over seeds)\n")
    print("| world | headroom per slate (scales) | context-free order loses | displayed order loses |")
    print("|---|---:|---:|---:|")
    for world_name in WORLDS:
        rows = torch.tensor([losses(world_name, seed) for seed in seeds])
        cells = [f"{column.mean():.3f} ({column.min():.3f}..{column.max():.3f})" for column in rows.T]
        print(f"| {world_name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
