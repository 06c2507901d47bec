"""What one calibration rollout step costs, by rollout mode, on the model ``quantize`` rolls
out: the GPU run's ``quantize`` stage measures it after quantizing.

Each mode rolls the same prompts out twice, for ``frames`` and ``2 × frames`` steps (random
weights never stop, so every row runs to the cap), and the step cost is the difference over
``frames``: the prefill and the graphs' captures, the same in both runs, cancel out. A
shortest rollout of each mode (``MIN_SEQ_LEN`` steps) runs first, untimed: the first CUDA
run of a process pays the library handles and kernel choices (the first H200 run timed
``dropping`` at 7.5 s for 24 steps and 7.1 s for 48, a negative step). Each wall is the best
of ``repeats`` runs (two on a CPU, whose load comes and goes; one on CUDA, where every run
repeats its captures); a difference the timer's noise swamps (not above zero, as on a tiny
model on a busy CPU) is reported as ``step_s: None``, never as a cost. The modes are the
CPU's (``dropping``, eager) and, on CUDA, ``graphs`` (elsewhere its eager twin ``static``,
so the CPU dry run walks the same code). ``with_fallback`` runs the stage's quantize with
``auto`` and, should that raise, again with ``dropping``.
"""

from __future__ import annotations

from timing import wall


def step_costs(source, device: str, prompts: int, frames: int, batch: int,
               repeats: int | None = None) -> dict:
    """``{mode: {"step_s": ..., "walls_s": [short, long]}, "speed_up": dropping / graphs}``
    for ``prompts`` built-in prompts rolled out at ``batch`` rows."""
    from awq_tts.calibration.builder import MIN_SEQ_LEN
    from awq_tts.runtime import load

    tts = load(source, device=device)
    repeats = repeats or (1 if device.startswith("cuda") else 2)
    modes = ("dropping", "graphs" if device.startswith("cuda") else "static")
    out: dict = {"prompts": prompts, "batch": batch, "frames": [frames, 2 * frames]}
    for mode in modes:
        _rollout_wall(tts, device, mode, prompts, MIN_SEQ_LEN, batch)     # warm-up, untimed
        walls = [min(_rollout_wall(tts, device, mode, prompts, length, batch)
                     for _ in range(repeats)) for length in (frames, 2 * frames)]
        step = (walls[1] - walls[0]) / (frames * -(-prompts // batch))
        out[mode] = {"walls_s": walls, "step_s": step if step > 0 else None}
    slow, fast = out["dropping"]["step_s"], out[modes[1]]["step_s"]
    out["speed_up"] = slow / fast if slow and fast else None
    return out


def _rollout_wall(tts, device: str, mode: str, prompts: int, length: int, batch: int) -> float:
    """Seconds for one calibration rollout of ``prompts`` built-in prompts to ``length`` steps."""
    from awq_tts.calibration import build_calibration, builtin_prompts

    return wall(lambda: build_calibration(tts, builtin_prompts()[:prompts], n_samples=prompts,
                                          max_seq_len=length, batch_size=batch,
                                          progress=False, rollout=mode), device)


def with_fallback(run):
    """``run("auto")``, or, if that raises (a graphed rollout the GPU run has not yet seen
    work), ``run("dropping")``: the walk's figures still come back, with the error."""
    import gc

    try:
        return run("auto"), None
    except Exception as exc:  # noqa: BLE001 (reported in the result, then the eager rollout)
        error = f"--rollout auto failed ({type(exc).__name__}: {exc}); rolled out with dropping"
    gc.collect()      # outside the handler: its traceback no longer holds the first attempt
    return run("dropping"), error
