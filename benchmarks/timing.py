"""Helpers for the benchmarks: calls timed in interleaved rounds, paired speed-ups, and the
``RESULT`` lines a measurement run in a child process prints.

Timing one model after another lets a change in machine load between the phases move the
ratio (1.57× to 1.76× for the same code on this shared CPU); timing every call once per
round makes such a change hit all of them alike.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from pathlib import Path

import torch


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def wall(fn, device: str) -> float:
    """Seconds one ``fn()`` takes, the device's queued work finished before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def interleaved(fns: dict, device: str, repeats: int) -> dict[str, dict]:
    """Time every callable once per round for ``repeats`` rounds (after one warm-up each),
    so a change in machine load between rounds hits all of them alike. Per name: the
    median seconds and the per-round times (for paired ratios)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(wall(fn, device))
    return {name: {"median_s": statistics.median(t), "rounds_s": t} for name, t in times.items()}


def paired_speedup(base: dict, other: dict) -> float:
    """Median over rounds of base time / other time (both timed in the same round)."""
    return statistics.median(b / o for b, o in zip(base["rounds_s"], other["rounds_s"],
                                                   strict=True))


def machine(device: str) -> str:
    """The device's name: the GPU, or the CPU model with torch's thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def results_in(stdout: str) -> list[dict]:
    """The ``RESULT{json}`` lines a child process printed, in order (a child may print a
    partial result before the final one)."""
    return [json.loads(ln[len("RESULT"):]) for ln in stdout.splitlines()
            if ln.startswith("RESULT")]
