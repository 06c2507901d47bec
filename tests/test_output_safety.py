"""Nothing lost, nothing half-written: outputs are placed, locked, swapped and cleaned up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import refused

from awq_tts.cli import main
from awq_tts.errors import UsageError
from awq_tts.output import atomic_output_dir, output_lock


def test_output_inside_an_input_isrefused(tiny_base, tiny_llm, tmp_path):
    src = tmp_path / "tinyin"
    shutil.copytree(tiny_base, src)
    before = sorted(p.name for p in src.iterdir())
    refused(CliRunner().invoke(main, ["quantize", str(src), "-o", str(src / "q")]),
             "lies inside the input")
    refused(CliRunner().invoke(main, ["blend", str(src), str(tiny_llm), "-o",
                                       str(tiny_llm / "sub")]), "lies inside the input")
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_base, broken)
    shutil.rmtree(broken / "speech_tokenizer")
    refused(CliRunner().invoke(main, ["repair", str(broken), "--speech-tokenizer-from",
                                       str(src), "-o", str(broken / "fixed")]),
             "lies inside the input")
    assert sorted(p.name for p in src.iterdir()) == before
    assert not (tiny_llm / "sub").exists() and not (broken / "fixed").exists()


def test_a_second_run_on_the_same_output_fails_at_once(tiny_base, tmp_path):
    out = tmp_path / "conc"
    with output_lock(out):
        start = time.perf_counter()
        result = CliRunner().invoke(main, ["quantize", str(tiny_base), "-o", str(out)])
        assert time.perf_counter() - start < 30
    refused(result, "another awq-tts run is writing")
    assert not out.exists()


def test_an_output_that_appears_meanwhile_is_never_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="appeared while this run was working") as info:
        with atomic_output_dir(out) as tmp:
            (tmp / "result").write_text("mine")
            out.mkdir()
            (out / "theirs").write_text("theirs")
    assert (out / "theirs").read_text() == "theirs"
    kept = str(info.value).rsplit(" ", 1)[-1]
    assert (tmp_path / kept.split("/")[-1] / "result").read_text() == "mine"


def test_force_onto_a_plain_file_leaves_no_debris(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file")
    with atomic_output_dir(out, force=True) as tmp:
        (tmp / "x").write_text("new")
    assert (out / "x").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_outputs_follow_the_umask(tiny_base, tmp_path):
    from awq_tts import quantize

    old = os.umask(0o022)
    try:
        out = tmp_path / "q"
        quantize(tiny_base, out, n_samples=2, max_seq_len=16, method="rtn", progress=False)
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_unwritable_places_fail_before_the_work(tiny_base, tiny_base_awq, tmp_path):
    refused(CliRunner().invoke(main, ["quantize", str(tiny_base), "-o",
                                       "/proc/awq-tts-test/q"]), "cannot create")
    folder = tmp_path / "a-folder.wav"
    folder.mkdir()
    refused(CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text", "Hi.", "-o",
                                       str(folder)]), "is a folder")
    refused(CliRunner().invoke(main, ["validate", str(tiny_base_awq), "--json",
                                       "/proc/awq-tts-test/r.json"]), "cannot create")


def test_not_enough_space_is_said_up_front(tiny_base, tmp_path, monkeypatch):
    import awq_tts.output as output

    monkeypatch.setattr(output.shutil, "disk_usage",
                        lambda _p: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    refused(CliRunner().invoke(main, ["quantize", str(tiny_base), "-o", str(tmp_path / "q")]),
             "not enough space")


def test_verdict_not_recordable_keeps_the_exit_code(tiny_trained, tiny_trained_awq, tmp_path,
                                                    monkeypatch):
    import awq_tts.validate.report as report
    from awq_tts.testing.tamper import code_predictor_ulp, planted

    def read_only(*_a, **_k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(report, "append_to_provenance", read_only)
    quant = planted(tiny_trained_awq, tmp_path / "q", code_predictor_ulp)
    result = CliRunner().invoke(main, ["validate", str(quant), "--reference",
                                       str(tiny_trained)])
    assert result.exit_code == 1, result.output
    assert "verdict was not recorded" in result.output and "Traceback" not in result.output


_KILLED_WRITER = """
import sys, time
from awq_tts.format import checkpoint
real = checkpoint.write_weights
def slow(files, dst, *a, **k):
    (dst / "model.safetensors").write_bytes(b"half")
    print("WRITING", flush=True)
    time.sleep(600)
checkpoint.write_weights = slow
from awq_tts import quantize
quantize(sys.argv[1], sys.argv[2], n_samples=2, max_seq_len=16, method="rtn", progress=False)
"""


def test_sigkill_during_the_write_then_a_rerun(tiny_base, tmp_path):
    from awq_tts import quantize

    out = tmp_path / "q"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tiny_base), str(out)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and list(tmp_path.glob(".q.*.partial"))
    quantize(tiny_base, out, n_samples=2, max_seq_len=16, method="rtn", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q"]
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0


_TERMINATED_CLI = _KILLED_WRITER.replace(
    "from awq_tts import quantize\nquantize(sys.argv[1], sys.argv[2], n_samples=2, max_seq_len=16, "
    "method=\"rtn\", progress=False)",
    "from awq_tts.cli import main\nmain(['quantize', sys.argv[1], '-o', sys.argv[2], "
    "'--n-samples', '2', '--max-seq-len', '16', '--method', 'rtn'])")


def test_a_terminated_cli_run_removes_its_partial_output_and_lock(tiny_base, tmp_path):
    assert "from awq_tts.cli import main" in _TERMINATED_CLI
    sig = signal.SIGTERM
    out = tmp_path / "q"
    proc = subprocess.Popen([sys.executable, "-c", _TERMINATED_CLI, str(tiny_base), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "WRITING"
    assert list(tmp_path.glob(".q.*.partial"))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig
    assert f"stopped by {sig.name}; unfinished outputs removed" in err
    assert not list(tmp_path.iterdir())


def test_a_closed_terminal_unwinds_like_kill(capsys):
    from awq_tts.cli.common import stop_cleanly_on_termination

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        stop_cleanly_on_termination()
        with pytest.raises(SystemExit) as stopped:
            signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        assert stopped.value.code == 128 + signal.SIGHUP
        assert "stopped by SIGHUP; unfinished outputs removed" in capsys.readouterr().err
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def test_provenance_names_the_source_by_absolute_path(tiny_base, tmp_path, monkeypatch):
    import json

    from awq_tts import quantize

    shutil.copytree(tiny_base, tmp_path / "tiny")
    monkeypatch.chdir(tmp_path)
    quantize("tiny", "q", n_samples=2, max_seq_len=16, method="rtn", progress=False)
    source = json.loads((tmp_path / "q" / "noesis_provenance.json").read_text())["source"]
    assert source["id_or_path"] == str((tmp_path / "tiny").resolve())
    assert source["given_as"] == "tiny"


def test_verify_expect_checks_the_published_record(tiny_base_awq, tmp_path):
    folder = tmp_path / "q"
    shutil.copytree(tiny_base_awq, folder)
    ok = CliRunner().invoke(main, ["verify", str(folder)])
    sha = ok.output.strip().splitlines()[-1].split()[-1]
    assert CliRunner().invoke(main, ["verify", str(folder), "--expect", sha]).exit_code == 0
    record = folder / "noesis_provenance.json"
    record.write_text(record.read_text().replace('"seed"', '"seed" ', 1))
    bad = CliRunner().invoke(main, ["verify", str(folder), "--expect", sha])
    assert bad.exit_code == 1 and "noesis_provenance.json" in bad.output
