"""One executor registry: a name, what it is, the class that runs it (imported when a run builds it) and that
class's own check of the run; planning imports no executor."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.cli import app
from bench.config import PROFILES, CellConfig, ConfigError, RunConfig
from bench.executor import InlineExecutor, ProcessExecutor
from bench.executor_registry import current_spelling, executor_choices, executor_class
from bench.ray_executor import RayExecutor
from bench.runner import make_executor

REPO = Path(__file__).resolve().parents[1]


def test_the_registry_names_each_executor_and_its_class():
    assert list(executor_choices()) == ["inline", "process", "ray"]
    assert executor_class("inline") is InlineExecutor and executor_class("ray") is RayExecutor
    with pytest.raises(ConfigError, match="unknown executor 'procss'; did you mean 'process'"):
        executor_class("procss")


def test_make_executor_runs_the_class_check_before_building_it():
    with pytest.raises(ConfigError, match="--timeout needs the process or ray executor"):
        make_executor(RunConfig(executor="inline", timeout=5))
    built = make_executor(RunConfig(executor="process", timeout=5))
    assert isinstance(built, ProcessExecutor) and built.timeout == 5


def test_each_executor_says_how_many_cells_run_at_once():
    cell = CellConfig(model="mlp", threads=1, **{k: v for k, v in PROFILES["smoke"].items() if k != "model_kwargs"})
    cells = [replace(cell, seed=seed) for seed in range(6)]
    assert InlineExecutor().concurrent_cells(cells) == 1 and ProcessExecutor().concurrent_cells(cells) == 1
    assert RayExecutor(num_cpus=4).concurrent_cells(cells) == 4
    assert RayExecutor(num_cpus=4).concurrent_cells([replace(c, threads=2) for c in cells]) == 2
    assert RayExecutor(address="10.0.0.5:6379").concurrent_cells(cells) is None  # a remote cluster's nodes


def test_planning_imports_no_executor():
    code = (
        "import sys\n"
        "from bench.sweep import plan\n"
        "run, cells = plan({'models': 'mlp', 'profile': 'smoke', 'device': 'cpu', 'executor': 'ray'})\n"
        "assert run.executor == 'ray' and len(cells) == 1\n"
        "loaded = [m for m in ('bench.executor', 'bench.ray_executor', 'bench.runner', 'ray') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    "given, executor",
    [
        ({"executor": "local"}, "process"),
        ({"isolation": "none"}, "inline"),
        ({"isolation": "process", "executor": "local"}, "process"),
        ({"isolation": "none", "executor": "ray"}, "ray"),
        ({}, None),
    ],
)
def test_the_deprecated_spellings_are_resolved_in_the_registry(given, executor):
    resolved = current_spelling(given)
    assert "isolation" not in resolved and resolved.get("executor") == executor


@pytest.mark.parametrize("args", [["--isolation", "none"], ["--executor", "local"]])
def test_the_deprecated_flags_still_work(tmp_path, args):
    result = CliRunner().invoke(
        app, ["run", "--models", "mlp", "--profile", "smoke", "--dry-run", *args, "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output


def test_the_process_server_preloads_what_a_cells_flop_count_would_import():
    """A cell process is forked from a server that imported PRELOAD: its FLOP count (every trainable cell makes
    one) then imports nothing more, where it would otherwise import torch._dynamo and sympy (~1.7 s per cell)."""
    from bench.executor import PRELOAD

    script = f"""
import importlib, sys
for name in {PRELOAD!r}:
    importlib.import_module(name)
import torch
from bench.flops import count_flops
from rerankers import SlateBatch
before = set(sys.modules)
model = torch.nn.Linear(3, 1)
batch = SlateBatch(torch.zeros(2, 1), torch.randn(2, 4, 3), torch.ones(2, 4, dtype=torch.bool), torch.zeros(2, 4))
model.forward = lambda b, f=model.forward: f(b.items).squeeze(-1)
count_flops(model, batch)
print(sorted(set(sys.modules) - before))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
