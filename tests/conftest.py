import os
import sys
from pathlib import Path

import pytest
import torch

from bench.config import PROFILES, CellConfig


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep the CPU peak-FLOPs cache out of the user's home (cell processes inherit it)."""
    from bench.flops import CACHE_ENV

    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture
def smoke_cell():
    def make(model: str = "transformer", **changes) -> CellConfig:
        settings = dict(PROFILES["smoke"])
        return CellConfig(model=model, **{**settings, **changes})

    return make


@pytest.fixture
def slowable_plugin(monkeypatch):
    """The test plugin model test-slowable (tests/speed_models.py), known here and in cell processes."""
    from rerankers import registry

    tests = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(registry.PLUGINS_ENV, "speed_models")
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    registry.unregister("test-slowable")
    sys.modules.pop("speed_models", None)
