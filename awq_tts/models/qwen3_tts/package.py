"""One quiet place to import qwen-tts and register its classes with transformers' Auto API.

Importing ``qwen_tts`` prints a flash-attn banner to stdout and the ``sox`` package logs a
warning when the SoX binary is absent; neither matters for this tool, and stdout noise
breaks machine-readable CLI output, so both are silenced here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType


def qwen_tts() -> ModuleType:
    """Import and return the ``qwen_tts`` package with its Auto classes registered."""
    with _silenced():
        import qwen_tts as package
        from qwen_tts.core.models import (
            Qwen3TTSConfig,
            Qwen3TTSForConditionalGeneration,
            Qwen3TTSProcessor,
        )
        from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
            Qwen3TTSTokenizerV2Config,
        )
        from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
            Qwen3TTSTokenizerV2Model,
        )
    from transformers import AutoConfig, AutoModel, AutoProcessor

    _register(AutoConfig, "qwen3_tts", Qwen3TTSConfig)
    _register(AutoModel, Qwen3TTSConfig, Qwen3TTSForConditionalGeneration)
    _register(AutoProcessor, Qwen3TTSConfig, Qwen3TTSProcessor)
    _register(AutoConfig, "qwen3_tts_tokenizer_12hz", Qwen3TTSTokenizerV2Config)
    _register(AutoModel, Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model)
    return package


def modeling() -> ModuleType:
    """qwen-tts's modeling module, whose globals (the rope functions, the attention lookup)
    ``shared_rope`` and ``grouped_attention`` replace; imported by then with the model."""
    from qwen_tts.core.models import modeling_qwen3_tts

    return modeling_qwen3_tts


@contextlib.contextmanager
def _silenced() -> Iterator[None]:
    """Mute stdout, and stderr at the file-descriptor level (the SoX probe is a shell)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    logging.getLogger("sox").setLevel(logging.ERROR)


def _register(auto: type, key: object, value: type) -> None:
    try:
        auto.register(key, value, exist_ok=True)
    except TypeError:
        auto.register(key, value)


@contextlib.contextmanager
def quiet_generation() -> Iterator[None]:
    """Silence transformers' per-call generation chatter (``Setting `pad_token_id` …``).

    qwen-tts calls ``generate`` once per rollout and per code-predictor frame; each call
    logs that line at warning level, burying progress bars. Restored on exit.
    """
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
