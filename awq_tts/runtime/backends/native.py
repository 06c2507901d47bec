"""Build and load the project's C kernels once per machine, never in a broken state.

A kernel source in ``csrc/`` is plain C with OpenMP and no torch headers, so it builds in
about a second with the machine's C compiler (``$CC``, default ``cc``) and does not depend
on torch's C++ ABI. The shared library is named by the hash of the source and the flags,
under ``$AWQ_TTS_KERNEL_DIR`` (default ``~/.cache/awq_tts/kernels``); later runs load that
file directly, through ctypes. Its OpenMP runtime is the ``libgomp`` torch has already
loaded, so it shares torch's threads.

* **Concurrent runs** wait on an ``flock`` (released by the kernel if a run is killed, so a
  crash never leaves a lock behind) and the second one loads what the first built.
* **Killed builds** write into a private temporary name and ``os.replace`` the library into
  place only when the compiler succeeded, so a half-written library is never loaded; the
  next build removes a killed one's leftovers.
* **Off switch:** ``AWQ_TTS_NATIVE=0`` makes every such kernel unavailable (nothing is
  built; ``auto`` takes torch's kernels).
* **No compiler, a failed build or a CPU without AVX2** (every kernel is built with
  ``FLAGS``) is not an error here: :func:`load_kernel` returns the reason, and whatever
  needs the kernel says it is unavailable with that reason. :func:`kernel_function` hands
  out one function of a library with its ctypes signature set.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("awq_tts")

SOURCES = Path(__file__).parent / "csrc"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", "-std=gnu11", "-DNDEBUG")


def kernel_dir() -> Path:
    """Where built kernels are kept (``$AWQ_TTS_KERNEL_DIR`` or ``~/.cache/awq_tts/kernels``)."""
    env = os.environ.get("AWQ_TTS_KERNEL_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "awq_tts" / "kernels"


def library_name(source: Path) -> str:
    """The built library's file name: the source's stem and a hash of what it is built from
    (the source, every header beside it, the flags and the machine type)."""
    digest = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):
        digest.update(header.read_bytes())
    digest.update(f"{platform.machine()}|{FLAGS}".encode())
    return f"{source.stem}-{digest.hexdigest()[:16]}.so"


def _build(source: Path, target: Path) -> str | None:
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}) on PATH to build {source.name}"
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return None
        for debris in target.parent.glob(f".{target.name}.*"):   # a killed build's
            debris.unlink(missing_ok=True)
        log.info("awq-tts: building %s once for this machine", source.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run([compiler, *FLAGS, str(source), "-o", tmp, "-lm"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                first = next((line for line in done.stderr.splitlines() if "error" in line),
                             done.stderr.strip()[-200:]).strip()
                return (f"building {source.name} with {compiler} failed: "
                        f"{first or f'exit status {done.returncode}, no message'}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


@functools.cache
def load_kernel(name: str) -> tuple[ctypes.CDLL | None, str | None]:
    """``csrc/NAME.c`` built (once per machine) and loaded: ``(library, None)``, or
    ``(None, why it cannot be)``."""
    if os.environ.get("AWQ_TTS_NATIVE") == "0":
        return None, "the project's C kernels are off (AWQ_TTS_NATIVE=0)"
    if sys.platform != "linux":
        return None, "the project's C kernels are built on Linux only"
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):           # every kernel is built with FLAGS
        return None, f"this CPU has no AVX2 (torch reports {capability})"
    source = SOURCES / f"{name}.c"
    try:
        target = kernel_dir() / library_name(source)
        if not target.exists():
            reason = _build(source, target)
            if reason is not None:
                return _unavailable(reason)
        return ctypes.CDLL(str(target)), None
    except OSError as exc:
        where = ("" if exc.errno is None else   # errno: the folder; none: dlopen's refusal
                 f" (kernel folder {kernel_dir()}; set AWQ_TTS_KERNEL_DIR to a writable folder)")
        return _unavailable(f"could not build or load {source.name}: {exc}{where}")


@functools.cache
def kernel_function(name: str, symbol: str, argtypes: tuple, restype: type | None):
    """``symbol`` of ``csrc/NAME.c`` (:func:`load_kernel`) with its ctypes signature set:
    ``(function, None)``, or ``(None, why the kernel cannot run)``."""
    library, reason = load_kernel(name)
    if library is None:
        return None, reason
    function = getattr(library, symbol)
    function.argtypes, function.restype = argtypes, restype
    return function, None


def _unavailable(reason: str) -> tuple[None, str]:
    log.warning("awq-tts: %s; torch's kernels run instead (slower on a CPU)", reason)
    return None, reason
