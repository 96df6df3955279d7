"""Display tokens: what a person should read on an axis, from a tokenizer's ids."""

from __future__ import annotations

import torch
from transformers.convert_slow_tokenizer import bytes_to_unicode

__all__ = ["PAD_LABEL", "clean_token", "display_tokens", "token_labels"]

PAD_LABEL = "[PAD]"
_MARKERS = {"Ġ": " ", "▁": " ", "Ċ": "\n", "ĉ": "\t"}
# Byte-level BPE (GPT-2, SmolLM2) writes every byte as one printable character ("Ġ" is a space).
_BYTE_OF_CHARACTER = {character: byte for byte, character in bytes_to_unicode().items()}


def _byte_fragment(raw: str) -> str | None:
    """``⟨e6 b3⟩`` for a byte-level token that holds only part of a UTF-8 character (a piece of a
    Chinese character, an emoji, a zero-width space), else None. Its byte-alphabet spelling
    ("æ³") would read as garbage; its bytes are what it really is."""
    if not raw or any(character not in _BYTE_OF_CHARACTER for character in raw):
        return None
    data = bytes(_BYTE_OF_CHARACTER[character] for character in raw).lstrip(b" ")
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        return "⟨" + data.hex(" ") + "⟩"


def clean_token(raw: str, decoded: str) -> str:
    """A readable label: the decoded text when it is whole, the bytes of a partial character
    (``⟨e6 b3⟩``), else the raw token with markers mapped.

    Leading spaces are dropped, newlines and tabs become ``↵`` and ``⇥``, and a token that is
    only white space is shown as ``␣``.
    """
    if decoded and "\ufffd" not in decoded:
        text = decoded
    else:
        text = _byte_fragment(raw) or "".join(_MARKERS.get(c, c) for c in raw)
    text = text.replace("\n", "↵").replace("\t", "⇥").strip(" ")
    return text or "␣"


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """One :func:`clean_token` label per id, each id decoded alone: the labelling every table and
    axis uses (attention axes, the next-token table).

    Shape: ``ids`` is ``(N,)``; returns ``N`` labels.
    """
    raw = tokenizer.convert_ids_to_tokens(ids)
    return [
        clean_token(token, tokenizer.decode([token_id])) for token_id, token in zip(ids, raw, strict=True)
    ]


def display_tokens(tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[str]]:
    """Per item, one label per position; padding positions read ``[PAD]``.

    Shape: ``input_ids`` and ``attention_mask`` are ``(B, T)``.
    """
    labels = []
    for ids, real in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        row = token_labels(tokenizer, ids)
        labels.append([label if is_real else PAD_LABEL for label, is_real in zip(row, real, strict=True)])
    return labels
