"""Activation-aware scale search and clip search for one group of linears.

``search_scales`` tries AWQ's scale family on a grid of ``n_grid`` exponents and keeps the
one whose *block output* is closest to the unquantized block's; the identity (plain
round-to-nearest) is always a candidate, so the chosen scales are never worse than RTN on
the calibration data. ``search_clip`` then shrinks each group's range where that lowers
the linear's output error (AutoAWQ's clip search, vectorised).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .numerics import awq_candidate_scales, fake_quantize, normalized_weight_mean

#: Evaluates the block on its (full-batch, CPU) input and returns the mean squared error
#: against the unquantized block's output over valid tokens.
BlockError = Callable[[], float]


@dataclass
class ScaleChoice:
    scales: torch.Tensor
    ratio: float | None
    awq_error: float
    rtn_error: float


@torch.no_grad()
def search_scales(
    linears: list[nn.Linear],
    x_mean: torch.Tensor,
    block_error: BlockError,
    group_size: int,
    n_grid: int = 20,
) -> ScaleChoice:
    """Best per-input-channel scales for ``linears`` (weights restored before returning)."""
    originals = [lin.weight.detach().clone() for lin in linears]
    w_mean = normalized_weight_mean(originals, group_size).to(x_mean.device)

    def trial(scales: torch.Tensor | None) -> float:
        for lin, w in zip(linears, originals, strict=True):
            if scales is None:
                lin.weight.copy_(fake_quantize(w, group_size))
            else:
                s = scales.to(w.device)
                lin.weight.copy_(fake_quantize(w * s, group_size) / s)
        return block_error()

    try:
        rtn = trial(None)
        best = ScaleChoice(torch.ones_like(x_mean), None, rtn, rtn)
        for step in range(n_grid):
            ratio = step / n_grid
            scales = awq_candidate_scales(x_mean, w_mean, ratio)
            err = trial(scales)
            if err < best.awq_error:
                best = ScaleChoice(scales, ratio, err, rtn)
    finally:
        for lin, w in zip(linears, originals, strict=True):
            lin.weight.copy_(w)
    return best


@torch.no_grad()
def search_clip(
    w: torch.Tensor,
    x: torch.Tensor,
    group_size: int,
    n_grid: int = 20,
    max_shrink: float = 0.5,
    rows_per_chunk: int = 256,
) -> torch.Tensor:
    """Per (output row, group) clip bound on ``|w|`` minimising the group-wise output error.

    ``w`` is ``[O, I]``, ``x`` a sample of input tokens ``[N, I]``. Returns ``[O, I/G]``.
    """
    out_features, in_features = w.shape
    n_groups = in_features // group_size
    xg = x.float().reshape(-1, n_groups, group_size)
    bounds = []
    for start in range(0, out_features, rows_per_chunk):
        wg = w[start:start + rows_per_chunk].float().reshape(-1, n_groups, group_size)
        ref = torch.einsum("ngk,ogk->ogn", xg, wg)
        org_max = wg.abs().amax(dim=-1)
        best_err = torch.full_like(org_max, float("inf"))
        best_max = org_max.clone()
        for step in range(int(max_shrink * n_grid)):
            max_val = org_max * (1 - step / n_grid)
            q = fake_quantize(wg.reshape(-1, in_features), group_size, max_val)
            out = torch.einsum("ngk,ogk->ogn", xg, q.reshape(wg.shape))
            err = (out - ref).pow(2).mean(dim=-1)
            better = err < best_err
            best_err[better] = err[better]
            best_max[better] = max_val[better]
        bounds.append(best_max)
    return torch.cat(bounds, dim=0)

