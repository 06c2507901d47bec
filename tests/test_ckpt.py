"""blend gives exactly the lerp and nothing else; repair makes a stripped folder loadable."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from conftest import FAST, GREEDY, qwen3_llm
from safetensors.torch import load_file

from awq_tts import quantize
from awq_tts.ckpt import blend, parse_alpha, repair
from awq_tts.cli import main
from awq_tts.errors import UsageError
from awq_tts.runtime import load
from awq_tts.testing.configs import TINY


def _bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def test_alpha_parsing():
    assert parse_alpha("3%") == pytest.approx(0.03) and parse_alpha("0.05") == 0.05
    for bad in ("-0.1", "150%", "abc"):
        with pytest.raises(UsageError):
            parse_alpha(bad)


def test_blend_is_exact_lerp_and_nothing_else(tiny_base, tiny_llm, tmp_path):
    out = tmp_path / "darwin"
    record = blend(str(tiny_base), str(tiny_llm), "3%", out)
    src = load_file(str(tiny_base / "model.safetensors"))
    llm = load_file(str(tiny_llm / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    blended = set(record["blended_tensors"])
    assert len(blended) == 3 * TINY.layers
    for key, tensor in src.items():
        if key in blended:
            other = llm[key.replace("talker.model.", "model.")]
            want = (0.97 * tensor.float() + 0.03 * other.float()).to(tensor.dtype)
            assert torch.equal(got[key], want), key
            assert not torch.equal(got[key], tensor)
        else:
            assert _bytes(got[key]) == _bytes(tensor), key
    assert json.loads((out / "noesis_blend.json").read_text())["alpha"] == pytest.approx(0.03)


def test_alpha_zero_reproduces_the_source(tiny_base, tiny_llm, tmp_path):
    out = tmp_path / "zero"
    blend(str(tiny_base), str(tiny_llm), 0, out)
    src = tiny_base / "model.safetensors"
    assert (out / "model.safetensors").read_bytes() == src.read_bytes()


def test_layer_subset_and_warning(tiny_base, tiny_llm, tmp_path):
    with pytest.warns(UserWarning, match="stop signal"):
        record = blend(str(tiny_base), str(tiny_llm), "10%", tmp_path / "b", layers="1")
    assert all(".layers.1." in k for k in record["blended_tensors"])


@pytest.mark.parametrize("kwargs, needle", [({"hidden": 128}, "hidden_size"),
                                             ({"layers": 3}, "num_hidden_layers")])
def test_mismatched_llm_is_refused(tiny_base, tmp_path, kwargs, needle):
    llm = qwen3_llm(tmp_path / "other", **kwargs)
    result = CliRunner().invoke(main, ["blend", str(tiny_base), str(llm), "-o",
                                       str(tmp_path / "out")])
    assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "out").exists()


def test_repair_makes_stripped_folder_loadable(tiny_base, tmp_path, ref_clip):
    stripped = tmp_path / "darwin-upload"
    shutil.copytree(tiny_base, stripped)
    shutil.rmtree(stripped / "speech_tokenizer")
    with pytest.raises(UsageError, match="awq-tts repair"):
        load(stripped)
    result = CliRunner().invoke(main, ["repair", str(stripped), "--speech-tokenizer-from",
                                       str(tiny_base)])
    assert result.exit_code == 0, result.output
    record = json.loads((stripped / "noesis_repair.json").read_text())
    assert "speech_tokenizer/model.safetensors" in record["added"]
    assert not list(stripped.glob(".repair.*"))
    tts = load(stripped)
    wavs, _ = tts.generate_voice_clone(text="Hi.", language="English", ref_audio=ref_clip,
                                       x_vector_only_mode=True, max_new_tokens=8, **GREEDY)
    assert wavs[0].size > 0


def test_repair_refuses_incompatible_codec(tiny_base, tiny_finetuned, tmp_path):
    stripped = tmp_path / "ft"
    shutil.copytree(tiny_finetuned, stripped)
    shutil.rmtree(stripped / "speech_tokenizer")
    with pytest.raises(UsageError, match="codebook"):
        repair(stripped, str(tiny_base))
    assert not (stripped / "speech_tokenizer").exists()


def test_blend_then_quantize_then_validate(tiny_trained, tiny_llm, tmp_path):
    from awq_tts.validate import validate_awq_quality

    darwin = tmp_path / "darwin"
    blend(str(tiny_trained), str(tiny_llm), 0.03, darwin)
    out = tmp_path / "darwin-awq"
    quantize(darwin, out, **FAST)
    record = json.loads((out / "noesis_provenance.json").read_text())
    assert record["blend"]["alpha"] == pytest.approx(0.03)
    assert record["source"]["id_or_path"] == str(darwin)
    report = validate_awq_quality(out, n_prompts=1, max_new_tokens=100, progress=False,
                                  memory_probe=False)   # the memory check: test_validate.py
    assert report.reference == str(darwin)
    assert report.passed, report.failed
    assert list(report.skipped) == ["memory"] and "--no-memory-probe" in report.skipped["memory"]
