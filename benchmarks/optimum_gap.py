"""The approximate optimum's gap to the exact one, on slates short enough to try every order (bench/worlds.py).

Above EXACT_MAX_LENGTH items the best order of a slate is approximated: greedily position by position, then
improved by swaps and moves of single items until none adds value (``bench.worlds.optimum``). This measures
that approximation, and greedy alone, where the exact optimum is known: for each interaction world at its
default parameters and each slate length T <= EXACT_MAX_LENGTH it draws the test split of the synthetic
workload (candidates 2T, the default dims) and values each slate's orders. Gaps are shares of the slate's
headroom (the best order's value minus a random order's expected value, what ``slate_regret_share`` divides
by): pooled over the slates (the metric's way), the mean and the worst per slate, and the share of slates where
the approximation found a best order. Prints a markdown table.

    python benchmarks/optimum_gap.py --slates 8192 --seeds 0,1,2
"""

from __future__ import annotations

import argparse

import torch

from bench.config import WORLDS, WorkloadConfig
from bench.data import generate
from bench.worlds import EXACT_MAX_LENGTH, brute_force, greedy, local_search, order_value, random_order_value

TOLERANCE = 1e-9  # value differences below this are float error


def values(world_name: str, length: int, slates: int, seed: int) -> dict[str, torch.Tensor]:
    """Per slate: the exact, greedy and greedy + local search orders' values, and a random order's."""
    config = WorkloadConfig(
        batch_size=1, batches=1, valid_slates=1, test_slates=slates, slate_length=length, candidates=2 * length
    )
    workload = generate(WorkloadConfig(**{**config.__dict__, "world": world_name}), seed)
    world, test = workload.world, workload.test
    utility, mask = test.slate_utility, test.slate_mask
    effects = world.effects(test.slate_items, utility, mask)
    first = greedy(world, utility, effects, mask)
    orders = {
        "exact": brute_force(world, utility, effects, mask),
        "greedy": first,
        "greedy + local search": local_search(world, utility, effects, mask, first),
    }
    out = {name: order_value(world, utility, effects, order, mask) for name, order in orders.items()}
    out["random"] = random_order_value(world, utility, effects, mask)
    return out


def row(world_name: str, length: int, method: str, value: dict[str, torch.Tensor]) -> str:
    gap, headroom = value["exact"] - value[method], value["exact"] - value["random"]
    has_room = headroom > TOLERANCE
    relative = gap[has_room] / headroom[has_room]
    return (
        f"| {world_name} | {length} | {method} | {gap.sum() / headroom.sum():.4f} | {relative.mean():.4f} | "
        f"{relative.max():.4f} | {(gap <= TOLERANCE).double().mean():.1%} | {int((gap < -TOLERANCE).sum())} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slates", type=int, default=8192, help="test slates per world, length and seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--lengths", default=",".join(str(t) for t in range(4, EXACT_MAX_LENGTH + 1)))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{args.slates} test slates x {len(seeds)} seeds ({args.seeds}) per row; gaps as shares of the headroom\n")
    print("| world | T | method | pooled gap | mean gap | worst gap | found a best order | beat exact |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for world_name in tuple(WORLDS)[1:]:
        for length in (int(t) for t in args.lengths.split(",")):
            draws = [values(world_name, length, args.slates, seed) for seed in seeds]
            pooled = {name: torch.cat([draw[name] for draw in draws]) for name in draws[0]}
            for method in ("greedy", "greedy + local search"):
                print(row(world_name, length, method, pooled))


if __name__ == "__main__":
    main()
