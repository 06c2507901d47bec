"""What ``gpu_acceptance.py --resume`` keeps of an earlier call: a device call is dear (a
bare machine, minutes of a 15-minute budget), so a second call measures only what the first
did not finish, and never mixes in a result from before a fix (``--rerun``)."""

from __future__ import annotations

from acceptance_stages import GRAPHED

STAGES = ("env", "gpu_tests", "build", "speak", "decode", "quantize", "validate")
#: The backend ``speak`` also runs with ``offload_embeddings`` (``NAME+offload``).
OFFLOADED = "int4pack"


def keeps(args, stage: str, results: dict, previous: dict) -> bool:
    """Whether this call keeps ``stage``'s result from ``previous`` (``results``: this
    call's so far): never ``env``, which names the machine; a stage that is :func:`complete`;
    and ``build`` when no later stage needs its checkpoints (:func:`all_kept_after`)."""
    if stage == "env":
        return False
    return complete(args, stage, previous.get(stage)) or (
        stage == "build" and "build" in previous and all_kept_after(args, results, previous))


def complete(args, stage: str, row, model: str | None = None) -> bool:
    """Whether ``--resume`` keeps a stage's earlier result: it ran to the end without an error
    (``gpu_tests``: every test passed; ``speak`` is resumed model by model, ``speak_one``
    for ``model``, on CUDA with the 30 s graphed peak where that model is graphed;
    ``quantize``: quantized to the end twice, for the fit, whatever became of the rollout
    step costs after it; ``decode``: its table has the paired stock-ops and fused-siblings
    lines), and ``build``'s checkpoints are still on disk (a fresh machine builds them again);
    never a stage (or ``speak:MODEL``) that ``--rerun`` names."""
    if stage in getattr(args, "rerun", ()):
        return False
    if stage == "quantize" and isinstance(row, dict):
        # quantized twice to the end, for the fit; only the rollout step costs may be cut
        return {"wall_s", "fit"} <= set(row) and "error" not in row \
            and "error" not in (row["fit"] or {})
    if not isinstance(row, dict) or not row or {"error", "skipped", "cut"} & set(row):
        return False
    if stage == "speak":
        return False
    if stage == "gpu_tests":
        return row.get("exit_code") == 0
    if stage == "build":
        return all((args.work / name / "config.json").is_file() for name in ("bf16", "int4-rtn"))
    if stage == "decode":       # a table from before the paired lines (ops, fusion): again
        return "ops_speedup" in (row.get("predictor_loop") or {}) and bool(row.get("fusion"))
    if stage == "speak_one" and args.device.startswith("cuda") and model in GRAPHED:
        return "peak_gib" in (row.get("graphs") or {})   # a row from before the 30 s peak
    return True


def kept_steps(previous: dict, stage: str) -> dict | None:
    """The calibration rollout step costs of an earlier ``quantize`` (about 25 s on the
    H200), kept when that stage runs again for its fit or its quantize figures."""
    steps = (previous.get(stage) or {}).get("rollout_steps") if stage == "quantize" else None
    if not isinstance(steps, dict) or "error" in steps:
        return None
    return {**steps, "resumed": True}


def all_kept_after(args, results: dict, previous: dict) -> bool:
    """Whether every stage after ``build`` that is not ``--skip``ped (one at least) keeps
    its earlier result, so nothing needs the checkpoints: a second call on a fresh machine
    that reruns only ``gpu_tests`` then spends nothing on building them again."""
    later = [s for s in STAGES[STAGES.index("build") + 1:] if s not in args.skip]
    if not later:
        return False
    names, kept = speakers(args, results, previous.get("speak") or {})
    return all(len(kept) == len(names) if s == "speak" else complete(args, s, previous.get(s))
               for s in later)


def speakers(args, results: dict, earlier: dict) -> tuple[list[str], dict]:
    """Who speaks (``--models``, or bf16 and every backend ``env`` found), and the rows of
    those an earlier call measured to the end."""
    backends = results.get("env", {}).get("backends") or []
    offloaded = [f"{OFFLOADED}+offload"] if OFFLOADED in backends else []
    names = [n for n in ["bf16", *backends, *offloaded] if not args.models or n in args.models]
    kept = {n: {**earlier[n], "resumed": True} for n in names
            if not {"speak", f"speak:{n}"} & set(getattr(args, "rerun", ()))
            and complete(args, "speak_one", earlier.get(n), n)}
    return names, kept
