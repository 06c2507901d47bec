"""The studio's library side: tagged scripts (``script``) rendered with one voice (``render``).

The web page (``awq-tts studio``) is a thin layer over these; what it does, a Python call
can do.
"""

from .render import Render, Voice, render, save
from .script import DELIVERIES, Script, Segment, from_rows, parse, to_rows

__all__ = ["DELIVERIES", "Render", "Script", "Segment", "Voice", "from_rows", "parse", "render",
           "save", "to_rows"]
