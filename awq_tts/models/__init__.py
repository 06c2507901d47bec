"""Model families awq-tts knows, each behind a ``TTSAdapter`` (``base.py``), keyed by
``config.json``'s ``model_type``; ``mapping.py`` holds the layer mappings as data."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .base import TTSAdapter
from .mapping import LayerMapping
from .qwen3_tts import Qwen3TTS

ADAPTERS: dict[str, TTSAdapter] = {adapter.model_type: adapter for adapter in (Qwen3TTS(),)}


def adapter_for(model_type: str | None, where: str | Path = "the checkpoint") -> TTSAdapter:
    """The adapter of ``model_type``; any other is a one-line error naming what to add."""
    adapter = ADAPTERS.get(model_type or "")
    if adapter is None:
        raise UsageError(
            f"{where}: model_type {model_type!r} is not supported; awq-tts knows "
            f"{', '.join(sorted(ADAPTERS))}. To add a family, write "
            f"awq_tts/models/<family>.py implementing TTSAdapter (awq_tts/models/base.py) "
            f"and register it in ADAPTERS (awq_tts/models/__init__.py)")
    return adapter


def adapter_of(tts) -> TTSAdapter:
    """The adapter of a loaded model (``tts.model.config.model_type``)."""
    return adapter_for(getattr(tts.model.config, "model_type", None))


__all__ = ["ADAPTERS", "LayerMapping", "TTSAdapter", "adapter_for", "adapter_of"]
