"""The talker's static-cache decode step (``models/qwen3_tts/talker_graphs.py``).

On the CPU its eager twin speaks exactly what stock ``generate`` speaks (float32 across an
attention-window boundary, bf16 on the trained model, batches with padding, a cache reused
by the next call), reads nothing on the host, and leaves other calls alone. On CUDA
(``gpu``) each replayed step computes the eager twin's step on the same inputs (to bf16
round-off) across window boundaries, and greedy speech repeats itself call after call.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_graphs import _HostReads

from awq_tts.models.qwen3_tts import talker_graphs
from awq_tts.runtime import graph_status, load

TEXTS = ["Hello there, how are you?", "A second sentence, a little longer than the first."]


def _speak(tts, ref_clip, texts, frames: int) -> list[np.ndarray]:
    torch.manual_seed(0)
    wavs, _ = tts.generate_voice_clone(
        text=texts, language=["English"] * len(texts), ref_audio=[ref_clip] * len(texts),
        x_vector_only_mode=True, max_new_tokens=frames, do_sample=False,
        subtalker_dosample=False)
    return wavs


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _steps(talker) -> talker_graphs.StepCache:
    return next(iter(getattr(talker, talker_graphs.ATTR).caches.values()))


def _addresses(cache: talker_graphs.StepCache) -> list[int]:
    """Where every tensor a captured step reads or writes lives: a graph replays these."""
    return [t.data_ptr() for t in (cache.valid, *cache.inputs.values(),
                                   *(x for layer in cache.layers for x in (layer.keys,
                                                                          layer.values)))]


@pytest.mark.parametrize("which", ["fp32-random", "bf16-trained"])
def test_static_steps_speak_what_generate_speaks(tiny_base, tiny_trained, ref_clip, which,
                                                 monkeypatch):
    path, dtype, texts = {"fp32-random": (tiny_base, torch.float32, TEXTS),   # padded
                          "bf16-trained": (tiny_trained, torch.bfloat16, TEXTS[:1])}[which]
    monkeypatch.setattr(talker_graphs, "WINDOW", 8)    # several windows in a short sample
    frames = 60
    tts = load(path, device="cpu", dtype=dtype)
    talker = tts.model.talker
    stock = _speak(tts, ref_clip, texts, frames)
    talker_graphs.enable(talker, graphed=False)
    try:
        static = _speak(tts, ref_clip, texts, frames)
        where = _addresses(_steps(talker))
        again = _speak(tts, ref_clip, texts, frames)    # the same buffers, reused
        cache = _steps(talker)
        assert _addresses(cache) == where
    finally:
        talker_graphs.disable(talker)
    assert _same(stock, static) and _same(static, again)
    assert cache.inputs and cache.seen == 0 and not cache.graphs
    assert max(w.size for w in stock) // 1920 > 2 * talker_graphs.WINDOW


def test_the_step_cache_holds_what_the_call_reached(tiny_trained, ref_clip, monkeypatch):
    """A call that stops long before ``max_new_tokens`` grows its cache only as far as it
    went, and speaks what stock ``generate`` speaks."""
    monkeypatch.setattr(talker_graphs, "WINDOW", 8)
    tts = load(tiny_trained, device="cpu", dtype=torch.bfloat16)
    talker = tts.model.talker
    stock = _speak(tts, ref_clip, TEXTS[:1], 1000)
    talker_graphs.enable(talker, graphed=False)
    static = _speak(tts, ref_clip, TEXTS[:1], 1000)
    cache = _steps(talker)
    frames = max(w.size for w in static) // 1920
    assert _same(stock, static) and frames < 200          # it stopped by itself
    assert cache.capacity < 300 and cache.valid.shape[1] == cache.capacity
    assert cache.layers[0].keys.shape[2] == cache.capacity


def test_the_static_step_never_reads_a_tensor_on_the_host(tiny_trained, ref_clip):
    tts = load(tiny_trained, device="cpu", dtype=torch.bfloat16)
    talker = tts.model.talker
    talker_graphs.enable(talker, graphed=False)
    _speak(tts, ref_clip, TEXTS, 20)
    cache = _steps(talker)
    cache.seen = 7
    with _HostReads() as reads:
        cache.decode(talker.model.forward, talker_graphs.WINDOW)
    assert reads.found == []


def test_other_calls_and_copies_are_left_alone(tiny_trained):
    tts = load(tiny_trained, device="cpu", dtype=torch.bfloat16)
    talker = tts.model.talker
    assert talker.generate._awq_tts_steps          # installed at load, static steps off
    assert talker_graphs.status(talker) == "off"
    talker_graphs.enable(talker, graphed=False)
    assert talker_graphs.status(talker) == "on (0 captured)"
    assert graph_status(tts) == "talker step on (0 captured); code predictor off"
    twin = copy.deepcopy(talker)
    assert getattr(twin, talker_graphs.ATTR) is not getattr(talker, talker_graphs.ATTR)
    assert twin.generate.__self__ is twin
    talker_graphs.enable(talker, graphed=False)    # a second enable: one wrapper
    assert talker.generate._awq_tts_steps
    talker_graphs.disable(talker)
    assert talker_graphs.status(talker) == "off"


def test_generate_keeps_only_the_hidden_state_qwen_tts_reads(tiny_trained, ref_clip,
                                                            monkeypatch):
    """Every loaded talker's ``generate`` returns one hidden state a step (the last layer's,
    all qwen-tts reads) instead of every layer's, and speaks exactly as qwen-tts's own."""
    tts = load(tiny_trained, device="cpu", dtype=torch.bfloat16)
    talker = tts.model.talker
    kept, stock_generate = [], type(talker).generate

    def spy(self, *args, **kwargs):
        out = stock_generate(self, *args, **kwargs)
        kept.append([step[0] for step in out.hidden_states])
        return out

    monkeypatch.setattr(type(talker), "generate", spy)
    lean = _speak(tts, ref_clip, TEXTS, 12)
    lean_kept = kept.pop()
    talker_graphs.enable(talker, graphed=False)
    static = _speak(tts, ref_clip, TEXTS, 12)
    talker_graphs.disable(talker)
    static_kept = kept.pop()
    talker.__dict__.pop("generate")                 # qwen-tts's own generate
    stock = _speak(tts, ref_clip, TEXTS, 12)
    stock_kept = kept.pop()
    layers = talker.config.num_hidden_layers
    assert [len(h) for h in stock_kept] == [layers + 1] * len(stock_kept)
    assert [len(h) for h in lean_kept] == [1] * len(stock_kept) == [len(h) for h in static_kept]
    for mine, theirs in zip(lean_kept, stock_kept, strict=True):
        assert torch.equal(mine[-1], theirs[-1])     # the prefill's whole prompt, then steps
    assert lean_kept[0][0].shape[1] > 1
    assert _same(lean, stock) and _same(static, stock)


# ---- on CUDA ---------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 2])
def test_graphed_steps_compute_the_eager_steps(tiny_base, ref_clip, batch, monkeypatch):
    """Every replayed step against the eager ``decode`` of the same inputs on the same
    buffers, across many windows: stale data (a replay reading what its capture saw) is off
    by the hidden state's own size (order 1), bf16 round-off by a few hundredths at most."""
    monkeypatch.setattr(talker_graphs, "WINDOW", 8)     # a graph per 8 slots: many windows
    tts = load(tiny_base, device="cuda:0", dtype=torch.bfloat16, cuda_graphs=True)
    errors, real = [], talker_graphs.StepCache.step

    def checked(self, decoder_forward, embeds, position_ids, cache_position):
        hidden = real(self, decoder_forward, embeds, position_ids, cache_position)
        eager = self.decode(decoder_forward, self.layers[0].window).float()
        errors.append(float((hidden.float() - eager).norm() / eager.norm()))
        return hidden

    captures, real_capture = [], talker_graphs.capture

    def counted(run, device):
        captures.append(device)
        return real_capture(run, device)

    monkeypatch.setattr(talker_graphs.StepCache, "step", checked)
    monkeypatch.setattr(talker_graphs, "capture", counted)
    _speak(tts, ref_clip, TEXTS[:batch], 60)
    status = graph_status(tts)         # the cache grew a window at a time: one graph held
    assert "failed" not in status and len(captures) >= 6, (status, len(captures))
    assert len(errors) > 8 and max(errors) < 5e-2, [round(e, 4) for e in errors]


@pytest.mark.gpu
def test_graphed_speech_repeats_itself(tiny_base, ref_clip, monkeypatch):
    """Two greedy calls on one step cache (its graphs kept): the same audio."""
    monkeypatch.setattr(talker_graphs, "WINDOW", 8)
    tts = load(tiny_base, device="cuda:0", dtype=torch.bfloat16, cuda_graphs=True)
    first, second = (_speak(tts, ref_clip, TEXTS, 60) for _ in range(2))
    assert _same(first, second)


def test_the_decode_benchmarks_graph_rows_compute_the_eager_rows(tiny_trained):
    """``benchmarks/graph_calls.py`` (the GPU run's CUDA-graph rows), run eagerly here: the
    static step and frame compute what the dynamic-cache rows compute, call after call."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from decode import model_calls
    from graph_calls import graphed_calls

    tts = load(tiny_trained, device="cpu", dtype=torch.float32)
    talker = tts.model.talker
    prompt = torch.randn(1, 64, talker.config.hidden_size,
                         generator=torch.Generator().manual_seed(0)) * 0.05
    eager = model_calls(tts, 64)
    kwargs = dict(input_ids=torch.tensor([[17]]), past_hidden=prompt[:, -1:], use_cache=True,
                  generation_step=0, trailing_text_hidden=prompt[:, :0],
                  tts_pad_embed=prompt[:, -1:], subtalker_dosample=False)
    static = graphed_calls(tts, 64, prompt, kwargs, graphed=False)
    with torch.no_grad():
        dynamic = talker.model(inputs_embeds=prompt, use_cache=True).past_key_values
        frame = talker(**kwargs, past_key_values=dynamic).past_hidden
    for _ in range(2):
        torch.testing.assert_close(static["talker_step_graphs"](), eager["talker_step"](),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(static["codec_frame_graphs"](), frame, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_validate_runs_the_int4_model_with_graphs(tiny_base_awq):
    from awq_tts.validate import validate_awq_quality

    report = validate_awq_quality(tiny_base_awq, device="cuda:0", n_prompts=2,
                                  max_new_tokens=48, record=False, progress=False,
                                  cuda_graphs=True)
    state = report.metrics["runtime"]["cuda_graphs"]
    assert state.startswith("talker step on (") and "failed" not in state, state
    assert "code predictor on (" in state and report.verdict
