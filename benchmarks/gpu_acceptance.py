"""The GPU acceptance run: the 6 GB promise measured on one GPU, in one command.

Stages (each in its own process, so one stage's failure or memory peak cannot spoil the
next; results are merged into ``DIR/gpu_acceptance.json`` and ``DIR/gpu_acceptance.md``
after every stage, so a run cut short still leaves what it measured):

1. ``env``       the device, torch, CUDA capability, the packages that matter;
2. ``gpu_tests`` ``pytest -m gpu``;
3. ``build``     the full-shape random 1.7B VoiceDesign checkpoint (``--tiny``: the tiny one);
4. ``speak``     bf16 and INT4 (the RTN-packed twin ``build`` writes: same bytes and speed as
                 AWQ) with every backend the device has, each in a fresh process under the
                 memory cap: peak memory of the load and of generating about 30 s of audio
                 (random weights never stop; the frames are capped), RTF;
5. ``decode``    the runtime issue's table: each talker linear shape, one talker step and
                 one codec frame at batch 1, bf16 against every INT4 backend but
                 ``dequant``, resident together, interleaved rounds (``decode.py``);
6. ``quantize``  ``awq_tts.quantize`` on the device with a reduced but real calibration
                 (16 prompts × 256 tokens) under the cap: wall time split into calibration
                 and walk, seconds per layer, peak memory, and the time extrapolated to the
                 default 128 × 512 by the token ratio; then one calibration rollout step's
                 cost at batch 8, eager (``dropping``) against CUDA graphs
                 (``rollout_speed.py``);
7. ``validate``  ``validate_awq_quality`` of that INT4 output against its source, a few
                 prompts, tokens capped (random weights: the verdict is reported, not judged).

The cap is ``torch.cuda.set_per_process_memory_fraction`` (``--cap-gib``, default 6). On the
CPU (``--device cpu``, with ``--tiny`` the dry run a test runs) memory is the peak RSS
increase of the stage's process over its baseline after imports.

Usage: python benchmarks/gpu_acceptance.py --out DIR [--device auto] [--tiny] [--skip STAGE]
       [--resume EARLIER.json]   (a second call: keep what the first completed)
       [--rerun STAGE,speak:MODEL,...]   (with --resume: run these again all the same)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from acceptance_resume import (  # sibling script modules
    OFFLOADED,
    STAGES,
    keeps,
    kept_steps,
    speakers,
)
from acceptance_stages import STAGE_FUNCTIONS
from acceptance_table import table
from timing import results_in

#: Seconds each stage may take on the GPU machine (the whole run: about 8 minutes).
BUDGET = {"env": 60, "gpu_tests": 150, "build": 120, "speak": 240, "decode": 90,
          "quantize": 300, "validate": 150}
ROOT = Path(__file__).resolve().parent.parent

# ---- orchestration -----------------------------------------------------------------------

def _in_process(args, stage: str, model: str | None) -> dict:
    """The stage in this process (``--in-process``: a quick dry run; no isolation)."""
    import argparse as _argparse

    start = time.perf_counter()
    stage_args = _argparse.Namespace(**{**vars(args), "model": model})
    try:
        result = STAGE_FUNCTIONS[stage](stage_args)
    except Exception as exc:  # a stage's failure is a result, as in a child process
        return {"error": f"{type(exc).__name__}: {exc}"}
    result["stage_s"] = time.perf_counter() - start
    return result


def _child(args, stage: str, extra: list[str], timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--stage", stage, "--out", str(args.out),
           "--device", args.device, "--cap-gib", str(args.cap_gib), "--work", str(args.work),
           "--frames", str(args.frames), "--speech-frames", str(args.speech_frames),
           "--n-samples", str(args.n_samples),
           "--max-seq-len", str(args.max_seq_len), "--validate-tokens",
           str(args.validate_tokens), *(["--tiny"] if args.tiny else []), *extra]
    start = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout or b""
        found = results_in(stdout.decode(errors="replace") if isinstance(stdout, bytes)
                         else stdout)
        cut = f"timed out after {timeout} s"
        return ({**found[-1], "stage_s": time.perf_counter() - start,
                 "cut": f"{cut}; this is what it had measured"} if found else {"error": cut})
    found = results_in(run.stdout)
    tail = " | ".join((run.stderr or run.stdout).strip().splitlines()[-3:])
    if run.returncode:      # the whole traceback, so one device call is enough to diagnose
        log = Path(args.out, "-".join([stage, *extra[1:]]) + ".stderr.txt")
        log.write_text(run.stderr)
        tail += f" (whole stderr: {log.name})"
    if not found:
        return {"error": tail, "exit_code": run.returncode}
    result = {**found[-1], "stage_s": time.perf_counter() - start}
    if run.returncode:
        result["cut"] = f"exit code {run.returncode} after this partial result: {tail}"
    return result


def orchestrate(args) -> dict:
    """Run the stages in order within ``--deadline`` seconds (the device tool allows 600 per
    call): each child gets at most its budget and what is left; a stage that cannot start
    with at least 20 s left is recorded as skipped for time. With ``--resume FILE`` (an
    earlier run's JSON) the stages it completed are kept and only the rest run; ``env``
    always runs, and an earlier run on another GPU is discarded."""
    args.out.mkdir(parents=True, exist_ok=True)
    end = time.monotonic() + args.deadline
    resume = getattr(args, "resume", None)
    previous = json.loads(resume.read_text()) if resume else {}
    results: dict = {"device": args.device, "cap_gib": args.cap_gib, "tiny": args.tiny,
                     "deadline_s": args.deadline,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                     **({"resumed_from": str(resume)} if resume else {})}
    for stage in STAGES:
        left = int(end - time.monotonic()) - 10
        if stage in args.skip:
            results[stage] = {"skipped": "--skip"}
            continue
        if keeps(args, stage, results, previous):
            results[stage] = {**previous[stage], "resumed": True}
            write(args.out, results)
            continue
        if left < 20:
            results[stage] = {"skipped": f"out of time (--deadline {args.deadline} s)"}
            write(args.out, results)
            continue
        budget = min(int(BUDGET[stage] * (1 if not args.tiny else 1.5)), left)
        if stage == "speak":
            results[stage] = _speak(args, results, previous.get("speak") or {}, budget)
        elif args.in_process:
            results[stage] = _in_process(args, stage, None)
        else:
            kept = kept_steps(previous, stage)
            results[stage] = _child(args, stage, ["--no-rollout-steps"] if kept else [], budget)
            if kept and "rollout_steps" not in results[stage]:
                results[stage]["rollout_steps"] = kept
        earlier_gpu = previous.get("env", {}).get("gpu")
        if stage == "env" and previous and earlier_gpu != results["env"].get("gpu"):
            # never mix two machines' figures in one report
            results["resume_discarded"] = f"the earlier run was on {earlier_gpu or 'a CPU'}"
            previous = {}
        print(f"{stage}: {json.dumps(results[stage])[:400]}", flush=True)
        write(args.out, results)
    return results


def _speak(args, results: dict, earlier: dict, budget: int) -> dict:
    """Every model that speaks, each in its own process with an equal share of ``budget``;
    a model an earlier call measured to the end is kept (``resumed``)."""
    names, kept = speakers(args, results, earlier)
    share = max(20, budget // max(len(names) - len(kept), 1))
    return {name: kept.get(name) or (
        _in_process(args, "speak_one", name) if args.in_process
        else _child(args, "speak_one", ["--model", name], share)) for name in names}


def write(out: Path, results: dict) -> None:
    (out / "gpu_acceptance.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gpu_acceptance.md").write_text(table(results) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="the tiny model (dry run)")
    parser.add_argument("--cap-gib", type=float, default=6.0)
    parser.add_argument("--work", type=Path, default=None,
                        help="where checkpoints go, never under OUT (default: "
                             "benchmarks/work/acceptance)")
    parser.add_argument("--frames", type=int, default=None,
                        help="eager speech frames (12.5 a second; default 100: eager "
                             "speech on the H200 ran 4 frames a second, and the 30 s peak "
                             "comes from the CUDA-graph run, --speech-frames)")
    parser.add_argument("--speech-frames", type=int, default=None,
                        help="frames of the CUDA-graph speech run, which measures the peak "
                             "of about 30 s of speech (default 375)")
    parser.add_argument("--n-samples", type=int, default=None)
    parser.add_argument("--max-seq-len", type=int, default=None)
    parser.add_argument("--validate-tokens", type=int, default=None)
    parser.add_argument("--models", type=lambda v: v.split(","), default=None,
                        help="speak only these (comma-separated: bf16,int4pack,...); "
                             "default bf16 and every INT4 backend the device has")
    parser.add_argument("--skip", action="append", default=[], choices=STAGES)
    parser.add_argument("--deadline", type=int, default=540,
                        help="seconds for the whole run (the device tool allows 600 a call)")
    parser.add_argument("--resume", type=Path, default=None,
                        help="an earlier run's gpu_acceptance.json: keep the stages it "
                             "completed, run the rest (a second device call)")
    parser.add_argument("--rerun", type=lambda v: v.split(","), default=[],
                        help="with --resume: run these again though the earlier call "
                             "completed them (comma-separated stages; speak:MODEL for one "
                             "model's speech, speak for every model's)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the stages in this process (a quick dry run, no isolation)")
    parser.add_argument("--no-rollout-steps", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from awq_tts.devices import resolve_device

    args.device = resolve_device(args.device)
    args.work = args.work or ROOT / "benchmarks" / "work" / "acceptance"
    defaults = dict(frames=(24, 100), speech_frames=(30, 375), n_samples=(4, 16),
                    max_seq_len=(32, 256),
                    validate_tokens=(24, 48))
    for name, (tiny, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    if args.stage:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print("RESULT" + json.dumps(STAGE_FUNCTIONS[args.stage](args)), flush=True)
        return
    if args.models:
        from awq_tts.runtime.backends import BACKENDS

        known = ["bf16", *BACKENDS, f"{OFFLOADED}+offload"]
        unknown = [name for name in args.models if name not in known]
        if unknown:
            parser.error(f"--models: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(known)}")
    wrong = [name for name in args.rerun
             if name not in STAGES and name.partition(":")[0] != "speak"]
    if wrong:
        parser.error(f"--rerun: unknown {', '.join(wrong)}; choose from {', '.join(STAGES)} "
                     f"or speak:MODEL")
    if args.resume is not None:
        try:
            json.loads(args.resume.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"--resume {args.resume}: not an earlier run's JSON ({exc})")
    results = orchestrate(args)
    print(table(results))


if __name__ == "__main__":
    main()
