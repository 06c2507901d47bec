"""The CUDA-only paths (each norm with its weight inside, the rope's ``addcmul``, grouped
attention by rows) sent through whole models on the CPU (``devices.cuda_kernels``): wired
right (shapes, views, broadcasts through every layer) and the same numbers as the CPU's
bit-identical paths to bf16 round-off, so a GPU run only adds what its kernels do."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from awq_tts import devices
from awq_tts.models.qwen3_tts import fused_norms, grouped_attention, shared_rope
from awq_tts.runtime import load

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from decode import model_calls  # noqa: E402
from graph_calls import graphed_calls  # noqa: E402

#: The CUDA-only functions, by module: each call is counted while the CUDA paths are on.
CUDA_ONLY = ((fused_norms, "weighted"), (shared_rope, "fused_rotation"),
             (grouped_attention, "by_rows"))


def _relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


@pytest.fixture(scope="module")
def trained(tiny_trained):
    return load(tiny_trained, device="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("which", ["talker_step", "talker_step_masked", "code_predictor"])
def test_the_cuda_paths_compute_what_the_cpu_paths_compute(trained, monkeypatch, which):
    talker = trained.model.talker
    gen = torch.Generator().manual_seed(0)
    if which == "code_predictor":
        x = torch.randn(2, 3, talker.code_predictor.config.hidden_size, generator=gen).bfloat16()

        def call():
            return talker.code_predictor.model(inputs_embeds=x).last_hidden_state
    elif which == "talker_step":
        call = model_calls(trained, 9)["talker_step"]
    else:                                   # the static step: a mask, so grouped attention
        prompt = (torch.randn(1, 9, talker.config.hidden_size, generator=gen) * 0.05).bfloat16()
        call = graphed_calls(trained, 9, prompt, {}, graphed=False)["talker_step_graphs"]
    with torch.no_grad():
        want = call()
        calls: Counter = Counter()
        for module, name in CUDA_ONLY:
            real = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (
                calls.update([_name]), _real(*a, **k))[1])
        monkeypatch.setattr(devices, "cuda_kernels", lambda tensor: True)
        got = call()
    expected = {"weighted", "fused_rotation"} | ({"by_rows"} if which.endswith("masked")
                                                 else set())
    assert set(calls) == expected, calls
    assert got.shape == want.shape and 0 < _relative(got, want) < 2e-2
