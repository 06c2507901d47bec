"""Record what the talker sees while a qwen-tts model speaks.

qwen-tts builds the talker input inside ``Qwen3TTSForConditionalGeneration.generate``
(role tokens, projected text, codec prefix with language and speaker, then one summed
codec embedding plus trailing text per step). Rather than re-deriving that layout, we run
the library's own ``generate_*`` and record the ``inputs_embeds`` of every call into the
talker's decoder: the prefill, then each decoding step. Audio decoding is skipped while
recording (the codes are all calibration needs), and the code predictor skips samples that
have already stopped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch


@dataclass
class TalkerRecord:
    """What one ``generate`` call fed the talker, batch-major and left-padded."""

    chunks: list[torch.Tensor] = field(default_factory=list)
    prefill_mask: torch.Tensor | None = None
    codes: list[torch.Tensor] = field(default_factory=list)
    #: Code-predictor row-steps skipped because their sample had already stopped.
    skipped_rows: int = 0

    def sequences(self) -> list[torch.Tensor]:
        """Per sample, the talker inputs up to and including the step that predicts EOS."""
        if not self.chunks or self.prefill_mask is None:
            raise RuntimeError("nothing was recorded: the talker never ran")
        full = torch.cat(self.chunks, dim=1).float()
        prefill = self.prefill_mask.shape[1]
        out = []
        for i, codes in enumerate(self.codes):
            start = prefill - int(self.prefill_mask[i].sum())
            steps = min(int(codes.shape[0]), full.shape[1] - prefill)
            out.append(full[i, start : prefill + steps].clone())
        return out


@contextlib.contextmanager
def record_talker(tts) -> Iterator[TalkerRecord]:
    """Within the block, every ``generate_*`` call on ``tts`` fills the yielded record."""
    record = TalkerRecord()
    core = tts.model
    decoder = core.talker.model

    def pre_hook(_module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return
        if embeds.shape[1] > 1:
            record.chunks.clear()
            mask = kwargs.get("attention_mask")
            record.prefill_mask = (
                mask.detach().cpu()
                if mask is not None
                else torch.ones(embeds.shape[:2], dtype=torch.long)
            )
        record.chunks.append(embeds.detach().cpu())

    original_generate = core.generate

    def generate(*args, **kwargs):
        codes, hiddens = original_generate(*args, **kwargs)
        record.codes = [c.detach().cpu() for c in codes]
        return codes, hiddens

    def skip_decode(encoded):
        n = len(encoded) if isinstance(encoded, list) else 1
        return [np.zeros(1, dtype=np.float32)] * n, 24000

    handle = decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    core.generate = generate
    core.speech_tokenizer.decode = skip_decode
    undo = _drop_stopped_rows(core.talker, record)
    try:
        yield record
    finally:
        undo()
        handle.remove()
        del core.generate
        del core.speech_tokenizer.decode


def _drop_stopped_rows(talker, record: TalkerRecord):
    """Run the code predictor only on samples that have not stopped; return the undo.

    transformers keeps a stopped sample in the batch (feeding it end-of-speech) until the
    longest one stops, and qwen-tts then runs the 15-step code predictor on it every
    frame for nothing: its codes are cut at the stop. Here the predictor sees only the
    rows still speaking; stopped rows get code 0, which nothing reads (a row's cache is
    its own, so the rows still speaking are unaffected).
    """
    eos = talker.config.codec_eos_token_id
    predictor = talker.code_predictor
    original = predictor.generate
    state: dict = {"active": None}

    def pre_hook(_module, _args, kwargs):
        ids = kwargs.get("input_ids")
        state["active"] = None if ids is None else ids[:, -1] != eos

    def generate(*args, inputs_embeds=None, **kwargs):
        active = state["active"]
        if active is None or bool(active.all()) or not bool(active.any()):
            return original(*args, inputs_embeds=inputs_embeds, **kwargs)
        result = original(*args, inputs_embeds=inputs_embeds[active], **kwargs)
        sequences = result.sequences.new_zeros((active.shape[0], result.sequences.shape[1]))
        sequences[active] = result.sequences
        record.skipped_rows += int((~active).sum())
        return SimpleNamespace(sequences=sequences)

    handle = talker.register_forward_pre_hook(pre_hook, with_kwargs=True)
    predictor.generate = generate

    def undo() -> None:
        handle.remove()
        del predictor.generate

    return undo
