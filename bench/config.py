"""Typed, validated configuration of one benchmark cell, and the named profiles."""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

PRECISIONS = ("fp32", "tf32", "bf16")
DATA_DEVICE = "cpu"  # where synthetic data is drawn, whatever the cell's device
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """Bad user input; the CLI prints it as one line and exits 2."""


@dataclass(frozen=True)
class WorkloadConfig:
    """The data: the founding synthetic world and its knobs, or LETOR files (docs/workloads.md)."""

    batch_size: int = 4096
    batches: int = 100  # training batches per epoch
    candidates: int = 10  # S: items the re-ranker sees for each user
    slate_length: int = 5  # T: items displayed to the user, drawn from the candidates
    user_dim: int = 7
    item_dim: int = 10
    valid_slates: int = 4096
    test_slates: int = 16384
    # Workload knobs (docs/workloads.md); the defaults give the founding data bit for bit.
    slate_min: int | None = None  # shortest displayed slate (uniform in slate_min..slate_length); None: all full
    initial_noise: float | None = None  # initial order by standardised utility + N(0, noise^2); None (inf): random
    click_model: str = "best"  # best | position-biased | cascade | multi-click
    eta: float = 0.2  # position-biased clicks: examination probability 1 / rank^eta
    labels: str = "clicks"  # what the model trains and is evaluated on: clicks | graded
    # Real data instead of the synthetic world.
    data: str = "synthetic"  # synthetic | letor
    data_path: str | None = None  # letor: a directory with train/vali/test files, or TRAIN,VALID,TEST
    initial_ranker: str = "linear"  # letor: linear (fitted on the train split) | feature:<id>


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    amsgrad: bool = True
    loss: str = "kl"
    warmup_steps: int = 5  # first steps of epoch 0, excluded from throughput


@dataclass(frozen=True)
class MeasureConfig:
    latency_requests: int = 200  # batch-1 forward calls timed for the latency percentiles
    throughput_blocks: int = 7  # timed blocks of inference at the cell's batch size
    min_block_seconds: float = 0.05


@dataclass(frozen=True)
class CellConfig:
    """One unit of work: one model on one workload with one seed on one device."""

    model: str
    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # 0: leave torch's default
    precision: str = "fp32"
    compile: bool = False
    cpu_dropout: str = "torch"  # torch | bulk: the dropout every model trains with on CPU (rerankers/dropout.py)

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
        canonical = json.dumps(
            {"workload": asdict(self.workload), "seed": self.seed, "device": DATA_DEVICE},
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# (path in to_dict(), value that means "as before the field existed")
NEUTRAL_FIELDS: dict[tuple[str, ...], Any] = {
    ("compile",): False,
    ("cpu_dropout",): "torch",
    ("workload", "slate_min"): None,
    ("workload", "initial_noise"): None,
    ("workload", "click_model"): "best",
    ("workload", "eta"): 0.2,
    ("workload", "labels"): "clicks",
    ("workload", "data"): "synthetic",
    ("workload", "data_path"): None,
    ("workload", "initial_ranker"): "linear",
}


PROFILES: dict[str, dict[str, Any]] = {
    # Exactly the blog's configuration; meant for a GPU.
    "seed": {
        "workload": WorkloadConfig(),
        "train": TrainConfig(epochs=10),
        "model_kwargs": {"d_model": 512},
    },
    # Finishes `bench run --models all` in under 3 minutes on a 2-core CPU.
    "default": {
        "workload": WorkloadConfig(batch_size=512, batches=100, valid_slates=4096, test_slates=8192),
        "train": TrainConfig(epochs=6),
        "model_kwargs": {"d_model": 64, "dim_feedforward": 256},
    },
    # Seconds; for tests.
    "smoke": {
        "workload": WorkloadConfig(batch_size=64, batches=6, valid_slates=128, test_slates=256),
        "train": TrainConfig(epochs=2, warmup_steps=2),
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
                if f.name in ("warmup_steps", "eta", "initial_noise"):
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
    from rerankers.dropout import CPU_DROPOUTS

    _choice("cpu dropout", cell.cpu_dropout, CPU_DROPOUTS)
    if cell.threads < 0:
        raise ConfigError(f"threads must be >= 0, got {cell.threads}")
    for name, value in cell.model_kwargs.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"model option {name} must be positive, got {value}")


CLICK_MODELS = ("best", "position-biased", "cascade", "multi-click")
LABEL_KINDS = ("clicks", "graded")
DATA_SOURCES = ("synthetic", "letor")


def _choice(what: str, value: str, known: tuple[str, ...]) -> None:
    if value not in known:
        close = difflib.get_close_matches(value, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown {what} {value!r}{hint} (known: {', '.join(known)})")


def _validate_workload_knobs(w: WorkloadConfig) -> None:
    _choice("click model", w.click_model, CLICK_MODELS)
    _choice("labels", w.labels, LABEL_KINDS)
    _choice("data source", w.data, DATA_SOURCES)
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
