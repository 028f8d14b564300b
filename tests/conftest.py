import os

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
