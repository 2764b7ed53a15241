"""What a latency number was measured on: the devices torch sees, the CPU, threads, load and
library versions."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_sweeps.config import UserError

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "transformers", "sentence_transformers", "pylate", "lancedb", "numpy")


def available_devices(requested: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(devices to measure, {skipped device: why}); CPU always runs, CUDA only if present."""
    devices, skipped = [], {}
    for device in dict.fromkeys(requested):
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                skipped[device] = "torch sees no CUDA device"
                log.info("latency: cuda skipped (torch sees no CUDA device)")
                continue
        devices.append(device)
    return devices, skipped


def library_versions() -> dict[str, str]:
    """Versions of the libraries on the measured path (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            continue
    return out


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() is often empty)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device: str) -> dict[str, Any]:
    """Name, threads and capabilities of `device` as this process sees it."""
    import torch

    info: dict[str, Any] = {
        "device": device,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "loadavg_start": loadavg(),
    }
    info["cpu_fast_bf16"] = cpu_has_fast_bf16()
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        info.update(
            {
                "gpu": torch.cuda.get_device_name(device),
                "gpu_capability": f"{props.major}.{props.minor}",
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "cuda": torch.version.cuda,
            }
        )
    return info


def loadavg() -> float | None:
    """The 1-minute load average (None where /proc/loadavg is missing)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matmul (AVX512-BF16 or AMX), where bf16 pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16", "amx_tile"))


def resolve_bf16(setting: str | bool, device: str) -> bool:
    """Resolve a bf16 setting (auto | true | false) for `device`: the one decision behind
    `eval.bf16`, `arch.bf16` (training) and `mining.bf16`.

    auto: on for CUDA devices that support bf16 and for CPUs with a bf16 fast path; off
    elsewhere (emulated bf16 on an old CPU is slower than fp32).
    """
    value = str(setting).lower()
    if value in ("true", "false"):
        return value == "true"
    if value != "auto":
        raise UserError(f"bf16={setting!r} is not allowed: one of auto, true, false")
    if device.startswith("cuda"):
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu_has_fast_bf16()
