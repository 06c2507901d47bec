"""What a listener would notice: spectral distance, and speaker similarity to the reference."""

from __future__ import annotations

import numpy as np
import torch

from ..models import adapter_of


def log_mel(wav: np.ndarray, sample_rate: int = 24000) -> torch.Tensor:
    """``[n_mels, frames]`` natural-log mel spectrogram (qwen-tts's own 128-band mel)."""
    from qwen_tts.core.models.modeling_qwen3_tts import mel_spectrogram

    audio = torch.from_numpy(np.asarray(wav, dtype=np.float32))[None]
    return mel_spectrogram(audio, n_fft=1024, num_mels=128, sampling_rate=sample_rate,
                           hop_size=256, win_size=1024, fmin=0, fmax=sample_rate // 2)[0]


def log_mel_distance(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean absolute log-mel difference over the common length (None if either is short)."""
    if min(len(a), len(b)) < 1024:
        return None
    ma, mb = log_mel(a), log_mel(b)
    frames = min(ma.shape[1], mb.shape[1])
    return float((ma[:, :frames] - mb[:, :frames]).abs().mean())


@torch.no_grad()
def speaker_similarity(tts, wav: np.ndarray, reference: torch.Tensor) -> float | None:
    """Cosine between the speaker embedding of ``wav`` and the reference embedding."""
    emb = adapter_of(tts).speaker_embedding(tts, wav)
    if emb is None:
        return None
    return float(torch.nn.functional.cosine_similarity(
        emb.float().flatten(), reference.float().flatten().to(emb.device), dim=0))
