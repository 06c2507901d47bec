"""Teacher-forced comparison on the bf16 model's own rollouts.

Both talkers read exactly the same inputs — what the bf16 talker saw while speaking,
up to the position where it predicted end-of-speech — so every difference in logits or
hidden states comes from quantization, not from diverging histories.

KL, top-1 and the EOS probability are taken only at *frame positions*: the last prompt
position (it predicts the first frame) and every later one (each predicts the next frame
or end-of-speech). The text prefix's logits are never sampled, and averaging over them
would dilute the mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..models import adapter_of


@dataclass
class TeacherMetrics:
    kl: list[list[float]] = field(default_factory=list)
    top1: list[float] = field(default_factory=list)
    eos_bf16: list[float] = field(default_factory=list)
    eos_int4: list[float] = field(default_factory=list)
    layer_cosine: list[float] = field(default_factory=list)
    code_agreement: list[float] = field(default_factory=list)
    positions: int = 0

    def summary(self) -> dict:
        flat = torch.tensor([v for row in self.kl for v in row]) if self.kl else torch.zeros(1)
        eos_b = sum(self.eos_bf16) / max(len(self.eos_bf16), 1)
        eos_q = sum(self.eos_int4) / max(len(self.eos_int4), 1)
        return {
            "kl_mean": float(flat.mean()),
            "kl_p99": float(torch.quantile(flat.float(), 0.99)),
            "top1": sum(self.top1) / max(len(self.top1), 1),
            "eos_prob_bf16": eos_b,
            "eos_prob_int4": eos_q,
            "eos_prob_ratio": eos_q / eos_b if eos_b > 0 else None,
            "eos_prompts": len(self.eos_bf16),
            "frame_positions": self.positions,
            "layer_cosine": self.layer_cosine,
            "code_predictor_agreement": (sum(self.code_agreement) / len(self.code_agreement)
                                         if self.code_agreement else None),
        }


@torch.no_grad()
def compare(reference, quantized, sequences: list[torch.Tensor], codes: list[torch.Tensor],
            stopped: list[bool]) -> TeacherMetrics:
    """KL, top-1, EOS probability, per-layer cosine and code-predictor agreement."""
    adapter = adapter_of(reference)
    ref_m, q_m = reference.model, quantized.model
    eos = adapter.eos_id(ref_m)
    metrics = TeacherMetrics()
    cos_sum: torch.Tensor | None = None
    for seq, frames, stop in zip(sequences, codes, stopped, strict=True):
        n = frames.shape[0]
        # frame k is predicted at prefix_end - 1 + k; a stopped sequence also holds the
        # last frame's input, the position that predicted end-of-speech
        start = seq.shape[0] - n - (1 if stop else 0)
        lr, hr, last_r = adapter.talker_forward(ref_m, seq)
        lq, hq, last_q = adapter.talker_forward(q_m, seq)
        # the reference may run elsewhere (validate's reference_device): compare there
        lq, hq = lq.to(lr.device), [h.to(lr.device) for h in hq]
        lr, lq = lr[start:], lq[start:]
        metrics.positions += lr.shape[0]
        logp, logq = lr.log_softmax(-1), lq.log_softmax(-1)
        metrics.kl.append((logp.exp() * (logp - logq)).sum(-1).cpu().tolist())
        metrics.top1.append(float((lr.argmax(-1) == lq.argmax(-1)).float().mean()))
        if stop:
            metrics.eos_bf16.append(float(logp[-1, eos].exp()))
            metrics.eos_int4.append(float(logq[-1, eos].exp()))
        cos = torch.stack([torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
                           for a, b in zip(hr, hq, strict=True)]).cpu()
        cos_sum = cos if cos_sum is None else cos_sum + cos
        if n:
            positions = torch.arange(start, start + n)
            pr = adapter.code_predictions(ref_m, last_r[positions], frames).argmax(-1).cpu()
            pq = adapter.code_predictions(q_m, last_q[positions], frames).argmax(-1).cpu()
            metrics.code_agreement.append(float((pr == pq).float().mean()))
    if cos_sum is not None:
        metrics.layer_cosine = (cos_sum / len(sequences)).tolist()
    return metrics
