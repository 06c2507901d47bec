"""The patches awq-tts applies to qwen-tts while a model loads.

- ``make_speakers_copyable``: let transformers deep-copy a Qwen3-TTS model (applied once, on
  import of ``awq_tts``, or when qwen-tts is imported later);
- ``speech_tokenizer_dtype``: load the speech tokenizer in its own dtype (undone in
  ``finally``; see ``audio_dtype.py``).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
from collections.abc import Iterator
from types import ModuleType

import torch

from .patches import swap_attr

_MODELING = "qwen_tts.core.models.modeling_qwen3_tts"


@contextlib.contextmanager
def speech_tokenizer_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Within the block qwen-tts loads every speech tokenizer in ``dtype``
    (``Qwen3TTSModel.from_pretrained`` otherwise passes it the talker's dtype)."""
    from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer

    load = Qwen3TTSTokenizer.from_pretrained

    def in_dtype(cls, *args, **kwargs):
        return load(*args, **{**kwargs, "dtype": dtype})

    undo = swap_attr(Qwen3TTSTokenizer, "from_pretrained", classmethod(in_dtype))
    try:
        yield
    finally:
        undo()


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
