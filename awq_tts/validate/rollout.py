"""Free-running generation of both models on the same prompts, voice and seed.

Each model speaks every prompt greedily and sampled (same seed for both); what the
talker saw and the codes it chose are recorded, so stop behaviour, durations, audio and
the teacher-forced comparison all come from one set of rollouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..calibration.capture import record_talker
from ..calibration.prompts import Prompt


@dataclass
class Rollout:
    sequences: list[torch.Tensor]
    codes: list[torch.Tensor]
    stopped: list[bool]
    seconds: float

    @property
    def frames(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codes]

    def runaway_rate(self) -> float:
        return sum(not s for s in self.stopped) / max(len(self.stopped), 1)


def speak(tts, prompts: list[Prompt], voice: dict, greedy: bool, seed: int,
          max_new_tokens: int, batch_size: int = 8) -> Rollout:
    """Generate every prompt with ``tts``; record talker inputs and codes."""
    sequences, codes, stopped = [], [], []
    start = time.perf_counter()
    for first in range(0, len(prompts), batch_size):
        batch = prompts[first:first + batch_size]
        torch.manual_seed(seed + first)
        with record_talker(tts) as record:
            _generate(tts, batch, voice, greedy, max_new_tokens)
        sequences += record.sequences()
        for c in record.codes:
            codes.append(c)
            stopped.append(int(c.shape[0]) < max_new_tokens)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return Rollout(sequences, codes, stopped, time.perf_counter() - start)


def _generate(tts, batch: list[Prompt], voice: dict, greedy: bool, max_new_tokens: int):
    texts = [p.text for p in batch]
    languages = [p.language if p.language != "auto" else "Auto" for p in batch]
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=not greedy,
                  subtalker_dosample=not greedy)
    kind = tts.model.tts_model_type
    if kind == "base":
        tts.generate_voice_clone(text=texts, language=languages,
                                 voice_clone_prompt=voice["clone_prompt"] * len(texts), **kwargs)
    elif kind == "custom_voice":
        tts.generate_custom_voice(text=texts, language=languages,
                                  speaker=[voice["speaker"]] * len(texts), **kwargs)
    else:
        tts.generate_voice_design(text=texts, language=languages,
                                  instruct=[voice["instruct"]] * len(texts), **kwargs)


def voice_for(tts, ref_audio) -> dict:
    """The conditioning both models share: a cloned voice, a built-in speaker or a design."""
    kind = tts.model.tts_model_type
    if kind == "base":
        return {"clone_prompt": tts.create_voice_clone_prompt(ref_audio=ref_audio,
                                                              x_vector_only_mode=True),
                "ref_audio": ref_audio}
    if kind == "custom_voice":
        return {"speaker": sorted(tts.get_supported_speakers())[0]}
    return {"instruct": "A clear, neutral voice."}


def decode(tts, codes: list[torch.Tensor]) -> tuple[list, int]:
    """Waveforms of code sequences (empty sequences give empty audio)."""
    non_empty = [c for c in codes if c.shape[0]]
    if not non_empty:
        return [torch.zeros(0).numpy() for _ in codes], 24000
    wavs, sr = tts.model.speech_tokenizer.decode([{"audio_codes": c} for c in non_empty])
    it = iter(wavs)
    return [next(it) if c.shape[0] else torch.zeros(0).numpy() for c in codes], sr
