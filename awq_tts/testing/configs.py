"""Config dictionaries for tiny (and full-shape) Qwen3-TTS checkpoints.

The codec id layout copies the real 12 Hz checkpoints: the talker's codec vocabulary is
``codebook + 1024`` and every special id (pad/bos/eos, think tags, languages, speakers)
sits in that top band, at the same offsets from the codebook as in the published
configs (see ``shared/reference/qwen3-tts-shapes.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("base", "custom_voice", "voice_design", "finetuned")

#: Offsets of special codec ids above the codebook size (real: codebook 2048, pad 2148).
_CODEC_OFFSETS = {
    "codec_pad_id": 100,
    "codec_bos_id": 101,
    "codec_eos_token_id": 102,
    "codec_think_id": 106,
    "codec_nothink_id": 107,
    "codec_think_bos_id": 108,
    "codec_think_eos_id": 109,
}
_LANGUAGE_OFFSETS = {
    "english": 2,
    "german": 5,
    "spanish": 6,
    "chinese": 7,
    "japanese": 10,
    "french": 13,
    "korean": 16,
    "russian": 21,
    "italian": 22,
    "portuguese": 23,
}
#: Built-in CustomVoice speakers of the tiny model (offset above codebook, dialect flag).
_SPEAKERS = {"aiden": (900, False), "serena": (901, False), "eric": (902, "sichuan_dialect")}
_DIALECTS = {"sichuan_dialect": 30}
#: The fine-tuning pipeline writes its new speaker at codec_embedding row 3000.
FINETUNED_SPEAKER = ("noesis_custom", 3000)


@dataclass(frozen=True)
class Shape:
    """Dimensions of one checkpoint; tiny by default."""

    hidden: int = 256
    intermediate: int = 512
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 64
    codebook: int = 256
    text_vocab: int = 384
    cp_hidden: int = 128
    cp_intermediate: int = 256
    cp_layers: int = 1
    cp_heads: int = 2
    cp_kv_heads: int = 1
    code_groups: int = 16
    mrope_section: tuple[int, int, int] = (12, 10, 10)
    full_codec: bool = False

    @property
    def codec_vocab(self) -> int:
        return self.codebook + 1024


TINY = Shape()
#: The fine-tuned variant needs codec row 3000, so it uses the real codebook size.
TINY_FINETUNED = Shape(layers=3, codebook=2048)
#: Real Qwen3-TTS-12Hz-1.7B dimensions (random weights, for benchmarks).
FULL_1B7 = Shape(
    hidden=2048,
    intermediate=6144,
    layers=28,
    heads=16,
    kv_heads=8,
    head_dim=128,
    codebook=2048,
    text_vocab=151936,
    cp_hidden=1024,
    cp_intermediate=3072,
    cp_layers=5,
    cp_heads=16,
    cp_kv_heads=8,
    mrope_section=(24, 20, 20),
    full_codec=True,
)


def shape_for(variant: str, full_shape: bool = False) -> Shape:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if full_shape:
        return FULL_1B7
    return TINY_FINETUNED if variant == "finetuned" else TINY


def codec_ids(shape: Shape) -> dict[str, int]:
    return {k: shape.codebook + v for k, v in _CODEC_OFFSETS.items()}


def talker_config(shape: Shape, variant: str, text_ids: dict[str, int] | None) -> dict:
    """The ``talker_config`` dict (with its code predictor) for one variant."""
    languages = {k: shape.codebook + v for k, v in _LANGUAGE_OFFSETS.items()}
    languages.update({k: shape.codebook + v for k, v in _DIALECTS.items()})
    spk_id: dict[str, int] = {}
    spk_is_dialect: dict[str, object] = {}
    if variant in ("custom_voice", "finetuned"):
        for name, (offset, dialect) in _SPEAKERS.items():
            spk_id[name] = shape.codebook + offset
            spk_is_dialect[name] = dialect
    if variant == "finetuned":
        name, row = FINETUNED_SPEAKER
        spk_id[name] = row
        spk_is_dialect[name] = False
    rope = {"interleaved": True, "mrope_section": list(shape.mrope_section), "rope_type": "default"}
    predictor = {
        "vocab_size": shape.codebook,
        "hidden_size": shape.cp_hidden,
        "intermediate_size": shape.cp_intermediate,
        "num_hidden_layers": shape.cp_layers,
        "num_attention_heads": shape.cp_heads,
        "num_key_value_heads": shape.cp_kv_heads,
        "head_dim": shape.head_dim,
        "num_code_groups": shape.code_groups,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 65536,
    }
    return {
        "code_predictor_config": predictor,
        "vocab_size": shape.codec_vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "rope_theta": 1000000.0,
        "rope_scaling": rope,
        "max_position_embeddings": 32768,
        "num_code_groups": shape.code_groups,
        "text_vocab_size": shape.text_vocab,
        "text_hidden_size": shape.hidden,
        "spk_id": spk_id,
        "spk_is_dialect": spk_is_dialect,
        "codec_language_id": languages,
        **codec_ids(shape),
    }


def top_config(shape: Shape, variant: str, text_ids: dict[str, int] | None) -> dict:
    """The whole ``config.json`` content as keyword arguments of ``Qwen3TTSConfig``."""
    model_type = "custom_voice" if variant == "finetuned" else variant
    full = shape.full_codec
    cfg = {
        "talker_config": talker_config(shape, variant, text_ids),
        "speaker_encoder_config": {
            "enc_dim": shape.hidden,
            "enc_channels": [512, 512, 512, 512, 1536] if full else [64, 64, 64, 64, 192],
            "enc_attention_channels": 128 if full else 32,
            "enc_se_channels": 128 if full else 32,
            "sample_rate": 24000,
        },
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": "1b7" if full else "tiny",
        "tts_model_type": model_type,
    }
    if text_ids is not None:
        cfg.update(
            im_start_token_id=text_ids["<|im_start|>"],
            im_end_token_id=text_ids["<|im_end|>"],
            tts_pad_token_id=text_ids["<|tts_pad|>"],
            tts_bos_token_id=text_ids["<|tts_text_bos|>"],
            tts_eos_token_id=text_ids["<|tts_text_eod|>"],
        )
    return cfg


def speech_tokenizer_config(shape: Shape) -> dict:
    """Config of the 12 Hz speech tokenizer (Mimi encoder + Qwen3 decoder)."""
    if shape.full_codec:
        return {"encoder_config": {"num_quantizers": 32}, "decoder_config": {"codebook_dim": 512}}
    encoder = {
        "hidden_size": 64,
        "num_filters": 8,
        "num_hidden_layers": 1,
        "intermediate_size": 128,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "codebook_size": shape.codebook,
        "codebook_dim": 32,
        "vector_quantization_hidden_dimension": 32,
        "num_quantizers": shape.code_groups,
        "upsample_groups": 64,
        "upsampling_ratios": [8, 6, 5, 4],
        "frame_rate": 12.5,
    }
    decoder = {
        "codebook_size": shape.codebook,
        "codebook_dim": 64,
        "hidden_size": 64,
        "latent_dim": 64,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "head_dim": 32,
        "num_hidden_layers": 1,
        "intermediate_size": 128,
        "num_quantizers": shape.code_groups,
        "decoder_dim": 64,
    }
    return {
        "encoder_config": encoder,
        "decoder_config": decoder,
        "encoder_valid_num_quantizers": shape.code_groups,
    }


def generation_config() -> dict:
    """The ``generation_config.json`` qwen-tts reads its sampling defaults from."""
    return {
        "do_sample": True,
        "repetition_penalty": 1.05,
        "temperature": 0.9,
        "top_p": 1.0,
        "top_k": 50,
        "subtalker_dosample": True,
        "subtalker_temperature": 0.9,
        "subtalker_top_p": 1.0,
        "subtalker_top_k": 50,
        "max_new_tokens": 8192,
    }
