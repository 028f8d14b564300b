"""Host synchronisations inside a model's steps, found on any device: a dispatch mode that notes every operation
that makes the host wait for the device (a tensor read as a Python value, an output whose shape depends on the
data, a copy between the host and the device). On a CPU the copies cost nothing and are not seen; the other two
are seen on a CPU exactly as a GPU would meet them, so a test on a CPU catches them."""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
# Operations whose result the host must wait for: a Python value, or an output shape that depends on the data.
SYNCING = {
    aten._local_scalar_dense.default: "a tensor read as a Python value (.item(), bool(), float(), if tensor)",
    # the same reads as inference mode dispatches them (composite operations are not decomposed there)
    aten.is_nonzero.default: "a tensor read as a Python value (bool(), if tensor)",
    aten.item.default: "a tensor read as a Python value (.item(), float())",
    aten.equal.default: "torch.equal (a Python bool)",
    aten.nonzero.default: "nonzero (an output shape that depends on the data)",
    aten.argwhere.default: "argwhere (an output shape that depends on the data)",
    aten.masked_select.default: "masked_select (an output shape that depends on the data)",
    aten._unique2.default: "unique (an output shape that depends on the data)",
    aten.unique_consecutive.default: "unique_consecutive (an output shape that depends on the data)",
    aten.unique_dim.default: "unique (an output shape that depends on the data)",
    aten.repeat_interleave.Tensor: "repeat_interleave by a tensor (an output shape that depends on the data)",
    aten._pack_padded_sequence.default: "pack_padded_sequence (lengths on the host)",
    aten._nested_tensor_from_mask.default: "a nested tensor from a mask (sizes on the host)",
    aten._nested_tensor_from_mask_left_aligned.default: "a mask's layout checked on the host (nested tensors)",
}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
COPIES = {aten._to_copy.default, aten.copy_.default, aten.to.device, aten.to.dtype_layout, aten.to.other}
_HERE = Path(__file__).resolve()
_TORCH = Path(torch.__file__).resolve().parent


def _devices(args: Any, kwargs: dict[str, Any]) -> set[str]:
    """The device types a copy involves: its tensors' and any device it is sent to."""
    found: set[str] = set()
    for arg in [*args, kwargs.get("device")]:
        if isinstance(arg, torch.Tensor):
            found.add(arg.device.type)
        elif isinstance(arg, (torch.device, str)):
            found.add(torch.device(arg).type)
    return found


def _caller() -> str:
    """The innermost frame of the code that called torch (a model's or the harness's line)."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename).resolve()
        if path != _HERE and _TORCH not in path.parents and "site-packages" not in path.parts:
            return f"{path.name}:{frame.lineno} ({frame.line})"
    return "?"


class HostSyncProbe(TorchDispatchMode):
    """``with HostSyncProbe() as probe: ...`` then ``probe.found``: each synchronising operation met, with the line
    that called it. The operations still run (the probe only watches)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        reason = SYNCING.get(func)
        if reason is None and func in INDEXING:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ()):
                reason = "boolean-mask indexing (an output shape that depends on the data)"
        if reason is None and func in COPIES:
            sides = _devices(args[:2], kwargs)
            if "cpu" in sides and len(sides) > 1:
                reason = "a copy between the host and the device"
        if reason is not None:
            self.found.append(f"{func}: {reason}, at {_caller()}")
        return func(*args, **kwargs)


def probe_cell(cell: Any, device: torch.device | str) -> list[str]:
    """The host synchronisations of one training step (forward, loss, backward, optimiser step) and one eval-mode
    forward pass of ``cell``'s model as the harness builds it (``bench.subject.build_runnable``: its CPU dropout,
    attention, precision and compile), after one untimed round of both (first-call caches, optimiser state)."""
    from bench.losses import get_loss
    from bench.subject import build_runnable
    from bench.train import make_optimizer, train_step
    from bench.workloads import load_workload

    device = torch.device(device)
    torch.manual_seed(cell.seed)
    workload = load_workload(cell.workload, cell.seed, device)
    built = build_runnable(cell, workload, device)
    batch = next(iter(workload.train.batches(cell.workload.batch_size)))
    loss_fn = get_loss(cell.train.loss)
    optimizer = make_optimizer(built.model, cell.train) if built.trainable else None

    def one_round() -> None:
        if optimizer is not None:
            built.runnable.train()
            train_step(built.runnable, batch, optimizer, loss_fn)
        built.runnable.eval()
        with torch.inference_mode():
            built.runnable(batch.inputs)

    one_round()
    with HostSyncProbe() as probe:
        one_round()
    return probe.found
