"""``load(..., offload_embeddings=True)``: the text embedding stays in host memory, the
model says the same thing, and on CUDA the device holds the table's bytes less."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from conftest import GREEDY

from awq_tts.runtime import load
from awq_tts.runtime.host_embedding import HostEmbedding, offload


def _speak(tts, ref_clip) -> np.ndarray:
    wavs, _ = tts.generate_voice_clone(text="Hello there.", language="English",
                                       ref_audio=ref_clip, x_vector_only_mode=True,
                                       max_new_tokens=16, **GREEDY)
    return wavs[0]


def test_a_host_embedding_looks_up_what_the_table_looks_up():
    table = torch.nn.Embedding(50, 8, padding_idx=3)
    host = HostEmbedding(table.weight, table.padding_idx)
    ids = torch.tensor([[0, 3, 49], [7, 7, 1]])
    assert torch.equal(host(ids), table(ids)) and host.weight is host.table
    assert list(host.parameters()) == [] and "on the host" in repr(host)
    host.to("meta")                              # a device move leaves the table be
    assert host.table.device.type == "cpu"
    host.double()                                # a dtype change reaches it
    assert host.table.dtype == torch.float64
    assert torch.equal(host(ids), table(ids).double())


@pytest.mark.parametrize("which", ["bf16", "int4"])
def test_offloaded_models_speak_the_same_wav(tiny_base, tiny_base_awq, ref_clip, which):
    path = tiny_base if which == "bf16" else tiny_base_awq
    plain = load(path, dtype=torch.bfloat16)
    kept = load(path, dtype=torch.bfloat16, offload_embeddings=True)
    embedding = kept.model.talker.model.text_embedding
    assert isinstance(embedding, HostEmbedding) and plain.awq_host_bytes == 0
    assert kept.awq_host_bytes == embedding.table.numel() * 2          # bf16
    assert not any("text_embedding" in n for n, _ in kept.model.named_parameters())
    assert np.array_equal(_speak(kept, ref_clip), _speak(plain, ref_clip))


def test_a_wrong_mapping_fails_loudly():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="0 is a Linear, not an nn.Embedding"):
        offload(model, ("0",))


@pytest.mark.gpu
def test_on_cuda_the_table_never_reaches_the_device(tiny_base_awq, ref_clip):
    """No device tensor holds the table, and the model holds the table's bytes less than
    without offloading (to within 16 KiB: the first H200 run found the offloaded load 9 KiB
    above that, eighteen of the allocator's 512-byte blocks; the table is 192 KiB here)."""
    gc.collect()        # a model dropped by an earlier test, freed mid-load, would count
    torch.cuda.empty_cache()
    start = torch.cuda.memory_allocated()
    plain = load(tiny_base_awq, device="cuda:0")
    resident = torch.cuda.memory_allocated() - start
    wav = _speak(plain, ref_clip)
    del plain
    gc.collect()
    torch.cuda.empty_cache()
    start = torch.cuda.memory_allocated()
    kept = load(tiny_base_awq, device="cuda:0", offload_embeddings=True)
    saved = resident - (torch.cuda.memory_allocated() - start)
    table = kept.model.talker.model.text_embedding.table
    assert saved >= kept.awq_host_bytes - 16 * 2**10, (saved, kept.awq_host_bytes)
    assert not any(t.is_cuda and t.shape == table.shape
                   for t in [*kept.model.parameters(), *kept.model.buffers()])
    assert kept.model.talker.device.type == "cuda"
    assert np.array_equal(_speak(kept, ref_clip), wav)


def test_synthesize_offload_embeddings_writes_the_same_wav(tiny_base_awq, tmp_path):
    from click.testing import CliRunner

    from awq_tts.cli import main

    wavs = []
    for flags in ([], ["--offload-embeddings"]):
        out = tmp_path / f"speech{len(flags)}.wav"
        result = CliRunner().invoke(main, ["synthesize", str(tiny_base_awq), "--text", "One.",
                                           "--max-new-tokens", "10", "-o", str(out), *flags])
        assert result.exit_code == 0, result.output
        wavs.append(out.read_bytes())
    assert wavs[0] == wavs[1]
