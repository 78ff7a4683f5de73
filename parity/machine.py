"""The machine a report was measured on (stdlib only: the NeMo oracle environment imports it too)."""
from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_vendor() -> str:
    """The CPU's vendor: "intel", "amd", "arm" or "other", from /proc/cpuinfo's vendor_id (GenuineIntel,
    AuthenticAMD), else the machine architecture (aarch64/arm64). It names reports per CPU
    (reports/parity-live-cpu-<vendor>.*); it never chooses a compute path."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                vendor = line.split(":", 1)[1].strip()
                if vendor == "GenuineIntel":
                    return "intel"
                if vendor == "AuthenticAMD":
                    return "amd"
                break
    except OSError:
        pass
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    return "other"
