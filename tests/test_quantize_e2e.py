"""End to end on tiny real checkpoints: scope, byte-identity, AWQ ≤ RTN, determinism,
provenance and verification."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner
from conftest import FAST
from safetensors.torch import load_file

from awq_tts import quantize
from awq_tts.cli import main
from awq_tts.format.provenance import FILENAME
from awq_tts.io import sha256_file

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FOLDABLE_NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight")


def _layers(folder) -> int:
    return json.loads((folder / "config.json").read_text())["talker_config"]["num_hidden_layers"]


def test_only_talker_decoder_linears_are_int4(tiny_base, tiny_base_awq):
    out = load_file(str(tiny_base_awq / "model.safetensors"))
    n = _layers(tiny_base)
    packed = sorted(k[: -len(".qweight")] for k in out if k.endswith(".qweight"))
    expected = sorted(
        f"talker.model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}"
        for i in range(n) for p in LINEARS
    )
    assert packed == expected
    for name in packed:
        assert f"{name}.weight" not in out
        assert out[f"{name}.qweight"].dtype == torch.int32
        assert out[f"{name}.scales"].dtype == torch.float16


def test_everything_else_is_byte_identical(tiny_base, tiny_base_awq):
    src = load_file(str(tiny_base / "model.safetensors"))
    out = load_file(str(tiny_base_awq / "model.safetensors"))
    changed = []
    for key, tensor in src.items():
        if any(f".{p}.weight" in key for p in LINEARS) and "talker.model.layers" in key:
            continue
        assert key in out, key
        same = tensor.dtype == out[key].dtype and torch.equal(
            tensor.view(torch.uint8), out[key].view(torch.uint8))
        if not same:
            changed.append(key)
    assert changed, "AWQ should have folded scales into at least one norm"
    for key in changed:
        assert key.startswith("talker.model.layers.") and key.endswith(FOLDABLE_NORMS), key
    for rel in ("speech_tokenizer/model.safetensors", "tokenizer_config.json", "vocab.json",
                "generation_config.json"):
        assert sha256_file(tiny_base / rel) == sha256_file(tiny_base_awq / rel)


def test_config_and_provenance(tiny_base, tiny_base_awq):
    qc = json.loads((tiny_base_awq / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "awq" and qc["bits"] == 4 and qc["group_size"] == 128
    assert qc["zero_point"] is True and qc["version"] == "gemm"
    assert "talker.code_predictor" in qc["modules_to_not_convert"]
    record = json.loads((tiny_base_awq / FILENAME).read_text())
    assert record["seed"] == 1729
    assert record["calibration"]["count"] == 8 and len(record["calibration"]["sha256"]) == 64
    assert record["source"]["files"]["model.safetensors"] == sha256_file(
        tiny_base / "model.safetensors")
    assert {"torch", "transformers", "qwen-tts", "autoawq"} <= set(record["versions"])
    assert record["output_files"]["model.safetensors"] == sha256_file(
        tiny_base_awq / "model.safetensors")
    for layer in record["layers"]:
        assert layer["awq_error"] <= layer["rtn_error"]
        for stats in layer["linears"].values():
            assert stats["awq_block_error"] <= stats["rtn_block_error"] * (1 + 1e-6)


def test_awq_strictly_beats_rtn_somewhere(tiny_base_awq):
    record = json.loads((tiny_base_awq / FILENAME).read_text())
    assert any(layer["awq_error"] < layer["rtn_error"] for layer in record["layers"])


def test_same_inputs_same_bytes(tiny_base, tiny_base_awq, tmp_path):
    again = tmp_path / "again"
    quantize(tiny_base, again, **FAST)
    assert sha256_file(again / "model.safetensors") == sha256_file(
        tiny_base_awq / "model.safetensors")


def test_inspect_and_verify_catch_tampering(tiny_base_awq, tmp_path):
    import shutil

    runner = CliRunner()
    result = runner.invoke(main, ["inspect", str(tiny_base_awq)])
    assert result.exit_code == 0 and "AWQ/RTN" in result.output
    assert runner.invoke(main, ["verify", str(tiny_base_awq)]).exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(tiny_base_awq, copy)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    result = runner.invoke(main, ["verify", str(copy)])
    assert result.exit_code == 1
    assert "changed: model.safetensors" in result.output


def test_finetuned_variant_quantizes(tiny_finetuned, tmp_path):
    out = tmp_path / "ft"
    summary = quantize(tiny_finetuned, out, **FAST)
    assert summary.layers == 3 and summary.linears == 21
    assert json.loads((out / "config.json").read_text())["talker_config"]["spk_id"][
        "noesis_custom"] == 3000
