"""Each option's choices and range are written once, in its declaration: the help suffix, the command-line and
sweep-file checks and validate's per-field checks all come from it, for every option; no list of an option's
choices is written anywhere else in bench/."""

import ast
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from bench.config import PROFILES, CellConfig, MeasureConfig, RunConfig, TrainConfig, WorkloadConfig, validate
from bench.declare import Option, check_one
from bench.errors import ConfigError
from bench.options import OPTIONS, check_settings, help_text, shown_default

ROOT = Path(__file__).resolve().parent.parent
GROUPS = {WorkloadConfig: "workload", TrainConfig: "train", MeasureConfig: "measure"}
CHOOSING = [o for o in OPTIONS.values() if o.choices is not None]
NUMERIC = [o for o in OPTIONS.values() if o.type in (int, float)]


def _outside(option: Option) -> list:
    """Values just outside the declared range."""
    step = 1 if option.type is int else 1e-3
    values = []
    if option.minimum is not None:
        values.append(option.minimum if option.exclusive_minimum else option.minimum - step)
    if option.maximum is not None:
        values.append(option.maximum + step)
    return [option.type(v) for v in values]


def _cell_with(option: Option, value) -> CellConfig:
    cell = CellConfig(model="mlp", **{k: v for k, v in PROFILES["smoke"].items() if k != "model_kwargs"})
    if option.owner is CellConfig:
        return replace(cell, **{option.name: value})
    group = GROUPS[option.owner]
    return replace(cell, **{group: replace(getattr(cell, group), **{option.name: value})})


def _message(option: Option, value) -> str:
    with pytest.raises(ConfigError) as raised:
        check_one(option, value)
    return str(raised.value)


def test_every_numeric_option_declares_its_range():
    assert NUMERIC
    for option in NUMERIC:
        assert option.minimum is not None or option.maximum is not None, option.name


@pytest.mark.parametrize("option", CHOOSING, ids=lambda o: o.name)
def test_choices_are_checked_everywhere_from_the_declaration(option):
    names = option.choice_names()
    assert names and len(names) == len(set(names))
    for name in names:
        check_one(option, name)
    message = _message(option, "no-such-choice")
    assert message.startswith(f"unknown {option.title} 'no-such-choice'") and f"(known: {', '.join(names)})" in message
    if option.in_file:  # a sweep file names the file, the command line does not
        with pytest.raises(ConfigError, match=re.escape(f"sweep file x.toml: {message}")):
            check_settings({option.name: "no-such-choice"}, "sweep file x.toml")
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_settings({option.name: "no-such-choice"})
    if option.owner in (*GROUPS, CellConfig):
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate(_cell_with(option, "no-such-choice"))
    if option.owner is RunConfig:
        with pytest.raises(ConfigError, match=re.escape(message)):
            RunConfig(**{option.name: "no-such-choice"})


@pytest.mark.parametrize("option", NUMERIC, ids=lambda o: o.name)
def test_ranges_are_checked_everywhere_from_the_declaration(option):
    for value in _outside(option):
        message = _message(option, value)
        assert message.startswith(f"{option.label} must be "), message
        if option.owner in (*GROUPS, CellConfig):
            with pytest.raises(ConfigError, match=re.escape(message)):
                validate(_cell_with(option, value))
        if option.owner is RunConfig:
            with pytest.raises(ConfigError, match=re.escape(message)):
                RunConfig(**{option.name: value})
        if option.axis is None and option.in_file:
            with pytest.raises(ConfigError, match=re.escape(message)):
                check_settings({option.name: value}, "sweep file x.toml")


@pytest.mark.parametrize("option", list(OPTIONS.values()), ids=lambda o: o.name)
def test_the_help_ends_with_the_generated_suffix_and_the_prose_repeats_no_choice_or_default(option):
    text = help_text(option)
    suffix = option.suffix(shown_default(option))
    assert text.endswith(suffix)
    if option.choices is not None:
        assert " | ".join(option.choice_names()[:2]) in re.sub(r" \([^)]*\)", "", suffix)
    assert " | " not in option.help, f"{option.name}: choices written in its help prose"
    assert not re.search(r"\[[^\]]*\]\.?$", option.help), f"{option.name}: a default written in its help prose"


def test_a_choice_in_help_is_the_value_a_plain_run_uses():
    assert help_text(OPTIONS["select"]).endswith("[best]")  # the default profile selects the best epoch
    assert help_text(OPTIONS["device"]).endswith("auto | cpu | cuda [auto]")
    assert help_text(OPTIONS["labels"]).endswith("[clicks; graded with --data letor]")
    assert "kl | lambdaloss" in help_text(OPTIONS["loss"])  # from the loss registry


def _string_collections(tree: ast.AST):
    """Every literal list of names with two or more of them, and those names: a tuple, list or set of strings, or
    a dict from strings to strings or to nested dicts (a table of choices, like ``CLICK_MODELS`` or ``PROFILES``).
    A dict from names to other data (a device's peak FLOP/s per precision) says something else per choice."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            items = node.elts
        elif isinstance(node, ast.Dict) and all(
            isinstance(v, ast.Dict) or isinstance(v, ast.Constant) and isinstance(v.value, str) for v in node.values
        ):
            items = [k for k in node.keys if k is not None]
        else:
            continue
        strings = {e.value for e in items if isinstance(e, ast.Constant) and isinstance(e.value, str)}
        if len(strings) >= 2:
            yield node, strings


def test_no_list_of_an_options_choices_is_written_outside_its_declaration():
    """A literal naming two or more of an option's choices is written once: the module-level table that declares
    them (every choice, e.g. ``CLICK_MODELS`` or ``PROFILES``); any other such literal repeats the declaration.
    Choices that come from a registry (losses, executors) have no table at all."""
    tables: dict[str, list[str]] = {o.name: [] for o in CHOOSING}
    repeated = []
    for path in sorted([*ROOT.glob("bench/**/*.py"), *ROOT.glob("rerankers/**/*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {id(node.value) for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))}
        for node, strings in _string_collections(tree):
            for option in CHOOSING:
                names = set(option.choice_names())
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if id(node) in top_level and strings == names:
                    tables[option.name].append(where)
                elif len(strings & names) >= 2:
                    repeated.append(f"{where} repeats choices of {option.name}")
    assert not repeated, repeated
    assert all(len(found) <= 1 for found in tables.values()), tables
    assert tables["click_model"] == ["bench/config.py:" + str(_line_of("CLICK_MODELS"))]


def _line_of(name: str) -> int:
    tree = ast.parse((ROOT / "bench" / "config.py").read_text(encoding="utf-8"))
    return next(n.value.lineno for n in tree.body if isinstance(n, ast.Assign) and n.targets[0].id == name)


def test_an_inf_option_is_stored_as_none_in_a_cell():
    noise = OPTIONS["initial_noise"]
    check_one(noise, math.inf)  # a setting may say inf
    with pytest.raises(ConfigError, match="initial-noise must be finite in a cell"):
        validate(_cell_with(noise, math.inf))
