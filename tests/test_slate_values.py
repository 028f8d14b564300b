"""Per-slate values in the record (per_slate.slate_value, slate_regret, slate_headroom): packed in half precision,
and the report's intervals and paired tests of slate_value, slate_regret and slate_regret_share computed from them
equal the same statistics computed directly from the cell's float64 per-slate values."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import stats

from bench.catalog import lookup
from bench.cell import evaluate, run_cell
from bench.compare import _test
from bench.config import PROFILES, CellConfig
from bench.data import generate
from bench.records import pack_per_slate, pack_values, paired_slate_values, slate_values, unpack_values
from bench.report import render
from bench.tables import compare_with_baseline, records_frame, summarize
from bench.worlds import value_metrics

VALUE_NAMES = ("slate_value", "slate_regret", "slate_regret_share")


def test_values_pack_in_half_precision_two_bytes_a_slate():
    values = torch.randn(8192, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    packed = pack_values(values)
    assert len(packed) == 21848  # 8192 x 2 bytes in base64: the size at the default profile's test slates
    back = unpack_values(packed, len(values))
    error = np.abs(back - values.numpy())
    assert (error <= 2.0**-11 * np.abs(values.numpy()) + 2.0**-24).all()  # half an ulp of an 11-bit significand
    assert error.max() > 0  # it is rounded, not kept in full


def test_a_value_beyond_half_precision_is_kept_in_single_precision():
    values = torch.tensor([1.5, -70000.25, 3.0], dtype=torch.float64)  # half precision ends at 65504
    packed = pack_values(values)
    assert np.array_equal(unpack_values(packed, 3), values.numpy())
    with pytest.raises(ValueError, match="not 4 half- or single-precision values"):
        unpack_values(packed, 4)


def _direct_interval(numerator: np.ndarray, denominator: np.ndarray | None = None) -> tuple[float, float]:
    """A mean (or a ratio of sums, by the delta method) and its 95% normal half-width, written out."""
    n = len(numerator)
    if denominator is None:
        return numerator.mean(), 1.959963984540054 * numerator.std(ddof=1) / math.sqrt(n)
    ratio = numerator.sum() / denominator.sum()
    linearised = (numerator - ratio * denominator) / denominator.mean()
    return ratio, 1.959963984540054 * linearised.std(ddof=1) / math.sqrt(n)


@pytest.fixture(scope="module")
def diversity_cells():
    """The records of the initial order and of the oracle in the diversity world, and the float64 per-slate values
    computed directly from the same data and the two models' scores."""
    settings = {k: v for k, v in PROFILES["smoke"].items() if k != "model_kwargs"}
    base = CellConfig(model="initial", **settings)
    base = replace(base, workload=replace(base.workload, world="diversity", batches=2, test_slates=512))
    records = {model: run_cell(replace(base, model=model)) for model in ("initial", "oracle")}
    test = (workload := generate(base.workload, base.seed)).test
    scores = {"initial": -test.inputs.positions.double(), "oracle": workload.oracle_scores(test.inputs)}
    direct = {
        model: value_metrics(
            workload.world, s.gather(1, test.slate), test.slate_items, test.slate_utility, test.slate_mask
        )
        for model, s in scores.items()
    }
    return records, {model: {k: v.numpy() for k, v in d.items()} for model, d in direct.items()}


def test_the_interval_of_each_value_from_a_record_equals_a_direct_computation(diversity_cells):
    records, direct = diversity_cells
    record, values = records["initial"], direct["initial"]
    assert record["status"] == "ok", record["error"]
    assert set(record["per_slate"]) == {"slate_hits", "slate_value", "slate_regret", "slate_headroom"}
    frame = records_frame([record])
    expected = {
        "slate_value": _direct_interval(values["slate_value"]),
        "slate_regret": _direct_interval(values["slate_regret"]),
        "slate_regret_share": _direct_interval(values["slate_regret"], values["slate_headroom"]),
    }
    for name in VALUE_NAMES:
        mean, half, _ = summarize(frame, name)
        assert mean == pytest.approx(expected[name][0], rel=1e-9)  # the metric itself, in float64
        assert half == pytest.approx(expected[name][1], rel=1e-3)  # from the half-precision per-slate values
        assert half > 0
    for name in ("slate_value", "slate_regret", "slate_headroom"):  # what the record keeps, to its precision
        kept = slate_values(record, name)
        assert np.allclose(kept, values[name], rtol=2.0**-11, atol=1e-6)


def test_the_delta_methods_interval_of_the_share_covers_like_a_bootstrap(diversity_cells):
    _, direct = diversity_cells
    regret, headroom = direct["initial"]["slate_regret"], direct["initial"]["slate_headroom"]
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(regret), size=(2000, len(regret)))
    shares = regret[draws].sum(axis=1) / headroom[draws].sum(axis=1)
    bootstrap_half = (np.quantile(shares, 0.975) - np.quantile(shares, 0.025)) / 2
    assert _direct_interval(regret, headroom)[1] == pytest.approx(bootstrap_half, rel=0.15)


def test_the_paired_test_from_records_equals_a_paired_t_test_on_the_slates(diversity_cells):
    records, direct = diversity_cells
    frame = records_frame(list(records.values()))
    model, base = frame[frame["model"] == "initial"], frame[frame["model"] == "oracle"]
    regret_a, regret_b = direct["initial"]["slate_regret"], direct["oracle"]["slate_regret"]
    p = stats.ttest_rel(regret_a, regret_b).pvalue
    diff = regret_a - regret_b
    expected = {
        "slate_value": _direct_interval(direct["initial"]["slate_value"] - direct["oracle"]["slate_value"]),
        "slate_regret": _direct_interval(diff),
        "slate_regret_share": _direct_interval(diff, direct["initial"]["slate_headroom"]),
    }
    for name in VALUE_NAMES:
        delta, half, p_value, test = compare_with_baseline(model, base, name)
        assert test == "paired t"
        assert delta == pytest.approx(expected[name][0], rel=1e-3)
        assert half == pytest.approx(expected[name][1], rel=1e-3)
        assert math.log(p_value) == pytest.approx(math.log(p), rel=1e-2)  # p is tiny: compared on a log scale
        assert _test(lookup(name), records["initial"], records["oracle"]) == ("paired t", pytest.approx(p_value))
    report = render(list(records.values()), "worlds", "oracle", [])
    assert "Δ slate_regret_share vs oracle" in report and "paired t-test on the per-slate values" in report


def test_a_paired_test_between_two_scorers_equals_scipys_and_needs_the_same_data(diversity_cells):
    records, _ = diversity_cells
    cell = CellConfig.from_dict(records["initial"]["config"])
    workload = generate(cell.workload, cell.seed)
    test = workload.test
    noise = torch.randn(test.utility.shape, generator=torch.Generator().manual_seed(1))
    made = {}
    for name, scores in (("context-free", test.utility), ("noisy", test.utility + 2 * noise)):
        metrics, per_slate = evaluate(scores, test, True, workload.world)
        made[name] = (
            {"metrics": metrics, "per_slate": pack_per_slate(per_slate), "data_key": "same"},
            {k: v.numpy() for k, v in per_slate.items() if k != "slate_hits"},
        )
    (a, values_a), (b, values_b) = made["context-free"], made["noisy"]
    for name in VALUE_NAMES:
        delta, half, p = paired_slate_values(a, b, lookup(name))
        numerator = "slate_value" if name == "slate_value" else "slate_regret"
        denominator = values_a["slate_headroom"] if name == "slate_regret_share" else None
        expected_delta, expected_half = _direct_interval(values_a[numerator] - values_b[numerator], denominator)
        assert (delta, half) == (pytest.approx(expected_delta, rel=1e-3), pytest.approx(expected_half, rel=1e-3))
        assert p == pytest.approx(stats.ttest_rel(values_a[numerator], values_b[numerator]).pvalue, rel=1e-2, abs=1e-6)
    assert paired_slate_values(a, {**b, "data_key": "other"}, lookup("slate_regret")) is None
