"""The stored INT4 format, usable without the quantizer: AutoAWQ GEMM packing, checkpoint
reading and writing, source resolution and the provenance record.

``awq_tts.runtime`` imports only this package and ``awq_tts.models``; the quantizer and
the calibration are never loaded to run an INT4 model.
"""

from .packing import PackedLinear, dequantize_gemm, pack_gemm, pack_int4, unpack_gemm, unpack_int4
from .provenance import FILENAME, Provenance, library_versions

__all__ = ["FILENAME", "PackedLinear", "Provenance", "dequantize_gemm", "library_versions",
           "pack_gemm", "pack_int4", "unpack_gemm", "unpack_int4"]
