"""AutoAWQ GEMM tensors → compressed-tensors ``pack-quantized``, losslessly.

Per packed linear ``P`` (AWQ codes ``q`` and zeros ``z`` in [0, 15], fp16 scales ``s``,
``w = (q − z)·s``), compressed-tensors stores signed codes and zero points, so the same
weight is ``w = ((q − 8) − (z − 8))·s``:

* ``P.weight_packed``     int32 ``[out, in/8]``: ``q − 8`` packed along the input dim;
* ``P.weight_zero_point`` int32 ``[out/8, groups]``: ``z − 8`` packed along the output dim;
* ``P.weight_scale``      fp16 ``[out, groups]``: the AWQ scales, transposed, same bits;
* ``P.weight_shape``      int32 ``[2]``: ``(out, in)``.

The packing is compressed-tensors' own ``pack_to_int32``. The version is pinned in the
``export`` extra: 0.14.0.1 is the one release whose loader and transformers 4.57.3 agree on
the packed zero-point layout (0.12.x cannot decompress packed zero points; 0.15–0.17
leave the linears without a weight; 0.18–0.20 expect zero points unpacked).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch

from ..errors import UsageError
from ..format.packing import PackedLinear, unpack_gemm
from ..models.mapping import LayerMapping, float_linears, target_pattern

#: The compressed-tensors release this converter is tested against (see the module doc).
PINNED = "0.14.0.1"


def pack_to_int32():
    """compressed-tensors' own packer (a clear error when the extra is not installed)."""
    try:
        version = importlib.metadata.version("compressed-tensors")
    except importlib.metadata.PackageNotFoundError:
        raise UsageError("the compressed-tensors export needs the export extra: "
                         "pip install 'awq-tts[export]'") from None
    if version != PINNED:
        raise UsageError(f"compressed-tensors {version} is installed; the export is tested "
                         f"with {PINNED} only (pip install 'compressed-tensors=={PINNED}')")
    from compressed_tensors.compressors.quantized_compressors.pack_quantized import (
        pack_to_int32 as pack,
    )

    return pack


def convert_linear(prefix: str, packed: PackedLinear, pack) -> dict[str, torch.Tensor]:
    """The compressed-tensors tensors of one AWQ GEMM linear (bias carried as is)."""
    q, scales, zeros = unpack_gemm(packed)
    out = {
        f"{prefix}.weight_packed": pack((q.to(torch.int16) - 8).to(torch.int8), 4),
        f"{prefix}.weight_zero_point": pack((zeros.to(torch.int16) - 8).to(torch.int8), 4,
                                            packed_dim=0).contiguous(),
        f"{prefix}.weight_scale": packed.scales.t().contiguous(),
        f"{prefix}.weight_shape": torch.tensor(list(q.shape), dtype=torch.int32),
    }
    if not torch.equal(out[f"{prefix}.weight_scale"].float(), scales):
        raise RuntimeError(f"{prefix}: scales did not survive the transpose")
    if packed.bias is not None:
        out[f"{prefix}.bias"] = packed.bias
    return out


def quantization_config(group_size: int, ignore: list[str], mapping: LayerMapping) -> dict:
    """The ``quantization_config`` compressed-tensors and transformers read; the quantized
    decoder linears are its only target."""
    return {
        "quant_method": "compressed-tensors",
        "format": "pack-quantized",
        "quantization_status": "compressed",
        "config_groups": {"group_0": {
            "targets": [f"re:.*{target_pattern(mapping)}"],
            "weights": {"num_bits": 4, "type": "int", "symmetric": False, "strategy": "group",
                        "group_size": group_size, "dynamic": False, "observer": "minmax"},
            "input_activations": None,
            "output_activations": None,
            "format": "pack-quantized",
        }},
        "ignore": ignore,
        "kv_cache_scheme": None,
    }


def untouched_linears(folder: Path, adapter) -> list[str]:
    """Every ``nn.Linear`` of the model outside the quantized layers (built on meta)."""
    return float_linears(adapter.empty_model(folder), adapter.mapping)
