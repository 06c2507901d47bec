"""``Int4Linear``: an AWQ GEMM-packed linear that runs on CUDA and on the CPU.

State-dict names and layouts are AutoAWQ's ``WQLinear_GEMM`` (see
``awq_tts.quantize.packing``), so checkpoints are interchangeable. The forward dispatches
on the *input tensor's* device, not on an import-time flag:

* CUDA: AutoAWQ's GEMM function (``awq_ext`` when installed, else its Triton kernels),
  computing in fp16 inside and returning the caller's dtype;
* CPU: unpack and dequantize the weight for this call, matmul, and drop it — AutoAWQ's
  own forward would try its Triton kernel on CPU tensors and crash whenever triton is
  installed. No dequantized copy is cached, so resident memory stays INT4.
"""

from __future__ import annotations

import torch
from torch import nn

from ..quantize.packing import PackedLinear, dequantize_gemm


class Int4Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, group_size: int = 128,
                 bias: bool = False, device: torch.device | str | None = None) -> None:
        super().__init__()
        if in_features % group_size or out_features % 8:
            raise ValueError(f"Int4Linear({in_features}→{out_features}) needs in_features "
                             f"divisible by {group_size} and out_features by 8")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(in_features, out_features // 8,
                                                    dtype=torch.int32, device=device))
        self.register_buffer("qzeros", torch.zeros(groups, out_features // 8,
                                                   dtype=torch.int32, device=device))
        self.register_buffer("scales", torch.zeros(groups, out_features, dtype=torch.float16,
                                                   device=device))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float16,
                                                     device=device))
        else:
            self.bias = None

    @classmethod
    def from_packed(cls, packed: PackedLinear, group_size: int) -> Int4Linear:
        in_features, out_packed = packed.qweight.shape
        layer = cls(in_features, out_packed * 8, group_size, packed.bias is not None)
        layer.qweight, layer.qzeros, layer.scales = packed.qweight, packed.qzeros, packed.scales
        if packed.bias is not None:
            layer.bias = packed.bias
        return layer

    def packed(self) -> PackedLinear:
        return PackedLinear(self.qweight, self.qzeros, self.scales, self.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[out, in]`` weight in ``dtype`` (computed on demand, never stored)."""
        return dequantize_gemm(self.packed()).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return self._forward_cuda(x)
        weight = self.dequantized_weight(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return nn.functional.linear(x, weight, bias)

    def _forward_cuda(self, x: torch.Tensor) -> torch.Tensor:
        from .._compat import awq_gemm_function

        shape = (*x.shape[:-1], self.out_features)
        flat = x.reshape(-1, x.shape[-1]).half()
        out = awq_gemm_function().apply(
            flat.unsqueeze(0), self.qweight, self.qzeros, self.scales, 4, self.group_size,
            self.bias, self.out_features,
        )
        return out.reshape(shape).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bits=4, bias={self.bias is not None}")
