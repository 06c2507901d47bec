"""awq-tts: AWQ INT4 quantization for Qwen3-TTS talkers, and the proof it still speaks.

``awq_tts.quantize(src, out, ...)`` is the library entry point the CLI wraps. It is bound
here eagerly: the subpackage of the same name would otherwise replace the function on
this module the first time any ``awq_tts.quantize.*`` submodule is imported.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._compat import patch_transformers_for_autoawq  # noqa: E402
from ._qwen import make_speakers_copyable  # noqa: E402
from .quantize.api import QuantizeSummary, quantize  # noqa: E402
from .runtime import load  # noqa: E402

patch_transformers_for_autoawq()
make_speakers_copyable()

__all__ = ["QuantizeSummary", "__version__", "load", "quantize"]
