"""The code predictor's 15 sub-steps per frame as a plain loop instead of ``generate``.

For every codec frame the talker's ``forward`` calls ``code_predictor.generate`` to draw
the frame's 15 remaining codes, so a frame pays transformers' ``generate`` machinery once
(configuration checks and copies, logits-processor and stopping-criteria set-up, the
attention mask grown and re-checked every sub-step, per-step hidden-state tuples, a host
sync per sub-step for the stopping check). :func:`predict_codes` does what that call
computes and nothing else: the same forwards, with the same key/value shapes and values
(on buffers allocated once per frame, :class:`FixedLayer`), the same logits processors in
the same order (temperature, top-k, top-p when sampling), the same ``softmax`` +
``multinomial`` draw or ``argmax``. So the codes are identical, sampled ones included (the
random stream is consumed the same way); the tests compare it with ``generate`` token for
token. No attention mask is passed: the predictor's inputs are never padded, and for an
all-ones mask transformers drops it for the same causal kernel.

:func:`install` puts it in place on a loaded model (``awq_tts.load`` and every model
awq-tts builds). A call it does not implement (another argument, or a predictor whose
``generation_config`` sets anything beyond the sampling knobs, such as an end-of-sequence
id) goes to the original ``generate`` unchanged. With ``cuda_graphs`` the frame is replayed
from a CUDA graph of :func:`frame_codes` (``graphs.py``).
"""

from __future__ import annotations

from types import MethodType, SimpleNamespace

import torch
from transformers.cache_utils import Cache, DynamicLayer

from .sampling import choose, sampling_warpers

#: What qwen-tts 0.1.1's talker passes to ``code_predictor.generate``.
ARGUMENTS = frozenset({"inputs_embeds", "max_new_tokens", "do_sample", "top_p", "top_k",
                       "temperature", "output_hidden_states", "return_dict_in_generate"})
#: ``generation_config`` fields the loop honours (the rest must be at their defaults).
_SAMPLING = frozenset({"do_sample", "top_k", "top_p", "temperature"})
#: Where ``graphs.enable`` keeps a predictor's captured frames.
GRAPHS_ATTR = "awq_tts_graphs"
_IGNORED = frozenset({"transformers_version", "_from_model_config", "bos_token_id",
                      "pad_token_id"})


def unsupported_config(predictor) -> list[str]:
    """The predictor's ``generation_config`` fields the loop does not implement."""
    diff = predictor.generation_config.to_diff_dict()
    return sorted(set(diff) - _SAMPLING - _IGNORED)


class FixedLayer(DynamicLayer):
    """A KV-cache layer on buffers allocated once for ``capacity`` tokens: ``update`` writes
    in place and returns the filled prefix as views. So the attention sees exactly the
    shapes and values ``DynamicCache`` gives it (the same codes, bit for bit), while the
    storage never moves, which a CUDA graph needs (``graphs.py``)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0
        self.key_buffer = self.value_buffer = None

    def update(self, key_states, value_states, cache_kwargs=None):
        if self.key_buffer is None:
            self.dtype, self.device = key_states.dtype, key_states.device
            shape = (*key_states.shape[:2], self.capacity, key_states.shape[-1])
            self.key_buffer = key_states.new_empty(shape)
            self.value_buffer = value_states.new_empty(shape)
            self.is_initialized = True
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"FixedLayer holds {self.capacity} tokens, asked for {end}")
        self.key_buffer[:, :, self.length:end].copy_(key_states)
        self.value_buffer[:, :, self.length:end].copy_(value_states)
        self.length = end
        self.keys = self.key_buffer[:, :, :end]
        self.values = self.value_buffer[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length


def fixed_cache(predictor, capacity: int) -> Cache:
    """A cache of :class:`FixedLayer` for every layer of ``predictor``."""
    layers = predictor.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[FixedLayer(capacity) for _ in range(layers)])


def rewind(cache: Cache) -> None:
    """Empty ``cache`` without freeing or moving its buffers."""
    for layer in cache.layers:
        layer.length = 0


def frame_codes(predictor, inputs_embeds: torch.Tensor, cache: Cache, positions: torch.Tensor,
                max_new_tokens: int, warp, sample: bool) -> torch.Tensor:
    """The frame's ``[batch, max_new_tokens]`` codes: the prefill, then one forward per code
    on ``cache`` (rewound first). Python decides nothing from tensor values, so a CUDA graph
    can capture the whole call (``graphs.py``)."""
    rewind(cache)
    prefill = inputs_embeds.shape[1]
    out = predictor(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True,
                    cache_position=positions[:prefill])
    codes = []
    for step in range(max_new_tokens):
        codes.append(choose(warp, None, out.logits, sample))
        if step == max_new_tokens - 1:
            break
        out = predictor(input_ids=codes[-1][:, None], past_key_values=cache, use_cache=True,
                        cache_position=positions[prefill + step:prefill + step + 1],
                        generation_steps=out.generation_steps)
    return torch.stack(codes, dim=1)


def sampling_of(predictor, do_sample=None, top_p=None, top_k=None,
                temperature=None) -> tuple[bool, float, int, float]:
    """``(do_sample, temperature, top_k, top_p)``, ``None`` taken from the predictor's
    ``generation_config`` as ``generate`` takes it."""
    config = predictor.generation_config

    def pick(value, name):
        return getattr(config, name) if value is None else value

    return (bool(pick(do_sample, "do_sample")), pick(temperature, "temperature"),
            pick(top_k, "top_k"), pick(top_p, "top_p"))


@torch.no_grad()
def predict_codes(predictor, inputs_embeds: torch.Tensor, max_new_tokens: int,
                  do_sample: bool | None = None, top_p: float | None = None,
                  top_k: int | None = None, temperature: float | None = None) -> torch.Tensor:
    """``[batch, max_new_tokens]`` codes, exactly as ``predictor.generate`` draws them for
    the same arguments (``None`` takes the predictor's ``generation_config`` value)."""
    sample, temperature, top_k, top_p = sampling_of(predictor, do_sample, top_p, top_k,
                                                    temperature)
    capacity = inputs_embeds.shape[1] + max_new_tokens - 1
    positions = torch.arange(capacity + 1, device=inputs_embeds.device)  # no copy per step
    return frame_codes(predictor, inputs_embeds, fixed_cache(predictor, capacity), positions,
                       max_new_tokens, sampling_warpers(sample, temperature, top_k, top_p),
                       sample)


def applies(predictor, args: tuple, kwargs: dict) -> bool:
    """Whether :func:`predict_codes` computes this ``generate`` call: only qwen-tts's
    arguments, a dict result asked for, and nothing else set in ``generation_config``."""
    return (not args and not set(kwargs) - ARGUMENTS and kwargs.get("inputs_embeds") is not None
            and kwargs.get("max_new_tokens") is not None
            and bool(kwargs.get("return_dict_in_generate")) and not unsupported_config(predictor))


def install(predictor) -> None:
    """Route the calls of ``predictor.generate`` that :func:`applies` to through
    :func:`predict_codes` (the result carries ``sequences``, all qwen-tts reads); any other
    call goes to the class's ``generate``. A bound method, so a deep copy of the model
    keeps its own; installing twice is a no-op."""
    if not getattr(predictor.generate, "_awq_tts_lean", False):
        predictor.generate = MethodType(_generate, predictor)


def _generate(self, *args, **kwargs):
    if not applies(self, args, kwargs):
        return type(self).generate(self, *args, **kwargs)
    kwargs = {k: v for k, v in kwargs.items()
              if k not in ("output_hidden_states", "return_dict_in_generate")}
    store = getattr(self, GRAPHS_ATTR, None)      # graphs.FrameGraphs when cuda_graphs is on
    if store is not None:
        sampling = sampling_of(self, kwargs.get("do_sample"), kwargs.get("top_p"),
                               kwargs.get("top_k"), kwargs.get("temperature"))
        codes = store.codes(self, kwargs["inputs_embeds"], kwargs["max_new_tokens"], sampling)
        if codes is not None:
            return SimpleNamespace(sequences=codes)
    return SimpleNamespace(sequences=predict_codes(self, **kwargs))


_generate._awq_tts_lean = True
