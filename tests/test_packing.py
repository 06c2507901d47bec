"""The GEMM packed format: bit-exact with AutoAWQ, lossless round trips, correct values."""

from __future__ import annotations

import pytest
import torch

from awq_tts._compat import wqlinear_gemm
from awq_tts.format.packing import (
    dequantize_gemm,
    pack_gemm,
    pack_int4,
    unpack_gemm,
    unpack_int4,
)
from awq_tts.quantizer import numerics


def _quantized(out_f: int, in_f: int, seed: int, group: int = 128):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=gen) * 0.05
    scales, zeros = numerics.compute_qparams(w, group)
    q = numerics.quantize(w, scales, zeros, group)
    return w, q, scales, zeros


@pytest.mark.parametrize("shape", [(64, 128), (256, 256), (128, 512), (1024, 256)])
@pytest.mark.parametrize("bias", [False, True])
def test_bit_exact_with_autoawq_from_linear(shape, bias):
    out_f, in_f = shape
    w, q, scales, zeros = _quantized(out_f, in_f, seed=out_f + in_f)
    linear = torch.nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(numerics.dequantize(q, scales, zeros, 128))
    reference = wqlinear_gemm().from_linear(
        linear, 4, 128, scales=scales.t().contiguous(), zeros=zeros.t().contiguous()
    )
    ours = pack_gemm(q, scales, zeros, linear.bias)
    assert torch.equal(ours.qweight, reference.qweight)
    assert torch.equal(ours.qzeros, reference.qzeros)
    assert torch.equal(ours.scales, reference.scales)
    if bias:
        assert torch.equal(ours.bias, reference.bias)


def test_unpack_inverts_pack_for_every_code():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (37, 64), generator=gen, dtype=torch.uint8)
    codes[0, :16] = torch.arange(16, dtype=torch.uint8)
    words = pack_int4(codes)
    assert words.dtype == torch.int32 and words.shape == (37, 8)
    assert (words < 0).any(), "codes ≥ 8 in the top nibble must give negative int32 words"
    assert torch.equal(unpack_int4(words), codes)
    by_output = unpack_int4(words, torch.int32, transposed=True)  # what kernels pack from
    assert by_output.dtype == torch.int32 and by_output.is_contiguous()
    assert torch.equal(by_output, codes.t().int())


def test_unpack_gemm_round_trip_and_dequantized_values():
    w, q, scales, zeros = _quantized(256, 512, seed=3)
    packed = pack_gemm(q, scales, zeros)
    q2, s2, z2 = unpack_gemm(packed)
    assert torch.equal(q2, q) and torch.equal(s2, scales) and torch.equal(z2, zeros)
    deq = dequantize_gemm(packed)
    fake = numerics.fake_quantize(w, 128)
    step = scales.repeat_interleave(128, dim=1)
    assert torch.all((deq - fake).abs() <= step / 2), "packed weights must decode to the grid"
    assert torch.equal(deq, fake)
    interior = (q > 0) & (q < 15)
    assert torch.all((deq - w).abs()[interior] <= step[interior] / 2 * (1 + 1e-3))
    assert torch.all((deq - w).abs() <= step * (1 + 1e-3))


def test_packing_rejects_bad_widths():
    with pytest.raises(ValueError, match="multiple of 8"):
        pack_int4(torch.zeros(4, 12, dtype=torch.uint8))
    with pytest.raises(ValueError, match="not divisible by group_size"):
        numerics.compute_qparams(torch.zeros(8, 100), 128)
