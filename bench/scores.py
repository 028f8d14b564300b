"""The contract of a model's output, checked wherever the harness reads it: a real floating tensor [B, S] (one
score per candidate of each of the batch's B lists), finite on every real candidate (padding may hold -inf).

A model that breaks it ends its cell ``failed`` with a ``ScoresError`` naming the model, what it returned and where
(training, validation, evaluation, serving): a wrong shape could otherwise be read silently (a gather picks any S
of S + 1 columns), and NaN scores sort as some order, which would be recorded as a plausible accuracy.
"""

from __future__ import annotations

from typing import Any

import torch


class ScoresError(RuntimeError):
    """A model's scores break the contract where the harness read them; the cell names the model."""


def check_shape(scores: Any, mask: torch.Tensor, where: str) -> None:
    """A ``ScoresError`` unless ``scores`` is a real floating tensor of ``mask``'s shape [B, S]; metadata only, so
    it costs no synchronisation."""
    expected = tuple(mask.shape)
    if not isinstance(scores, torch.Tensor):
        raise ScoresError(f"returned {type(scores).__name__} at {where}, not a tensor of scores [B, S] = {expected}")
    if tuple(scores.shape) != expected or not scores.is_floating_point():
        raise ScoresError(
            f"returned scores of shape {tuple(scores.shape)} and dtype {str(scores.dtype).removeprefix('torch.')} "
            f"at {where}; expected a floating tensor of shape [B, S] = {expected}"
        )


def check_finite(scores: torch.Tensor, mask: torch.Tensor, where: str) -> None:
    """A ``ScoresError`` when a real candidate's score (``mask`` True) is NaN or infinite; one host read."""
    bad = mask & ~torch.isfinite(scores)
    count = int(bad.sum().item())
    if count:
        values = scores[bad]
        kinds = ", ".join(
            name for name, hit in (("NaN", values.isnan().any()), ("inf", values.isinf().any())) if bool(hit)
        )
        raise ScoresError(
            f"returned non-finite scores ({kinds}) at {where}: {count} of {int(mask.sum().item())} candidates"
        )


def checked(scores: Any, mask: torch.Tensor, where: str) -> torch.Tensor:
    """``scores`` after ``check_shape`` and ``check_finite``."""
    check_shape(scores, mask, where)
    check_finite(scores, mask, where)
    return scores


def check_values(values: dict[str, torch.Tensor], where: str) -> None:
    """A ``ScoresError`` when a per-slate value derived from the scores (the value of the model's order, its regret
    against the best order) is not finite."""
    for name, tensor in values.items():
        count = int((~torch.isfinite(tensor)).sum().item())
        if count:
            raise ScoresError(f"gave a non-finite {name} at {where}: {count} of {tensor.numel()} slates")
