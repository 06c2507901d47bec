"""Walk the talker's decoder layers and quantize each one with AWQ.

For each layer, in order: record the inputs of its linears on the calibration batch;
search per-channel scales for every scale group (block-output error against the
unquantized block); fold them into the preceding norm or linear; search each linear's
clip range; quantize and pack; then run the *quantized* layer to produce the next layer's
inputs, so errors propagate as they will at inference. One layer at a time is moved to
the compute device and converted to float32.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from . import numerics
from .activations import LayerInputs, capture_first_layer, float_kwargs, record_linear_inputs
from .mapping import (
    QWEN3_TTS_TALKER,
    LayerMapping,
    ResolvedGroup,
    decoder_layers,
    quantized_linears,
    resolve_groups,
)
from .packing import PackedLinear, pack_gemm
from .search import search_clip, search_scales


@dataclass(frozen=True)
class QuantConfig:
    group_size: int = 128
    n_grid: int = 20
    max_shrink: float = 0.5
    clip_tokens: int = 512
    batch_size: int = 8
    seed: int = 1729
    #: "awq" (scale + clip search) or "rtn" (plain round-to-nearest, the baseline).
    method: str = "awq"

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


@dataclass
class WalkResult:
    packed: dict[str, PackedLinear]
    changed: dict[str, torch.Tensor]
    layers: list[LayerReport]


@torch.no_grad()
def walk(
    model: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    config: QuantConfig,
    device: str | torch.device = "cpu",
    mapping: LayerMapping = QWEN3_TTS_TALKER,
) -> Iterator[LayerReport | WalkResult]:
    """Quantize every talker decoder layer; yields one report per layer, then the result."""
    device = torch.device(device)
    talker = model.talker
    layers = decoder_layers(model, mapping)
    position_ids, _ = talker.get_rope_index(mask)
    hidden, kwargs = capture_first_layer(talker.model, layers[0], embeds.to(talker.dtype), mask,
                                         position_ids)
    batch_dims = dict(mapping.layer_kwargs)
    inputs = LayerInputs(hidden, float_kwargs(kwargs), mask.bool(), batch_dims, device,
                         config.batch_size)
    inputs.hidden[~inputs.valid] = 0
    result = WalkResult({}, {}, [])
    for index, layer in enumerate(layers):
        prefix = f"{mapping.layers}.{index}"
        source_dtype = next(layer.parameters()).dtype
        started = time.perf_counter()
        layer.to(device=device, dtype=torch.float32)
        report, next_hidden = quantize_layer(layer, index, prefix, inputs, config, mapping,
                                              source_dtype, result)
        layer.to(device="cpu", dtype=source_dtype)
        next_hidden[~inputs.valid] = 0
        inputs.hidden = next_hidden
        report.seconds = time.perf_counter() - started
        result.layers.append(report)
        yield report
    yield result


@torch.no_grad()
def quantize_layer(
    layer: nn.Module,
    index: int,
    prefix: str,
    inputs: LayerInputs,
    config: QuantConfig,
    mapping: LayerMapping,
    source_dtype: torch.dtype,
    result: WalkResult,
) -> tuple[LayerReport, torch.Tensor]:
    """AWQ-quantize one float32 decoder layer in place; return its report and output.

    The packed linears and folded norms go into ``result`` under ``prefix``. The layer's
    weights end up as the dequantized INT4 weights, so its output (returned, computed on
    ``inputs``) is what the next layer will see at inference.
    """
    linears = quantized_linears(layer, mapping)
    if config.method == "rtn":
        return _rtn_layer(layer, index, prefix, linears, inputs, config, result)
    groups = resolve_groups(layer, mapping)
    original = copy.deepcopy(layer)
    source_of = _input_sources(linears, groups)
    fp_out, captured = record_linear_inputs(
        layer, {name: linears[name] for name in set(source_of.values())}, inputs
    )
    report = LayerReport(index, 0.0, 0.0, False)
    scales_for: dict[str, torch.Tensor] = {}
    for group in groups:
        x = captured[source_of[group.spec.linears[0]]]
        choice = _search_group(group, x, inputs, config)
        for path in group.spec.linears:
            scales_for[path] = choice.scales
            report.linears[path] = {
                "block": group.spec.block,
                "awq_block_error": choice.awq_error,
                "rtn_block_error": choice.rtn_error,
                "scale_ratio": choice.ratio,
            }
    for group, scales in _group_scales(groups, scales_for):
        _fold(group, scales.to(inputs.device), source_dtype)
    quantized = {}
    for path, lin in linears.items():
        x = captured[source_of[path]]
        scales = scales_for.get(path)
        clip = None
        if path not in mapping.no_clip:
            tokens = _sample_tokens(inputs.valid_tokens(x), config.clip_tokens)
            if scales is not None:
                tokens = tokens / scales
            clip = search_clip(lin.weight.detach().cpu(), tokens, config.group_size,
                               config.n_grid, config.max_shrink)
        quantized[path] = _quantize_linear(lin, clip, config.group_size)
        if path not in report.linears:
            report.linears[path] = _own_block_errors(original.get_submodule(path), lin, x,
                                                     inputs, config.group_size)
            report.linears[path]["block"] = path
        report.linears[path]["clipped"] = clip is not None
    q_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    report.awq_error = _masked_mse(q_out, fp_out, inputs.valid)
    rtn_out = _rtn_output(original, linears, inputs, config.group_size)
    report.rtn_error = _masked_mse(rtn_out, fp_out, inputs.valid)
    if report.awq_error > report.rtn_error:
        layer.load_state_dict(original.state_dict())
        quantized = {p: _quantize_linear(lin, None, config.group_size)
                     for p, lin in quantized_linears(layer, mapping).items()}
        report.fallback_to_rtn, report.awq_error = True, report.rtn_error
        q_out = rtn_out
    for path, packed in quantized.items():
        result.packed[f"{prefix}.{path}"] = packed
    if not report.fallback_to_rtn:
        for group in groups:
            if not isinstance(group.prev, nn.Linear):
                name = f"{prefix}.{group.spec.prev}.weight"
                result.changed[name] = group.prev.weight.detach().to(source_dtype).cpu().clone()
    return report, q_out


def _rtn_layer(layer, index, prefix, linears, inputs, config, result):
    """Round-to-nearest baseline: no scales, no clipping."""
    fp_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    for path, lin in linears.items():
        result.packed[f"{prefix}.{path}"] = _quantize_linear(lin, None, config.group_size)
    q_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    error = _masked_mse(q_out, fp_out, inputs.valid)
    return LayerReport(index, error, error, False, {}), q_out


def _input_sources(linears: dict, groups: list[ResolvedGroup]) -> dict[str, str]:
    """Linears that share an input (q/k/v, gate/up) are recorded once, under the first."""
    source = {path: path for path in linears}
    for group in groups:
        for path in group.spec.linears:
            source[path] = group.spec.linears[0]
    return source


@torch.no_grad()
def _search_group(group: ResolvedGroup, x: torch.Tensor, inputs: LayerInputs,
                  config: QuantConfig):
    block = group.block
    if group.spec.block_takes_layer_kwargs:
        def fn(chunk, kw):
            return block(hidden_states=chunk, **kw)[0]
    else:
        def fn(chunk, _kw):
            return block(chunk)
    ref = inputs.run(fn, x)
    x_mean = inputs.valid_tokens(x).abs().mean(dim=0)
    return search_scales(group.linears, x_mean, lambda: inputs.error(fn, x, ref),
                         config.group_size, config.n_grid)


def _group_scales(groups, scales_for):
    for group in groups:
        scales = scales_for[group.spec.linears[0]]
        if not torch.all(scales == 1):
            yield group, scales


@torch.no_grad()
def _fold(group: ResolvedGroup, scales: torch.Tensor, source_dtype: torch.dtype) -> None:
    """``prev /= s`` on its output channels, ``linears *= s`` on their input channels.

    A folded norm is rounded to the source dtype at once: that is the weight inference
    will use, so the quantized linears are fitted against it.
    """
    prev = group.prev
    if isinstance(prev, nn.Linear):
        prev.weight.div_(scales[:, None])
        if prev.bias is not None:
            prev.bias.div_(scales)
    else:
        prev.weight.copy_((prev.weight / scales).to(source_dtype).float())
    for lin in group.linears:
        lin.weight.mul_(scales[None, :])


@torch.no_grad()
def _quantize_linear(lin: nn.Linear, clip: torch.Tensor | None, group_size: int) -> PackedLinear:
    """Quantize ``lin`` in place (its weight becomes the dequantized INT4 weight) and pack."""
    w = lin.weight.detach().float().cpu()
    scales, zeros = numerics.compute_qparams(w, group_size, None if clip is None else clip)
    q = numerics.quantize(w, scales, zeros, group_size)
    lin.weight.copy_(numerics.dequantize(q, scales, zeros, group_size).to(lin.weight.device))
    return pack_gemm(q, scales, zeros, lin.bias)


@torch.no_grad()
def _rtn_output(original: nn.Module, linears: dict, inputs: LayerInputs,
                group_size: int) -> torch.Tensor:
    rtn = copy.deepcopy(original)
    for path in linears:
        lin = rtn.get_submodule(path)
        lin.weight.copy_(numerics.fake_quantize(lin.weight, group_size))
    return inputs.run(lambda x, kw: rtn(x, **kw)[0])


@torch.no_grad()
def _own_block_errors(source: nn.Linear, quantized: nn.Linear, x: torch.Tensor,
                      inputs: LayerInputs, group_size: int) -> dict:
    """AWQ (clipped) and RTN output error of a linear that has no scale group of its own."""
    rtn_weight = numerics.fake_quantize(source.weight, group_size)

    def rtn(chunk, _kw):
        return torch.nn.functional.linear(chunk, rtn_weight, source.bias)

    ref = inputs.run(lambda chunk, _kw: source(chunk), x)
    return {
        "awq_block_error": inputs.error(lambda chunk, _kw: quantized(chunk), x, ref),
        "rtn_block_error": inputs.error(rtn, x, ref),
        "scale_ratio": None,
    }


def _masked_mse(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> float:
    return float((a - b)[valid].pow(2).mean())


def _sample_tokens(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` evenly spaced rows: deterministic and spread over all sequences."""
    if tokens.shape[0] <= n:
        return tokens
    index = torch.linspace(0, tokens.shape[0] - 1, n).round().long()
    return tokens[index]
