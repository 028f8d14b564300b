"""Typed, validated configuration of one benchmark cell and of a run, and the named profiles.

Every field that is also a `bench run` option is declared once, with ``option()`` (bench/declare.py): its type,
choices, range and default give the flag, the sweep-file key, the help suffix and every check of its values.
``validate`` adds only the rules between fields.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from bench.declare import (
    EXECUTION,
    INT_LIMIT,
    MEASUREMENT,
    MODELS,
    OUTPUT,
    POSITIVE,
    WORKLOAD,
    check_applies,
    check_fields,
    check_one,
    declared,
    declared_option,
    option,
)
from bench.errors import ConfigError
from bench.executor_registry import current_spelling, executor_choices
from bench.losses import loss_names
from rerankers.dropout import CPU_DROPOUTS

DATA_DEVICE = "cpu"  # where synthetic data is drawn, whatever the cell's device
PRECISIONS = {"fp32": "", "tf32": "CUDA", "bf16": "autocast"}  # choice -> what it needs or does
DEVICES = ("auto", "cpu", "cuda")
CLICK_MODELS = {"best": "founding", "position-biased": "", "cascade": "", "multi-click": ""}
LABEL_KINDS = ("clicks", "graded")
DATA_SOURCES = ("synthetic", "letor")
# How displayed items change each other's value; bench/worlds.py defines each world (docs/workloads.md).
WORLDS = {
    "independent": "founding: no effect",
    "diversity": "an item loses value under similar items",
    "complements": "partner topics gain value together",
    "decoy": "an item gains value next to a dominated similar one",
}
SELECTIONS = {"last": "the final epoch's", "best": "the epoch with the best validation slate_acc, its weights restored"}
EVAL_SPLITS = ("test", "valid")  # a cell's eval_split; not a user option

LIST_HELP = "Comma list: each value is a sweep axis point."
MAX_SEED = INT_LIMIT  # seeds feed torch and numpy generators, which take 64-bit values
MAX_WIDTH = 65536  # the widest model width an option may ask for (a 65536^2 weight is already 16 GiB)
SYNTHETIC = ("data", "synthetic")  # applies_to: an option of the synthetic world only
LETOR = ("data", "letor")  # applies_to: an option of LETOR data only


MEMORY_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
                "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}


def memory_bytes(text: str) -> int:
    """A memory size as bytes: ``2GiB``, ``512 MiB``, ``1.5GB``, ``1073741824`` (bytes); ConfigError if not one."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in MEMORY_UNITS or float(match.group(1)) <= 0:
        raise ConfigError(f"memory-limit must be a positive size like 2GiB, 512MiB or 1.5GB, got {text!r}")
    return int(float(match.group(1)) * MEMORY_UNITS[unit])


def check_initial_ranker(ranker: str) -> None:
    if ranker != "linear" and not (ranker.startswith("feature:") and ranker[8:].isdigit()):
        raise ConfigError(f"initial-ranker must be 'linear' or 'feature:<id>' (e.g. feature:1), got {ranker!r}")


@dataclass(frozen=True)
class WorkloadConfig:
    """The data: the founding synthetic world and its knobs, or LETOR files (docs/workloads.md)."""

    batch_size: int = option(
        4096, LIST_HELP, axis=20, flags=("--batch-size", "--batch-sizes"), noun="batch size", **POSITIVE
    )
    batches: int = option(100, "Training batches per epoch.", **POSITIVE)
    candidates: int = option(
        10,
        "Items the re-ranker sees per user (S >= T); default: candidate-ratio x T. " + LIST_HELP,
        axis=80,
        noun="candidates S",
        **POSITIVE,
    )
    slate_length: int = option(
        5,
        "Items displayed to the user (T). " + LIST_HELP,
        axis=30,
        flags=("--slate-length", "--slate-lengths"),
        noun="slate length T",
        **POSITIVE,
    )
    user_dim: int = option(
        7,
        LIST_HELP,
        axis=40,
        flags=("--user-dim", "--user-dims"),
        noun="user feature dim",
        applies_to=SYNTHETIC,
        **POSITIVE,
    )
    item_dim: int = option(
        10,
        "Item features; the last is the sum of the others. " + LIST_HELP,
        axis=50,
        flags=("--item-dim", "--item-dims"),
        noun="item feature dim",
        applies_to=SYNTHETIC,
        minimum=2,
    )
    valid_slates: int = option(4096, "Validation slates.", **POSITIVE)
    test_slates: int = option(16384, "Test slates.", **POSITIVE)
    # Workload knobs (docs/workloads.md); the defaults give the founding data bit for bit.
    slate_min: int | None = option(
        None, "Variable slate lengths: each slate shows slate-min..T items.", applies_to=SYNTHETIC, minimum=1
    )
    initial_noise: float | None = option(  # None stands for inf: the founding random order
        None,
        "Initial order by true utility + N(0, noise^2) (in list std units); 0 = perfect, inf = random.",
        allow_inf=True,
        applies_to=SYNTHETIC,
        minimum=0,
    )
    click_model: str = option("best", "How the simulated users click.", choices=CLICK_MODELS)
    eta: float = option(0.2, "position-biased clicks: examination probability 1/rank^eta.", minimum=0)
    labels: str = option(
        "clicks",
        "What training and evaluation take as relevance.",
        choices=LABEL_KINDS,
        default_when=("data", "letor", "graded"),
    )
    # Real data instead of the synthetic world.
    data: str = option("synthetic", "Where the lists come from.", choices=DATA_SOURCES, noun="data source")
    data_path: str | None = option(
        None, "LETOR: a directory with train/vali/test.txt, or TRAIN,VALID,TEST.", applies_to=LETOR
    )
    initial_ranker: str = option(
        "linear",
        "LETOR: the order displayed before re-ranking: linear (fitted on train) or feature:<id>.",
        applies_to=LETOR,
        check=check_initial_ranker,
    )
    # Worlds where the list matters (bench/worlds.py, docs/workloads.md); independent is the founding world.
    world: str = option(
        "independent",
        "How displayed items change each other's value. " + LIST_HELP,
        axis=5,
        flags=("--world", "--worlds"),
        choices=WORLDS,
        applies_to=SYNTHETIC,
    )
    world_strength: float = option(
        1.0,
        "Interaction worlds: size of one item's effect on another, in standard deviations of utility.",
        minimum=0,
    )
    world_topics: int = option(
        4,
        "Interaction worlds: topics K, an item's topic being the argmax of its first K features (K < item-dim).",
        minimum=2,
    )
    world_window: int = option(
        2, "Interaction worlds: how many positions away an item acts on another.", minimum=1, maximum=1000
    )


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(10, "Training epochs.", MODELS, **POSITIVE)
    lr: float = option(
        1e-3,
        "Adam learning rate. " + LIST_HELP,
        MODELS,
        axis=12,
        flags=("--lr", "--lrs"),
        noun="learning rate",
        **POSITIVE,
    )
    amsgrad: bool = option(
        True, "Adam with the AMSGrad variant (the founding optimiser).", MODELS, flags=("--amsgrad/--no-amsgrad",)
    )
    loss: str = option(
        "kl",
        "Training loss (kl: the founding one; bench/losses.py). " + LIST_HELP,
        MODELS,
        axis=10,
        flags=("--loss", "--losses"),
        choices=loss_names,
    )
    warmup_steps: int = option(
        5, "First steps of epoch 0, excluded from the training throughput.", MEASUREMENT, minimum=0
    )
    select: str = option(
        "last",
        "Which weights are evaluated; the test split never takes part in the choice.",
        MODELS,
        choices=SELECTIONS,
        noun="selection rule",
    )
    patience: int | None = option(
        None,
        "Early stopping: stop once this many epochs in a row bring no better validation slate_acc than the best "
        "so far (default: train every epoch).",
        MODELS,
        minimum=1,
        maximum=INT_LIMIT,
    )


@dataclass(frozen=True)
class MeasureConfig:
    """How much timing the inference measurement takes (training is timed over its own steps)."""

    latency_requests: int = option(
        200,
        "Batch-1 requests timed for the latency percentiles; a 95% interval, which a comparison needs, "
        "takes at least 6 for p50, 72 for p95, 368 for p99.",
        MEASUREMENT,
        minimum=1,
        maximum=1_000_000,
    )
    throughput_blocks: int = option(
        7,
        "Timed blocks of inference at the cell's batch size (an interval needs 6).",
        MEASUREMENT,
        minimum=1,
        maximum=10_000,
    )
    min_block_seconds: float = option(
        0.05,
        "Shortest inference block in seconds: calls per block grow until one lasts this long.",
        MEASUREMENT,
        minimum=0,
        maximum=60,
    )


@dataclass(frozen=True)
class CellConfig:
    """One unit of work: one model on one workload with one seed on one device."""

    model: str
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = option(0, "First seed of data, hidden value model and model init.", minimum=0, maximum=MAX_SEED)
    device: str = option(
        "cpu",
        "Device every cell runs on (auto: cuda when there is a GPU).",
        MEASUREMENT,
        choices=DEVICES,
        run_default="auto",
    )
    threads: int = option(0, "CPU threads for torch (0: torch's default).", MEASUREMENT, minimum=0, maximum=4096)
    precision: str = option("fp32", "Numeric precision of training and inference.", MEASUREMENT, choices=PRECISIONS)
    compile: bool = option(
        False,
        "torch.compile each cell's model (compile time is warm-up).",
        MEASUREMENT,
        flags=("--compile/--no-compile",),
    )
    # The split the metrics are computed on: "test", or "valid" for a tuning trial (bench tune), which must
    # never see the test split. Not a user option.
    eval_split: str = "test"
    cpu_dropout: str = option(
        "auto",
        "Dropout every model trains with on CPU: stock PyTorch's, masks cut from bulk random bits "
        "(rerankers/dropout.py), or auto: bulk where torch draws its CPU masks serially.",
        MEASUREMENT,
        choices=CPU_DROPOUTS,
    )

    memory_limit: str | None = option(
        None,
        "Memory budget of each cell's process, e.g. 2GiB or 512MiB: on CPU a limit on its private writable memory "
        "(RLIMIT_DATA, interpreter and torch included), on CUDA on what torch may allocate; a cell that goes beyond "
        "it is recorded as oom. Default: the machine's physical memory (no limit set).",
        MEASUREMENT,
        check=memory_bytes,
    )

    def to_dict(self) -> dict[str, Any]:
        """What ``dataclasses.asdict`` gives, built field by field: asdict deep-copies every value, which planning a
        sweep of 100,000 cells paid for each."""
        plain: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if is_dataclass(value):
                plain[name] = {field: getattr(value, field) for field in value.__dataclass_fields__}
            else:
                plain[name] = copy.deepcopy(value) if isinstance(value, (dict, list)) else value
        return plain

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellConfig:
        nested = {"workload": WorkloadConfig, "train": TrainConfig, "measure": MeasureConfig}
        known = {f.name for f in fields(cls)}
        values = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items() if k in known}
        # A field the record predates takes the value that reproduces what the record did, not today's default
        # (the CPU dropout's default changed from its neutral value), so the record keeps its key.
        for path, neutral in NEUTRAL_FIELDS.items():
            *parents, name = path
            holder = values
            for parent in parents:
                holder = holder.get(parent) if isinstance(holder.get(parent), dict) else None
                if holder is None:
                    break
            if holder is not None and name not in holder:
                holder[name] = neutral
        for name, kind in nested.items():
            if name in values:
                sub = {f.name for f in fields(kind)}
                values[name] = kind(**{k: v for k, v in values[name].items() if k in sub})
        return cls(**values)

    def key(self) -> str:
        """Stable identity of the cell: a hash of its full config.

        A field listed in ``NEUTRAL_FIELDS`` is left out while it holds its neutral value (the one that
        reproduces the behaviour of records written without the field), so those records keep their keys
        (resume, compare). Computed once per cell: the config is frozen (its model_kwargs are never changed after
        planning).
        """
        cached = self.__dict__.get("_key")
        if cached is None:
            cached = self._config_hash()
            object.__setattr__(self, "_key", cached)  # a cache beside the fields: not part of eq, asdict or replace
        return cached

    def _canonical(self) -> str:
        """The JSON that ``key`` hashes: the config, sorted, without the fields at their neutral values."""
        config = self.to_dict()
        for path, neutral in NEUTRAL_FIELDS.items():
            *parents, name = path
            holder = config
            for parent in parents:
                holder = holder[parent]
            if holder.get(name) == neutral:
                del holder[name]
        return json.dumps(config, sort_keys=True, separators=(",", ":"))

    def _config_hash(self) -> str:
        return hashlib.sha256(self._canonical().encode()).hexdigest()[:16]

    def with_seeds(self, seeds: list[int]) -> list[CellConfig]:
        """This cell once per seed, each with its key: the canonical JSON is written once and each seed put in its
        place, so that a sweep of 100,000 seeds does not serialise its config 100,000 times."""
        sentinel = -(2**70)  # no seed: seeds are 0 or more
        text = replace(self, seed=sentinel)._canonical()
        before, found, after = text.partition(f'"seed":{sentinel}')
        placed = bool(found) and str(sentinel) not in before + after  # else each key is computed on its own
        cells = []
        for seed in seeds:
            cell = replace(self, seed=seed)
            if placed:
                canonical = f'{before}"seed":{seed}{after}'
                object.__setattr__(cell, "_key", hashlib.sha256(canonical.encode()).hexdigest()[:16])
            cells.append(cell)
        return cells

    def data_key(self) -> str:
        """Identity of the data the cell sees; cells sharing it can be compared pairwise.

        The data is drawn on the CPU whatever device the cell runs on (bench/data.py), so "device" is
        the device it was drawn on, always "cpu": CPU records keep their data keys and a GPU cell
        shares its data key with the CPU cell of the same workload and seed.
        """
        workload = asdict(self.workload)
        for name in LATE_DATA_FIELDS:
            if workload[name] == NEUTRAL_FIELDS[("workload", name)]:
                del workload[name]
        canonical = json.dumps({"workload": workload, "seed": self.seed, "device": DATA_DEVICE}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# (path in to_dict(), the value that reproduces what a record without the field did)
NEUTRAL_FIELDS: dict[tuple[str, ...], Any] = {
    ("compile",): False,
    ("eval_split",): "test",
    ("train", "select"): "last",
    ("train", "patience"): None,
    ("cpu_dropout",): "torch",
    ("memory_limit",): None,
    ("workload", "slate_min"): None,
    ("workload", "initial_noise"): None,
    ("workload", "click_model"): "best",
    ("workload", "eta"): 0.2,
    ("workload", "labels"): "clicks",
    ("workload", "data"): "synthetic",
    ("workload", "data_path"): None,
    ("workload", "initial_ranker"): "linear",
    ("workload", "world"): "independent",
    ("workload", "world_strength"): 1.0,
    ("workload", "world_topics"): 4,
    ("workload", "world_window"): 2,
}

# Workload fields left out of the data key while neutral, so that earlier records keep their data keys too.
LATE_DATA_FIELDS = ("world", "world_strength", "world_topics", "world_window")


PROFILES: dict[str, dict[str, Any]] = {
    # The founding experiment's sizes (batch 4096, transformer width 512, 10 epochs); meant for a GPU.
    "seed": {
        "workload": WorkloadConfig(),
        "train": TrainConfig(epochs=10),
        # Every model taking an option gets the profile's value.
        "model_kwargs": {"d_model": 512, "dim_feedforward": 512},
    },
    # Sized for `bench run --models all` on a 2-core CPU (about 10 minutes): every model trained 6 x 100
    # batches of 512.
    "default": {
        "workload": WorkloadConfig(batch_size=512, batches=100, valid_slates=4096, test_slates=8192),
        "train": TrainConfig(epochs=6, select="best"),
        "model_kwargs": {"d_model": 64, "dim_feedforward": 256},
    },
    # Seconds; for tests.
    "smoke": {
        "workload": WorkloadConfig(batch_size=64, batches=6, valid_slates=128, test_slates=256),
        "train": TrainConfig(epochs=2, warmup_steps=2, select="best"),
        "measure": MeasureConfig(latency_requests=10, throughput_blocks=3, min_block_seconds=0.01),
        "model_kwargs": {"d_model": 16, "dim_feedforward": 32},
    },
}


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep enumerates beyond the cell fields: models, seeds, candidate ratio, model options."""

    models: str = option("all", "'all', a comma list of names, or glob patterns (prm*).", MODELS, axis=0)
    profile: str = option(
        "default",
        "Named sizes of the data, training and models.",
        WORKLOAD,
        flags=("--profile",),
        choices=lambda: tuple(PROFILES),
    )
    seeds: int = option(1, "Number of seeds (seed, seed+1, ...).", maximum=100_000, **POSITIVE)
    candidate_ratio: float | None = option(
        None, "S / T when --candidates is not given (default: the profile's).", minimum=1
    )
    d_model: int | None = option(
        None, "Model width, for every model that has one.", MODELS, maximum=MAX_WIDTH, **POSITIVE
    )
    model_arg: list[str] = option(
        help="KEY=VALUE model option (repeatable), e.g. num_layers=4.", panel=MODELS, factory=list
    )
    sweep: Path | None = option(None, "TOML file describing the sweep; flags override it.", OUTPUT, in_file=False)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> SweepConfig:
        """The sweep settings among merged ``settings``, each checked against its declaration."""
        values = {f.name: settings[f.name] for f in fields(cls) if settings.get(f.name) is not None}
        sweep = cls(**values)
        check_fields(sweep)
        return sweep


RUN_ID_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
MAX_RUN_ID = 100  # characters: room for the run directory's files under any file system's name limit


def run_id_problem(run_id: str) -> str | None:
    """What is wrong with a run id (None: nothing): it names one directory inside --out, in the portable file name
    set (ASCII letters, digits, '-', '_', '.'), visible (no leading '.') and not read as an option (no leading
    '-'), of sane length."""
    if not run_id:
        return "it is empty"
    if len(run_id) > MAX_RUN_ID:
        return f"it is {len(run_id)} characters long, more than {MAX_RUN_ID}"
    strange = [c for c in dict.fromkeys(run_id) if c not in RUN_ID_CHARACTERS]
    if strange:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in strange[:5])
        return f"it holds {shown}; a run id takes only ASCII letters, digits, '-', '_' and '.'"
    if run_id[0] in ".-":
        return f"it starts with {run_id[0]!r} (a hidden directory, or read as an option)"
    return None


def check_run_id(run_id: str) -> None:
    problem = run_id_problem(run_id)
    if problem:
        shown = run_id if len(run_id) <= 40 else run_id[:40] + "..."
        raise ConfigError(f"--run-id {shown!r} is not a portable directory name: {problem}")


@dataclass(frozen=True)
class RunConfig:
    """How a run executes and where it writes: everything that is not part of a cell's identity."""

    executor: str = option(
        "process", "Where the cells run (deprecated: local = process).", EXECUTION, choices=executor_choices
    )
    timeout: float | None = option(
        None, "Per-cell timeout in seconds (process or ray executor).", EXECUTION, **POSITIVE
    )
    retries: int = option(0, "Ray: retries of a cell whose worker or node was lost.", EXECUTION, minimum=0, maximum=100)
    ray_address: str | None = option(
        None, "Address of a running Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a new local one.", EXECUTION
    )
    ray_cpus: int | None = option(
        None, "CPUs of the local Ray cluster started when no address is given.", EXECUTION, **POSITIVE
    )
    baseline: str = option("mlp", "Model the report compares the others with.", OUTPUT)
    out: Path = option(Path("results"), "Directory that receives <run-id>/.", OUTPUT, in_file=False)
    run_id: str | None = option(
        None,
        "Name of the run directory (default: time stamp + profile). Re-using one resumes it.",
        OUTPUT,
        in_file=False,
        check=check_run_id,
    )
    force: bool = option(False, "Re-run cells that are already recorded.", OUTPUT, in_file=False)
    keep_failed: bool = option(
        False,
        "On resume, keep cells recorded as failed, oom, timeout, killed or diverged instead of re-running them "
        "(by default only ok cells are skipped).",
        OUTPUT,
        in_file=False,
    )
    dry_run: bool = option(False, "List the cells and exit.", OUTPUT, in_file=False)

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RunConfig:
        """The run settings among merged sweep-file and CLI ``settings``, the deprecated spellings resolved."""
        settings = current_spelling(settings)
        return cls(**{f.name: settings[f.name] for f in fields(cls) if settings.get(f.name) is not None})


def profile(name: str) -> dict[str, Any]:
    """The named profile's settings (a copy)."""
    check_one(declared_option(SweepConfig, "profile"), name)
    return dict(PROFILES[name])


def validate(cell: CellConfig) -> None:
    """Every declared field of the cell (its type, choices and range), then the rules between fields."""
    for group in (cell.workload, cell.train, cell.measure, cell):
        check_fields(group)
    w = cell.workload
    if w.slate_length > w.candidates:
        raise ConfigError(f"slate length {w.slate_length} is longer than the candidate list ({w.candidates})")
    if w.slate_min is not None and w.slate_min > w.slate_length:
        raise ConfigError(f"slate-min must be between 1 and the slate length ({w.slate_length}), got {w.slate_min}")
    if w.data == "letor" and not w.data_path:
        raise ConfigError("--data letor needs --data-path (a LETOR directory, or TRAIN,VALID,TEST files)")
    check_applies(w)
    _check_world(w)
    if cell.precision == "tf32" and cell.device != "cuda":
        raise ConfigError("precision tf32 needs a CUDA device (TF32 is a tensor-core format)")
    if cell.eval_split not in EVAL_SPLITS:
        raise ConfigError(f"unknown evaluation split {cell.eval_split!r} (known: {', '.join(EVAL_SPLITS)})")


def _check_world(w: WorkloadConfig) -> None:
    """A world's parameters shape the interaction worlds only (else two keys would name the same data), and a
    topic is one of the item's own features."""
    if w.world == NEUTRAL_FIELDS[("workload", "world")]:
        parameters = [o for o in declared(WorkloadConfig) if o.name in LATE_DATA_FIELDS and o.name != "world"]
        changed = [o.label for o in parameters if getattr(w, o.name) != o.default]
        if changed:
            raise ConfigError(f"{changed[0]} applies to the interaction worlds only (--world), not to {w.world}")
    elif w.world_topics > w.item_dim - 1:
        raise ConfigError(
            f"world-topics ({w.world_topics}) must be at most item-dim - 1 ({w.item_dim - 1}): a topic is read "
            "off one of the item's own features (the last is the sum of the others)"
        )


def with_overrides(base: CellConfig, **overrides: Any) -> CellConfig:
    """Apply flat overrides (``batch_size=...``, ``epochs=...``) to the right sub-config."""
    groups = {"workload": base.workload, "train": base.train, "measure": base.measure}
    top: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        for group_name, group in groups.items():
            if name in {f.name for f in fields(group)}:
                groups[group_name] = replace(group, **{name: value})
                break
        else:
            top[name] = value
    return replace(base, **groups, **top)
