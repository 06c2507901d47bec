"""The talker's decode loop, with each sample leaving the batch at its own end-of-speech.

transformers' ``generate`` steps a batch until its longest sample stops, feeding stopped
samples end-of-speech; on calibration rollouts that is about a third of the talker's work
(``calibration.rollout`` in provenance). This loop is a drop-in for
``Qwen3TTSTalkerForConditionalGeneration.generate`` as qwen-tts calls it: the same
forward, the same logits processors in transformers' order (repetition penalty, minimum
new tokens, suppressed tokens, then temperature, top-k and top-p when sampling), the same
sampling call — but after each step the rows that sampled end-of-speech are dropped from
the KV cache, the mask, the rope offsets and the trailing text. A row's attention reads
only its own cache, so the rows still speaking see exactly what they saw before; only the
random stream of a sampled batch is consumed differently (still one draw per row and
step, so a rollout stays reproducible for a seed and batch size).

``on_rows(rows)`` is called before every forward with the original batch indices of the
rows it holds, so a recorder can place what the talker sees.

On a CPU the prefill (hundreds of rows per layer) runs each decoder layer in float32 on
float32 copies of its bf16 weights: this machine class has no bf16 matrix units, and a
1,024-row bf16 matmul costs 7× its float32 twin (1.28 s against 0.18 s for one 2048→6144
linear on 2 AVX2 cores), while one-row decode steps stay bf16, where bf16 is faster. The
layer's output and its KV cache return to bf16, so every later step sees bf16 as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from itertools import chain
from types import SimpleNamespace

import torch
from torch import nn
from torch.func import functional_call
from transformers import DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    MinNewTokensLengthLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SuppressTokensLogitsProcessor,
)

from ...devices import half_on_cpu
from .patches import swap_attr
from .sampling import choose, sampling_warpers

_SUBTALKER = ("subtalker_dosample", "subtalker_top_k", "subtalker_top_p",
              "subtalker_temperature")
#: Every argument qwen-tts 0.1.1 passes to the talker's ``generate``; anything else would be
#: silently ignored here, so it is refused instead.
KNOWN = frozenset({"inputs_embeds", "attention_mask", "trailing_text_hidden", "tts_pad_embed",
                   "max_new_tokens", "min_new_tokens", "do_sample", "top_k", "top_p",
                   "temperature", "eos_token_id", "repetition_penalty", "suppress_tokens",
                   "output_hidden_states", "return_dict_in_generate", *_SUBTALKER})


def processors(kwargs: dict, device: torch.device) -> LogitsProcessorList:
    """transformers' processors for qwen-tts's talker arguments, in transformers' order."""
    out = LogitsProcessorList()
    eos = int(kwargs["eos_token_id"])
    if kwargs.get("repetition_penalty", 1.0) != 1.0:
        out.append(RepetitionPenaltyLogitsProcessor(penalty=kwargs["repetition_penalty"]))
    if kwargs.get("min_new_tokens"):
        out.append(MinNewTokensLengthLogitsProcessor(0, kwargs["min_new_tokens"], eos,
                                                     device=device))
    if kwargs.get("suppress_tokens"):
        out.append(SuppressTokensLogitsProcessor(kwargs["suppress_tokens"], device=device))
    out.extend(sampling_warpers(kwargs.get("do_sample", True), kwargs.get("temperature", 1.0),
                                kwargs.get("top_k", 50), kwargs.get("top_p", 1.0)))
    return out


#: Rows (batch × positions) from which a CPU forward computes in float32.
FLOAT32_ROWS = 64


@contextlib.contextmanager
def layers_in_float32(layers: nn.ModuleList, min_rows: int = FLOAT32_ROWS) -> Iterator[None]:
    """Within the block, a forward of ≥ ``min_rows`` rows computes each layer in float32
    (float32 copies of its weights, inputs cast up, output cast back); smaller ones and
    the model's own tensors are untouched."""
    undo = []
    for layer in layers:
        undo.append(_float32_forward(layer, min_rows))
    try:
        yield
    finally:
        for restore in reversed(undo):
            restore()


def _float32_forward(layer: nn.Module, min_rows: int) -> Callable[[], None]:
    original, inside = layer.forward, [False]

    def up(value):
        if isinstance(value, tuple):
            return tuple(up(v) for v in value)
        if torch.is_tensor(value) and value.is_floating_point():
            return value.float()
        return value

    def forward(hidden_states, *args, **kwargs):
        rows = hidden_states.shape[0] * hidden_states.shape[1]
        if inside[0] or rows < min_rows or hidden_states.dtype == torch.float32:
            return original(hidden_states, *args, **kwargs)
        weights = {name: up(t) for name, t in
                   chain(layer.named_parameters(), layer.named_buffers())}
        inside[0] = True
        try:
            out = functional_call(layer, weights, (hidden_states.float(), *up(args)),
                                  {k: up(v) for k, v in kwargs.items()})
        finally:
            inside[0] = False
        return (out[0].to(hidden_states.dtype), *out[1:])

    return swap_attr(layer, "forward", forward)


def _cache_to(cache: DynamicCache, dtype: torch.dtype) -> None:
    for entry in cache.layers:
        if getattr(entry, "keys", None) is not None and entry.keys.dtype != dtype:
            entry.keys, entry.values = entry.keys.to(dtype), entry.values.to(dtype)


@torch.no_grad()
def generate_dropping_stopped(talker, on_rows: Callable[[torch.Tensor], None] | None = None,
                              **kwargs) -> SimpleNamespace:
    """Decode like ``talker.generate(**kwargs)``; returns what qwen-tts reads from it
    (``hidden_states``: per step the last hidden state and the frame's codes, full batch,
    stopped rows holding end-of-speech) and the dtype the prefill computed in."""
    unknown = sorted(set(kwargs) - KNOWN)
    if unknown:
        raise RuntimeError(f"qwen-tts passed {', '.join(unknown)} to the talker's generate; "
                           f"awq-tts's calibration decode loop does not implement "
                           f"{'it' if len(unknown) == 1 else 'them'} (models/qwen3_tts/decode.py)")
    embeds, mask = kwargs["inputs_embeds"], kwargs["attention_mask"]
    trailing, pad = kwargs["trailing_text_hidden"], kwargs["tts_pad_embed"]
    eos, budget = int(kwargs["eos_token_id"]), int(kwargs["max_new_tokens"])
    sample = bool(kwargs.get("do_sample", True))
    batch, prefill, device = embeds.shape[0], embeds.shape[1], embeds.device
    process = processors(kwargs, device)
    extra = {k: kwargs[k] for k in _SUBTALKER if k in kwargs}
    rows = torch.arange(batch, device=device)
    cache = DynamicCache()
    history = torch.zeros(batch, 0, dtype=torch.long, device=device)
    if on_rows is not None:
        on_rows(rows)
    upcast = half_on_cpu(device, embeds.dtype)
    with layers_in_float32(talker.model.layers) if upcast else contextlib.nullcontext():
        out = talker(inputs_embeds=embeds, attention_mask=mask, past_key_values=cache,
                     use_cache=True, cache_position=torch.arange(prefill, device=device),
                     trailing_text_hidden=trailing, tts_pad_embed=pad, **extra)
    _cache_to(cache, embeds.dtype)
    steps = [_step(out, None, rows, batch, eos)]
    for n in range(budget):
        token = choose(process, history, out.logits, sample)
        history = torch.cat([history, token[:, None]], dim=-1)
        if n == budget - 1:
            break
        speaking = token != eos
        past_hidden = out.past_hidden
        if not bool(speaking.all()):
            keep = speaking.nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            rows, token, history, mask = rows[keep], token[keep], history[keep], mask[keep]
            trailing, past_hidden = trailing[keep], past_hidden[keep]
            cache.batch_select_indices(keep)
            talker.rope_deltas = talker.rope_deltas[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        if on_rows is not None:
            on_rows(rows)
        out = talker(input_ids=token[:, None], attention_mask=mask, past_key_values=cache,
                     use_cache=True, cache_position=torch.tensor([prefill + n], device=device),
                     past_hidden=past_hidden, generation_step=out.generation_step,
                     trailing_text_hidden=trailing, tts_pad_embed=pad, **extra)
        steps.append(_step(out, out.hidden_states[1], rows, batch, eos))
    prefill_dtype = torch.float32 if upcast else embeds.dtype
    return SimpleNamespace(hidden_states=steps,
                           prefill_dtype=str(prefill_dtype).removeprefix("torch."))


def _step(out, codes: torch.Tensor | None, rows: torch.Tensor, batch: int,
          eos: int) -> tuple:
    """One step of ``generate``'s ``hidden_states`` for the full batch: absent rows hold
    zeros and a frame that starts with end-of-speech (where qwen-tts cuts a sample)."""
    hidden = out.past_hidden.new_zeros((batch, *out.past_hidden.shape[1:]))
    hidden[rows] = out.past_hidden
    if codes is None:
        return ((hidden,), None)
    full = codes.new_zeros((batch, codes.shape[1]))
    full[:, 0] = eos
    full[rows] = codes
    return ((hidden,), full)
