"""awq-tts: AWQ INT4 quantization for Qwen3-TTS talkers, and the proof it still speaks.

The library's entry points are bound lazily, so that ``import awq_tts.runtime`` (deploying
an INT4 model) never loads the quantizer or the calibration:

- ``awq_tts.quantize(src, out, ...)``: the quantizer (``awq_tts.quantizer``);
- ``awq_tts.load(folder)``: a ``qwen_tts.Qwen3TTSModel`` with INT4 talker linears
  (``cuda_graphs=True``: its decode replayed from CUDA graphs; ``awq_tts.graph_status``);
- ``awq_tts.validate_awq_quality(quant, ...)``: the verdict against the bf16 source.
"""

from __future__ import annotations

from typing import Any

from ._compat import patch_transformers_for_autoawq
from .models.qwen3_tts.load_patches import make_speakers_copyable

__version__ = "0.1.0"

patch_transformers_for_autoawq()
make_speakers_copyable()

_LAZY = {
    "quantize": ("awq_tts.quantizer.api", "quantize"),
    "QuantizeSummary": ("awq_tts.quantizer.api", "QuantizeSummary"),
    "load": ("awq_tts.runtime.load", "load"),
    "graph_status": ("awq_tts.runtime.load", "graph_status"),
    "validate_awq_quality": ("awq_tts.validate.api", "validate_awq_quality"),
}

__all__ = ["QuantizeSummary", "__version__", "graph_status", "load", "quantize",
           "validate_awq_quality"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'awq_tts' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
