"""Running INT4 checkpoints: the packed linear module, its backends and the one-call loader."""

from .backends import available_backends
from .int4_linear import Int4Linear
from .load import graph_status, load
from .prepare import backend_of, prepare_for_inference

__all__ = ["Int4Linear", "available_backends", "backend_of", "graph_status", "load",
           "prepare_for_inference"]
