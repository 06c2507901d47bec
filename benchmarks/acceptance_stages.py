"""The stages of ``gpu_acceptance.py``, each measured inside its own process.

Imported by ``gpu_acceptance.py`` (this folder is on ``sys.path`` when it runs as a script,
and in its tests); see that script's docstring for what each stage measures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

def _cuda(device: str) -> bool:
    return device.startswith("cuda")


def apply_cap(device: str, cap_gib: float) -> None:
    import torch

    if _cuda(device):
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2**30 / total), device)
        torch.cuda.reset_peak_memory_stats(device)


class Peak:
    """Peak memory since the last ``reset``: CUDA allocations, or RSS over a baseline."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        import torch

        if _cuda(self.device):
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            from awq_tts.validate.memory import reset_peak_rss, rss_kib

            self.base = rss_kib("VmRSS")
            reset_peak_rss()

    def gib(self) -> float:
        import torch

        if _cuda(self.device):
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        from awq_tts.validate.memory import rss_kib

        return (rss_kib("VmHWM") - self.base) / 2**20


def stage_env(args) -> dict:
    import importlib.metadata as md

    import torch

    from awq_tts.runtime import available_backends

    out = {"device": args.device, "torch": torch.__version__, "python": sys.version.split()[0],
           "backends": available_backends(args.device)}
    if _cuda(args.device):
        out["gpu"] = torch.cuda.get_device_name(args.device)
        out["capability"] = list(torch.cuda.get_device_capability(args.device))
        out["total_gib"] = torch.cuda.get_device_properties(args.device).total_memory / 2**30
    for name in ("transformers", "qwen-tts", "autoawq", "accelerate", "triton"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def stage_gpu_tests(args) -> dict:
    """``pytest -m gpu``: the summary, the failing and skipped tests here, the whole output (short
    tracebacks) in ``OUT/gpu_tests.txt``, so one device call is enough to diagnose."""
    # no device second on building the CPU kernel, which no gpu test runs
    run = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "--tb=short",
                          "-rfEs", "-p", "no:cacheprovider", str(ROOT / "tests")],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "AWQ_TTS_NATIVE": "0"})
    Path(args.out, "gpu_tests.txt").write_text(run.stdout + run.stderr)
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    summary = next((ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|skipped|"
                                                               r"deselected|error)", ln)), "")
    return {"exit_code": run.returncode, "summary": summary.strip("= "),
            "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:40],
            "skipped": [ln for ln in lines if ln.startswith("SKIPPED")][:20]}


def _paths(args) -> tuple[Path, Path]:
    return args.work / "bf16", args.work / "int4"


def stage_build(args) -> dict:
    """The bf16 checkpoint, and its RTN-packed INT4 twin for ``speak`` (same bytes as AWQ)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from memory import rtn_int4_twin

    from awq_tts.testing import make_tiny_checkpoint

    bf16, int4 = _paths(args)
    start = time.perf_counter()
    make_tiny_checkpoint(bf16, variant="voice_design", full_shape=not args.tiny, force=True)
    rtn_int4_twin(bf16, int4.with_name("int4-rtn"))
    size = sum(f.stat().st_size for f in bf16.rglob("*") if f.is_file())
    return {"seconds": time.perf_counter() - start, "bytes": size, "full_shape": not args.tiny}


def stage_speak_one(args) -> dict:
    """One model (``--model bf16``, a backend name, or ``NAME+offload``: that backend with
    the text embedding in host memory) in this fresh process."""
    import torch

    from awq_tts.models.qwen3_tts.package import qwen_tts
    from awq_tts.runtime import load

    qwen_tts()  # imports are the baseline, not the model
    bf16, int4 = _paths(args)
    apply_cap(args.device, args.cap_gib)
    peak = Peak(args.device)
    start = time.perf_counter()
    if args.model == "bf16":
        tts = load(bf16, device=args.device, dtype=torch.bfloat16)
    else:
        backend, _, extra = args.model.partition("+")
        tts = load(int4.with_name("int4-rtn"), device=args.device, dtype=torch.bfloat16,
                   backend=backend, offload_embeddings=extra == "offload")
    out = {"load_s": time.perf_counter() - start, "load_peak_gib": peak.gib(),
           "backend": tts.awq_backend, "host_gib": tts.awq_host_bytes / 2**30}
    print("RESULT" + json.dumps(out), flush=True)   # the load figures survive a cut speech
    frames = args.frames
    out["first_call_s"] = say(tts, 8).seconds_wall     # lazy CUDA set-up, kernels loading
    result = say(tts, frames, repeat=30)
    out.update({"audio_s": result.seconds_audio, "wall_s": result.seconds_wall,
                "rtf": result.real_time_factor, "peak_gib": peak.gib(),
                "frames_cap": frames})
    if _cuda(args.device) and args.model in GRAPHED:
        print("RESULT" + json.dumps(out), flush=True)   # kept if what follows runs out of time
        if args.model in SPLIT:
            out["eager_split"] = eager_split(tts, max(12, frames // 4))
            print("RESULT" + json.dumps(out), flush=True)
        out["graphs"] = speak_graphed(tts, args.speech_frames, peak, say,
                                      diagnose=args.model == DIAGNOSED)
    return out


def say(tts, frames: int, repeat: int = 10, text: str | None = None):
    """``text`` (default ``repeat`` × "Hello there."), sampled in a calm designed voice,
    capped at ``frames`` (random weights never stop by themselves)."""
    import torch

    from awq_tts.synth import speak

    with torch.no_grad():
        return speak(tts, text or "Hello there. " * repeat, instruct="A calm, clear voice.",
                     max_new_tokens=frames, do_sample=True, subtalker_dosample=True)


def eager_split(tts, frames: int) -> dict:
    """Where eager speech spends its wall time, per frame: the talker's forwards (decode
    steps, each with its code-predictor frame) against everything around them
    (``generate``'s loop, sampling, stopping, the codec decoder). Each forward is timed
    between two synchronizations, so this run is a little slower than the RTF one."""
    from quantize_full import time_talker

    with time_talker() as timing:
        result = say(tts, frames)
    steps = max(timing["decode_steps"], 1)
    inside = sum(timing["prefill_s"]) + timing["decode_s"]
    return {"frames": steps, "wall_s": result.seconds_wall,
            "forward_ms_per_frame": 1000 * timing["decode_s"] / steps,
            "outside_ms_per_frame": 1000 * (result.seconds_wall - inside) / steps}


#: The models ``speak`` also runs with ``cuda_graphs`` (the talker step and the code
#: predictor replayed from CUDA graphs): the last is what a 6 GB card runs.
GRAPHED = ("bf16", "int4pack", "int4pack+offload")
#: The model whose graphed speech peak is also taken apart (``speech_memory.py``): the one a
#: 6 GB card runs.
DIAGNOSED = "int4pack+offload"
#: The models whose eager frame ``speak`` splits into the talker's forwards and the rest.
SPLIT = ("bf16", "int4pack")


def stage_decode(args) -> dict:
    """The runtime issue's decode table on this device (``decode.py``'s own functions): the
    7 talker linear shapes, one talker step and one codec frame, bf16 against every INT4
    backend but ``dequant``, all resident together (no memory cap: this is a speed stage)
    and timed in interleaved rounds; and the first backend's siblings fused against apart."""
    from decode import load_models, measure
    from decode_table import table

    from awq_tts.runtime import available_backends

    bf16, int4 = _paths(args)
    backends = [b for b in available_backends(args.device) if b != "dequant"]
    rtn = int4.with_name("int4-rtn")
    models = load_models(bf16, rtn, ["bf16", *backends], args.device)
    result = measure(models, args.device, backends, 2 if args.tiny else 7, 64, rtn)
    return {**result, "table_markdown": table(result)}


def stage_validate(args) -> dict:
    from awq_tts.validate import validate_awq_quality

    bf16, int4 = _paths(args)
    # On CUDA the memory check reads this run's peak VRAM; the CPU's fresh-process probe
    # is not what a GPU run measures, so the dry run leaves it out as well.
    report = validate_awq_quality(int4, reference=str(bf16), device=args.device, n_prompts=2,
                                  max_new_tokens=args.validate_tokens, record=False,
                                  progress=False, full=True, memory_probe=False)
    return {"verdict": report.verdict, "checks": {c.name: c.status for c in report.checks},
            "backend": report.metrics.get("runtime", {}).get("backend"),
            "memory": report.metrics.get("memory"),
            "note": "random weights never stop: tokens capped, the verdict is not judged"}


from acceptance_quantize import stage_quantize  # noqa: E402 (a sibling script module)
from speech_memory import speak_graphed  # noqa: E402

STAGE_FUNCTIONS = {"env": stage_env, "gpu_tests": stage_gpu_tests, "build": stage_build,
                   "speak_one": stage_speak_one, "decode": stage_decode,
                   "quantize": stage_quantize,
                   "validate": stage_validate}


