"""The ``speak`` stage's 30 s of graphed speech: RTF and peak memory, and what is live at the
peak (``torch.cuda.memory``'s allocation history, read back here).

The prompt matters to the peak: the talker's prefill, and its KV cache, scale with the text's
tokens. The benchmark checkpoint's tokenizer spells character by character (13 tokens for
"Hello there. ", which Qwen's tokenizer reads as 3), so the text is cut to the tokens 30 s of
real speech carries: about 75 words (150 words a minute) at 1.5 of Qwen's tokens a word. The
stage also speaks the longer text earlier runs used (60 × "Hello there. ") and reports its
peak beside, so the two stay comparable.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

#: 30 s of English speech at 150 words a minute, in Qwen's tokens (1.5 a word).
SPEECH_TOKENS = 112
#: The text every speech measurement repeats.
PHRASE = "Hello there. "
#: Repeats of :data:`PHRASE` in the earlier runs' 30 s text (815 prompt tokens here).
LONG_REPEATS = 60
#: The code this project and its libraries own: a live block is named by its first such frame.
OWN = ("awq_tts/", "qwen_tts/", "transformers/", "benchmarks/")


def text_of(tts, tokens: int) -> tuple[str, int]:
    """The fewest repeats of :data:`PHRASE` whose tokens (``tts``'s own tokenizer) reach
    ``tokens``, and how many tokens that is."""
    count = 0
    for repeats in range(1, 1000):
        text = PHRASE * repeats
        count = len(tts.processor(text=text, return_tensors="pt")["input_ids"][0])
        if count >= tokens:
            return text.strip(), count
    return text.strip(), count


def speak_graphed(tts, frames: int, peak, say: Callable, diagnose: bool = False) -> dict:
    """RTF and peak memory with ``cuda_graphs`` on over ``frames`` (375: 30 s), after a
    short first call that captures the graphs (its wall time is ``capture_call_s``; the peak
    counts the captures and their memory pools), speaking the text of 30 s of speech; with
    ``diagnose`` (the row a 6 GB card runs) also the long text, and the first text again
    with the allocation history on (``trace``)."""
    import torch

    from awq_tts.models import adapter_of
    from awq_tts.runtime import graph_status

    peak.reset()
    adapter_of(tts).use_cuda_graphs(tts, True)
    capture_call = say(tts, 8).seconds_wall
    text, tokens = text_of(tts, SPEECH_TOKENS)
    result = say(tts, frames, text=text)
    out = {"audio_s": result.seconds_audio, "wall_s": result.seconds_wall,
           "rtf": result.real_time_factor, "frames_cap": frames, "status": graph_status(tts),
           "capture_call_s": capture_call, "peak_gib": peak.gib(), "text_tokens": tokens,
           "resident_gib": torch.cuda.memory_allocated() / 2**30}
    if not diagnose:
        return out
    peak.reset()
    long = say(tts, frames, repeat=LONG_REPEATS)
    out["long_text"] = {"repeats": LONG_REPEATS, "peak_gib": peak.gib(),
                        "rtf": long.real_time_factor}
    try:
        out["trace"] = traced(lambda: say(tts, frames, text=text))
    except Exception as exc:  # noqa: BLE001 (a diagnosis; the figures above stand)
        out["trace"] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def traced(run: Callable[[], object], top: int = 12) -> dict:
    """``run()`` with CUDA's allocation history recorded: :func:`peak_of` its events."""
    import torch

    start = torch.cuda.memory_allocated()
    torch.cuda.memory._record_memory_history(max_entries=500_000)
    try:
        run()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    device = torch.cuda.current_device()
    return {"start_gib": start / 2**30, **peak_of(snapshot["device_traces"][device], top)}


def peak_of(events: Iterable[dict], top: int = 12) -> dict:
    """The highest sum of live allocations over a trace (relative to its start) and what
    was live then, grouped by the first frame in :data:`OWN` code: ``rise_gib`` and
    ``live`` (MiB, count and origin, largest first). A block counts from ``alloc`` to its
    ``free_requested`` (as ``memory_allocated`` does); blocks allocated before the trace
    began and freed in it lower the sum."""
    events = [e for e in events if e.get("action") in ("alloc", "free_requested")]
    level = best = best_at = 0
    for i, event in enumerate(events):
        level += event["size"] if event["action"] == "alloc" else -event["size"]
        if level > best:
            best, best_at = level, i + 1
    live: dict[int, dict] = {}
    for event in events[:best_at]:
        if event["action"] == "alloc":
            live[event["addr"]] = event
        else:
            live.pop(event["addr"], None)
    size, count = Counter(), Counter()
    for event in live.values():
        origin = origin_of(event.get("frames") or [])
        size[origin] += event["size"]
        count[origin] += 1
    return {"rise_gib": best / 2**30, "events": len(events),
            "live": [{"mib": round(b / 2**20, 1), "count": count[o], "origin": o}
                     for o, b in size.most_common(top)]}


def origin_of(frames: list[dict]) -> str:
    """``file:line function`` of the innermost frame in code this project or its libraries
    own (the path from the package's folder on: the GPU run installs them under
    ``/tmp/site``), else the innermost frame, else ``?``."""
    for frame in frames:
        name = frame.get("filename", "")
        found = [name.rfind("/" + part) for part in OWN if "/" + part in name]
        if found and "/torch/" not in name:
            return f"{name[max(found) + 1:]}:{frame.get('line')} {frame.get('name')}"
    if frames:
        return f"{frames[0].get('filename', '?')}:{frames[0].get('line')} {frames[0].get('name')}"
    return "?"
