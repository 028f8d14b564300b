import os
import sys
from contextlib import contextmanager
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


TESTS = Path(__file__).resolve().parent


def unload_plugin(module: str) -> None:
    """Unregister the models the test plugin ``module`` registered here, and forget the module."""
    from rerankers import registry

    for name, spec in list(registry._REGISTRY.items()):
        if spec.factory.__module__ == module:
            registry.unregister(name)
    sys.modules.pop(module, None)


@contextmanager
def plugin(monkeypatch, module: str):
    """The test plugin ``module`` (tests/<module>.py), known here and in cell processes, while the block runs."""
    from rerankers import registry

    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv(registry.PLUGINS_ENV, module)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield
    unload_plugin(module)


@pytest.fixture
def slowable_plugin(monkeypatch):
    """The test plugin model test-slowable (tests/speed_models.py)."""
    with plugin(monkeypatch, "speed_models"):
        yield


@pytest.fixture
def faulty_plugin(monkeypatch):
    """The models of tests/faulty_models.py, which fail on purpose or end their cell from outside."""
    with plugin(monkeypatch, "faulty_models"):
        yield
