"""Typed, validated configuration of one benchmark cell, and the named profiles."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from bench.errors import ConfigError
from rerankers.registry import did_you_mean

PRECISIONS = ("fp32", "tf32", "bf16")
DATA_DEVICE = "cpu"  # where synthetic data is drawn, whatever the cell's device
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("inline", "process", "ray")

# Help panels of `bench run`, in the order they are shown.
WORKLOAD = "Workload"
MODELS = "Models and training"
MEASUREMENT = "Measurement"
EXECUTION = "Execution"
OUTPUT = "Output"


def option(default: Any = None, help: str = "", panel: str = WORKLOAD, **declaration: Any) -> Any:
    """A dataclass field that is also a `bench run` option and a sweep-file key (bench/options.py).

    ``declaration`` takes ``axis`` (rank in the sweep's product order: a comma list of values is a sweep axis),
    ``flags`` (CLI spellings; default ``--the-name``), ``in_file`` (False: command line only),
    ``allow_inf`` (a float that may be inf), ``minimum``/``maximum`` (the range of every value, checked with its
    type before anything runs) and ``factory`` (a default factory instead of ``default``).
    """
    factory = declaration.pop("factory", None)
    metadata = {"option": {"help": help, "panel": panel, **declaration}}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


LIST_HELP = "Comma list: each value is a sweep axis point."
MAX_SEED = 2**63 - 1  # seeds feed torch and numpy generators, which take 64-bit values
MAX_WIDTH = 65536  # the widest model width an option may ask for (a 65536^2 weight is already 16 GiB)


@dataclass(frozen=True)
class WorkloadConfig:
    """The data: the founding synthetic world and its knobs, or LETOR files (docs/workloads.md)."""

    batch_size: int = option(4096, LIST_HELP, axis=20, flags=("--batch-size", "--batch-sizes"))
    batches: int = option(100, "Training batches per epoch.")
    candidates: int = option(
        10, "Items the re-ranker sees per user (S >= T); default: candidate-ratio x T. " + LIST_HELP, axis=80
    )
    slate_length: int = option(
        5, "Items displayed to the user (T). " + LIST_HELP, axis=30, flags=("--slate-length", "--slate-lengths")
    )
    user_dim: int = option(7, LIST_HELP, axis=40, flags=("--user-dim", "--user-dims"))
    item_dim: int = option(10, LIST_HELP, axis=50, flags=("--item-dim", "--item-dims"))
    valid_slates: int = option(4096, "Validation slates.")
    test_slates: int = option(16384, "Test slates.")
    # Workload knobs (docs/workloads.md); the defaults give the founding data bit for bit.
    slate_min: int | None = option(None, "Variable slate lengths: each slate shows slate-min..T items.")
    initial_noise: float | None = option(  # None stands for inf: the founding random order
        None,
        "Initial order by true utility + N(0, noise^2) (in list std units); 0 = perfect, inf = random.",
        allow_inf=True,
    )
    click_model: str = option("best", "best (founding) | position-biased | cascade | multi-click")
    eta: float = option(0.2, "position-biased clicks: examination probability 1/rank^eta.")
    labels: str = option("clicks", "clicks | graded (default: clicks; graded for --data letor).")
    # Worlds where the list matters (bench/worlds.py, docs/workloads.md); independent is the founding world.
    world: str = option(
        "independent",
        "independent (founding) | diversity | complements | decoy: how displayed items change each other's value. "
        + LIST_HELP,
        axis=5,
        flags=("--world", "--worlds"),
    )
    world_strength: float = option(
        1.0, "Interaction worlds: size of one item's effect on another, in standard deviations of utility.", minimum=0
    )
    world_topics: int = option(
        4, "Interaction worlds: topics K, an item's topic being the argmax of its first K features.", minimum=2
    )
    world_window: int = option(
        2, "Interaction worlds: how many positions away an item acts on another.", minimum=1, maximum=1000
    )
    # Real data instead of the synthetic world.
    data: str = option("synthetic", "synthetic (default) | letor")
    data_path: str | None = option(None, "LETOR: a directory with train/vali/test.txt, or TRAIN,VALID,TEST.")
    initial_ranker: str = option("linear", "LETOR: linear (fitted on train) | feature:<id>")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = option(10, "Training epochs.", MODELS)
    lr: float = option(1e-3, "Adam learning rate. " + LIST_HELP, MODELS, axis=12, flags=("--lr", "--lrs"))
    amsgrad: bool = option(
        True, "Adam with the AMSGrad variant (the founding optimiser).", MODELS, flags=("--amsgrad/--no-amsgrad",)
    )
    loss: str = option(
        "kl",
        "Training losses: kl (founding) | listnet | listmle | ranknet | lambdaloss | approxndcg | neuralndcg | bce. "
        + LIST_HELP,
        MODELS,
        axis=10,
        flags=("--loss", "--losses"),
    )
    warmup_steps: int = option(5, "First steps of epoch 0, excluded from the training throughput.", MEASUREMENT)
    select: str = option(
        "last",
        "Which weights are evaluated: last (the final epoch's) | best (the epoch with the best validation "
        "slate_acc, its weights restored). The test split never takes part in the choice.",
        MODELS,
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
    seed: int = option(0, "First seed of data, hidden value model and model init [0].", minimum=0, maximum=MAX_SEED)
    device: str = option("cpu", "auto | cpu | cuda  [default: auto]", MEASUREMENT)
    threads: int = option(0, "CPU threads for torch (0: torch's default).", MEASUREMENT, minimum=0, maximum=4096)
    precision: str = option("fp32", "fp32 | tf32 (CUDA) | bf16 (autocast)  [fp32]", MEASUREMENT)
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
        "torch",
        "Dropout every model trains with on CPU: torch (stock PyTorch) | bulk (rerankers/dropout.py)  [torch]",
        MEASUREMENT,
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellConfig:
        nested = {"workload": WorkloadConfig, "train": TrainConfig, "measure": MeasureConfig}
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name, kind in nested.items():
            if name in values:
                sub = {f.name for f in fields(kind)}
                values[name] = kind(**{k: v for k, v in values[name].items() if k in sub})
        return cls(**values)

    def key(self) -> str:
        """Stable identity of the cell: a hash of its full config.

        Fields added after the first release are left out while they hold the value that
        reproduces the earlier behaviour, so earlier records keep their keys (resume, compare).
        """
        config = self.to_dict()
        for path, neutral in NEUTRAL_FIELDS.items():
            *parents, name = path
            holder = config
            for parent in parents:
                holder = holder[parent]
            if holder.get(name) == neutral:
                del holder[name]
        canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

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


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep enumerates beyond the cell fields: models, seeds, candidate ratio, model options."""

    models: str = option("all", "'all', a comma list of names, or glob patterns (prm*).", MODELS, axis=0)
    profile: str = option("default", "seed | default | smoke", WORKLOAD, flags=("--profile",))
    seeds: int = option(1, "Number of seeds (seed, seed+1, ...) [1].", maximum=100_000)
    candidate_ratio: float | None = option(None, "S / T when --candidates is not given [profile's].", minimum=1)
    d_model: int | None = option(None, "Model width, for every model that has one.", MODELS, maximum=MAX_WIDTH)
    model_arg: list[str] = option(
        help="KEY=VALUE model option (repeatable), e.g. num_layers=4.", panel=MODELS, factory=list
    )
    sweep: Path | None = option(None, "TOML file describing the sweep; flags override it.", OUTPUT, in_file=False)


@dataclass(frozen=True)
class RunConfig:
    """How a run executes and where it writes: everything that is not part of a cell's identity."""

    executor: str = option(
        "process",
        "inline: in this process (debugging) | process: each cell in a fresh process | ray  [process]. "
        "Deprecated alias: local (= process).",
        EXECUTION,
    )
    timeout: float | None = option(
        None, "Per-cell timeout in seconds (process or ray executor).", EXECUTION, minimum=0, exclusive_minimum=True
    )
    retries: int = option(
        0, "Ray: retries of a cell whose worker or node was lost [0].", EXECUTION, minimum=0, maximum=100
    )
    ray_address: str | None = option(
        None, "Address of a running Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a new local one.", EXECUTION
    )
    ray_cpus: int | None = option(None, "CPUs of the local Ray cluster started when no address is given.", EXECUTION)
    baseline: str = option("mlp", "Model the report compares the others with [mlp].", OUTPUT)
    out: Path = option(Path("results"), "Directory that receives <run-id>/.", OUTPUT, in_file=False)
    run_id: str | None = option(
        None,
        "Name of the run directory (default: time stamp + profile). Re-using one resumes it.",
        OUTPUT,
        in_file=False,
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
        _choice("executor", self.executor, EXECUTORS)
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ConfigError(f"timeout must be positive, got {self.timeout:g}")
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries}")
        if self.ray_cpus is not None and self.ray_cpus <= 0:
            raise ConfigError(f"ray-cpus must be positive, got {self.ray_cpus}")
        if self.timeout is not None and self.executor == "inline":
            raise ConfigError("--timeout needs the process or ray executor (an inline cell cannot be stopped)")
        if self.run_id is not None:
            check_run_id(self.run_id)

    @classmethod
    def from_settings(cls, settings: dict[str, Any]) -> RunConfig:
        """The run settings among merged sweep-file and CLI ``settings``, with the deprecated aliases resolved.

        ``--isolation process|none`` and ``--executor local`` still work: none means inline, local and
        process mean process.
        """
        values = {f.name: settings[f.name] for f in fields(cls) if settings.get(f.name) is not None}
        isolation = settings.get("isolation")
        if isolation is not None:
            _choice("isolation", isolation, ISOLATIONS)
        executor = values.get("executor", "local")
        if executor == "local":
            values["executor"] = "inline" if isolation == "none" else "process"
        return cls(**values)


ISOLATIONS = ("process", "none")  # the deprecated --isolation switch


def check_run_id(run_id: str) -> None:
    """A run id names one directory inside --out: no separators, no '.'/'..', nothing hidden or empty."""
    if (
        not run_id.strip()
        or run_id in (".", "..")
        or "/" in run_id
        or "\\" in run_id
        or "\0" in run_id
        or run_id.startswith(".")
        or len(run_id.encode()) > 200
    ):
        raise ConfigError(
            f"--run-id must be a plain directory name inside --out (no '/', '..' or leading '.'), got {run_id!r}"
        )


# (path in to_dict(), value that means "as before the field existed")
NEUTRAL_FIELDS: dict[tuple[str, ...], Any] = {
    ("compile",): False,
    ("eval_split",): "test",
    ("train", "select"): "last",
    ("cpu_dropout",): "torch",
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
    # Exactly the blog's configuration; meant for a GPU.
    "seed": {
        "workload": WorkloadConfig(),
        "train": TrainConfig(epochs=10),
        # Every model taking an option gets the profile's value (the blog's transformer sizes).
        "model_kwargs": {"d_model": 512, "dim_feedforward": 512},
    },
    # Sized for `bench run --models all` on a 2-core CPU: 9 min on the reference VM (README), every model
    # trained 6 x 100 batches of 512.
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


def profile(name: str) -> dict[str, Any]:
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r} (known: {', '.join(PROFILES)})")
    return dict(PROFILES[name])


def validate(cell: CellConfig) -> None:
    w, t = cell.workload, cell.train
    for group in (w, t):
        for f in fields(group):
            value = getattr(group, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                name = f.name.replace("_", "-")
                if isinstance(value, float) and not math.isfinite(value) and f.name != "initial_noise":
                    raise ConfigError(f"{name} must be a finite number, got {value}")
                if isinstance(value, int) and abs(value) > MAX_SEED:
                    raise ConfigError(f"{name} is out of range, got {value}")
                if f.name in ("warmup_steps", "eta", "initial_noise", "world_strength"):
                    if value < 0:
                        raise ConfigError(f"{name} must be >= 0, got {value}")
                elif f.name == "slate_min":
                    pass  # checked with the slate length below
                elif value <= 0:
                    raise ConfigError(f"{name} must be positive, got {value}")
    if w.slate_length > w.candidates:
        raise ConfigError(f"slate length {w.slate_length} is longer than the candidate list ({w.candidates})")
    if w.item_dim < 2:
        raise ConfigError("item-dim must be at least 2 (the last feature is the sum of the others)")
    _validate_workload_knobs(w)
    from bench.losses import get_loss

    get_loss(t.loss)  # an unknown name raises with the known ones and a suggestion
    if cell.precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {cell.precision!r} (known: {', '.join(PRECISIONS)})")
    if cell.precision == "tf32" and cell.device != "cuda":
        raise ConfigError("precision tf32 needs a CUDA device (TF32 is a tensor-core format)")
    _choice("selection rule", t.select, SELECTIONS)
    _choice("evaluation split", cell.eval_split, EVAL_SPLITS)
    from rerankers.dropout import CPU_DROPOUTS  # torch, which the CLI loads only once the input is checked

    _choice("cpu dropout", cell.cpu_dropout, CPU_DROPOUTS)
    if cell.threads < 0:
        raise ConfigError(f"threads must be >= 0, got {cell.threads}")
    if not 0 <= cell.seed <= MAX_SEED:
        raise ConfigError(f"seed must be between 0 and {MAX_SEED}, got {cell.seed}")
    for name, value in cell.model_kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"model option {name} must be a finite number, got {value}")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"model option {name} must be positive, got {value}")
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_WIDTH:
            raise ConfigError(f"model option {name} is too large ({value} > {MAX_WIDTH})")
    _check_data_fits(cell)


def physical_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _check_data_fits(cell: CellConfig) -> None:
    """Refuse a synthetic workload whose data alone would not fit in this machine's memory."""
    w = cell.workload
    memory = physical_memory_bytes()
    if w.data != "synthetic" or memory is None:
        return
    lists = w.batch_size * w.batches + w.valid_slates + w.test_slates
    per_list = w.candidates * (w.item_dim + 3) + w.user_dim + 3 * w.slate_length  # items, utility, mask, slate
    need = 4 * lists * per_list
    if need > memory:
        raise ConfigError(
            f"the workload's data alone needs about {need / 2**30:,.1f} GiB, more than this machine's "
            f"{memory / 2**30:,.1f} GiB (batch-size x batches, test/valid slates, candidates x item-dim)"
        )


SELECTIONS = ("last", "best")
EVAL_SPLITS = ("test", "valid")
CLICK_MODELS = ("best", "position-biased", "cascade", "multi-click")
LABEL_KINDS = ("clicks", "graded")
DATA_SOURCES = ("synthetic", "letor")
WORLDS = ("independent", "diversity", "complements", "decoy")  # bench/worlds.py defines each


def _choice(what: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        raise ConfigError(f"unknown {what} {value!r}{did_you_mean(value, known)} (known: {', '.join(known)})")


def _validate_workload_knobs(w: WorkloadConfig) -> None:
    _choice("click model", w.click_model, CLICK_MODELS)
    _choice("labels", w.labels, LABEL_KINDS)
    _choice("data source", w.data, DATA_SOURCES)
    _validate_world(w)
    if w.slate_min is not None and not 1 <= w.slate_min <= w.slate_length:
        raise ConfigError(f"slate-min must be between 1 and the slate length ({w.slate_length}), got {w.slate_min}")
    if w.initial_noise is not None and not math.isfinite(w.initial_noise):
        raise ConfigError("initial-noise must be finite, or None for inf (the random founding order)")
    if w.data == "letor":
        if not w.data_path:
            raise ConfigError("--data letor needs --data-path (a LETOR directory, or TRAIN,VALID,TEST files)")
        synthetic_only = {"slate_min": None, "initial_noise": None, "user_dim": 7, "item_dim": 10}
        for name, default in synthetic_only.items():
            if getattr(w, name) != default:
                raise ConfigError(f"{name.replace('_', '-')} applies to synthetic data only, not to --data letor")
        ranker = w.initial_ranker
        if ranker != "linear" and not (ranker.startswith("feature:") and ranker[8:].isdigit()):
            raise ConfigError(f"initial-ranker must be 'linear' or 'feature:<id>' (e.g. feature:1), got {ranker!r}")
    else:
        if w.data_path is not None:
            raise ConfigError("data-path applies to --data letor only")
        if w.initial_ranker != "linear":
            raise ConfigError("initial-ranker applies to --data letor only (synthetic data: --initial-noise)")


def _validate_world(w: WorkloadConfig) -> None:
    """A world's parameters apply to the worlds that use them: otherwise two keys would name the same data."""
    _choice("world", w.world, WORLDS)
    defaults = {f.name: f.default for f in fields(WorkloadConfig) if f.name.startswith("world_")}
    changed = [name for name, default in defaults.items() if getattr(w, name) != default]
    if w.world == "independent" and changed:
        raise ConfigError(f"{changed[0].replace('_', '-')} applies to the interaction worlds only (--world)")
    if w.world != "independent" and w.data != "synthetic":
        raise ConfigError("--world applies to synthetic data only")
    if w.world != "independent" and w.world_topics > w.item_dim - 1:
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
