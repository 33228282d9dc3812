"""Naming the machine a figure was measured on. A CPU figure depends on the bf16 instructions
(AVX512-BF16, AMX: what bf16 training and sampling run on), the cores and torch's threads; a
figure without them cannot be compared with the next run's."""

from __future__ import annotations

import os
import platform

# The CPU flags that decide bf16 speed, in the order a report names them.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def parse_cpuinfo(text: str) -> tuple[str | None, set[str]]:
    """(the first CPU's model name or None, its flags) from the text of /proc/cpuinfo. The name
    carries the CPU's family and model numbers where cpuinfo gives them: a virtual machine may
    call a Zen 1 and a Zen 3 both "AMD EPYC", and a step on the second takes half the time."""
    model, flags, numbers = None, set(), {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key in ("cpu family", "model") and key not in numbers:
            numbers[key] = value.strip()
    if model is not None and len(numbers) == 2:
        model = f"{model}, family {numbers['cpu family']} model {numbers['model']}"
    return model, flags


def _cpuinfo() -> tuple[str | None, set[str]]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return parse_cpuinfo(cpuinfo.read())
    except OSError:  # not Linux: the model from platform, no flags
        return None, set()


def cpu_model() -> str:
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Those of `BF16_FLAGS` this CPU has."""
    flags = _cpuinfo()[1]
    return [flag for flag in BF16_FLAGS if flag in flags]


def has_amx() -> bool:
    return "amx_bf16" in cpu_flags()


def describe(cpu: str, flags: list[str], cores: int | None, memory_gib: float, torch_version: str,
             threads: int, gpu: str | None) -> str:
    """One line for a report; pure, so the wording is tested without the machine."""
    if gpu:
        return f"{gpu}, torch {torch_version}"
    named = ", ".join(flags) if flags else "neither " + " nor ".join(BF16_FLAGS)
    return (f"{cpu} ({named}), {cores} cores, {memory_gib:.0f} GiB RAM, torch {torch_version} "
            f"({threads} threads), no GPU")


def machine_info() -> dict:
    """The machine as JSON fields, for a result file."""
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "gpu": gpu}


def machine() -> str:
    """The machine in one line, e.g. "Intel(R) Xeon(R) ... (avx512_bf16, amx_bf16), 2 cores,
    8 GiB RAM, torch 2.13.0+cpu (2 threads), no GPU"; on a GPU machine, the GPU and torch."""
    info = machine_info()
    return describe(info["cpu"], info["cpu_flags"], info["cores"], info["memory_gib"], info["torch"],
                    info["threads"], info["gpu"])
