"""Speak with a Qwen3-TTS checkpoint through qwen-tts's own ``generate_*`` methods."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import UsageError
from .io import require_readable_audio
from .models import adapter_of
from .models.qwen3_tts import NEUTRAL_DESIGN
from .output import atomic_output_file

SAMPLE_RATE = 24000


@dataclass
class SpeechResult:
    wav: np.ndarray
    sample_rate: int
    seconds_audio: float
    seconds_wall: float

    @property
    def real_time_factor(self) -> float:
        """Wall time over audio time (below 1 is faster than real time)."""
        return self.seconds_wall / max(self.seconds_audio, 1e-9)


def synthetic_reference(
    seconds: float = 2.0, seed: int = 0, pitch: float = 140.0
) -> tuple[np.ndarray, int]:
    """A voice-like synthetic clip (harmonics with vibrato), for cloning when none is given.

    It is not human speech: it gives the speaker encoder a deterministic, non-silent input
    so Base models can run without a user recording.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = pitch + 0.15 * pitch * np.sin(2 * np.pi * 3.0 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    wav = sum(np.sin(k * phase) / k for k in range(1, 6))
    wav = wav * (0.5 + 0.5 * np.sin(2 * np.pi * 1.5 * t) ** 2) + 0.01 * rng.standard_normal(t.size)
    return (0.2 * wav / np.abs(wav).max()).astype(np.float32), SAMPLE_RATE


def speak(
    model,
    text: str,
    language: str = "English",
    ref_audio: tuple[np.ndarray, int] | str | None = None,
    ref_text: str | None = None,
    speaker: str | None = None,
    instruct: str | None = None,
    seed: int = 0,
    **generate_kwargs,
) -> SpeechResult:
    """Synthesize ``text`` with a loaded ``qwen_tts.Qwen3TTSModel``, whatever its type."""
    if not text.strip():
        raise UsageError("the text to speak is empty; pass --text or a non-empty --text-file")
    adapter = adapter_of(model)
    kind = adapter.variant(model)
    if kind == "base":
        clip = ref_audio if ref_audio is not None else synthetic_reference(seed=seed)
        voice = {"ref_audio": clip, "ref_text": ref_text}
    elif kind == "custom_voice":
        speakers = adapter.speakers(model)
        voice = {"speaker": speaker or (speakers[0] if speakers else None), "instruct": instruct}
    else:
        voice = {"instruct": instruct or NEUTRAL_DESIGN}
    torch.manual_seed(seed)
    start = time.perf_counter()
    wavs, sr = adapter.generate(model, [text], [language], [voice], **generate_kwargs)
    wall = time.perf_counter() - start
    wav = np.asarray(wavs[0], dtype=np.float32)
    return SpeechResult(wav, int(sr), wav.size / float(sr), wall)


_SENTENCE_END = re.compile(r"(?<=[.!?。！？;；])\s+|(?<=[。！？；])")


def split_sentences(text: str, max_chars: int = 300) -> list[str]:
    """Split at sentence ends (Latin and CJK punctuation); long sentences stay whole."""
    pieces = [p.strip() for p in _SENTENCE_END.split(text) if p and p.strip()]
    chunks: list[str] = []
    for piece in pieces:
        if chunks and len(chunks[-1]) + len(piece) + 1 <= max_chars:
            chunks[-1] = f"{chunks[-1]} {piece}"
        else:
            chunks.append(piece)
    return chunks


def speak_long(model, text: str, progress: bool = True, **kwargs) -> SpeechResult:
    """Speak a long text sentence group by sentence group and join the audio."""
    chunks = split_sentences(text)
    if not chunks:
        raise UsageError("the text to speak is empty; pass --text or a non-empty --text-file")
    parts = []
    for chunk in tqdm(chunks, desc="synthesizing", unit="chunk", disable=not progress):
        parts.append(speak(model, chunk, **kwargs))
    wav = np.concatenate([p.wav for p in parts])
    rate = parts[0].sample_rate
    return SpeechResult(wav, rate, wav.size / rate, sum(p.seconds_wall for p in parts))


#: Which voice options each model type reads; the others would be silently ignored.
VOICE_OPTIONS = {"base": ("ref_audio", "ref_text"), "custom_voice": ("speaker", "instruct"),
                 "voice_design": ("instruct",)}
_KIND_NAMES = {"base": "a Base model (it clones --ref-audio)",
               "custom_voice": "a CustomVoice model (it speaks as a built-in --speaker)",
               "voice_design": "a VoiceDesign model (it speaks the voice --instruct describes)"}


def check_request(model, language: str, ref_audio: str | Path | None = None, *,
                  ref_text: str | None = None, speaker: str | None = None,
                  instruct: str | None = None) -> None:
    """Refuse, before generating, an unsupported language, an unreadable reference clip, a
    voice option this model type would silently ignore, or an unknown speaker."""
    supported = {str(x).lower() for x in (model.get_supported_languages() or [])}
    if supported and language.lower() not in supported:
        raise UsageError(f"unsupported language {language!r}; this model supports: "
                         f"{', '.join(sorted(supported))}")
    adapter = adapter_of(model)
    kind = adapter.variant(model)
    given = {"ref_audio": ref_audio, "ref_text": ref_text, "speaker": speaker,
             "instruct": instruct}
    for option, value in given.items():
        if value is not None and option not in VOICE_OPTIONS.get(kind, given):
            raise UsageError(f"--{option.replace('_', '-')} does not apply to "
                             f"{_KIND_NAMES[kind]}; leave it out")
    if ref_text is not None and ref_audio is None:
        raise UsageError("--ref-text is the transcript of --ref-audio; pass --ref-audio too")
    if speaker is not None and kind == "custom_voice":
        adapter.require_speaker(model, speaker)
    if ref_audio is not None:
        require_ref_audio(ref_audio)


def require_ref_audio(ref_audio: str | Path) -> None:
    """One line for a reference clip that cannot be read (synthesize and the studio)."""
    require_readable_audio(ref_audio, f"cannot read reference audio {ref_audio}")


def peak_memory_bytes(device: str) -> int:
    """Peak CUDA allocation on a GPU, else the process's peak resident set size."""
    if device.startswith("cuda"):
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


#: The audio containers ``write_wav`` writes, by file suffix (16-bit PCM, lossless).
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}


def audio_format(path: str | Path) -> str:
    """The container for ``path``'s suffix, or one line naming the ones there are (a WAV
    written under ``.mp3`` would fool every player that trusts the name)."""
    suffix = Path(path).suffix.lower()
    if Path(path).is_dir():
        raise UsageError(f"{path} is a folder; give a file name ending in "
                         f"{' or '.join(AUDIO_FORMATS)}")
    if suffix not in AUDIO_FORMATS:
        raise UsageError(f"cannot write {Path(path).name}: awq-tts writes "
                         f"{' or '.join(AUDIO_FORMATS)} audio; name the output that way")
    return AUDIO_FORMATS[suffix]


def write_wav(path: str | Path, wav: np.ndarray, sample_rate: int,
              inputs: tuple[str | Path, ...] = ()) -> None:
    """Write 16-bit PCM (WAV or FLAC, by ``path``'s suffix) atomically: a partial file is
    renamed into place when complete."""
    import soundfile

    container = audio_format(path)
    with atomic_output_file(path, inputs=inputs) as tmp:
        soundfile.write(str(tmp), wav, sample_rate, subtype="PCM_16", format=container)
