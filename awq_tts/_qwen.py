"""One quiet place to import qwen-tts and register its classes with transformers' Auto API.

Importing ``qwen_tts`` prints a flash-attn banner to stdout and the ``sox`` package logs a
warning when the SoX binary is absent; neither matters for this tool, and stdout noise
breaks machine-readable CLI output, so both are silenced here.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import io
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType

_MODELING = "qwen_tts.core.models.modeling_qwen3_tts"


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


def make_speakers_copyable() -> None:
    """Let transformers deep-copy a Qwen3-TTS model (its AWQ loading path does).

    qwen-tts sets ``model.supported_speakers = config.talker_config.spk_id.keys()``: a
    ``dict_keys``, which cannot be pickled, so ``copy.deepcopy(model)`` — and with it
    ``Qwen3TTSModel.from_pretrained`` of an AWQ folder through transformers — fails with
    ``TypeError: cannot pickle 'dict_keys' object``. After this call the attribute is a
    list of the same names (every qwen-tts use of it is ``in``, iteration or ``sorted``).
    Cheap when qwen-tts is not imported yet: the patch is applied when it is.
    """
    module = sys.modules.get(_MODELING)
    if module is not None:
        _patch_speakers(module)
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())


def _patch_speakers(module: ModuleType) -> None:
    cls = module.Qwen3TTSForConditionalGeneration
    if getattr(cls.__init__, "_awq_tts_copyable", False):
        return
    original = cls.__init__

    def __init__(self, config, *args, **kwargs):
        original(self, config, *args, **kwargs)
        self.supported_speakers = list(self.supported_speakers)

    __init__._awq_tts_copyable = True
    cls.__init__ = __init__


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Applies :func:`_patch_speakers` right after qwen-tts's modeling module executes."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _MODELING:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                execute = spec.loader.exec_module

                def exec_module(module, execute=execute):
                    execute(module)
                    _patch_speakers(module)

                spec.loader.exec_module = exec_module
                return spec
        return None
