"""AWQ error against the search's token budget N: where the budget stops mattering.

Two workloads, each quantized once per N in the same run, each N measured by the same
yardstick — the quantized layer's output error over *every* calibration token:

* ``tiny``: the trained tiny model (``make-tiny --trained``), calibrated once on the
  built-in prompts, then walked (all layers, errors propagating) once per N;
* ``layer``: one talker decoder layer at the real 1.7B shapes with random inputs that have
  outlier channels (the same layer as ``quantize_layer.py``), once per N.

The default budget (``awq_tts.quantizer.recipe.LOSS_TOKENS``) is chosen where the error is
within 1 % of the all-tokens error on both. Writes a table and
``benchmarks/results/loss_budget.json``.

Usage: python benchmarks/loss_budget.py [--budgets 256,512,1024,2048,4096]
           [--tiny-samples 64 --tiny-len 256] [--layer-samples 16 --layer-tokens 512]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from awq_tts.calibration.builder import build_calibration
from awq_tts.calibration.prompts import load_prompts
from awq_tts.models.mapping import QWEN3_TTS_TALKER
from awq_tts.models.qwen3_tts.package import qwen_tts
from awq_tts.quantizer.activations import LayerInputs
from awq_tts.quantizer.recipe import LOSS_TOKENS, QuantConfig, WalkResult
from awq_tts.quantizer.walker import quantize_layer, walk
from awq_tts.testing.trained import make_trained_checkpoint


def tiny_rows(budgets: list[int | None], samples: int, seq_len: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = make_trained_checkpoint(Path(tmp) / "trained", seed=0)
        tts = qwen_tts().Qwen3TTSModel.from_pretrained(str(path), dtype="auto")
        _, prompts = load_prompts(None)
        calib = build_calibration(tts, prompts, n_samples=samples, max_seq_len=seq_len,
                                  progress=False)
        embeds, mask = calib.padded()
        state = {k: v.clone() for k, v in tts.model.state_dict().items()}
        rows = []
        for budget in budgets:
            tts.model.load_state_dict(state)
            start = time.perf_counter()
            result = [r for r in walk(tts.model, embeds, mask, QuantConfig(loss_tokens=budget))
                      if isinstance(r, WalkResult)][0]
            rows.append({"budget": budget, "tokens": int(mask.sum()),
                         "loss_tokens": result.loss_tokens,
                         "seconds": time.perf_counter() - start,
                         "output_error": sum(r.output_error for r in result.layers)
                         / len(result.layers)})
        return rows


def layer_rows(budgets: list[int | None], samples: int, tokens: int) -> list[dict]:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from quantize_layer import build_layer, layer_inputs  # the same layer and inputs

    layer, rotary, cfg = build_layer(0)
    x, kwargs = layer_inputs(rotary, cfg.hidden_size, samples, tokens, 0)

    def inputs() -> LayerInputs:
        return LayerInputs(x.clone(), kwargs, torch.ones(x.shape[:2], dtype=torch.bool),
                           dict(QWEN3_TTS_TALKER.layer_kwargs), torch.device("cpu"), 4)

    with torch.no_grad():
        reference = inputs().run(lambda chunk, kw: layer(chunk, **kw)[0])
    rows = []
    for budget in budgets:
        work = copy.deepcopy(layer)
        start = time.perf_counter()
        out = quantize_layer(work, inputs(), QuantConfig(loss_tokens=budget),
                             QWEN3_TTS_TALKER, torch.bfloat16).output
        rows.append({"budget": budget, "tokens": samples * tokens,
                     "seconds": time.perf_counter() - start,
                     "output_error": float((out - reference).pow(2).mean())})
    return rows


def _relative(rows: list[dict]) -> None:
    full = rows[-1]["output_error"]
    for row in rows:
        row["vs_all_tokens"] = row["output_error"] / full - 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="256,512,1024,2048,4096")
    parser.add_argument("--tiny-samples", type=int, default=64)
    parser.add_argument("--tiny-len", type=int, default=256)
    parser.add_argument("--layer-samples", type=int, default=16)
    parser.add_argument("--layer-tokens", type=int, default=512)
    parser.add_argument("--skip-layer", action="store_true")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).parent / "results" / "loss_budget.json")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    budgets: list[int | None] = [int(b) for b in args.budgets.split(",")] + [None]
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{torch.get_num_threads()} threads, torch {torch.__version__}",
              "default": LOSS_TOKENS,
              "tiny": tiny_rows(budgets, args.tiny_samples, args.tiny_len)}
    _relative(result["tiny"])
    if not args.skip_layer:
        result["layer"] = layer_rows(budgets, args.layer_samples, args.layer_tokens)
        _relative(result["layer"])
    print("| workload | N | tokens | output error | vs all tokens | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in ("tiny", "layer"):
        for row in result.get(name, []):
            n = row["budget"] or "all"
            print(f"| {name} | {n} | {row['tokens']} | {row['output_error']:.4e} | "
                  f"{row['vs_all_tokens']:+.2%} | {row['seconds']:.1f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
