"""The studio's library side: tagged scripts (``script``) rendered with one voice (``render``).

The web page (``awq-tts studio``) is a thin layer over these; what it does, a Python call
can do.
"""

from .render import Render, Voice, render, save
from .script import DELIVERIES, Script, Segment, parse

__all__ = ["DELIVERIES", "Render", "Script", "Segment", "Voice", "parse", "render", "save"]
