"""Re-ranker architectures and their registry. Knows nothing about benchmarking."""

from rerankers import founding as _founding  # noqa: F401  (registers the built-in models)
from rerankers.batch import SlateBatch, mask_padding, user_item_features
from rerankers.registry import (
    ENTRY_POINT_GROUP,
    ModelSpec,
    UnknownModelError,
    build_model,
    get_spec,
    list_models,
    model_names,
    register,
    unregister,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelSpec",
    "SlateBatch",
    "UnknownModelError",
    "build_model",
    "get_spec",
    "list_models",
    "mask_padding",
    "model_names",
    "register",
    "unregister",
    "user_item_features",
]
