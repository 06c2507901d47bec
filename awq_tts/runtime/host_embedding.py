"""Embedding tables kept in host memory: ``load(..., offload_embeddings=True)``.

Qwen3-TTS's text embedding is 151,936 × 2,048 rows (0.58 GiB in bf16, a quarter of the
INT4 model's VRAM) and is only ever looked up, a few hundred rows per request, to build
the prompt; it never enters a decode step. :class:`HostEmbedding` keeps the table on the
CPU, looks the rows up there and sends only those rows to the device the ids are on. The
table is a plain attribute, not a parameter: ``model.to(device)`` leaves it where it is
and the model's ``device`` still names the accelerator; the price is that ``state_dict``
no longer holds it (awq-tts never saves a loaded model). Which modules may go is model
data (the adapter's ``host_lookups``).
"""

from __future__ import annotations

import torch
from torch import nn


class HostEmbedding(nn.Module):
    """An ``nn.Embedding`` whose table stays in host memory."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None) -> None:
        super().__init__()
        self.table = weight.detach().to("cpu")
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = self.table.shape

    @property
    def weight(self) -> torch.Tensor:
        """The host table (read-only use: code that inspects ``embedding.weight``)."""
        return self.table

    def _apply(self, fn, recurse: bool = True):
        """``model.float()`` and friends change the table's dtype; ``model.to(device)``
        leaves it on the host (the point of this module)."""
        probe = fn(torch.empty(0, dtype=self.table.dtype))
        if probe.dtype != self.table.dtype:
            self.table = self.table.to(probe.dtype)
        return super()._apply(fn, recurse)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids.to("cpu"), self.table, self.padding_idx)
        return rows.to(ids.device)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, on the host"


def offload(model: nn.Module, names: tuple[str, ...]) -> int:
    """Replace each ``nn.Embedding`` named in ``names`` by a :class:`HostEmbedding` of its
    table (moved to the CPU); returns the bytes now held on the host. A name that is not an
    embedding is a loud error: the mapping is wrong for this model."""
    held = 0
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        if not isinstance(old, nn.Embedding | HostEmbedding):
            raise TypeError(f"{name} is a {type(old).__name__}, not an nn.Embedding")
        held += old.weight.numel() * old.weight.element_size()
        if isinstance(old, nn.Embedding):
            setattr(parent, child, HostEmbedding(old.weight, old.padding_idx))
    return held
