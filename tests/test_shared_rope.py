"""The talker's rope tables built once per forward (``models/qwen3_tts/shared_rope.py``):
bit for bit qwen-tts's rotation in both section layouts, built once for all layers of a
forward and again for the next, and the same wav as with qwen-tts's own function."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import GREEDY

from awq_tts.models.qwen3_tts import shared_rope
from awq_tts.runtime import load
from awq_tts.synth import speak


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return load(tiny_trained, device="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("interleaved", [True, False], ids=["interleaved", "sections"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_rotation_is_qwen_tts_own_bit_for_bit(trained, interleaved, dtype):
    assert shared_rope.installed()
    generator = torch.Generator().manual_seed(1)
    sections, dim = [24, 20, 20], 128

    def rand(*shape):
        return torch.randn(*shape, generator=generator).to(dtype)

    q, k = rand(2, 16, 5, dim), rand(2, 8, 5, dim)
    cos, sin = rand(3, 2, 5, dim), rand(3, 2, 5, dim)
    ours = shared_rope.apply(q, k, cos, sin, sections, interleaved)
    again = shared_rope.apply(q, k, cos, sin, sections, interleaved)     # from the entry
    theirs = shared_rope._originals["apply_multimodal_rotary_pos_emb"](q, k, cos, sin, sections,
                                                                    interleaved)
    for a, b, c in zip(ours, again, theirs, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_code_predictors_rotation_is_qwen_tts_own_bit_for_bit(dtype):
    assert shared_rope.installed()
    generator = torch.Generator().manual_seed(4)
    q, k = (torch.randn(2, 16, 3, 128, generator=generator).to(dtype) for _ in "qk")
    cos, sin = (torch.randn(2, 3, 128, generator=generator).to(dtype) for _ in "cs")
    ours = shared_rope.apply_plain(q, k, cos, sin)
    again = shared_rope.apply_plain(q, k, cos, sin)                    # from the entry
    theirs = shared_rope._originals["apply_rotary_pos_emb"](q, k, cos, sin)
    for a, b, c in zip(ours, again, theirs, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_cudas_fused_rotation_is_within_a_step_of_qwen_tts_own(dtype):
    """CUDA's ``addcmul`` (one rounding fewer), checked here on the CPU."""
    generator = torch.Generator().manual_seed(2)
    x, cos, sin = (torch.randn(2, 16, 5, 128, generator=generator).to(dtype) for _ in "xcs")
    rolled = x.roll(64, dims=-1)
    ours = shared_rope.fused_rotation(x, rolled, cos, sin).float()
    stock = ((x * cos) + (rolled * sin)).float()
    step = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -22
    scale = (x * cos).float().abs() + (rolled * sin).float().abs()
    assert ((ours - stock).abs() <= step * scale).all()


def test_tables_are_built_once_per_forward(trained, monkeypatch):
    built = []
    real = shared_rope.tables

    def counting(*args, **kwargs):
        built.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(shared_rope, "tables", counting)
    decoder = trained.model.talker.model
    x = torch.randn(1, 6, decoder.config.hidden_size, dtype=torch.bfloat16)
    with torch.no_grad():
        decoder(inputs_embeds=x)
        decoder(inputs_embeds=x)
    assert len(decoder.layers) > 1 and len(built) == 2 and built[0] is not built[1]


def test_the_code_predictors_signed_table_is_built_once_per_cos_and_sin(monkeypatch):
    """Every layer of a forward gets the same ``cos``/``sin`` (the tiny predictor has one
    layer, so this is checked on the function)."""
    built = []
    real = shared_rope._signed
    monkeypatch.setattr(shared_rope, "_signed", lambda t: built.append(t) or real(t))
    generator = torch.Generator().manual_seed(5)
    q, k = (torch.randn(1, 4, 2, 64, generator=generator) for _ in "qk")
    for _ in range(2):                                   # two forwards of three layers
        cos, sin = (torch.randn(1, 2, 64, generator=generator) for _ in "cs")
        for _ in range(3):
            shared_rope.apply_plain(q, k, cos, sin)
    assert len(built) == 2


def test_the_same_model_speaks_the_same_wav_with_qwen_tts_rope(trained, ref_clip):
    def say():
        return speak(trained, "The quick brown fox.", ref_audio=ref_clip, max_new_tokens=40,
                     **GREEDY).wav

    shared = say()
    with shared_rope.bypassed():
        assert not shared_rope.installed()
        stock = say()
    assert shared_rope.installed()
    assert shared.shape == stock.shape and np.array_equal(shared, stock)


@pytest.mark.gpu
def test_on_cuda_the_shared_tables_rotate_as_qwen_tts_does_in_a_graph(tiny_trained):
    """Within bf16 round-off of qwen-tts's rotation on CUDA (its ``addcmul`` rounds once
    fewer), and a CUDA graph captured through the shared tables replays the eager decoder
    on fresh inputs (to bf16 round-off: stale tables would be off by the output's own
    size)."""
    from awq_tts.models.qwen3_tts import graphs

    tts = load(tiny_trained, device="cuda:0", dtype=torch.bfloat16)
    decoder = tts.model.talker.model
    x = torch.zeros(1, 6, decoder.config.hidden_size, device="cuda:0", dtype=torch.bfloat16)

    def run():
        return decoder(inputs_embeds=x).last_hidden_state

    graph, out = graphs.capture(run, torch.device("cuda:0"))
    for seed in (0, 1):
        generator = torch.Generator().manual_seed(seed)
        x.copy_(torch.randn(x.shape, generator=generator).to(x))
        graph.replay()
        with torch.no_grad():
            eager = run()
            with shared_rope.bypassed():
                stock = run()
        assert float((eager - stock).float().norm() / stock.float().norm()) < 2e-2
        assert float((out - eager).float().norm() / eager.float().norm()) < 5e-2
