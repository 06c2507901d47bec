"""How the validator's default bounds were chosen: clean outputs against planted defects.

On the trained tiny model (``make-tiny --trained``), validates with every check run
(``full=True``, no early exit) a clean AWQ output, an RTN output and each planted defect of
``awq_tts.testing.tamper``, and tabulates the values the bounded checks saw. A bound is
useful when it separates the clean rows from the defect rows; the table shows which
defects each dynamic check can see at all (most planted defects are far too small for
rollout metrics on a 2-layer model, which is why the static checks exist).

Usage: python benchmarks/validator_bounds.py [--work DIR] [--n-prompts 6]
Writes ``benchmarks/results/validator_bounds.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from awq_tts import quantize
from awq_tts.testing.tamper import DEFECTS, planted
from awq_tts.testing.trained import make_trained_checkpoint
from awq_tts.validate import validate_awq_quality

COLUMNS = ("kl_mean", "kl_p99", "top1", "eos_prob_ratio", "duration_ratio", "runaway_greedy",
           "weights_audit", "untouched_identical")
EXTRA = (("code_predictor_agreement", ("teacher_forced", "code_predictor_agreement")),
         ("log_mel_distance", ("audio", "log_mel_distance_mean")))


def row(report) -> dict:
    values = {c.name: (c.value, c.status) for c in report.checks}
    out = {name: values.get(name, (None, "n/a")) for name in COLUMNS}
    for name, (a, b) in EXTRA:
        out[name] = (report.metrics.get(a, {}).get(b), "reported")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work/bounds"))
    parser.add_argument("--n-prompts", type=int, default=6)
    parser.add_argument("--json", type=Path,
                        default=Path(__file__).parent / "results" / "validator_bounds.json")
    args = parser.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    source = make_trained_checkpoint(args.work / "trained", seed=0)
    awq, rtn = args.work / "awq", args.work / "rtn"
    quantize(source, awq, n_samples=16, max_seq_len=64, progress=False)
    quantize(source, rtn, n_samples=16, max_seq_len=64, method="rtn", progress=False)
    models = {"clean AWQ": awq, "RTN": rtn}
    for name, damage in DEFECTS.items():
        models[name] = planted(awq, args.work / name, damage, source=source)
    rows = {}
    for name, path in models.items():
        report = validate_awq_quality(path, reference=str(source), n_prompts=args.n_prompts,
                                      max_new_tokens=150, full=True, record=False,
                                      progress=False)
        rows[name] = row(report)
        print(name, rows[name], flush=True)
    names = [*COLUMNS, *(n for n, _ in EXTRA)]
    lines = ["| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for model, values in rows.items():
        cells = []
        for n in names:
            value, status = values[n]
            text = "–" if value is None else f"{value:.3g}"
            cells.append(f"**{text}**" if status == "fail" else text)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"rows": rows, "table_markdown": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
