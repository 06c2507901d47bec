"""``awq-triton``: AutoAWQ's own GEMM (``awq_ext`` when installed, else its Triton kernels).

CUDA only. Kept as a fallback and a comparison: it computes in fp16 (bf16 callers are
cast to fp16 and back, which can overflow on outlier channels) and its split-K path adds
partial sums with fp16 atomics, so repeated calls need not be bit-identical. It reads
the stored tensors as they are, so nothing is repacked.
"""

from __future__ import annotations

import torch

from .base import Backend, flatten


class AwqTriton(Backend):
    name = "awq-triton"
    group_sizes = (32, 64, 128)

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cuda":
            return "AutoAWQ's kernels run on CUDA only"
        try:
            from ..._compat import awq_gemm_function

            awq_gemm_function()
        except Exception as exc:  # any import failure means: not runnable here
            return f"AutoAWQ's GEMM does not import ({type(exc).__name__}: {exc})"
        return None

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        from ..._compat import awq_gemm_function

        flat = flatten(x, layer.in_features).half()
        out = awq_gemm_function().apply(
            flat.unsqueeze(0), layer.qweight, layer.qzeros, layer.scales, 4, layer.group_size,
            layer.bias, layer.out_features,
        )
        return out.reshape(*x.shape[:-1], layer.out_features).to(x.dtype)
