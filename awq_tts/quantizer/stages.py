"""The stages of AWQ on one decoder layer, each a function that returns data.

``capture`` records what the layer's linears read; ``search`` picks per-channel scales per
group; ``fold`` moves them into the previous norm or linear; ``clip`` searches each linear's
clip range; ``quantize_linears`` rounds and packs; ``evaluate`` measures the result against
the float layer and round-to-nearest. ``layer.quantize_layer`` runs them in order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..format.packing import PackedLinear, pack_gemm
from ..models.mapping import LayerMapping, ResolvedGroup
from . import numerics
from .activations import Captured, LayerInputs, TokenRows, record_linear_inputs
from .recipe import QuantConfig
from .sample import LossSample
from .search import ScaleChoice, search_clip, search_scales


@dataclass
class Capture:
    """What one layer's linears read, and the float layer's output on every token."""

    fp_out: torch.Tensor
    x: dict[str, Captured]
    #: Linear path → the path its input was recorded under (q/k/v share q's).
    source_of: dict[str, str]
    #: Recorded inputs kept as whole sequences (blocks that take the layer kwargs).
    whole: frozenset[str]
    #: The layer inputs of the loss sample's sequences, and a runner for token rows.
    seq_inputs: LayerInputs
    tokens: TokenRows
    sample: LossSample

    def of(self, path: str) -> Captured:
        return self.x[self.source_of[path]]


def capture(layer: nn.Module, linears: dict[str, nn.Linear], groups: list[ResolvedGroup],
            inputs: LayerInputs, sample: LossSample) -> Capture:
    """Record the inputs of every linear (once per shared input) and the layer's output."""
    source_of = {path: path for path in linears}
    for group in groups:
        for path in group.spec.linears:
            source_of[path] = group.spec.linears[0]
    whole = frozenset(g.spec.linears[0] for g in groups if g.spec.block_takes_layer_kwargs)
    fp_out, x = record_linear_inputs(
        layer, {name: linears[name] for name in set(source_of.values())}, inputs, sample, whole)
    return Capture(fp_out, x, source_of, whole, inputs.subset(sample.sequences),
                   TokenRows(inputs.device), sample)


@torch.no_grad()
def search(groups: list[ResolvedGroup], cap: Capture, config: QuantConfig
           ) -> dict[str, ScaleChoice]:
    """The chosen scales of every scale group, keyed by each of the group's linears."""
    chosen: dict[str, ScaleChoice] = {}
    for group in groups:
        x = cap.of(group.spec.linears[0])
        block = group.block
        if group.spec.block_takes_layer_kwargs:
            runner: LayerInputs | TokenRows = cap.seq_inputs

            def fn(chunk, kw, block=block):
                return block(hidden_states=chunk, **kw)[0]
        else:
            runner = cap.tokens

            def fn(chunk, _kw, block=block):
                return block(chunk)
        ref = runner.run(fn, x.rows)
        choice = search_scales(group.linears, x.x_mean.to(runner.device),
                               lambda fn=fn, runner=runner, x=x, ref=ref:
                               runner.error(fn, x.rows, ref),
                               config.group_size, config.n_grid)
        for path in group.spec.linears:
            chosen[path] = choice
    return chosen


@torch.no_grad()
def fold(groups: list[ResolvedGroup], chosen: dict[str, ScaleChoice], device: torch.device,
         source_dtype: torch.dtype) -> list[ResolvedGroup]:
    """``prev /= s`` on its output channels, ``linears *= s`` on their inputs; the folded groups.

    A folded norm is rounded to the source dtype at once: that is the weight inference
    will use, so the quantized linears are fitted against it. Groups whose scales are all
    one are left alone.
    """
    folded = []
    for group in groups:
        scales = chosen[group.spec.linears[0]].scales
        if torch.all(scales == 1):
            continue
        scales = scales.to(device)
        prev = group.prev
        if isinstance(prev, nn.Linear):
            prev.weight.div_(scales[:, None])
            if prev.bias is not None:
                prev.bias.div_(scales)
        else:
            prev.weight.copy_((prev.weight / scales).to(source_dtype).float())
        for lin in group.linears:
            lin.weight.mul_(scales[None, :])
        folded.append(group)
    return folded


@torch.no_grad()
def clip(linears: dict[str, nn.Linear], cap: Capture, chosen: dict[str, ScaleChoice],
         mapping: LayerMapping, config: QuantConfig) -> dict[str, torch.Tensor | None]:
    """Each linear's searched clip range (None where the mapping says not to clip)."""
    clips: dict[str, torch.Tensor | None] = {}
    for path, lin in linears.items():
        if path in mapping.no_clip:
            clips[path] = None
            continue
        x = cap.of(path)
        rows = (cap.seq_inputs.valid_tokens(x.rows) if cap.source_of[path] in cap.whole
                else x.rows)
        clip_x = sample_rows(rows, config.clip_tokens).to(lin.weight.device)
        if path in chosen:
            clip_x = clip_x / chosen[path].scales.to(clip_x.device)
        clips[path] = search_clip(lin.weight.detach(), clip_x, config.group_size,
                                  config.n_grid, config.max_shrink)
    return clips


@torch.no_grad()
def quantize_linears(linears: dict[str, nn.Linear], clips: dict[str, torch.Tensor | None],
                     group_size: int) -> dict[str, PackedLinear]:
    """Round every linear to INT4 in place (its weight becomes the dequantized one); pack."""
    packed = {}
    for path, lin in linears.items():
        w = lin.weight.detach().float()
        scales, zeros = numerics.compute_qparams(w, group_size, clips.get(path))
        q = numerics.quantize(w, scales, zeros, group_size)
        lin.weight.copy_(numerics.dequantize(q, scales, zeros, group_size))
        bias = None if lin.bias is None else lin.bias.detach().cpu()
        packed[path] = pack_gemm(q.cpu(), scales.cpu(), zeros.cpu(), bias)
    return packed


@dataclass
class Evaluation:
    awq_error: float
    rtn_error: float
    output: torch.Tensor


@torch.no_grad()
def evaluate(layer: nn.Module, original: nn.Module, paths: list[str], inputs: LayerInputs,
             cap: Capture, group_size: int) -> Evaluation:
    """The quantized layer's error on the loss sample, against round-to-nearest's."""
    q_out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    index = cap.sample.sequences.to(q_out.device)
    fp_sample = cap.fp_out[index]
    awq = masked_mse(q_out[index], fp_sample, cap.seq_inputs.valid)
    rtn = copy.deepcopy(original)
    for path in paths:
        lin = rtn.get_submodule(path)
        lin.weight.copy_(numerics.fake_quantize(lin.weight, group_size))
    rtn_error = cap.seq_inputs.error(lambda x, kw: rtn(x, **kw)[0], cap.seq_inputs.hidden,
                                     fp_sample)
    return Evaluation(awq, rtn_error, q_out)


@torch.no_grad()
def own_block_errors(source: nn.Linear, quantized: nn.Linear, x: torch.Tensor,
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


def masked_mse(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor) -> float:
    return float((a - b)[valid].pow(2).mean())


def sample_rows(tokens: torch.Tensor, n: int) -> torch.Tensor:
    """At most ``n`` evenly spaced rows: deterministic and spread over all sequences."""
    if tokens.shape[0] <= n:
        return tokens
    index = torch.linspace(0, tokens.shape[0] - 1, n).round().long()
    return tokens[index]
