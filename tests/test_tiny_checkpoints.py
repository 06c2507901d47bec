"""Tiny checkpoints are real Qwen3-TTS checkpoints: real classes, real layout, they speak."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import GREEDY

from awq_tts.io import hash_tree
from awq_tts.testing import make_tiny_checkpoint
from awq_tts.testing.configs import FINETUNED_SPEAKER

LAYOUT = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
    "speech_tokenizer/preprocessor_config.json",
}


def _audible(wav: np.ndarray) -> bool:
    return bool(np.isfinite(wav).all() and wav.size > 0 and np.sqrt(np.mean(wav**2)) > 1e-3)


def test_layout_and_config(tiny_base):
    files = set(hash_tree(tiny_base))
    assert LAYOUT <= files
    config = json.loads((tiny_base / "config.json").read_text())
    talker = config["talker_config"]
    assert config["model_type"] == "qwen3_tts"
    assert "model_type" not in config["speaker_encoder_config"]
    assert talker["hidden_size"] % 128 == 0 and talker["intermediate_size"] % 128 == 0
    assert talker["num_key_value_heads"] < talker["num_attention_heads"]
    assert sum(talker["rope_scaling"]["mrope_section"]) == talker["head_dim"] // 2
    band = range(talker["vocab_size"] - 1024, talker["vocab_size"])
    for key in ("codec_pad_id", "codec_bos_id", "codec_eos_token_id", "codec_think_id"):
        assert talker[key] in band
    assert all(v in band for v in talker["codec_language_id"].values())
    assert config["speaker_encoder_config"]["enc_dim"] == talker["hidden_size"]


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path, tiny_base):
    again = make_tiny_checkpoint(tmp_path / "again", seed=0)
    other = make_tiny_checkpoint(tmp_path / "other", seed=1)
    assert hash_tree(again) == hash_tree(tiny_base)
    assert hash_tree(other)["model.safetensors"] != hash_tree(tiny_base)["model.safetensors"]


def test_prompt_token_layout(qwen, tiny_base):
    model = qwen.Qwen3TTSModel.from_pretrained(str(tiny_base))
    prefix = model._tokenize_texts(["<|im_start|>assistant\n"])[0]
    full = model._tokenize_texts([model._build_assistant_text("Hi")])[0]
    assert prefix.shape[1] == 3
    assert full.shape[1] - 3 - len("Hi") == 5


@pytest.mark.parametrize("icl", [False, True], ids=["x-vector", "icl"])
def test_voice_clone_speaks(qwen, tiny_base, ref_clip, icl):
    model = qwen.Qwen3TTSModel.from_pretrained(str(tiny_base), dtype=torch.float32)
    wavs, sr = model.generate_voice_clone(
        text="Hello world.",
        language="English",
        ref_audio=ref_clip,
        ref_text="A short reference." if icl else None,
        x_vector_only_mode=not icl,
        max_new_tokens=24,
        **GREEDY,
    )
    assert sr == 24000
    assert _audible(wavs[0])


def test_other_variants_speak(qwen, tiny_custom_voice, tiny_voice_design):
    cv = qwen.Qwen3TTSModel.from_pretrained(str(tiny_custom_voice))
    wavs, _ = cv.generate_custom_voice(
        text="你好。", speaker="eric", language="Chinese", max_new_tokens=16, **GREEDY
    )
    assert _audible(wavs[0])
    vd = qwen.Qwen3TTSModel.from_pretrained(str(tiny_voice_design))
    wavs, _ = vd.generate_voice_design(
        text="Hi.", instruct="A calm voice.", language="English", max_new_tokens=16, **GREEDY
    )
    assert _audible(wavs[0])


def test_finetuned_variant_mimics_sft_output(qwen, tiny_base, tiny_finetuned):
    base_cfg = json.loads((tiny_base / "config.json").read_text())["talker_config"]
    cfg = json.loads((tiny_finetuned / "config.json").read_text())["talker_config"]
    name, row = FINETUNED_SPEAKER
    assert cfg["num_hidden_layers"] > base_cfg["num_hidden_layers"]
    assert cfg["spk_id"][name] == row < cfg["vocab_size"]
    model = qwen.Qwen3TTSModel.from_pretrained(str(tiny_finetuned))
    assert model.model.talker.model.codec_embedding.weight[row].abs().sum() > 0
    wavs, _ = model.generate_custom_voice(
        text="Hi.", speaker=name, language="English", max_new_tokens=16, **GREEDY
    )
    assert _audible(wavs[0])


def test_sharded_writer_loads(qwen, tmp_path, tiny_base):
    """The --full-shape path (meta build, shard-by-shard random weights) on tiny dims."""
    from awq_tts.testing import configs
    from awq_tts.testing.full_shape import write_random_weights

    out = tmp_path / "sharded"
    out.mkdir()
    for rel in hash_tree(tiny_base):
        if not rel.startswith("model") and rel != "config.json":
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes((tiny_base / rel).read_bytes())
    cfg = configs.top_config(configs.TINY, "base", None)
    write_random_weights(out, cfg, seed=0, max_shard_bytes=2 * 1024**2)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    model = qwen.Qwen3TTSModel.from_pretrained(str(out))
    norm = model.model.talker.model.layers[0].input_layernorm.weight
    assert torch.all(norm == 1)
