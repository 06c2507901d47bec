"""How a Qwen3-TTS model speaks, for the adapter (``Qwen3TTS`` in ``__init__.py``): the
voice of each variant (a cloned or synthetic voice for Base, a speaker for CustomVoice, a
description for VoiceDesign), the variant's ``generate_*`` call, audio decoding and the
speaker encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UsageError
from .package import quiet_generation

#: Voice descriptions cycled over calibration prompts for VoiceDesign models.
DESIGN_INSTRUCTIONS = (
    "A warm, calm female voice, speaking slowly.",
    "An energetic young man, fast and cheerful.",
    "A deep, serious male narrator.",
    "A soft, whispering voice full of emotion.",
)
#: The one design used where a single neutral voice is wanted (validation, synthesis).
NEUTRAL_DESIGN = "A clear, neutral voice."
#: Fundamental frequencies of the synthetic reference voices used for Base models.
REFERENCE_PITCHES = (110.0, 140.0, 190.0, 230.0)
SAMPLE_RATE = 24000


class Speaking:
    """The speaking half of the adapter; ``variant`` comes from the adapter."""

    def default_voice(self, tts, index: int | None = None, ref_audio: Any = None,
                      ref_text: str | None = None) -> dict:
        """The voice of sample ``index`` (cycled over built-in voices), or with ``None``
        the one neutral voice. Base models clone ``ref_audio`` or a synthetic voice."""
        kind = self.variant(tts)
        if kind == "base":
            if ref_audio is not None:
                label = f"ref:{Path(ref_audio).name}" if isinstance(ref_audio, str) else "ref"
                return {"label": label, "ref_audio": ref_audio, "ref_text": ref_text}
            from ...synth import synthetic_reference

            pitch = (index or 0) % len(REFERENCE_PITCHES)
            return {"label": f"synthetic:{pitch}", "ref_text": None,
                    "ref_audio": synthetic_reference(seconds=1.5, seed=pitch,
                                                     pitch=REFERENCE_PITCHES[pitch])}
        if kind == "custom_voice":
            speakers = self.speakers(tts)
            speaker = speakers[(index or 0) % len(speakers)]
            return {"label": f"speaker:{speaker}", "speaker": speaker}
        instruct = (NEUTRAL_DESIGN if index is None
                    else DESIGN_INSTRUCTIONS[index % len(DESIGN_INSTRUCTIONS)])
        return {"label": f"instruct:{instruct}", "instruct": instruct}

    def speakers(self, tts) -> list[str]:
        return sorted(tts.model.get_supported_speakers() or [])

    def require_speaker(self, tts, name: str) -> str:
        """``name`` if this model has that speaker (qwen-tts matches any case), else one line."""
        speakers = self.speakers(tts)
        if name.lower() not in {known.lower() for known in speakers}:
            raise UsageError(f"unknown speaker {name!r}; this model has: {', '.join(speakers)}")
        return name

    def clone_once(self, tts, voice: dict) -> dict:
        """A Base voice with its clone prompt computed (reused for every sample)."""
        if self.variant(tts) != "base" or "clone_prompt" in voice:
            return voice
        ref_text = voice.get("ref_text")
        prompt = tts.create_voice_clone_prompt(ref_audio=voice["ref_audio"], ref_text=ref_text,
                                               x_vector_only_mode=ref_text is None)
        return {**voice, "clone_prompt": prompt}

    def generate(self, tts, texts: list[str], languages: list[str], voices: list[dict],
                 **kwargs: Any) -> tuple[list, int]:
        """Speak ``texts`` (one voice each) with the variant's ``generate_*`` call."""
        kind = self.variant(tts)
        with quiet_generation():
            if kind == "base":
                if all("clone_prompt" in v for v in voices):
                    prompts = [item for v in voices for item in v["clone_prompt"]]
                    return tts.generate_voice_clone(text=texts, language=languages,
                                                    voice_clone_prompt=prompts, **kwargs)
                ref_texts = [v.get("ref_text") for v in voices]
                return tts.generate_voice_clone(
                    text=texts, language=languages, ref_audio=[v["ref_audio"] for v in voices],
                    ref_text=ref_texts, x_vector_only_mode=[t is None for t in ref_texts],
                    **kwargs)
            if kind == "custom_voice":
                chosen = [self.require_speaker(tts, str(v.get("speaker") or "")) for v in voices]
                if any(v.get("instruct") for v in voices):
                    kwargs["instruct"] = [v.get("instruct") for v in voices]
                return tts.generate_custom_voice(text=texts, language=languages,
                                                 speaker=chosen, **kwargs)
            return tts.generate_voice_design(text=texts, language=languages,
                                             instruct=[v["instruct"] for v in voices], **kwargs)

    def decode(self, tts, codes: list[torch.Tensor]) -> tuple[list, int]:
        """Waveforms of code sequences (empty sequences give empty audio)."""
        non_empty = [c for c in codes if c.shape[0]]
        if not non_empty:
            return [np.zeros(0, dtype=np.float32) for _ in codes], SAMPLE_RATE
        wavs, sr = tts.model.speech_tokenizer.decode([{"audio_codes": c} for c in non_empty])
        it = iter(wavs)
        return [next(it) if c.shape[0] else np.zeros(0, dtype=np.float32) for c in codes], sr

    def voice_embedding(self, voice: dict) -> torch.Tensor | None:
        """The speaker embedding a cloned voice carries (None for other voices)."""
        prompt = voice.get("clone_prompt")
        return prompt[0].ref_spk_embedding if prompt else None

    @torch.no_grad()
    def speaker_embedding(self, tts, wav, sample_rate: int = SAMPLE_RATE):
        """The speaker encoder's embedding of ``wav`` (None: no encoder, or too short)."""
        if tts.model.speaker_encoder is None or len(wav) < 4096:
            return None
        return tts.model.extract_speaker_embedding(np.asarray(wav, dtype=np.float32),
                                                   sample_rate)
