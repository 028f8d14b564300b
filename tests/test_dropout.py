"""The CPU dropout built from random bits: same distribution and scaling as nn.Dropout."""

import math
from dataclasses import replace

import pytest
import torch
from torch import nn

import rerankers
from bench.cell import run_cell
from bench.config import CellConfig, ConfigError, validate
from rerankers import dropout as dropout_module
from rerankers.dropout import LANES, Dropout, lane_drop_count, use_cpu_dropout


@pytest.fixture(autouse=True)
def bits_path(monkeypatch):
    # ``auto`` takes the bit path where torch's own CPU Bernoulli is serial (not with MKL on Intel before torch
    # 2.7); these tests check it whatever CPU and torch run them.
    monkeypatch.setattr(dropout_module, "torch_bernoulli_is_serial", lambda: True)


def train_dropout(p: float) -> Dropout:
    return Dropout(p).train()


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_scale_match_the_quantised_p(p):
    torch.manual_seed(0)
    n = 1_000_000
    out = train_dropout(p)(torch.ones(n))
    p_eff = lane_drop_count(p) / LANES
    assert abs(p_eff - p) <= 0.5 / LANES
    kept = out != 0
    # 5 standard deviations of a binomial count
    assert abs(kept.double().mean().item() - (1 - p_eff)) < 5 * math.sqrt(p_eff * (1 - p_eff) / n)
    assert torch.equal(out[kept].unique(), torch.tensor([1 / (1 - p_eff)]))
    # the expected output is the input, as with nn.Dropout
    assert abs(out.double().mean().item() - 1.0) < 5 * math.sqrt(p_eff / (1 - p_eff) / n)


def test_neighbouring_elements_are_independent():
    # four lanes share each 64-bit word; a lane reused twice would correlate neighbours
    torch.manual_seed(1)
    kept = (train_dropout(0.5)(torch.ones(400_000)) != 0).double()
    for lag in (1, 2, 3, 4):
        corr = torch.corrcoef(torch.stack((kept[:-lag], kept[lag:])))[0, 1].item()
        assert abs(corr) < 0.01, lag


def test_gradient_is_the_mask_and_shapes_are_kept():
    torch.manual_seed(2)
    x = torch.randn(3, 7, 5, requires_grad=True)
    out = train_dropout(0.2)(x)
    out.sum().backward()
    assert out.shape == x.shape
    scale = LANES / (LANES - lane_drop_count(0.2))
    expected_grad = (out != 0).float() * scale
    assert torch.allclose(x.grad, expected_grad)
    assert torch.allclose(out, x.detach() * expected_grad)


def test_seeded_masks_repeat_and_eval_is_the_identity():
    x = torch.randn(64, 33)
    torch.manual_seed(3)
    first = train_dropout(0.1)(x)
    torch.manual_seed(3)
    assert torch.equal(train_dropout(0.1)(x), first)
    assert torch.equal(Dropout(0.1).eval()(x), x)
    assert torch.equal(train_dropout(0.0)(x), x)


@pytest.mark.parametrize("serial, module, kernel", [(True, Dropout, "bulk-bits"), (False, nn.Dropout, "torch")])
def test_auto_takes_the_bits_only_where_torch_bernoulli_is_serial(monkeypatch, serial, module, kernel):
    monkeypatch.setattr(dropout_module, "torch_bernoulli_is_serial", lambda: serial)
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
    assert use_cpu_dropout(net, "auto") == 1 and type(net[1]) is module
    assert dropout_module.cpu_dropout_kernel("auto") == kernel
    assert dropout_module.cpu_dropout_kernel("bulk") == "bulk-bits"  # bulk is the bits wherever it runs
    assert dropout_module.cpu_dropout_kernel("torch") == "torch"


@pytest.mark.parametrize(
    ("vendor", "mkl", "version", "serial"),
    [
        ("GenuineIntel", True, "2.6.0+cpu", False),  # MKL's parallel Bernoulli, before torch 2.7
        ("GenuineIntel", True, "2.7.1", True),  # turned off in public builds from 2.7 on
        ("GenuineIntel", True, "2.13.0+cpu", True),
        ("AuthenticAMD", True, "2.6.0", True),
        ("GenuineIntel", False, "2.6.0", True),
        ("", True, "2.6.0", True),
    ],
)
def test_torch_bernoulli_is_serial_except_mkl_on_intel_before_2_7(monkeypatch, vendor, mkl, version, serial):
    monkeypatch.undo()  # the real classifier, not the fixture's
    monkeypatch.setattr(dropout_module, "_cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    monkeypatch.setattr(torch, "__version__", version)
    dropout_module.torch_bernoulli_is_serial.cache_clear()
    try:
        assert dropout_module.torch_bernoulli_is_serial() is serial
    finally:
        dropout_module.torch_bernoulli_is_serial.cache_clear()


def test_other_dtypes_use_torch_dropout():
    x = torch.ones(1000, dtype=torch.bfloat16)
    out = train_dropout(0.1)(x)
    assert out.dtype == torch.bfloat16
    assert set(out.unique().tolist()) <= {0.0, torch.tensor(1 / 0.9, dtype=torch.bfloat16).item()}


@pytest.mark.parametrize("name", rerankers.model_names())
def test_models_do_not_choose_their_dropout(name):
    spec = rerankers.get_spec(name)
    if spec.needs_utility:
        return  # the oracle has no module to inspect without a world
    model = rerankers.build_model(name, user_dim=4, item_dim=3)
    assert not any(type(m) is Dropout for m in model.modules())


def test_the_setting_swaps_every_dropout_module_both_ways():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.25)), nn.ReLU(), Dropout(0.5))
    assert use_cpu_dropout(net, "bulk") == 2
    assert type(net[1][0]) is Dropout and net[1][0].p == 0.25 and type(net[3]) is Dropout
    assert type(net[0]) is nn.Linear and type(net[2]) is nn.ReLU
    assert use_cpu_dropout(net, "torch") == 2
    assert type(net[1][0]) is nn.Dropout and type(net[3]) is nn.Dropout and net[3].p == 0.5
    with pytest.raises(ValueError, match="unknown CPU dropout"):
        use_cpu_dropout(net, "fast")


SEEN_DROPOUT_TYPES: list[type] = []


@pytest.fixture
def dropout_plugin():
    """A model registered the way a plugin registers, which reports the dropout it trains with."""

    @rerankers.register("test-dropout-probe")
    class Probe(nn.Module):
        def __init__(self, user_dim, item_dim):
            super().__init__()
            self.linear = nn.Linear(item_dim, 1)
            self.drop = nn.Dropout(0.1)

        def forward(self, batch):
            if self.training:
                SEEN_DROPOUT_TYPES.append(type(self.drop))
            return rerankers.mask_padding(self.linear(self.drop(batch.items)).squeeze(-1), batch.mask)

    SEEN_DROPOUT_TYPES.clear()
    yield
    rerankers.unregister("test-dropout-probe")


@pytest.mark.parametrize("setting, used", [("torch", nn.Dropout), ("bulk", Dropout), ("auto", Dropout)])
def test_a_cell_trains_every_model_with_the_setting_and_records_it(smoke_cell, dropout_plugin, setting, used):
    record = run_cell(smoke_cell("test-dropout-probe", cpu_dropout=setting, model_kwargs={}))
    assert record["status"] == "ok", record["error"]
    assert SEEN_DROPOUT_TYPES and set(SEEN_DROPOUT_TYPES) == {used}
    env = record["environment"]
    assert env["cpu_dropout"] == setting and env["dropout_modules"] == 1
    assert env["cpu_dropout_kernel"] == ("torch" if setting == "torch" else "bulk-bits")  # the fixture: serial


def test_torch_keeps_earlier_keys_and_the_default_auto_has_its_own():
    cell = CellConfig(model="mlp")
    assert cell.cpu_dropout == "auto"
    torch_cell = replace(cell, cpu_dropout="torch")
    assert torch_cell.key() == "26b08de29cdd27b0"  # the key this cell had before the setting existed
    assert len({torch_cell.key(), cell.key(), replace(cell, cpu_dropout="bulk").key()}) == 3
    with pytest.raises(ConfigError, match="unknown cpu dropout 'fast'"):
        validate(replace(cell, cpu_dropout="fast"))


def test_the_cli_sets_the_cpu_dropout_of_every_cell(tmp_path):
    from typer.testing import CliRunner

    from bench.cli import app

    def invoke(*args):
        return CliRunner().invoke(app, ["run", "--profile", "smoke", "--out", str(tmp_path), *args])

    bad = invoke("--cpu-dropout", "fast")
    assert bad.exit_code == 2 and "error: unknown cpu dropout 'fast'" in bad.stderr
    default = invoke("--models", "mlp,transformer", "--dry-run")
    bulk = invoke("--models", "mlp,transformer", "--cpu-dropout", "bulk", "--dry-run")
    assert default.exit_code == bulk.exit_code == 0, bulk.output
    keys = [line.split()[-2] for line in default.output.splitlines() if line.startswith(("mlp", "transformer"))]
    bulk_keys = [line.split()[-2] for line in bulk.output.splitlines() if line.startswith(("mlp", "transformer"))]
    assert len(keys) == len(bulk_keys) == 2 and not set(keys) & set(bulk_keys)


def test_compiled_training_draws_each_mask_from_its_own_words():
    """Eager masks reuse one buffer of random words; a compiled graph may save the words for its backward pass, so
    under compile each mask has its own (with a shared buffer, the second mask's draw broke the first's backward)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), Dropout(0.1), nn.Linear(32, 32), Dropout(0.1), nn.Linear(32, 1))
    compiled = torch.compile(net, backend="aot_eager")  # AOTAutograd without code generation: seconds
    optimizer = torch.optim.Adam(net.parameters())
    for _ in range(2):
        loss = compiled(torch.randn(64, 8)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
