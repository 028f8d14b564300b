import importlib.metadata
import sys

import pytest
from torch import nn

import rerankers
from rerankers import registry


@pytest.fixture
def scratch_model():
    names = []

    def add(name, **kwargs):
        @rerankers.register(name, **kwargs)
        class Scratch(nn.Module):
            """A scratch model for registry tests."""

            def __init__(self, user_dim, item_dim, width=3):
                super().__init__()
                self.width = width

        names.append(name)
        return Scratch

    yield add
    for name in names:
        rerankers.unregister(name)


def test_builtin_models_are_registered():
    assert {"transformer", "mlp"} <= set(rerankers.model_names())


def test_register_and_build_passes_options(scratch_model):
    scratch_model("scratch-a")
    model = rerankers.build_model("scratch-a", user_dim=2, item_dim=3, width=7)
    assert model.width == 7
    spec = rerankers.get_spec("scratch-a")
    assert spec.description == "A scratch model for registry tests."
    assert spec.options() == {"width": 3}


def test_duplicate_name_raises(scratch_model):
    scratch_model("scratch-dup")
    with pytest.raises(ValueError, match="already registered"):
        scratch_model("scratch-dup")


def test_unknown_name_lists_known_and_suggests():
    with pytest.raises(rerankers.UnknownModelError) as info:
        rerankers.get_spec("transfomer")
    message = str(info.value)
    assert "did you mean 'transformer'" in message
    assert "mlp" in message and "transformer" in message


def test_selection_all_globs_and_lists(scratch_model):
    scratch_model("scratch-x")
    scratch_model("scratch-y")
    assert rerankers.list_models("scratch-*") == ["scratch-x", "scratch-y"]
    assert rerankers.list_models("all") == rerankers.model_names()
    assert rerankers.list_models("mlp,transformer,mlp") == ["mlp", "transformer"]
    with pytest.raises(rerankers.UnknownModelError, match="matches no model"):
        rerankers.list_models("zzz*")
    with pytest.raises(rerankers.UnknownModelError):
        rerankers.list_models("mlp,nope")


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "scratch_plugin.py").write_text(
        "from torch import nn\n"
        "import rerankers\n"
        "@rerankers.register('from-plugin')\n"
        "class FromPlugin(nn.Module):\n"
        "    '''Registered by an entry point.'''\n"
        "    def __init__(self, user_dim, item_dim):\n"
        "        super().__init__()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint("scratch", "scratch_plugin", rerankers.ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def fake_entry_points(**kwargs):
        if kwargs.get("group") == rerankers.ENTRY_POINT_GROUP:
            return [entry]
        return real(**kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    try:
        assert "from-plugin" in rerankers.model_names()
    finally:
        rerankers.unregister("from-plugin")
        sys.modules.pop("scratch_plugin", None)


def test_an_exact_name_with_glob_characters_is_selected_as_itself(scratch_model):
    scratch_model("scratch[a=1]")
    assert rerankers.list_models("scratch[a=1],mlp") == ["scratch[a=1]", "mlp"]
