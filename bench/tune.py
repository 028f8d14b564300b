"""``bench tune``: per-model hyper-parameter search on the validation split, then a test run of default vs tuned.

For each model an Optuna study (TPE sampler, successive-halving pruner fed by the per-epoch validation slate_acc)
searches the learning rate and the model's own search space (``register(..., search_space=...)``), the same number
of trials for every model unless a budget in minutes is asked for. Every trial is a cell
whose metrics are computed on the validation split (``eval_split="valid"``): the search never scores the test
split. The first trial of every study is the model's defaults, so the best trial is at least as good as the
defaults on validation. The study lives in ``RUN/study.db`` (SQLite) and each trial's record in
``RUN/trials/records.jsonl``: a killed tune re-run with the same command continues the same study, and trials
that had finished are not repeated (a trial cut off by the kill is marked failed and replaced).

Trials are asked from the driver in batches of ``max(parallel, TRIAL_BATCH)`` and run on the executor, up to
``parallel`` (process executor) or as many as the cluster holds (Ray) at once; their epochs come back to the driver,
which reports them to the study and stops a trial the pruner gives up on. A batch is asked only once the one before
it has been told, and a trial is pruned against the trials of earlier batches only, so the trials' settings and
values do not depend on how many ran at once or in which order they finished.

Then the defaults and the best settings of every model are run on the test split with ``seeds`` seeds
(``RUN/records.jsonl``, tagged ``tuning.role`` = default | tuned) and ``RUN/tune.md`` compares them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.config import CellConfig, MeasureConfig
from bench.errors import ConfigError
from bench.executor import OnProgress, OnRecord, Progress, StopCell
from bench.records import RECORDS_FILE, append_record, check_writable, json_safe, load_records, new_record
from bench.runner import open_run
from rerankers import get_spec

STUDY_FILE = "study.db"
TRIALS_DIR = "trials"
OBJECTIVE = "slate_acc"  # on the validation split, at the epoch the cell's selection rule keeps
# Searched for every model: the optimiser's step size matters to all of them.
HARNESS_SPACE: dict[str, Any] = {"lr": (1e-4, 1e-2, "log")}
# A trial's speed is not what it is for: measure little, so the budget goes to training.
TRIAL_MEASURE = MeasureConfig(latency_requests=2, throughput_blocks=1, min_block_seconds=0.001)

# Trials asked at once, at least: the batch fixes what the sampler and the pruner see, so it must not depend on
# --parallel below it (a serial tune and a --parallel 2 one give the same trials).
TRIAL_BATCH = 4
# Successive halving: a trial goes on past epoch min_resource * REDUCTION**k only when its validation value is in
# the top 1/REDUCTION of the values that earlier batches' trials had at that epoch.
REDUCTION = 3
BATCH_START = "batch_start"  # a trial's user attribute: the number of the first trial of its batch

# Runs trial cells: an executor's run(cells, on_record, on_progress), whose on_progress may raise StopCell.
RunTrials = Callable[[list[CellConfig], OnRecord, OnProgress], None]


@dataclass(frozen=True)
class Budget:
    trials: int | None = 20  # trials per model that ran to an end (complete, pruned or failed)
    minutes: float | None = None  # minutes of trials per model, each trial's own wall time summed
    seeds: int = 3  # seeds of the final default-vs-tuned test run
    parallel: int = 1  # trials at once (the process executor; Ray runs as many as the cluster holds)

    def __post_init__(self) -> None:
        if self.trials is None and self.minutes is None:
            raise ConfigError("a tune needs a budget: --trials N and/or --minutes M")
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"trials must be >= 1, got {self.trials}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ConfigError(f"minutes must be a positive number, got {self.minutes}")
        if self.seeds < 1:
            raise ConfigError(f"seeds must be >= 1, got {self.seeds}")
        if self.parallel < 1:
            raise ConfigError(f"parallel must be >= 1, got {self.parallel}")

    @property
    def batch(self) -> int:
        return max(self.parallel, TRIAL_BATCH)

    def describe(self) -> dict[str, Any]:
        """What a trial record says of the budget it ran under."""
        return {"trials": self.trials, "minutes": self.minutes, "parallel": self.parallel, "batch": self.batch}


def search_space(base: CellConfig) -> dict[str, Any]:
    """The learning rate and the model's declared options, each widened to hold the cell's own value.

    Trial 0 is the untuned cell, so its values must lie in the space: a profile may set a size that the
    model's declared choices do not list (the smoke profile's d_model 16, say).
    """
    spec = get_spec(base.model)
    options = {**spec.options(), **base.model_kwargs}
    unknown = sorted(set(spec.search_space) - set(spec.options()))
    if unknown:
        raise ConfigError(f"model {base.model!r} declares a search space over unknown options: {', '.join(unknown)}")
    space = {**HARNESS_SPACE, **spec.search_space}
    for name, domain in space.items():
        if not _valid_domain(domain):
            raise ConfigError(f"model {base.model!r}: search space of {name!r} must be choices or (low, high)")
        value = base.train.lr if name == "lr" else options[name]
        if isinstance(domain, list):
            space[name] = domain if value in domain else sorted([*domain, value], key=_sort_key)
        elif not domain[0] <= value <= domain[1]:
            space[name] = (min(domain[0], value), max(domain[1], value), *domain[2:])
    return space


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _valid_domain(domain: Any) -> bool:
    if isinstance(domain, list):
        return len(domain) > 0
    return isinstance(domain, tuple) and len(domain) in (2, 3) and domain[0] < domain[1]


def _suggest(trial, name: str, domain: Any) -> Any:
    if isinstance(domain, list):
        return trial.suggest_categorical(name, domain)
    low, high, *scale = domain
    return trial.suggest_float(name, float(low), float(high), log=scale == ["log"])


def default_params(base: CellConfig, space: dict[str, Any]) -> dict[str, Any]:
    """The values the untuned cell uses for every searched parameter."""
    options = {**get_spec(base.model).options(), **base.model_kwargs}
    return {name: base.train.lr if name == "lr" else options[name] for name in space}


def with_params(base: CellConfig, params: dict[str, Any]) -> CellConfig:
    """The cell that trains with ``params`` (lr to the optimiser, the rest to the model)."""
    model_kwargs = {**base.model_kwargs, **{k: v for k, v in params.items() if k != "lr"}}
    return replace(base, train=replace(base.train, lr=params.get("lr", base.train.lr)), model_kwargs=model_kwargs)


def trial_cell(base: CellConfig, params: dict[str, Any]) -> CellConfig:
    return replace(with_params(base, params), eval_split="valid", measure=TRIAL_MEASURE)


def study_name(base: CellConfig) -> str:
    return f"{base.model}@{base.key()}"  # a changed workload or setting is another study


class _EarlierBatches:
    """The study as a pruner should see it for ``trial``: the trials of the batches asked before its own."""

    def __init__(self, study, first: int) -> None:
        self._study, self._first = study, first

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if t.number < self._first]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)


def batch_pruner():
    """Successive halving (Optuna's, from epoch 1, no bootstrap) over the trials of earlier batches only."""
    import optuna

    class BatchPruner(optuna.pruners.BasePruner):
        def __init__(self) -> None:
            self.inner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=REDUCTION)

        def prune(self, study, trial) -> bool:
            first = trial.user_attrs.get(BATCH_START, trial.number)
            return self.inner.prune(_EarlierBatches(study, first), trial)

    return BatchPruner()


def _study(run_dir: Path, name: str, seed: int):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{run_dir / STUDY_FILE}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        pruner=batch_pruner(),
    )


def check_study_file(path: Path) -> None:
    """A ConfigError naming ``path`` when it is not a readable SQLite database (truncated, overwritten).

    Opened for writing (never created): a tune killed inside a write leaves a hot journal, which SQLite rolls
    back when the database is next opened, and a read-only connection cannot, so it would call a sound study
    unreadable ("attempt to write a readonly database").
    """
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=rw", uri=True) as connection:
            (verdict,) = connection.execute("PRAGMA quick_check").fetchone()
        connection.close()
    except sqlite3.Error as error:
        verdict = str(error)
    if verdict != "ok":
        raise ConfigError(
            f"{path} is not a readable tuning study ({verdict}); move it away to start the search afresh "
            "(the trial records stay in trials/records.jsonl)"
        )


def _check_one_study_per_model(run_dir: Path, model: str, name: str) -> None:
    import optuna

    if not (run_dir / STUDY_FILE).exists():
        return
    check_study_file(run_dir / STUDY_FILE)
    others = [
        s.study_name
        for s in optuna.get_all_study_summaries(f"sqlite:///{run_dir / STUDY_FILE}", include_best_trial=False)
        if s.study_name.rsplit("@", 1)[0] == model and s.study_name != name
    ]
    if others:
        raise ConfigError(
            f"{run_dir} already holds a tune of {model} with other settings ({others[0]}); use another --run-id"
        )


def _spent(run_dir: Path, name: str) -> int:
    """Trials of the study that ran to an end (complete, pruned or failed): those with a record.

    A trial cut off by a kill has none, so it costs no budget; a model whose trials all fail still ends.
    """
    return sum(1 for r in trial_records(run_dir) if r.get("tuning", {}).get("study") == name)


def record_seconds(record: dict[str, Any]) -> float:
    """A record's wall time in seconds, from its start and finish stamps (0 when it has none)."""
    try:
        start, end = (datetime.fromisoformat(record[k]) for k in ("started_at", "finished_at"))
    except (KeyError, TypeError, ValueError):
        return 0.0
    return (end - start).total_seconds()


def _spent_seconds(run_dir: Path, name: str) -> float:
    """Seconds the study's recorded trials ran, summed (trials that ran at once each count their own)."""
    return sum(record_seconds(r) for r in trial_records(run_dir) if r.get("tuning", {}).get("study") == name)


def search(
    base: CellConfig,
    run_dir: Path,
    budget: Budget,
    run_trials: RunTrials,
    on_trial: Callable[[dict[str, Any]], None] = lambda record: None,
) -> dict[str, Any]:
    """Run the model's study, a batch of trials at a time, until its budget is spent; return the best parameters."""
    from optuna.trial import TrialState

    space = search_space(base)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_one_study_per_model(run_dir, base.model, study_name(base))
    study = _study(run_dir, study_name(base), base.seed)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(stale.number, state=TrialState.FAIL)  # cut off by a kill: a new trial takes its place
    if not study.trials:
        study.enqueue_trial(default_params(base, space))  # trial 0: the defaults
    trials_file = run_dir / TRIALS_DIR / RECORDS_FILE
    spent = _spent(run_dir, study.study_name)
    while True:
        size = budget.batch if budget.trials is None else min(budget.batch, budget.trials - spent)
        if size <= 0:
            break
        if budget.minutes is not None and _spent_seconds(run_dir, study.study_name) >= 60 * budget.minutes:
            break
        batch = TrialBatch(study, base, space, size)

        def finish(record: dict[str, Any]) -> None:
            record["tuning"]["budget"] = budget.describe()
            append_record(trials_file, json_safe(record))
            on_trial(record)

        batch.run(run_trials, finish)
        spent += size
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(f"no trial of {base.model} completed; see {trials_file}")
    return dict(study.best_trial.params)


class TrialBatch:
    """Trials asked together from the study, run as cells on an executor, told as each one ends."""

    def __init__(self, study, base: CellConfig, space: dict[str, Any], size: int) -> None:
        self.study, self.trials, self.cells = study, [], []
        self.params: list[dict[str, Any]] = []
        for _ in range(size):
            trial = study.ask()
            self.trials.append(trial)
            self.params.append({name: _suggest(trial, name, domain) for name, domain in space.items()})
            self.cells.append(trial_cell(base, self.params[-1]))
        for trial in self.trials:
            trial.set_user_attr(BATCH_START, self.trials[0].number)
        self.index = {id(cell): n for n, cell in enumerate(self.cells)}
        self.history: list[list[float]] = [[] for _ in self.cells]
        self.started: list[str | None] = [None] * size

    def run(self, run_trials: RunTrials, finish: Callable[[dict[str, Any]], None]) -> None:
        """Run every trial; ``finish`` gets each one's record (tagged with ``tuning``) once the study is told."""
        from optuna.trial import TrialState

        told: set[int] = set()

        def on_record(cell: CellConfig, record: dict[str, Any]) -> None:
            n = self.index[id(cell)]
            trial = self.trials[n]
            value = record["metrics"].get(OBJECTIVE) if record["status"] == "ok" else None
            if value is not None and math.isfinite(value):
                self.study.tell(trial, value)
            else:
                state = TrialState.PRUNED if record["status"] == "pruned" else TrialState.FAIL
                self.study.tell(trial, state=state)
            told.add(n)
            epochs = len(self.history[n]) or (record.get("history") or {}).get("stop_epoch", 0)
            record["tuning"] = {
                "study": self.study.study_name,
                "trial": trial.number,
                "params": self.params[n],
                "value": value,
                "batch_start": self.trials[0].number,
                "epochs": epochs,  # trained: the compute this trial cost, in epochs
            }
            finish(record)

        run_trials(self.cells, on_record, self.on_progress)
        for n in set(range(len(self.trials))) - told:  # an executor that lost a cell without a record
            self.study.tell(self.trials[n], state=TrialState.FAIL)

    def on_progress(self, progress: Progress) -> None:
        """Each epoch's validation value to the study, as the cell's selection rule sees it; StopCell if pruned."""
        n = self.index[id(progress.cell)]
        if progress.epoch is None:
            self.started[n] = new_record(progress.cell)["started_at"]
            return
        history = self.history[n]
        history.append(progress.valid_slate_acc)
        # Under --select best a trial's value is its best epoch's, as in EpochSelection.
        value = max(history) if progress.cell.train.select == "best" else history[-1]
        trial = self.trials[n]
        trial.report(value, progress.epoch)
        if trial.should_prune():
            record = new_record(
                progress.cell,
                "pruned",
                f"pruned after epoch {progress.epoch}: its validation {OBJECTIVE} was not in the top 1/{REDUCTION} "
                "of earlier trials' at that epoch",
            )
            record["history"] = {"valid_slate_acc": list(history)}
            record["started_at"] = self.started[n] or record["started_at"]
            record["finished_at"] = datetime.now(UTC).isoformat()
            raise StopCell(record)


def trial_runner(executor) -> RunTrials:
    """Trials on any executor (bench.executor): every executor streams the epochs that feed the pruner."""
    return executor.run


def base_cells(cells: list[CellConfig]) -> list[CellConfig]:
    """One cell per model to tune: the first seed's; any other axis with several values is an error."""
    first_seed = min(cell.seed for cell in cells)
    bases = [cell for cell in cells if cell.seed == first_seed]
    models = [cell.model for cell in bases]
    if len(models) != len(set(models)):
        raise ConfigError("bench tune takes one value per sweep axis (besides --models): tune one shape at a time")
    return bases


def final_cells(base: CellConfig, params: dict[str, Any], seeds: int) -> dict[str, list[CellConfig]]:
    """The default and the tuned cells of a model on ``seeds`` seeds, evaluated on the test split."""
    roles = {"default": base, "tuned": with_params(base, params)}
    return {role: [replace(cell, seed=base.seed + n) for n in range(seeds)] for role, cell in roles.items()}


def trial_records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / TRIALS_DIR / RECORDS_FILE
    return load_records(path) if path.exists() else []


def run_tune(
    bases: list[CellConfig],
    run_dir: Path,
    budget: Budget,
    run_trials: RunTrials,
    run_final: Callable[[list[CellConfig], dict[str, Any]], None],
    on_trial: Callable[[dict[str, Any]], None] = lambda record: None,
) -> None:
    """Search every model, then run its defaults and its best settings on the test split, inside ``open_run``."""
    with open_run(run_dir):
        check_writable(run_dir / TRIALS_DIR)
        for base in bases:
            best = search(base, run_dir, budget, run_trials, on_trial)
            defaults = default_params(base, search_space(base))
            cells = final_cells(base, best, budget.seeds)
            tuning = {"study": study_name(base)}
            run_final(cells["default"], {"tuning": {"role": "default", **tuning, "params": defaults}})
            if best != defaults:  # else the tuned cells are the default cells, already run
                run_final(cells["tuned"], {"tuning": {"role": "tuned", **tuning, "params": best}})
