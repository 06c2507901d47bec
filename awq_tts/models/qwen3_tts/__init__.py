"""The Qwen3-TTS adapter: the one place that knows qwen-tts (see ``models/base.py``).

``package.py`` imports qwen-tts quietly and registers its Auto classes; ``patches.py`` (while
speaking) and ``load_patches.py`` (while loading) hold every patch applied to it, except what
every loaded model gets (:func:`lean`: the code predictor's plain loop, ``predictor.py``, the
fused RMSNorms, ``fused_norms.py``, rope tables built once, ``shared_rope.py``, and one-token
attention without key/value copies, ``grouped_attention.py``), the
audio decoder's bounded-memory chunks (``codec_chunks.py``) and the CUDA graphs of the talker
step and the code predictor (``talker_graphs.py``, ``graphs.py``). This module loads and
builds models, finds the decoder layers and knows the codec head, end-of-speech id and talker
inputs; ``speaking.py`` holds the voices, the ``generate_*`` calls, audio decoding and the
speaker encoder.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import UsageError
from ..mapping import QWEN3_TTS_TALKER, decoder_layers
from . import (
    audio_dtype,
    codec_chunks,
    fused_norms,
    graphs,
    grouped_attention,
    predictor,
    shared_rope,
    talker_graphs,
)
from .load_patches import speech_tokenizer_dtype
from .package import qwen_tts
from .patches import TalkerPrompt, TalkerRecord, capture_prompt, record_talker
from .speaking import DESIGN_INSTRUCTIONS, NEUTRAL_DESIGN, REFERENCE_PITCHES, Speaking


def lean(core: nn.Module) -> None:
    """What every model awq-tts loads or builds runs: the code predictor's plain loop
    (``predictor.py``), the talker's RMSNorms as one fused op each (``fused_norms.py``), its
    rope tables built once per forward (``shared_rope.py``) and one-token masked attention
    without key/value copies (``grouped_attention.py``; these two are globals of qwen-tts's,
    so stock models in this process share them: their results are bit-identical), and a
    talker ``generate`` that keeps only the last hidden state of each step, the one qwen-tts
    reads (``last_hidden.py``)."""
    predictor.install(core.talker.code_predictor)
    talker_graphs.install(core.talker)
    fused_norms.install(core.talker)
    shared_rope.install()
    grouped_attention.install()


class Qwen3TTS(Speaking):
    model_type = "qwen3_tts"
    variants = ("base", "custom_voice", "voice_design")
    mapping = QWEN3_TTS_TALKER
    #: ``awq-tts blend``: the causal LM (model_type) whose FFN weights may be lerped into
    #: the talker, the config fields that must agree, and the FFN projections blended.
    blend_backbone = "qwen3"
    blend_checked = ("hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads")
    blend_projections = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    #: ``load(..., offload_embeddings=True)``: prompt-only lookup tables kept in host memory.
    host_lookups = ("talker.model.text_embedding",)
    #: bf16 in every checkpoint and run each codec frame: on a CPU, ``runtime/bf16_gemv.py``.
    bf16_decode = ("talker.code_predictor", "talker.codec_head")

    def decoder_config(self, config: dict) -> dict:
        """The config block of the quantized decoder (``talker_config``)."""
        return config.get("talker_config", {})

    def blend_pairs(self, layers: list[int]) -> dict[str, str]:
        """Talker FFN tensor → the backbone LM's tensor of the same layer and projection."""
        return {f"{self.mapping.layers}.{n}.{p}.weight": f"model.layers.{n}.{p}.weight"
                for n in layers for p in self.blend_projections}

    # -- loading -------------------------------------------------------------------------
    def from_pretrained(self, path: str | Path, **kwargs: Any):
        """``qwen_tts.Qwen3TTSModel.from_pretrained`` (a bf16 or float checkpoint), with the
        speech tokenizer in :meth:`codec_dtype` and :func:`lean`."""
        package = qwen_tts()
        codec = self.codec_dtype(kwargs.get("device_map", "cpu"), kwargs.get("dtype"))
        with speech_tokenizer_dtype(codec) if codec else contextlib.nullcontext():
            tts = package.Qwen3TTSModel.from_pretrained(str(path), **kwargs)
        lean(tts.model)
        return tts

    def empty_model(self, path: Path) -> nn.Module:
        """The core model built on the meta device from ``config.json`` (no weights)."""
        from accelerate import init_empty_weights

        qwen_tts()
        from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

        config = Qwen3TTSConfig.from_pretrained(str(path))
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._attn_implementation = "sdpa"
        with init_empty_weights():
            return Qwen3TTSForConditionalGeneration(config)

    def assemble(self, model: nn.Module, path: Path, device: str, dtype: torch.dtype):
        """A ``Qwen3TTSModel`` around a loaded core: speech tokenizer, generation defaults,
        processor (what ``from_pretrained`` adds), and :func:`lean`."""
        from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer
        from transformers import AutoProcessor

        model.eval()
        model.load_speech_tokenizer(Qwen3TTSTokenizer.from_pretrained(
            str(path / "speech_tokenizer"), device_map=device,
            dtype=self.codec_dtype(device, dtype) or dtype))
        generation = path / "generation_config.json"
        model.load_generate_config(json.loads(generation.read_text())
                                   if generation.is_file() else {})
        processor = AutoProcessor.from_pretrained(str(path), fix_mistral_regex=True)
        lean(model)
        return qwen_tts().Qwen3TTSModel(model=model, processor=processor,
                                        generate_defaults=model.generate_config)

    codec_dtype = staticmethod(audio_dtype.codec_dtype)

    def place_audio(self, tts, device: str) -> torch.dtype:
        """The audio modules' dtype (``audio_dtype.py``; returns the speech tokenizer's),
        and audio decoded in bounded memory (``codec_chunks.py``)."""
        codec_chunks.install(tts.model.speech_tokenizer.model.decoder)
        return audio_dtype.place_audio(tts, device)

    def use_cuda_graphs(self, tts, on: bool) -> None:
        """Replay the talker's decode steps (``talker_graphs.py``) and the code predictor's
        frames (``graphs.py``) from CUDA graphs, or neither."""
        talker = tts.model.talker
        (graphs.enable if on else graphs.disable)(talker.code_predictor)
        (talker_graphs.enable if on else talker_graphs.disable)(talker)

    @contextlib.contextmanager
    def static_decode(self, tts, replay: bool) -> Iterator[None]:
        """Within the block, talker steps on a static cache with fixed shapes, replayed
        from CUDA graphs together with the predictor's frames (``replay``), or the same
        steps eagerly, the graphs' reference; afterwards whatever was set before."""
        talker = tts.model.talker
        with talker_graphs.using(talker, replay), \
                graphs.using(talker.code_predictor, graphs.FrameGraphs() if replay else None):
            yield

    def graph_status(self, tts) -> str:
        """Both halves' state: ``talker step …; code predictor …`` (each ``off``, or ``on
        (N captured…)``)."""
        talker = tts.model.talker
        return (f"talker step {talker_graphs.status(talker)}; "
                f"code predictor {graphs.status(talker.code_predictor)}")

    # -- structure -----------------------------------------------------------------------
    def variant(self, tts) -> str:
        kind = tts.model.tts_model_type
        if kind not in self.variants:
            raise UsageError(f"unsupported tts_model_type {kind!r} in the checkpoint's "
                             f"config.json; Qwen3-TTS has {', '.join(self.variants)}")
        return kind

    def decoder_layers(self, core: nn.Module) -> nn.ModuleList:
        return decoder_layers(core, self.mapping)

    def position_ids(self, core: nn.Module, mask: torch.Tensor) -> torch.Tensor:
        """The talker's multimodal rope positions for a left-padded ``mask``."""
        return core.talker.get_rope_index(mask)[0]

    def eos_id(self, core: nn.Module) -> int:
        return int(core.talker.config.codec_eos_token_id)

    def talker_forward(self, core: nn.Module, seq: torch.Tensor):
        """Codec logits, hidden states per layer and the last hidden state of ``seq``."""
        talker = core.talker
        embeds = seq[None].to(talker.device, talker.dtype)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        out = talker.model(inputs_embeds=embeds, attention_mask=mask,
                           position_ids=self.position_ids(core, mask), use_cache=False,
                           output_hidden_states=True)
        logits = talker.codec_head(out.last_hidden_state)[0].float()
        return logits, [h[0].float() for h in out.hidden_states[1:]], out.last_hidden_state[0]

    def code_predictions(self, core: nn.Module, hidden: torch.Tensor,
                         codes: torch.Tensor) -> torch.Tensor:
        """The code predictor's logits for the 15 residual codes of each frame."""
        logits, _ = core.talker.forward_sub_talker_finetune(codes.to(hidden.device), hidden)
        return logits

    # -- talker inputs -------------------------------------------------------------------
    def encode_audio(self, tts, audio) -> torch.Tensor:
        """``[frames, 16]`` codec codes of a recording (path or (wav, sr))."""
        return tts.model.speech_tokenizer.encode(audio).audio_codes[0].long().cpu()

    @torch.no_grad()
    def teacher_forced_sequence(self, core: nn.Module, prompt: TalkerPrompt,
                                codes: torch.Tensor) -> torch.Tensor:
        """``[prefix + frames, hidden]`` talker inputs for speaking ``codes`` after the
        captured ``prompt``, one input per frame exactly as the talker builds it while
        decoding: the sum of the frame's 16 code embeddings plus that step's text (the
        trailing text, then the padding embedding)."""
        talker = core.talker
        frames = codes.shape[0]
        extra = max(frames - prompt.trailing.shape[0], 0)
        text = torch.cat([prompt.trailing, prompt.pad.expand(extra, -1)])[:frames]
        codes = codes.to(talker.device)
        parts = [talker.get_input_embeddings()(codes[:, 0])]
        tables = talker.code_predictor.get_input_embeddings()
        parts += [tables[g - 1](codes[:, g]) for g in range(1, codes.shape[1])]
        embedded = torch.stack(parts, 0).sum(0).float().cpu()
        return torch.cat([prompt.prefix, embedded + text])

    # -- recording (patches.py) ----------------------------------------------------------
    def record_talker(self, tts, drop_stopped: bool = False, fixed_batch: bool = False):
        return record_talker(tts, drop_stopped, fixed_batch)

    def capture_prompt(self, tts, speak: Callable[[], object]) -> TalkerPrompt:
        return capture_prompt(tts, speak)


__all__ = ["DESIGN_INSTRUCTIONS", "NEUTRAL_DESIGN", "REFERENCE_PITCHES", "Qwen3TTS",
           "TalkerPrompt", "TalkerRecord"]
