"""Human-readable tables for the CLI (rich), kept apart from the library logic."""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .errors import UsageError
from .format import provenance

console = Console()


def _mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def print_quantize_summary(summary) -> None:
    table = Table(title=f"awq-tts quantize → {summary.output}")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("talker layers", str(summary.layers))
    table.add_row("linears converted to INT4", str(summary.linears))
    table.add_row("those linears, bf16 → INT4",
                  f"{_mb(summary.linear_bytes_before)} → {_mb(summary.linear_bytes_after)}")
    table.add_row("weights on disk, before → after",
                  f"{_mb(summary.bytes_before)} → {_mb(summary.bytes_after)}")
    worse = [r.index for r in summary.layer_reports if r.fallback_to_rtn]
    table.add_row("layers where AWQ fell back to RTN", ", ".join(map(str, worse)) or "none")
    cal = summary.calibration
    table.add_row("calibration", f"{cal['name']}: {cal['count']} seqs, {cal['tokens']} tokens")
    table.add_row("calibration sha256", cal["sha256"][:16] + "…")
    rollout = _rollout_line(cal)
    if rollout:
        table.add_row("rollout work", rollout)
    table.add_row("wall time", f"{summary.seconds:.1f} s (calibration "
                  f"{summary.calibration_seconds:.1f} s, layers {summary.walk_seconds:.1f} s)")
    console.print(table)


def _rollout_line(cal: dict) -> str:
    """``dropping rollouts: 2046 talker row-steps (2960 if each batch ran to its longest
    row), 0 (0.0%) on rows that had already stopped`` (or '' if unknown)."""
    work = cal.get("rollout") or {}
    steps = work.get("talker_row_steps")
    if not steps:
        return ""
    waste = work.get("stopped_row_steps", 0)
    whole = work.get("batch_row_steps")
    longest = f" ({whole} if each batch ran to its longest row)" if whole else ""
    prefill = f"; prefill in {work['prefill_dtype']}" if work.get("prefill_dtype") else ""
    decode = f"{work['decode']} rollouts: " if work.get("decode") else ""
    graphs = f"; CUDA graphs {work['graphs']}" if work.get("graphs") else ""
    return (f"{decode}{steps} talker row-steps{longest}, {waste} ({waste / steps:.1%}) on rows "
            f"that had already stopped{prefill}{graphs}")


def print_provenance(folder: Path) -> None:
    """Print the record; a record missing or mistyping a field is a one-line UsageError."""
    held = provenance.Provenance.read(folder)
    try:
        _print_record(folder, held.record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"{folder}/{provenance.FILENAME} is damaged: field {exc} is missing "
                         f"or has the wrong type") from None
    console.print(f"provenance sha256: {held.sha256}", soft_wrap=True)


def _print_record(folder: Path, record: dict) -> None:
    src = record["source"]
    q = record["quantization"]
    cal = record["calibration"]
    console.print(f"[bold]{folder}[/bold]")
    console.print(f"source: {src['id_or_path']} (revision {src.get('revision')}), "
                  f"{len(src['files'])} files hashed")
    console.print(f"quantization: {q['quant_method']} {q['bits']}-bit, group {q['group_size']}, "
                  f"{q['version']}, {len(q['quantized_linears'])} linears")
    console.print(f"calibration: {cal['name']}, {cal['count']} sequences, {cal['tokens']} tokens, "
                  f"max_seq_len {cal['max_seq_len']}, seed {cal['seed']}, sha256 {cal['sha256']}")
    rollout = _rollout_line(cal)
    if rollout:
        console.print(f"rollout work: {rollout}")
    versions = ", ".join(f"{k} {v}" for k, v in sorted(record["versions"].items()))
    console.print(f"versions: {versions}")
    console.print(f"device {record['device']}, wall time {record['wall_seconds']} s")
    table = Table(title="block-output error per layer (MSE on calibration data)")
    for col in ("layer", "AWQ", "RTN", "AWQ/RTN", "fallback"):
        table.add_column(col, justify="right")
    for layer in record["layers"]:
        ratio = layer["awq_error"] / layer["rtn_error"] if layer["rtn_error"] else float("nan")
        table.add_row(str(layer["index"]), f"{layer['awq_error']:.3e}",
                      f"{layer['rtn_error']:.3e}", f"{ratio:.3f}",
                      "yes" if layer["fallback_to_rtn"] else "")
    console.print(table)
    for entry in record.get("validations", [])[-3:]:
        console.print(f"validation {entry['time']}: {entry['verdict']} "
                      f"(backend {entry.get('backend')}, failed {entry.get('failed')}, "
                      f"skipped {sorted(entry.get('skipped') or [])})")


def print_prompt_set(name: str, prompts: list) -> None:
    from .calibration.prompts import prompt_set_sha256

    counts = Counter(p.language for p in prompts)
    lengths = [len(p.text) for p in prompts]
    console.print(f"prompt set {name}: {len(prompts)} prompts", soft_wrap=True)
    table = Table(title="prompts per language")
    table.add_column("language")
    table.add_column("prompts", justify="right")
    for language, count in sorted(counts.items()):
        table.add_row(language, str(count))
    console.print(table)
    console.print(f"characters per prompt: min {min(lengths)}, "
                  f"median {statistics.median(lengths):.0f}, max {max(lengths)}")
    digest = prompt_set_sha256([(p.text, p.language) for p in prompts])
    console.print(f"sha256 of the prompt set: {digest} (a calibration records it as "
                  f"prompts_sha256)",
                  soft_wrap=True)
