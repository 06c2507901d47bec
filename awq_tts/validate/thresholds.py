"""The checks behind the verdict and their default bounds (each overridable by a flag).

=========================  =====================================================  ========
check                      passes when                                            default
=========================  =====================================================  ========
kl_mean                    mean KL(bf16 ‖ INT4) of the codec head, teacher-forced  ≤ 0.05
kl_p99                     99th percentile of that per-position KL                 ≤ 1.0
top1                       agreement of the argmax codec token                     ≥ 0.90
eos_prob_ratio             INT4 / bf16 end-of-speech probability where bf16 stops  ≥ 0.5
runaway_greedy             INT4 runaway rate ≤ bf16's + tolerance (greedy)         + 0.0
runaway_sampled            the same, sampled with the same seed                    + 0.0
duration_ratio             mean |frames INT4 / frames bf16 − 1| over prompts       ≤ 0.15
speaker_similarity_delta   mean speaker similarity to the reference, INT4 − bf16   ≥ −0.03
memory                     peak VRAM (CUDA) or resident INT4 weights (CPU)         ≤ budget
=========================  =====================================================  ========

Reported without a bound: per-layer hidden-state cosine, code-predictor agreement,
log-mel distance between the two outputs, real-time factors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Thresholds:
    kl_mean: float = 0.05
    kl_p99: float = 1.0
    top1: float = 0.90
    eos_prob_ratio: float = 0.5
    runaway_tolerance: float = 0.0
    duration_ratio: float = 0.15
    speaker_similarity_delta: float = -0.03
    budget_gb: float = 6.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Check:
    name: str
    value: float
    bound: float
    op: str
    passed: bool
    detail: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "bound": self.bound, "op": self.op,
                "passed": self.passed, "detail": self.detail}


def check(name: str, value: float | None, op: str, bound: float, detail: str = "") -> Check:
    """A check that passes when ``value op bound``; a missing value is skipped (passes)."""
    if value is None:
        return Check(name, float("nan"), bound, op, True, detail or "not measured")
    passed = value <= bound if op == "<=" else value >= bound
    return Check(name, float(value), bound, op, bool(passed), detail)
