"""ab.md and ab_pairs.png: an A/B's verdicts, deterministic counts, per-pair ratios and each pair's conditions,
written from RUN/ab.jsonl alone."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.ab import AB_FILE, AbState, cell_label, pair_values
from bench.ab_verdict import (
    DETERMINISTIC_VALUES,
    INCONCLUSIVE,
    SPEED_VALUES,
    Judgement,
    compare_counts,
    compare_instructions,
    judge,
)
from bench.catalog import Direction, header, lookup
from bench.errors import ConfigError

REPORT_FILE = "ab.md"
PLOT_FILE = "ab_pairs.png"


@dataclass
class AbResult:
    """An A/B as its records tell it: the plan of its latest invocation, its records and the verdicts."""

    plan: dict[str, Any]
    state: AbState
    judgements: list[Judgement]

    @property
    def threshold(self) -> float:
        return self.plan["config"]["threshold"]

    def label(self, cell: int) -> str:
        return cell_label(self.plan["cells"][cell]) if cell < len(self.plan["cells"]) else f"cell {cell}"

    @property
    def regressions(self) -> int:
        return sum(j.verdict == "REGRESSION" for j in self.judgements)


def read_result(run_dir: Path) -> AbResult:
    state = AbState.read(run_dir)
    plans = state.of("plan")
    if not plans:
        raise ConfigError(f"{run_dir} holds no A/B ({AB_FILE} with a plan)")
    plan = plans[-1]
    judgements = judge(pair_values(state, len(plan["cells"])), plan["config"]["threshold"])
    return AbResult(plan, state, judgements)


def percent(value: float, signed: bool = True) -> str:
    if value is None or not math.isfinite(value):
        return "n/a" if value is None or math.isnan(value) else "∞"
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def verdict_text(j: Judgement, threshold: float) -> str:
    if j.verdict != INCONCLUSIVE:
        return f"**{j.verdict}**"
    detectable = "no change (too few pairs)" if math.isinf(j.detectable) else f"±{percent(j.detectable, False)}"
    needed = f"; a {threshold:.0%} change needs ~{j.needed} pairs" if j.needed else ""
    return f"INCONCLUSIVE (detectable: {detectable}{needed})"


def verdict_rows(result: AbResult) -> list[list[str]]:
    rows = []
    for j in result.judgements:
        a = float(np.median([p.a for p in j.pairs]))
        b = float(np.median([p.b for p in j.pairs]))
        interval = f"{percent(j.low)} .. {percent(j.high)}" if math.isfinite(j.low) else "n/a (< 6 pairs)"
        rows.append(
            [
                result.label(j.cell),
                header(j.name),
                f"{a:.4g}",
                f"{b:.4g}",
                percent(j.estimate),
                interval,
                f"{j.p:.2g}",
                f"{j.p_holm:.2g}",
                str(len(j.pairs)),
                f"{j.contended}",
                percent(j.spread, False),
                verdict_text(j, result.threshold),
            ]
        )
    return rows


VERDICT_HEADERS = [
    "cell",
    "value",
    "A",
    "B",
    "change B vs A",
    "95% interval",
    "p",
    "p Holm",
    "pairs",
    "contended",
    "pair CV",
    "verdict",
]


def markdown_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def counts_rows(result: AbResult) -> list[list[str]]:
    """Parameters and FLOPs per sample of each side's processes, compared exactly."""
    rows = []
    for cell in range(len(result.plan["cells"])):
        ok = [r for r in result.state.of("process") if r["cell"] == cell and r["status"] == "ok"]
        for name in DETERMINISTIC_VALUES:
            seen = {
                s: [r["deterministic"][name] for r in ok if r["side"] == s and name in r["deterministic"]]
                for s in ("A", "B")
            }
            if seen["A"] or seen["B"]:
                shown = {s: f"{v[0]:,.6g}" if v else "n/a" for s, v in seen.items()}
                change = percent(seen["B"][0] / seen["A"][0] - 1) if seen["A"] and seen["B"] and seen["A"][0] else ""
                verdict = compare_counts(seen["A"], seen["B"])
                rows.append([result.label(cell), name, shown["A"], shown["B"], change, verdict])
    return rows


def instruction_rows(result: AbResult) -> list[list[str]]:
    """Instructions per training step and per batch-1 request of each side's valgrind runs."""
    rows = []
    records = [r for r in result.state.of("instructions") if r["status"] == "ok"]
    for cell in sorted({r["cell"] for r in records}):
        for region in ("train", "latency"):
            per = {side: _per_call(records, cell, side, region) for side in ("A", "B")}
            if not per["A"] or not per["B"]:
                continue
            change = float(np.median(per["B"]) / np.median(per["A"]) - 1)
            spreads = [(max(v) - min(v)) / float(np.median(v)) for v in per.values() if len(v) > 1]
            spread = percent(max(spreads), False) if spreads else "n/a (1 run per side)"
            unit = "step" if region == "train" else "request"
            rows.append(
                [
                    result.label(cell),
                    f"instructions per {unit}",
                    ", ".join(f"{v:,.0f}" for v in per["A"]),
                    ", ".join(f"{v:,.0f}" for v in per["B"]),
                    percent(change),
                    spread,
                    compare_instructions(per["A"], per["B"]),
                ]
            )
    return rows


def _per_call(records: list[dict[str, Any]], cell: int, side: str, region: str) -> list[float]:
    """Instructions per training step or per request, one value per valgrind run of the side."""
    mine = [r for r in records if r["cell"] == cell and r["side"] == side and region in r["counts"]]
    return [r["counts"][region] / r["per"][region] for r in mine]


def _conditions_text(record: dict[str, Any]) -> str:
    c = record.get("conditions") or {}
    if c.get("other_cpu_fraction") is None:
        return "not measured"
    steal = c.get("steal_seconds")
    text = f"other {c['other_cpu_fraction']:.0%}, steal {steal:.1f}s" if steal is not None else "other n/a"
    text += f", load {c['load_1min_before']:.2f}" if c.get("load_1min_before") is not None else ""
    return text + (" **contended**" if c.get("contended") else "")


def pair_rows(result: AbResult) -> list[list[str]]:
    rows = []
    for cell in range(len(result.plan["cells"])):
        for pair, sides in sorted(result.state.complete_pairs(cell).items()):
            a, b = sides["A"]["values"], sides["B"]["values"]
            ratios = [f"{b[n] / a[n]:.3f}" if a.get(n) and b.get(n) else "–" for n in SPEED_VALUES]
            rows.append(
                [
                    str(pair),
                    result.label(cell),
                    sides["A"]["order"],
                    *ratios,
                    _conditions_text(sides["A"]),
                    _conditions_text(sides["B"]),
                ]
            )
    return rows


def describe_work(result: AbResult) -> str:
    plan = result.plan
    config = plan["cells"][0]["A"]["config"] if plan["cells"] else {}
    measure = config.get("measure", {})
    return (
        f"Each process builds the cell's data and model, then times {plan['config']['train_blocks']} blocks of "
        f"training steps, {measure.get('throughput_blocks', '?')} blocks of eval-mode forward passes at the "
        f"cell's batch size and {measure.get('latency_requests', '?')} batch-1 requests; steps and passes per "
        f"block are calibrated once per cell (blocks of at least {measure.get('min_block_seconds', '?')} s) and "
        "then fixed for every process. A process's value is the median of its own samples."
    )


HOW_TO_READ = """\
How to read: each pair is one process of each side, back to back, in a random order; its ratio B/A cancels
the level the machine was at. **change B vs A** is the Hodges-Lehmann estimate over the pairs' log ratios with
its distribution-free 95% interval; **p** is Wilcoxon's exact signed-rank test, **p Holm** after Holm's
correction across the {values} values judged. REGRESSION / IMPROVEMENT: p Holm < 0.05 and the change beyond
±{threshold:.0%} (in the value's direction: lower throughput or higher latency is worse); SAME: the interval
inside ±{threshold:.0%}; INCONCLUSIVE: neither, with the smallest change these pairs could detect (80% power)
and the pairs a {threshold:.0%} change would need. **pair CV**: the spread of the per-pair ratio. **contended**:
pairs where either process ran while other work took more than 10% of its CPU (kept in the verdict, shown
below)."""


def render(result: AbResult) -> str:
    plan, state = result.plan, result.state
    env = plan.get("environment") or {}
    lines = [f"# bench ab: {plan['sides']['A']['describe']} vs {plan['sides']['B']['describe']}", ""]
    lines += [f"Command: `{plan['command']}`", ""] if plan.get("command") else []
    lines += [
        f"Machine: {env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores, torch {env.get('torch', '?')}, "
        f"Python {env.get('python', '?')}; {len(state.of('plan'))} invocation(s), the first "
        f"{state.of('plan')[0]['started_at'][:16]} UTC. Threshold ±{result.threshold:.0%}; order seed "
        f"{plan['config']['order_seed']}.",
        "",
        *[f"- side {plan['sides'][s]['describe']}" for s in ("A", "B")],
        "",
        describe_work(result),
        "",
        "## Verdicts",
        "",
        *markdown_table(VERDICT_HEADERS, verdict_rows(result)),
        "",
        HOW_TO_READ.format(values=len(result.judgements), threshold=result.threshold),
        "",
    ]
    lines += _deterministic_section(result)
    lines += ["## Per-pair ratios", "", f"![per-pair ratios B/A]({PLOT_FILE})", ""]
    lines += ["## Pairs and their conditions", ""]
    pair_headers = ["pair", "cell", "order", *[f"{lookup(n).short} B/A" for n in SPEED_VALUES], "A", "B"]
    lines += markdown_table(pair_headers, pair_rows(result)) + [""]
    lines += _unfinished_section(result)
    return "\n".join(lines)


def _deterministic_section(result: AbResult) -> list[str]:
    lines = ["## Deterministic counts", ""]
    rows = counts_rows(result)
    headers = ["cell", "count", "A", "B", "change", "verdict"]
    lines += markdown_table(headers, rows) if rows else ["No process finished."]
    instructions = instruction_rows(result)
    if instructions:
        lines += [
            "",
            "Instructions under valgrind (callgrind, one thread, OpenMP passive wait; warm-up not counted). "
            "spread: the largest (max - min) / median among one side's runs, the A/A spread of this count.",
            "",
            *markdown_table(["cell", "count", "A runs", "B runs", "change", "spread", "verdict"], instructions),
        ]
    return [*lines, ""]


def _unfinished_section(result: AbResult) -> list[str]:
    unfinished = result.state.unfinished()
    if not unfinished:
        return []
    lines = [
        "## Processes outside any complete pair",
        "",
        "Kept, not judged: a pair cut by an interrupt is run again whole; a failed process stops the A/B.",
        "",
    ]
    rows = [
        [str(r["pair"]), result.label(r["cell"]), r["side"], r["status"], (r.get("error") or "")[:200]]
        for r in unfinished
    ]
    return lines + markdown_table(["pair", "cell", "side", "status", "error"], rows) + [""]


def write_plot(result: AbResult, path: Path) -> None:
    """One panel per speed value: each cell's per-pair ratios B/A (contended pairs as red crosses), its
    Hodges-Lehmann estimate with the 95% interval, and the ±threshold band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    cells = len(result.plan["cells"])
    figure, axes = plt.subplots(
        1, len(SPEED_VALUES), figsize=(4.2 * len(SPEED_VALUES), 1.6 + 0.55 * cells), sharey=True, squeeze=False
    )
    by_value = {(j.cell, j.name): j for j in result.judgements}
    rng = np.random.default_rng(0)
    for axis, name in zip(axes[0], SPEED_VALUES, strict=True):
        metric = lookup(name)
        axis.axvspan(1 - result.threshold, 1 + result.threshold, color="0.9", zorder=0)
        axis.axvline(1.0, color="0.5", linewidth=0.8)
        shown = [by_value[(cell, name)] for cell in range(cells) if (cell, name) in by_value]
        for j in shown:
            _plot_cell(axis, j, j.cell, rng)
        if not shown:  # e.g. training speed of models that train nothing
            axis.text(0.5, 0.5, "no values", transform=axis.transAxes, ha="center", color="0.4")
        better = "higher" if metric.direction is Direction.HIGHER else "lower"
        axis.set_title(f"{metric.label} ({better} is better)", fontsize=10)
        axis.set_xlabel("B / A per pair (log scale)")
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        low, high = axis.get_xlim()
        low, high = min(low, 0.85), max(high, 1.18)
        axis.set_xlim(low, high)
        ticks = (0.25, 0.5, 0.8, 1, 1.25, 2, 4) + ((0.9, 1.1) if high / low < 2.5 else ())
        axis.set_xticks([t for t in ticks if low <= t <= high])
    axes[0][0].set_yticks(range(cells), [result.label(c) for c in range(cells)])
    axes[0][0].set_ylim(cells - 0.5, -0.5)
    handles = [
        plt.Line2D([], [], color="tab:blue", marker="o", linestyle="", label="a pair"),
        plt.Line2D([], [], color="tab:red", marker="x", linestyle="", label="a contended pair"),
        plt.Line2D([], [], color="black", marker="D", label="change (Hodges-Lehmann) and 95% interval"),
        matplotlib.patches.Patch(color="0.9", label=f"±{result.threshold:.0%}"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.5 / (1.6 + 0.55 * cells), 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_cell(axis: Any, j: Judgement, cell: int, rng: np.random.Generator) -> None:
    ratios = np.array([p.b / p.a for p in j.pairs])
    contended = np.array([p.contended for p in j.pairs])
    jitter = cell + rng.uniform(-0.18, 0.18, len(ratios))
    axis.scatter(ratios[~contended], jitter[~contended], s=14, color="tab:blue", alpha=0.7, zorder=2)
    axis.scatter(ratios[contended], jitter[contended], s=28, color="tab:red", marker="x", zorder=2)
    if not math.isfinite(j.estimate):
        return
    at = (1 + j.estimate, cell + 0.32)
    error = [[j.estimate - j.low], [j.high - j.estimate]] if math.isfinite(j.low) else None
    axis.errorbar([at[0]], [at[1]], xerr=error, fmt="D", color="black", markersize=5, capsize=3, zorder=3)
    axis.annotate(j.verdict.lower(), at, xytext=(6, 2), textcoords="offset points", fontsize=7)


def write_ab_report(run_dir: Path) -> tuple[Path, AbResult]:
    result = read_result(run_dir)
    if result.judgements:
        write_plot(result, run_dir / PLOT_FILE)
    path = run_dir / REPORT_FILE
    path.write_text(render(result))
    return path, result
