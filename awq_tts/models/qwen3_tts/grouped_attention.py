"""One-token attention with a mask, without copying keys and values for each query head.

The talker has 16 query heads and 8 key/value heads (grouped-query attention). With an
attention mask, transformers' SDPA path cannot hand the grouping to torch
(``use_gqa_in_sdpa`` is false with a mask) and repeats every key and value head twice
(``repeat_kv``: two copies of the window's cache per layer, 56 copies a step) before one
``scaled_dot_product_attention``. The static-cache decode step (``talker_graphs.py``)
always passes a mask: its window holds slots past the position.

On the CPU torch's own grouping (``enable_gqa``) takes a mask and its kernel reads each key
and value head in place: bit-identical to the copies (tested, bf16 and float32). On CUDA
a mask sends ``enable_gqa`` to the math kernel (several launches and the full score
matrix), so for one query token the grouping is done by layout instead: the ``groups``
query heads that share a key/value head become ``groups`` query rows of that head
(``[batch, kv_heads, groups, dim]``, a view of the query) and attend to its keys under the
same mask broadcast over the rows, in the one fused kernel that takes a mask. Each query
row meets exactly the keys and values it met before: the same attention, to float
round-off (the kernel blocks rows differently; float32 on the CPU differs by 4e-7 that way).

:func:`install` routes qwen-tts's attention lookup (its modeling module's global
``ALL_ATTENTION_FUNCTIONS``) through a mapping whose ``sdpa`` entry is :func:`attention`;
every other call (more than one token, no mask, no grouping, dropout, attention weights
asked for) goes to transformers' own function unchanged. Other models in the process are
untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ... import devices
from .package import modeling
from .patches import swapped


@functools.cache
def _transformers_sdpa():
    """transformers' own ``sdpa_attention_forward`` (imported once: every other call and
    every code-predictor attention goes to it)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


def attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0,
              scaling: float | None = None, is_causal: bool | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa_attention_forward``, with one masked query token per row
    attending to each key/value head in place (see module doc)."""
    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    if (length != 1 or groups == 1 or attention_mask is None or attention_mask.ndim != 4
            or attention_mask.shape[1] != 1 or dropout or kwargs.get("output_attentions")
            or kwargs.get("head_mask") is not None or key.shape[1] * groups != heads):
        return _transformers_sdpa()(module, query, key, value, attention_mask, dropout=dropout,
                                    scaling=scaling, is_causal=is_causal, **kwargs)
    mask = attention_mask[..., :key.shape[-2]]
    if devices.cuda_kernels(query):
        out = by_rows(query, key, value, mask, scaling)
    else:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                             enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def by_rows(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
            scaling: float | None) -> torch.Tensor:
    """One query token's grouped attention ``[batch, heads, 1, dim]`` with each group's
    query heads as query rows of their key/value head (CUDA's way, see module doc)."""
    batch, heads, _, dim = query.shape
    rows = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    out = F.scaled_dot_product_attention(rows, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim)


class _Functions(Mapping):
    """transformers' attention functions with ``sdpa`` as :func:`attention`."""

    def __init__(self, functions: Mapping) -> None:
        self.functions = functions

    def __getitem__(self, name: str):
        return attention if name == "sdpa" else self.functions[name]

    def __iter__(self):
        return iter(self.functions)

    def __len__(self) -> int:
        return len(self.functions)


def install() -> None:
    """Route qwen-tts's ``sdpa`` attention calls through :func:`attention` (idempotent)."""
    module = modeling()
    if not installed():
        module.ALL_ATTENTION_FUNCTIONS = _Functions(module.ALL_ATTENTION_FUNCTIONS)


def installed() -> bool:
    return isinstance(modeling().ALL_ATTENTION_FUNCTIONS, _Functions)


@contextmanager
def bypassed() -> Iterator[None]:
    """Within the block, transformers' own ``sdpa`` for qwen-tts (for comparisons)."""
    module = modeling()
    if not installed():
        yield
        return
    with swapped(module, "ALL_ATTENTION_FUNCTIONS", module.ALL_ATTENTION_FUNCTIONS.functions):
        yield
