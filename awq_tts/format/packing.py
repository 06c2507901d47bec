"""AutoAWQ's GEMM packed INT4 format, field by field, with vectorised pack and unpack.

For a linear layer with ``in_features = I``, ``out_features = O`` and group size ``G``
(``O`` divisible by 8, ``I`` by ``G``), a checkpoint stores per layer:

=========  =======  ============  =====================================================
field      dtype    shape         content
=========  =======  ============  =====================================================
qweight    int32    [I, O/8]      the 4-bit codes ``q[o, i]``, transposed to input-major;
                                  int32 word ``qweight[i, c]`` holds the codes of output
                                  columns ``8c .. 8c+7`` of input row ``i``
qzeros     int32    [I/G, O/8]    the 4-bit zero points ``zero[o, g]``, packed the same way
                                  along the output dimension
scales     float16  [I/G, O]      one scale per (group, output column)
bias       float16  [O]           only when the source linear has a bias
=========  =======  ============  =====================================================

Nibble order inside a word: bits ``4k .. 4k+3`` hold column ``8c + ORDER[k]`` with
``ORDER = [0, 2, 4, 6, 1, 3, 5, 7]`` — the interleave AutoAWQ's CUDA and Triton kernels
read. Words are two's-complement int32 (a code of 8..15 in the top nibble makes the word
negative). Dequantization: ``w[o, i] = (q[o, i] - zero[o, i // G]) * scale[i // G, o]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PACK = 8
ORDER = (0, 2, 4, 6, 1, 3, 5, 7)


def _pack_rows(codes: torch.Tensor) -> torch.Tensor:
    """Pack ``[8K, X]`` codes along dim 0 into int32 ``[K, X]`` (rows 8k..8k+7 per word).

    Eight shifted ORs in int32: the top nibble wraps into the sign bit exactly as the
    two's-complement words AutoAWQ writes. Each row slice is contiguous, so no full
    transpose or int32 copy of the code matrix is ever made.
    """
    rows, cols = codes.shape
    if rows % PACK:
        raise ValueError(f"cannot pack {rows} columns: not a multiple of {PACK}")
    c = codes.reshape(rows // PACK, PACK, cols)
    words = c[:, ORDER[0], :].to(torch.int32)
    for k in range(1, PACK):
        words |= c[:, ORDER[k], :].to(torch.int32) << (4 * k)
    return words


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Pack ``[R, C]`` integer codes in [0, 15] into int32 ``[R, C/8]`` with AWQ's order."""
    return _pack_rows(codes.t()).t().contiguous()


def unpack_int4(words: torch.Tensor, dtype: torch.dtype = torch.uint8,
                transposed: bool = False) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int32 ``[R, C/8]`` to codes ``[R, C]`` in ``dtype``
    (``[C, R]`` when ``transposed``, the output-major layout kernels pack from).

    Eight shifted ANDs in int32, each written straight into its place in the result: no
    int64, gathered or transposed copy of the codes (10× faster than that on a CPU; it
    runs for every INT4 linear when a backend prepares its layout at load).
    """
    rows, packed = words.shape
    if transposed:
        out = torch.empty(packed, PACK, rows, dtype=dtype, device=words.device)
        source, place = words.t().contiguous(), lambda column: out[:, column, :]
    else:
        out = torch.empty(rows, packed, PACK, dtype=dtype, device=words.device)
        source, place = words, lambda column: out[:, :, column]
    for k, column in enumerate(ORDER):
        place(column).copy_((source >> (4 * k)) & 0xF)
    return out.reshape(packed * PACK, rows) if transposed else out.reshape(rows, packed * PACK)


@dataclass
class PackedLinear:
    """The tensors one INT4 GEMM linear is stored as (see the module docstring)."""

    qweight: torch.Tensor
    qzeros: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None = None

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        out = {f"{prefix}.qweight": self.qweight, f"{prefix}.qzeros": self.qzeros,
               f"{prefix}.scales": self.scales}
        if self.bias is not None:
            out[f"{prefix}.bias"] = self.bias
        return out


def pack_gemm(
    q: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> PackedLinear:
    """Pack codes ``q [O, I]``, ``scales`` and ``zeros`` ``[O, I/G]`` into the GEMM layout."""
    return PackedLinear(
        qweight=_pack_rows(q).t().contiguous(),
        qzeros=_pack_rows(zeros.to(torch.uint8)).t().contiguous(),
        scales=scales.t().contiguous().half(),
        bias=None if bias is None else bias.detach().half(),
    )


def unpack_gemm(packed: PackedLinear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes ``[O, I]``, float32 scales and zeros ``[O, I/G]`` from a packed linear."""
    q = unpack_int4(packed.qweight).t().contiguous()
    zeros = unpack_int4(packed.qzeros).t().float().contiguous()
    return q, packed.scales.t().float().contiguous(), zeros


def dequantize_gemm(packed: PackedLinear) -> torch.Tensor:
    """float32 weight ``[O, I]`` of a packed linear."""
    q, scales, zeros = unpack_gemm(packed)
    group_size = q.shape[1] // scales.shape[1]
    g = q.float().reshape(q.shape[0], scales.shape[1], group_size)
    return ((g - zeros[..., None]) * scales[..., None]).reshape(q.shape)
