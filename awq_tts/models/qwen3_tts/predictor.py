"""The code predictor's 15 sub-steps per frame as a plain loop instead of ``generate``.

For every codec frame the talker's ``forward`` calls ``code_predictor.generate`` to draw
the frame's 15 remaining codes, so a frame pays transformers' ``generate`` machinery once
(configuration checks and copies, logits-processor and stopping-criteria set-up, the
attention mask grown and re-checked every sub-step, per-step hidden-state tuples, a host
sync per sub-step for the stopping check). :func:`predict_codes` does what that call
computes and nothing else: the same forwards on a ``DynamicCache`` built as ``generate``
builds it, the same logits processors in the same order (temperature, top-k, top-p when
sampling), the same ``softmax`` + ``multinomial`` draw or ``argmax``. So the codes are
identical, sampled ones included (the random stream is consumed the same way); the tests
compare it with ``generate`` token for token. No attention mask is passed: the predictor's
inputs are never padded, and for an all-ones mask transformers drops it for the same
causal kernel.

:func:`install` puts it in place on a loaded model (``awq_tts.load`` and every model
awq-tts builds). A call it does not implement (another argument, or a predictor whose
``generation_config`` sets anything beyond the sampling knobs, such as an end-of-sequence
id) goes to the original ``generate`` unchanged.
"""

from __future__ import annotations

from types import MethodType, SimpleNamespace

import torch
from transformers import DynamicCache

from .sampling import choose, sampling_warpers

#: What qwen-tts 0.1.1's talker passes to ``code_predictor.generate``.
ARGUMENTS = frozenset({"inputs_embeds", "max_new_tokens", "do_sample", "top_p", "top_k",
                       "temperature", "output_hidden_states", "return_dict_in_generate"})
#: ``generation_config`` fields the loop honours (the rest must be at their defaults).
_SAMPLING = frozenset({"do_sample", "top_k", "top_p", "temperature"})
_IGNORED = frozenset({"transformers_version", "_from_model_config", "bos_token_id",
                      "pad_token_id"})


def unsupported_config(predictor) -> list[str]:
    """The predictor's ``generation_config`` fields the loop does not implement."""
    diff = predictor.generation_config.to_diff_dict()
    return sorted(set(diff) - _SAMPLING - _IGNORED)


@torch.no_grad()
def predict_codes(predictor, inputs_embeds: torch.Tensor, max_new_tokens: int,
                  do_sample: bool | None = None, top_p: float | None = None,
                  top_k: int | None = None, temperature: float | None = None) -> torch.Tensor:
    """``[batch, max_new_tokens]`` codes, exactly as ``predictor.generate`` draws them for
    the same arguments (``None`` takes the predictor's ``generation_config`` value)."""
    config = predictor.generation_config

    def pick(value, name):
        return getattr(config, name) if value is None else value

    sample = bool(pick(do_sample, "do_sample"))
    warp = sampling_warpers(sample, pick(temperature, "temperature"), pick(top_k, "top_k"),
                    pick(top_p, "top_p"))
    batch, prefill, device = inputs_embeds.shape[0], inputs_embeds.shape[1], inputs_embeds.device
    cache = DynamicCache(config=predictor.config.get_text_config(decoder=True))
    codes = torch.zeros(batch, 0, dtype=torch.long, device=device)
    positions = torch.arange(prefill + max_new_tokens, device=device)  # no copy per step
    out = predictor(inputs_embeds=inputs_embeds, past_key_values=cache, use_cache=True,
                    cache_position=positions[:prefill])
    for step in range(max_new_tokens):
        token = choose(warp, codes, out.logits, sample)
        codes = torch.cat([codes, token[:, None]], dim=-1)
        if step == max_new_tokens - 1:
            break
        out = predictor(input_ids=token[:, None], past_key_values=cache, use_cache=True,
                        cache_position=positions[prefill + step:prefill + step + 1],
                        generation_steps=out.generation_steps)
    return codes


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
    return SimpleNamespace(sequences=predict_codes(self, **kwargs))


_generate._awq_tts_lean = True
