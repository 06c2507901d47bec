"""The patches awq-tts applies to qwen-tts while a model speaks, each re-entrant and undone
in ``finally`` (the ones applied while loading are in ``load_patches.py``).

- ``record_talker``: record what the talker sees while a qwen-tts model speaks;
- ``capture_prompt``: stop a ``generate_*`` call where the talker would start decoding;
- ``swap_attr``: the nesting attribute swap they (and ``decode.py``) are built on.

Recording the talker:

qwen-tts builds the talker input inside ``Qwen3TTSForConditionalGeneration.generate``
(role tokens, projected text, codec prefix with language and speaker, then one summed
codec embedding plus trailing text per step). Rather than re-deriving that layout, we run
the library's own ``generate_*`` and record the ``inputs_embeds`` of every call into the
talker's decoder: the prefill, then each decoding step. Audio decoding is skipped while
recording (the codes are all calibration needs). Stopped samples: with ``drop_stopped``
(calibration on a CPU) the talker's ``generate`` is replaced by ``decode.py``'s loop, where
each sample leaves the batch at its own end-of-speech; otherwise transformers' ``generate``
runs as users run it and only the code predictor skips samples that have stopped, unless
``fixed_batch`` (calibration from CUDA graphs, whose shapes are fixed) keeps every row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch


def swap_attr(obj: object, name: str, value: object) -> Callable[[], None]:
    """Set an instance attribute; the returned undo restores exactly what was there before
    (an outer patch's value, or nothing), so patches nest."""
    missing = object()
    before = obj.__dict__.get(name, missing)
    setattr(obj, name, value)

    def undo() -> None:
        if before is missing:
            obj.__dict__.pop(name, None)
        else:
            setattr(obj, name, before)

    return undo


@contextlib.contextmanager
def swapped(obj: object, name: str, value: object) -> Iterator[object]:
    """:func:`swap_attr` for the block: ``value`` inside it, what was there before after."""
    undo = swap_attr(obj, name, value)
    try:
        yield value
    finally:
        undo()


@dataclass
class TalkerRecord:
    """What one ``generate`` call fed the talker, batch-major and left-padded."""

    chunks: list[torch.Tensor] = field(default_factory=list)
    prefill_mask: torch.Tensor | None = None
    codes: list[torch.Tensor] = field(default_factory=list)
    #: Rows the talker stepped after the prefill, and those of them that had stopped.
    row_steps: int = 0
    stopped_row_steps: int = 0
    #: Code-predictor row-steps skipped because their sample had already stopped.
    skipped_rows: int = 0
    #: The dtype the talker's prefill computed in (own decode loop only).
    prefill_dtype: str | None = None

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
def record_talker(tts, drop_stopped: bool = False,
                  fixed_batch: bool = False) -> Iterator[TalkerRecord]:
    """Within the block, every ``generate_*`` call on ``tts`` fills the yielded record.

    ``drop_stopped`` decodes with :func:`.decode.generate_dropping_stopped`: each sample
    leaves the batch at its own end-of-speech (calibration); otherwise transformers'
    ``generate`` runs as users run it, and the code predictor skips stopped rows unless
    ``fixed_batch`` (every row stays, so each frame has the batch's shape).
    """
    if drop_stopped and fixed_batch:
        raise ValueError("drop_stopped and fixed_batch exclude each other")
    record = TalkerRecord()
    core = tts.model
    decoder = core.talker.model
    state: dict = {"rows": None}

    def pre_hook(_module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return
        embeds = embeds.detach().cpu()
        if embeds.shape[1] > 1:
            record.chunks.clear()
            mask = kwargs.get("attention_mask")
            record.prefill_mask = (
                mask.detach().cpu()
                if mask is not None
                else torch.ones(embeds.shape[:2], dtype=torch.long)
            )
        rows, batch = state["rows"], record.prefill_mask.shape[0]
        if rows is not None and rows.numel() != batch:
            full = embeds.new_zeros((batch, *embeds.shape[1:]))
            full[rows.cpu()] = embeds
            embeds = full
        record.chunks.append(embeds)

    original_generate = core.generate

    def generate(*args, **kwargs):
        codes, hiddens = original_generate(*args, **kwargs)
        record.codes = [c.detach().cpu() for c in codes]
        return codes, hiddens

    def skip_decode(encoded):
        n = len(encoded) if isinstance(encoded, list) else 1
        return [np.zeros(1, dtype=np.float32)] * n, 24000

    eos = core.talker.config.codec_eos_token_id

    def count_rows(_module, _args, kwargs):
        ids = kwargs.get("input_ids")  # a decode step (the prefill passes embeddings)
        if ids is not None:
            record.row_steps += int(ids.shape[0])
            record.stopped_row_steps += int((ids[:, -1] == eos).sum())

    handle = decoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    counter = core.talker.register_forward_pre_hook(count_rows, with_kwargs=True)
    undo_generate = swap_attr(core, "generate", generate)
    undo_decode = swap_attr(core.speech_tokenizer, "decode", skip_decode)
    if drop_stopped:
        undo = _dropping_decode(core.talker, record, state)
    elif fixed_batch:
        undo = _nothing
    else:
        undo = _drop_stopped_rows(core.talker, record)
    try:
        yield record
    finally:
        undo()
        counter.remove()
        handle.remove()
        undo_decode()
        undo_generate()


def _nothing() -> None:
    pass


def _dropping_decode(talker, record: TalkerRecord, state: dict):
    """Decode ``talker`` with stopped rows leaving the batch; return the undo."""
    from .decode import generate_dropping_stopped

    def on_rows(rows: torch.Tensor) -> None:
        state["rows"] = rows

    def generate(**kwargs):
        result = generate_dropping_stopped(talker, on_rows, **kwargs)
        record.prefill_dtype = result.prefill_dtype
        return result

    return swap_attr(talker, "generate", generate)


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
    undo_generate = swap_attr(predictor, "generate", generate)

    def undo() -> None:
        handle.remove()
        undo_generate()

    return undo


class _Stop(Exception):
    pass


@dataclass
class TalkerPrompt:
    prefix: torch.Tensor
    trailing: torch.Tensor
    pad: torch.Tensor


@torch.no_grad()
def capture_prompt(tts, speak: Callable[[], object]) -> TalkerPrompt:
    """Run ``speak()`` (one prompt) until the talker would decode; return its inputs."""
    captured: dict = {}

    def stop(**kwargs):
        captured.update(kwargs)
        raise _Stop

    undo = swap_attr(tts.model.talker, "generate", stop)
    try:
        speak()
    except _Stop:
        pass
    finally:
        undo()
    if not captured:
        raise RuntimeError("qwen-tts never reached the talker")
    mask = captured["attention_mask"][0].bool()
    return TalkerPrompt(
        prefix=captured["inputs_embeds"][0][mask].float().cpu(),
        trailing=captured["trailing_text_hidden"][0].float().cpu(),
        pad=captured["tts_pad_embed"].reshape(-1).float().cpu(),
    )
