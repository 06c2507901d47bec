"""Peak memory and time of decoding codes to audio: qwen-tts's decoder against awq-tts's
chunked convolutions (``models/qwen3_tts/codec_chunks.py``), on the full-size speech
tokenizer of a ``--full-shape`` checkpoint.

Each measurement runs in a fresh process: load the tokenizer, decode 8 frames (lazy
set-up), then decode N random frames. On the CPU the peak is the rise of the resident set
with glibc returning every allocation above 128 KiB to the system when freed, so the
high-water mark counts what was live, not what the allocator kept; on CUDA it is
``max_memory_allocated``. On the CPU the time comes from a second run with glibc's usual
allocator. The audio of both paths is compared sample for sample.

Usage: python benchmarks/codec_memory.py [--work DIR] [--device cpu] [--frames 150,300]
Writes ``benchmarks/results/codec_memory-<device>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: glibc: serve (and so return) every allocation above 128 KiB with its own mapping.
HONEST_RSS = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def measure(tokenizer: str, device: str, frames: int, chunked: bool, wav_out: str) -> dict:
    """One decode in this process (the child's side)."""
    import time

    import numpy as np
    import torch

    from awq_tts.models.qwen3_tts import codec_chunks
    from awq_tts.models.qwen3_tts.package import qwen_tts
    from awq_tts.validate.memory import reset_peak_rss, rss_kib

    qwen_tts()
    from qwen_tts import Qwen3TTSTokenizer

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    tok = Qwen3TTSTokenizer.from_pretrained(tokenizer, device_map=device, dtype=dtype)
    if chunked:
        codec_chunks.install(tok.model.decoder)
    codes = torch.randint(0, 2048, (frames, 16), generator=torch.Generator().manual_seed(0))
    cuda = device.startswith("cuda")
    with torch.no_grad():
        tok.decode([{"audio_codes": codes[:8]}])
        if cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            base = rss_kib("VmRSS") * 1024
            reset_peak_rss()
        start = time.perf_counter()
        wavs, _ = tok.decode([{"audio_codes": codes}])
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if cuda else rss_kib("VmHWM") * 1024
    np.save(wav_out, np.asarray(wavs[0], dtype=np.float32))
    return {"frames": frames, "chunked": chunked, "dtype": str(dtype).removeprefix("torch."),
            "peak_rise_mib": (peak - base) / 2**20, "seconds": seconds}


def _child(cmd: list[str], env: dict) -> dict:
    from timing import results_in

    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = results_in(run.stdout)
    if not found:
        sys.exit(f"error: a decode failed: {run.stderr[-500:]}")
    return found[0]


def frame_counts(text: str) -> list[int]:
    """``--frames``: whole numbers of at least 8, comma-separated."""
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 8:
        raise argparse.ArgumentTypeError(f"{text!r}: give frame counts of at least 8, "
                                         f"comma-separated, such as 150,300")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=frame_counts, default=[150, 300],
                        help="comma-separated frame counts to decode (12.5 a second)")
    parser.add_argument("--child", nargs=4, metavar=("TOKENIZER", "FRAMES", "CHUNKED", "WAV"))
    args = parser.parse_args()
    if args.child:
        tokenizer, frames, chunked, wav = args.child
        print("RESULT" + json.dumps(measure(tokenizer, args.device, int(frames),
                                            chunked == "1", wav)), flush=True)
        return
    import numpy as np

    tokenizer = args.work / "full-voice_design" / "speech_tokenizer"
    if not tokenizer.is_dir():
        parser.error(f"{tokenizer} is missing; build it with `awq-tts make-tiny "
                     f"{tokenizer.parent} --full-shape --variant voice_design`")
    rows = []
    for frames in args.frames:
        wavs = {}
        for chunked in (False, True):
            wav = str(args.work / f"codec-{frames}-{int(chunked)}.npy")
            child = [sys.executable, __file__, "--device", args.device, "--child",
                     str(tokenizer), str(frames), str(int(chunked)), wav]
            row = _child(child, {**os.environ, **HONEST_RSS})
            # the time from a run with glibc's usual allocator (returning every large block
            # to the system costs the chunked path, with its more numerous blocks, more)
            row["seconds"] = (_child(child, dict(os.environ)) if args.device == "cpu"
                              else row)["seconds"]
            rows.append(row)
            wavs[chunked] = np.load(wav)
        rows[-1]["max_abs_diff_to_stock"] = float(np.abs(wavs[True] - wavs[False]).max())
    out = {"device": args.device, "tokenizer": "full-size (random weights)", "rows": rows}
    results = HERE / "results" / f"codec_memory-{args.device.split(':')[0]}.json"
    results.write_text(json.dumps(out, indent=2) + "\n")
    print("| frames | decoder | peak rise MiB | seconds |\n|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['frames']} | {'chunked' if r['chunked'] else 'qwen-tts'} | "
              f"{r['peak_rise_mib']:.0f} | {r['seconds']:.1f} |")
    print(f"JSON: {results}")


if __name__ == "__main__":
    main()
