"""The plugin API, proven: pip-install the example package and find its model in `bench list` and `bench run`."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "plugin"


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert done.returncode == 0, f"{command}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory) -> Path:
    """A throw-away virtualenv that sees this environment's packages, with the example plugin installed."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("installing the example plugin offline needs setuptools in the test environment")
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, root / "source")  # building writes next to the sources: not in the repo
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    python = venv / "bin" / "python"
    # This environment's pip installs into the virtualenv: no network, no build isolation.
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps"]
        + ["--no-build-isolation", "--no-index", source]
    )
    return python


def _env() -> dict:
    # The subprocesses must import this checkout's bench and rerankers, whatever is installed.
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def test_installed_plugin_appears_in_bench_list(plugin_python):
    done = _run([plugin_python, "-m", "bench.cli", "list", "--profile", "smoke"], env=_env(), cwd=REPO)
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "example-linear" in rows, done.stdout
    assert "Example plugin" in rows["example-linear"] and "d_model=16" in rows["example-linear"]


def test_installed_plugin_runs_in_bench_run(plugin_python, tmp_path):
    command = [plugin_python, "-m", "bench.cli", "run", "--profile", "smoke", "--models", "example-linear,mlp"]
    _run(command + ["--out", tmp_path, "--run-id", "plugin"], env=_env(), cwd=tmp_path)
    lines = (tmp_path / "plugin" / "records.jsonl").read_text().splitlines()
    records = {r["model"]: r for r in map(json.loads, lines)}
    assert set(records) == {"example-linear", "mlp"}
    assert all(r["status"] == "ok" for r in records.values()), records
    assert records["example-linear"]["measurements"]["parameters"] > 0
    assert "| example-linear" in (tmp_path / "plugin" / "report.md").read_text()


def test_plugin_is_not_visible_without_installing_it():
    done = _run([sys.executable, "-m", "bench.cli", "list", "--profile", "smoke"], env=_env(), cwd=REPO)
    assert "example-linear" not in done.stdout
