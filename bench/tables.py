"""The report's tables and statistics, from records alone: one frame row per record, summaries, comparisons."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from bench.catalog import Direction, header, is_quality, lookup, short_header, shown_value
from bench.config import NEUTRAL_FIELDS
from bench.options import cell_axes, config_path
from bench.records import paired_slate_values, slate_hits, slate_interval
from bench.stats import (
    SIGNIFICANCE,
    binomial_interval,
    is_unstable,
    mean_interval,
    paired_seeds,
    paired_slates,
    pool_timings,
    quantile_half_width,
)

# derived: CUDA peak allocated in training on a GPU, else the CPU peak over the process's baseline
PEAK_MEMORY = "peak_memory_mib"
UNSTABLE_MARK = "~"  # a speed whose 95% interval reaches further than +-5% of its median
CONTENDED_MARK = "!"  # a speed measured while other work took part of the cell's cores
NOT_COMPARABLE = "n/c"  # a metric the model's scores cannot support (see ``not_comparable``)
# The report's axes: every sweep axis that is a cell field (the models are the rows), in the sweep's order,
# each named by its option's declaration.
AXES = cell_axes()
AXIS_COLUMNS = [axis.name for axis in AXES]
AXIS_LABELS = {axis.name: axis.title for axis in AXES}
# Columns of the per-axis tables; headers and directions come from the metric catalog.
AXIS_METRICS = ("slate_acc", "train_samples_per_s", "latency_b1_p50_ms", PEAK_MEMORY)
# What a model's order is worth in a world where the list matters (bench/worlds.py): shown after slate_acc, in the
# overview and in every "Across" section, by a run that holds such a world (``list_matters``).
VALUE_METRICS = ("slate_value", "slate_regret_share")
WORLD = ("workload", "world")  # the config path of the cell's world; its neutral value is the independent world
# The headline's measurement columns, after the accuracy ones.
HEADLINE_MEASUREMENTS = ("train_samples_per_s", "infer_samples_per_s", "latency_b1_p50_ms", PEAK_MEMORY)
PRIMARY = "slate_acc"  # the headline's accuracy, with its interval and its paired delta vs the baseline
# Models that train nothing and bound the others; the report names them when they ran.
REFERENCE_MODELS = {
    "oracle": "is the accuracy ceiling (it scores with the true utilities)",
    "random": "is the floor (a random order)",
    "initial": "keeps the displayed (initial) order",
}


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per record: its axes, status, metrics and measurements as columns."""
    rows = []
    for r in records:
        config, x = r["config"], r.get("measurements", {})
        row: dict[str, Any] = {
            "key": r["key"],
            "model": r["model"],
            "seed": config["seed"],
            "status": r["status"],
            "error": r.get("error"),
            "device": config["device"],
            # cells that differ only in model and seed share a point
            "point": repr({k: v for k, v in config.items() if k not in ("model", "seed", "model_kwargs")}),
            # the model's own settings: its options and, in a tune run, whether they are its defaults or tuned
            "variant": repr((config["model_kwargs"], (r.get("tuning") or {}).get("role"))),
            **{axis.name: _config_value(config, config_path(axis)) for axis in AXES},
            **r.get("metrics", {}),
            **x,
        }
        row[PEAK_MEMORY] = x.get("cuda_peak_allocated_train_mib", x.get("cpu_net_peak_rss_mib"))
        row["_record"] = r
        rows.append(row)
    return pd.DataFrame(rows)


def _config_value(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a record's config; where the record has none (one written before the field), the
    field's neutral value (``NEUTRAL_FIELDS``: what such a record did), else None."""
    value: Any = config
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return NEUTRAL_FIELDS.get(path) if value is None else value


def reference_roles(frame: pd.DataFrame) -> dict[str, str]:
    """What each reference model of the run is; where the list matters, the oracle orders each slate best."""
    roles = {name: role for name, role in REFERENCE_MODELS.items() if name in set(frame["model"])}
    if "oracle" in roles and list_matters(frame):
        roles["oracle"] = "is the ceiling (it puts each displayed slate in its best order in the cell's world)"
    return roles


def list_matters(frame: pd.DataFrame) -> bool:
    """Whether a cell of the run ran in a world where displayed items change each other's value."""
    return bool((frame[WORLD[1]] != NEUTRAL_FIELDS[WORLD]).any())


def axis_metrics(frame: pd.DataFrame) -> tuple[str, ...]:
    """The columns of each "Across" table: AXIS_METRICS, with the VALUE_METRICS after slate_acc where the list
    matters."""
    if not list_matters(frame):
        return AXIS_METRICS
    return (AXIS_METRICS[0], *VALUE_METRICS, *AXIS_METRICS[1:])


def shown_axes(frame: pd.DataFrame, axes: list[str]) -> list[str]:
    """The axis columns of the "Every cell" table: the swept ``axes``, and every other axis except one that holds its
    neutral value throughout (a field added later, unused by the run, says nothing)."""

    def unused(axis: Any) -> bool:
        path = config_path(axis)
        return path in NEUTRAL_FIELDS and bool((frame[axis.name] == NEUTRAL_FIELDS[path]).all())

    return [a.name for a in AXES if a.name in axes or not unused(a)]


def metric_names(frame: pd.DataFrame) -> list[str]:
    """Quality metrics present in the records, in a stable reading order."""
    first = ["slate_acc", "total_acc", "mrr", "regret"]
    names = set()
    for record in frame["_record"]:
        names.update(k for k, v in record.get("metrics", {}).items() if isinstance(v, float) and is_quality(k))

    def order(name: str) -> tuple[str, int]:
        family, _, k = name.partition("@")
        return family, int(k) if k.isdigit() else 0

    return [m for m in first if m in names] + sorted(names - set(first), key=order)


def format_value(value: Any, decimals: int | None = None) -> str:
    """Fixed decimals when given (accuracies), else 3 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if decimals is not None:
        return f"{value:.{decimals}f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _with_interval(mean: float, half: float, decimals: int | None = None) -> str:
    if math.isnan(half):
        return format_value(mean, decimals)
    return f"{format_value(mean, decimals)} ± {format_value(half, decimals)}"


def compact_value(value: float) -> str:
    """3 significant digits, thousands as k, M, G (the headline's narrow columns): 29275 -> 29.3k, 8001 -> 8.00k."""
    if math.isnan(value):
        return "–"
    if abs(value) < 1000 and float(value).is_integer():
        return str(int(value))
    scale, suffix = next(((s, x) for s, x in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if abs(value) >= s), (1, ""))
    return f"{value / scale:#.3g}".rstrip(".") + suffix


def swept_axes(frame: pd.DataFrame) -> list[str]:
    """Axes with several values for one variant of a model (its options and tuning role fixed): a value that
    differs only between variants (the learning rate `bench tune` chose per model) is the variant's own, not an
    axis. Candidates are left out when they only follow the slate length."""
    by_variant = frame.groupby(["model", "variant"], dropna=False)
    axes = [a for a in AXIS_COLUMNS if (by_variant[a].nunique() > 1).any()]
    if "candidates" in axes and "slate_length" in axes:
        if (frame.groupby("slate_length")["candidates"].nunique() == 1).all():
            axes.remove("candidates")
    return axes


def _status_text(group: pd.DataFrame) -> str:
    counts = group["status"].value_counts()
    return ", ".join(f"{s}" if n == len(group) else f"{n}/{len(group)} {s}" for s, n in counts.items())


def summarize(group: pd.DataFrame, column: str) -> tuple[float, float, str | None]:
    """The value of a column over the group's ok cells (its seeds), its 95% half-width, and a status note
    for failures.

    Speeds and latencies whose records keep timing samples: the samples of every seed pooled (seeds change
    the data, not the speed), their median (latency p95/p99: that percentile) and the half-width of its
    order-statistic interval (none where the samples are too few for that quantile); records without
    samples (schema 1): the median of their single figures, no interval. Anything else: the mean over
    seeds with its Student-t interval; one seed's slate_acc gets the binomial interval over its test slates, and
    one seed's value made of per-slate values (slate_value...) the normal interval over its test slates.
    """
    ok = group[group["status"] == "ok"]
    note = _status_text(group[group["status"] != "ok"]) if len(ok) < len(group) else None
    if ok.empty or column not in ok or ok[column].isna().all():
        return math.nan, math.nan, note or _status_text(group)
    pooled = pooled_timing(ok, column)
    if pooled is not None:
        return (*quantile_half_width(pooled["samples"], lookup(column).quantile), note)
    values = ok[column].dropna().tolist()
    entry = lookup(column)
    if entry is not None and entry.timing is not None:  # schema-1 records: single figures, no samples
        return float(np.median(values)), math.nan, note
    if len(values) == 1 and column == "slate_acc":
        judged = ok["judged_slates"].iloc[0] if "judged_slates" in ok else math.nan
        slates = int(ok["test_slates"].iloc[0] if pd.isna(judged) else judged)
        return values[0], binomial_interval(values[0], slates), note
    if len(values) == 1 and entry is not None and entry.per_slate is not None:
        half = slate_interval(ok["_record"].iloc[0], entry)
        return values[0], math.nan if half is None else half, note
    mean, half = mean_interval(values)
    return mean, half, note


def pooled_timing(ok: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """The timing samples behind a speed column, pooled over the ok cells; None for other columns and for
    records written before samples were kept."""
    entry = lookup(column)
    if entry is None or entry.timing is None:
        return None
    summaries = [(r.get("timings") or {}).get(entry.timing) or {} for r in ok["_record"]]
    if not all(summary.get("samples") for summary in summaries):
        return None
    return pool_timings(summaries)


def speed_marks(group: pd.DataFrame, column: str) -> str:
    """Warning marks of a speed value: unstable (interval wider than +-5%, or none), contended (another load ran)."""
    ok = group[group["status"] == "ok"]
    pooled = pooled_timing(ok, column) if not ok.empty else None
    if pooled is None:
        return ""
    marks = UNSTABLE_MARK if is_unstable(pooled, q=lookup(column).quantile) else ""
    if any((r.get("conditions") or {}).get("contended") for r in ok["_record"]):
        marks += CONTENDED_MARK
    return marks


def speed_text(group: pd.DataFrame, column: str, compact: bool = False) -> str:
    """A speed, latency or memory cell of a table: value ± interval where there is one, then its marks.

    ``compact`` (the headline, which must fit a GitHub page): 29.3k~ instead of 29,275 ± 2,405~; the
    unstable mark still says whether the interval is wider than ±5%, and the overview table has it in full.
    """
    value, half, note = summarize(group, column)
    if math.isnan(value):  # a failure's status, or "–" for a value the model does not have (a baseline trains nothing)
        return note if (group["status"] != "ok").all() else "–"
    text = compact_value(value) if compact else _with_interval(value, half)
    return text + speed_marks(group, column)


def not_comparable(group: pd.DataFrame, metric: str) -> bool:
    """A whole-candidate-list metric (total_acc) for a model whose scores of never-displayed candidates
    mean nothing (e.g. PRM's rank embeddings at ranks no slate displays): its value is an artefact."""
    entry = lookup(metric)
    if entry is None or not entry.ranks_undisplayed:
        return False
    properties = [r.get("model_properties") or {} for r in group["_record"]]
    return any(p.get("scores_undisplayed_meaningfully") is False for p in properties)


def quality_text(group: pd.DataFrame, metric: str) -> str:
    """A quality cell of a table: mean (± 95% interval), a failure's status, or n/c where not comparable."""
    if not_comparable(group, metric):
        return NOT_COMPARABLE
    mean, half, note = summarize(group, metric)
    return note if math.isnan(mean) else _with_interval(mean, half, 3)


def compare_with_baseline(model: pd.DataFrame, base: pd.DataFrame, column: str = "slate_acc"):
    """Paired comparison on shared data seeds: (difference, half-width, p-value, test name) or None. One seed:
    slate_acc by McNemar on the per-slate hits, a value made of per-slate values by the paired t-test on them;
    several seeds: the paired t-test on the per-seed values."""
    a = model[model["status"] == "ok"].set_index("seed")
    b = base[base["status"] == "ok"].set_index("seed")
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds or column not in a or column not in b:
        return None
    if len(seeds) == 1 and column == "slate_acc":
        hits_a, hits_b = slate_hits(a.loc[seeds[0], "_record"]), slate_hits(b.loc[seeds[0], "_record"])
        if hits_a is None or hits_b is None or len(hits_a) != len(hits_b):
            return None
        return (*paired_slates(hits_a, hits_b), "McNemar")
    entry = lookup(column)
    if len(seeds) == 1 and entry is not None and entry.per_slate is not None:
        paired = paired_slate_values(a.loc[seeds[0], "_record"], b.loc[seeds[0], "_record"], entry)
        return None if paired is None else (*paired, "paired t")
    if len(seeds) < 2:
        return None
    return (*paired_seeds(a.loc[seeds, column].tolist(), b.loc[seeds, column].tolist()), "paired t")


def paired_test(column: str) -> bool:
    """Whether a column is compared with the baseline in tables (†): slate_acc, and values made of per-slate
    values (their paired t-test)."""
    entry = lookup(column)
    return column == PRIMARY or entry is not None and entry.per_slate is not None


def _memory_column(frame: pd.DataFrame) -> str:
    return "cuda_peak_allocated_train_mib" if (frame["device"] == "cuda").any() else "cpu_net_peak_rss_mib"


def column_header(frame: pd.DataFrame, column: str, short: bool = False) -> str:
    name = _memory_column(frame) if column == PEAK_MEMORY else column
    return short_header(name) if short else header(name)


def higher_is_better(column: str) -> bool:
    entry = lookup("cpu_peak_rss_mib" if column == PEAK_MEMORY else column)
    return entry is None or entry.direction is not Direction.LOWER


def ranking_metric(frame: pd.DataFrame) -> str | None:
    """The headline's one ranking metric: NDCG at the largest k <= 5."""
    ndcg = [n for n in headline_metrics(frame) if n.startswith("ndcg@")]
    return ndcg[0] if ndcg else None


def headline_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """At most nine narrow columns (it must fit a GitHub page), sorted by the primary accuracy; reference models
    (oracle, random...) last, in italics. The overview table below it has every value in full."""
    base = frame[frame["model"] == baseline]
    ranking = ranking_metric(frame)
    rows, order = [], []
    for model, group in frame.groupby("model", sort=False):
        reference = model in REFERENCE_MODELS
        row: dict[str, Any] = {"model": f"_{model}_" if reference else model}
        params = group["parameters"].dropna() if "parameters" in group else []
        row["params"] = compact_value(float(params.iloc[0])) if len(params) else "–"
        mean, half, note = summarize(group, PRIMARY)
        row[PRIMARY] = note if math.isnan(mean) else _with_interval(mean, half, 3)
        delta = compare_with_baseline(group, base) if model != baseline and not base.empty else None
        row[f"Δ vs {baseline}"] = (
            f"{delta[0]:+.3f}{'*' if delta[2] < SIGNIFICANCE else ''}"
            if delta
            else ("baseline" if model == baseline else "–")
        )
        if ranking:
            value, _, _ = summarize(group, ranking)
            row[ranking] = format_value(value, 3)
        for column in HEADLINE_MEASUREMENTS:
            row[column_header(frame, column, short=True)] = speed_text(group, column, compact=True)
        rows.append(row)
        order.append((reference, -(mean if not math.isnan(mean) else -math.inf)))
    ranked = [row for _, row in sorted(zip(order, rows, strict=True), key=lambda pair: pair[0])]
    return pd.DataFrame(ranked)


def headline_legend(frame: pd.DataFrame) -> str:
    """What the headline's short headers stand for: "train (/s): train (samples/s); ..."."""
    pairs = [(column_header(frame, c, short=True), column_header(frame, c)) for c in HEADLINE_MEASUREMENTS]
    return "; ".join(f"{short}: {full}" for short, full in pairs if short != full)


def headline_metrics(frame: pd.DataFrame) -> list[str]:
    """The overview's quality columns: slate_acc, total_acc, ndcg and map at the largest k <= 5, mrr, regret."""
    names = metric_names(frame)

    def at_most_5(prefix: str) -> list[str]:
        ks = [int(n.split("@")[1]) for n in names if n.startswith(prefix + "@")]
        small = [k for k in ks if k <= 5]
        return [f"{prefix}@{max(small)}"] if small else []

    return (
        [n for n in ("slate_acc", "total_acc") if n in names]
        + at_most_5("ndcg")
        + at_most_5("map")
        + [n for n in ("mrr", "regret") if n in names]
        + [n for n in VALUE_METRICS[1:] if n in names and list_matters(frame)]
    )


def ranking_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Every quality metric of every model, mean (± 95% CI over seeds when there are several)."""
    rows = []
    for model, group in frame.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model}
        for metric in metric_names(frame):
            row[metric] = quality_text(group, metric)
        rows.append(row)
    return pd.DataFrame(rows)


def overview_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Models as rows at one point: headline metrics as mean (± 95% CI), speed and memory."""
    base = frame[frame["model"] == baseline]
    metrics = headline_metrics(frame)
    rows = []
    for model, group in frame.groupby("model", sort=False):
        row: dict[str, Any] = {"model": model, "seeds ok": f"{(group['status'] == 'ok').sum()}/{len(group)}"}
        params = group["parameters"].dropna() if "parameters" in group else []
        row["params"] = f"{int(params.iloc[0]):,}" if len(params) else "–"
        for metric in metrics:
            row[metric] = quality_text(group, metric)
        for column, p_column in delta_columns(frame).items():
            delta = compare_with_baseline(group, base, column) if model != baseline and not base.empty else None
            row[f"Δ {column} vs {baseline}"], row[p_column] = _delta_text(delta)
        for column in (
            "train_samples_per_s",
            "infer_samples_per_s",
            "latency_b1_p50_ms",
            "latency_b1_p99_ms",
            PEAK_MEMORY,
            "cpu_peak_rss_mib",
            "train_flops_per_sample",
            "train_mfu",
            "wall_seconds",
        ):
            if column not in frame or frame[column].isna().all():
                continue
            if column in ("train_flops_per_sample", "train_mfu", "wall_seconds"):
                mean, _, _ = summarize(group, column)
                row[column_header(frame, column)] = format_value(shown_value(column, mean))
            else:
                row[column_header(frame, column)] = speed_text(group, column)
        rows.append(row)
    return pd.DataFrame(rows)


def delta_columns(frame: pd.DataFrame) -> dict[str, str]:
    """The overview's paired comparisons with the baseline, each with its p column: slate_acc and, where the list
    matters, the regret share."""
    return {PRIMARY: "p", **{column: f"p ({column})" for column in VALUE_METRICS[1:] if list_matters(frame)}}


def _delta_text(delta: tuple | None) -> tuple[str, str]:
    """A difference ± its half-width (* where significant) and its p-value, or dashes without a comparison."""
    if not delta or math.isnan(delta[0]):
        return "–", "–"
    diff, half, p, _ = delta
    mark = "*" if p < SIGNIFICANCE else ""
    return f"{diff:+.3f} ± {half:.3f}{mark}", f"{p:.2g}"


REFERENCE_RULE = (
    "each swept axis at its smallest value"
    + "".join(f"; a swept {axis.title} at {axis.default}" for axis in AXES if axis.type is str)
    + "; where no cell has that point (a sweep of [[sweep]] parts), the cell where the most swept values meet"
)


def reference_point(frame: pd.DataFrame, axes: list[str]) -> dict[str, Any]:
    """Where the report's overview and each "Across" section hold the other swept axes (``REFERENCE_RULE``): an
    ordered axis at its smallest value, a categorical one (the loss) at its declared default when it was swept.
    Sub-sweeps ([[sweep]] parts: a slate axis at one batch size, a batch axis at one slate length) need not have
    that point: then the point of the run whose lines along the axes hold the most values, the smallest first."""
    declared = {axis.name: axis for axis in AXES}

    def reference(name: str) -> Any:
        axis = declared[name]
        return axis.default if axis.type is str and axis.default in set(frame[name]) else frame[name].min()

    point = {name: reference(name) for name in axes}
    if not axes or not at_point(frame, point).empty:
        return point

    def reach(candidate: dict[str, Any]) -> int:
        return sum(axis_line(frame, axis, candidate)[axis].nunique() for axis in axes)

    present = frame[axes].drop_duplicates().sort_values(axes)
    candidates = [{axis: row[axis] for axis in axes} for _, row in present.iterrows()]
    return max(candidates, key=reach)  # the first (smallest) of those that reach furthest


def at_point(frame: pd.DataFrame, point: dict[str, Any]) -> pd.DataFrame:
    """The cells whose axes hold the values of ``point``."""
    data = frame
    for axis, value in point.items():
        data = data[data[axis] == value]
    return data


def axis_line(frame: pd.DataFrame, axis: str, point: dict[str, Any]) -> pd.DataFrame:
    """The cells along ``axis`` with every other axis of ``point`` held at its value there."""
    return at_point(frame, {other: value for other, value in point.items() if other != axis})


def _value_label(frame: pd.DataFrame, axis: str, value: Any) -> str:
    label = f"{AXIS_LABELS[axis]} = {value}"
    if axis == "slate_length":
        candidates = frame.loc[frame[axis] == value, "candidates"].unique()
        if len(candidates) == 1:
            label += f" (S {candidates[0]})"
    return label


def axis_table(frame: pd.DataFrame, axis: str, column: str, baseline: str, higher_is_better: bool) -> pd.DataFrame:
    """Models as rows, the axis's values as columns (sorted; an axis of choices in their declared order, the
    independent world first); best per column in bold."""
    choices = next(a for a in AXES if a.name == axis).choice_names()
    values = sorted(frame[axis].unique(), key=lambda v: (choices.index(v) if v in choices else -1, v))
    cells: dict[str, dict[Any, str]] = {}
    means: dict[Any, dict[str, float]] = {v: {} for v in values}
    for model, group in frame.groupby("model", sort=False):
        cells[model] = {}
        for value in values:
            at = group[group[axis] == value]
            if at.empty:
                cells[model][value] = "–"
                continue
            mean, half, note = summarize(at, column)
            if math.isnan(mean):
                cells[model][value] = note or "–"
                continue
            text = _with_interval(mean, half, 3 if column == "slate_acc" else None) + speed_marks(at, column)
            if paired_test(column) and model != baseline:
                base = frame[(frame["model"] == baseline) & (frame[axis] == value)]
                delta = compare_with_baseline(at, base, column) if not base.empty else None
                if delta and delta[2] < SIGNIFICANCE:
                    text += " †"
            if note:
                text += f" ({note})"
            cells[model][value] = text
            means[value][model] = mean
    for value in values:
        if means[value]:
            pick = max if higher_is_better else min
            best = pick(means[value], key=means[value].get)
            cells[best][value] = f"**{cells[best][value]}**"
    table = pd.DataFrame.from_dict(cells, orient="index", columns=values)
    table.index.name = "model"
    table.columns = [_value_label(frame, axis, v) for v in values]
    return table.reset_index()
