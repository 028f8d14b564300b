"""The plugin API, proven: pip-install the example package and find its model in `bench list` and `bench run`."""

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
def plugin_path(tmp_path_factory) -> Path:
    """The example plugin pip-installed into a throw-away directory that only these tests put on the path.

    It is built with this environment's own setuptools (declared in the `test` extra) and installed with `--target`,
    so the test needs no network and depends on nothing but what the project itself installs; the interpreter is
    the running one, which has torch and the project, whether it is a virtual environment or the system's.
    """
    root = tmp_path_factory.mktemp("plugin")
    source = shutil.copytree(PLUGIN, root / "source")  # building writes next to the sources: not in the repo
    target = root / "site"
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--target", target, source]
    )
    return target


def _env(*paths: Path) -> dict:
    # The subprocesses must import this checkout's bench and rerankers, whatever is installed; entry points are
    # found on every sys.path entry, so the plugin's directory on PYTHONPATH is what "installed" means here.
    entries = [str(p) for p in paths] + [str(REPO), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, entries))}


def test_installed_plugin_appears_in_bench_list(plugin_path):
    done = _run([sys.executable, "-m", "bench.cli", "list", "--profile", "smoke"], env=_env(plugin_path), cwd=REPO)
    rows = {line.split()[0]: line for line in done.stdout.splitlines() if line.strip()}
    assert "example-linear" in rows, done.stdout
    assert "Example plugin" in rows["example-linear"] and "d_model=16" in rows["example-linear"]


def test_installed_plugin_runs_in_bench_run(plugin_path, tmp_path):
    command = [sys.executable, "-m", "bench.cli", "run", "--profile", "smoke", "--models", "example-linear,mlp"]
    _run(command + ["--out", tmp_path, "--run-id", "plugin"], env=_env(plugin_path), cwd=tmp_path)
    lines = (tmp_path / "plugin" / "records.jsonl").read_text().splitlines()
    records = {r["model"]: r for r in map(json.loads, lines)}
    assert set(records) == {"example-linear", "mlp"}
    assert all(r["status"] == "ok" for r in records.values()), records
    assert records["example-linear"]["measurements"]["parameters"] > 0
    assert "| example-linear" in (tmp_path / "plugin" / "report.md").read_text()


def test_plugin_is_not_visible_without_installing_it():
    done = _run([sys.executable, "-m", "bench.cli", "list", "--profile", "smoke"], env=_env(), cwd=REPO)
    assert "example-linear" not in done.stdout
