"""CUDA graphs of the code predictor's frame on CUDA (``gpu``; the CPU half is
``test_graphs.py``): replays on new inputs compute the eager logits (to round-off),
replayed greedy codes are the eager argmax (up to near ties), sampled draws follow the seed
from the first call, a graphed model repeats its greedy wav, and a capture that cannot work
leaves the predictor eager, with the reason in its status and the random generator usable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_graphs import GREEDY, SAMPLED, _embeds

from awq_tts.models.qwen3_tts import graphs, predictor
from awq_tts.runtime import graph_status, load

CUDA = "cuda:0"


@pytest.fixture(scope="module")
def on_cuda(tiny_base):
    return load(tiny_base, device=CUDA, dtype=torch.bfloat16, cuda_graphs=True)


def _forced_logits(cp, embeds, codes, cache, positions) -> torch.Tensor:
    """``[batch, 15, vocab]`` float32 logits of a frame with ``codes`` fed back (teacher
    forcing) on ``cache``, rewound first: what the frame computes, without the draw."""
    predictor.rewind(cache)
    out = cp(inputs_embeds=embeds, past_key_values=cache, use_cache=True,
             cache_position=positions[:2])
    logits = [out.logits[:, -1].float()]
    for step in range(codes.shape[1] - 1):
        out = cp(input_ids=codes[:, step:step + 1], past_key_values=cache, use_cache=True,
                 cache_position=positions[2 + step:3 + step],
                 generation_steps=out.generation_steps)
        logits.append(out.logits[:, -1].float())
    return torch.stack(logits, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_replays_on_new_inputs_compute_the_eager_logits(on_cuda, batch):
    """Stale data (a replay reading what the capture saw) against round-off: one capture on
    zeros, replays on new inputs, each against eager forwards of the same inputs on fresh
    buffers. Stale data is off by the logits' own size (order 1); bf16 round-off by a few
    hundredths at most."""
    cp = on_cuda.model.talker.code_predictor
    embeds = torch.zeros_like(_embeds(on_cuda, 0, batch, CUDA))
    codes = torch.zeros(batch, 15, dtype=torch.long, device=CUDA)
    cache, positions = predictor.fixed_cache(cp, 16), torch.arange(17, device=CUDA)
    graph, out = graphs.capture(lambda: _forced_logits(cp, embeds, codes, cache, positions),
                                torch.device(CUDA))
    errors = []
    for seed in (0, 1, 2):
        embeds.copy_(_embeds(on_cuda, seed, batch, CUDA))
        codes.copy_(torch.randint(0, cp.config.vocab_size, (batch, 15),
                                  generator=torch.Generator().manual_seed(seed)))
        graph.replay()
        with torch.no_grad():
            eager = _forced_logits(cp, embeds.clone(), codes.clone(),
                                   predictor.fixed_cache(cp, 16), positions)
        errors.append(float((out - eager).norm() / eager.norm()))
    assert max(errors) < 5e-2, errors


@pytest.mark.gpu
@pytest.mark.parametrize("batch", [1, 3])
def test_graph_replays_greedy_codes_are_the_eager_argmax(on_cuda, batch):
    """Each replayed greedy code is the eager forwards' best code up to two bf16 steps of
    the logit (a near tie may go either way under round-off; anything else is a bug)."""
    cp = on_cuda.model.talker.code_predictor
    for seed in (0, 1, 2):          # one capture, replayed with new inputs
        embeds = _embeds(on_cuda, seed, batch, CUDA)
        codes = graphs.of(cp).codes(cp, embeds, 15, GREEDY)
        assert codes is not None, graphs.status(cp)
        with torch.no_grad():
            logits = _forced_logits(cp, embeds, codes, predictor.fixed_cache(cp, 16),
                                    torch.arange(17, device=CUDA))
        chosen, best = logits.gather(-1, codes[..., None])[..., 0], logits.max(-1).values
        slack = 2.0 ** -6 * best.abs() + 1e-3
        assert bool((chosen >= best - slack).all()), (seed, (best - chosen).max().item())
    assert graphs.status(cp).startswith("on (")


@pytest.mark.gpu
def test_sampled_graph_draws_follow_the_seed(on_cuda):
    """The first call captures (a warm-up and the capture draw too) and the second replays:
    the same seed gives the same codes all the same."""
    cp = on_cuda.model.talker.code_predictor
    embeds = _embeds(on_cuda, 5, 3, CUDA)
    draws = []
    for seed in (11, 11, 12):
        torch.manual_seed(seed)
        draws.append(graphs.of(cp).codes(cp, embeds, 15, SAMPLED))
    assert torch.equal(draws[0], draws[1]) and not torch.equal(draws[0], draws[2])
    vocab = cp.config.vocab_size
    assert draws[0].shape == (3, 15) and 0 <= int(draws[0].min()) <= int(draws[0].max()) < vocab


@pytest.mark.gpu
def test_a_graphed_model_speaks_the_same_greedy_wav_twice(on_cuda, ref_clip):
    """Nothing a call leaves behind (key/values, positions, the generator) changes the next."""
    def speak():
        wavs, _ = on_cuda.generate_voice_clone(
            text="Hello there, how are you today?", language="English", ref_audio=ref_clip,
            x_vector_only_mode=True, max_new_tokens=60, do_sample=False,
            subtalker_dosample=False)
        return wavs[0]

    first, second = speak(), speak()
    assert graph_status(on_cuda).count("on (") == 2, graph_status(on_cuda)
    assert first.shape == second.shape and np.array_equal(first, second)


@pytest.mark.gpu
def test_a_capture_that_fails_leaves_the_predictor_eager(tiny_base, monkeypatch):
    tts = load(tiny_base, device=CUDA, dtype=torch.bfloat16, cuda_graphs=True)
    cp = tts.model.talker.code_predictor
    real = graphs.frame_codes

    def host_sync(predictor_, inputs_embeds, *args):
        inputs_embeds.sum().item()          # a host sync: illegal while capturing
        return real(predictor_, inputs_embeds, *args)

    monkeypatch.setattr(graphs, "frame_codes", host_sync)
    embeds = _embeds(tts, 3, 2, CUDA)
    out = cp.generate(inputs_embeds=embeds, max_new_tokens=15, do_sample=False,
                      return_dict_in_generate=True, output_hidden_states=True)
    assert graphs.status(cp).startswith("on (0 captured, 1 failed: ")
    assert torch.equal(out.sequences, predictor.predict_codes(cp, embeds, 15, do_sample=False))
    draws = []                              # the generator survived the failed capture
    for _ in range(2):
        torch.manual_seed(7)
        draws.append(torch.multinomial(torch.ones(4, 64, device=CUDA), 3))
    assert torch.equal(*draws)



@pytest.mark.gpu
def test_captures_leave_no_cublas_workspace_behind():
    """Each capture warms up and captures on streams of its own; torch keeps a cuBLAS
    workspace (32 MiB on Hopper, 4 MiB or more elsewhere) per stream a matmul ran on. Four
    captured matmuls hold their outputs and nothing else outside their graphs' pools, and
    replay the right products."""
    weight = torch.randn(256, 256, device=CUDA, dtype=torch.bfloat16)
    x = torch.randn(1, 256, device=CUDA, dtype=torch.bfloat16)
    graphs.drop_cublas_workspaces()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(CUDA)
    kept = [graphs.capture(lambda: x @ weight, torch.device(CUDA)) for _ in range(4)]
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated(CUDA) - before < 2**20
    x.copy_(torch.randn_like(x))
    for graph, out in kept:
        graph.replay()
        torch.testing.assert_close(out, x @ weight)
