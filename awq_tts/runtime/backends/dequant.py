"""``dequant``: dequantize the stored weight exactly and call ``F.linear``.

The numerical reference every other backend is tested against: the weight is
``(q − zero) · scale`` computed in float32 from the AutoAWQ tensors, then cast to the
caller's dtype. It allocates a full-size weight per call (slow, but resident memory
stays INT4), so ``auto`` never picks it where a kernel exists.
"""

from __future__ import annotations

import torch
from torch.nn import functional

from .base import Backend


class Dequant(Backend):
    name = "dequant"
    group_sizes = (16, 32, 64, 128, 256, 512, 1024)

    def unavailable(self, device: torch.device) -> str | None:
        return None

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        weight = layer.dequantized_weight(x.dtype)
        bias = None if layer.bias is None else layer.bias.to(x.dtype)
        return functional.linear(x, weight, bias)
