"""The code predictor's plain loop (``models/qwen3_tts/predictor.py``) draws exactly the codes
transformers' ``generate`` draws, greedy and sampled, so a model speaks the same samples
with it; calls it does not implement go to ``generate``; every model awq-tts loads has it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from awq_tts.models.qwen3_tts import predictor
from awq_tts.runtime import load

SETTINGS = {
    "greedy": dict(do_sample=False, top_k=50, top_p=1.0, temperature=0.9),
    "sampled": dict(do_sample=True, top_k=50, top_p=1.0, temperature=0.9),
    "nucleus": dict(do_sample=True, top_k=20, top_p=0.8, temperature=0.7),
}


def _stock(cp, **kwargs) -> torch.Tensor:
    """transformers' own ``generate`` (the class method, whatever the instance holds)."""
    return type(cp).generate(cp, **kwargs).sequences


@pytest.fixture(scope="module")
def models(tiny_trained):
    return {dtype: load(tiny_trained, device="cpu", dtype=dtype)
            for dtype in (torch.float32, torch.bfloat16)}


def _assert_same_draws(tts, setting: str, device: str = "cpu") -> None:
    cp = tts.model.talker.code_predictor
    hidden, dtype = tts.model.talker.config.hidden_size, tts.model.talker.dtype
    embeds = torch.randn(3, 2, hidden, generator=torch.Generator().manual_seed(1)) * 0.5
    args = dict(inputs_embeds=embeds.to(device, dtype), max_new_tokens=15, **SETTINGS[setting])
    torch.manual_seed(7)
    expected = _stock(cp, output_hidden_states=True, return_dict_in_generate=True, **args)
    torch.manual_seed(7)
    codes = predictor.predict_codes(cp, **args)
    assert codes.shape == (3, 15) and torch.equal(codes, expected)
    if setting != "greedy":   # the draws really depend on the random stream
        torch.manual_seed(8)
        assert not torch.equal(predictor.predict_codes(cp, **args), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_plain_loop_draws_the_codes_generate_draws(models, dtype, setting):
    _assert_same_draws(models[dtype], setting)


@pytest.mark.gpu
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_plain_loop_draws_the_codes_generate_draws_on_cuda(tiny_base, setting):
    _assert_same_draws(load(tiny_base, device="cuda:0", dtype=torch.bfloat16), setting,
                       device="cuda:0")


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_a_batch_speaks_the_same_samples_with_either_loop(models, ref_clip, sample):
    tts = models[torch.bfloat16]
    cp = tts.model.talker.code_predictor
    texts = ["Hello there, how are you?", "A second sentence, a little longer than the first."]

    def speak():
        torch.manual_seed(3)
        wavs, _ = tts.generate_voice_clone(
            text=texts, language=["English"] * 2, ref_audio=ref_clip, x_vector_only_mode=True,
            max_new_tokens=120, do_sample=sample, subtalker_dosample=sample)
        return wavs

    lean = speak()
    plain = cp.__dict__.pop("generate")
    try:
        stock = speak()
    finally:
        cp.generate = plain
    assert len({w.shape for w in lean}) == 2   # the two samples stop at different frames
    for a, b in zip(lean, stock, strict=True):
        assert a.shape == b.shape and np.array_equal(a, b)


def test_calls_it_does_not_implement_go_to_generate(models):
    cp = models[torch.float32].model.talker.code_predictor
    embeds = torch.randn(2, 2, models[torch.float32].model.talker.config.hidden_size)
    base = dict(inputs_embeds=embeds, max_new_tokens=15, do_sample=False,
                return_dict_in_generate=True)
    assert predictor.applies(cp, (), base)
    assert type(cp.generate(**base)).__name__ == "SimpleNamespace"
    other = cp.generate(**base, repetition_penalty=1.3)   # not an argument qwen-tts passes
    assert type(other).__name__ != "SimpleNamespace"
    assert torch.equal(other.sequences, _stock(cp, **base, repetition_penalty=1.3))
    assert not predictor.applies(cp, (), {**base, "return_dict_in_generate": False})
    cp.generation_config.eos_token_id = 5   # generate would stop rows at it: not the loop
    try:
        assert predictor.unsupported_config(cp) == ["eos_token_id"]
        assert type(cp.generate(**base)).__name__ != "SimpleNamespace"
    finally:
        cp.generation_config.eos_token_id = None


def test_every_model_awq_tts_loads_has_the_plain_loop(tiny_trained, tiny_trained_awq):
    for path in (tiny_trained, tiny_trained_awq):
        generate = load(path, device="cpu").model.talker.code_predictor.generate
        assert getattr(generate, "_awq_tts_lean", False), path
    cp = load(tiny_trained, device="cpu").model.talker.code_predictor
    installed = cp.__dict__["generate"]
    predictor.install(cp)   # a second install keeps the one wrapper
    assert cp.__dict__["generate"] is installed
    twin = copy.deepcopy(cp)   # the copy's loop runs the copy, not the original
    assert twin.generate.__self__ is twin and twin.generate._awq_tts_lean
