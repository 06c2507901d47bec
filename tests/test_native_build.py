"""The AVX2 kernel's build: once per machine, safe against concurrent and killed runs, and a
clear fallback to torch's kernel where it cannot be built."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import time

import pytest
from conftest import CPU_BACKEND

from awq_tts.errors import UsageError
from awq_tts.runtime import Int4Linear, available_backends

PROBE = """
import logging, sys
import torch
logging.basicConfig(level=logging.INFO)
from awq_tts.runtime import Int4Linear, available_backends
from awq_tts.runtime.backends import BACKENDS
print("ready", file=sys.stderr, flush=True)
print(available_backends("cpu"), BACKENDS["avx2"].unavailable(torch.device("cpu")))
"""


def _probe(kernel_dir, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PROBE], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "AWQ_TTS_KERNEL_DIR": str(kernel_dir), **env})


@pytest.mark.parametrize("env, reason", [
    ({"CC": "/nowhere/cc"}, "no C compiler (/nowhere/cc) on PATH to build awq_gemm_avx2.c"),
    ({"AWQ_TTS_NATIVE": "0"}, "the project's C kernels are off (AWQ_TTS_NATIVE=0)"),
    ({"CC": "false"}, "building awq_gemm_avx2.c with false failed: exit status 1, no message"),
], ids=["no-compiler", "switched-off", "silent-failure"])
def test_without_the_kernel_auto_falls_back_to_int4pack_and_says_why(tmp_path, monkeypatch,
                                                                     env, reason):
    from awq_tts.runtime.backends import avx2, get_backend, native

    for key, value in {"AWQ_TTS_KERNEL_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(key, value)
    # what this process would have found, had it started with that environment
    found = native.load_kernel.__wrapped__("awq_gemm_avx2")
    assert found == (None, reason) and not list(tmp_path.glob("*.so"))
    monkeypatch.setattr(avx2, "_kernel", lambda: found)
    assert available_backends("cpu") == ["int4pack", "dequant"]
    assert get_backend("auto", "cpu").name == "int4pack"
    for ask in (lambda: get_backend("avx2", "cpu"),
                lambda: Int4Linear(256, 64).use_backend(avx2.Avx2())):
        with pytest.raises(UsageError, match=re.escape(f"backend 'avx2' cannot run on cpu: "
                                                       f"{reason}")):
            ask()


def test_a_kernel_folder_that_cannot_be_made_is_a_reason_not_a_crash(tmp_path, monkeypatch,
                                                                    caplog):
    from awq_tts.runtime.backends import native

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("AWQ_TTS_KERNEL_DIR", str(tmp_path / "file" / "kernels"))
    library, reason = native.load_kernel.__wrapped__("awq_gemm_avx2")
    assert library is None and reason.startswith("could not build or load awq_gemm_avx2.c: ")
    assert reason.endswith(f"(kernel folder {tmp_path}/file/kernels; set AWQ_TTS_KERNEL_DIR "
                           "to a writable folder)")
    assert f"{reason}; torch's kernels run instead" in caplog.text


@pytest.mark.skipif(CPU_BACKEND != "avx2", reason="the avx2 kernel does not run here")
def test_two_runs_at_once_build_once_and_a_killed_builds_debris_goes(tmp_path):
    from awq_tts.runtime.backends.native import SOURCES, library_name

    name = library_name(SOURCES / "awq_gemm_avx2.c")
    debris = tmp_path / f".{name}.k1ll3d"
    debris.write_bytes(b"\x7fELF half a library")
    with open(tmp_path / ".build.lock", "w") as lock:     # both runs queue behind this
        fcntl.flock(lock, fcntl.LOCK_EX)
        runs = [_probe(tmp_path), _probe(tmp_path)]
        for run in runs:
            while run.stderr.readline().strip() != "ready":
                assert run.poll() is None, run.communicate()
        time.sleep(0.5)
        fcntl.flock(lock, fcntl.LOCK_UN)
    outputs = [run.communicate(timeout=300) for run in runs]
    for out, err in outputs:
        assert out.strip() == "['avx2', 'int4pack', 'dequant'] None", err
    assert sum("building awq_gemm_avx2.c" in err for _, err in outputs) == 1
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".build")] == [name]


def test_a_changed_header_names_a_new_library(tmp_path):
    """Kernels include csrc/*.h: editing one must not load a library built before."""
    from awq_tts.runtime.backends.native import SOURCES, library_name

    source = tmp_path / "kernel.c"
    source.write_bytes((SOURCES / "gemv_bf16_avx2.c").read_bytes())
    (tmp_path / "bf16.h").write_bytes((SOURCES / "bf16.h").read_bytes())
    before = library_name(source)
    (tmp_path / "bf16.h").write_text("/* edited */\n", encoding="utf-8")
    assert library_name(source) != before and library_name(source).startswith("kernel-")
