"""`awq-tts export`: compressed-tensors that transformers loads (CPU) to exactly our weights,
and an AutoAWQ identity that is checked, not trusted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import GREEDY
from safetensors.torch import load_file

from awq_tts.cli import main
from awq_tts.errors import UsageError
from awq_tts.export import export
from awq_tts.runtime import Int4Linear, load
from awq_tts.synth import speak, synthetic_reference

pytest.importorskip("compressed_tensors", reason="the export extra is not installed")


@pytest.fixture(scope="module")
def ct_folder(tiny_trained_awq, tmp_path_factory):
    return export(tiny_trained_awq, tmp_path_factory.mktemp("ct") / "out")


def _stock(folder, dtype):
    from awq_tts.models.qwen3_tts.package import qwen_tts

    return qwen_tts().Qwen3TTSModel.from_pretrained(str(folder), dtype=dtype)


def test_transformers_loads_exactly_our_weights(ct_folder, tiny_trained_awq):
    from compressed_tensors.linear.compressed_linear import CompressedLinear

    stock = _stock(ct_folder, torch.float32)
    ours = load(tiny_trained_awq, device="cpu", dtype=torch.float32, backend="dequant")
    int4 = {n: m for n, m in ours.model.named_modules() if isinstance(m, Int4Linear)}
    compressed = {n: m for n, m in stock.model.named_modules()
                  if isinstance(m, CompressedLinear)}
    assert sorted(compressed) == sorted(int4)
    for name, module in compressed.items():
        weight = module.compressor.decompress_module(module)
        assert torch.equal(weight, int4[name].dequantized_weight()), name
    ours_state = ours.model.state_dict()
    for name, tensor in stock.model.state_dict().items():
        if name.rsplit(".", 1)[0] not in compressed:
            assert torch.equal(tensor, ours_state[name]), name


def test_it_speaks_like_the_int4_model(ct_folder, tiny_trained_awq):
    ref = synthetic_reference(seconds=1.0)
    said = [speak(model, "Hello there, how are you today?", ref_audio=ref, max_new_tokens=60,
                  **GREEDY)
            for model in (_stock(ct_folder, torch.float32),
                          load(tiny_trained_awq, device="cpu", dtype=torch.float32,
                               backend="dequant"))]
    assert said[0].seconds_audio > 0.2 and np.abs(said[0].wav).max() > 1e-3
    assert said[0].wav.shape == said[1].wav.shape
    assert np.allclose(said[0].wav, said[1].wav, atol=1e-4)


def test_bf16_loading_rounds_only_the_scales(ct_folder, tiny_trained_awq):
    """transformers stores the scales in the model dtype: fp16 scales become bf16."""
    from compressed_tensors.linear.compressed_linear import CompressedLinear

    stock = _stock(ct_folder, torch.bfloat16)
    ours = load(tiny_trained_awq, device="cpu", dtype=torch.float32, backend="dequant")
    for name, module in stock.model.named_modules():
        if isinstance(module, CompressedLinear):
            exact = ours.model.get_submodule(name).dequantized_weight()
            got = module.compressor.decompress_module(module).float()
            scale = module.weight_scale.float().abs().max()
            assert (got - exact).abs().max() <= scale * 15 * 2**-7, name


def test_config_and_provenance(ct_folder, tiny_trained_awq):
    config = json.loads((ct_folder / "config.json").read_text())["quantization_config"]
    assert config["format"] == "pack-quantized" and config["quant_method"] == "compressed-tensors"
    weights = config["config_groups"]["group_0"]["weights"]
    assert weights["symmetric"] is False and weights["strategy"] == "group"
    assert "talker.code_predictor.lm_head.0" in config["ignore"]
    assert not any(name.startswith("talker.model.layers.") for name in config["ignore"])
    record = json.loads((ct_folder / "noesis_provenance.json").read_text())
    assert record["export"]["from"] == str(tiny_trained_awq.resolve())
    assert record["source"] == json.loads(
        (tiny_trained_awq / "noesis_provenance.json").read_text())["source"]
    result = CliRunner().invoke(main, ["verify", str(ct_folder)])
    assert result.exit_code == 0, result.output
    state = load_file(str(ct_folder / "model.safetensors"))
    assert not any(k.endswith((".qweight", ".qzeros")) for k in state)


def test_autoawq_export_is_the_identity(tiny_trained_awq, tmp_path):
    result = CliRunner().invoke(main, ["export", str(tiny_trained_awq), "--format", "autoawq",
                                       "-o", str(tmp_path / "awq")])
    assert result.exit_code == 0, result.output
    for path in tiny_trained_awq.rglob("*"):
        if path.is_file():
            copy = tmp_path / "awq" / path.relative_to(tiny_trained_awq)
            assert copy.read_bytes() == path.read_bytes(), path


def test_refusals_are_one_line(tiny_trained, tiny_trained_awq, tmp_path):
    with pytest.raises(UsageError, match="not an AWQ GEMM INT4 folder"):
        export(tiny_trained, tmp_path / "a")
    changed = tmp_path / "changed"
    shutil.copytree(tiny_trained_awq, changed)
    (changed / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UsageError, match="changed since it was written"):
        export(changed, tmp_path / "b")
    (tmp_path / "exists").mkdir()
    result = CliRunner().invoke(main, ["export", str(tiny_trained_awq), "-o",
                                       str(tmp_path / "exists")])
    assert result.exit_code == 2 and "--force" in result.output
    result = CliRunner().invoke(main, ["export", str(tmp_path / "nowhere"), "-o",
                                       str(tmp_path / "c")])
    assert result.exit_code == 2 and "no such INT4 folder" in result.output
