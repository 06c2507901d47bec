"""A tiny byte-level BPE text tokenizer in the exact form Qwen3-TTS expects.

Qwen3-TTS slices token ids by position: the role prefix ``<|im_start|>assistant\\n``
must be exactly 3 tokens and the suffix ``<|im_end|>\\n<|im_start|>assistant\\n``
exactly 5. A plain byte alphabet would split ``assistant`` into 9 tokens, so the
merges below build the few role words as single tokens. Everything else is bytes,
which keeps the vocabulary small (and the text embedding table tiny).
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import Qwen2TokenizerFast

#: Qwen2's pre-tokenisation pattern (same split as the real checkpoints).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Words that must be one token each (role names used by qwen-tts prompts).
WHOLE_WORDS = ("assistant", "user", "system")

#: Special tokens, in id order after the byte vocabulary and merges.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tts_pad|>",
    "<|tts_text_bos|>",
    "<|tts_text_eod|>",
)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    for word in WHOLE_WORDS:
        for end in range(2, len(word) + 1):
            left, right = word[: end - 1], word[end - 1]
            if word[:end] not in vocab:
                merges.append((left, right))
                vocab[word[:end]] = len(vocab)
    return vocab, merges


def build_text_tokenizer() -> tuple[Qwen2TokenizerFast, dict[str, int]]:
    """Return the tokenizer and the ids of its special tokens, keyed by token text."""
    vocab, merges = _vocab_and_merges()
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=core,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    return tokenizer, ids
