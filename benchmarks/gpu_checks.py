"""The checks of benchmarks/gpu_accept.sh that are not `bench run` itself, one subcommand each; exit 0 passes.

    python benchmarks/gpu_checks.py cuda                 # torch sees a CUDA device
    python benchmarks/gpu_checks.py probe --device cuda  # no host synchronisation in any model's steps
    python benchmarks/gpu_checks.py flops --device cuda  # FLOPs counted on the device = counted on the CPU
    python benchmarks/gpu_checks.py data --device cuda   # a seed's data is the same drawn for CPU and CUDA
    python benchmarks/gpu_checks.py records DIR --expect ok [--oom MODEL] [--device-name cuda]
    python benchmarks/gpu_checks.py smi FILE             # nvidia-smi's clocks, power and temperature, appended
    python benchmarks/gpu_checks.py validate FILE LOGDIR # each line NAME<TAB>ARGS...: `bench run ARGS --dry-run`

Every subcommand takes --dry-run: it says what it would check, its arguments parsed and checked, and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

# torch and the harness are imported by the checks themselves, so that --dry-run costs no import of torch.
CHECKS = {
    "cuda": "torch sees a CUDA device (else nothing else can pass)",
    "probe": "one training step and one eval forward of every registered model, fp32 and bf16, padded lists: "
    "no host synchronisation (bench/sync_probe.py)",
    "flops": "every registered model's training and inference FLOPs counted on the device equal the CPU's count",
    "data": "a seed's data drawn for a CUDA cell is the CPU cell's data, bit for bit (smoke and default profiles)",
    "records": "each record: status, device name, peak source, 0 < MFU < 1, CUDA memory per phase plausible, "
    "calls per inference block > 1",
    "smi": "nvidia-smi's clocks, power and temperature, appended to a file (never fails)",
    "validate": "each `bench run` command of a file run with --dry-run, all in this process (the dry run's check)",
}


def _cells(device: str, precisions=("fp32", "bf16")):
    """A smoke cell of every registered model, with padded lists (every model's masked path runs)."""
    from bench.config import PROFILES, CellConfig
    from bench.models import accepted_options
    from rerankers import model_names

    smoke = PROFILES["smoke"]
    workload = replace(smoke["workload"], slate_min=2)
    for name in model_names():
        for precision in precisions:
            yield CellConfig(
                model=name,
                device=device,
                precision=precision,
                workload=workload,
                train=smoke["train"],
                measure=smoke["measure"],
                model_kwargs=accepted_options(name, smoke["model_kwargs"]),
            )


def check_cuda(args) -> int:
    import torch

    print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}, available {torch.cuda.is_available()}")
    if not torch.cuda.is_available():
        print("FAIL: torch sees no CUDA device (a CPU build of torch, no driver, or CUDA_VISIBLE_DEVICES empty)")
        return 1
    print(f"PASS: {torch.cuda.get_device_name(0)}")
    return 0


def check_probe(args) -> int:
    from bench.sync_probe import probe_cell

    failed = 0
    for cell in _cells(args.device):
        found = probe_cell(cell, args.device)
        failed += bool(found)
        print(f"{'FAIL' if found else 'PASS'}: {cell.model} {cell.precision}: {len(found)} host synchronisations")
        for line in found[:5]:
            print(f"    {line}")
    return 1 if failed else 0


def _counts(cell, device: str):
    import torch

    from bench.flops import count_flops
    from bench.subject import build_runnable
    from bench.workloads import load_workload

    torch.manual_seed(cell.seed)
    workload = load_workload(cell.workload, cell.seed, torch.device(device))
    built = build_runnable(replace(cell, device=device), workload, torch.device(device))
    return count_flops(built.model, workload.test[: cell.workload.batch_size].inputs)


def check_flops(args) -> int:
    failed = 0
    for cell in _cells(args.device, ("fp32",)):
        on_cpu, on_device = _counts(cell, "cpu"), _counts(cell, args.device)
        failed += on_cpu != on_device
        print(
            f"{'PASS' if on_cpu == on_device else 'FAIL'}: {cell.model}: (train, infer) FLOPs cpu {on_cpu}, "
            f"{args.device} {on_device}"
        )
    return 1 if failed else 0


def check_data(args) -> int:
    from bench.config import PROFILES
    from bench.data import digest, generate

    failed = 0
    for profile in ("smoke", "default"):
        for seed in (0, 1):
            on_cpu = digest(generate(PROFILES[profile]["workload"], seed, "cpu"))
            on_device = digest(generate(PROFILES[profile]["workload"], seed, args.device))
            failed += on_cpu != on_device
            print(
                f"{'PASS' if on_cpu == on_device else 'FAIL'}: {profile} seed {seed}: cpu {on_cpu[:16]} "
                f"{args.device} {on_device[:16]}"
            )
    return 1 if failed else 0


def record_problems(record: dict, expect: str, oom_models: set[str], cuda: bool) -> list[str]:
    """What is wrong with one record for the acceptance script (empty: nothing)."""
    env, x = record.get("environment") or {}, record.get("measurements") or {}
    wanted = "oom" if record.get("model") in oom_models else expect
    if record.get("status") != wanted:
        return [f"status {record.get('status')} (wanted {wanted}): {str(record.get('error'))[:200]}"]
    if wanted != "ok":
        return []
    problems = []
    if cuda and (env.get("device") != "cuda" or not env.get("device_name")):
        problems.append(f"device {env.get('device')} {env.get('device_name')!r}")
    if cuda and not str(x.get("peak_source", "")).startswith("data sheet"):
        problems.append(f"peak source {x.get('peak_source')!r}")
    for mfu, flops in (("train_mfu", "train_flops_per_sample"), ("infer_mfu", "infer_flops_per_sample")):
        if x.get(flops) and not 0 < x.get(mfu, math.nan) < 1:
            problems.append(f"{mfu} {x.get(mfu)}")
    if (x.get("infer_calls_per_block") or 0) <= 1:
        problems.append(f"infer_calls_per_block {x.get('infer_calls_per_block')}")
    if cuda:
        problems += _cuda_memory_problems(env, x)
        if not x.get("latency_b1_cuda_p50_ms", math.inf) <= x.get("latency_b1_p50_ms", 0):
            problems.append(f"latency device p50 {x.get('latency_b1_cuda_p50_ms')} > wall {x.get('latency_b1_p50_ms')}")
    if env.get("compile") and not env.get("compile_graphs"):
        problems.append("compiled but no graph compiled")
    return problems


def _cuda_memory_problems(env: dict, x: dict) -> list[str]:
    total = env.get("gpu_memory_mib") or math.inf
    problems = []
    for phase in ("train", "infer"):
        net = x.get(f"cuda_net_peak_allocated_{phase}_mib")
        allocated, reserved = x.get(f"cuda_peak_allocated_{phase}_mib"), x.get(f"cuda_peak_reserved_{phase}_mib")
        if net is None or not 0 <= net <= total or allocated is None or reserved is None or reserved < allocated:
            problems.append(f"{phase} memory: net {net}, allocated {allocated}, reserved {reserved} MiB")
    return problems


def check_records(args) -> int:
    from bench.records import RECORDS_FILE, load_records

    records = [r for path in sorted(Path(args.dir).rglob(RECORDS_FILE)) for r in load_records(path)]
    if not records:
        print(f"FAIL: no record under {args.dir}")
        return 1
    failed = 0
    for record in records:
        problems = record_problems(record, args.expect, set(args.oom), args.device == "cuda")
        failed += bool(problems)
        name = f"{record.get('model')} {record.get('environment', {}).get('precision')} {record.get('key')}"
        print(f"{'FAIL' if problems else 'PASS'}: {name}{': ' + '; '.join(problems) if problems else ''}")
    return 1 if failed else 0


def check_smi(args) -> int:
    from bench.gpu_info import SMI_FIELDS, smi_query

    facts = smi_query(None)
    line = json.dumps({"label": args.label, **facts} if facts else {"label": args.label, "nvidia-smi": "absent"})
    with open(args.file, "a") as handle:
        handle.write(line + "\n")
    print(line if facts else f"no nvidia-smi: {', '.join(SMI_FIELDS)} not read")
    return 0


def check_validate(args) -> int:
    """Each line of ``args.file`` (a check's name, then its `bench run` arguments, tab-separated) run as
    `bench run ARGS --dry-run` in this process, its output in LOGDIR/NAME.log; prints NAME<TAB>EXIT CODE each."""
    import contextlib

    from bench.cli import main as bench_main

    failed = 0
    for line in Path(args.file).read_text().splitlines():
        name, *argv = line.split("\t")
        with open(Path(args.logs) / f"{name}.log", "w") as log, contextlib.redirect_stdout(log):
            with contextlib.redirect_stderr(log):
                sys.argv = ["bench", "run", *argv, "--dry-run"]
                try:
                    bench_main()
                    code = 0
                except SystemExit as exit_:
                    code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
        failed += code != 0
        print(f"{name}\t{code}", flush=True)
    return 1 if failed else 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="check", required=True)
    for name, text in CHECKS.items():
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--dry-run", action="store_true", help="say what would be checked, check nothing")
        if name in ("probe", "flops", "data", "records"):
            sub.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    commands.choices["records"].add_argument("dir")
    commands.choices["records"].add_argument("--expect", default="ok", choices=("ok", "oom"))
    commands.choices["records"].add_argument("--oom", action="append", default=[], help="a model expected to OOM")
    commands.choices["smi"].add_argument("file")
    commands.choices["smi"].add_argument("--label", default="")
    commands.choices["validate"].add_argument("file")
    commands.choices["validate"].add_argument("logs")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dry_run:
        print(f"would check ({args.check}): {CHECKS[args.check]}")
        return 0
    return {
        "cuda": check_cuda,
        "probe": check_probe,
        "flops": check_flops,
        "data": check_data,
        "records": check_records,
        "smi": check_smi,
        "validate": check_validate,
    }[args.check](args)


if __name__ == "__main__":
    sys.exit(main())
