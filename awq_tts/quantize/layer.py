"""AWQ for one decoder layer: capture, scale search, fold, clip search, quantize, check.

The search losses replay a seeded sample of the calibration tokens (``sample.py``); the
statistics (``mean|x|``) and the layer's output for the next layer use every token.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import numerics
from .activations import Captured, LayerInputs, TokenRows, record_linear_inputs
from .mapping import LayerMapping, ResolvedGroup, quantized_linears, resolve_groups
from .packing import PackedLinear, pack_gemm
from .recipe import LayerReport, QuantConfig, WalkResult
from .sample import LossSample, draw
from .search import search_clip, search_scales


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
    sample: LossSample | None = None,
) -> tuple[LayerReport, torch.Tensor]:
    """AWQ-quantize one float32 decoder layer in place; return its report and output.

    The packed linears and folded norms go into ``result`` under ``prefix``. The layer's
    weights end up as the dequantized INT4 weights, so its output (returned, computed on
    every token of ``inputs``) is what the next layer will see at inference. The search
    losses and the AWQ-versus-RTN comparison use ``sample`` (default: drawn from
    ``config.loss_tokens``).
    """
    linears = quantized_linears(layer, mapping)
    if config.method == "rtn":
        return _rtn_layer(layer, index, prefix, linears, inputs, config, result)
    sample = sample or draw(inputs.valid, config.loss_tokens, config.seed)
    groups = resolve_groups(layer, mapping)
    original = copy.deepcopy(layer)
    source_of = _input_sources(linears, groups)
    whole = frozenset(g.spec.linears[0] for g in groups if g.spec.block_takes_layer_kwargs)
    fp_out, captured = record_linear_inputs(
        layer, {name: linears[name] for name in set(source_of.values())}, inputs, sample, whole)
    seq_inputs = inputs.subset(sample.sequences)
    tokens = TokenRows(inputs.device)
    report = LayerReport(index, 0.0, 0.0, False)
    scales_for: dict[str, torch.Tensor] = {}
    for group in groups:
        x = captured[source_of[group.spec.linears[0]]]
        runner = seq_inputs if group.spec.block_takes_layer_kwargs else tokens
        choice = _search_group(group, x, runner, config)
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
        source = source_of[path]
        x = captured[source]
        scales = scales_for.get(path)
        clip = None
        if path not in mapping.no_clip:
            rows = seq_inputs.valid_tokens(x.rows) if source in whole else x.rows
            clip_x = _sample_tokens(rows, config.clip_tokens).to(lin.weight.device)
            if scales is not None:
                clip_x = clip_x / scales.to(clip_x.device)
            clip = search_clip(lin.weight.detach(), clip_x, config.group_size,
                               config.n_grid, config.max_shrink)
        quantized[path] = _quantize_linear(lin, clip, config.group_size)
        if path not in report.linears:
            report.linears[path] = _own_block_errors(original.get_submodule(path), lin,
                                                     x.rows, tokens, config.group_size)
            report.linears[path]["block"] = path
        report.linears[path]["clipped"] = clip is not None
    q_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    fp_sample = fp_out[sample.sequences]
    report.awq_error = _masked_mse(q_out[sample.sequences], fp_sample, seq_inputs.valid)
    rtn = _rtn_copy(original, linears, config.group_size)
    report.rtn_error = seq_inputs.error(lambda x, kw: rtn(x, **kw)[0], seq_inputs.hidden,
                                        fp_sample)
    if report.awq_error > report.rtn_error:
        layer.load_state_dict(original.state_dict())
        quantized = {p: _quantize_linear(lin, None, config.group_size)
                     for p, lin in quantized_linears(layer, mapping).items()}
        report.fallback_to_rtn, report.awq_error = True, report.rtn_error
        q_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    report.output_error = _masked_mse(q_out, fp_out, inputs.valid)
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
    return LayerReport(index, error, error, False, {}, output_error=error), q_out


def _input_sources(linears: dict, groups: list[ResolvedGroup]) -> dict[str, str]:
    """Linears that share an input (q/k/v, gate/up) are recorded once, under the first."""
    source = {path: path for path in linears}
    for group in groups:
        for path in group.spec.linears:
            source[path] = group.spec.linears[0]
    return source


@torch.no_grad()
def _search_group(group: ResolvedGroup, x: Captured, runner: LayerInputs | TokenRows,
                  config: QuantConfig):
    """Scale search for one group: statistics from ``x.x_mean``, losses on ``x.rows``."""
    block = group.block
    if group.spec.block_takes_layer_kwargs:
        def fn(chunk, kw):
            return block(hidden_states=chunk, **kw)[0]
    else:
        def fn(chunk, _kw):
            return block(chunk)
    ref = runner.run(fn, x.rows)
    return search_scales(group.linears, x.x_mean.to(runner.device),
                         lambda: runner.error(fn, x.rows, ref), config.group_size, config.n_grid)


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
    w = lin.weight.detach().float()
    scales, zeros = numerics.compute_qparams(w, group_size, clip)
    q = numerics.quantize(w, scales, zeros, group_size)
    lin.weight.copy_(numerics.dequantize(q, scales, zeros, group_size))
    bias = None if lin.bias is None else lin.bias.detach().cpu()
    return pack_gemm(q.cpu(), scales.cpu(), zeros.cpu(), bias)


@torch.no_grad()
def _rtn_copy(original: nn.Module, linears: dict, group_size: int) -> nn.Module:
    """A copy of the unquantized layer with round-to-nearest linears (the baseline)."""
    rtn = copy.deepcopy(original)
    for path in linears:
        lin = rtn.get_submodule(path)
        lin.weight.copy_(numerics.fake_quantize(lin.weight, group_size))
    return rtn


@torch.no_grad()
def _own_block_errors(source: nn.Linear, quantized: nn.Linear, x: torch.Tensor,
                      tokens: TokenRows, group_size: int) -> dict:
    """AWQ (clipped) and RTN output error of a linear that has no scale group of its own."""
    rtn_weight = numerics.fake_quantize(source.weight, group_size)

    def rtn(chunk, _kw):
        return torch.nn.functional.linear(chunk, rtn_weight, source.bias)

    ref = tokens.run(lambda chunk, _kw: source(chunk), x)
    return {
        "awq_block_error": tokens.error(lambda chunk, _kw: quantized(chunk), x, ref),
        "rtn_block_error": tokens.error(rtn, x, ref),
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
