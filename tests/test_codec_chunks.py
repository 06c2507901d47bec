"""The speech tokenizer's decoder runs its convolutions in short chunks: the same audio as
qwen-tts's own forward, in bounded memory."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from awq_tts.models.qwen3_tts import codec_chunks


@pytest.fixture(scope="module")
def decoder(tiny_base):
    from awq_tts.runtime import load

    return load(tiny_base, dtype=torch.float32).model.speech_tokenizer.model.decoder


def test_every_loaded_model_decodes_in_chunks_reaching_back_far_enough(decoder):
    """The counted reach covers what an impulse shows, and the context covers the reach."""
    chunk, context = getattr(decoder, codec_chunks.ATTR)
    reach = codec_chunks.receptive_frames(decoder)
    assert chunk == codec_chunks.CHUNK_FRAMES and reach < context
    up = int(decoder.total_upsample)
    torch.manual_seed(0)
    hidden = torch.randn(1, decoder.config.latent_dim, 40)
    moved = hidden.clone()
    moved[..., 10] += 1.0
    with torch.no_grad():
        diff = (codec_chunks._convolve(decoder, moved)
                - codec_chunks._convolve(decoder, hidden)).abs()[0].amax(0)
    last = int(diff.nonzero().max()) // up
    assert 5 < last - 10 <= reach, (last, reach)


@pytest.mark.parametrize("chunk", [1, 4, 50])
def test_chunked_audio_is_the_stock_audio(decoder, chunk):
    torch.manual_seed(1)
    codes = torch.randint(0, decoder.config.codebook_size,
                          (2, decoder.config.num_quantizers, 70))
    with torch.no_grad():
        stock = type(decoder).forward(decoder, codes)
        _, context = getattr(decoder, codec_chunks.ATTR)
        setattr(decoder, codec_chunks.ATTR, (chunk, context))
        try:
            chunked = decoder(codes)
        finally:
            setattr(decoder, codec_chunks.ATTR, (codec_chunks.CHUNK_FRAMES, context))
    assert chunked.shape == stock.shape
    assert torch.allclose(chunked, stock, atol=1e-6, rtol=0)


def test_a_decoder_it_does_not_know_keeps_stock_decoding(caplog):
    odd = nn.Module()
    with caplog.at_level(logging.WARNING):
        assert not codec_chunks.install(odd)
    assert "without quantizer" in caplog.text and "forward" not in odd.__dict__


def test_the_benchmark_names_a_bad_argument_in_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = str(Path(__file__).resolve().parent.parent / "benchmarks" / "codec_memory.py")
    for extra, said in ((["--frames", "150,x"], "give frame counts of at least 8"),
                        (["--work", str(tmp_path)], "speech_tokenizer is missing; build it")):
        run = subprocess.run([sys.executable, script, *extra], capture_output=True, text=True,
                             timeout=120)
        assert run.returncode == 2 and said in run.stderr and "Traceback" not in run.stderr
