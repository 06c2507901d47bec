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


def friendly(func):
    """Turn a ``UsageError`` into one ``error: ...`` line on stderr and its exit code."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UsageError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper


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
