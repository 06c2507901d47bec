"""One meaning of ``--device`` for every command: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

``auto`` follows the machine (the first CUDA device when there is one, else the CPU), so
the same command line works on a laptop and on a GPU box. Anything else that torch would
reject, or a CUDA device this machine lacks, is a one-line ``UsageError`` naming the
choices, before any model is read.
"""

from __future__ import annotations

import re

import torch

from .errors import UsageError

_VALID = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str | torch.device | None = "auto") -> str:
    """The concrete device string for ``spec`` (``auto`` → ``cuda:0`` or ``cpu``)."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if not _VALID.match(text):
        raise UsageError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if text == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"device {text!r} requested but this machine has no CUDA device; "
                             f"use --device cpu (or auto)")
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UsageError(f"device {text!r} requested but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return f"cuda:{index}"
    return "cpu"


def half_on_cpu(device: str | torch.device, dtype: object) -> bool:
    """Whether ``dtype`` is bf16 or fp16 on a CPU, where torch has no fast half kernels for
    long matmuls or dilated convolutions (AVX2 without AMX), so such work runs in float32
    (the calibration prefill, the audio modules)."""
    return str(device).startswith("cpu") and dtype in (torch.bfloat16, torch.float16)


def cuda_kernels(tensor: torch.Tensor) -> bool:
    """Whether ops on ``tensor`` run CUDA's kernels: where awq-tts takes its CUDA-only fused
    paths (``fused_norms``, ``shared_rope``, ``grouped_attention``), which round once fewer
    or group differently than the CPU's bit-identical ones. Asked here, in one place, so a
    CPU test can send a whole model through those paths."""
    return tensor.is_cuda
