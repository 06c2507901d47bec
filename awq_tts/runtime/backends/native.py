"""Build and load the project's C++ kernels once per machine, never in a broken state.

A kernel source in ``csrc/`` is compiled with the machine's C++ compiler against the
installed torch's headers (no ninja, no ``torch.utils.cpp_extension``, about 15 s on two
cores) into a shared library named by the hash of the source, torch's version and the
flags, under ``$AWQ_TTS_KERNEL_DIR`` (default ``~/.cache/awq_tts/kernels``). Later runs
load that file directly.

* **Concurrent runs** wait on an ``flock`` (released by the kernel if a run is killed, so a
  crash never leaves a lock behind) and the second one loads what the first built.
* **Killed builds** write into a private temporary name and ``os.replace`` the library into
  place only when the compiler succeeded, so a half-written library is never loaded.
* **Off switch:** ``AWQ_TTS_NATIVE=0`` makes every such kernel unavailable (nothing is
  built; ``auto`` takes torch's kernels).
* **No compiler, or a failed build**, is not an error here: :func:`load_kernel` returns the
  reason, and the backend that needs the kernel says it is unavailable with that reason.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

log = logging.getLogger("awq_tts")

SOURCES = Path(__file__).parent / "csrc"
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-DNDEBUG")


def kernel_dir() -> Path:
    """Where built kernels are kept (``$AWQ_TTS_KERNEL_DIR`` or ``~/.cache/awq_tts/kernels``)."""
    env = os.environ.get("AWQ_TTS_KERNEL_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "awq_tts" / "kernels"


def _command(source: Path, target: Path, compiler: str) -> list[str]:
    root = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [compiler, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
            "-isystem", str(root / "include"),
            "-isystem", str(root / "include" / "torch" / "csrc" / "api" / "include"),
            "-isystem", sysconfig.get_paths()["include"],
            str(source), "-o", str(target),
            f"-L{root / 'lib'}", "-lc10", "-ltorch_cpu", "-ltorch", f"-Wl,-rpath,{root / 'lib'}"]


def _library_name(source: Path) -> str:
    digest = hashlib.sha256(source.read_bytes())
    digest.update(f"{torch.__version__}|{sys.version_info[:2]}|{FLAGS}".encode())
    return f"{source.stem}-{digest.hexdigest()[:16]}.so"


def _build(source: Path, target: Path) -> str | None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) on PATH to build {source.name}"
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return None
        for debris in target.parent.glob(f".{target.name}.*"):   # a killed build's
            debris.unlink(missing_ok=True)
        log.info("awq-tts: building %s once for this machine (about 15 s)", source.name)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            done = subprocess.run(_command(source, Path(tmp), compiler), capture_output=True,
                                  text=True)
            if done.returncode != 0:
                first = next((line for line in done.stderr.splitlines() if "error" in line),
                             done.stderr.strip()[-200:])
                return f"building {source.name} failed: {first.strip()}"
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return None


@functools.cache
def load_kernel(name: str) -> str | None:
    """Build (once per machine) and load ``csrc/NAME.cpp``; the reason it cannot, or ``None``."""
    if os.environ.get("AWQ_TTS_NATIVE") == "0":
        return "the project's C++ kernels are off (AWQ_TTS_NATIVE=0)"
    if sys.platform != "linux":
        return "the project's C++ kernels are built on Linux only"
    source = SOURCES / f"{name}.cpp"
    target = kernel_dir() / _library_name(source)
    try:
        if not target.exists():
            reason = _build(source, target)
            if reason is not None:
                return reason
        torch.ops.load_library(str(target))
    except OSError as exc:
        return f"could not build or load {source.name}: {exc}"
    return None
