"""The GPU path made right by reading CUDA's semantics, tested where a CPU can show it (issue 24): no host
synchronisation in any model's steps, FLOPs counted one way on every device, an exact oracle under bf16, warm-up
apart from block sizing, CUDA memory per phase and event timing (torch.cuda mocked), peaks by device name, GPU facts
in the record, Ray's threads, and a compiled cell's partial batch and Dynamo caches."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rerankers
import rerankers.gsf as gsf_module
from bench import accel, measure, subject
from bench.cell import run_cell
from bench.config import MeasureConfig, TrainConfig
from bench.data import generate
from bench.flops import count_flops, counting_recipe, data_sheet_label, peak_flops
from bench.gpu_info import parse_smi_line
from bench.models import accepted_options
from bench.sync_probe import HostSyncProbe, probe_cell
from bench.train import train
from rerankers import SlateBatch
from rerankers.gsf import masked_batch_norm
from rerankers.registry import build_model


def padded_batch(rows: int = 6, length: int = 7, user: int = 5, items: int = 6, seed: int = 0) -> SlateBatch:
    g = torch.Generator().manual_seed(seed)
    real = torch.randint(0, length + 1, (rows,), generator=g)
    real[0], real[1] = length, 0  # a full list and an empty one
    mask = torch.arange(length) < real.unsqueeze(1)
    positions = torch.stack([torch.randperm(length, generator=g) for _ in range(rows)])
    user_features, item_features = torch.randn(rows, user, generator=g), torch.randn(rows, length, items, generator=g)
    return SlateBatch(user_features, item_features, mask, positions)


# --- no host synchronisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", rerankers.model_names())
def test_no_host_synchronisation_in_a_training_step_or_an_eval_forward(smoke_cell, model, monkeypatch):
    options = accepted_options(model, smoke_cell().model_kwargs)
    workload = replace(smoke_cell().workload, slate_min=2, batch_size=16, batches=1)  # padded lists
    cell = smoke_cell(model, workload=workload, model_kwargs=options)
    # GSF reads its groups' validity on the host only where that is free (a CPU): probe the path a GPU takes
    monkeypatch.setattr(gsf_module, "host_reads_are_free", lambda device: False)
    assert probe_cell(cell, "cpu") == []


def test_gsf_scores_the_same_on_both_of_its_paths(smoke_cell, monkeypatch):
    """The CPU path (torch's batch norm on the valid groups) and the accelerator path (masked batch norm over every
    group): the same scores, gradients and running statistics, on padded lists, in training and in eval. In double
    precision, so that what is compared is the function, not float32's rounding of batch norm's backward pass."""
    workload = generate(replace(smoke_cell().workload, slate_min=2, batch_size=32, batches=1), 0, "cpu")
    padded = workload.test.inputs[:32]
    assert not padded.mask.all()  # padded lists: the paths differ in how they keep padding out
    batch = SlateBatch(padded.user.double(), padded.items.double(), padded.mask, padded.positions)
    torch.manual_seed(0)
    models = [build_model("gsf", user_dim=batch.user.shape[1], item_dim=batch.items.shape[2]) for _ in (0, 1)]
    models = [model.double() for model in models]
    models[1].load_state_dict(models[0].state_dict())
    results = []
    for model, free in zip(models, (True, False), strict=True):
        monkeypatch.setattr(gsf_module, "host_reads_are_free", lambda device, free=free: free)
        model.train()
        scores = model(batch)
        scores.masked_fill(~batch.mask, 0).sum().backward()
        model.eval()
        with torch.no_grad():
            results.append((scores.detach(), [p.grad for p in model.parameters()], model(batch), model.state_dict()))
    (train_a, grads_a, eval_a, state_a), (train_b, grads_b, eval_b, state_b) = results
    close = {"rtol": 1e-9, "atol": 1e-9}  # a bias just before batch norm has a gradient of 0 up to rounding
    torch.testing.assert_close(train_a, train_b, **close)
    torch.testing.assert_close(eval_a, eval_b, **close)
    for grad_a, grad_b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(grad_a, grad_b, **close)
    for name in state_a:
        torch.testing.assert_close(state_a[name], state_b[name], **close)

def test_the_probe_sees_the_synchronisations_a_gpu_would_wait_for():
    x = torch.randn(4, 3)
    with HostSyncProbe() as probe:
        if (x > 0).any():  # bool(): a value on the host
            pass
        x[x > 0]  # boolean indexing: a data-dependent shape
        pack_padded_sequence(x.unsqueeze(-1), torch.tensor([3, 2, 2, 1]), batch_first=True)
        x.sum().item()
    reasons = " ".join(probe.found)
    assert "Python value" in reasons and "boolean-mask indexing" in reasons and "pack_padded_sequence" in reasons
    assert len(probe.found) >= 4 and "test_gpu_ready.py" in probe.found[0]
    with torch.inference_mode(), HostSyncProbe() as probe:  # where composite operations reach the probe whole
        bool(x.all())
        x.sum().item()
    assert len(probe.found) == 2 and all("Python value" in line for line in probe.found)


# --- rewritten computations: the same function -------------------------------------------------------------


def test_masked_batch_norm_is_batch_norm_of_the_kept_rows():
    torch.manual_seed(0)
    x = torch.randn(40, 8) * 3 + 1
    for keep in (torch.rand(40, 1) < 0.6, torch.ones(40, 1, dtype=torch.bool)):
        reference, masked = nn.BatchNorm1d(8), nn.BatchNorm1d(8)
        with torch.no_grad():
            reference.weight.uniform_(0.5, 2), reference.bias.uniform_(-1, 1)
        masked.load_state_dict(reference.state_dict())
        expected = reference(x[keep.squeeze(1)])
        got = masked_batch_norm(masked, x, keep)[keep.squeeze(1)]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        for name, value in reference.state_dict().items():
            torch.testing.assert_close(masked.state_dict()[name], value, rtol=1e-6, atol=1e-6)
    untouched = nn.BatchNorm1d(8)
    masked_batch_norm(untouched, x, torch.zeros(40, 1, dtype=torch.bool))  # no row kept: no statistics change
    assert untouched.running_mean.eq(0).all() and untouched.num_batches_tracked == 0


def test_the_oracles_utilities_equal_the_founding_path_bit_for_bit(smoke_cell):
    workload = generate(smoke_cell().workload, 0, "cpu")
    batch = workload.test.inputs
    assert batch.mask.all()  # no padding: the founding path is the one the data's labels came from
    assert torch.equal(workload.value_model.score(batch), workload.value_model.utility(batch.user, batch.items))


# --- the oracle and the metrics under bf16 ---------------------------------------------------------------------


def test_the_oracle_is_exact_under_bf16_autocast(smoke_cell):
    workload = generate(smoke_cell().workload, 0, "cpu")
    oracle = rerankers.build_model("oracle", user_dim=1, item_dim=1, utility_fn=workload.oracle_scores)
    batch = workload.test.inputs
    assert torch.equal(accel.Autocast(oracle)(batch), oracle(batch))  # bf16 autocast changes no score
    record = run_cell(smoke_cell("oracle", precision="bf16", model_kwargs={}))
    assert record["status"] == "ok", record["error"]
    assert record["metrics"]["slate_acc"] == 1.0


# --- FLOPs: one recipe on every device -------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["transformer", "prm", "setrank", "dlcm", "seq2slate", "mlp"])
def test_flops_are_the_same_whichever_attention_kernel_or_device_would_run(model):
    torch.manual_seed(0)
    # without dropout a CPU runs attention through its fused kernel (no FLOP formula) unless told otherwise
    net = rerankers.build_model(model, user_dim=5, item_dim=6, **accepted_options(model, {"d_model": 16, "dropout": 0}))
    batch = padded_batch()
    batch = SlateBatch(batch.user, batch.items, torch.ones_like(batch.mask), batch.positions)
    counted = count_flops(net, batch)
    assert counted[1] > 0
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):  # a fused kernel chosen by the caller changes nothing
        assert count_flops(net, batch) == counted
    on_meta = net.to("meta")
    meta_batch = SlateBatch(*(t.to("meta") for t in (batch.user, batch.items, batch.mask, batch.positions)))
    assert count_flops(on_meta, meta_batch) == counted  # counted from shapes alone, whatever the device


def test_the_counting_recipe_turns_cudnn_off_and_restores_it():
    before = torch.backends.cudnn.enabled
    with counting_recipe():
        assert torch.backends.cudnn.enabled is False
    assert torch.backends.cudnn.enabled == before


# --- peaks by device name ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, label",
    [
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA H200", "H200 SXM"),
        ("NVIDIA H200 NVL", "H200 NVL"),
        ("NVIDIA GH200 480GB", "GH200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla T4", None),
    ],
)
def test_peaks_are_matched_by_device_name(name, label):
    assert data_sheet_label(name) == label


def test_nvl_parts_are_slower_than_sxm_and_mig_slices_have_no_known_peak():
    cuda = torch.device("cuda")
    nvl, sxm = peak_flops(cuda, "bf16", "NVIDIA H100 NVL")[0], peak_flops(cuda, "bf16", "NVIDIA H100 80GB HBM3")[0]
    assert nvl < sxm
    peak, source = peak_flops(cuda, "bf16", "NVIDIA H100 80GB HBM3 MIG 1g.10gb")
    assert peak is None and source.startswith("unknown peak") and "MIG" in source


# --- serving: warm-up apart from block sizing, CUDA events ------------------------------------------------------


class SlowFirstCall(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.linear = nn.Linear(6, 1)

    def forward(self, batch: SlateBatch) -> torch.Tensor:
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.3)  # the first call: first kernels, a compilation
        return self.linear(batch.items).squeeze(-1)


def test_a_slow_first_call_does_not_leave_the_blocks_at_one_call():
    batch = padded_batch()
    config = MeasureConfig(latency_requests=2, throughput_blocks=2, min_block_seconds=0.005)
    sampler = measure.ServingSampler(SlowFirstCall(), batch, batch, config)
    sampler.finish()
    assert sampler.calls_per_block > 1


class FakeEvent:
    clock = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        self.at = None

    def record(self) -> None:
        FakeEvent.clock += 2.5
        self.at = FakeEvent.clock

    def elapsed_time(self, other: FakeEvent) -> float:
        return other.at - self.at


def test_on_cuda_a_request_is_timed_by_events_beside_its_wall_time(monkeypatch):
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    wall, device_ms = subject.timed_request(lambda: None, torch.device("cuda"))
    assert device_ms == 2.5 and wall >= 0 and len(syncs) == 2
    assert subject.timed_request(lambda: None, torch.device("cpu"))[1] is None


# --- CUDA memory per phase -------------------------------------------------------------------------------------


def test_cuda_memory_per_phase_is_net_of_what_the_phase_started_with(monkeypatch):
    calls, mib = [], 1024 * 1024
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append("reset"))
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 300 * mib)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 450 * mib)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda device=None: 512 * mib)
    cuda = torch.device("cuda")
    baseline = measure.cuda_phase_start(cuda)
    assert baseline == 300 and calls == ["empty_cache", "reset"]
    assert measure.peak_memory_mib(cuda, "train", baseline) == {
        "cuda_peak_allocated_train_mib": 450,
        "cuda_peak_reserved_train_mib": 512,
        "cuda_net_peak_allocated_train_mib": 150,
    }
    cpu = torch.device("cpu")
    assert measure.cuda_phase_start(cpu) is None and measure.peak_memory_mib(cpu, "x") == {}


# --- GPU facts in the record ----------------------------------------------------------------------------------


def test_nvidia_smi_lines_become_record_fields():
    fields = parse_smi_line("550.54.15, 1980, 1980, 2619, 700.00, 451.2, 38, Disabled")
    assert fields["gpu_driver"] == "550.54.15" and fields["gpu_clock_sm_mhz"] == 1980.0
    assert fields["gpu_power_limit_w"] == 700.0 and fields["gpu_mig_mode"] == "Disabled"
    assert parse_smi_line("[N/A], 1980, [N/A], 2619, 700, 40, 30, [N/A]")["gpu_driver"] is None
    assert parse_smi_line("garbage") == {}


def test_gpu_facts_never_fail_without_nvidia_smi(monkeypatch):
    from bench import gpu_info

    monkeypatch.setattr(gpu_info.shutil, "which", lambda name: None)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: (_ for _ in ()).throw(RuntimeError()))
    facts = gpu_info.gpu_environment(torch.device("cuda"))
    assert facts["gpu_info_source"] == "torch (no nvidia-smi)" and facts["gpu_driver"] is None
    assert "cudnn" in facts and "gpu_mig_mode" in facts


# --- compile: the partial last batch untimed, Dynamo reset between inline cells -------------------------------


def test_a_partial_last_batch_trains_untimed(smoke_cell):
    workload = generate(replace(smoke_cell().workload, batch_size=50, batches=3), 0, "cpu")
    train_data = workload.train[:130]  # batches of 50, 50 and 30
    inputs = train_data.inputs
    model = rerankers.build_model("mlp", user_dim=inputs.user.shape[1], item_dim=inputs.items.shape[2], d_model=8)
    result = train(model, train_data, workload.valid[:40], TrainConfig(epochs=2, warmup_steps=1), 50)
    assert result.steady_samples == 2 * 100 - 50  # the full batches but the warm-up step; never the 30
    assert len(result.train_loss) == 2 and all(math.isfinite(loss) for loss in result.train_loss)


def test_the_inline_executor_starts_each_cell_without_the_previous_cells_compiled_code(monkeypatch, smoke_cell):
    import bench.cell
    from bench.executor import InlineExecutor

    events = []
    monkeypatch.setattr(accel, "release_between_cells", lambda: events.append("release"))
    monkeypatch.setattr(bench.cell, "run_cell", lambda cell, on_epoch=None: events.append(cell.model) or {})
    InlineExecutor().run([smoke_cell("mlp"), smoke_cell("dlcm")], lambda cell, record: None, lambda progress: None)
    assert events == ["release", "mlp", "release", "dlcm"]


def test_release_between_cells_resets_dynamo(monkeypatch):
    import torch._dynamo

    resets = []
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1))
    accel.release_between_cells()
    assert resets == [1] and accel.compile_counters()["compile_graphs"] == 0


# --- Ray: the cell's threads set explicitly ---------------------------------------------------------------------


def test_a_ray_cell_sets_its_threads_before_its_data_is_drawn(monkeypatch, smoke_cell):
    from bench import ray_executor

    seen = []
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what Ray sets in a worker for a 1-CPU task
    monkeypatch.setattr("bench.cell.run_cell", lambda cell, *on_epoch: seen.append(torch.get_num_threads()) or {})
    ray_executor._run_cell_task(smoke_cell("mlp").to_dict(), None, 0, 2)  # no epoch channel: no epoch is reported
    assert seen == [2]
    assert ray_executor.cell_threads(smoke_cell("mlp", threads=3)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert ray_executor.cell_threads(smoke_cell("mlp", threads=0)) == 4
    assert ray_executor.cell_threads(smoke_cell("mlp", threads=0), cluster_cpus=2) == 2  # never unschedulable
