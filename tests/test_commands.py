"""The command line: one module per command in bench/commands/, found by registration, so a new command is one
new module; cli.py stays a small shell; docs/architecture.md names only files that exist."""

import re
import sys
from pathlib import Path

from typer.testing import CliRunner

import bench.commands
from bench.cli import app
from bench.commands import _COMMANDS, commands

ROOT = Path(__file__).resolve().parent.parent


def test_every_command_is_found_in_help_order():
    names = ["run", "tune", "list", "report", "export", "compare", "ab"]
    assert [c.name for c in commands()] == names
    help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    positions = [help_text.index(f"│ {name} ") for name in names]
    assert positions == sorted(positions)


def test_a_new_command_is_one_new_module(tmp_path, monkeypatch):
    (tmp_path / "hello.py").write_text(
        "from bench.commands import command\n\n\n"
        "@command('hello', order=99)\n"
        "def hello() -> None:\n"
        "    '''Say hello.'''\n"
    )
    monkeypatch.setattr(bench.commands, "__path__", [*bench.commands.__path__, str(tmp_path)])
    try:
        found = commands()
        assert found[-1].name == "hello" and found[-1].callback.__doc__ == "Say hello."
    finally:
        _COMMANDS.pop("hello", None)
        sys.modules.pop("bench.commands.hello", None)


def test_cli_is_a_small_shell():
    assert len((ROOT / "bench" / "cli.py").read_text().splitlines()) < 150


def test_the_architecture_names_only_files_that_exist():
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:bench|rerankers|tests|docs|benchmarks)/[\w/.-]+)`", text))
    assert len(named) > 25  # the "where each concern lives" and "where do I change X" tables
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, missing
    assert "## Where do I change X" in text
