"""Talker inputs for *given* codec codes (teacher forcing), built from qwen-tts's own prompt.

``capture_prompt`` (in ``models/qwen3_tts/patches.py``) runs one of qwen-tts's
``generate_*`` calls and stops it the moment the talker would start decoding, keeping
what qwen-tts prepared: the prompt embeddings, the text it streams in one step at a time,
and the padding embedding used after the text.
``teacher_forced_sequence`` then appends one input per codec frame exactly as the talker
builds it while decoding: the sum of the frame's 16 code embeddings plus that step's text.
"""

from __future__ import annotations

import torch

from ..models.qwen3_tts.patches import TalkerPrompt


def codec_embedding_sum(talker, codes: torch.Tensor) -> torch.Tensor:
    """``[frames, hidden]``: per frame, the summed embeddings of its 16 codes."""
    codes = codes.to(talker.device)
    parts = [talker.get_input_embeddings()(codes[:, 0])]
    tables = talker.code_predictor.get_input_embeddings()
    parts += [tables[g - 1](codes[:, g]) for g in range(1, codes.shape[1])]
    return torch.stack(parts, 0).sum(0).float().cpu()


@torch.no_grad()
def teacher_forced_sequence(talker, prompt: TalkerPrompt, codes: torch.Tensor) -> torch.Tensor:
    """``[prefix + frames, hidden]`` talker inputs for speaking ``codes`` after ``prompt``."""
    frames = codes.shape[0]
    extra = max(frames - prompt.trailing.shape[0], 0)
    text = torch.cat([prompt.trailing, prompt.pad.expand(extra, -1)])[:frames]
    return torch.cat([prompt.prefix, codec_embedding_sum(talker, codes) + text])
