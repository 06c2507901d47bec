"""A script with delivery tags, cut into segments: ``[Whispering] I have a secret. [Angry] …``.

Rules (the studio shows the cut before rendering, so they are easy to check):

* a tag is ``[Words]`` or ``【Words】``: 1–40 characters of letters (any script), spaces,
  hyphens and apostrophes, starting with a letter. Anything else in brackets is ordinary
  text (``[1, 2, 3]``, ``[sic]``-like notes with digits, ``[]``);
* tags do not nest: in ``[Angry [Loud]] text`` only ``[Loud]`` is a tag, the rest is text;
* each tag starts a segment that runs to the next tag; text before the first tag is a
  segment without a tag; a segment with no words is dropped and reported;
* known tags map to an instruction; an unknown tag passes through as a free-form
  instruction and is reported as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Deliveries the studio knows, by lower-case tag; anything else is passed through as is.
DELIVERIES = {
    "whispering": "Whisper, softly and close to the microphone.",
    "angry": "Speak angrily, with tension and force.",
    "excited": "Speak excitedly, fast and bright.",
    "sad": "Speak sadly, slowly and quietly.",
    "happy": "Speak happily, with a smile in the voice.",
    "calm": "Speak calmly and evenly.",
    "shouting": "Shout, loud and intense.",
    "laughing": "Speak while laughing.",
    "serious": "Speak seriously and firmly.",
}

_TAG = re.compile(r"\[([^\W\d_][\w '\-]{0,39})\]|【([^\W\d_][\w '\-]{0,39})】")


@dataclass(frozen=True)
class Segment:
    text: str
    tag: str | None = None
    #: The delivery instruction for this segment (None: no tag).
    instruct: str | None = None
    #: False for a tag the studio does not know (passed through as free-form).
    known: bool = True


@dataclass(frozen=True)
class Script:
    segments: list[Segment]
    #: What the user should know about the cut (dropped empty segments, unknown tags).
    notes: list[str]


def parse(script: str) -> Script:
    """Cut ``script`` into segments at every tag (see the module doc for the rules)."""
    pieces: list[tuple[str | None, str]] = []
    tag, start = None, 0
    for match in _TAG.finditer(script):
        name = _valid(match.group(1) or match.group(2))
        if name is None:
            continue
        pieces.append((tag, script[start:match.start()]))
        tag, start = name, match.end()
    pieces.append((tag, script[start:]))
    segments, notes = [], []
    for name, text in pieces:
        text = " ".join(text.split())
        if not _has_words(text):
            if name is not None:
                notes.append(f"[{name}] has no text and was dropped")
            continue
        if name is None:
            segments.append(Segment(text))
            continue
        delivery = DELIVERIES.get(name.lower())
        if delivery is None:
            notes.append(f"[{name}] is not a known delivery; it is passed to the model as "
                         f"the instruction {name!r}")
        segments.append(Segment(text, name, delivery or name, delivery is not None))
    return Script(segments, notes)


def to_rows(script: Script) -> list[list[str]]:
    """The segments as editable rows: tag, instruction, text (empty strings for none)."""
    return [[s.tag or "", s.instruct or "", s.text] for s in script.segments]


def from_rows(rows: list[list[str]]) -> Script:
    """A script from edited rows (tag, instruction, text): what the studio's table renders.

    An empty instruction under a known tag takes the tag's delivery; an instruction that is
    not the tag's delivery counts as free-form. Rows without words are dropped and reported.
    """
    segments, notes = [], []
    for number, row in enumerate(rows, 1):
        tag, instruct, text = ([str(v or "").strip() for v in row] + ["", "", ""])[:3]
        text = " ".join(text.split())
        if not _has_words(text):
            notes.append(f"row {number} has no text and was dropped")
            continue
        delivery = DELIVERIES.get(tag.lower()) if tag else None
        instruct = instruct or delivery or tag or ""
        segments.append(Segment(text, tag or None, instruct or None,
                                instruct == (delivery or "")))
    return Script(segments, notes)


def _valid(name: str | None) -> str | None:
    if name is None:
        return None
    name = " ".join(name.split())
    if any(ch.isdigit() for ch in name):
        return None
    return name or None


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)
