"""Model registry: names -> re-ranker factories, with entry-point plugins.

Third-party packages register models by exposing, in the entry-point group
``rerank_bench.rerankers``, either a module (importing it runs its ``@register``
decorators) or a callable that takes no arguments and registers its models. Modules
listed in the environment variable ``RERANK_BENCH_PLUGINS`` are imported too, so
models under development need no packaging (cell worker processes inherit it).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib.metadata
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")

ENTRY_POINT_GROUP = "rerank_bench.rerankers"
PLUGINS_ENV = "RERANK_BENCH_PLUGINS"


def did_you_mean(name: str, known: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry(dict[str, T], Generic[T]):
    """Named entries of one kind (models, losses): a duplicate name raises, an unknown one raises ``error``
    with the closest known name. ``before_lookup`` runs before names are listed or looked up (plugins)."""

    def __init__(self, kind: str, error: type[Exception] = KeyError, before_lookup: Callable[[], None] | None = None):
        super().__init__()
        self.kind, self.error, self._before_lookup = kind, error, before_lookup

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self[name] = entry
        return entry

    def names(self) -> list[str]:
        if self._before_lookup:
            self._before_lookup()
        return sorted(self)

    def lookup(self, name: str) -> T:
        known = self.names()
        if name not in self:
            raise self.error(f"unknown {self.kind} {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})")
        return self[name]


class UnknownModelError(KeyError):
    """Raised for a model name or pattern that matches nothing registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    description: str
    # Claims the model tests hold it to; see tests/test_models.py.
    permutation_equivariant: bool = False
    trainable: bool = True
    # The factory takes ``utility_fn: Callable[[SlateBatch], Tensor]``, the true utility of a
    # batch's items, which only a caller that knows the data (a synthetic workload) can give.
    needs_utility: bool = False
    # Hyper-parameter search space over the factory's options, for whoever tunes the model: option ->
    # a list of choices, a (low, high) float range, or (low, high, "log") for a log-uniform one.
    search_space: dict[str, Any] = field(default_factory=dict)
    # False for a model with parameters per initial rank (a rank embedding): the candidates at
    # ranks that are never displayed, so never in the training loss, get scores no loss shaped.
    scores_undisplayed_meaningfully: bool = True

    def options(self) -> dict[str, Any]:
        """The factory's size and hyper-parameter options with their defaults."""
        params = inspect.signature(self.factory).parameters.values()
        internal = ("user_dim", "item_dim", "utility_fn") if self.needs_utility else ("user_dim", "item_dim")
        return {
            p.name: p.default
            for p in params
            if p.name not in internal and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


_REGISTRY: Registry[ModelSpec] = Registry("model", UnknownModelError, lambda: load_plugins())
_plugins_loaded = False


def register(
    name: str,
    *,
    description: str | None = None,
    permutation_equivariant: bool = False,
    trainable: bool = True,
    needs_utility: bool = False,
    search_space: dict[str, Any] | None = None,
    scores_undisplayed_meaningfully: bool = True,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Class or function decorator adding a model factory under ``name``.

    ``permutation_equivariant`` and ``trainable`` are claims the model tests hold the model
    to; ``needs_utility`` asks the caller for a ``utility_fn`` keyword; ``search_space`` says
    which options a hyper-parameter search may vary, and over what;
    ``scores_undisplayed_meaningfully=False`` says that the model's scores of candidates at
    initial ranks training never displays are not comparable with the others (see ``ModelSpec``).
    """

    def decorate(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        summary = description or next(iter((factory.__doc__ or "").strip().splitlines()), "")
        spec = ModelSpec(
            name,
            factory,
            summary,
            permutation_equivariant,
            trainable,
            needs_utility,
            dict(search_space or {}),
            scores_undisplayed_meaningfully,
        )
        _REGISTRY.add(name, spec)
        return factory

    return decorate


def unregister(name: str) -> None:
    """Remove a model (tests and interactive use)."""
    _REGISTRY.pop(name, None)


def load_plugins() -> None:
    """Import every entry point of the plugin group, and the modules named in
    ``RERANK_BENCH_PLUGINS`` (comma-separated; for models not packaged yet), once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry_point.load()
        if callable(loaded) and not isinstance(loaded, type):
            loaded()
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(module)


def model_names() -> list[str]:
    return _REGISTRY.names()


def get_spec(name: str) -> ModelSpec:
    return _REGISTRY.lookup(name)


def list_models(pattern: str = "all") -> list[str]:
    """Names matching ``pattern``: ``all``, a name, a glob, or a comma list of those."""
    names = model_names()
    selected: list[str] = []
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        if part == "all":
            matches = names
        elif part in names:  # an exact name first: names may hold glob characters, e.g. "prm[a=1]"
            matches = [part]
        elif any(ch in part for ch in "*?["):
            matches = fnmatch.filter(names, part)
            if not matches:
                raise UnknownModelError(f"pattern {part!r} matches no model (known: {', '.join(names)})")
        else:
            matches = [get_spec(part).name]
        selected.extend(m for m in matches if m not in selected)
    if not selected:
        raise UnknownModelError("no model selected")
    return selected


def build_model(name: str, *, user_dim: int, item_dim: int, **kwargs: Any) -> nn.Module:
    """Instantiate a registered model for the given feature sizes."""
    return get_spec(name).factory(user_dim=user_dim, item_dim=item_dim, **kwargs)
