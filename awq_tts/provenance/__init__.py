"""Provenance records (``noesis_provenance.json``): what an output came from, and its hashes."""

from .record import FILENAME, library_versions, load, record_sha256, verify, write

__all__ = ["FILENAME", "library_versions", "load", "record_sha256", "verify", "write"]
