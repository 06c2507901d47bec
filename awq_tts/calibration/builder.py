"""Turn prompts into talker calibration sequences by letting the source model speak.

Each sequence is exactly what the talker sees at inference: qwen-tts's own prompt
(role tokens, projected text, codec prefix with language and speaker) followed by the
model's own codec steps — a seeded rollout of the bf16 source — up to and including the
position that predicts end-of-speech, truncated to ``max_seq_len``. A prompt that comes
with a recording is teacher-forced instead: its steps are the speech tokenizer's codes of
that recording. Speaker conditioning
is mixed across prompts: synthetic reference voices (Base), built-in speakers
(CustomVoice) or instruction texts (VoiceDesign).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import UsageError
from ..models import adapter_of
from .prompts import Prompt, first_prompts, prompt_set_sha256

DEFAULT_SEED = 1729
#: The shortest talker sequence a calibration keeps (the prompt's prefix alone is longer).
MIN_SEQ_LEN = 8
#: How rollouts decode. ``dropping``: awq-tts's loop, each sample leaving its batch at its
#: own end-of-speech (a CPU pays per row). ``graphs``: transformers' ``generate`` on a
#: static cache, the talker step and the code predictor's frame replayed from CUDA graphs,
#: every row kept to the batch's end (a GPU at small batches pays per launch, not per row).
#: ``static``: the same steps as ``graphs`` run eagerly, their reference in the tests.
ROLLOUTS = ("dropping", "graphs", "static")


@dataclass
class CalibrationSet:
    """Talker input sequences (float32 ``[T, hidden]`` each) and what produced them."""

    name: str
    sequences: list[torch.Tensor]
    records: list[dict] = field(default_factory=list)
    seed: int = DEFAULT_SEED
    max_seq_len: int = 512
    #: Prompts per rollout batch: part of the recipe (padding changes the numerics).
    batch_size: int = 8
    #: Rollout work: how the talker decoded (``decode``, one of :data:`ROLLOUTS`, with the
    #: graphs' ``status`` for ``graphs``); talker row-steps taken, those spent on rows that
    #: had already stopped (none when ``dropping``: a sample leaves its batch at its own
    #: end-of-speech) and the row-steps a batch stepped until its longest row stopped would
    #: have taken; the dtype the talker's prefill computed in (float32 on a CPU when
    #: ``dropping``, see ``models/qwen3_tts/decode.py``).
    rollout: dict = field(default_factory=dict)

    def sha256(self) -> str:
        """Hash of the exact token content: texts, conditioning and the codec codes."""
        doc = json.dumps(self.records, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(doc).hexdigest()

    def describe(self) -> dict:
        lengths = [int(s.shape[0]) for s in self.sequences]
        return {
            "name": self.name,
            "count": len(self.sequences),
            "max_seq_len": self.max_seq_len,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "tokens": sum(lengths),
            "sha256": self.sha256(),
            "prompts_sha256": prompt_set_sha256([(r["text"], r["language"])
                                                 for r in self.records]),
            "rollout": self.rollout,
        }

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded batch ``[B, T, H]`` and its attention mask ``[B, T]`` (as qwen-tts pads)."""
        longest = max(s.shape[0] for s in self.sequences)
        hidden = self.sequences[0].shape[1]
        embeds = torch.zeros(len(self.sequences), longest, hidden)
        mask = torch.zeros(len(self.sequences), longest, dtype=torch.long)
        for i, seq in enumerate(self.sequences):
            embeds[i, longest - seq.shape[0]:] = seq
            mask[i, longest - seq.shape[0]:] = 1
        return embeds, mask


def build_calibration(
    tts,
    prompts: list[Prompt],
    name: str = "builtin",
    n_samples: int = 128,
    max_seq_len: int = 512,
    seed: int = DEFAULT_SEED,
    batch_size: int = 8,
    progress: bool = True,
    ref_audio: str | None = None,
    greedy: bool = False,
    rollout: str = "dropping",
) -> CalibrationSet:
    """Record the talker inputs of ``n_samples`` prompts.

    Prompts with ``audio`` are teacher-forced on the codes of that recording; the others
    are rolled out by the source model (sampled, seeded per batch; ``greedy`` for tests).
    ``ref_audio`` is the voice Base models clone for prompts without their own (default:
    built-in synthetic voices). ``rollout`` is how the talker decodes (:data:`ROLLOUTS`).
    """
    if rollout not in ROLLOUTS:
        raise UsageError(f"rollout {rollout!r}: choose {', '.join(map(repr, ROLLOUTS))}")
    if n_samples < 1 or max_seq_len < MIN_SEQ_LEN:
        raise UsageError(f"--n-samples {n_samples} / --max-seq-len {max_seq_len}: give at "
                         f"least 1 / {MIN_SEQ_LEN}")
    chosen = first_prompts(prompts, name, n_samples)
    conditioning = [_conditioning(tts, i, p, ref_audio) for i, p in enumerate(chosen)]
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    forced = [i for i, p in enumerate(chosen) if p.audio]
    # Longest texts first, so each batch holds prompts of similar length: a sample leaves
    # its batch when it stops, and similar lengths keep the batches full for longer.
    rolled = sorted((i for i, p in enumerate(chosen) if not p.audio),
                    key=lambda i: -expected_length(chosen[i]))
    batches = [rolled[k:k + batch_size] for k in range(0, len(rolled), batch_size)]
    bar = tqdm(total=len(chosen), desc="calibration", disable=not progress)
    work = {"talker_row_steps": 0, "stopped_row_steps": 0, "batch_row_steps": 0,
            "decode": rollout}
    for index in forced:
        results[index] = _teacher_forced(tts, chosen[index], conditioning[index])
        bar.update(1)
    adapter = adapter_of(tts)
    static = rollout != "dropping"
    with (adapter.static_decode(tts, replay=rollout == "graphs") if static
          else contextlib.nullcontext()):
        for batch in batches:
            torch.manual_seed(seed + batch[0])
            with adapter.record_talker(tts, drop_stopped=not static,
                                       fixed_batch=static) as record:
                _speak(tts, [chosen[i] for i in batch], [conditioning[i] for i in batch],
                       max_new_tokens=max_seq_len, do_sample=not greedy)
            for i, seq, codes in zip(batch, record.sequences(), record.codes, strict=True):
                results[i] = (seq, codes)
            frames = [int(c.shape[0]) for c in record.codes]
            work["talker_row_steps"] += record.row_steps
            work["stopped_row_steps"] += record.stopped_row_steps
            work["batch_row_steps"] += len(frames) * max(frames)
            work["prefill_dtype"] = record.prefill_dtype
            bar.update(len(batch))
        if rollout == "graphs":
            work["graphs"] = adapter.graph_status(tts)
    bar.close()
    sequences, records = [], []
    for i, prompt in enumerate(chosen):
        seq, codes = results[i]
        sequences.append(seq[:max_seq_len])
        records.append({
            "text": prompt.text,
            "language": prompt.language,
            "conditioning": conditioning[i]["label"],
            "codes": codes.tolist(),
            "codes_from": "audio" if prompt.audio else "rollout",
            "length": int(sequences[-1].shape[0]),
        })
    return CalibrationSet(name, sequences, records, seed, max_seq_len, batch_size, work)


def expected_length(prompt: Prompt) -> int:
    """How long ``prompt`` should speak, in relative units: speech length follows text
    length (a CJK character counts as about three Latin letters)."""
    return sum(3 if ord(ch) >= 0x2E80 else 1 for ch in prompt.text if not ch.isspace())


def _conditioning(tts, index: int, prompt: Prompt, default_ref: str | None = None) -> dict:
    ref = prompt.ref_audio or default_ref
    return adapter_of(tts).default_voice(tts, index, ref,
                                         prompt.ref_text if prompt.ref_audio else None)


def _teacher_forced(tts, prompt: Prompt, cond: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The talker inputs for speaking the codec codes of ``prompt.audio``."""
    adapter = adapter_of(tts)
    codes = adapter.encode_audio(tts, prompt.audio)
    talker_prompt = adapter.capture_prompt(tts, lambda: _speak(tts, [prompt], [cond], 1))
    return adapter.teacher_forced_sequence(tts.model, talker_prompt, codes), codes


def _speak(tts, batch: list[Prompt], conditioning: list[dict], max_new_tokens: int,
           do_sample: bool = True) -> None:
    languages = [p.language if p.language != "auto" else "Auto" for p in batch]
    adapter_of(tts).generate(tts, [p.text for p in batch], languages, conditioning,
                             max_new_tokens=max_new_tokens, do_sample=do_sample,
                             subtalker_dosample=do_sample)
