"""``RUN/tune.md``: per model, default vs tuned settings, validation and test accuracy, and the ranking.

Built from the records alone (``RUN/records.jsonl`` for the test runs, ``RUN/trials/records.jsonl`` for the
search), like ``report.md``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.records import RECORDS_FILE, load_records
from bench.stats import SIGNIFICANCE, mean_interval, paired_seeds
from bench.tune import OBJECTIVE, record_seconds, trial_records

TUNE_REPORT = "tune.md"
TUNE_PLOT = "tune_history.png"


def _latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({r["key"]: r for r in records}.values())


def _test_values(records: list[dict[str, Any]], model: str, role: str) -> dict[int, float]:
    """Test slate_acc by seed of a model's default or tuned cells."""
    return {
        r["config"]["seed"]: r["metrics"][OBJECTIVE]
        for r in records
        if r["model"] == model and r.get("tuning", {}).get("role") == role and r["status"] == "ok"
    }


def _fmt(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def _changed(defaults: dict[str, Any], best: dict[str, Any]) -> str:
    def show(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    parts = [f"{k} {show(defaults.get(k))} → {show(v)}" for k, v in best.items() if defaults.get(k) != v]
    return ", ".join(parts) or "defaults kept"


def _empty_row() -> dict[str, Any]:
    """A model's search before its first trial: status counts, trial values, epochs trained per trial, trial 0's
    value, minutes spent, the budget it ran under."""
    return {"counts": {}, "values": [], "epochs": [], "default": math.nan, "minutes": 0.0, "budget": None}


def _study_rows(trials: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for record in sorted(trials, key=lambda r: r["tuning"]["trial"]):
        row = rows.setdefault(record["model"], _empty_row())
        row["counts"][record["status"]] = row["counts"].get(record["status"], 0) + 1
        row["minutes"] += record_seconds(record) / 60
        value = record["tuning"]["value"]
        row["values"].append(value if value is not None else math.nan)
        row["epochs"].append(record["tuning"].get("epochs") or 0)  # 0: a record made before epochs were counted
        row["budget"] = record["tuning"].get("budget") or row["budget"]
        if record["tuning"]["trial"] == 0 and value is not None:
            row["default"] = value
    return rows


def _plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    """Each model's best validation value so far, against its trials and against the epochs its trials trained;
    one line per model in its report colours, named at its end; trials on whole-number ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    from bench.plot_style import model_styles, place_labels

    fig, (by_trial, by_epochs) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    styles = model_styles(sorted(rows))
    labels: dict = {by_trial: [], by_epochs: []}
    for model, row in sorted(rows.items()):
        values = np.array(row["values"], dtype=float)
        best = np.fmax.accumulate(np.where(np.isnan(values), -np.inf, values))
        best = np.where(np.isinf(best), np.nan, best)
        style = styles[model]
        by_trial.plot(np.arange(len(best)), best, marker=style.marker, ms=4, color=style.colour)
        if len(best) and not np.isnan(best[-1]):
            labels[by_trial].append((len(best) - 1, float(best[-1]), model, style.colour))
        if all(row["epochs"]):
            spent = np.cumsum(row["epochs"])
            by_epochs.step(spent, best, where="post", marker=style.marker, ms=4, color=style.colour)
            if len(best) and not np.isnan(best[-1]):
                labels[by_epochs].append((float(spent[-1]), float(best[-1]), model, style.colour))
    by_trial.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_epochs.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_trial.set_xlabel("trial (0 = the model's defaults)")
    by_epochs.set_xlabel("compute: epochs trained by its trials so far (pruned trials stop early)")
    by_trial.set_ylabel(f"best validation {OBJECTIVE} so far")
    fig.suptitle(f"Tuning: best validation {OBJECTIVE} so far, by trial and by compute", fontsize=10)
    for ax in (by_trial, by_epochs):
        ax.margins(x=0.15)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    for ax, placed in labels.items():
        place_labels(ax, placed)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _budget_line(rows: dict[str, dict[str, Any]]) -> str:
    """Which budget the search used: equal trials, or minutes (then unequal trials)."""
    budgets = [row["budget"] for row in rows.values() if row["budget"]]
    if not budgets:
        return "Budget: not recorded (a search made before budgets were recorded)."
    budget = budgets[0]
    size = (
        f"{budget['trials']} trials per model, the same for every model"
        if budget["minutes"] is None
        else f"{budget['minutes']:g} minutes of trials per model"
        + (f" (at most {budget['trials']} trials)" if budget["trials"] is not None else "")
    )
    return (
        f"Budget: {size}; trials asked in batches of {budget['batch']}, {budget['parallel']} at once "
        "(on Ray: as many as the cluster holds)."
    )


def render_tune_report(run_dir: Path) -> str:
    final = _latest(load_records(run_dir / RECORDS_FILE)) if (run_dir / RECORDS_FILE).exists() else []
    trials = trial_records(run_dir)
    rows = _study_rows(trials)
    params: dict[str, dict[str, dict[str, Any]]] = {}
    for record in final:
        tuning = record.get("tuning") or {}
        if tuning.get("role"):
            params.setdefault(record["model"], {})[tuning["role"]] = tuning["params"]
    command = next((r["run"]["command"] for r in final if (r.get("run") or {}).get("command")), None)
    lines = [
        f"# Tuning: {run_dir.name}",
        "",
        *([f"Command: `{command}`", ""] if command else []),
        f"Each model's learning rate and declared options were searched on the **validation split** (Optuna TPE, "
        f"successive halving on the per-epoch validation {OBJECTIVE}, against earlier batches' trials; trial 0 is "
        f"the model's defaults). The test split "
        f"was used only afterwards: the defaults and the best trial's settings, each on the same seeds, "
        f"{OBJECTIVE} mean ± 95% t-interval over seeds; Δ is paired by seed (same data), with the paired t-test's p.",
        "",
        _budget_line(rows),
        "",
        "| model | trials (ok / pruned / failed) | search (min) | epochs trained | valid default | valid tuned "
        "| changed settings | test default | test tuned | Δ tuned − default (p) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    summary: dict[str, dict[str, float]] = {}
    for model in sorted(set(rows) | set(params)):
        row = rows.get(model) or _empty_row()
        counts = row["counts"]
        valid_best = max((v for v in row["values"] if not math.isnan(v)), default=math.nan)
        chosen = params.get(model, {})
        default = _test_values(final, model, "default")
        tuned = _test_values(final, model, "tuned") if "tuned" in chosen else default
        seeds = sorted(set(default) & set(tuned))
        d_mean, d_half = mean_interval([default[s] for s in seeds]) if seeds else (math.nan, math.nan)
        t_mean, t_half = mean_interval([tuned[s] for s in seeds]) if seeds else (math.nan, math.nan)
        delta = paired_seeds([tuned[s] for s in seeds], [default[s] for s in seeds]) if seeds else None
        delta_text = "–"
        if delta is not None:
            delta_text = f"{delta[0]:+.3f}" + ("" if math.isnan(delta[2]) else f" (p={delta[2]:.2g})")
        summary[model] = {"default": d_mean, "tuned": t_mean}
        lines.append(
            f"| {model} | {counts.get('ok', 0)} / {counts.get('pruned', 0)} / "
            f"{sum(n for s, n in counts.items() if s not in ('ok', 'pruned'))} | {row['minutes']:.1f} | "
            f"{sum(row['epochs']) or '–'} | {row['default']:.3f} | "
            f"{valid_best:.3f} | {_changed(chosen.get('default', {}), chosen.get('tuned', chosen.get('default', {})))} "
            f"| {_fmt(d_mean, d_half)} | {_fmt(t_mean, t_half)} | {delta_text} |"
        )
    trial_counts = [len(row["values"]) for row in rows.values()]
    if trial_counts and min(trial_counts) != max(trial_counts):
        lines += [
            "",
            f"The models ran {min(trial_counts)} to {max(trial_counts)} trials: a budget in minutes gives a model "
            "whose cells are cheap more trials than an expensive one, so a model with few trials may be further "
            "from its best settings than one with many.",
        ]
    lines += ["", *_ranking_section(summary, final)]
    if rows:
        _plot(rows, run_dir / TUNE_PLOT)
        lines += ["", f"![best validation {OBJECTIVE} so far, per trial and per epoch trained]({TUNE_PLOT})"]
    return "\n".join(lines) + "\n"


def _ranking_section(summary: dict[str, dict[str, float]], final: list[dict[str, Any]]) -> list[str]:
    def order(role: str) -> list[str]:
        known = [m for m in summary if not math.isnan(summary[m][role])]
        return sorted(known, key=lambda m: -summary[m][role])

    default_order, tuned_order = order("default"), order("tuned")
    lines = [
        "## Ranking on the test split",
        "",
        f"- defaults: {' > '.join(default_order) or '–'}",
        f"- tuned: {' > '.join(tuned_order) or '–'}",
        f"- the ranking {'did not change' if default_order == tuned_order else 'changed'} with tuning.",
        "",
        "Adjacent tuned models, paired by seed (Δ mean, 95% t half-width, paired t-test p):",
        "",
    ]
    for upper, lower in zip(tuned_order, tuned_order[1:], strict=False):
        a = _test_values(final, upper, "tuned") or _test_values(final, upper, "default")
        b = _test_values(final, lower, "tuned") or _test_values(final, lower, "default")
        seeds = sorted(set(a) & set(b))
        mean, half, p = paired_seeds([a[s] for s in seeds], [b[s] for s in seeds])
        verdict = f"significant at {SIGNIFICANCE}" if p < SIGNIFICANCE else "not significant"
        lines.append(f"- {upper} vs {lower}: {mean:+.3f} ± {half:.3f} (p={p:.2g}, {verdict}; {len(seeds)} seeds)")
    return lines


def write_tune_report(run_dir: Path) -> Path:
    path = run_dir / TUNE_REPORT
    path.write_text(render_tune_report(run_dir))
    return path
