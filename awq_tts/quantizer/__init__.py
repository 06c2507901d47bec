"""AWQ INT4 quantization of the Qwen3-TTS talker's decoder linears."""

from .api import QuantizeSummary, quantize

__all__ = ["QuantizeSummary", "quantize"]
