"""Shared pieces of the CLI: the error-to-exit-code wrapper and option help."""

from __future__ import annotations

import functools
import sys

import click

from ..errors import UsageError

DEVICE_HELP = "auto (CUDA when available, else cpu), cpu, cuda or cuda:N."
BACKEND_HELP = ("INT4 kernel: auto, avx2 (this project's, x86 CPUs, built once on first use), "
                "int4pack (torch's, CPU and CUDA), awq-triton (AutoAWQ's, CUDA) or dequant "
                "(exact reference, slow).")
#: Seeds feed torch and numpy generators; numpy takes 0 .. 2**32 - 1 only.
SEED = click.IntRange(0, 2**32 - 1)


#: What each command can do when the GPU runs out of memory (by command function name).
OOM_HINTS = {
    "synthesize": "--offload-embeddings keeps the 0.58 GiB text embedding in host memory; "
                  "an INT4 checkpoint needs about half of bf16's memory",
    "quantize": "--offload-activations keeps the calibration activations in host memory; "
                "a smaller --batch-size shrinks the rollouts",
    "validate": "the bf16 reference shares the GPU with the INT4 model: --reference-device "
                "cpu runs it on the CPU (slower), or validate on a larger GPU",
}
#: Exit status of a run the GPU's memory could not hold (not a usage error).
OOM_EXIT = 3


def friendly(func):
    """Turn a ``UsageError`` into one ``error: ...`` line on stderr and its exit code, and
    CUDA's out-of-memory into one line that says what the GPU lacked and what the command
    can do about it (:data:`OOM_HINTS`), exit :data:`OOM_EXIT`."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except Exception as exc:
            if not is_cuda_oom(exc):
                raise
            click.echo(f"error: {oom_line(exc, func.__name__)}", err=True)
            sys.exit(OOM_EXIT)

    return wrapper


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is torch's CUDA out-of-memory error (torch is never imported for it:
    if torch is not loaded, nothing raised it)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


def oom_line(exc: BaseException, command: str) -> str:
    """torch's first three sentences (what was asked for, what the GPU had) and the command's
    way out."""
    said = " ".join(str(exc).split())
    sentences = said.split(". ")
    what = ". ".join(sentences[:3]).rstrip(".") if sentences else "CUDA out of memory"
    hint = OOM_HINTS.get(command, "close other programs that use the GPU, or use --device cpu")
    return f"the GPU ran out of memory ({what}); {hint}"


def stop_cleanly_on_termination() -> None:
    """SIGTERM and SIGHUP (``kill``, ``timeout``, ``docker stop``, a closed terminal) unwind
    like Ctrl-C: the run's ``.partial`` output and its lock are removed on the way out,
    where the default action would end the process at once and leave them for the next
    run to clear. Exit status 128 + the signal, as the default action reports it."""
    import signal
    import threading

    def stop(signum, _frame):
        click.echo(f"\nawq-tts: stopped by {signal.Signals(signum).name}; unfinished outputs "
                   f"removed", err=True)
        sys.exit(128 + signum)

    if threading.current_thread() is threading.main_thread():   # where Python allows it
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, stop)
