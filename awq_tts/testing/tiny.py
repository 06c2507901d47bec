"""Build small random-weight Qwen3-TTS checkpoints with qwen-tts's real classes.

No hub is reachable where this project is developed and tested, so every test (and the
demo) builds a checkpoint here: the real ``Qwen3TTSForConditionalGeneration`` and 12 Hz
speech tokenizer, tiny dimensions, saved in the published folder layout and loadable
by ``qwen_tts.Qwen3TTSModel.from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.qwen3_tts.package import qwen_tts
from ..output import atomic_output_dir
from . import configs
from .text_tokenizer import build_text_tokenizer

#: Loudness the random vocoder is scaled to, so decoded audio is clearly non-silent.
_TARGET_RMS = 0.1


def make_tiny_checkpoint(
    path: str | Path,
    variant: str = "base",
    seed: int = 0,
    full_shape: bool = False,
    force: bool = False,
) -> Path:
    """Write a random-weight Qwen3-TTS checkpoint folder to ``path`` and return it.

    ``variant`` is one of ``base``, ``custom_voice``, ``voice_design`` or ``finetuned``
    (a custom_voice model with an extra talker layer and a speaker at codec row 3000, as
    the fine-tuning pipeline writes). ``full_shape`` uses the real 1.7B dimensions and
    streams the weights to disk shard by shard. The same seed gives identical files.
    """
    shape = configs.shape_for(variant, full_shape)
    with atomic_output_dir(path, force=force) as tmp:
        tokenizer, text_ids = build_text_tokenizer()
        ids = None if full_shape else text_ids
        cfg = configs.top_config(shape, variant, ids)
        _save_text_side(tmp, tokenizer)
        _save_speech_tokenizer(tmp / "speech_tokenizer", shape, seed)
        if full_shape:
            from .full_shape import write_random_weights

            write_random_weights(tmp, cfg, seed)
        else:
            _save_model(tmp, cfg, variant, seed)
        _write_json(tmp / "generation_config.json", configs.generation_config())
    return Path(path)


def _save_model(out: Path, cfg: dict, variant: str, seed: int) -> None:
    qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen3TTSConfig(**cfg)
    model = Qwen3TTSForConditionalGeneration(config).eval()
    if variant == "finetuned":
        name, row = configs.FINETUNED_SPEAKER
        with torch.no_grad():
            embedding = model.talker.model.codec_embedding.weight
            embedding[row] = torch.randn(embedding.shape[1]) * embedding[:2048].std()
    model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    write_config(out, config.to_dict())


def write_config(out: Path, config: dict) -> None:
    """Write ``config.json`` in the form qwen-tts can load back.

    ``PretrainedConfig.to_dict`` gives the speaker-encoder sub-config an empty
    ``model_type``; reloading then fails, so it is removed (the published configs
    have none).
    """
    sub = config.get("speaker_encoder_config", {})
    if sub.get("model_type", None) == "":
        del sub["model_type"]
    config.pop("_name_or_path", None)
    _write_json(out / "config.json", config)


def _save_text_side(out: Path, tokenizer) -> None:
    qwen_tts()
    from qwen_tts.core.models import Qwen3TTSProcessor

    Qwen3TTSProcessor(tokenizer=tokenizer).save_pretrained(out)


def _save_speech_tokenizer(out: Path, shape: configs.Shape, seed: int) -> None:
    qwen_tts()
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Config,
    )
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Model,
    )
    from transformers import EncodecFeatureExtractor

    torch.manual_seed(seed + 1)
    config = Qwen3TTSTokenizerV2Config(**configs.speech_tokenizer_config(shape))
    model = Qwen3TTSTokenizerV2Model(config).eval()
    _make_audible(model)
    out.mkdir(parents=True)
    model.save_pretrained(out, safe_serialization=True)
    EncodecFeatureExtractor(
        feature_size=1, sampling_rate=24000, padding_value=0.0, return_attention_mask=True
    ).save_pretrained(out)


@torch.no_grad()
def _make_audible(model: torch.nn.Module) -> None:
    """Give the codec non-zero codebooks and scale its last conv to a clear loudness.

    Default initialisation leaves every codebook at zero (each code decodes to
    silence) and the vocoder's output near zero.
    """
    for name, tensor in model.named_parameters():
        if name.endswith("embedding_sum"):
            tensor.normal_(0.0, 1.0)
        elif name.endswith("cluster_usage"):
            tensor.fill_(1.0)
    for name, tensor in model.named_buffers():
        if name.endswith("embed_sum"):
            tensor.normal_(0.0, 1.0)
        elif name.endswith("cluster_usage"):
            tensor.fill_(1.0)
        elif name.endswith("initialized"):
            tensor.fill_(1)
    decoder = model.decoder
    codes = torch.randint(0, decoder.config.codebook_size, (1, decoder.config.num_quantizers, 8))
    rms = decoder(codes).pow(2).mean().sqrt().item()
    if rms > 0:
        last = decoder.decoder[-1].conv
        last.weight.mul_(_TARGET_RMS / rms)
        if last.bias is not None:
            last.bias.mul_(_TARGET_RMS / rms)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
