"""Display tokens: what a person should read on an axis, from a tokenizer's ids."""

from __future__ import annotations

import torch

__all__ = ["PAD_LABEL", "clean_token", "display_tokens"]

PAD_LABEL = "[PAD]"
_MARKERS = {"Ġ": " ", "▁": " ", "Ċ": "\n", "ĉ": "\t"}


def clean_token(raw: str, decoded: str) -> str:
    """A readable label: the decoded text when it is whole, else the raw token with markers mapped.

    Leading spaces are dropped, newlines and tabs become ``↵`` and ``⇥``, and a token that is
    only white space is shown as ``␣``.
    """
    text = decoded if decoded and "\ufffd" not in decoded else "".join(_MARKERS.get(c, c) for c in raw)
    text = text.replace("\n", "↵").replace("\t", "⇥").strip(" ")
    return text or "␣"


def display_tokens(tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[str]]:
    """Per item, one label per position; padding positions read ``[PAD]``.

    Shape: ``input_ids`` and ``attention_mask`` are ``(B, T)``.
    """
    labels = []
    for ids, real in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
        raw = tokenizer.convert_ids_to_tokens(ids)
        row = []
        for token_id, token, is_real in zip(ids, raw, real, strict=True):
            if not is_real:
                row.append(PAD_LABEL)
                continue
            row.append(clean_token(token, tokenizer.decode([token_id])))
        labels.append(row)
    return labels
