"""Which modules of a Qwen3-TTS talker decoder layer AWQ scales and quantizes — as data.

A :class:`ScaleGroup` says: the output channels of ``prev`` (a norm or a linear) feed the
input channels of ``linears``; a per-channel scale ``s`` can be folded as
``prev /= s, linears *= s`` without changing the function; ``block`` is the module whose
output measures the quantization error of that group. The description is resolved
against the live module tree; a missing or mistyped module raises a ``MappingError``
that names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn


class MappingError(LookupError):
    """The model's module tree does not match the declared mapping."""


@dataclass(frozen=True)
class ScaleGroup:
    prev: str
    linears: tuple[str, ...]
    block: str
    #: Skip (instead of failing) when ``prev``'s output width differs from the linears'
    #: input width — true of v_proj → o_proj under grouped-query attention.
    skip_on_shape_mismatch: bool = False
    #: The block is the attention module: it takes the layer's keyword inputs
    #: (position embeddings, attention mask, ...), not just the hidden states.
    block_takes_layer_kwargs: bool = False


@dataclass(frozen=True)
class LayerMapping:
    layers: str
    quantized: tuple[str, ...]
    groups: tuple[ScaleGroup, ...]
    #: Linears whose range is never clipped (AWQ: attention scores are too sensitive).
    no_clip: tuple[str, ...] = ()
    #: Keyword inputs of a decoder layer that the block needs, and their batch dimension.
    layer_kwargs: tuple[tuple[str, int], ...] = ()
    #: Modules the layer walk still runs once calibration is done (all else is freed).
    keep_for_walk: tuple[str, ...] = ()
    #: Modules besides the float linears that AWQ loaders must leave unconverted.
    not_converted: tuple[str, ...] = ()


QWEN3_TTS_TALKER = LayerMapping(
    layers="talker.model.layers",
    quantized=(
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ),
    groups=(
        ScaleGroup(
            "input_layernorm",
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            "self_attn",
            block_takes_layer_kwargs=True,
        ),
        ScaleGroup(
            "self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj",
            skip_on_shape_mismatch=True,
        ),
        ScaleGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
        ScaleGroup("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
    ),
    no_clip=("self_attn.q_proj", "self_attn.k_proj"),
    # position_embeddings is a (cos, sin) pair shaped (3, B, T, head_dim): multimodal rope.
    layer_kwargs=(
        ("position_embeddings", 1),
        ("attention_mask", 0),
        ("position_ids", 0),
        ("cache_position", -1),
    ),
    # capture_first_layer's forward up to the first decoder layer needs the rotary
    # embedding, nothing else.
    keep_for_walk=("talker.model.rotary_emb",),
    not_converted=("speaker_encoder",),
)


@dataclass
class ResolvedGroup:
    spec: ScaleGroup
    prev: nn.Module
    linears: list[nn.Linear]
    block: nn.Module


def get_module(root: nn.Module, path: str) -> nn.Module:
    """``root``'s submodule at dotted ``path``, or a MappingError naming the missing part."""
    module = root
    walked = []
    for part in path.split("."):
        walked.append(part)
        if not hasattr(module, part) or not isinstance(getattr(module, part), nn.Module):
            raise MappingError(
                f"module '{'.'.join(walked)}' not found under {type(root).__name__} "
                f"(mapping path '{path}')"
            )
        module = getattr(module, part)
    return module


def decoder_layers(model: nn.Module, mapping: LayerMapping = QWEN3_TTS_TALKER) -> nn.ModuleList:
    layers = get_module(model, mapping.layers)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise MappingError(f"'{mapping.layers}' is not a non-empty ModuleList")
    return layers


def float_linears(model: nn.Module, mapping: LayerMapping) -> list[str]:
    """Every ``nn.Linear`` of ``model`` outside the quantized decoder layers (stays float)."""
    prefix = mapping.layers + "."
    return sorted(name for name, module in model.named_modules()
                  if isinstance(module, nn.Linear) and not name.startswith(prefix))


def target_pattern(mapping: LayerMapping) -> str:
    """A regular expression matching the full name of every quantized linear."""
    names = "|".join(re.escape(name) for name in mapping.quantized)
    return rf"{re.escape(mapping.layers)}\.\d+\.({names})$"


def quantized_linears(layer: nn.Module, mapping: LayerMapping = QWEN3_TTS_TALKER) -> dict:
    """The layer's linears to quantize, by their path inside the layer."""
    out = {}
    for path in mapping.quantized:
        module = get_module(layer, path)
        if not isinstance(module, nn.Linear):
            raise MappingError(f"'{path}' is {type(module).__name__}, expected nn.Linear")
        out[path] = module
    return out


def resolve_groups(
    layer: nn.Module, mapping: LayerMapping = QWEN3_TTS_TALKER
) -> list[ResolvedGroup]:
    """Bind the scale groups to ``layer``'s modules, dropping groups whose shapes forbid it."""
    resolved = []
    for spec in mapping.groups:
        prev = get_module(layer, spec.prev)
        linears = [get_module(layer, p) for p in spec.linears]
        width = _out_width(prev, spec.prev)
        pairs = zip(spec.linears, linears, strict=True)
        mismatched = [p for p, lin in pairs if lin.in_features != width]
        if mismatched:
            if spec.skip_on_shape_mismatch:
                continue
            raise MappingError(
                f"'{spec.prev}' outputs {width} channels but {mismatched} take "
                f"{linears[0].in_features}"
            )
        resolved.append(ResolvedGroup(spec, prev, linears, get_module(layer, spec.block)))
    return resolved


def _out_width(module: nn.Module, path: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    weight = getattr(module, "weight", None)
    if weight is None or weight.ndim != 1:
        raise MappingError(f"'{path}' is neither a Linear nor a norm with a 1-D weight")
    return weight.shape[0]
