"""The token budget of the AWQ search: which calibration tokens the losses are measured on.

Statistics (``mean|x|`` per channel) use every valid token. The grid-search and clip
losses, which replay a block once per candidate, use a seeded sample instead, so their
cost stops growing with the calibration set:

* token-wise blocks (MLP, ``o_proj``, ``down_proj``) see ``budget`` token positions drawn
  uniformly, without replacement, across every prompt and position;
* the attention block needs whole sequences (each token attends to its past), so it sees
  whole sequences drawn in a seeded order until they hold at least ``budget`` tokens.

``budget=None`` selects everything: the search then sees all tokens, as before budgets.
The draw depends only on the valid-token mask, the budget and the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LossSample:
    """Indices into a calibration batch whose valid-token mask is ``[B, T]``."""

    #: Sorted sequence indices for sequence-level (attention) losses.
    sequences: torch.Tensor
    #: Sorted indices into the flattened valid tokens ``x[valid]`` for token-wise losses.
    positions: torch.Tensor
    #: The budget asked for (``None``: all tokens).
    budget: int | None

    @property
    def tokens(self) -> int:
        return int(self.positions.numel())


def draw(valid: torch.Tensor, budget: int | None, seed: int) -> LossSample:
    """A seeded, deterministic sample of at most ``budget`` tokens (see the module doc)."""
    if budget is not None and budget < 1:
        raise ValueError(f"the loss token budget must be at least 1, got {budget}")
    valid = valid.cpu()
    lengths = valid.sum(dim=1)
    n_valid, n_seq = int(lengths.sum()), valid.shape[0]
    if budget is None or budget >= n_valid:
        return LossSample(torch.arange(n_seq), torch.arange(n_valid), budget)
    gen = torch.Generator().manual_seed(seed)
    positions = torch.randperm(n_valid, generator=gen)[:budget].sort().values
    order = torch.randperm(n_seq, generator=gen)
    enough = int(torch.searchsorted(lengths[order].cumsum(0), budget)) + 1
    return LossSample(order[:enough].sort().values, positions, budget)
