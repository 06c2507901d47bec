"""The GPU run's speech-memory diagnosis (``benchmarks/speech_memory.py``): the peak of an
allocation history and what was live at it, and the text sized to 30 s of speech."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from speech_memory import PHRASE, origin_of, peak_of, text_of  # noqa: E402

MIB = 2**20


def _frame(path: str, line: int, name: str) -> dict:
    return {"filename": path, "line": line, "name": name}


TORCH = _frame("/site-packages/torch/nn/functional.py", 10, "linear")
KV = _frame("/site-packages/awq_tts/models/qwen3_tts/talker_graphs.py", 62, "update")
CODEC = _frame("/site-packages/qwen_tts/core/tokenizer_12hz/x.py", 613, "forward")


def _alloc(addr: int, mib: int, *frames: dict) -> dict:
    return {"action": "alloc", "addr": addr, "size": mib * MIB, "frames": list(frames)}


def _free(addr: int, mib: int, action: str = "free_requested") -> dict:
    return {"action": action, "addr": addr, "size": mib * MIB}


def test_the_peak_is_the_highest_live_sum_and_names_its_blocks():
    events = [_alloc(1, 100, TORCH, KV), _alloc(2, 50, TORCH, KV),
              {"action": "segment_alloc", "addr": 9, "size": 999 * MIB},   # not an allocation
              _alloc(3, 30, CODEC), _free(3, 30), _free(3, 30, "free_completed"),
              _alloc(4, 40, CODEC), _alloc(5, 10, CODEC),                  # peak: 200 MiB
              _free(4, 40), _free(5, 10), _free(7, 60),       # freed, allocated before the trace
              _alloc(6, 55)]
    peak = peak_of(events)
    assert peak["rise_gib"] * 1024 == 200
    assert peak["live"] == [
        {"mib": 150.0, "count": 2,
         "origin": "awq_tts/models/qwen3_tts/talker_graphs.py:62 update"},
        {"mib": 50.0, "count": 2, "origin": "qwen_tts/core/tokenizer_12hz/x.py:613 forward"}]
    assert peak_of([_free(1, 5)])["rise_gib"] == 0 and peak_of([])["live"] == []


def test_a_block_is_named_from_its_package_folder_wherever_that_is_installed():
    frame = _frame("/tmp/site/qwen_tts/core/x.py", 3, "forward")
    assert origin_of([TORCH, frame]) == "qwen_tts/core/x.py:3 forward"
    assert origin_of([_frame("/work/main/benchmarks/speech_memory.py", 9, "say")]) == (
        "benchmarks/speech_memory.py:9 say")


def test_a_block_outside_the_projects_code_is_named_by_its_innermost_frame():
    assert origin_of([TORCH]) == "/site-packages/torch/nn/functional.py:10 linear"
    assert origin_of([]) == "?"


def test_the_text_of_30_s_of_speech_reaches_its_tokens(tiny_voice_design):
    from awq_tts.runtime import load

    tts = load(tiny_voice_design, device="cpu", dtype=torch.float32)
    text, tokens = text_of(tts, 40)
    fewer = PHRASE * (text.count("Hello") - 1)
    assert tokens >= 40 > len(tts.processor(text=fewer, return_tensors="pt")["input_ids"][0])
