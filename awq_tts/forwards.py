"""Instance-level ``forward`` overrides, how awq-tts gives a module a faster forward
(``runtime/bf16_gemv.py``, ``models/qwen3_tts/fused_norms.py``), and the one way a
comparison sets them aside for a while."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def class_forward(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, each of ``modules`` runs its class's ``forward`` (its instance
    override set aside); afterwards the override again."""
    patched = [m for m in modules if "forward" in vars(m)]
    saved = [m.__dict__.pop("forward") for m in patched]
    try:
        yield
    finally:
        for module, forward in zip(patched, saved, strict=True):
            module.forward = forward
