"""Render a tagged script with one fixed voice: what the studio's Render button calls.

Every segment is spoken with its delivery while the identity stays fixed:

* VoiceDesign: the segment's instruction follows the identity description;
* CustomVoice: the chosen speaker, with the segment's instruction;
* Base: the voice-clone prompt is built once from the reference clip and reused for every
  segment (Base models take no instruction: tags only cut the script there).

Segments are joined with ``pause`` seconds of silence. ``save`` writes the wav and a JSON
sidecar (model, backend, seed, segments, instructions) atomically, under a timestamped name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import soundfile
import torch

from ..errors import UsageError
from ..models import adapter_of
from ..output import atomic_output_file
from ..synth import require_ref_audio
from .script import Script


@dataclass
class Voice:
    """The fixed identity: a reference clip (Base), a speaker (CustomVoice) or a
    description (VoiceDesign)."""

    ref_audio: tuple[np.ndarray, int] | str | None = None
    ref_text: str | None = None
    speaker: str | None = None
    description: str = "A clear, natural voice."


@dataclass
class Render:
    wav: np.ndarray
    sample_rate: int
    seconds_wall: float
    segments: list[dict] = field(default_factory=list)

    @property
    def seconds_audio(self) -> float:
        return self.wav.size / float(self.sample_rate)


def render(tts, script: Script, voice: Voice, language: str = "Auto", seed: int = 0,
           pause: float = 0.3, max_new_tokens: int = 2048,
           on_segment: Callable[[int, int], None] | None = None) -> Render:
    """Speak every segment of ``script`` with ``voice`` and join them."""
    if not script.segments:
        raise UsageError("the script has no text to speak")
    kind = tts.model.tts_model_type
    speak = _speaker(tts, kind, voice)
    start = time.perf_counter()
    parts, rows, rate = [], [], 24000
    for i, segment in enumerate(script.segments):
        torch.manual_seed(seed + i)
        wavs, rate = speak(segment.text, language, segment.instruct, max_new_tokens)
        wav = np.asarray(wavs[0], dtype=np.float32)
        if parts and pause > 0:
            parts.append(np.zeros(int(pause * rate), dtype=np.float32))
        parts.append(wav)
        rows.append({"tag": segment.tag, "text": segment.text,
                     "instruct": _instruct(kind, voice, segment.instruct),
                     "known_tag": segment.known, "seconds": wav.size / rate})
        if on_segment is not None:
            on_segment(i + 1, len(script.segments))
    return Render(np.concatenate(parts), int(rate), time.perf_counter() - start, rows)


def _instruct(kind: str, voice: Voice, delivery: str | None) -> str | None:
    if kind == "base":
        return None
    if kind == "voice_design":
        return " ".join(p for p in (voice.description, delivery) if p)
    return delivery


def _speaker(tts, kind: str, voice: Voice):
    """A function (text, language, delivery, max_new_tokens) → (wavs, sr) for this voice."""
    adapter = adapter_of(tts)
    if kind == "base":
        if voice.ref_audio is None:
            raise UsageError("a Base model clones a voice: give a reference clip")
        if isinstance(voice.ref_audio, str | Path):  # the same refusal as `synthesize`
            require_ref_audio(voice.ref_audio)
        fixed = adapter.clone_once(tts, {"ref_audio": voice.ref_audio,
                                         "ref_text": voice.ref_text})
        return lambda text, lang, _d, n: adapter.generate(tts, [text], [lang], [fixed],
                                                          max_new_tokens=n)
    if kind == "custom_voice":
        speakers = adapter.speakers(tts)  # generate refuses an unknown speaker in one line
        chosen = voice.speaker or (speakers[0] if speakers else "")
        return lambda text, lang, d, n: adapter.generate(
            tts, [text], [lang], [{"speaker": chosen, "instruct": d}], max_new_tokens=n)
    adapter.variant(tts)  # refuses an unknown variant
    return lambda text, lang, d, n: adapter.generate(
        tts, [text], [lang], [{"instruct": _instruct(kind, voice, d)}], max_new_tokens=n)


def save(result: Render, folder: str | Path, model: str, backend: str, seed: int,
         name: str = "render") -> Path:
    """Write ``<folder>/<name>-<UTC time>.wav`` and its ``.json`` sidecar; return the wav."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    wav_path = folder / f"{name}-{stamp}.wav"
    with atomic_output_file(wav_path) as tmp:
        soundfile.write(str(tmp), result.wav, result.sample_rate, format="WAV")
    sidecar = {"model": model, "backend": backend, "seed": seed,
               "sample_rate": result.sample_rate, "seconds_audio": result.seconds_audio,
               "seconds_wall": result.seconds_wall, "segments": result.segments,
               "wav": wav_path.name}
    with atomic_output_file(wav_path.with_suffix(".json")) as tmp:
        Path(tmp).write_text(json.dumps(sidecar, indent=2, ensure_ascii=False) + "\n")
    return wav_path


__all__ = ["Render", "Voice", "render", "save"]
