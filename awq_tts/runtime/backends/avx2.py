"""``avx2``: the project's own AWQ kernel for x86 CPUs with AVX2, integer dot products.

torch's CPU int4 kernel (``int4pack``) is compute-bound on AVX2 machines: it turns every
nibble into a float before a float multiply-add, so at batch 1 a talker step gains only
about 1.6× over bf16 although the weights are 3.8× smaller. This kernel
(``csrc/awq_gemm_avx2.c``: plain C with OpenMP, called through ctypes) quantizes the
activations per row and group to int16 (scale ``max|x| / 32767``) and multiplies nibble
pairs with ``_mm256_madd_epi16``: 64 multiply-adds per 32-byte load, no float conversion
in the inner loop. Each group's dot product is exact in int32 and the zero point is
applied in integers::

    out[n] = Σ_g  s[g,n] · xscale[g] · (Σ_{k∈g} xq[k]·q[n,k] − zp[g,n] · Σ_{k∈g} xq[k])

which is AWQ's ``(q − zp) · s`` regrouped. The one approximation is the int16 activation,
off by at most 2^-16 of its group's largest input: 256× finer than the bf16 rounding the
talker's activations already carry. Measured on this project's tests: relative error
against ``dequant`` ≤ 4e-5 per linear for float32 callers (5e-5 on the tiny talker's
logits, where ``int4pack`` gives 8e-7) and bf16 output rounding for bf16 callers;
teacher-forced talker-logit KL against ``dequant`` below 1e-3 on the trained tiny model
(``tests/test_backends.py``).

Speed (``benchmarks/decode.py``, 2-core AMD EPYC, full 1.7B shapes, batch 1): a talker
step 2.3–2.5× faster than bf16 where ``int4pack`` gives 1.6× on an AVX2-only EPYC, 4.0–4.3×
where it gives 3.4–4.0× on an AVX512 one. Rows go two at a time through each block; blocks
of 32 output columns are spread over torch's thread count (``torch.get_num_threads()`` at
each call). The integer path pays per row, so a bf16 caller's prefill of
:data:`GEMM_ROWS` rows or more goes another way: the weight is dequantized
``TILE`` columns at a time into a reused buffer (exact ``(q − z)·s`` rounded once to bf16,
``awq_dequant_bf16``; the tile stays in cache) for one bf16 matrix product each. A
130-token prefill of the 1.7B's talker: 1.3 s that way, 2.1 s on the integer path, 1.1 s
for bf16 weights.

The kernel is compiled once per machine on first use (:mod:`.native`, about a second);
without a C compiler, off Linux, or on a CPU without AVX2 the backend reports itself
unavailable and ``auto`` goes on to ``int4pack``. Layout: blocks of 32 columns × chunks of
8 inputs, each chunk 4 × 32 bytes; a 16-bit lane ``2i + p`` holds ``q[col_i, k + 2j + p]
<< 4j`` for ``j = 0..3`` (see the C file). :meth:`Avx2.restore_qweight` inverts it exactly.
"""

from __future__ import annotations

import ctypes
import threading

import torch

from ...format.packing import pack_int4, unpack_int4
from .base import Backend
from .native import kernel_function

BLOCK = 32
#: The C function's dtype codes; other callers run in float32.
DTYPES = {torch.float32: 0, torch.bfloat16: 1}
_ARGS = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
         ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
         ctypes.c_void_p, ctypes.c_int, ctypes.c_int)


#: From this many rows on (prefill), a bf16 caller's input meets the weight dequantized for
#: the call in bf16 matrix products: the integer path pays per row, the product mostly per
#: weight (equal at about 32 rows for a 2048→6144 linear on 2 EPYC cores).
GEMM_ROWS = 32
#: Output columns dequantized at a time: a tile of K × TILE bf16 (2–6 MB) stays in cache
#: for its matrix product instead of a whole weight going to DRAM and back.
TILE = 512
_local = threading.local()


_DEQUANT_ARGS = (*(ctypes.c_void_p,) * 3, *(ctypes.c_int64,) * 5, ctypes.c_void_p,
                 ctypes.c_int)


def _kernel():
    """The integer matmul ``awq_gemm_avx2``: ``(function, None)`` or ``(None, why not)``."""
    return kernel_function("awq_gemm_avx2", "awq_gemm_avx2", _ARGS, ctypes.c_int)


def _dequant():
    """Prefill's tile dequantization ``awq_dequant_bf16`` (same library)."""
    return kernel_function("awq_gemm_avx2", "awq_dequant_bf16", _DEQUANT_ARGS, None)[0]


def _scratch(numel: int) -> torch.Tensor:
    """This thread's bf16 buffer of at least ``numel`` elements, kept between calls (a new
    25 MB tensor per prefill linear would cost more in page faults than the dequant)."""
    buffer = getattr(_local, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = _local.buffer = torch.empty(numel, dtype=torch.bfloat16)
    return buffer[:numel]


class Avx2(Backend):
    name = "avx2"
    keeps_qweight = False

    def unavailable(self, device: torch.device) -> str | None:
        if device.type != "cpu":
            return "it runs on the CPU only"
        return _kernel()[1]

    def unfit(self, layer) -> str | None:
        if layer.out_features % BLOCK or layer.group_size % 8:
            return (f"shape {layer.in_features}→{layer.out_features} with group size "
                    f"{layer.group_size} (needs out_features divisible by {BLOCK} and a group "
                    f"size divisible by 8)")
        return super().unfit(layer)

    def prepare(self, layer, dtype: torch.dtype) -> None:
        codes = unpack_int4(layer.qweight, transposed=True)           # [N, K] uint8
        n, k = codes.shape
        lanes = codes.view(n // BLOCK, 4, 8, k // 8, 4, 2).permute(0, 3, 1, 2, 5, 4)
        weight = (lanes[..., 0::2] | lanes[..., 1::2] << 4).reshape(n // BLOCK, k // 8, 128)
        del codes, lanes
        tensors = dict(weight=weight.contiguous(), scales=layer.scales.float().contiguous(),
                       zeros=unpack_int4(layer.qzeros).contiguous())           # uint8
        if layer.bias is not None:
            tensors["bias"] = layer.bias.float().contiguous()
        layer.set_kernel_tensors(**tensors)

    def forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        buffers = layer._buffers              # one dict read each: nn.Module's lookup is slow
        scales, bias = buffers["kernel_scales"], buffers.get("kernel_bias")
        if not (x.is_cpu and scales.is_cpu and scales.dtype == torch.float32
                and (bias is None or bias.dtype == torch.float32)):
            # the C kernel reads raw pointers: a moved or cast layer must never reach it
            raise RuntimeError(f"the avx2 INT4 kernel's tensors were moved or cast after "
                               f"loading ({scales.device}, {scales.dtype}; input on "
                               f"{x.device}); load the model with the device and dtype it "
                               f"runs in (awq_tts.load(..., device=..., dtype=...))")
        if x.shape[-1] != layer.in_features:
            raise RuntimeError(f"an INT4 linear of {layer.in_features} inputs got an input of "
                               f"shape {tuple(x.shape)}")
        x2 = x.reshape(-1, x.shape[-1])
        if x2.dtype == torch.bfloat16 and x2.shape[0] >= GEMM_ROWS:
            return self._prefill(layer, x2).view(*x.shape[:-1], layer.out_features)
        if x2.dtype not in DTYPES:
            x2 = x2.float()
        x2 = x2.contiguous()
        out = torch.empty(x2.shape[0], layer.out_features, dtype=x2.dtype)
        code = DTYPES[x2.dtype]
        failed = _kernel()[0](
            x2.data_ptr(), code, x2.shape[0], x2.shape[1], buffers["kernel_weight"].data_ptr(),
            scales.data_ptr(), buffers["kernel_zeros"].data_ptr(),
            None if bias is None else bias.data_ptr(), layer.out_features, layer.group_size,
            out.data_ptr(), code, torch.get_num_threads())
        if failed:
            raise MemoryError("the avx2 INT4 kernel could not allocate its activation buffers")
        return out.to(x.dtype).view(*x.shape[:-1], layer.out_features)

    def _prefill(self, layer, x2: torch.Tensor) -> torch.Tensor:
        """Many bf16 rows: the weight dequantized for this call into a reused buffer (exact
        ``(q − z)·s``, rounded once to bf16, as a bf16 checkpoint's weight is) and one
        bf16 matrix product (the bias added to its bf16 result in float32)."""
        buffers = layer._buffers
        k, n = layer.in_features, layer.out_features
        x2, dequant = x2.contiguous(), _dequant()
        out = torch.empty(x2.shape[0], n, dtype=torch.bfloat16)
        for n0 in range(0, n, TILE):
            n1 = min(n0 + TILE, n)
            tile = _scratch(k * (n1 - n0)).view(k, n1 - n0)
            dequant(buffers["kernel_weight"].data_ptr(), buffers["kernel_scales"].data_ptr(),
                    buffers["kernel_zeros"].data_ptr(), k, n, layer.group_size, n0, n1,
                    tile.data_ptr(), torch.get_num_threads())
            out[:, n0:n1] = torch.mm(x2, tile)
        bias = buffers.get("kernel_bias")
        return out if bias is None else (out.float() + bias).to(torch.bfloat16)

    def restore_qweight(self, layer) -> torch.Tensor:
        weight = layer.kernel_weight.view(-1, layer.in_features // 8, 4, 8, 2, 2)
        nibbles = torch.stack([weight & 0xF, weight >> 4], dim=-1).flatten(-2)
        codes = nibbles.permute(0, 2, 3, 1, 5, 4).reshape(layer.out_features, layer.in_features)
        return pack_int4(codes.t())                                      # [K, N/8] int32
