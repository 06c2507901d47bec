"""validate_awq_quality: a pass/fail verdict on an INT4 model against its bf16 source."""

from .api import ValidationReport, validate_awq_quality
from .thresholds import Thresholds

__all__ = ["Thresholds", "ValidationReport", "validate_awq_quality"]
