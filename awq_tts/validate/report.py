"""The validator's outputs: terminal table, JSON, Markdown, PNG plot, provenance entry."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..format import provenance
from ..output import atomic_output_file

_MARKS = {"pass": "[green]pass[/green]", "fail": "[bold red]FAIL[/bold red]",
          "skip": "[yellow]skipped[/yellow]"}
_MD_MARKS = {"pass": "pass", "fail": "**FAIL**", "skip": "skipped"}


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(report, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"validate {report.quantized} against {report.reference}",
                  caption=_runtime_line(report))
    for col in ("check", "value", "bound", "result"):
        table.add_column(col, justify="right" if col != "check" else "left")
    for c in report.checks:
        table.add_row(c.name, _fmt(c.value), f"{c.op} {_fmt(c.bound)}", _MARKS[c.status])
    console.print(table)
    style = "bold green" if report.passed else "bold red"
    console.print(f"verdict: [{style}]{report.verdict}[/{style}]", highlight=False)


def _runtime_line(report) -> str:
    runtime = report.metrics.get("runtime") or {}
    graphs = runtime.get("cuda_graphs", "off")
    return (f"INT4 ran on {runtime.get('device', 'n/a')} with backend "
            f"{runtime.get('backend', 'n/a')}" + ("" if graphs == "off" else
                                                 f", CUDA graphs: {graphs}")
            + (", text embedding in host memory" if runtime.get("offload_embeddings") else ""))


def to_json(report) -> bytes:
    return (json.dumps(report.as_dict(), indent=2, sort_keys=True, ensure_ascii=False,
                       default=float) + "\n").encode()


def to_markdown(report) -> str:
    lines = [f"# AWQ quality report: {report.verdict}", "",
             f"- quantized: `{report.quantized}`", f"- reference: `{report.reference}`",
             f"- {_runtime_line(report)}", "",
             "| check | value | bound | result | detail |", "|---|---:|---:|---|---|"]
    for c in report.checks:
        detail = c.detail.replace("|", "/")
        lines.append(f"| {c.name} | {_fmt(c.value)} | {c.op} {_fmt(c.bound)} | "
                     f"{_MD_MARKS[c.status]} | {detail} |")
    tf = report.metrics.get("teacher_forced", {})
    if tf:
        lines += ["", "## Reported without a bound", "",
                  "- hidden-state cosine per layer: "
                  + ", ".join(_fmt(v) for v in tf.get("layer_cosine", [])),
                  f"- teacher-forced frame positions: {tf.get('frame_positions')}",
                  f"- real-time factor: {report.metrics['real_time_factor']}"]
    if report.prompts:
        lines += ["", "## Per prompt", "", "| prompt | KL | top-1 | frames bf16 | frames INT4 |",
                  "|---|---:|---:|---:|---:|"]
        for row in report.prompts:
            text = row["text"][:40].replace("|", "/")
            lines.append(f"| {text} | {_fmt(row['kl_mean'])} | {_fmt(row['top1'])} | "
                         f"{row['frames_bf16_greedy']} | {row['frames_int4_greedy']} |")
    return "\n".join(lines) + "\n"


def write_plot(report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tf = report.metrics.get("teacher_forced", {})
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    cosine = tf.get("layer_cosine", [])
    left.plot(range(len(cosine)), cosine, marker="o")
    left.set(title="hidden-state cosine per layer", xlabel="talker layer", ylabel="cosine")
    for row in report.prompts[:8]:
        kl = row.get("kl_curve")
        if kl:
            right.plot(kl, alpha=0.7)
    right.set(title="KL(bf16 || INT4) per position", xlabel="position", ylabel="KL (nats)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def write_outputs(report, json_path: Path | None, markdown_path: Path | None,
                  plot_path: Path | None) -> str:
    """Write what was asked for; return the sha256 of the JSON report."""
    data = to_json(report)
    if json_path:
        with atomic_output_file(json_path) as tmp:
            tmp.write_bytes(data)
    if markdown_path:
        with atomic_output_file(markdown_path) as tmp:
            tmp.write_text(to_markdown(report))
    if plot_path:
        with atomic_output_file(plot_path) as tmp:
            write_plot(report, tmp)
    return hashlib.sha256(data).hexdigest()


def append_to_provenance(folder: Path, report, report_sha256: str) -> bool:
    """Record the verdict in the INT4 folder's provenance (False if it has none).

    The entry keeps the check table and the per-layer cosine curve, so that a reader of
    the folder alone (the studio's trust panel) can show the verdict's table and plot.

    The one owner of the record: ``validate_awq_quality`` calls it, so the Python API and
    the CLI write the same entry. The file is replaced atomically.
    """
    if not provenance.Provenance.exists(folder):
        return False
    provenance.Provenance.read(folder).append("validations", {
        "verdict": "pass" if report.passed else "fail",
        "failed": report.failed,
        "skipped": report.skipped,
        "strict": report.strict,
        "checks": {c.name: c.status for c in report.checks},
        "table": [[c.name, _fmt(c.value), f"{c.op} {_fmt(c.bound)}", c.status]
                  for c in report.checks],
        "layer_cosine": [float(v) for v in
                         report.metrics.get("teacher_forced", {}).get("layer_cosine", [])],
        "backend": (report.metrics.get("runtime") or {}).get("backend"),
        "device": (report.metrics.get("runtime") or {}).get("device"),
        "reference": report.reference,
        "report_sha256": report_sha256,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    return True
