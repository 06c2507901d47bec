"""Calibration data that looks like real TTS decoding (prompt prefix + codec steps)."""

from .builder import DEFAULT_SEED, CalibrationSet, build_calibration
from .prompts import Prompt, builtin_prompts, load_prompts

__all__ = ["DEFAULT_SEED", "CalibrationSet", "Prompt", "build_calibration", "builtin_prompts",
           "load_prompts"]
