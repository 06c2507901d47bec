"""The recipe of a quantization run and what it reports, per layer and as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import torch

from ..format.packing import PackedLinear
from . import numerics

#: Default token budget of the search losses (see ``sample.py`` and
#: ``benchmarks/loss_budget.py``: 512 is the smallest budget within 1 % of the all-tokens
#: error on the trained tiny model and on a real-shape layer; 2048 keeps a margin).
LOSS_TOKENS = 2048

#: "awq" (scale + clip search) or "rtn" (plain round-to-nearest, the baseline).
Method = Literal["awq", "rtn"]
METHODS: tuple[str, ...] = get_args(Method)
#: The dtypes the layer inputs may be kept in between layers.
ActivationDtype = Literal["float32", "bfloat16"]
ACTIVATION_DTYPES: tuple[str, ...] = get_args(ActivationDtype)


@dataclass(frozen=True)
class QuantConfig:
    group_size: int = 128
    n_grid: int = 20
    max_shrink: float = 0.5
    clip_tokens: int = 512
    #: Tokens the grid-search and clip losses replay (``None``: all); statistics use all.
    loss_tokens: int | None = LOSS_TOKENS
    batch_size: int = 8
    seed: int = 1729
    method: Method = "awq"
    #: Keep the layer inputs and outputs on the CPU instead of the quantization device
    #: (for GPUs under 8 GB); the numerics are the same either way.
    offload_activations: bool = False
    #: The dtype the layer inputs are kept in between layers: bfloat16 is what a bf16
    #: model's next layer reads at inference and half the memory of float32 (the search
    #: still computes in float32). "float32" reproduces outputs made before bf16 became the default.
    activation_dtype: ActivationDtype = "bfloat16"

    def as_quantization_config(self, not_converted: list[str]) -> dict:
        """The ``quantization_config`` block of ``config.json`` (transformers' AWQ schema)."""
        return {
            "quant_method": "awq",
            "bits": numerics.BITS,
            "group_size": self.group_size,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": not_converted,
        }


@dataclass
class LayerReport:
    index: int
    awq_error: float
    rtn_error: float
    fallback_to_rtn: bool
    linears: dict[str, dict] = field(default_factory=dict)
    #: Wall time of this layer's search, fold, clip and packing.
    seconds: float = 0.0
    #: Mean squared error of the quantized layer's output over *every* calibration token
    #: (``awq_error`` and ``rtn_error`` are measured on the loss sample, like for like).
    output_error: float = 0.0


@dataclass
class WalkResult:
    packed: dict[str, PackedLinear]
    changed: dict[str, torch.Tensor]
    layers: list[LayerReport]
    #: Tokens the search losses replayed (the drawn sample of ``config.loss_tokens``).
    loss_tokens: int = 0
