"""Training loop: the founding loss and optimiser, no per-step host synchronisation."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from bench.config import TrainConfig
from bench.data import SlateData
from bench.losses import get_loss
from bench.metrics import judged, slate_hits
from bench.scores import check_finite, check_shape
from bench.subject import synchronize, timed_block

TIMING_BLOCKS = 20  # steady-state training is timed in about this many blocks
EpochCallback = Callable[[int, float, float], None]  # epoch (1-based), train loss, valid slate_acc


class Diverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainResult:
    train_loss: list[float] = field(default_factory=list)
    valid_slate_acc: list[float] = field(default_factory=list)
    selected_epoch: int = 0  # 1-based epoch whose weights the model holds after training
    stop_epoch: int = 0  # the last epoch trained (1-based): the configured epochs, unless patience ran out before
    optimizer: str = ""  # optimizer_path: which implementation of Adam ran
    steady_samples: int = 0
    steady_seconds: float = 0.0
    warmup_seconds: float = 0.0
    block_rates: list[float] = field(default_factory=list)  # samples/s of each timed block of steady steps
    epoch_blocks: list[int] = field(default_factory=list)  # how many of those blocks each epoch timed

    @property
    def samples_per_second(self) -> float:
        """Median samples/s over the timed blocks."""
        return statistics.median(self.block_rates) if self.block_rates else math.nan


def slate_scores(model: nn.Module, data: SlateData) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of every candidate [N, S] (their shape and dtype checked: bench/scores.py) and of the displayed items
    [N, T]."""
    scores = model(data.inputs)
    check_shape(scores, data.inputs.mask, "training")
    return scores, scores.gather(1, data.slate)


def _chunk_scores(model: nn.Module, chunk: SlateData, where: str) -> torch.Tensor:
    scores = model(chunk.inputs)
    check_shape(scores, chunk.inputs.mask, where)
    return scores


@torch.inference_mode()
def score_split(model: nn.Module, data: SlateData, batch_size: int, where: str = "evaluation") -> torch.Tensor:
    """[N, S] scores of a whole split, in eval mode, batch by batch; a ``ScoresError`` (bench/scores.py) when the
    model's output is not [B, S] floating scores, or not finite on a real candidate."""
    was_training = model.training
    model.eval()
    scores = torch.cat([_chunk_scores(model, chunk, where) for chunk in data.batches(batch_size)])
    model.train(was_training)
    check_finite(scores, data.inputs.mask, where)
    return scores


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The founding optimiser (Adam, amsgrad): its fused kernel, one pass over each parameter's state, where torch
    has one for the device (CUDA; CPU from torch 2.4), else its multi-tensor (foreach) path."""
    parameters = list(model.parameters())
    try:
        return torch.optim.Adam(parameters, lr=config.lr, amsgrad=config.amsgrad, fused=True)
    except RuntimeError:  # no fused kernel for this device in this torch
        return torch.optim.Adam(parameters, lr=config.lr, amsgrad=config.amsgrad, foreach=True)


def optimizer_path(optimizer: torch.optim.Optimizer) -> str:
    """Which of Adam's implementations ``optimizer`` runs: ``fused``, ``foreach`` or ``for-loop``."""
    defaults = optimizer.defaults
    return "fused" if defaults.get("fused") else "foreach" if defaults.get("foreach") else "for-loop"


def train_step(model: nn.Module, batch: SlateData, optimizer: torch.optim.Optimizer, loss_fn) -> torch.Tensor:
    """One optimisation step on the displayed slates' scores; returns the loss, still on the device."""
    _, scores = slate_scores(model, batch)
    loss = loss_fn(scores, batch.labels, batch.slate_mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def valid_slate_acc(model: nn.Module, data: SlateData, batch_size: int) -> float:
    """slate_acc over the judged slates (those with a relevant displayed item)."""
    scores = score_split(model, data, batch_size, "validation").gather(1, data.slate)
    hits = slate_hits(scores, data.labels, data.slate_mask)
    return hits[judged(data.labels, data.slate_mask)].float().mean().item()


@dataclass
class EpochSelection:
    """Which epoch's weights the model ends with (``select``), and whether patience has run out: ``patience``
    epochs in a row without a better validation slate_acc than the best so far (None: never)."""

    select: str
    epochs: int
    patience: int | None = None
    best_acc: float = -math.inf
    best_epoch: int = 0
    selected_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def after(self, epoch: int, valid_acc: float, model: nn.Module) -> bool:
        """Record 1-based ``epoch``'s validation; True when training should stop after it."""
        improved = valid_acc > self.best_acc  # a tie keeps the earlier epoch
        if improved:
            self.best_acc, self.best_epoch = valid_acc, epoch
        stop = self.patience is not None and epoch - self.best_epoch >= self.patience
        last = epoch == self.epochs or stop
        if self.select == "last":
            self.selected_epoch = epoch
        elif improved:
            self.selected_epoch = epoch
            # Only a copy that a later epoch may need: the final epoch's weights are in the model already.
            self.best_state = None if last else copy_state(model)
        return stop

    def restore(self, model: nn.Module) -> None:
        """The selected epoch's weights, where they are not the model's already."""
        if self.select == "best" and self.best_state is not None:
            model.load_state_dict(self.best_state)


def train(
    model: nn.Module,
    train_data: SlateData,
    valid_data: SlateData,
    config: TrainConfig,
    batch_size: int,
    on_epoch: EpochCallback | None = None,
    timing_blocks: int = TIMING_BLOCKS,
) -> TrainResult:
    """Train for ``config.epochs`` epochs (fewer when ``config.patience`` runs out), timing the steady-state steps
    in blocks.

    The first ``warmup_steps`` steps of epoch 0 are warm-up (timed apart). The remaining steps of each
    epoch are cut into blocks of about equal length, about ``timing_blocks`` blocks over the whole
    training, each timed with one synchronisation at its end; the per-epoch validation lies between
    blocks, outside every one of them. A smaller last batch trains last in its epoch but untimed (``split_remainder``).
    Timing changes nothing that is computed.
    """
    device = next(model.parameters()).device
    loss_fn = get_loss(config.loss)
    optimizer = make_optimizer(model, config)
    result = TrainResult(optimizer=optimizer_path(optimizer))
    batches = list(train_data.batches(batch_size))
    timed, remainder = split_remainder(batches)
    warmup = min(config.warmup_steps, len(timed) - 1)
    selection = EpochSelection(config.select, config.epochs, config.patience)
    steps_per_block = max(1, (config.epochs * len(timed) - warmup) // timing_blocks)
    model.train()
    for epoch in range(config.epochs):
        loss_sum = torch.zeros((), device=device)
        first = warmup if epoch == 0 else 0
        if first:
            start = time.perf_counter()
            for batch in batches[:first]:
                loss_sum += train_step(model, batch, optimizer, loss_fn)
            synchronize(device)
            result.warmup_seconds = time.perf_counter() - start
        steps = np.arange(first, len(timed))
        synchronize(device)
        blocks = np.array_split(steps, max(1, round(len(steps) / steps_per_block)))
        result.epoch_blocks.append(len(blocks))
        for block in blocks:
            _timed_block([timed[step] for step in block], model, optimizer, loss_fn, loss_sum, result)
        if remainder is not None:  # untimed: the next block's clock starts after a synchronisation
            loss_sum += train_step(model, remainder, optimizer, loss_fn)
        epoch_loss = (loss_sum / len(batches)).item()  # the one host read of the epoch
        if not math.isfinite(epoch_loss):
            raise Diverged(f"training loss became {epoch_loss} in epoch {epoch + 1}")
        valid_acc = valid_slate_acc(model, valid_data, batch_size)
        result.train_loss.append(epoch_loss)
        result.valid_slate_acc.append(valid_acc)
        stop = selection.after(epoch + 1, valid_acc, model)
        result.selected_epoch, result.stop_epoch = selection.selected_epoch, epoch + 1
        if on_epoch is not None:
            on_epoch(epoch + 1, epoch_loss, valid_acc)
        if stop:
            break
    selection.restore(model)
    return result


def split_remainder(batches: list[SlateData]) -> tuple[list[SlateData], SlateData | None]:
    """The batches of the full size, and a smaller last one (the split's remainder; None without one). The remainder
    trains untimed: its new shape would make a compiled model recompile inside a timed block."""
    if len(batches) > 1 and len(batches[-1]) < len(batches[0]):
        return batches[:-1], batches[-1]
    return batches, None


def _timed_block(
    batches: list[SlateData],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn,
    loss_sum: torch.Tensor,
    result: TrainResult,
) -> None:
    """Train on ``batches`` as one timed block (``subject.timed_block``: a synchronisation before and after it,
    none per step), adding each step's loss to ``loss_sum`` in place (on the device) and the block's time and
    rate to ``result``."""
    steps = iter(batches)
    seconds = timed_block(
        lambda: loss_sum.add_(train_step(model, next(steps), optimizer, loss_fn)), len(batches), loss_sum.device
    )
    samples = sum(len(batch) for batch in batches)
    result.steady_seconds += seconds
    result.steady_samples += samples
    result.block_rates.append(samples / seconds)


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
