"""The talker's ``generate`` keeping one hidden state a step: the one qwen-tts reads.

qwen-tts calls the talker's ``generate`` with ``output_hidden_states=True`` and reads, of each
step, only the last layer's state (``hid[0][-1]``); transformers keeps every step's tuple of
all 29 layer states until the call ends. On a GPU that is 29 × prompt × 2,048 values for the
prefill (97 MiB in bf16 for an 815-token prompt) and 116 KiB a step, held to the end of
the call. Every loaded talker (``talker_graphs.install``) asks its decoder for the last
state alone; the speech is bit-identical (tested against qwen-tts's own ``generate``).
"""

from __future__ import annotations

from collections.abc import Callable


def last_hidden_only(decoder_forward: Callable) -> Callable:
    """``decoder_forward`` answering ``output_hidden_states`` with the last hidden state
    alone, as a one-element tuple."""

    def forward(*args, **kwargs):
        if not kwargs.get("output_hidden_states"):
            return decoder_forward(*args, **kwargs)
        out = decoder_forward(*args, **{**kwargs, "output_hidden_states": False})
        out["hidden_states"] = (out.last_hidden_state,)
        return out

    return forward
