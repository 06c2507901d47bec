"""Checkpoint surgery: Darwin-style FFN blending and speech-tokenizer repair."""

from .blend import blend, parse_alpha
from .repair import repair

__all__ = ["blend", "parse_alpha", "repair"]
