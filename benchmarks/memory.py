"""Memory of Qwen3-TTS 1.7B, bf16 vs INT4: bytes by component, load RSS, and (GPU) VRAM/RTF.

Works on a ``--full-shape`` random checkpoint (built if missing). The INT4 twin packs every
talker decoder linear with round-to-nearest through the same writer ``awq-tts quantize``
uses — AWQ changes values, not layout, so every byte count equals an AWQ checkpoint's —
because an AWQ run of 28 full layers is GPU work, not a 2-core CPU benchmark.

CPU part: component bytes from the safetensors headers; for each model, in a fresh
process, the tensor bytes after ``awq_tts.load`` and the peak RSS once every weight has
been touched (safetensors are memory-mapped, so RSS right after loading undercounts).
GPU part (only with CUDA): the 6 GB budget enforced with the per-process memory fraction;
peak VRAM after load and while synthesizing 30 s of audio, and the real-time factor.
Prints a table and writes JSON (default ``benchmarks/results/memory.json``).

Usage: python benchmarks/memory.py [--work DIR] [--budget-gb 6] [--skip-load]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from timing import results_in

from awq_tts.format import checkpoint
from awq_tts.format.packing import pack_gemm
from awq_tts.format.source import weight_files
from awq_tts.output import atomic_output_dir
from awq_tts.quantizer import numerics
from awq_tts.quantizer.walker import QuantConfig
from awq_tts.testing import make_tiny_checkpoint

COMPONENTS = (
    ("talker decoder linears", r"^talker\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\."),
    ("text embedding", r"^talker\.model\.text_embedding\."),
    ("codec embeddings", r"^talker\.(model\.codec_embedding|code_predictor\.model\.codec_emb)"),
    ("code predictor", r"^talker\.code_predictor\."),
    ("heads and text projection", r"^talker\.(codec_head|text_projection)\."),
    ("speaker encoder", r"^speaker_encoder\."),
    ("talker norms", r"^talker\.model\."),
)
_ITEM = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8}


def component_bytes(folder: Path) -> dict[str, int]:
    out = {name: 0 for name, _ in COMPONENTS}
    for file in weight_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                info = handle.get_slice(key)
                n = _ITEM[info.get_dtype()]
                for dim in info.get_shape():
                    n *= dim
                name = next(c for c, pattern in COMPONENTS if re.match(pattern, key))
                out[name] += n
    out["speech tokenizer"] = (folder / "speech_tokenizer" / "model.safetensors").stat().st_size
    out["total"] = sum(out.values())
    return out


def rtn_int4_twin(source: Path, out: Path, group_size: int = 128) -> Path:
    """Pack the talker decoder linears of ``source`` with RTN into an INT4 checkpoint."""
    pattern = re.compile(COMPONENTS[0][1] + r"weight$")
    packed = {}
    for file in weight_files(source):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                if pattern.match(key):
                    w = handle.get_tensor(key).float()
                    scales, zeros = numerics.compute_qparams(w, group_size)
                    q = numerics.quantize(w, scales, zeros, group_size)
                    packed[key[: -len(".weight")]] = pack_gemm(q, scales, zeros)
    config = json.loads((source / "config.json").read_text())
    with atomic_output_dir(out, force=True) as tmp:
        checkpoint.copy_non_weight_files(source, tmp, skip=("config.json",))
        checkpoint.write_config(config, tmp, QuantConfig(group_size).as_quantization_config(
            ["speaker_encoder", "talker.code_predictor", "talker.codec_head",
             "talker.text_projection"]))
        checkpoint.write_weights(weight_files(source), tmp, packed, {})
    return out


def full_shape_pair(work: Path, variant: str) -> tuple[Path, Path]:
    """The full-shape random checkpoint and its RTN INT4 twin under ``work`` (built once)."""
    bf16 = work / f"full-{variant}"
    if not (bf16 / "config.json").is_file():
        make_tiny_checkpoint(bf16, variant=variant, full_shape=True, force=True)
    int4 = work / f"full-{variant}-int4"
    if not (int4 / "config.json").is_file():
        rtn_int4_twin(bf16, int4)
    return bf16, int4


_PROBE = """
import json, resource, sys, time, torch
from awq_tts.runtime import load
path, device, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
if device.startswith("cuda"):
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, budget * 2**30 / total))
start = time.perf_counter()
tts = load(path, device=device, dtype=torch.bfloat16)
out = {"load_s": time.perf_counter() - start,
       "rss_after_load_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
modules = [tts.model, tts.model.speech_tokenizer.model]
tensors = [t for m in modules for t in [*m.parameters(), *m.buffers()]]
out["weight_gib"] = sum(t.numel() * t.element_size() for t in tensors) / 2**30
with torch.no_grad():  # safetensors are memory-mapped: touch every page, as inference does
    for t in tensors:
        t.reshape(-1).view(torch.uint8).max()
out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
if device.startswith("cuda"):
    out["load_peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    frames = 375  # 30 s at 12.5 frames per second
    torch.cuda.synchronize(); start = time.perf_counter()
    wavs, sr = tts.generate_voice_design(text="Hello there. " * 20, instruct="calm",
        language="English", max_new_tokens=frames, do_sample=True, subtalker_dosample=True)
    torch.cuda.synchronize(); wall = time.perf_counter() - start
    out["synth_audio_s"] = wavs[0].size / sr
    out["rtf"] = wall / out["synth_audio_s"]
    out["synth_peak_vram_gib"] = torch.cuda.max_memory_allocated() / 2**30
print("RESULT" + json.dumps(out))
"""


def probe(folder: Path, device: str, budget: float) -> dict:
    run = subprocess.run([sys.executable, "-c", _PROBE, str(folder), device, str(budget)],
                         capture_output=True, text=True)
    found = results_in(run.stdout)
    if run.returncode or not found:
        return {"error": (run.stderr or run.stdout).strip().splitlines()[-1:]}
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--budget-gb", type=float, default=6.0)
    parser.add_argument("--variant", default="voice_design")
    parser.add_argument("--skip-load", action="store_true", help="sizes only")
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).parent / "results" / "memory.json")
    args = parser.parse_args()
    bf16, int4 = full_shape_pair(args.work, args.variant)
    sizes = {"bf16": component_bytes(bf16), "int4": component_bytes(int4)}
    def model_only(which: str) -> int:
        return sizes[which]["total"] - sizes[which]["speech tokenizer"]

    result = {"sizes_bytes": sizes,
              "int4_over_bf16": sizes["int4"]["total"] / sizes["bf16"]["total"],
              "int4_over_bf16_model_weights": model_only("int4") / model_only("bf16")}
    devices = [] if args.skip_load else ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    for device in devices:
        result[device] = {name: probe(path, device, args.budget_gb)
                          for name, path in (("bf16", bf16), ("int4", int4))}
    print(f"{'component':28}{'bf16 MB':>12}{'INT4 MB':>12}")
    for name in sizes["bf16"]:
        print(f"{name:28}{sizes['bf16'][name] / 1e6:12.1f}{sizes['int4'][name] / 1e6:12.1f}")
    print(f"INT4 / bf16 bytes: {result['int4_over_bf16']:.3f} with the speech tokenizer, "
          f"{result['int4_over_bf16_model_weights']:.3f} for model.safetensors alone")
    for device in devices:
        for name in ("bf16", "int4"):
            print(f"{device} {name}: {result[device][name]}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
