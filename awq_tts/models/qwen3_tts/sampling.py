"""transformers' token choice, shared by awq-tts's two decode loops (the talker's in
``decode.py``, the code predictor's in ``predictor.py``): the same sampling warpers in
transformers' order and the same draw as ``GenerationMixin._sample``, so a loop that uses
them picks exactly the tokens ``generate`` picks (greedy) or draws them from the same
random stream (sampled)."""

from __future__ import annotations

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)


def sampling_warpers(do_sample: bool, temperature: float | None, top_k: int | None,
                     top_p: float | None) -> LogitsProcessorList:
    """transformers' warpers for these values, in its order (none when greedy)."""
    out = LogitsProcessorList()
    if not do_sample:
        return out
    if temperature is not None and temperature != 1.0:
        out.append(TemperatureLogitsWarper(temperature))
    if top_k:
        out.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return out


def choose(process: LogitsProcessorList, history: torch.Tensor | None, logits: torch.Tensor,
           sample: bool) -> torch.Tensor:
    """The next token per row from the last position's ``logits``, as ``_sample`` picks it:
    a float32 copy of the logits through ``process``, then ``multinomial`` of the softmax
    or ``argmax``. ``history`` (the tokens so far) is read only by processors that need it,
    such as a repetition penalty; the sampling warpers alone take ``None``. The processors
    are called one by one: ``LogitsProcessorList.__call__`` would inspect each one's
    signature on every call (15 times a frame in the code predictor), for nothing here."""
    scores = logits[:, -1, :].to(dtype=torch.float32, copy=True)
    for processor in process:
        scores = processor(history, scores)
    if sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    return torch.argmax(scores, dim=-1)
