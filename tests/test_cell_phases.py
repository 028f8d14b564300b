"""A cell is a short sequence of named phases, each filling its part of the record; run by hand they give the
record run_cell gives."""

from dataclasses import replace

import pytest

from bench import cell as phases
from bench.cell import run_cell


@pytest.fixture
def mlp_cell(smoke_cell):
    cell = smoke_cell("mlp", model_kwargs={"d_model": 8})
    return replace(cell, workload=replace(cell.workload, batches=2), train=replace(cell.train, epochs=2))


def test_the_phases_by_hand_give_the_record_of_run_cell(mlp_cell):
    run = phases.start(mlp_cell)
    workload = phases.data_phase(run)
    assert run.record["data"]["test_lists"] == len(workload.test)
    built = phases.model_phase(run, workload)
    assert built.trainable and run.measurements["parameters"] > 0
    assert run.record["environment"]["dropout_modules"] == 0
    serving = phases.serving_sampler(run, built, workload.test)
    phases.train_phase(run, built, workload, serving, on_epoch=None)
    assert len(run.record["history"]["train_loss"]) == 2 and serving.bursts == 2  # one burst after each epoch
    phases.evaluate_phase(run, built, workload.test, workload)
    assert run.record["per_slate"]["slate_hits"]
    phases.serve_phase(run, serving)
    assert len(run.timings["latency_b1_ms"]["samples"]) == mlp_cell.measure.latency_requests
    phases.account_phase(run, built, workload.test)
    assert run.measurements["train_flops_per_sample"] > 0
    record = phases.finish(run, phases.read_counters(), 0.0)
    whole = run_cell(mlp_cell)
    assert record["status"] == whole["status"] == "ok"
    assert record["metrics"] == whole["metrics"] and record["history"] == whole["history"]
    assert record["per_slate"] == whole["per_slate"]
    assert set(record["measurements"]) == set(whole["measurements"])


def test_a_failing_phase_is_the_records_status(smoke_cell):
    cell = smoke_cell("oracle")
    run = phases.start(cell)
    workload = replace(phases.data_phase(run), value_model=None)  # as LETOR data: no true utilities
    with pytest.raises(ValueError, match="needs true utilities"):
        phases.model_phase(run, workload)
    record = run_cell(replace(cell, model_kwargs={"no_such_option": 1}))
    assert record["status"] == "failed" and "no_such_option" in record["error"]
