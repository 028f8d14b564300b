"""report.md: the markdown a person reads top-down, written from the run's records alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench import catalog
from bench.html_report import write_html
from bench.plots import write_plots
from bench.records import STATUSES, latest_records
from bench.scaling import exponents_section, largest_shape_section
from bench.scaling_plot import write_scaling_plots
from bench.stats import SIGNIFICANCE
from bench.tables import (
    AXIS_LABELS,
    AXIS_METRICS,
    CONTENDED_MARK,
    NOT_COMPARABLE,
    PEAK_MEMORY,
    PRIMARY,
    REFERENCE_RULE,
    UNSTABLE_MARK,
    at_point,
    axis_line,
    axis_metrics,
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
    reference_roles,
    shown_axes,
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


# What "How to read this" says of the values made of per-slate values (the catalog's ``per_slate``), where shown.
PER_SLATE_INTERVALS = (
    " With one seed, {names}: the normal interval (± 1.96·sd/√n) over the test slates of the record's per-slate "
    "values; a ratio of sums (the regret share: summed regret over summed headroom) by the delta method."
)
PER_SLATE_TESTS = (
    "; {names} (the overview's Δ slate_regret_share where the list matters, and † in axis tables): the paired "
    "t-test on the per-slate values (regrets) of the same test slates"
)


def _per_slate_text(frame: pd.DataFrame, template: str) -> str:
    """``template`` naming the values in the tables that are made of per-slate values; empty where there are none."""
    names = [m.name for m in catalog.entries() if m.per_slate is not None and m.name in frame.columns]
    return template.format(names=", ".join(names)) if names else ""


def how_to_read(frame: pd.DataFrame, baseline: str) -> list[str]:
    """The report's conventions, then what each value its tables show means, from the metric catalog."""
    whole_list = ", ".join(m.name for m in catalog.entries() if m.ranks_undisplayed)
    intervals, tests = (_per_slate_text(frame, template) for template in (PER_SLATE_INTERVALS, PER_SLATE_TESTS))
    lines = [
        "## How to read this",
        "",
        "- **Intervals** are 95%. Accuracy: with one seed, slate_acc's interval is the normal-approximation "
        "binomial interval over test slates; with several seeds, the mean over seeds ± the Student-t interval of "
        f"that mean.{intervals} Speeds and latencies: each cell keeps its timing samples (blocks "
        "of training steps, blocks of inference passes, single requests); a table shows the median of the samples "
        "of every seed pooled (seeds change the data, not the speed) ± the half-width of the median's "
        "distribution-free 95% interval (order statistics; none below 6 samples); latency p95 and p99 likewise, "
        "each with its own interval. "
        f"`{UNSTABLE_MARK}` marks a speed whose interval reaches further than ±5% of its value, or that has no "
        f"interval (too noisy to compare at 5%); `{CONTENDED_MARK}` marks one measured while other processes took "
        "more than 10% of the CPU time the cell's threads could use (the record's `conditions`): compare it with "
        "nothing.",
        f"- **Δ slate_acc vs {baseline}** and **p**: a paired comparison with the baseline on the same data seeds. "
        "One seed: per-slate paired difference on the same test slates (interval mean ± 1.96·sd/√n) with "
        f"McNemar's exact test{tests}. Several seeds: the per-seed differences, Student-t interval "
        "and a paired t-test. "
        f"`*` (overview) and `†` (axis tables) mark p < {SIGNIFICANCE}. **Bold** marks the best model in each "
        "column.",
        f"- **{NOT_COMPARABLE}** (not comparable): {whole_list} "
        "ranks every candidate, displayed or not; a model whose scores of never-displayed candidates mean nothing "
        "(its registration says so, e.g. `prm` and `setrank-init`, whose rank embeddings at ranks no slate "
        "displays never train) gets no such figure.",
        "- Every model trains with the same CPU dropout (the record's `environment.cpu_dropout`).",
        "- Cells that did not finish show their status "
        f"({', '.join(f'`{status}`' for status in STATUSES if status != 'ok')}) instead of numbers.",
        "",
        "What each value is:",
        "",
    ]
    shown = set(frame.columns)
    for metric in catalog.entries():
        family = metric.name.removesuffix("@k")
        present = metric.name in shown or (
            metric.name.endswith("@k") and any(str(c).startswith(family + "@") for c in shown)
        )
        if metric.how and present:
            lines.append(f"- **{metric.name}**, {catalog.header(metric.name)}: {metric.how}.")
    return [*lines, ""]


def _header(records: list[dict[str, Any]], frame: pd.DataFrame, axes: list[str]) -> list[str]:
    """The command, the machine, what the run holds and how quiet the machine was."""
    last = records[-1]
    env = last.get("environment") or next((r["environment"] for r in records if r.get("environment")), {})
    command = last.get("run", {}).get("command")
    lines = [f"Command: `{command}`", ""] if command else []
    if env:
        lines += [
            f"Machine: {env.get('device_name')} ({env.get('device')}), {env.get('threads')} torch threads, "
            f"torch {env.get('torch')}, python {env.get('python')}, git {env.get('git_revision')}",
            "",
        ]
    statuses = frame["status"].value_counts().to_dict()
    return [
        *lines,
        f"{len(frame)} cells: {frame['model'].nunique()} models x {frame['seed'].nunique()} seed(s)"
        + (f" x sweep over {', '.join(AXIS_LABELS[a] for a in axes)}" if axes else "")
        + f"; status {', '.join(f'{n} {s}' for s, n in statuses.items())}.",
        "",
        _conditions_line(records),
        "",
    ]


def _overview(at_reference: pd.DataFrame, axes: list[str], baseline: str) -> list[str]:
    """The headline table at the sweep's reference point, every headline value, and the ranking metrics."""
    lines = [f"## Overview: {_describe_point(at_reference['_record'].iloc[0])}", ""]
    if axes:
        lines += [f"(the sweep's reference point: {REFERENCE_RULE})", ""]
    headline = headline_table(at_reference, baseline)
    right = ("left",) + ("right",) * (headline.shape[1] - 1)  # numbers line up on the right, names on the left
    lines += [headline.to_markdown(index=False, colalign=right), ""]
    options = {m: g["_record"].iloc[0]["config"]["model_kwargs"] for m, g in at_reference.groupby("model")}
    references = [f"`{name}` {role}" for name, role in reference_roles(at_reference).items()]
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
    return [*lines, "Model options: " + "; ".join(f"{m} {o or 'defaults'}" for m, o in options.items()), ""]


def _across(frame: pd.DataFrame, axis: str, reference: dict[str, Any], baseline: str) -> list[str]:
    """One swept axis, the others held at the reference point: a table per axis metric."""
    fixed = {a: v for a, v in reference.items() if a != axis}
    data = axis_line(frame, axis, reference)
    fixed_text = ", ".join(f"{AXIS_LABELS[a]} {v}" for a, v in fixed.items()) or "nothing else swept"
    lines = [f"## Across {AXIS_LABELS[axis]} ({fixed_text})", ""]
    for column in axis_metrics(frame):
        if column not in data or data[column].isna().all() and (data["status"] == "ok").any():
            continue
        lines += [f"### {column_header(frame, column)}", ""]
        table = axis_table(data, axis, column, baseline, higher_is_better(column))
        lines += [table.to_markdown(index=False), ""]
    return lines + exponents_section(data, axis)


def _every_cell(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    columns = ["model", "seed", *shown_axes(frame, axes), "status", "slate_acc", "train_samples_per_s",
               "latency_b1_p50_ms", PEAK_MEMORY, "wall_seconds"]  # fmt: skip
    table = frame[[c for c in columns if c in frame]].copy()
    for c in (*AXIS_METRICS, "wall_seconds"):
        if c in table:
            shown = (table["status"] == "ok") | (c == "wall_seconds")
            table[c] = [format_value(v) if keep else "–" for v, keep in zip(table[c], shown, strict=True)]
    return ["## Every cell", "", table.to_markdown(index=False), ""]


def _failures(frame: pd.DataFrame) -> list[str]:
    failures = frame[frame["status"] != "ok"]
    if failures.empty:
        return []
    lines = ["## Cells that did not finish", ""]
    for _, row in failures.iterrows():
        error = str(row["error"] or "").strip().splitlines()
        lines.append(
            f"- `{row['model']}` seed {row['seed']} ({row['key']}): **{row['status']}** {error[-1] if error else ''}"
        )
    return [*lines, ""]


def render(records: list[dict[str, Any]], title: str, baseline: str, plots: list[tuple[str, str]]) -> str:
    lines = [f"# rerank-bench report: {title}", ""]
    if not records:
        return "\n".join([*lines, "No records yet.", ""])
    frame = records_frame(records)
    axes = swept_axes(frame)
    lines += _header(records, frame, axes)
    reference = reference_point(frame, axes)
    at_reference = at_point(frame, reference)
    if at_reference["point"].nunique() == 1:
        lines += _overview(at_reference, axes, baseline)
    for axis in axes:
        lines += _across(frame, axis, reference, baseline)
    lines += largest_shape_section({axis: axis_line(frame, axis, reference) for axis in axes}, records)
    if plots:
        lines += ["## Plots", ""]
        for caption, name in plots:
            lines += [f"![{caption}]({name})", ""]
    if axes or frame["seed"].nunique() > 1:
        lines += _every_cell(frame, axes)
    lines += _failures(frame)
    return "\n".join(lines + how_to_read(frame, baseline))


def write_report(run_dir: Path, baseline: str = "mlp") -> Path:
    records = latest_records(run_dir)
    plots = []
    if records:
        frame = records_frame(records)
        plots = write_plots(frame, swept_axes(frame), run_dir) + write_scaling_plots(frame, swept_axes(frame), run_dir)
    path = run_dir / REPORT_FILE
    markdown = render(records, run_dir.name, baseline, plots)
    path.write_text(markdown, encoding="utf-8")
    write_html(run_dir, markdown, f"rerank-bench report: {run_dir.name}")
    return path
