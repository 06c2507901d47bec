"""Sibling INT4 linears run as one matmul (``runtime/siblings.py``): the same numbers as
apart, the same state dict, and a right answer for any call order or input."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from conftest import GREEDY

from awq_tts.format.packing import pack_gemm
from awq_tts.quantizer import numerics
from awq_tts.runtime import Int4Linear, available_backends, backend_of, load
from awq_tts.runtime.backends import BACKENDS
from awq_tts.runtime.siblings import PREFIX, FusedInt4Linear, fuse

KERNELS = [b for b in available_backends("cpu") if b != "dequant"]


def _linear(out_features: int, seed: int, in_features: int = 256) -> Int4Linear:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=gen) * 0.02
    scales, zeros = numerics.compute_qparams(w, 128)
    return Int4Linear.from_packed(pack_gemm(numerics.quantize(w, scales, zeros, 128), scales,
                                            zeros), 128)


def _attention(backend: str, fused: bool, device: str = "cpu") -> torch.nn.Module:
    """q/k/v of unequal widths under one parent, prepared for ``backend`` on ``device``."""
    parent = torch.nn.Module()
    for seed, (name, width) in enumerate((("q", 128), ("k", 64), ("v", 96))):
        parent.add_module(name, _linear(width, seed).to(device))
    if not (fused and fuse(parent, ["q", "k", "v"], BACKENDS[backend], torch.bfloat16)):
        for name in "qkv":
            getattr(parent, name).use_backend(BACKENDS[backend], torch.bfloat16)
    return parent


def _calls(parent, x) -> list[torch.Tensor]:
    return [getattr(parent, name)(x) for name in "qkv"]


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_a_fused_group_gives_each_member_its_own_columns_bit_for_bit(backend):
    """The kernels compute each column alone; ``dequant`` hands a wider weight to torch's
    matmul, whose blocking may follow the width: to bf16 round-off there."""
    apart, fused = _attention(backend, False), _attention(backend, True)
    assert isinstance(getattr(fused, PREFIX + "q"), FusedInt4Linear)
    for rows in (1, 40):      # a decode row and a prefill (avx2's other path from 32 rows)
        x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(rows)).bfloat16()
        for want, got in zip(_calls(apart, x), _calls(fused, x), strict=True):
            assert got.shape == want.shape
            if backend == "dequant":
                torch.testing.assert_close(got, want, rtol=1.6e-2, atol=1e-3)
            else:
                assert torch.equal(got, want)
        assert getattr(fused, PREFIX + "q")._last is None     # released once all had theirs


@pytest.mark.parametrize("backend", KERNELS)
def test_any_call_order_or_input_still_gets_the_right_columns(backend):
    apart, fused = _attention(backend, False), _attention(backend, True)
    gen = torch.Generator().manual_seed(3)
    x, y = (torch.randn(2, 256, generator=gen).bfloat16() for _ in range(2))
    assert torch.equal(fused.k(x), apart.k(x))          # a member first, alone
    assert torch.equal(fused.v(y), apart.v(y))          # a sibling with another input
    assert torch.equal(fused.q(y), apart.q(y))
    assert torch.equal(fused.q(y), apart.q(y))          # twice: its part was taken already
    x.add_(1.0)                                         # same tensor, new values
    assert torch.equal(fused.k(x), apart.k(x))
    with torch.inference_mode():                        # no version counter there
        z = torch.randn(1, 256, generator=gen).bfloat16()
        assert all(torch.equal(a, b) for a, b in zip(_calls(apart, z), _calls(fused, z),
                                                     strict=True))


def test_threads_sharing_a_fused_group_each_get_their_own_columns():
    backend = KERNELS[0]
    apart, fused = _attention(backend, False), _attention(backend, True)
    inputs = [torch.randn(1, 256, generator=torch.Generator().manual_seed(s)).bfloat16()
              for s in range(4)]
    wanted = [_calls(apart, x) for x in inputs]
    wrong = []

    def work(i: int) -> None:
        for _ in range(200):
            got = _calls(fused, inputs[i])
            wrong.extend(i for a, b in zip(got, wanted[i], strict=True) if not torch.equal(a, b))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong


def test_members_that_cannot_share_a_matmul_are_left_apart():
    parent = torch.nn.Module()
    parent.add_module("a", _linear(64, 0))
    parent.add_module("b", _linear(64, 1, in_features=384))           # another input width
    assert not fuse(parent, ["a", "b"], BACKENDS["int4pack"], torch.bfloat16)
    parent.b = _linear(64, 1)
    parent.b.use_backend(BACKENDS["int4pack"])                        # already prepared
    assert not fuse(parent, ["a", "b"], BACKENDS["int4pack"], torch.bfloat16)
    assert not fuse(parent, ["a", "missing"], BACKENDS["int4pack"], torch.bfloat16)
    assert "qweight" in parent.a._buffers and parent.a.fused is None
    assert not [n for n, _ in parent.named_modules() if n.startswith(PREFIX)]


def test_a_loaded_model_fuses_its_scale_groups_and_keeps_autoawq_state(tiny_base_awq):
    fused = load(tiny_base_awq, device="cpu")
    apart = load(tiny_base_awq, device="cpu", fuse=False)
    layers = fused.model.talker.model.layers
    names = sorted(n.rpartition(".")[2] for n, m in layers.named_modules()
                   if isinstance(m, FusedInt4Linear))
    assert names == sorted([PREFIX + "q_proj", PREFIX + "gate_proj"] * len(layers))
    assert layers[0].self_attn.k_proj.fused is getattr(layers[0].self_attn, PREFIX + "q_proj")
    assert backend_of(fused.model) == fused.awq_backend == apart.awq_backend
    want, got = apart.model.state_dict(), fused.model.state_dict()
    assert list(got) == list(want)
    assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
    weights = sum(t.numel() * t.element_size() for t in fused.model.buffers())
    assert weights == sum(t.numel() * t.element_size() for t in apart.model.buffers())


@pytest.mark.parametrize("backend", KERNELS)
def test_a_fused_model_speaks_bit_identically(tiny_trained_awq, ref_clip, backend):
    def speak(tts) -> np.ndarray:
        wavs, _ = tts.generate_voice_clone(text="Hello there.", language="English",
                                           ref_audio=ref_clip, x_vector_only_mode=True,
                                           max_new_tokens=30, **GREEDY)
        return wavs[0]

    fused = load(tiny_trained_awq, device="cpu", backend=backend)
    want = speak(load(tiny_trained_awq, device="cpu", backend=backend, fuse=False))
    assert np.array_equal(speak(fused), want)
    twin = copy.deepcopy(fused.model.talker.model.layers[0].mlp)   # a copy runs its own kernel
    assert twin.up_proj.fused is getattr(twin, PREFIX + "gate_proj")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["int4pack", "awq-triton"])
def test_a_fused_group_on_cuda_matches_its_members_apart(backend):
    """tinygemm's and AutoAWQ's kernels over the side-by-side columns (the GPU run's decode
    stage loads both fused)."""
    apart, fused = _attention(backend, False, "cuda"), _attention(backend, True, "cuda")
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(5)).bfloat16().cuda()
    for want, got in zip(_calls(apart, x), _calls(fused, x), strict=True):
        torch.testing.assert_close(got, want, rtol=1.6e-2, atol=1e-3)
