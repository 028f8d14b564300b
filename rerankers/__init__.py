"""Re-ranker architectures and their registry. Knows nothing about benchmarking."""

# Importing the model modules registers the built-in models.
from rerankers import baselines as _baselines  # noqa: F401
from rerankers import deepsets as _deepsets  # noqa: F401
from rerankers import dlcm as _dlcm  # noqa: F401
from rerankers import gsf as _gsf  # noqa: F401
from rerankers import prm as _prm  # noqa: F401
from rerankers import seq2slate as _seq2slate  # noqa: F401
from rerankers import setrank as _setrank  # noqa: F401
from rerankers import transformer as _transformer  # noqa: F401
from rerankers.batch import SlateBatch, mask_padding, masked_mean, reading_order, user_item_features
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
    "masked_mean",
    "model_names",
    "reading_order",
    "register",
    "unregister",
    "user_item_features",
]
