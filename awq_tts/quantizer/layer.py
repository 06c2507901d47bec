"""AWQ for one decoder layer: the stages of ``stages.py`` in order, with the RTN fallback.

The search losses replay a seeded sample of the calibration tokens (``sample.py``); the
statistics (``mean|x|``) and the layer's output for the next layer use every token.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..format.packing import PackedLinear
from ..models.mapping import LayerMapping, quantized_linears, resolve_groups
from . import stages
from .activations import LayerInputs
from .recipe import LayerReport, QuantConfig
from .sample import LossSample, draw


@dataclass
class LayerResult:
    """One layer's outcome; names are relative to the layer (``self_attn.q_proj`` …)."""

    report: LayerReport
    #: The quantized layer's output on every token: the next layer's input.
    output: torch.Tensor
    packed: dict[str, PackedLinear] = field(default_factory=dict)
    #: Float tensors that changed (folded norms), in the source dtype, by tensor name.
    changed: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def quantize_layer(layer: nn.Module, inputs: LayerInputs, config: QuantConfig,
                   mapping: LayerMapping, source_dtype: torch.dtype,
                   sample: LossSample | None = None) -> LayerResult:
    """AWQ-quantize one float32 decoder layer in place.

    The layer's weights end up as the dequantized INT4 weights, so its output (computed on
    every token of ``inputs``) is what the next layer will see at inference. The search
    losses and the AWQ-versus-RTN comparison use ``sample`` (default: drawn from
    ``config.loss_tokens``). When AWQ's error is above RTN's, the layer falls back to RTN.
    """
    linears = quantized_linears(layer, mapping)
    if config.method == "rtn":
        return _rtn_layer(layer, linears, inputs, config)
    sample = sample or draw(inputs.valid, config.loss_tokens, config.seed)
    groups = resolve_groups(layer, mapping)
    original = copy.deepcopy(layer)
    cap = stages.capture(layer, linears, groups, inputs, sample)
    chosen = stages.search(groups, cap, config)
    stages.fold(groups, chosen, inputs.device, source_dtype)
    clips = stages.clip(linears, cap, chosen, mapping, config)
    packed = stages.quantize_linears(linears, clips, config.group_size)
    report = LayerReport(0, 0.0, 0.0, False, _linear_rows(groups, chosen))
    for path, lin in linears.items():
        if path not in report.linears:
            report.linears[path] = stages.own_block_errors(
                original.get_submodule(path), lin, cap.of(path).rows, cap.tokens,
                config.group_size)
            report.linears[path]["block"] = path
        report.linears[path]["clipped"] = clips[path] is not None
    done = stages.evaluate(layer, original, list(linears), inputs, cap, config.group_size)
    report.awq_error, report.rtn_error, output = done.awq_error, done.rtn_error, done.output
    changed = {}
    if report.awq_error > report.rtn_error:
        layer.load_state_dict(original.state_dict())
        plain = quantized_linears(layer, mapping)
        packed = stages.quantize_linears(plain, {}, config.group_size)
        report.fallback_to_rtn, report.awq_error = True, report.rtn_error
        output = inputs.run(lambda x, kw: layer(x, **kw)[0])
    else:
        changed = {f"{g.spec.prev}.weight": g.prev.weight.detach().to(source_dtype).cpu().clone()
                   for g in groups if not isinstance(g.prev, nn.Linear)}
    report.output_error = stages.masked_mse(output, cap.fp_out, inputs.valid)
    return LayerResult(report, output, packed, changed)


def _linear_rows(groups, chosen) -> dict[str, dict]:
    """The report row of every linear that belongs to a scale group."""
    rows = {}
    for group in groups:
        choice = chosen[group.spec.linears[0]]
        for path in group.spec.linears:
            rows[path] = {"block": group.spec.block, "awq_block_error": choice.awq_error,
                          "rtn_block_error": choice.rtn_error, "scale_ratio": choice.ratio}
    return rows


def _rtn_layer(layer, linears, inputs: LayerInputs, config: QuantConfig) -> LayerResult:
    """Round-to-nearest baseline: no scales, no clipping."""
    fp_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    packed = stages.quantize_linears(linears, {}, config.group_size)
    output = inputs.run(lambda x, kw: layer(x, **kw)[0])
    error = stages.masked_mse(output, fp_out, inputs.valid)
    return LayerResult(LayerReport(0, error, error, False, {}, output_error=error), output,
                       packed)
