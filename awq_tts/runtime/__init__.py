"""Running INT4 checkpoints: the packed linear module and the one-call loader."""

from .int4_linear import Int4Linear
from .load import load

__all__ = ["Int4Linear", "load"]
