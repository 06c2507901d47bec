"""One talker decoder layer at the real 1.7B shapes: our AWQ vs AutoAWQ's, same inputs.

Also times packing one 2048→6144 linear, ours vs ``WQLinear_GEMM.from_linear``.
Prints a table and writes JSON (default ``benchmarks/results/quantize_layer.json``).

The layer is qwen-tts's real ``Qwen3TTSTalkerDecoderLayer`` with random weights
(N(0, 0.02), norms 1) and the real multimodal rope. Its inputs are random hidden states
with a few large channels, as real decoder activations have (AWQ exists for those).
AutoAWQ's ``AwqQuantizer`` cannot start on this model (no qwen3_tts wrapper; its layer-0
catcher breaks on current decoder layers), so the benchmark bypasses its catcher and
hands it the captured layer inputs directly, then runs its own per-layer loop
(``quantize()``: input features, scale search, clip search) with ``export_compatible``
so the result stays a float layer whose weights we fake-quantize with AutoAWQ's own
``pseudo_quantize_tensor`` — the step right before its packing.

Usage: python benchmarks/quantize_layer.py [--tokens 128] [--samples 8] [--skip-autoawq]
       python benchmarks/quantize_layer.py --pack-only
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch

from awq_tts._compat import awq_module, awq_quantizer, wqlinear_gemm
from awq_tts.format.packing import pack_gemm
from awq_tts.models.mapping import QWEN3_TTS_TALKER
from awq_tts.models.qwen3_tts.package import qwen_tts
from awq_tts.quantizer import numerics
from awq_tts.quantizer.activations import LayerInputs
from awq_tts.quantizer.walker import QuantConfig, quantize_layer
from awq_tts.testing import configs


def build_layer(seed: int):
    qwen_tts()
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSTalkerConfig
    from qwen_tts.core.models.modeling_qwen3_tts import (
        Qwen3TTSTalkerDecoderLayer,
        Qwen3TTSTalkerRotaryEmbedding,
    )

    cfg_dict = configs.talker_config(configs.FULL_1B7, "base", None)
    cfg_dict.pop("code_predictor_config")
    cfg = Qwen3TTSTalkerConfig(**cfg_dict)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    layer = Qwen3TTSTalkerDecoderLayer(cfg, 0).float().eval()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(torch.ones_like(p) if "norm" in name else torch.randn_like(p) * 0.02)
    return layer, Qwen3TTSTalkerRotaryEmbedding(cfg), cfg


def layer_inputs(rotary, hidden: int, samples: int, tokens: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, tokens, hidden, generator=gen)
    x[..., :16] *= 20.0
    positions = torch.arange(tokens).view(1, 1, -1).expand(3, samples, -1)
    cos, sin = rotary(x, positions)
    mask = torch.full((tokens, tokens), float("-inf")).triu(1)[None, None].expand(
        samples, 1, -1, -1)
    kwargs = {"position_embeddings": (cos, sin), "attention_mask": mask,
              "position_ids": positions[0], "cache_position": torch.arange(tokens)}
    return x, kwargs


def output_error(layer, reference, x, kwargs) -> float:
    with torch.no_grad():
        return float((layer(x, **kwargs)[0] - reference).pow(2).mean())


def run_ours(layer, x, kwargs, reference):
    work = copy.deepcopy(layer)
    inputs = LayerInputs(x.clone(), kwargs, torch.ones(x.shape[:2], dtype=torch.bool),
                         dict(QWEN3_TTS_TALKER.layer_kwargs), torch.device("cpu"), 8)
    start = time.perf_counter()
    report = quantize_layer(work, inputs, QuantConfig(), QWEN3_TTS_TALKER,
                            torch.bfloat16).report
    seconds = time.perf_counter() - start
    return seconds, output_error(work, reference, x, kwargs), report.rtn_error


class _AutoAWQModelShim:
    """What AwqQuantizer asks of a model wrapper (a Qwen3 wrapper), for this layer."""

    model_type = "qwen3"

    @staticmethod
    def get_layers_for_scaling(module, input_feat, module_kwargs):
        from awq.models.qwen3 import Qwen3AWQForCausalLM

        return Qwen3AWQForCausalLM.get_layers_for_scaling(module, input_feat, module_kwargs)

    @staticmethod
    def move_embed(model, device):
        return None


def run_autoawq(layer, rotary, x, kwargs, reference):
    awq_module()
    quantizer_cls = awq_quantizer()
    work = copy.deepcopy(layer)
    holder = torch.nn.Module()
    holder.model = torch.nn.Module()
    holder.model.layers = torch.nn.ModuleList([work])
    holder.model.rotary_emb = rotary
    q = quantizer_cls.__new__(quantizer_cls)
    q.awq_model, q.model, q.modules = _AutoAWQModelShim, holder, holder.model.layers
    q.w_bit, q.group_size, q.zero_point, q.version = 4, 128, True, "gemm"
    q.duo_scaling, q.apply_clip, q.export_compatible = True, True, True
    q.modules_to_not_convert, q.max_calib_samples, q.max_calib_seq_len = [], x.shape[0], x.shape[1]
    q.n_parallel_calib_samples, q.max_chunk_memory = None, 1024 * 1024 * 1024
    q.inps, q.module_kwargs = x.clone(), dict(kwargs)
    start = time.perf_counter()
    q.quantize()
    with torch.no_grad():
        for name in QWEN3_TTS_TALKER.quantized:
            lin = work.get_submodule(name)
            lin.weight.copy_(q.pseudo_quantize_tensor(lin.weight.data)[0])
    seconds = time.perf_counter() - start
    return seconds, output_error(work, reference, x, kwargs)


def _median_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pack_times(seed: int, repeats: int = 5) -> dict:
    """Median of ``repeats`` timed runs after one warm-up, for both packers."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(6144, 2048, generator=gen) * 0.02
    scales, zeros = numerics.compute_qparams(w, 128)
    q = numerics.quantize(w, scales, zeros, 128)
    linear = torch.nn.Linear(2048, 6144, bias=False)
    with torch.no_grad():
        linear.weight.copy_(numerics.dequantize(q, scales, zeros, 128))
    s_t, z_t = scales.t().contiguous(), zeros.t().contiguous()

    def autoawq():
        return wqlinear_gemm().from_linear(linear, 4, 128, scales=s_t, zeros=z_t)

    ours, ref = pack_gemm(q, scales, zeros), autoawq()
    assert torch.equal(ours.qweight, ref.qweight) and torch.equal(ours.qzeros, ref.qzeros)
    t_ours = _median_seconds(lambda: pack_gemm(q, scales, zeros), repeats)
    t_ref = _median_seconds(autoawq, repeats)
    return {"ours_s": t_ours, "autoawq_s": t_ref, "speedup": t_ref / t_ours,
            "repeats": repeats, "statistic": "median"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-autoawq", action="store_true")
    parser.add_argument("--pack-only", action="store_true",
                        help="re-time only the packing and update that entry of the JSON")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).parent / "results" / "quantize_layer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.pack_only:
        result = json.loads(args.json.read_text()) if args.json.is_file() else {}
        result["pack_2048x6144"] = pack = pack_times(args.seed)
        print(f"pack 2048x6144: ours {pack['ours_s']:.4f} s, AutoAWQ {pack['autoawq_s']:.3f} s "
              f"({pack['speedup']:.0f}x)")
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    layer, rotary, _ = build_layer(args.seed)
    x, kwargs = layer_inputs(rotary, layer.hidden_size, args.samples, args.tokens, args.seed)
    with torch.no_grad():
        reference = layer(x, **kwargs)[0]
    ours_s, ours_err, rtn_err = run_ours(layer, x, kwargs, reference)
    result = {"machine": {"threads": args.threads, "torch": torch.__version__},
              "layer": "1.7B talker decoder layer (hidden 2048, intermediate 6144, 16/8 heads)",
              "calibration_tokens": args.samples * args.tokens,
              "ours": {"seconds": ours_s, "output_mse": ours_err},
              "rtn": {"output_mse": rtn_err}}
    if not args.skip_autoawq:
        awq_s, awq_err = run_autoawq(layer, rotary, x, kwargs, reference)
        result["autoawq"] = {"seconds": awq_s, "output_mse": awq_err}
        result["speedup_vs_autoawq"] = awq_s / ours_s
        result["error_ratio_ours_over_autoawq"] = ours_err / awq_err
    result["pack_2048x6144"] = pack_times(args.seed)
    print(f"{'':28}{'seconds':>12}{'output MSE':>14}")
    print(f"{'awq-tts':28}{ours_s:12.2f}{ours_err:14.4e}")
    print(f"{'round-to-nearest':28}{'':12}{rtn_err:14.4e}")
    if "autoawq" in result:
        print(f"{'AutoAWQ 0.2.9':28}{awq_s:12.2f}{awq_err:14.4e}")
        print(f"speed-up vs AutoAWQ: {result['speedup_vs_autoawq']:.1f}x, "
              f"error ratio (ours/AutoAWQ): {result['error_ratio_ours_over_autoawq']:.3f}")
    pack = result["pack_2048x6144"]
    print(f"pack 2048x6144: ours {pack['ours_s']:.4f} s, AutoAWQ {pack['autoawq_s']:.3f} s "
          f"({pack['speedup']:.0f}x)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
