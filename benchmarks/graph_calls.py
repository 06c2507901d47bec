"""The rows of ``decode.py`` that run a step or frame another way than ``load``'s default.

CUDA graphs: one talker step and one codec frame of a loaded model on the machinery
``load(..., cuda_graphs=True)`` uses (``talker_graphs.StepCache`` for the talker,
``graphs.FrameGraphs`` for the code predictor), at the eager rows' cache length and token.
Graphs are captured on the first call (the warm-up round); a capture that fails raises, so
the row reports the failure instead of timing eager code. On a CPU: a frame with its bf16
linears back on torch's kernel (:func:`torch_linears`). Everywhere: a frame with qwen-tts's
own RMSNorms, rope tables and attention (:func:`stock_ops`)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from awq_tts.models.qwen3_tts import graphs, talker_graphs


def _check(*stores) -> None:
    """Raise the first capture failure any of ``stores`` (step caches, frame stores) holds."""
    failed = [reason for store in stores for reason in store.failed.values()]
    if failed:
        raise RuntimeError(f"CUDA graph capture failed: {failed[0]}")


def predictor_graphed(predictor, call):
    """``call`` with the code predictor's frames replayed from CUDA graphs (captured on the
    first call, the warm-up round), and without them for every other call."""
    store = graphs.FrameGraphs()

    def graphed():
        with graphs.using(predictor, store):
            out = call()
        _check(store)
        return out

    return graphed


def graphed_calls(tts, cache_len: int, prompt: torch.Tensor, frame_kwargs: dict,
                  graphed: bool = True) -> dict:
    """``talker_step_graphs`` and ``codec_frame_graphs`` after a prefill of ``prompt``
    (``[1, cache_len, hidden]``); each call decodes at position ``cache_len`` again and
    returns the talker's last hidden state. ``graphed`` false runs the same static steps
    eagerly (how the CPU tests check these calls)."""
    talker, device = tts.model.talker, prompt.device
    cache = talker_graphs.StepCache(talker.config.num_hidden_layers,
                                    talker_graphs.slots(cache_len + 1), graphed)
    with talker_graphs.stepping(talker, cache):
        talker.model(inputs_embeds=prompt, past_key_values=cache, use_cache=True,
                     cache_position=torch.arange(cache_len, device=device))
    token = prompt[:, -1:]
    positions = torch.full((3, 1, 1), cache_len, device=device)
    position = torch.tensor([cache_len], device=device)
    store = graphs.FrameGraphs()

    @torch.no_grad()
    def step():
        with talker_graphs.stepping(talker, cache):
            cache.seen = cache_len
            out = talker.model(inputs_embeds=token, position_ids=positions,
                               past_key_values=cache, use_cache=True, cache_position=position)
        _check(cache, store)
        return out.last_hidden_state

    @torch.no_grad()
    def frame():
        with (talker_graphs.stepping(talker, cache),
              graphs.using(talker.code_predictor, store) if graphed else nullcontext()):
            cache.seen = cache_len
            out = talker(**{**frame_kwargs, "past_key_values": cache, "cache_position": position})
        _check(cache, store)
        return out.past_hidden

    return {"talker_step_graphs": step, "codec_frame_graphs": frame}


def torch_linears(tts, frame):
    """``frame`` with the bf16 linears ``load`` routes through the CPU's streaming kernel
    (``runtime/bf16_gemv.py``) back on ``nn.Linear.forward``, for the paired comparison."""
    from awq_tts.runtime import bf16_gemv

    def call():
        with bf16_gemv.bypassed(tts.model):
            frame()
    return call


def stock_ops(tts, call):
    """``call`` with qwen-tts's own talker norms (eight ops each), rope tables (rebuilt in
    every layer) and attention (keys and values copied per query head under a mask)
    instead of what ``load`` installs (``models/qwen3_tts/fused_norms.py``,
    ``shared_rope.py``, ``grouped_attention.py``), for the paired comparison."""
    from awq_tts.models.qwen3_tts import fused_norms, grouped_attention, shared_rope

    def bypassed():
        with (fused_norms.bypassed(tts.model.talker), shared_rope.bypassed(),
              grouped_attention.bypassed()):
            return call()
    return bypassed


def kernel_launches(call) -> int | str:
    """How many CUDA kernels and copies one ``call`` runs (torch's profiler, after one
    untimed call): what a CUDA graph of it replays. The profiler's error as text if it
    fails, so a decode table is never lost to it."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    try:
        call()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            call()
            torch.cuda.synchronize()
        return sum(1 for event in prof.events() if event.device_type == DeviceType.CUDA)
    except Exception as exc:  # noqa: BLE001 (any profiler failure: report it, go on)
        return f"{type(exc).__name__}: {exc}"
