"""What awq-tts needs to know about a TTS model family: the ``TTSAdapter`` protocol.

Everything family-specific (how to load and build it, where its decoder layers are, how it
is conditioned and asked to speak, its end-of-speech id, how its codes become audio, and
every patch applied to its library) lives in one adapter module under ``awq_tts/models/``.
The quantizer, the validator, the runtime and the studio call the adapter, never the
family's library directly. To add a family, write ``awq_tts/models/<family>.py``
implementing this protocol and register it in ``awq_tts/models/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from .mapping import LayerMapping

#: A voice: the conditioning one sample is spoken with. Keys an adapter understands, e.g.
#: ``ref_audio``/``ref_text``/``clone_prompt`` (cloning), ``speaker``, ``instruct``; and
#: ``label``, a short name for records.
Voice = dict[str, Any]


@runtime_checkable
class TTSAdapter(Protocol):
    #: ``config.json``'s ``model_type`` this adapter handles.
    model_type: str
    #: The family's variants (``config.json``'s ``tts_model_type`` for Qwen3-TTS).
    variants: tuple[str, ...]
    #: Where the quantized decoder layers are and how their linears group (data).
    mapping: LayerMapping
    #: ``awq-tts blend``: the backbone LM's model_type, the config fields that must agree.
    blend_backbone: str
    blend_checked: tuple[str, ...]

    def decoder_config(self, config: dict) -> dict: ...

    def blend_pairs(self, layers: list[int]) -> dict[str, str]: ...

    def from_pretrained(self, path: str | Path, **kwargs: Any) -> Any: ...

    def empty_model(self, path: Path) -> nn.Module: ...

    def assemble(self, model: nn.Module, path: Path, device: str, dtype: torch.dtype) -> Any: ...

    def place_audio(self, tts: Any, device: str) -> torch.dtype: ...

    def use_cuda_graphs(self, tts: Any, on: bool) -> None: ...

    def static_decode(self, tts: Any, replay: bool) -> AbstractContextManager: ...

    def graph_status(self, tts: Any) -> str: ...

    def variant(self, tts: Any) -> str: ...

    def decoder_layers(self, core: nn.Module) -> nn.ModuleList: ...

    def position_ids(self, core: nn.Module, mask: torch.Tensor) -> torch.Tensor: ...

    def eos_id(self, core: nn.Module) -> int: ...

    def talker_forward(self, core: nn.Module, seq: torch.Tensor) -> tuple: ...

    def code_predictions(self, core: nn.Module, hidden: torch.Tensor,
                         codes: torch.Tensor) -> torch.Tensor: ...

    def encode_audio(self, tts: Any, audio: Any) -> torch.Tensor: ...

    def teacher_forced_sequence(self, core: nn.Module, prompt: Any,
                                codes: torch.Tensor) -> torch.Tensor: ...

    def default_voice(self, tts: Any, index: int, ref_audio: Any = None,
                      ref_text: str | None = None) -> Voice: ...

    def speakers(self, tts: Any) -> list[str]: ...

    def require_speaker(self, tts: Any, name: str) -> str: ...

    def clone_once(self, tts: Any, voice: Voice) -> Voice: ...

    def voice_embedding(self, voice: Voice) -> torch.Tensor | None: ...

    def generate(self, tts: Any, texts: list[str], languages: list[str], voices: list[Voice],
                 **kwargs: Any) -> tuple[list, int]: ...

    def decode(self, tts: Any, codes: list[torch.Tensor]) -> tuple[list, int]: ...

    def speaker_embedding(self, tts: Any, wav: Any, sample_rate: int) -> torch.Tensor | None: ...

    def record_talker(self, tts: Any, drop_stopped: bool = False,
                      fixed_batch: bool = False) -> AbstractContextManager: ...

    def capture_prompt(self, tts: Any, speak: Callable[[], object]) -> Any: ...
