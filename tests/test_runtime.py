"""INT4 checkpoints load as drop-in qwen_tts models, speak through every generate_*, hold
fewer bytes, and compute exactly what the quantizer meant."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import GREEDY

from awq_tts.cli import main
from awq_tts.runtime import Int4Linear, available_backends, load
from awq_tts.testing.configs import TINY


def _audible(wav) -> bool:
    return bool(np.isfinite(wav).all() and wav.size and np.sqrt(np.mean(wav**2)) > 1e-3)


def _weight_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_talker_linears_become_int4_and_nothing_else(tiny_base_awq):
    tts = load(tiny_base_awq)
    int4 = [n for n, m in tts.model.named_modules() if isinstance(m, Int4Linear)]
    assert len(int4) == 7 * TINY.layers
    assert all(n.startswith("talker.model.layers.") for n in int4)
    assert isinstance(tts.model.talker.codec_head, torch.nn.Linear)
    assert isinstance(tts.model.talker.code_predictor.lm_head[0], torch.nn.Linear)


def test_int4_holds_fewer_bytes_than_bf16(tiny_base, tiny_base_awq):
    bf16 = load(tiny_base, dtype=torch.bfloat16).model.talker.model.layers
    int4 = load(tiny_base_awq, dtype=torch.bfloat16).model.talker.model.layers
    assert _weight_bytes(int4) < 0.4 * _weight_bytes(bf16)


@pytest.mark.parametrize("icl", [False, True], ids=["x-vector", "icl"])
def test_voice_clone_on_int4(tiny_base_awq, ref_clip, icl):
    tts = load(tiny_base_awq, dtype=torch.float32)
    wavs, sr = tts.generate_voice_clone(
        text="Hello.", language="English", ref_audio=ref_clip,
        ref_text="Reference words." if icl else None, x_vector_only_mode=not icl,
        max_new_tokens=16, **GREEDY,
    )
    assert sr == 24000 and _audible(wavs[0])


def test_custom_voice_and_voice_design_on_int4(tiny_custom_voice_awq, tiny_voice_design_awq):
    cv = load(tiny_custom_voice_awq)
    wavs, _ = cv.generate_custom_voice(text="Hi.", speaker="aiden", language="English",
                                       max_new_tokens=12, **GREEDY)
    assert _audible(wavs[0])
    vd = load(tiny_voice_design_awq)
    wavs, _ = vd.generate_voice_design(text="Hi.", instruct="A bright voice.",
                                       language="English", max_new_tokens=12, **GREEDY)
    assert _audible(wavs[0])


def _fake_quant_twin(source, int4_tts, dtype):
    """The bf16 source model with the INT4 model's tensors, its linears dequantized."""
    twin = load(source, dtype=dtype)
    state = {}
    for name, module in int4_tts.model.named_modules():
        if isinstance(module, Int4Linear):
            state[f"{name}.weight"] = module.dequantized_weight(dtype)
    for name, tensor in int4_tts.model.state_dict().items():
        if not name.endswith((".qweight", ".qzeros", ".scales")):
            state[name] = tensor
    missing, unexpected = twin.model.load_state_dict(state, strict=False)
    assert not unexpected and not [m for m in missing if "talker" in m]
    return twin


#: Float32 logits against the fake-quantized float32 model, relative to their largest value:
#: round-off for int4pack, the int16 activations for avx2 (≤ 4e-5 per linear, avx2.py).
FP32_TOLERANCE = {"int4pack": 1e-5, "avx2": 1e-4}


@pytest.mark.parametrize("backend", [b for b in available_backends("cpu") if b != "dequant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_model_computes_the_fake_quantized_function(tiny_base, tiny_base_awq, dtype,
                                                           backend):
    int4 = load(tiny_base_awq, dtype=dtype, backend=backend)
    twin = _fake_quant_twin(tiny_base, int4, dtype)
    ref = load(tiny_base, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    embeds = (torch.randn(2, 40, TINY.hidden, generator=gen) * 0.05).to(dtype)
    with torch.no_grad():
        got = int4.model.talker(inputs_embeds=embeds).logits.float()
        want = twin.model.talker(inputs_embeds=embeds).logits.float()
        source = ref.model.talker(inputs_embeds=embeds).logits.float()
    tol = FP32_TOLERANCE[backend] if dtype == torch.float32 else 2e-2
    assert (got - want).abs().max() <= tol * want.abs().max()
    assert not torch.allclose(got, source, atol=1e-6, rtol=0), "quantization changed nothing?"


def test_synthesize_int4_writes_wav(tiny_base_awq, tmp_path):
    import soundfile

    out = tmp_path / "int4.wav"
    result = CliRunner().invoke(main, ["synthesize", str(tiny_base_awq), "--text", "One. Two.",
                                       "--max-new-tokens", "10", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data, sr = soundfile.read(out)
    assert sr == 24000 and data.size > 0
    assert "real-time factor" in result.output and "peak" in result.output


def test_load_without_speech_tokenizer_names_repair(tiny_base_awq, tmp_path):
    import shutil

    from awq_tts.errors import UsageError

    copy = tmp_path / "stripped"
    shutil.copytree(tiny_base_awq, copy)
    shutil.rmtree(copy / "speech_tokenizer")
    with pytest.raises(UsageError, match="awq-tts repair"):
        load(copy)


def test_on_the_cpu_the_audio_modules_run_in_float32(tiny_base, tiny_base_awq, ref_clip):
    """Their bf16 convolutions fall back to reference loops on a CPU (35–70× slower at full
    size): bf16 and INT4 loads both decode and embed speakers in float32 there, the talker
    keeps its dtype, and audio and x-vector are the bf16 modules' own."""
    codes = torch.randint(0, TINY.codebook, (12, TINY.code_groups),
                          generator=torch.Generator().manual_seed(0))
    for path in (tiny_base, tiny_base_awq):
        tts = load(path, device="cpu", dtype=torch.bfloat16)
        codec = tts.model.speech_tokenizer
        encoder = tts.model.speaker_encoder
        assert tts.awq_codec_dtype == "float32" and codec.model.dtype == torch.float32
        assert next(encoder.parameters()).dtype == torch.float32
        assert tts.model.talker.dtype == torch.bfloat16
    wav, sr = ref_clip
    x32 = tts.model.extract_speaker_embedding(wav, sr)       # qwen-tts casts mels to bf16
    encoder.to(torch.bfloat16)
    x16 = tts.model.extract_speaker_embedding(wav, sr)
    assert x32.dtype == torch.float32 and x16.dtype == torch.bfloat16
    assert torch.cosine_similarity(x32, x16.float(), dim=-1).item() > 0.99
    wav32 = codec.decode([{"audio_codes": codes}])[0][0]
    codec.model.to(torch.bfloat16)
    wav16 = codec.decode([{"audio_codes": codes}])[0][0]
    assert _audible(wav32) and wav32.shape == wav16.shape
    assert np.corrcoef(wav32, wav16)[0, 1] > 0.99


@pytest.mark.gpu
def test_int4_speaks_on_cuda(tiny_base_awq, ref_clip):
    tts = load(tiny_base_awq, device="cuda:0")
    assert tts.awq_backend == "int4pack" and tts.awq_codec_dtype == "bfloat16"
    wavs, _ = tts.generate_voice_clone(text="Hi.", language="English", ref_audio=ref_clip,
                                       x_vector_only_mode=True, max_new_tokens=12, **GREEDY)
    assert _audible(wavs[0])


@pytest.mark.gpu
def test_synthesize_on_cuda_names_the_graphs_option(tiny_base_awq, tmp_path):
    from click.testing import CliRunner

    from awq_tts.cli import main

    out = tmp_path / "o.wav"
    args = ["synthesize", str(tiny_base_awq), "--text", "Hi.", "--device", "cuda",
            "--max-new-tokens", "12", "-o", str(out)]
    eager = CliRunner().invoke(main, args)
    assert eager.exit_code == 0 and "tip: --cuda-graphs" in eager.output, eager.output
    graphed = CliRunner().invoke(main, [*args, "--cuda-graphs"])
    assert graphed.exit_code == 0 and "tip:" not in graphed.output, graphed.output
    assert "CUDA graphs talker step on (" in graphed.output


@pytest.mark.gpu
def test_stock_qwen_tts_loading_through_transformers_awq(tiny_base_awq):
    import awq_tts  # noqa: F401  (patches AutoAWQ's import for transformers)
    from awq_tts.models.qwen3_tts.package import qwen_tts

    tts = qwen_tts().Qwen3TTSModel.from_pretrained(str(tiny_base_awq), device_map="cuda:0")
    linear = tts.model.talker.model.layers[0].self_attn.q_proj
    assert type(linear).__name__ == "WQLinear_GEMM"


def test_sharded_int4_output_loads(tiny_base, tiny_base_awq, tmp_path):
    """The writer cuts shards at a size limit, writes an index, and the loader follows it."""
    from safetensors.torch import load_file

    from awq_tts.format import checkpoint
    from awq_tts.format.packing import PackedLinear

    int4 = load_file(str(tiny_base_awq / "model.safetensors"))
    packed = {k[: -len(".qweight")]: PackedLinear(int4[k], int4[k[:-8] + ".qzeros"],
                                                   int4[k[:-8] + ".scales"])
              for k in int4 if k.endswith(".qweight")}
    changed = {k: v for k, v in int4.items() if k.endswith("layernorm.weight")}
    out = tmp_path / "sharded"
    out.mkdir()
    checkpoint.copy_non_weight_files(tiny_base_awq, out)
    names = checkpoint.write_weights([tiny_base / "model.safetensors"], out, packed, changed,
                                     max_shard_bytes=1024**2)
    assert len(names) > 2 and names[-1] == "model.safetensors.index.json"
    sharded = load(out)
    whole = load(tiny_base_awq)
    for (name, a), (_, b) in zip(sharded.model.state_dict().items(),
                                 whole.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("args, needle", [
    (["--speaker", "nobody"], "unknown speaker"),
    (["--language", "Klingon"], "unsupported language"),
])
def test_synthesize_bad_requests(tiny_custom_voice, tmp_path, args, needle):
    result = CliRunner().invoke(main, ["synthesize", str(tiny_custom_voice), "--text", "Hi.",
                                       "-o", str(tmp_path / "x.wav"), *args])
    assert result.exit_code == 2 and needle in result.output
    assert not (tmp_path / "x.wav").exists()


def test_synthesize_reference_audio(tiny_base, tmp_path):
    import soundfile

    from awq_tts.synth import synthetic_reference

    wav, sr = synthetic_reference(seconds=1.0)
    low = tmp_path / "ref16k.wav"
    soundfile.write(low, wav[::3], sr // 3)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not a wav at all")
    ok = CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text", "Hi.",
                                   "--ref-audio", str(low), "--max-new-tokens", "8",
                                   "-o", str(tmp_path / "ok.wav")])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text", "Hi.",
                                    "--ref-audio", str(broken), "-o", str(tmp_path / "b.wav")])
    assert bad.exit_code == 2 and "cannot read reference audio" in bad.output
