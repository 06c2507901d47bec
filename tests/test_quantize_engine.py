"""The walk's engine: the seeded loss budget, statistics from every token, one layer
resident at a time, NaN weights refused by name."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import FAST

from awq_tts import quantize
from awq_tts.format.source import require_finite
from awq_tts.quantizer import walker
from awq_tts.quantizer.activations import LayerInputs, record_linear_inputs
from awq_tts.quantizer.sample import draw


def _ragged_mask(seed: int = 0) -> torch.Tensor:
    """Left-padded sequences of different lengths, as calibration batches are."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 40, (11,), generator=gen)
    mask = torch.zeros(11, 40, dtype=torch.bool)
    for i, n in enumerate(lengths):
        mask[i, 40 - int(n):] = True
    return mask


def test_sample_is_seeded_and_spans_prompts():
    mask = _ragged_mask()
    n_valid = int(mask.sum())
    a, b, other = draw(mask, 60, seed=3), draw(mask, 60, seed=3), draw(mask, 60, seed=4)
    assert torch.equal(a.positions, b.positions) and torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.positions, other.positions)
    assert a.tokens == 60 and a.positions.unique().numel() == 60
    assert torch.equal(a.positions, a.positions.sort().values) and a.positions.max() < n_valid
    seq_of = torch.arange(11)[:, None].expand(11, 40)[mask]
    assert seq_of[a.positions].unique().numel() > 5, "tokens come from many prompts"
    assert int(mask[a.sequences].sum()) >= 60, "whole sequences hold at least the budget"
    everything = draw(mask, None, seed=3)
    assert everything.tokens == n_valid and everything.sequences.numel() == 11
    assert draw(mask, 10 * n_valid, seed=3).tokens == n_valid
    with pytest.raises(ValueError, match="at least 1"):
        draw(mask, 0, seed=3)


def test_capture_keeps_all_token_statistics_and_only_the_sample():
    torch.manual_seed(0)
    mask = _ragged_mask(1)
    layer = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8))
    seen = {}

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = layer

        def forward(self, x, **_kw):
            return (self.inner(x),)

    model = Layer()
    hidden = torch.randn(11, 40, 16)
    inputs = LayerInputs(hidden, {}, mask, {}, torch.device("cpu"), batch_size=3)
    sample = draw(mask, 50, seed=1)
    linears = {"first": layer[0], "second": layer[2]}
    hooks = [lin.register_forward_pre_hook(lambda m, a, n=n: seen.setdefault(n, a[0]))
             for n, lin in linears.items()]
    full_second = torch.nn.functional.gelu(layer[0](hidden))
    for h in hooks:
        h.remove()
    out, captured = record_linear_inputs(model, linears, inputs, sample,
                                         whole_sequences=frozenset({"first"}))
    assert torch.allclose(out, layer(hidden))
    for name, full in (("first", hidden), ("second", full_second)):
        assert torch.allclose(captured[name].x_mean, full[mask].abs().mean(0), atol=1e-6)
    assert torch.equal(captured["first"].rows, hidden[sample.sequences])
    assert torch.allclose(captured["second"].rows, full_second[mask][sample.positions])


def test_budgeted_quantize_is_deterministic_and_recorded(tiny_base, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    quantize(tiny_base, a, loss_tokens=64, **FAST)
    quantize(tiny_base, b, loss_tokens=64, offload_activations=True, **FAST)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    record = json.loads((a / "noesis_provenance.json").read_text())
    assert record["quantization"]["loss_tokens"] == 64
    assert record["quantization"]["loss_tokens_drawn"] == 64
    assert record["quantization"]["activations"] == "device"
    offloaded = json.loads((b / "noesis_provenance.json").read_text())["quantization"]
    assert offloaded["activations"] == "cpu"
    assert all(layer["output_error"] > 0 for layer in record["layers"])


def test_bf16_activation_store_halves_the_inputs_and_is_recorded(tiny_base, tiny_base_awq,
                                                                 tmp_path):
    """bf16 is the default store; float32 stays available, and each is recorded."""
    hidden = torch.randn(2, 5, 8)
    inputs = LayerInputs(hidden, {}, torch.ones(2, 5, dtype=torch.bool), {},
                         torch.device("cpu"), store_dtype=torch.bfloat16)
    assert inputs.hidden.dtype == torch.bfloat16
    seen = []
    inputs.run(lambda x, _kw: seen.append(x.dtype) or x)
    assert seen == [torch.float32], "chunks compute in float32"
    default = json.loads((tiny_base_awq / "noesis_provenance.json").read_text())
    assert default["quantization"]["activation_dtype"] == "bfloat16"
    quantize(tiny_base, tmp_path / "q", activation_dtype="float32", **FAST)
    record = json.loads((tmp_path / "q" / "noesis_provenance.json").read_text())
    assert record["quantization"]["activation_dtype"] == "float32"
    assert all(layer["awq_error"] <= layer["rtn_error"] for layer in record["layers"])
    assert record["layers"][1]["awq_error"] != default["layers"][1]["awq_error"]


def test_one_decoder_layer_resident_during_the_walk(tiny_base, tmp_path, monkeypatch):
    seen: list[int] = []
    original = walker.quantize_layer

    def counting(layer, *args, **kwargs):
        model_layers = counting.layers
        seen.append(sum(not next(lay.parameters()).is_meta for lay in model_layers))
        return original(layer, *args, **kwargs)

    real_walk = walker.walk

    def spying_walk(model, *args, **kwargs):
        counting.layers = list(model.talker.model.layers)
        assert all(next(lay.parameters()).is_meta for lay in counting.layers)
        assert next(model.talker.code_predictor.parameters()).is_meta, "source freed"
        yield from real_walk(model, *args, **kwargs)

    monkeypatch.setattr(walker, "quantize_layer", counting)
    monkeypatch.setattr(sys.modules["awq_tts.quantizer.api"], "walk", spying_walk)
    quantize(tiny_base, tmp_path / "out", **FAST)
    assert len(seen) >= 2 and seen == [1] * len(seen)


def test_nan_outside_the_layers_is_named():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)).to(torch.bfloat16)
    require_finite(model)
    with torch.no_grad():
        model[1].bias[2] = float("inf")
    with pytest.raises(Exception, match=r"tensor 1\.bias contains NaN or Inf"):
        require_finite(model)


def test_batched_calibration_stops_each_prompt_where_it_stops_alone(tiny_trained):
    """Greedy calibration of the trained model: each sample leaves its batch at its own
    end-of-speech and speaks exactly the codes qwen-tts's own ``generate`` gives it alone,
    with talker inputs bit-identical to transformers' batched decode."""
    from awq_tts.calibration import build_calibration, builtin_prompts
    from awq_tts.runtime import load

    tts = load(tiny_trained, dtype=torch.float32)
    prompts = builtin_prompts()[:3]
    batched = build_calibration(tts, prompts, n_samples=3, max_seq_len=200, progress=False,
                                greedy=True, batch_size=3)
    alone = [_speak(tts, [p.text], drop=False).codes[0] for p in prompts]
    frames = [len(r["codes"]) for r in batched.records]
    assert frames == [int(c.shape[0]) for c in alone]
    assert len(set(frames)) > 1 and max(frames) < 200, "the prompts stop at different frames"
    assert all(r["codes"] == c.tolist() for r, c in zip(batched.records, alone, strict=True))
    work = batched.describe()["rollout"]
    assert work == {"talker_row_steps": sum(frames), "stopped_row_steps": 0,
                    "batch_row_steps": 3 * max(frames), "prefill_dtype": "float32",
                    "decode": "dropping"}

    texts = [p.text for p in prompts]
    hf, own = _speak(tts, texts, drop=False), _speak(tts, texts, drop=True)
    assert hf.stopped_row_steps == sum(max(frames) - f for f in frames) > 0
    assert hf.skipped_rows > 0 and own.stopped_row_steps == 0
    for a, b in zip(hf.sequences(), own.sequences(), strict=True):
        assert torch.equal(a, b)


def test_sampled_early_stopping_rollouts_are_reproducible(tiny_trained):
    """Sampled rollouts that drop stopped rows: same seed and batch size, same bytes."""
    from awq_tts.calibration import build_calibration, builtin_prompts
    from awq_tts.runtime import load

    tts = load(tiny_trained, dtype=torch.float32)
    common = dict(n_samples=4, max_seq_len=200, progress=False, batch_size=4)
    first, again = (build_calibration(tts, builtin_prompts()[:4], **common) for _ in range(2))
    assert first.sha256() == again.sha256()
    work = first.describe()["rollout"]
    assert work["stopped_row_steps"] == 0
    assert work["talker_row_steps"] < work["batch_row_steps"]


@pytest.mark.gpu
def test_device_resident_and_offloaded_walks_agree_on_cuda(tiny_base, tmp_path):
    """On a GPU the activations stay on the device by default; offloading them to the CPU
    must not change a single packed weight."""
    resident, offloaded = tmp_path / "resident", tmp_path / "offloaded"
    quantize(tiny_base, resident, device="cuda", **FAST)
    quantize(tiny_base, offloaded, device="cuda", offload_activations=True, **FAST)
    assert ((resident / "model.safetensors").read_bytes()
            == (offloaded / "model.safetensors").read_bytes())


def test_cpu_prefill_computes_in_float32_and_leaves_the_model_as_it_was(tiny_trained):
    """A bf16 model's calibration prefill on a CPU runs each layer in float32 (7× faster
    there): close to the bf16 forward, bf16 out, weights and forwards untouched, and the
    greedy rollouts stop where qwen-tts's own bf16 generate stops them."""
    from awq_tts.calibration import build_calibration, builtin_prompts
    from awq_tts.models.qwen3_tts.decode import layers_in_float32
    from awq_tts.runtime import load

    tts = load(tiny_trained, dtype=torch.bfloat16)
    decoder = tts.model.talker.model
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    x = torch.randn(2, 40, decoder.config.hidden_size, dtype=torch.bfloat16)
    mask = torch.ones(2, 40, dtype=torch.long)
    plain = decoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
    with layers_in_float32(decoder.layers):
        upcast = decoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
    with layers_in_float32(decoder.layers, min_rows=81):
        small = decoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
    assert upcast.dtype == torch.bfloat16 and torch.equal(small, plain)
    assert not torch.equal(upcast, plain)
    assert torch.cosine_similarity(upcast.float().flatten(), plain.float().flatten(), 0) > 0.999
    assert all("forward" not in layer.__dict__ for layer in decoder.layers)

    prompts = builtin_prompts()[:3]
    calib = build_calibration(tts, prompts, n_samples=3, max_seq_len=200, progress=False,
                              greedy=True, batch_size=3)
    assert calib.rollout["prefill_dtype"] == "float32"
    assert all(torch.equal(v, decoder.state_dict()[k]) for k, v in before.items())
    lengths = [len(r["codes"]) for r in calib.records]
    alone = [_speak(tts, [p.text], drop=False).codes[0] for p in prompts]
    assert lengths == [int(c.shape[0]) for c in alone] and max(lengths) < 200


def _speak(tts, texts: list[str], drop: bool, sample: bool = False, max_new_tokens: int = 200):
    """Speech of ``texts`` in one batch (greedy unless ``sample``), recorded: qwen-tts's own
    ``generate`` (``drop=False``) or the calibration loop that drops stopped rows."""
    from awq_tts.models.qwen3_tts.patches import record_talker
    from awq_tts.synth import synthetic_reference

    ref = synthetic_reference(seconds=1.5, seed=0, pitch=110.0)
    with record_talker(tts, drop_stopped=drop) as record:
        tts.generate_voice_clone(text=texts, language=["English"] * len(texts),
                                 ref_audio=[ref] * len(texts),
                                 x_vector_only_mode=[True] * len(texts),
                                 max_new_tokens=max_new_tokens, do_sample=sample,
                                 subtalker_dosample=sample)
    return record


def test_decode_loop_refuses_arguments_it_does_not_implement():
    from awq_tts.models.qwen3_tts.decode import KNOWN, generate_dropping_stopped

    assert {"repetition_penalty", "suppress_tokens", "subtalker_top_k"} <= KNOWN
    with pytest.raises(RuntimeError, match="no_repeat_ngram_size to the talker's generate"):
        generate_dropping_stopped(None, inputs_embeds=None, no_repeat_ngram_size=3)


def test_sampled_decode_loop_draws_transformers_codes_while_no_row_stops(tiny_base):
    """Random weights never stop: there the loop's sampling consumes the random stream
    exactly as transformers' ``generate`` does, so both speak the same codes."""
    from awq_tts.runtime import load

    tts = load(tiny_base, dtype=torch.float32)
    texts = ["One two three.", "A longer sentence to speak.", "Short."]
    codes = []
    for drop in (False, True):
        torch.manual_seed(3)
        codes.append(_speak(tts, texts, drop, sample=True, max_new_tokens=20).codes)
    assert [int(c.shape[0]) for c in codes[1]] == [19] * 3, "no row stopped"
    assert all(torch.equal(a, b) for a, b in zip(*codes, strict=True))
