"""Every loaded model's talker RMSNorms run as one ``F.rms_norm`` each
(``models/qwen3_tts/fused_norms.py``): every norm, and on the CPU bit for bit what the stock
norm computes, so the same model speaks the same wav."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import GREEDY

from awq_tts.models.qwen3_tts import fused_norms
from awq_tts.runtime import load
from awq_tts.synth import speak


def _norms(module) -> list:
    return [m for m in module.modules() if type(m).__name__ == fused_norms.NORM_CLASS]


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return load(tiny_trained, device="cpu", dtype=torch.bfloat16)


def test_every_talker_norm_is_fused_and_only_those(trained):
    talker = trained.model.talker
    layers = len(talker.model.layers) + len(talker.code_predictor.model.layers)
    assert fused_norms.installed(talker) == len(_norms(talker)) == 4 * layers + 2
    assert fused_norms.installed(trained.model.speech_tokenizer.model) == 0
    assert fused_norms.install(talker) == 4 * layers + 2          # twice: a no-op
    twin = copy.deepcopy(talker.code_predictor)                  # a copy runs its own norms
    assert all(m.forward.__self__ is m for m in _norms(twin))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_fused_norm_is_the_stock_norm_bit_for_bit_on_the_cpu(trained, dtype):
    norms = _norms(trained.model.talker)
    generator = torch.Generator().manual_seed(0)
    for norm, shape in ((norms[0], (3, 7, 64)), (norms[2], (2, 4, 5, 16))):  # layer, per head
        width = norm.weight.shape[0]
        x = (torch.randn(*shape[:-1], width, generator=generator) * 4).to(dtype)
        weight = norm.weight.data.clone()
        norm.weight.data = weight.to(dtype)
        try:
            assert torch.equal(norm(x), type(norm).forward(norm, x))
        finally:
            norm.weight.data = weight


def test_the_same_model_speaks_the_same_wav_with_stock_norms(trained, ref_clip):
    def say():
        return speak(trained, "The quick brown fox.", ref_audio=ref_clip, max_new_tokens=40,
                     **GREEDY).wav

    fused = say()
    with fused_norms.bypassed(trained.model.talker):
        assert fused_norms.installed(trained.model.talker) == 0
        stock = say()
    assert fused_norms.installed(trained.model.talker) == len(_norms(trained.model.talker))
    assert fused.shape == stock.shape and np.array_equal(fused, stock)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_weighted_norm_cuda_runs_is_within_one_step_of_the_stock_norm(trained, dtype):
    """CUDA's one-kernel norm (the weight inside, one rounding), checked here on the CPU."""
    norm = _norms(trained.model.talker)[0]
    x = (torch.randn(4, 9, norm.weight.shape[0],
                     generator=torch.Generator().manual_seed(3)) * 3).to(dtype)
    weight = norm.weight.data.clone()
    norm.weight.data = (1 + torch.rand(weight.shape, generator=torch.Generator().manual_seed(4))
                        ).to(dtype)
    try:
        ours, stock = fused_norms.weighted(norm, x).float(), type(norm).forward(norm, x).float()
    finally:
        norm.weight.data = weight
    step = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -22
    assert ((ours - stock).abs() <= step * stock.abs()).all()
    assert dtype == torch.float32 or not torch.equal(ours, stock)    # rounded once, not twice


@pytest.mark.gpu
def test_on_cuda_a_fused_norm_is_the_stock_norm_to_float32_round_off(tiny_trained):
    """torch's fused CUDA kernel sums the squares in its own order: at most one bf16 step
    from the stock norm."""
    tts = load(tiny_trained, device="cuda:0", dtype=torch.bfloat16)
    norm = _norms(tts.model.talker)[0]
    x = torch.randn(4, 9, norm.weight.shape[0], device="cuda:0").to(torch.bfloat16) * 3
    fused, stock = norm(x).float(), type(norm).forward(norm, x).float()
    assert ((fused - stock).abs() <= 2.0 ** -7 * stock.abs() + 1e-6).all()
