"""Free-running generation of both models on the same prompts, voice and seed.

Each model speaks every prompt greedily and sampled (same seed for both); what the
talker saw and the codes it chose are recorded, so stop behaviour, durations, audio and
the teacher-forced comparison all come from one set of rollouts.

**Fail fast on rambling.** The INT4 model speaks after bf16, and each of its prompts gets
a frame cap of ``runaway_cap(bf16 frames)`` = 2 × bf16's frames + 25 (never above
``max_new_tokens``). A prompt that has not stopped by its cap is a runaway, and the report
records where it was cut, so judging a rambling model costs about as much as judging a
good one. (A batch runs to the largest cap of its prompts; frames past a prompt's own cap
do not count.)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..calibration.prompts import Prompt
from ..models import adapter_of

#: A rollout may run to RUNAWAY_FACTOR × bf16's frames + RUNAWAY_SLACK before it is cut.
RUNAWAY_FACTOR, RUNAWAY_SLACK = 2, 25


def runaway_cap(bf16_frames: int, max_new_tokens: int) -> int:
    """How many frames an INT4 rollout may take before it counts as a runaway."""
    return min(max_new_tokens, RUNAWAY_FACTOR * bf16_frames + RUNAWAY_SLACK)


@dataclass
class Rollout:
    sequences: list[torch.Tensor]
    codes: list[torch.Tensor]
    stopped: list[bool]
    seconds: float
    caps: list[int] | None = None

    @property
    def frames(self) -> list[int]:
        return [int(c.shape[0]) for c in self.codes]

    def runaway_rate(self) -> float:
        return sum(not s for s in self.stopped) / max(len(self.stopped), 1)


def speak(tts, prompts: list[Prompt], voice: dict, greedy: bool, seed: int,
          max_new_tokens: int, batch_size: int = 8, caps: list[int] | None = None,
          progress=None) -> Rollout:
    """Generate every prompt with ``tts``; record talker inputs and codes.

    ``caps`` (one per prompt) cuts each prompt at its own frame cap: past it, the
    rollout counts as not stopped. ``progress`` (a tqdm bar) advances once per prompt.
    """
    limits = caps or [max_new_tokens] * len(prompts)
    sequences, codes, stopped = [], [], []
    start = time.perf_counter()
    for first in range(0, len(prompts), batch_size):
        batch = prompts[first:first + batch_size]
        batch_caps = limits[first:first + batch_size]
        torch.manual_seed(seed + first)
        with adapter_of(tts).record_talker(tts) as record:
            _generate(tts, batch, voice, greedy, max(batch_caps))
        for seq, c, cap in zip(record.sequences(), record.codes, batch_caps, strict=True):
            done = int(c.shape[0]) < cap
            codes.append(c if done else c[:cap])
            sequences.append(seq)
            stopped.append(done)
        if progress is not None:
            progress.update(len(batch))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return Rollout(sequences, codes, stopped, time.perf_counter() - start,
                   caps if caps else None)


def _generate(tts, batch: list[Prompt], voice: dict, greedy: bool, max_new_tokens: int):
    languages = [p.language if p.language != "auto" else "Auto" for p in batch]
    adapter_of(tts).generate(tts, [p.text for p in batch], languages, [voice] * len(batch),
                             max_new_tokens=max_new_tokens, do_sample=not greedy,
                             subtalker_dosample=not greedy)


def voice_for(tts, ref_audio) -> dict:
    """The conditioning both models share: a cloned voice, a built-in speaker or a design."""
    adapter = adapter_of(tts)
    return adapter.clone_once(tts, adapter.default_voice(tts, None, ref_audio))


def decode(tts, codes: list[torch.Tensor]) -> tuple[list, int]:
    """Waveforms of code sequences (empty sequences give empty audio)."""
    return adapter_of(tts).decode(tts, codes)
