"""Which dtype Qwen3-TTS's audio modules run in, by device.

On a CPU the speech tokenizer (codes → audio) and the speaker encoder (reference clip →
x-vector) run in float32 whatever the talker's dtype: their dilated convolutions have no
bf16 kernel there and fall back to torch's reference loops (``slow_conv_dilated2d``).
Measured on 2 AVX2 cores at full size: decoding 12 frames took 72 s in bf16 against 1.0 s
in float32 (waves agreeing to a correlation of 0.9994), and the speaker encoder took 2.8 s
against 0.08 s for a 5 s clip. The cost is their 246 M parameters in float32 (+0.47 GiB
of RAM). On CUDA they keep the load dtype.

The speech tokenizer is loaded straight from its float32 checkpoint in that dtype (never
rounded through bf16; see ``load_patches.speech_tokenizer_dtype``); qwen-tts casts its inputs
to its own dtype. The speaker encoder's weights live in the bf16 model file, so it is
upcast after loading (exact), and a pre-hook gives it inputs in its own dtype, since
qwen-tts casts the mel spectrogram to the talker's.
"""

from __future__ import annotations

import torch
from torch import nn

from ...devices import half_on_cpu


def codec_dtype(device: str, dtype: object) -> torch.dtype | None:
    """float32 where the audio modules must leave ``dtype`` (a CPU, a half dtype), else None."""
    return torch.float32 if half_on_cpu(device, dtype) else None


def place_audio(tts, device: str) -> torch.dtype:
    """Put the speech tokenizer and the speaker encoder of ``tts`` in :func:`codec_dtype`
    (a no-op when already there); returns the speech tokenizer's dtype."""
    codec = tts.model.speech_tokenizer.model
    wanted = codec_dtype(device, codec.dtype)
    if wanted is not None:
        codec.to(wanted)
    encoder = getattr(tts.model, "speaker_encoder", None)
    if encoder is not None:
        wanted = codec_dtype(device, next(encoder.parameters()).dtype)
        if wanted is not None:
            encoder.to(wanted)
            encoder.register_forward_pre_hook(_inputs_in_own_dtype)
    return codec.dtype


def _inputs_in_own_dtype(module: nn.Module, args: tuple) -> tuple:
    dtype = next(module.parameters()).dtype
    return tuple(a.to(dtype) if torch.is_tensor(a) and a.is_floating_point() else a
                 for a in args)
