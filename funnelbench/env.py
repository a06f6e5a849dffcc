"""The device a run uses and the environment every record carries (device name, dtype, torch
version, threads), so numbers from different machines are never compared blind."""

from __future__ import annotations

import platform

import torch

from .errors import UsageError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without a GPU is a :class:`UsageError`."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA GPU is visible on this machine; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"unknown device {name!r}; use auto, cpu or cuda")


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise UsageError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}") from None


def device_name(device: torch.device) -> str:
    """'cpu (AMD EPYC 7B13, 2 threads)' or 'cuda:0 (NVIDIA A100-SXM4-40GB)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"cpu ({cpu or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device, dtype: str) -> dict:
    """The environment columns of a record."""
    return {
        "device": device_name(device),
        "dtype": dtype,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.type == "cuda" else None,
    }
