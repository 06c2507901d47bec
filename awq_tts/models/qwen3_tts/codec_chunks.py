"""The speech tokenizer's decoder in bounded memory: its convolution stack in short chunks.

qwen-tts decodes codes to audio in chunks of 300 frames (24 s) with 25 frames of left
context; inside a chunk, the decoder's upsampling convolutions hold several tensors of
``channels × 1,920 samples`` per frame at once. Measured on the full-size tokenizer
(float32, CPU): a 150-frame decode raised peak memory by 749 MiB and a 300-frame one by
1,657 MiB (half of that in bf16 on a GPU). That is what the GPU run's speech peak has on
top of the loaded model, and at 30 s of speech it alone would break a 2 GiB budget.

Everything after the decoder's transformer is causal convolution: an output frame
depends on at most :func:`receptive_frames` frames before it (9.4 for Qwen3-TTS's
decoder, from its kernels, dilations and strides; an impulse on the full-size decoder at
frame 10 moves outputs up to frame 18). So the transformer runs as qwen-tts runs it, on
the whole chunk, and the convolution stack runs on :data:`CHUNK_FRAMES` frames at a time,
each with that many frames (rounded up, plus one) of left context whose samples are
dropped: the same audio (bit-identical on the CPU, tested), with the workspace of 61
frames instead of 300. ``benchmarks/codec_memory.py`` at full size, float32 on the CPU:
the decode's peak rise is 633 and 1,252 MiB stock for 150 and 300 frames against 275 and
277 MiB chunked, in 16.3 and 34.5 s against 17.0 and 27.8 s.
"""

from __future__ import annotations

import logging
import math
from types import MethodType

import torch
from torch import nn

#: Frames of the convolution stack run at once.
CHUNK_FRAMES = 50
ATTR = "_awq_tts_chunked"
#: What the decoder must have for the chunked forward to be the stock one.
PARTS = ("quantizer", "pre_conv", "pre_transformer", "upsample", "decoder", "total_upsample")
log = logging.getLogger(__name__)


def install(decoder: nn.Module, chunk: int = CHUNK_FRAMES) -> bool:
    """Give ``decoder`` (``Qwen3TTSTokenizerV2Decoder``) the chunked forward; ``False``
    (stock decoding kept, with a warning) where it lacks the parts that forward uses or a
    layer whose reach is unknown."""
    missing = [p for p in PARTS if not hasattr(decoder, p)]
    reach = receptive_frames(decoder) if not missing else math.inf
    if missing or math.isinf(reach):
        log.warning("speech tokenizer decoder %s: audio decodes as qwen-tts does, without "
                    "awq-tts's bounded-memory chunks",
                    f"without {', '.join(missing)}" if missing else "with a strided conv")
        return False
    decoder.forward = MethodType(_forward, decoder)
    setattr(decoder, ATTR, (chunk, math.ceil(reach) + 1))
    return True


def receptive_frames(decoder: nn.Module) -> float:
    """How many frames before it an output frame of the convolution stack reads: each
    convolution's left reach (kernel and dilation; a transposed one's overlap) at the
    sample rate it runs at; ``inf`` for a layer this does not know how to count."""
    rate, frames = 1, 0.0
    for module in [*decoder.upsample.modules(), *decoder.decoder.modules()]:
        if isinstance(module, nn.ConvTranspose1d):
            kernel, stride = module.kernel_size[0], module.stride[0]
            frames += math.ceil((kernel - stride) / stride) / rate
            rate *= stride
        elif isinstance(module, nn.Conv1d):
            if module.stride[0] != 1:
                return math.inf
            frames += (module.kernel_size[0] - 1) * module.dilation[0] / rate
    return frames


def _forward(self, codes: torch.Tensor) -> torch.Tensor:
    """qwen-tts's ``Qwen3TTSTokenizerV2Decoder.forward``, its convolutions chunked."""
    if codes.shape[1] != self.config.num_quantizers:
        raise ValueError(f"Expected {self.config.num_quantizers} layer of codes, "
                         f"got {codes.shape[1]}")
    hidden = self.quantizer.decode(codes)
    hidden = self.pre_conv(hidden).transpose(1, 2)
    hidden = self.pre_transformer(inputs_embeds=hidden).last_hidden_state
    chunk, context = getattr(self, ATTR)
    wav = convolve_in_chunks(self, hidden.permute(0, 2, 1), chunk, context)
    return wav.clamp(min=-1, max=1)


def convolve_in_chunks(decoder: nn.Module, hidden: torch.Tensor, chunk: int,
                       context: int) -> torch.Tensor:
    """The decoder's upsampling and decoder blocks over ``hidden`` ``[B, C, frames]``,
    ``chunk`` frames at a time with ``context`` frames before each."""
    up = int(decoder.total_upsample)
    pieces = []
    for start in range(0, hidden.shape[-1], chunk):
        left = min(context, start)
        wav = _convolve(decoder, hidden[..., start - left:start + chunk])
        pieces.append(wav[..., left * up:])
    return torch.cat(pieces, dim=-1)


def _convolve(decoder: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    for blocks in decoder.upsample:
        for block in blocks:
            hidden = block(hidden)
    for block in decoder.decoder:
        hidden = block(hidden)
    return hidden
