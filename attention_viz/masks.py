"""Every attention mask the app shows, in one convention.

Convention: a mask is a boolean tensor where ``True`` means "this query may attend to this key".
It is broadcastable to ``(batch, head, query, key)``. Builders return the smallest shape that
broadcasts (e.g. ``(1, 1, T, T)`` for a causal mask), masks combine with a logical AND
(:func:`combine`), and a mask turns into additive ``0 / -inf`` values only at the very last step
(:func:`to_additive`), right before the softmax.

In the drawings below, rows are queries, columns are keys, ``■`` means "may attend" and ``⬚``
means "masked".
"""

from __future__ import annotations

import torch

__all__ = [
    "as_boolean",
    "bidirectional_prefix_mask",
    "block_diagonal_mask",
    "causal_mask",
    "chunked_mask",
    "combine",
    "full_mask",
    "padding_mask",
    "prefix_lm_mask",
    "sink_mask",
    "sliding_window_mask",
    "to_additive",
    "render_mask",
]


def _positions(length: int, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Query and key index grids, built from index ranges so no mask has a length cap.

    Shape: returns ``(T, 1)`` query indices and ``(1, T)`` key indices.
    """
    if length < 1:
        raise ValueError(f"A mask needs at least one position, got length={length}.")
    index = torch.arange(length, device=device)
    return index[:, None], index[None, :]  # (T, 1), (1, T)


def full_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Every query may attend to every key (the encoder default).

    Shape: returns ``(1, 1, T, T)``.
    """
    _positions(length, device)  # validates the length
    return torch.ones(1, 1, length, length, dtype=torch.bool, device=device)


def causal_mask(length: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Query ``i`` may attend to keys ``0..i``: no peeking at the future.

    For ``length=5``::

        0 ■ ⬚ ⬚ ⬚ ⬚
        1 ■ ■ ⬚ ⬚ ⬚
        2 ■ ■ ■ ⬚ ⬚
        3 ■ ■ ■ ■ ⬚
        4 ■ ■ ■ ■ ■

    Shape: returns ``(1, 1, T, T)``.
    """
    query, key = _positions(length, device)
    return (key <= query)[None, None]  # (1, 1, T, T)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """No query may attend to a padding key.

    ``attention_mask`` is the tokenizer's ``(B, T)`` tensor of 1 (real token) and 0 (padding).
    For ``attention_mask=[[1, 1, 1, 0, 0]]`` (right padding)::

        0 ■ ■ ■ ⬚ ⬚
        1 ■ ■ ■ ⬚ ⬚
        2 ■ ■ ■ ⬚ ⬚
        3 ■ ■ ■ ⬚ ⬚
        4 ■ ■ ■ ⬚ ⬚

    Padded *query* rows keep their real keys here; whether a padded row means anything is the
    caller's business (see ``AttentionTrace.empty_rows`` for rows that end up fully masked).

    Args:
        attention_mask: ``(B, T)`` of 0/1 (or bool).

    Shape: returns ``(B, 1, 1, T)``.
    """
    if attention_mask.ndim != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, tokens), got {tuple(attention_mask.shape)}."
        )
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)


def sliding_window_mask(
    length: int, window: int, causal: bool = True, device: torch.device | str | None = None
) -> torch.Tensor:
    """Query ``i`` sees only keys within ``window`` positions of itself, itself included.

    Causal (``window=3``, ``length=5``): keys ``i-2..i``::

        0 ■ ⬚ ⬚ ⬚ ⬚
        1 ■ ■ ⬚ ⬚ ⬚
        2 ■ ■ ■ ⬚ ⬚
        3 ⬚ ■ ■ ■ ⬚
        4 ⬚ ⬚ ■ ■ ■

    Two-sided (``causal=False``, ``window=3``): keys ``i-2..i+2``::

        0 ■ ■ ■ ⬚ ⬚
        1 ■ ■ ■ ■ ⬚
        2 ■ ■ ■ ■ ■
        3 ⬚ ■ ■ ■ ■
        4 ⬚ ⬚ ■ ■ ■

    Shape: returns ``(1, 1, T, T)``.
    """
    if window < 1:
        raise ValueError(f"A sliding window must be at least 1 token wide, got window={window}.")
    query, key = _positions(length, device)
    distance = query - key  # (T, T): how far back the key is
    if causal:
        allowed = (distance >= 0) & (distance < window)
    else:
        allowed = distance.abs() < window
    return allowed[None, None]  # (1, 1, T, T)


def prefix_lm_mask(length: int, prefix: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A bidirectional prefix of ``prefix`` tokens, causal after it (as in T5's prefix-LM).

    For ``length=5``, ``prefix=2``::

        0 ■ ■ ⬚ ⬚ ⬚
        1 ■ ■ ⬚ ⬚ ⬚
        2 ■ ■ ■ ⬚ ⬚
        3 ■ ■ ■ ■ ⬚
        4 ■ ■ ■ ■ ■

    Shape: returns ``(1, 1, T, T)``.
    """
    if prefix < 0:
        raise ValueError(f"The prefix length cannot be negative, got prefix={prefix}.")
    query, key = _positions(length, device)
    return ((key <= query) | (key < prefix))[None, None]  # (1, 1, T, T)


def bidirectional_prefix_mask(
    positions: torch.Tensor, prefix: int, documents: torch.Tensor | None = None
) -> torch.Tensor:
    """The prefix-LM's bidirectional block: tokens of the same document whose positions are both
    below ``prefix`` see each other, both ways. OR it with :func:`causal_mask` for a prefix-LM.

    For ``positions=[[0, 1, 2, 3, 4]]``, ``prefix=2`` (ORed with causal, it is the drawing of
    :func:`prefix_lm_mask`)::

        0 ■ ■ ⬚ ⬚ ⬚
        1 ■ ■ ⬚ ⬚ ⬚
        2 ⬚ ⬚ ⬚ ⬚ ⬚
        3 ⬚ ⬚ ⬚ ⬚ ⬚
        4 ⬚ ⬚ ⬚ ⬚ ⬚

    Args:
        positions: ``(B, T)`` each token's position within its document.
        prefix: the prefix length (at least 1).
        documents: ``(B, T)`` document index of each token, or None (one document per row).

    Shape: returns ``(B, 1, T, T)``.
    """
    if prefix < 1:
        raise ValueError(f"A prefix must be at least 1 token long, got prefix={prefix}.")
    inside = positions < prefix  # (B, T)
    allowed = inside[:, :, None] & inside[:, None, :]  # (B, T, T)
    if documents is not None:
        allowed = allowed & (documents[:, :, None] == documents[:, None, :])
    return allowed[:, None]  # (B, 1, T, T)


def sink_mask(positions: torch.Tensor, sinks: int) -> torch.Tensor:
    """Attention sinks: the first ``sinks`` tokens (of each document) are visible to every query.
    OR it with :func:`sliding_window_mask` for the StreamingLLM policy.

    For ``positions=[[0, 1, 2, 3, 4]]``, ``sinks=1``::

        0 ■ ⬚ ⬚ ⬚ ⬚
        1 ■ ⬚ ⬚ ⬚ ⬚
        2 ■ ⬚ ⬚ ⬚ ⬚
        3 ■ ⬚ ⬚ ⬚ ⬚
        4 ■ ⬚ ⬚ ⬚ ⬚

    Args:
        positions: ``(B, T)`` each token's position within its document.

    Shape: returns ``(B, 1, 1, T)``.
    """
    if sinks < 1:
        raise ValueError(f"Give at least 1 sink token, got sinks={sinks}.")
    return (positions < sinks)[:, None, None, :]  # (B, 1, 1, T)


def chunked_mask(positions: torch.Tensor, chunk: int) -> torch.Tensor:
    """Chunked attention: a token sees only tokens of its own chunk of ``chunk`` positions.
    AND it with :func:`causal_mask` for chunked causal attention (Llama 4).

    For ``positions=[[0, 1, 2, 3, 4]]``, ``chunk=2``::

        0 ■ ■ ⬚ ⬚ ⬚
        1 ■ ■ ⬚ ⬚ ⬚
        2 ⬚ ⬚ ■ ■ ⬚
        3 ⬚ ⬚ ■ ■ ⬚
        4 ⬚ ⬚ ⬚ ⬚ ■

    Args:
        positions: ``(B, T)`` row indices counted from the first real token (``policy.row_positions``).

    Shape: returns ``(B, 1, T, T)``.
    """
    if chunk < 1:
        raise ValueError(f"A chunk must be at least 1 token long, got chunk={chunk}.")
    index = torch.div(positions, chunk, rounding_mode="floor")  # (B, T)
    return (index[:, :, None] == index[:, None, :])[:, None]  # (B, 1, T, T)


def block_diagonal_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Packed sequences: a token attends only within its own segment.

    For ``segment_ids=[[0, 0, 1, 1, 1]]``::

        0 ■ ■ ⬚ ⬚ ⬚
        1 ■ ■ ⬚ ⬚ ⬚
        2 ⬚ ⬚ ■ ■ ■
        3 ⬚ ⬚ ■ ■ ■
        4 ⬚ ⬚ ■ ■ ■

    Combine with :func:`causal_mask` for packed causal training.

    Args:
        segment_ids: ``(B, T)`` integer segment id of each token.

    Shape: returns ``(B, 1, T, T)``.
    """
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must have shape (batch, tokens), got {tuple(segment_ids.shape)}.")
    return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]  # (B, 1, T, T)


def as_boolean(mask: torch.Tensor) -> torch.Tensor:
    """A mask in our convention (True = may attend), from a bool or 0/1 integer tensor.

    A floating-point mask is refused: it is almost always an additive 0 / −inf mask, where
    ``.bool()`` would silently invert it (0 = allowed would become False = masked).

    Shape: returns the shape of ``mask``.
    """
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(
            f"Masks are boolean here (True = may attend), got {mask.dtype}. An additive 0/−inf mask "
            "is the last step (to_additive), not an input: pass the boolean mask it was made from."
        )
    return mask.bool()


def combine(*masks: torch.Tensor | None) -> torch.Tensor | None:
    """AND masks together: a key is visible only if every mask allows it.

    ``None`` entries mean "no restriction" and are skipped; if all are ``None`` the result is
    ``None``.

    Shape: returns the broadcast shape of the inputs.
    """
    present = [mask for mask in masks if mask is not None]
    if not present:
        return None
    result = as_boolean(present[0])
    for mask in present[1:]:
        result = result & as_boolean(mask)
    return result


def to_additive(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean mask into additive scores: 0 where allowed, ``-inf`` where masked.

    We use a true ``float("-inf")``, not ``torch.finfo(dtype).min``: after adding it, a masked
    cell's exp is exactly 0. A fully masked row then becomes NaN in a plain softmax, which is
    why :func:`attention_viz.attention.scaled_dot_product_attention` zeroes such rows explicitly.

    Shape: returns the shape of ``mask``.
    """
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    minus_inf = torch.full((), float("-inf"), dtype=dtype, device=mask.device)
    return torch.where(mask.bool(), zero, minus_inf)


def render_mask(mask: torch.Tensor) -> str:
    """Draw a ``(T, T)`` boolean mask with ■ (attend) and ⬚ (masked), one row per query.

    Shape: ``mask`` is ``(T, T)``, or any shape whose leading axes are all 1.
    """
    if mask.numel() != mask.shape[-2] * mask.shape[-1]:
        raise ValueError(f"render_mask draws one (T, T) mask; pick one item first, got {tuple(mask.shape)}.")
    square = mask.reshape(mask.shape[-2], mask.shape[-1])
    width = len(str(square.shape[0] - 1))
    rows = []
    for query_index, row in enumerate(square.tolist()):
        cells = " ".join("■" if allowed else "⬚" for allowed in row)
        rows.append(f"{query_index:>{width}} {cells}")
    return "\n".join(rows)
