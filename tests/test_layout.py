"""The architecture holds: the runtime runs without the quantizer, one adapter knows
qwen-tts and fails loudly for other families, its patches nest and undo, and the layer
quantizer's stages return data."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from awq_tts.errors import UsageError
from awq_tts.models import ADAPTERS, TTSAdapter, adapter_for, adapter_of

ISOLATION = """
import sys, json
import awq_tts
tts = awq_tts.load(sys.argv[1], device="cpu")
wavs, sr = tts.generate_voice_clone(text="Hi.", language="English",
    ref_audio=(__import__("numpy").zeros(24000, dtype="float32") + 0.1, 24000),
    x_vector_only_mode=True, max_new_tokens=4)
print(json.dumps(sorted(m for m in sys.modules
                        if m.startswith(("awq_tts.quantize", "awq_tts.calibration")))))
"""


def test_loading_and_running_int4_never_imports_the_quantizer(tiny_base_awq):
    done = subprocess.run([sys.executable, "-c", ISOLATION, str(tiny_base_awq)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_quantize_is_the_function_whatever_was_imported_first():
    import awq_tts
    import awq_tts.quantizer.walker  # noqa: F401 (the engine package, imported first)
    from awq_tts import quantize
    from awq_tts.quantizer.api import quantize as engine_quantize

    assert quantize is engine_quantize and callable(awq_tts.quantize)


def test_unknown_model_type_names_the_supported_ones_and_the_file_to_add():
    assert isinstance(ADAPTERS["qwen3_tts"], TTSAdapter)
    with pytest.raises(UsageError) as err:
        adapter_for("cosyvoice2", "ckpt/")
    message = str(err.value)
    assert "'cosyvoice2' is not supported" in message and "qwen3_tts" in message
    assert "awq_tts/models/<family>.py" in message and "ADAPTERS" in message


def test_one_dispatch_speaks_every_variant(tiny_base, tiny_custom_voice, tiny_voice_design):
    from awq_tts.runtime import load

    for folder in (tiny_base, tiny_custom_voice, tiny_voice_design):
        tts = load(folder, device="cpu")
        adapter = adapter_of(tts)
        voice = adapter.clone_once(tts, adapter.default_voice(tts, 1))
        torch.manual_seed(0)
        wavs, sr = adapter.generate(tts, ["Hello.", "Bye."], ["English"] * 2, [voice] * 2,
                                    max_new_tokens=6, do_sample=False)
        assert len(wavs) == 2 and sr == 24000
    with pytest.raises(UsageError, match="unknown speaker 'nobody'"):
        adapter.generate(load(tiny_custom_voice, device="cpu"), ["Hi."], ["English"],
                         [{"speaker": "nobody"}])


def test_patches_nest_and_undo(tiny_base):
    from awq_tts.runtime import load

    tts = load(tiny_base, device="cpu")
    adapter, core = adapter_of(tts), tts.model
    voice = adapter.default_voice(tts, 0)
    predictor_generate = core.talker.code_predictor.generate   # the plain loop, from load
    with adapter.record_talker(tts) as outer:
        with adapter.record_talker(tts) as inner:
            adapter.generate(tts, ["Hi."], ["English"], [voice], max_new_tokens=3)
        assert inner.codes and "generate" in core.__dict__  # the outer patch is back
        with pytest.raises(KeyError), adapter.record_talker(tts):
            raise KeyError("boom")
        adapter.generate(tts, ["Hi."], ["English"], [voice], max_new_tokens=3)
    assert outer.codes
    assert "generate" not in core.__dict__ and "decode" not in core.speech_tokenizer.__dict__
    assert core.talker.code_predictor.__dict__["generate"] is predictor_generate


def test_layer_quantizer_returns_a_layer_result(tiny_base, tmp_path, monkeypatch):
    from conftest import FAST

    from awq_tts import quantize
    from awq_tts.models.mapping import QWEN3_TTS_TALKER
    from awq_tts.quantizer import stages, walker
    from awq_tts.quantizer.layer import LayerResult

    results = []
    original = walker.quantize_layer

    def keep(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(walker, "quantize_layer", keep)
    quantize(tiny_base, tmp_path / "out", **FAST)
    assert results and all(isinstance(r, LayerResult) for r in results)
    for result in results:
        assert sorted(result.packed) == sorted(QWEN3_TTS_TALKER.quantized)
        assert result.report.awq_error <= result.report.rtn_error
        assert all(name.endswith("layernorm.weight") for name in result.changed)
        assert result.output.dtype == torch.float32 and result.report.output_error > 0
    assert stages.sample_rows(torch.arange(10.0)[:, None], 4).flatten().tolist() == [
        0.0, 3.0, 6.0, 9.0]
