import pytest
import torch

from bench.config import PROFILES, CellConfig


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture
def smoke_cell():
    def make(model: str = "transformer", **changes) -> CellConfig:
        settings = dict(PROFILES["smoke"])
        return CellConfig(model=model, **{**settings, **changes})

    return make
