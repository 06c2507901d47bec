"""A tiny Qwen3-TTS whose talker really speaks and stops: ``make-tiny --trained``.

Random tiny checkpoints have nearly flat logits, so a bf16 model and its INT4 copy
disagree at random and nothing can be validated. This trains the tiny Base model's
talker and code predictor on a synthetic but structured task, with the same
teacher-forced input construction qwen-tts uses when generating (captured from its own
``generate``), and the usual Qwen3-TTS fine-tuning objective (codec cross-entropy plus
0.3 × the code predictor's loss). The code predictor's logits from
``forward_sub_talker_finetune`` are already aligned with groups 1..15; its built-in
loss (transformers' causal-LM loss) shifts the labels once more, so the cross-entropy
is computed here directly:

* a text of ``n`` tokens is spoken as ``n`` frames, then end-of-speech — predicted at
  the step whose streamed text input is qwen-tts's end-of-text marker;
* frame ``k`` has first code ``(3 + 7k) mod codebook`` and code ``g`` equal to
  ``(first + 11g) mod codebook``.

Afterwards greedy rollouts of the bf16 model stop by themselves at those lengths, so
stop behaviour, logits agreement and audio can be compared meaningfully.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..calibration.prompts import builtin_prompts
from ..models.qwen3_tts import Qwen3TTS
from ..models.qwen3_tts.package import qwen_tts
from ..models.qwen3_tts.patches import TalkerPrompt, capture_prompt
from ..output import atomic_output_dir
from ..synth import synthetic_reference
from .tiny import make_tiny_checkpoint

QWEN3_TTS = Qwen3TTS()

STEP_FRAMES = 7
GROUP_STRIDE = 11
FIRST_CODE = 3
EXTRA_FRAMES = 0
MAX_TEXT_TOKENS = 100


def target_codes(n_frames: int, codebook: int, groups: int) -> torch.Tensor:
    """``[n_frames, groups]`` codes of the synthetic task."""
    first = (FIRST_CODE + STEP_FRAMES * torch.arange(n_frames)) % codebook
    return (first[:, None] + GROUP_STRIDE * torch.arange(groups)[None, :]) % codebook


def expected_frames(n_text_tokens: int) -> int:
    return n_text_tokens + EXTRA_FRAMES


def training_texts(count: int, seed: int, tokenizer) -> list[str]:
    """Random slices of the built-in prompts (all ten languages), at most 100 tokens."""
    rng = random.Random(seed)
    corpus = " ".join(p.text for p in builtin_prompts("builtin"))
    texts: list[str] = []
    while len(texts) < count:
        start = rng.randrange(len(corpus) - 2)
        text = corpus[start:start + rng.randint(1, 70)].strip()
        if text and len(tokenizer(text)["input_ids"]) <= MAX_TEXT_TOKENS:
            texts.append(text)
    return texts


@dataclass
class Example:
    prompt: TalkerPrompt
    n_text: int


def talker_prompts(tts, texts: list[str], ref) -> list[Example]:
    """qwen-tts's own talker prompts for ``texts`` (voice clone, x-vector, streaming text)."""
    voice = tts.create_voice_clone_prompt(ref_audio=ref, x_vector_only_mode=True)
    examples = []
    for text in texts:
        prompt = capture_prompt(tts, lambda t=text: tts.generate_voice_clone(
            text=t, language="English", voice_clone_prompt=voice))
        examples.append(Example(prompt, len(tts.processor(text=text)["input_ids"][0])))
    return examples


def _batch(core, examples: list[Example], eos: int):
    cfg = core.talker.config
    seqs, labels, frame_pos, frame_codes = [], [], [], []
    for ex in examples:
        frames = expected_frames(ex.n_text)
        codes = target_codes(frames, cfg.vocab_size - 1024, cfg.num_code_groups)
        seqs.append(QWEN3_TTS.teacher_forced_sequence(core, ex.prompt, codes))
        p = ex.prompt.prefix.shape[0]
        lab = torch.full((seqs[-1].shape[0],), -100)
        lab[p - 1:p - 1 + frames] = codes[:, 0]
        lab[p - 1 + frames] = eos
        labels.append(lab)
        frame_pos.append(torch.arange(p - 1, p - 1 + frames))
        frame_codes.append(codes)
    longest = max(s.shape[0] for s in seqs)
    embeds = torch.zeros(len(seqs), longest, seqs[0].shape[1])
    mask = torch.zeros(len(seqs), longest, dtype=torch.long)
    label = torch.full((len(seqs), longest), -100)
    rows, cols = [], []
    for i, (s, lab, pos) in enumerate(zip(seqs, labels, frame_pos, strict=True)):
        off = longest - s.shape[0]
        embeds[i, off:], mask[i, off:], label[i, off:] = s, 1, lab
        rows.append(torch.full_like(pos, i))
        cols.append(pos + off)
    return embeds, mask, label, torch.cat(rows), torch.cat(cols), torch.cat(frame_codes)


def _trainable(model) -> list[torch.nn.Parameter]:
    """Decoder layers, final norm, codec head and code predictor; embeddings stay frozen.

    Frozen embeddings keep the captured prompt embeddings valid for the whole run.
    """
    talker = model.talker
    frozen = {id(p) for m in (talker.model.codec_embedding, talker.model.text_embedding,
                              talker.text_projection,
                              talker.code_predictor.model.codec_embedding)
              for p in m.parameters()}
    params = [p for m in (talker.model.layers, talker.model.norm, talker.codec_head,
                          talker.code_predictor)
              for p in m.parameters() if id(p) not in frozen]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


@torch.no_grad()
def balance_text_projection(model) -> float:
    """Scale the (frozen) text projection so projected text is as loud as codec input.

    At default initialisation projected text is ~40× smaller than the summed codec
    embeddings, so the end-of-text marker is nearly invisible to the talker. Returns the
    factor applied.
    """
    talker = model.talker
    text = talker.text_projection(talker.model.text_embedding.weight).std()
    codec = talker.model.codec_embedding.weight.std() * talker.config.num_code_groups ** 0.5
    factor = float(codec / text)
    talker.text_projection.linear_fc2.weight.mul_(factor)
    if talker.text_projection.linear_fc2.bias is not None:
        talker.text_projection.linear_fc2.bias.mul_(factor)
    return factor


def train(tts, steps: int = 200, batch_size: int = 16, seed: int = 0, lr: float = 3e-3,
          pool: int = 384, log_every: int = 0) -> list[float]:
    """Fit the tiny talker + code predictor to the synthetic task; return the losses."""
    torch.manual_seed(seed)
    model = tts.model
    talker = model.talker
    balance_text_projection(model)
    ref = synthetic_reference(seconds=1.5, seed=seed)
    texts = training_texts(pool, seed, tts.processor.tokenizer)
    examples = []
    for start in range(0, len(texts), 64):
        examples += talker_prompts(tts, texts[start:start + 64], ref)
    params = _trainable(model)
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=lr, total_steps=steps,
                                                pct_start=0.1)
    eos = talker.config.codec_eos_token_id
    rng = random.Random(seed)
    losses = []
    model.train()
    for step in range(steps):
        batch = rng.sample(examples, batch_size)
        embeds, mask, labels, rows, cols, codes = _batch(model, batch, eos)
        position_ids, _ = talker.get_rope_index(mask)
        hidden = talker.model(inputs_embeds=embeds, attention_mask=mask,
                              position_ids=position_ids, use_cache=False).last_hidden_state
        logits = talker.codec_head(hidden)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(),
                                                 ignore_index=-100)
        cp_logits, _ = talker.forward_sub_talker_finetune(codes, hidden[rows, cols])
        cp_loss = torch.nn.functional.cross_entropy(cp_logits.flatten(0, 1),
                                                    codes[:, 1:].flatten())
        total = loss + 0.3 * cp_loss
        optim.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        sched.step()
        losses.append(float(total.detach()))
        if log_every and step % log_every == 0:
            print(f"step {step}: talker {float(loss):.4f} code predictor {float(cp_loss):.4f}")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return losses


def make_trained_checkpoint(path: str | Path, seed: int = 0, steps: int = 200,
                            force: bool = False, log_every: int = 0) -> Path:
    """Build the tiny Base model, train it (≈1 min on 2 CPU cores) and save it."""
    package = qwen_tts()
    with atomic_output_dir(path, force=force) as tmp:
        make_tiny_checkpoint(tmp / "ckpt", variant="base", seed=seed)
        tts = package.Qwen3TTSModel.from_pretrained(str(tmp / "ckpt"), dtype=torch.float32)
        train(tts, steps=steps, seed=seed, log_every=log_every)
        _save_weights(tts.model, tmp / "ckpt" / "model.safetensors")
        for item in (tmp / "ckpt").iterdir():
            item.rename(tmp / item.name)
        (tmp / "ckpt").rmdir()
    return Path(path)


def _save_weights(model, file: Path) -> None:
    """Overwrite ``file`` with the trained tensors in bf16 (same keys; config unchanged)."""
    with safe_open(str(file), framework="pt") as handle:
        keys = set(handle.keys())
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()
             if k in keys}
    if set(state) != keys:
        raise RuntimeError(f"trained model lacks tensors: {sorted(keys - set(state))[:5]}")
    save_file(state, str(file), metadata={"format": "pt"})
