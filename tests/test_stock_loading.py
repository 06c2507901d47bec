"""Stock loading through transformers' AWQ path: as far as transformers goes on a CPU.

transformers refuses CPU device maps for AWQ GEMM (it wants IPEX there), so the full load is
a ``gpu`` test (tests/test_runtime.py). Here: the deep copy its loader makes works once
``awq_tts`` is imported, and its module replacement swaps exactly the linears the checkpoint
packs, which then hold exactly the weights ``awq_tts.load`` runs."""

from __future__ import annotations

import copy
import json

import torch
from safetensors.torch import load_file

import awq_tts  # noqa: F401  (makes qwen-tts models deep-copyable)
from awq_tts.runtime import Int4Linear, load


def test_models_deep_copy_after_import(tiny_custom_voice):
    from awq_tts.models.qwen3_tts.package import qwen_tts

    tts = qwen_tts().Qwen3TTSModel.from_pretrained(str(tiny_custom_voice))
    clone = copy.deepcopy(tts.model)
    assert sorted(clone.supported_speakers) == sorted(tts.get_supported_speakers())


def test_transformers_replaces_exactly_the_packed_linears(tiny_base_awq):
    from accelerate import init_empty_weights
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
    from transformers import AwqConfig
    from transformers.quantizers.quantizer_awq import AwqQuantizer

    from awq_tts._compat import dequantize_wqlinear, wqlinear_gemm

    qconfig = json.loads((tiny_base_awq / "config.json").read_text())["quantization_config"]
    config = Qwen3TTSConfig.from_pretrained(str(tiny_base_awq))
    with init_empty_weights():
        model = Qwen3TTSForConditionalGeneration(config)
    quantizer = AwqQuantizer(AwqConfig(**qconfig))
    quantizer._process_model_before_weight_loading(model)
    gemm = wqlinear_gemm()
    replaced = sorted(n for n, m in model.named_modules() if isinstance(m, gemm))
    ours = load(tiny_base_awq, device="cpu", dtype=torch.float32, backend="dequant")
    int4 = {n: m for n, m in ours.model.named_modules() if isinstance(m, Int4Linear)}
    assert replaced == sorted(int4)
    state = load_file(str(tiny_base_awq / "model.safetensors"))
    for name in replaced:
        module = model.get_submodule(name).to_empty(device="cpu")
        module.load_state_dict({k.rsplit(".", 1)[1]: v for k, v in state.items()
                                if k.rsplit(".", 1)[0] == name}, strict=True)
        assert torch.equal(dequantize_wqlinear(module), int4[name].dequantized_weight()), name
