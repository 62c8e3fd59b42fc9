"""Where a run's latency was measured: the report's `environment` section.

Latency is a property of a machine as much as of an artifact, so a report says
which machine took it (hostname, CPU model, usable cores, OS, runtime versions).
`edgec compare` reads it to refuse comparing latency across machines.
"""

from __future__ import annotations

import os
import platform
import socket
from importlib import metadata
from typing import Any


def cpu_model() -> str:
    """The CPU's marketing name (`model name` in /proc/cpuinfo on Linux), else platform's guess."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def host_cpu() -> tuple[str, bool]:
    """This machine's CPU as the device profiles describe a board: (architecture,
    ``x86_64`` or ``aarch64``; whether its int8 kernels saturate: x86 without VNNI)."""
    from passes.quantize.dynamic import saturating_cpu

    arch = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch), saturating_cpu()


def _version(package: str) -> str | None:
    for name in (package, f"{package}-gpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict[str, Any]:
    """The report's `environment`: hostname, cpu, cores this process may use, os, python,
    onnxruntime version."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cores": cores,
        "os": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "onnxruntime": _version("onnxruntime"),
    }


def machine_key(environment: dict[str, Any] | None) -> str | None:
    """One label per machine (hostname · CPU), None when a report does not say."""
    if not environment or not environment.get("hostname"):
        return None
    return f"{environment['hostname']} · {environment.get('cpu') or '?'}"
