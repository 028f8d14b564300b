"""What a record says about the GPU a cell ran on, beyond its name: cuDNN and driver versions, clocks, power limit
and MIG state, from torch and, where present, nvidia-smi. Never fails: a fact that cannot be read
is None, and ``gpu_info_source`` says where the others came from."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import torch

SMI_FIELDS = {  # record field: nvidia-smi --query-gpu property (values read with nounits)
    "gpu_driver": "driver_version",
    "gpu_clock_sm_mhz": "clocks.sm",
    "gpu_clock_max_sm_mhz": "clocks.max.sm",
    "gpu_clock_memory_mhz": "clocks.mem",
    "gpu_power_limit_w": "power.limit",
    "gpu_power_draw_w": "power.draw",
    "gpu_temperature_c": "temperature.gpu",
    "gpu_mig_mode": "mig.mode.current",
}
SMI_TIMEOUT_S = 10.0


def _number(text: str) -> float | str | None:
    text = text.strip()
    if not text or text.startswith("[") or text.upper() in ("N/A", "[N/A]"):
        return None
    try:
        return float(text)
    except ValueError:
        return text


def parse_smi_line(line: str) -> dict[str, Any]:
    """One line of ``nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits`` as record fields."""
    values = [part.strip() for part in line.split(",")]
    if len(values) != len(SMI_FIELDS):
        return {}
    out = {name: _number(value) for name, value in zip(SMI_FIELDS, values, strict=True)}
    if out["gpu_driver"] is not None:
        out["gpu_driver"] = values[0]  # a version, not a number
    return out


def _pci_bus_id(device: torch.device) -> str | None:
    """The device's PCI address as nvidia-smi's ``-i`` takes it (CUDA's indices can differ from nvidia-smi's)."""
    props = torch.cuda.get_device_properties(device)
    bus, dev, domain = (getattr(props, name, None) for name in ("pci_bus_id", "pci_device_id", "pci_domain_id"))
    if bus is None or dev is None or domain is None:
        return None
    return f"{domain:08X}:{bus:02X}:{dev:02X}.0"


def smi_query(target: str | None) -> dict[str, Any]:
    """The SMI_FIELDS of one GPU (its PCI address; the first GPU when None) from nvidia-smi; {} without it."""
    if shutil.which("nvidia-smi") is None:
        return {}
    command = ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS.values())}", "--format=csv,noheader,nounits"]
    if target:
        command += ["-i", target]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return {}
    lines = done.stdout.strip().splitlines() if done.returncode == 0 else []
    return parse_smi_line(lines[0]) if lines else {}


def gpu_environment(device: torch.device) -> dict[str, Any]:
    """The GPU facts of a CUDA cell's record (every field present, None where unknown)."""
    out: dict[str, Any] = dict.fromkeys(SMI_FIELDS)
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    try:
        props = torch.cuda.get_device_properties(device)
        out["gpu_memory_mib"] = props.total_memory / (1024 * 1024)
        out["gpu_multiprocessors"] = props.multi_processor_count
        out["gpu_compute_capability"] = f"{props.major}.{props.minor}"
        target = _pci_bus_id(device)
    except (RuntimeError, AssertionError, AttributeError):
        target = None
    smi = smi_query(target)
    out.update({key: value for key, value in smi.items() if key in SMI_FIELDS})
    out["gpu_info_source"] = "torch + nvidia-smi" if smi else "torch (no nvidia-smi)"
    return out
