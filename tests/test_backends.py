"""Runtime backends: each equals exact dequantization within its documented tolerance, ``auto``
picks the fastest kernel the machine can run, every backend speaks, and the state dict stays
AutoAWQ's."""

from __future__ import annotations

import pytest
import torch
from conftest import CPU_BACKEND, GREEDY

from awq_tts.errors import UsageError
from awq_tts.format.packing import pack_gemm
from awq_tts.quantizer import numerics
from awq_tts.runtime import Int4Linear, available_backends, backend_of, load
from awq_tts.runtime.backends import BACKENDS, get_backend
from awq_tts.runtime.backends.int4pack import Int4Pack

CUDA = torch.cuda.is_available()
#: Relative error bound against float32 dequantization, by caller dtype (see int4pack.py;
#: avx2.py: int16 activations, then the caller's output rounding).
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1.5e-2}
AVX2_TOLERANCE = {torch.float32: 4e-5, torch.bfloat16: 1.5e-2}


def _layer(out_features: int, in_features: int, bias: bool, seed: int = 0,
           group: int = 128) -> Int4Linear:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=gen) * 0.02
    scales, zeros = numerics.compute_qparams(w, group)
    b = torch.randn(out_features, generator=gen) * 0.1 if bias else None
    return Int4Linear.from_packed(pack_gemm(numerics.quantize(w, scales, zeros, group), scales,
                                            zeros, b), group)


def _cases(device: str):
    for name in available_backends(device):
        if name != "dequant":
            yield pytest.param(name, device, marks=[pytest.mark.gpu] if device != "cpu" else [],
                               id=f"{name}-{device}")


BACKEND_CASES = [*_cases("cpu"), *(_cases("cuda") if CUDA else [
    pytest.param(n, "cuda", marks=pytest.mark.gpu, id=f"{n}-cuda")
    for n in ("int4pack", "awq-triton")])]


@pytest.mark.parametrize("name, device", BACKEND_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(1,), (7,), (2, 5), (3, 20)], ids=["b1", "b7", "3d", "prefill"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_backend_matches_dequant(name, device, dtype, shape, bias):
    reference = _layer(768, 1024, bias)
    layer = _layer(768, 1024, bias).to(device)
    layer.use_backend(BACKENDS[name], dtype)
    x = torch.randn(*shape, 1024, generator=torch.Generator().manual_seed(1)).to(dtype)
    want = reference(x.float())
    got = layer(x.to(device)).float().cpu()
    assert got.shape == (*shape, 768) and got.dtype == torch.float32
    # int4pack computes in bf16 on CUDA whatever the caller; awq-triton in fp16
    if name == "int4pack":
        tol = TOLERANCE[Int4Pack.kernel_dtype(torch.device(device), dtype)]
    else:
        tol = AVX2_TOLERANCE[dtype] if name == "avx2" else 1e-2
    assert torch.linalg.norm(got - want) / torch.linalg.norm(want) < tol


@pytest.mark.parametrize("name, device", BACKEND_CASES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_input_poisons_its_row_and_only_its_row(name, device, bad):
    """A diverging activation must show in the output, never turn into finite numbers."""
    layer = _layer(768, 1024, bias=False).to(device)
    layer.use_backend(BACKENDS[name], torch.bfloat16)
    x = torch.randn(3, 1024, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    x[1, 300] = bad
    out = layer(x.to(device)).float().cpu()
    assert torch.isfinite(out[[0, 2]]).all() and not torch.isfinite(out[1]).any()


@pytest.mark.parametrize("name, device", BACKEND_CASES)
def test_backend_state_dict_is_autoawq(name, device):
    """Names, shapes, dtypes and bytes of the stored tensors survive any backend."""
    stored = _layer(768, 1024, bias=True).state_dict()
    layer = _layer(768, 1024, bias=True).to(device)
    layer.use_backend(BACKENDS[name], torch.bfloat16)
    state = layer.state_dict()
    assert sorted(state) == sorted(stored) == ["bias", "qweight", "qzeros", "scales"]
    for key, tensor in stored.items():
        assert torch.equal(state[key].cpu(), tensor), key


def test_auto_picks_the_fastest_cpu_kernel_and_says_so(tiny_base_awq):
    assert available_backends("cpu") == [*(["avx2"] if CPU_BACKEND == "avx2" else []),
                                         "int4pack", "dequant"]
    tts = load(tiny_base_awq, device="cpu")
    assert tts.awq_backend == backend_of(tts.model) == CPU_BACKEND
    assert f"backend={CPU_BACKEND}" in repr(tts.model.talker.model.layers[0].mlp.down_proj)
    kernel = tts.model.talker.model.layers[0].mlp.down_proj
    assert "qweight" not in kernel._buffers and "kernel_weight" in kernel._buffers


@pytest.mark.skipif(CPU_BACKEND != "avx2", reason="the avx2 kernel does not run here")
@pytest.mark.parametrize("group", [32, 64, 128, 256])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5])
def test_avx2_every_group_size_and_row_count_matches_dequant(group, rows):
    """The kernel's row pairs and single rows, and every group size it accepts."""
    reference = _layer(96, 512, bias=False, seed=group, group=group)
    layer = _layer(96, 512, bias=False, seed=group, group=group)
    layer.use_backend(BACKENDS["avx2"])
    x = torch.randn(rows, 512, generator=torch.Generator().manual_seed(rows)) * 3
    want, got = reference(x), layer(x)
    assert torch.linalg.norm(got - want) / torch.linalg.norm(want) < AVX2_TOLERANCE[torch.float32]
    assert torch.equal(layer.awq_qweight(), reference.qweight)


@pytest.mark.skipif(CPU_BACKEND != "avx2", reason="the avx2 kernel does not run here")
@pytest.mark.parametrize("group", [32, 128])
def test_avx2_prefill_tiles_are_the_exact_weight_rounded_once_to_bf16(group):
    """Prefill's dequantized tiles (``awq_dequant_bf16``): bit for bit the exact weight
    rounded to bf16, for a full tile, a tile at an offset and a narrower last one."""
    from awq_tts.runtime.backends import avx2

    layer = _layer(96 + avx2.TILE, 256, bias=False, seed=group, group=group)
    exact = layer.dequantized_weight(torch.float64).float().bfloat16().t()   # [in, out]
    layer.use_backend(BACKENDS["avx2"])
    buffers, k = layer._buffers, layer.in_features
    for n0, n1 in ((0, avx2.TILE), (avx2.TILE, avx2.TILE + 96), (32, 96)):
        tile = torch.empty(k, n1 - n0, dtype=torch.bfloat16)
        avx2._dequant()(
            buffers["kernel_weight"].data_ptr(), buffers["kernel_scales"].data_ptr(),
            buffers["kernel_zeros"].data_ptr(), k, layer.out_features, group, n0, n1,
            tile.data_ptr(), 1)
        assert torch.equal(tile, exact[:, n0:n1])
    x = torch.randn(avx2.GEMM_ROWS, 256, dtype=torch.bfloat16)
    assert torch.allclose(layer(x).float(), x.float() @ exact.float(), rtol=2e-2, atol=1e-3)


@pytest.mark.skipif(CPU_BACKEND != "avx2", reason="the avx2 kernel does not run here")
def test_avx2_takes_no_rows_and_a_wrong_shape_or_cast_is_one_clear_error_not_a_crash():
    """The C kernel reads raw pointers: a wrong width or half-precision scales never reach it."""
    layer = _layer(64, 256, bias=True)
    layer.use_backend(BACKENDS["avx2"])
    assert layer(torch.randn(0, 256, dtype=torch.bfloat16)).shape == (0, 64)   # no rows
    with pytest.raises(RuntimeError, match=r"of 256 inputs got an input of shape \(1, 100\)"):
        layer(torch.randn(1, 100))
    layer.half()
    with pytest.raises(RuntimeError, match="moved or cast after loading"):
        layer(torch.randn(1, 256))


def test_loaded_model_still_saves_the_checkpoint_tensors(tiny_base_awq):
    from safetensors.torch import load_file

    stored = load_file(str(tiny_base_awq / "model.safetensors"))
    state = load(tiny_base_awq, device="cpu", dtype=torch.float32).model.state_dict()
    packed = [k for k in stored if k.endswith((".qweight", ".qzeros", ".scales"))]
    assert len(packed) == 3 * 7 * 2
    for key in packed:
        assert state[key].dtype == stored[key].dtype and torch.equal(state[key], stored[key]), key


@pytest.mark.parametrize("backend", available_backends("cpu"))
def test_every_cpu_backend_speaks(tiny_base_awq, ref_clip, backend):
    import numpy as np

    tts = load(tiny_base_awq, device="cpu", backend=backend)
    assert tts.awq_backend == backend
    wavs, sr = tts.generate_voice_clone(text="Hello.", language="English", ref_audio=ref_clip,
                                        x_vector_only_mode=True, max_new_tokens=12, **GREEDY)
    assert sr == 24000 and np.isfinite(wavs[0]).all() and np.abs(wavs[0]).max() > 1e-3


@pytest.mark.parametrize("name, needle", [
    ("bogus", "unknown backend 'bogus'; on cpu use one of: auto, "),
    ("awq-triton", "cannot run on cpu: AutoAWQ's kernels run on CUDA only"),
])
def test_bad_backend_is_one_clear_line(name, needle):
    with pytest.raises(UsageError) as info:
        get_backend(name, "cpu")
    message = str(info.value)
    assert needle in message and "\n" not in message
    assert message.endswith(", ".join(["auto", *available_backends("cpu")]))


def test_unfit_group_size_is_named():
    layer = _layer(64, 256, bias=False)
    layer.group_size = 16
    with pytest.raises(UsageError, match="group size 16"):
        layer.use_backend(BACKENDS["int4pack"])


@pytest.mark.parametrize("backend", [b for b in available_backends("cpu") if b != "dequant"])
def test_fast_kernel_logits_match_dequant_on_the_trained_model(tiny_trained_awq, backend):
    """Teacher-forced talker-logit KL between backends, on the trained model's own speech."""
    from awq_tts.calibration.prompts import load_prompts
    from awq_tts.synth import synthetic_reference
    from awq_tts.validate import rollout, teacher

    exact = load(tiny_trained_awq, device="cpu", backend="dequant")
    fast = load(tiny_trained_awq, device="cpu", backend=backend)
    _, prompts = load_prompts("heldout")
    voice = rollout.voice_for(exact, synthetic_reference(seconds=1.0))
    run = rollout.speak(exact, prompts[:3], voice, greedy=True, seed=0, max_new_tokens=60)
    metrics = teacher.compare(exact, fast, run.sequences, run.codes, run.stopped).summary()
    assert metrics["kl_mean"] < 1e-3 and metrics["top1"] > 0.98
