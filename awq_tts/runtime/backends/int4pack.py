"""``int4pack``: torch's own INT4 kernels (tinygemm), on the CPU and on CUDA.

* CPU: ``aten._convert_weight_to_int4pack_for_cpu`` once, then
  ``aten._weight_int4pack_mm_for_cpu`` per call; activations in bf16 (fast) or float32
  (exact), float16 callers are run in float32.
* CUDA (compute capability ≥ 8.0): ``aten._convert_weight_to_int4pack`` on the uint8
  nibble pairs (even column in the high nibble), then ``aten._weight_int4pack_mm``; the
  kernel computes in bf16, so other callers are cast to bf16 and back.

**Zero point.** tinygemm dequantizes ``w = (q − 8) · s + z`` with a float zero ``z``;
AWQ stores an integer zero point ``zp`` with ``w = (q − zp) · s``. So ``z = (8 − zp) · s``,
computed in float32 from the fp16 scale and rounded once to the kernel dtype. In float32
the conversion is exact. In bf16 the scale and ``z`` each lose bf16 rounding (8 mantissa
bits against fp16's 11); that is the whole difference from ``dequant``.

Measured on this project's tests (random 2048-wide linears and the trained tiny model):
float32 callers match ``dequant`` to float32 round-off (relative error ≤ 1e-5); bf16
callers to ≤ 1.5e-2 relative error per linear (bf16 output rounding of both sides
included), and the teacher-forced talker-logit KL between ``int4pack`` and ``dequant``
stays below 1e-3 on the trained tiny model (``tests/test_backends.py``).

The kernel layout replaces ``qweight`` (same bytes: uint8 ``[N, K/2]`` on the CPU, int32
tiles on CUDA); :meth:`Int4Pack.restore_qweight` gets the exact codes back by running the
kernel on an identity matrix with unit scales and ``z = 8``.
"""

from __future__ import annotations

import torch

from ...format.packing import pack_int4, unpack_int4
from .base import Backend, flatten

_CPU_DTYPES = (torch.bfloat16, torch.float32)


def _inner_k_tiles(in_features: int) -> int:
    return next(t for t in (8, 4, 2) if in_features % (16 * t) == 0)


class Int4Pack(Backend):
    name = "int4pack"
    keeps_qweight = False

    def unavailable(self, device: torch.device) -> str | None:
        if device.type == "cpu":
            if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
                return "this torch build has no aten._weight_int4pack_mm_for_cpu"
            return None
        if device.type == "cuda":
            if torch.cuda.get_device_capability(device) < (8, 0):
                return "torch's CUDA int4 kernel needs compute capability 8.0 or newer"
            return None
        return f"no int4 kernel for {device.type}"

    def unfit(self, layer) -> str | None:
        if layer.in_features % 32 or layer.out_features % 8:
            return (f"shape {layer.in_features}→{layer.out_features} (needs in_features "
                    f"divisible by 32 and out_features by 8)")
        return super().unfit(layer)

    @staticmethod
    def kernel_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
        if device.type == "cuda":
            return torch.bfloat16
        return dtype if dtype in _CPU_DTYPES else torch.float32

    def prepare(self, layer, dtype: torch.dtype) -> None:
        device = layer.qweight.device
        kdtype = self.kernel_dtype(device, dtype)
        if device.type == "cuda":
            codes = unpack_int4(layer.qweight, transposed=True)       # [N, K] uint8
            pairs = (codes[:, ::2] << 4 | codes[:, 1::2]).contiguous()
            weight = torch.ops.aten._convert_weight_to_int4pack(pairs, _inner_k_tiles(
                layer.in_features))
        else:
            codes = unpack_int4(layer.qweight, torch.int32, transposed=True)  # [N, K]
            weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
        del codes
        scales = layer.scales.float()                                  # [K/G, N]
        zeros = unpack_int4(layer.qzeros).float()
        table = torch.stack([scales, (8.0 - zeros) * scales], dim=-1).to(kdtype).contiguous()
        layer.set_kernel_tensors(weight=weight, scales_and_zeros=table)

    def _mm(self, x2: torch.Tensor, weight: torch.Tensor, group: int,
            table: torch.Tensor) -> torch.Tensor:
        if x2.is_cuda:
            return torch.ops.aten._weight_int4pack_mm(x2, weight, group, table)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2, weight, group, table)

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        weight, table = layer.kernel_weight, layer.kernel_scales_and_zeros
        x2 = flatten(x, layer.in_features)
        if x2.dtype != table.dtype:
            x2 = x2.to(table.dtype)
        out = self._mm(x2, weight, layer.group_size, table)
        if layer.bias is not None:
            out = out + layer.bias.to(out.dtype)
        return out.to(x.dtype).reshape(*x.shape[:-1], layer.out_features)

    def restore_qweight(self, layer) -> torch.Tensor:
        weight, table = layer.kernel_weight, layer.kernel_scales_and_zeros
        unit = torch.empty_like(table)
        unit[..., 0], unit[..., 1] = 1.0, 8.0
        rows = []
        for start in range(0, layer.in_features, 1024):
            stop = min(start + 1024, layer.in_features)
            eye = torch.zeros(stop - start, layer.in_features, dtype=table.dtype,
                              device=weight.device)
            eye[:, start:stop].fill_diagonal_(1.0)
            rows.append(self._mm(eye, weight, layer.group_size, unit).round().to(torch.uint8))
        return pack_int4(torch.cat(rows))                              # [K, N/8] int32
