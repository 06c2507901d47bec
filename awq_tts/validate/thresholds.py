"""The checks behind the verdict, their default bounds, and the three states a check can end in.

=========================  =====================================================  ========
check                      passes when                                            default
=========================  =====================================================  ========
kl_mean                    mean KL(bf16 ‖ INT4) of the codec head, teacher-forced  ≤ 0.05
                           at the positions that predict a codec frame or EOS
kl_p99                     99th percentile of that per-position KL                 ≤ 1.0
top1                       agreement of the argmax codec token (same positions)    ≥ 0.90
eos_prob_ratio             INT4 / bf16 end-of-speech probability where bf16 stops  ≥ 0.5
runaway_greedy             INT4 runaway rate ≤ bf16's + tolerance (greedy)         + 0.0
runaway_sampled            the same, sampled with the same seed                    + 0.0
duration_ratio             mean |frames INT4 / frames bf16 − 1| over prompts       ≤ 0.15
speaker_similarity_delta   mean speaker similarity to the reference, INT4 − bf16   ≥ −0.03
code_predictor_agreement   the code predictor's argmax codes on INT4's talker      ≥ 0.85
                           hidden states against bf16's (teacher-forced)
log_mel_distance           mean |log-mel INT4 − log-mel bf16| of greedy audio      ≤ 1.5
memory                     peak VRAM of INT4 load + speech (CUDA), or peak RSS     ≤ budget
                           increase of INT4 load + speech in a fresh process (CPU)
kl_vs_rtn (optional)       kl_mean / KL of an in-memory RTN twin of the source      ≤ F
=========================  =====================================================  ========

**How the defaults were set** (``benchmarks/validator_bounds.py``, its table in the README).
On the trained tiny model, KL at frame positions is 1.8e-6 for clean AWQ and 2.0e-6 for
RTN; every gross defect (scales × 4, a scrambled ``qweight``, a zeroed EOS row) scores
≥ 0.10, and every subtle one (a zero-point swap, one column's scale × 1.5, a fold undone, a
code-predictor ulp) scores within 2× of clean: those are for the static checks
(``weights_audit``, ``untouched_identical``), which catch all of them. The KL bounds sit
between the two bands with room for real 1.7B models, whose frame logits carry far more
entropy than the tiny model's (4-bit LLMs measure 1e-2-scale KL); ``--kl-vs-rtn F`` bounds
KL relative to an RTN twin of the same source instead (AWQ measured 0.88× RTN, the
zero-point swap 1.9×). Code-predictor agreement stays ≥ 0.9997 on every tiny-model defect
and log-mel distance ≤ 0.06, so their bounds (0.85, 1.5 nats ≈ 6.5 dB) are set for what a
listener would hear, not from the tiny model: greedy rollouts may diverge after a single
differing frame, and then the two waveforms differ honestly.

Every check ends as ``pass``, ``fail`` or ``skip``. A check whose value could not be
measured (bf16 never stopped, so there is no EOS probability to compare; a model without
a speaker encoder) is *skipped with its reason*, never counted as a pass: the verdict line
names every skip, and ``strict`` turns skips into failures.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

PASS, FAIL, SKIP = "pass", "fail", "skip"


@dataclass(frozen=True)
class Thresholds:
    kl_mean: float = 0.05
    kl_p99: float = 1.0
    top1: float = 0.90
    eos_prob_ratio: float = 0.5
    runaway_tolerance: float = 0.0
    duration_ratio: float = 0.15
    speaker_similarity_delta: float = -0.03
    code_predictor_agreement: float = 0.85
    log_mel_distance: float = 1.5
    budget_gb: float = 6.0
    #: Optional: INT4's KL at most this many times an in-memory RTN twin's (off by default).
    kl_vs_rtn: float | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class Check:
    name: str
    value: float | None
    bound: float
    op: str
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == PASS

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    @property
    def skipped(self) -> bool:
        return self.status == SKIP

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "bound": self.bound, "op": self.op,
                "status": self.status, "detail": self.detail}


def check(name: str, value: float | None, op: str, bound: float, detail: str = "",
          skip_reason: str = "not measured") -> Check:
    """``value op bound`` as a pass or a fail; a missing value is a skip with its reason."""
    if value is None:
        return Check(name, None, bound, op, SKIP, skip_reason)
    passed = value <= bound if op == "<=" else value >= bound
    return Check(name, float(value), bound, op, PASS if passed else FAIL, detail)


def verdict_line(checks: list[Check], strict: bool = False) -> str:
    """``PASS``, ``PASS (1 skipped: eos_prob_ratio — bf16 never stopped)`` or ``FAIL (…)``."""
    failed = [c.name for c in checks if c.failed or (strict and c.skipped)]
    skipped = [f"{c.name} — {c.detail}" for c in checks if c.skipped]
    head = "FAIL" if failed else "PASS"
    parts = [f"failed: {', '.join(failed)}"] if failed else []
    if skipped:
        parts.append(f"{len(skipped)} skipped{' (strict)' if strict else ''}: "
                     + "; ".join(skipped))
    return f"{head} ({'; '.join(parts)})" if parts else head
