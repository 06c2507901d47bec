"""Small real Qwen3-TTS checkpoints for tests, demos and benchmarks (no hub needed)."""

from .tiny import make_tiny_checkpoint

__all__ = ["make_tiny_checkpoint"]
