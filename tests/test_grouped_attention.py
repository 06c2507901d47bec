"""One-token masked attention without key/value copies
(``models/qwen3_tts/grouped_attention.py``) and the static step's additive mask
(``talker_graphs.StepCache.decode``): bit for bit what transformers' SDPA path computes on
the CPU, with fewer ops a step."""

from __future__ import annotations

import collections
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from awq_tts.models.qwen3_tts import grouped_attention
from awq_tts.runtime import load

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from graph_calls import graphed_calls  # noqa: E402

GROUPED = SimpleNamespace(num_key_value_groups=2, is_causal=True)


def _inputs(dtype, length=1, batch=2, window=20, device="cpu"):
    gen = torch.Generator().manual_seed(length)
    q = torch.randn(batch, 16, length, 64, generator=gen).to(device, dtype)
    k, v = (torch.randn(batch, 8, window, 64, generator=gen).to(device, dtype) for _ in "kv")
    seen = torch.rand(batch, 1, length, window, generator=gen) > 0.3
    seen[..., 0] = True
    return q, k, v, seen.to(device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("additive", [False, True], ids=["bool", "additive"])
def test_one_masked_token_attends_as_transformers_sdpa_does_bit_for_bit(dtype, additive):
    q, k, v, seen = _inputs(dtype)
    mask = torch.where(seen, 0.0, float("-inf")).to(dtype) if additive else seen
    ours, _ = grouped_attention.attention(GROUPED, q, k, v, mask, scaling=0.125)
    theirs, _ = sdpa_attention_forward(GROUPED, q, k, v, mask, scaling=0.125)
    assert ours.shape == theirs.shape == (2, 1, 16, 64) and torch.equal(ours, theirs)


def test_cudas_grouping_by_rows_is_the_same_attention_to_round_off():
    """What CUDA runs (its fused kernel takes no grouping with a mask), checked here."""
    for dtype, tolerance in ((torch.float32, 2e-6), (torch.bfloat16, 1e-2)):
        q, k, v, seen = _inputs(dtype, window=256)
        q = torch.cat([q, k[:, :, :1]], dim=1)[:, :16]     # a view, as the shared rope gives
        mask = torch.where(seen, 0.0, float("-inf")).to(dtype)
        rows = grouped_attention.by_rows(q, k, v, mask, 0.125).transpose(1, 2)
        theirs, _ = sdpa_attention_forward(GROUPED, q, k, v, mask, scaling=0.125)
        assert rows.shape == theirs.shape
        assert float((rows - theirs).abs().max()) < tolerance * float(theirs.abs().max())


def test_other_calls_go_to_transformers_unchanged(monkeypatch):
    calls = []
    real = grouped_attention._transformers_sdpa()
    monkeypatch.setattr(grouped_attention, "_transformers_sdpa",
                        lambda: lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q, k, v, seen = _inputs(torch.float32, length=3)
    grouped_attention.attention(GROUPED, q, k, v, seen)                    # three tokens
    q, k, v, seen = _inputs(torch.float32)
    grouped_attention.attention(GROUPED, q, k, v, None)                    # no mask
    grouped_attention.attention(SimpleNamespace(num_key_value_groups=1), q, k.repeat(1, 2, 1, 1),
                                v.repeat(1, 2, 1, 1), seen)                # no grouping
    assert len(calls) == 3
    grouped_attention.attention(GROUPED, q, k, v, seen)
    assert len(calls) == 3


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_the_static_step_is_transformers_own_with_fewer_ops(tiny_trained, dtype):
    tts = load(tiny_trained, device="cpu", dtype=dtype)
    talker = tts.model.talker
    prompt = torch.randn(1, 9, talker.config.hidden_size,
                         generator=torch.Generator().manual_seed(0)).to(dtype)
    step = graphed_calls(tts, 9, prompt, {}, graphed=False)["talker_step_graphs"]
    with torch.no_grad(), _Ops() as ours:
        grouped = step()
    with grouped_attention.bypassed(), torch.no_grad(), _Ops() as theirs:
        stock = step()
    assert grouped_attention.installed()
    assert torch.equal(grouped, stock)
    layers = len(talker.model.layers)
    assert sum(theirs.counts.values()) - sum(ours.counts.values()) >= 2 * layers


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("additive", [False, True], ids=["bool", "additive"])
def test_on_cuda_one_masked_token_attends_as_transformers_sdpa_does(additive):
    q, k, v, seen = _inputs(torch.bfloat16, device="cuda")
    mask = torch.where(seen, 0.0, float("-inf")).to(q) if additive else seen
    ours, _ = grouped_attention.attention(GROUPED, q, k, v, mask, scaling=0.125)
    theirs, _ = sdpa_attention_forward(GROUPED, q, k, v, mask, scaling=0.125)
    torch.testing.assert_close(ours, theirs, rtol=1.6e-2, atol=2e-3)
