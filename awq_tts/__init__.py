"""awq-tts: AWQ INT4 quantization for Qwen3-TTS talkers, and the proof it still speaks."""

__version__ = "0.1.0"
