"""Runtime backends for INT4 linears, chosen at load time (one small module each).

======================  ==========  ==================================================
backend                 devices     kernel
======================  ==========  ==================================================
``avx2``                CPU         this project's AVX2 kernel (int16 activations), built once
``int4pack``            CPU, CUDA   torch's tinygemm (``aten._weight_int4pack_mm*``)
``awq-triton``          CUDA        AutoAWQ's GEMM (``awq_ext`` or Triton), fp16 inside
``dequant``             any         exact dequantize + ``F.linear``: the reference
======================  ==========  ==================================================

``auto`` picks the first of that order the device can run.
"""

from __future__ import annotations

import torch

from ...errors import UsageError
from .avx2 import Avx2
from .awq_triton import AwqTriton
from .base import Backend
from .dequant import Dequant
from .int4pack import Int4Pack

BACKENDS: dict[str, Backend] = {b.name: b for b in (Avx2(), Int4Pack(), AwqTriton(), Dequant())}


def available_backends(device: str | torch.device) -> list[str]:
    """Names of the backends that can run on ``device``, in ``auto``'s order."""
    device = torch.device(device)
    return [name for name, b in BACKENDS.items() if b.unavailable(device) is None]


def get_backend(name: str, device: str | torch.device) -> Backend:
    """The backend called ``name`` (``auto``: the best one) for ``device``, or a UsageError."""
    device = torch.device(device)
    usable = available_backends(device)
    if name == "auto":
        return BACKENDS[usable[0]]
    if name not in BACKENDS:
        raise UsageError(f"unknown backend {name!r}; on {device} use one of: "
                         f"{', '.join(['auto', *usable])}")
    reason = BACKENDS[name].unavailable(device)
    if reason is not None:
        raise UsageError(f"backend {name!r} cannot run on {device}: {reason}; "
                         f"use one of: {', '.join(['auto', *usable])}")
    return BACKENDS[name]


__all__ = ["BACKENDS", "Backend", "available_backends", "get_backend"]
