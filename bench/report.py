"""report.md: the markdown a person reads top-down, written from the run's records alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.plots import write_plots
from bench.records import STATUSES, latest_records
from bench.tables import (
    AXIS_COLUMNS,
    AXIS_LABELS,
    AXIS_METRICS,
    CONTENDED_MARK,
    NOT_COMPARABLE,
    PEAK_MEMORY,
    PRIMARY,
    REFERENCE_MODELS,
    SIGNIFICANCE,
    UNSTABLE_MARK,
    WORLD_AXIS_METRICS,
    axis_table,
    column_header,
    format_value,
    headline_legend,
    headline_table,
    higher_is_better,
    overview_table,
    ranking_table,
    records_frame,
    reference_point,
    swept_axes,
)

REPORT_FILE = "report.md"


def _describe_point(record: dict[str, Any], axes_fixed: dict[str, Any] | None = None) -> str:
    c = record["config"]
    w, t = dict(c["workload"]), c["train"]
    w.update(axes_fixed or {})
    if w.get("data", "synthetic") == "letor":
        d = record.get("data") or {}
        data = (
            f"LETOR data {w.get('data_path')}: {d.get('train_lists', '?')} / {d.get('valid_lists', '?')} / "
            f"{d.get('test_lists', '?')} train / valid / test queries, {d.get('item_dim', '?')} feature columns; "
            f"initial ranker {w.get('initial_ranker')}, labels {w.get('labels')}"
        )
    else:
        noise = w.get("initial_noise")
        parts = [f"slate lengths {w['slate_min']}..{w['slate_length']}"] if w.get("slate_min") else []
        parts.append("initial order random" if noise is None else f"initial order by utility + noise {noise:g}")
        click_model = w.get("click_model", "best")
        parts.append(f"{click_model} clicks" + (f" (eta {w.get('eta')})" if click_model == "position-biased" else ""))
        parts.append(f"labels {w.get('labels', 'clicks')}")
        world = w.get("world", "independent")
        if world != "independent":
            parts.append(
                f"world {world} (strength {w['world_strength']:g}, {w['world_topics']} topics, "
                f"window {w['world_window']})"
            )
        data = "synthetic: " + ", ".join(parts)
    return (
        f"{data}; batch {w['batch_size']} x {w['batches']} batches x {t['epochs']} epochs; {w['candidates']} "
        f"candidates, slate {w['slate_length']}; user dim {w['user_dim']}, item dim {w['item_dim']}; test "
        f"{w['test_slates']} slates; loss {t['loss']}, lr {t['lr']}; device {c['device']}, {c['precision']}"
        + (", compiled" if c.get("compile") else "")
    )


def _conditions_line(records: list[dict[str, Any]]) -> str:
    """Whether the machine was quiet while the cells ran, from each record's conditions."""
    measured = [r["conditions"] for r in records if (r.get("conditions") or {}).get("contention") is not None]
    if not measured:
        return "Conditions: not measured (records written before conditions were kept, or no /proc/stat)."
    contended = [c for c in measured if c.get("contended")]
    worst = max(c["contention"] for c in measured)
    verdict = (
        f"**{len(contended)} of {len(measured)} cells ran contended** (marked {CONTENDED_MARK}): their speeds "
        "are not comparable"
        if contended
        else f"quiet: no cell of {len(measured)} contended"
    )
    return f"Conditions: {verdict}; the largest share of a cell's CPU time taken by other work was {worst:.0%}."


HOW_TO_READ = """\
## How to read this

- **slate_acc**: share of judged test slates whose highest-scored *displayed* item carries the slate's highest
  label (with the founding one-click data: is the clicked item; the founding blog's metric). A slate is *judged*
  when a displayed item is relevant (label > 0); label-based metrics average over judged slates.
  **total_acc**: the highest-scored item over the *whole candidate list* is such an item (undisplayed
  candidates carry no label, so it is capped well below 1). **mrr**: mean reciprocal rank of the best-ranked
  relevant item. **map@k**: AP@k = Σ precision@i at the relevant items of the top k / min(#relevant, k).
  **precision@k**: relevant items in the top k / min(k, slate length).
- **ndcg@k**: NDCG of the displayed slate in the model's order, discount 1/log2(rank+1), 0 for a slate with no
  gain to earn; on synthetic data the linear gain is the true utility minus the slate's lowest (every slate
  counts), on LETOR data the relevance grade. **label_ndcg@k** (synthetic): the same with the labels (clicks
  or grades) as gains, over judged slates. **regret**: true utility of the best displayed item minus that of
  the model's top displayed item, mean over all test slates (LETOR: in relevance grades).
- **slate_value** (synthetic): the displayed slate's worth in the model's order under the run's world, Σ over
  positions of 1/log2(position+1) × the item's contextual utility there (in the independent world, its utility).
  **slate_regret**: the best order's value minus the model's (the best order is exact up to 7 items, approximate
  above); **slate_regret_share**: the regret summed over test slates over the best order's gain on a random order
  summed over them (0: the best order, 1: no better than a random order). docs/workloads.md has the worlds.
- **Intervals** are 95%. Accuracy: with one seed, slate_acc's interval is the normal-approximation binomial
  interval over test slates; with several seeds, the mean over seeds ± the Student-t interval of that mean.
  Speeds and latencies: each cell keeps its timing samples (blocks of training steps, blocks of inference
  passes, single requests); a table shows the median of the samples of every seed pooled (seeds change the data,
  not the speed) ± the half-width of the median's distribution-free 95% interval (order statistics; none below
  6 samples); latency p95 and p99 likewise, each with its own interval (p95 needs 72 samples, p99 368).
  `{unstable}` marks a speed whose interval reaches further than ±5% of its value, or that has
  no interval (too noisy to compare at 5%); `{contended}` marks one measured while other processes took more
  than 10% of the CPU time the cell's threads could use (the record's `conditions`): compare it with nothing.
- **Δ slate_acc vs {baseline}** and **p**: a paired comparison with the baseline on the same data seeds. One seed:
  per-slate paired difference on the same test slates (interval mean ± 1.96·sd/√n) with McNemar's exact test.
  Several seeds: the per-seed differences, Student-t interval and a paired t-test. `*` (overview) and `†` (axis
  tables) mark p < {alpha}. **Bold** marks the best model in each column.
- **train**: training samples/s over steady-state steps (the first epoch's warm-up steps and per-epoch validation
  excluded), timed in about 20 blocks. **inference**: samples/s of eval-mode forward passes at the cell's batch
  size, per timed block. **latency b1**: one eval-mode forward pass at batch size 1 (an online request),
  percentiles over requests. Both are taken in bursts spread over the cell (after each epoch and at the end;
  records of schema 2 took the inference blocks in one burst at the end, and the latency requests too where
  they lack `latency_bursts`). Every model trains with the same CPU dropout (the record's
  `environment.cpu_dropout`).
- **memory over baseline** (CPU): the cell's peak resident memory during training and during inference, the
  larger of the two, minus the process's memory before any data or model existed (interpreter, torch, harness):
  the data's, model's and training's own footprint. The absolute **peak RSS** includes that baseline.
  **CUDA peak allocated**: `torch.cuda.max_memory_allocated` during training.
- **FLOPs/sample**: matmul FLOPs of one training step (forward + backward) per sample, counted by
  `torch.utils.flop_counter.FlopCounterMode`. **MFU**: achieved training FLOP/s over the device's peak for the
  cell's precision (data-sheet dense peak on GPUs; on CPUs a cached matmul probe).
- **{not_comparable}** (not comparable): total_acc ranks every candidate, displayed or not; a model whose scores of
  never-displayed candidates mean nothing (its registration says so, e.g. `prm` and `setrank-init`, whose rank
  embeddings at ranks no slate displays never train) gets no total_acc figure.
- Cells that did not finish show their status ({statuses}) instead of numbers.
"""


def render(records: list[dict[str, Any]], title: str, baseline: str, plots: list[tuple[str, str]]) -> str:
    lines = [f"# rerank-bench report: {title}", ""]
    if not records:
        return "\n".join([*lines, "No records yet.", ""])
    frame = records_frame(records)
    last = records[-1]
    env = last.get("environment") or next((r["environment"] for r in records if r.get("environment")), {})
    command = last.get("run", {}).get("command")
    if command:
        lines += [f"Command: `{command}`", ""]
    if env:
        lines += [
            f"Machine: {env.get('device_name')} ({env.get('device')}), {env.get('threads')} torch threads, "
            f"torch {env.get('torch')}, python {env.get('python')}, git {env.get('git_revision')}",
            "",
        ]
    axes = swept_axes(frame)
    seeds = sorted(frame["seed"].unique())
    statuses = frame["status"].value_counts().to_dict()
    lines += [
        f"{len(frame)} cells: {frame['model'].nunique()} models x {len(seeds)} seed(s)"
        + (f" x sweep over {', '.join(AXIS_LABELS[a] for a in axes)}" if axes else "")
        + f"; status {', '.join(f'{n} {s}' for s, n in statuses.items())}.",
        "",
        _conditions_line(records),
        "",
    ]
    reference = reference_point(frame, axes)
    at_reference = frame
    for axis in axes:
        at_reference = at_reference[at_reference[axis] == reference[axis]]
    if at_reference["point"].nunique() == 1:
        lines += [f"## Overview: {_describe_point(at_reference['_record'].iloc[0])}", ""]
        if axes:
            lines += ["(the sweep's reference point: each swept axis at its smallest value; a swept loss at kl)", ""]
        headline = headline_table(at_reference, baseline)
        right = ("left",) + ("right",) * (headline.shape[1] - 1)  # numbers line up on the right, names on the left
        lines += [headline.to_markdown(index=False, colalign=right), ""]
        options = {m: g["_record"].iloc[0]["config"]["model_kwargs"] for m, g in at_reference.groupby("model")}
        references = [f"`{name}` {role}" for name, role in REFERENCE_MODELS.items() if name in options]
        lines += [
            f"Sorted by {PRIMARY}; * marks a difference from `{baseline}` significant at p < {SIGNIFICANCE}. "
            f"Speeds: medians of the timing samples (their 95% intervals in the table below); {UNSTABLE_MARK} "
            f"unstable (interval wider than ±5%, or none), {CONTENDED_MARK} measured under contention. "
            f"{headline_legend(at_reference)}."
            + (" Reference rows (in italics, last): " + "; ".join(references) + "." if references else ""),
            "",
        ]
        lines += ["### Every headline value", "", overview_table(at_reference, baseline).to_markdown(index=False), ""]
        lines += ["### Ranking metrics", "", ranking_table(at_reference).to_markdown(index=False), ""]
        lines += ["Model options: " + "; ".join(f"{m} {o or 'defaults'}" for m, o in options.items()), ""]
    for axis in axes:
        fixed = {a: reference[a] for a in axes if a != axis}
        data = frame
        for other, value in fixed.items():
            data = data[data[other] == value]
        fixed_text = ", ".join(f"{AXIS_LABELS[a]} {v}" for a, v in fixed.items()) or "nothing else swept"
        lines += [f"## Across {AXIS_LABELS[axis]} ({fixed_text})", ""]
        for column in (*WORLD_AXIS_METRICS, *AXIS_METRICS[1:]) if axis == "world" else AXIS_METRICS:
            if column not in data or data[column].isna().all() and (data["status"] == "ok").any():
                continue
            lines += [f"### {column_header(frame, column)}", ""]
            table = axis_table(data, axis, column, baseline, higher_is_better(column))
            lines += [table.to_markdown(index=False), ""]
    if plots:
        lines += ["## Plots", ""]
        for caption, name in plots:
            lines += [f"![{caption}]({name})", ""]
    if axes or len(seeds) > 1:
        lines += ["## Every cell", ""]
        columns = [
            "model",
            "seed",
            *(a for a in AXIS_COLUMNS if a != "world" or a in axes),  # the world only where the run varied it
            "status",
            "slate_acc",
            "train_samples_per_s",
            "latency_b1_p50_ms",
            PEAK_MEMORY,
            "wall_seconds",
        ]
        table = frame[[c for c in columns if c in frame]].copy()
        for c in (*AXIS_METRICS, "wall_seconds"):
            if c in table:
                shown = (table["status"] == "ok") | (c == "wall_seconds")
                table[c] = [format_value(v) if keep else "–" for v, keep in zip(table[c], shown, strict=True)]
        lines += [table.to_markdown(index=False), ""]
    failures = frame[frame["status"] != "ok"]
    if not failures.empty:
        lines += ["## Cells that did not finish", ""]
        for _, row in failures.iterrows():
            error = str(row["error"] or "").strip().splitlines()
            lines.append(
                f"- `{row['model']}` seed {row['seed']} ({row['key']}): **{row['status']}** "
                f"{error[-1] if error else ''}"
            )
        lines.append("")
    lines.append(
        HOW_TO_READ.format(
            baseline=baseline,
            alpha=SIGNIFICANCE,
            unstable=UNSTABLE_MARK,
            contended=CONTENDED_MARK,
            not_comparable=NOT_COMPARABLE,
            statuses=", ".join(f"`{status}`" for status in STATUSES if status != "ok"),
        )
    )
    return "\n".join(lines)


def write_report(run_dir: Path, baseline: str = "mlp") -> Path:
    records = latest_records(run_dir)
    plots = []
    if records:
        frame = records_frame(records)
        plots = write_plots(frame, swept_axes(frame), run_dir)
    path = run_dir / REPORT_FILE
    path.write_text(render(records, run_dir.name, baseline, plots), encoding="utf-8")
    return path
