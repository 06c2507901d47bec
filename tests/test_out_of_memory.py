"""The GPU running out of memory, the commonest failure on a 6 GB card: one line that says
what was asked for and what the command can do about it, exit 3, no traceback, and no
half-written output. The CPU tests raise torch's own error where the walk would; the `gpu`
test runs out of real memory."""

from __future__ import annotations

import click
import pytest
import torch
from click.testing import CliRunner
from conftest import FAST

from awq_tts.cli import main
from awq_tts.cli.common import OOM_EXIT, friendly

TORCH_SAYS = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
              "5.80 GiB of which 1.02 GiB is free. Including non-PyTorch memory, this process "
              "has 4.77 GiB memory in use. Of the allocated memory 4.50 GiB is allocated by "
              "PyTorch.")


def _one_line(result) -> str:
    assert result.exit_code == OOM_EXIT, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_quantize_out_of_gpu_memory_is_one_line_and_leaves_nothing(tiny_base, tmp_path,
                                                                   monkeypatch):
    import awq_tts.quantizer.api as api

    def no_room(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError(TORCH_SAYS)

    monkeypatch.setattr(api, "_walk", no_room)
    out = tmp_path / "int4"
    result = CliRunner().invoke(main, ["quantize", str(tiny_base), "-o", str(out), "--device",
                                       "cpu", "--n-samples", str(FAST["n_samples"]),
                                       "--max-seq-len", str(FAST["max_seq_len"])])
    line = _one_line(result)
    assert ("the GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 "
            "has a total capacity of 5.80 GiB of which 1.02 GiB is free)") in line
    assert "--offload-activations" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []      # no .partial, no lock


def test_other_errors_keep_their_traceback():
    """A bug is not a user's situation: it must stay visible as one."""
    @click.command()
    @friendly
    def broken():
        raise ValueError("a bug")

    result = CliRunner().invoke(broken, [])
    assert isinstance(result.exception, ValueError)


@pytest.mark.gpu
def test_a_real_cuda_out_of_memory_is_one_line():
    @click.command()
    @friendly
    def synthesize():
        torch.empty(2**50, dtype=torch.uint8, device="cuda")       # a pebibyte

    line = _one_line(CliRunner().invoke(synthesize, []))
    assert "the GPU ran out of memory (CUDA out of memory. Tried to allocate" in line
    assert "--offload-embeddings" in line
