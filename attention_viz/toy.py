"""A toy tokenizer and embedding for the Playground. Honest about being a toy.

Nothing here is learned. Each distinct word gets a fixed pseudo-random vector (seeded by the
word itself and the seed you pick), and a sinusoidal position signal is added on top, as in
"Attention Is All You Need". Two consequences are worth saying out loud in class:

* The same word gets the same vector wherever it stands, so repeated words look alike and
  attend to each other (the random projections tie queries to keys, see
  :func:`attention_viz.attention.multi_head_self_attention`).
* Any other pattern you see is an accident of random weights, not language understanding.
  For real attention, use a real model.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass

import torch

from attention_viz.policy import document_positions

__all__ = ["PAD", "ToyBatch", "sinusoidal_positions", "tokenize", "toy_batch", "word_vector"]

PAD = "[PAD]"
_WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# Position signal strength relative to the unit-variance word vectors: weak enough that the
# same word at two positions still looks alike, strong enough to break ties between them.
POSITION_WEIGHT = 0.5


def tokenize(text: str) -> list[str]:
    """Split text into lower-case words and punctuation marks."""
    return [token.lower() for token in _WORD.findall(text)]


def word_vector(word: str, width: int, seed: int) -> torch.Tensor:
    """A fixed pseudo-random vector for ``word``: same word and seed, same vector.

    Shape: returns ``(D,)``.
    """
    # crc32 is stable across runs, unlike Python's salted hash().
    word_seed = zlib.crc32(f"{seed}:{word}".encode())
    generator = torch.Generator().manual_seed(word_seed)
    return torch.randn(width, generator=generator)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """The sine/cosine position encoding of Vaswani et al. (2017).

    Shape: returns ``(T, D)``.
    """
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (T, 1)
    frequency = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    encoding = torch.zeros(length, width)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency[: width // 2])
    return encoding


@dataclass(frozen=True)
class ToyBatch:
    """Sentences tokenised, truncated or padded to one length, and embedded.

    Attributes:
        tokens: per sentence, ``T`` display tokens (``[PAD]`` for padding).
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for ``[PAD]``.
        embeddings: ``(B, T, D)`` word vectors plus positions.
        truncated: per sentence, how many tokens were cut off the end.
        documents: ``(B, T)`` packed: the sentence index of each token (-1 for padding); None
            when each sentence has a row of its own.
    """

    tokens: list[list[str]]
    attention_mask: torch.Tensor
    embeddings: torch.Tensor
    truncated: list[int]
    documents: torch.Tensor | None = None


def toy_batch(
    sentences: list[str],
    length: int | None,
    width: int,
    seed: int,
    padding_side: str = "right",
    pack: bool = False,
    reset_positions: bool = True,
) -> ToyBatch:
    """Tokenise sentences, pad or truncate them to ``length``, and embed them.

    Args:
        sentences: one or more non-empty sentences.
        length: tokens per row; None means the longest sentence's length (packed: all of them).
        width: embedding width ``D`` (even).
        seed: seeds the word vectors.
        padding_side: ``"right"`` or ``"left"``: where ``[PAD]`` tokens go.
        pack: put every sentence into one row, one after another (``documents`` says whose each
            token is), instead of one row per sentence.
        reset_positions: packed: the position signal restarts at 0 at each sentence.

    Shape: ``embeddings`` is ``(B, T, D)``, ``attention_mask`` and ``documents`` are ``(B, T)``.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
    if width % 2:
        raise ValueError(f"The model width must be even for sinusoidal positions, got {width}.")
    words = [tokenize(sentence) for sentence in sentences]
    if not words or any(not sentence for sentence in words):
        raise ValueError("Every sentence needs at least one word.")
    if length is None:
        length = sum(map(len, words)) if pack else max(len(sentence) for sentence in words)
    if length < 1:
        raise ValueError(f"The sequence length must be at least 1, got {length}.")

    def pad(row: list, filler: object) -> list:
        padding = [filler] * (length - len(row))
        return padding + row if padding_side == "left" else row + padding

    if pack:
        kept = [
            sentence[: max(0, length - sum(map(len, words[:index])))] for index, sentence in enumerate(words)
        ]
        rows = [[token for sentence in kept for token in sentence]]
        owners = [[index for index, sentence in enumerate(kept) for _ in sentence]]
        truncated = [len(sentence) - len(part) for sentence, part in zip(words, kept, strict=True)]
    else:
        rows = [sentence[:length] for sentence in words]
        owners = [[index] * len(row) for index, row in enumerate(rows)]
        truncated = [max(0, len(sentence) - length) for sentence in words]
    tokens = [pad(row, PAD) for row in rows]
    documents = torch.tensor([pad(row, -1) for row in owners])  # (B, T)
    attention_mask = torch.tensor([[int(token != PAD) for token in row] for row in tokens])
    vectors = torch.stack(
        [torch.stack([word_vector(token, width, seed) for token in row]) for row in tokens]
    )  # (B, T, D)
    if pack and reset_positions:
        positions = sinusoidal_positions(length, width)[document_positions(attention_mask, documents)]
    else:
        positions = sinusoidal_positions(length, width)[None]  # (1, T, D)
    embeddings = vectors + POSITION_WEIGHT * positions
    return ToyBatch(
        tokens=tokens,
        attention_mask=attention_mask,
        embeddings=embeddings,
        truncated=truncated,
        documents=documents if pack else None,
    )
