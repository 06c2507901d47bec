"""The CPU's bf16 decode kernel (``runtime/bf16_gemv.py``): torch's numbers within one bf16
rounding step, torch's own path for everything it does not take, installed by ``load`` on
the code predictor and the codec head only, and the same speech as without it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from awq_tts.runtime import bf16_gemv, load
from awq_tts.synth import speak

pytestmark = pytest.mark.skipif(bf16_gemv.unavailable() is not None,
                                reason=f"the bf16 kernel does not run here: "
                                       f"{bf16_gemv.unavailable()}")


def _linear(k: int, n: int, bias: bool) -> nn.Linear:
    torch.manual_seed(k + n)
    layer = nn.Linear(k, n, bias=bias).to(torch.bfloat16)
    assert bf16_gemv.install(layer) == 1
    return layer


@pytest.mark.parametrize("k, n", [(64, 96), (72, 40), (2048, 64)], ids=["even", "tail", "long"])
@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (4,), (1, 3), (2, 2)])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_within_one_rounding_of_the_exact_product_as_torch_is(k, n, shape, bias):
    layer = _linear(k, n, bias)
    x = torch.randn(*shape, k).to(torch.bfloat16)
    with torch.no_grad():
        ours = layer(x)
        theirs = F.linear(x, layer.weight, layer.bias)
        exact = F.linear(x.float(), layer.weight.float(),
                         None if layer.bias is None else layer.bias.float())
    assert ours.dtype == torch.bfloat16 and ours.shape == (*shape, n)
    step = exact.abs() * 2**-8 + 1e-6 * exact.abs().max()      # one bf16 rounding step
    assert ((ours.float() - exact).abs() <= step).all()
    assert ((theirs.float() - exact).abs() <= step).all()        # the same bound torch meets


def test_what_it_does_not_take_goes_to_torch_unchanged():
    layer = _linear(64, 32, bias=True)
    with torch.no_grad():
        many = torch.randn(5, 64).to(torch.bfloat16)
        assert torch.equal(layer(many), F.linear(many, layer.weight, layer.bias))
        with pytest.raises(RuntimeError):             # torch's own error for mixed dtypes
            layer(torch.randn(1, 64))
    grad = torch.randn(1, 64, dtype=torch.bfloat16, requires_grad=True)
    layer(grad).sum().backward()                      # autograd takes torch's path
    assert grad.grad is not None and grad.grad.shape == (1, 64)


def test_load_installs_it_on_the_predictor_and_codec_head_only(tiny_base):
    tts = load(tiny_base, device="cpu", dtype=torch.bfloat16)
    talker = tts.model.talker
    expected = sum(type(m) is nn.Linear for m in [*talker.code_predictor.modules(),
                                                 talker.codec_head])
    assert tts.awq_gemv_linears == expected == bf16_gemv.installed(tts.model) > 0
    assert bf16_gemv.installed(talker.model) == 0       # the talker's decoder: stock bf16
    keys = set(tts.model.state_dict())
    twin = copy.deepcopy(tts.model.talker.codec_head)   # a copy keeps its own bound forward
    assert twin.forward.__self__ is twin and set(tts.model.state_dict()) == keys
    assert load(tiny_base, device="cpu", dtype=torch.float32).awq_gemv_linears == 0


def test_without_the_kernel_nothing_is_installed(tiny_base, monkeypatch):
    monkeypatch.setattr(bf16_gemv, "_kernel", lambda: (None, "switched off"))
    assert load(tiny_base, device="cpu", dtype=torch.bfloat16).awq_gemv_linears == 0


def test_the_trained_int4_model_speaks_the_same_with_and_without_it(tiny_trained_awq):
    tts = load(tiny_trained_awq, device="cpu", dtype=torch.bfloat16)
    assert tts.awq_gemv_linears > 0
    fast = speak(tts, "Hello there, how are you today?", max_new_tokens=60)
    with bf16_gemv.bypassed(tts.model):               # nn.Linear.forward: torch's kernel
        plain = speak(tts, "Hello there, how are you today?", max_new_tokens=60)
    assert fast.wav.size == plain.wav.size and (fast.wav == plain.wav).all()
    assert bf16_gemv.installed(tts.model) == tts.awq_gemv_linears      # and back after
