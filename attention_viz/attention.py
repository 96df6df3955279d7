"""The from-scratch reference implementation of masked scaled dot-product attention.

    scores        = Q Kᵀ · scale                      (scale defaults to 1/√d_k)
    masked_scores = scores + M                        (M = 0 where allowed, −inf where masked)
    weights       = softmax(masked_scores)            (row-wise over keys)
    output        = weights · V

Every stage is returned, not thrown away, so the app can show each one. A query row whose keys
are *all* masked has no meaningful softmax (it would be 0/0 = NaN); by explicit rule such a row
is exactly zero in ``weights`` and ``output`` and is flagged in ``empty_rows``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attention_viz.masks import as_boolean

__all__ = ["AttentionTrace", "MultiHeadTrace", "multi_head_self_attention", "scaled_dot_product_attention"]


@dataclass(frozen=True)
class AttentionTrace:
    """Every stage of one attention call.

    Attributes:
        scores: ``(B, H, Tq, Tk)`` Q Kᵀ · scale, before any mask.
        masked_scores: ``(B, H, Tq, Tk)`` scores with ``-inf`` where the mask forbids.
        weights: ``(B, H, Tq, Tk)`` softmax of ``masked_scores``; rows sum to 1, or are all 0.
        output: ``(B, H, Tq, d_v)`` weights · V.
        empty_rows: ``(B, H, Tq)`` True where every key of that query row is masked.
        mask: ``(B, H, Tq, Tk)`` boolean mask that was applied (True = may attend).
    """

    scores: torch.Tensor
    masked_scores: torch.Tensor
    weights: torch.Tensor
    output: torch.Tensor
    empty_rows: torch.Tensor
    mask: torch.Tensor

    def stage(self, name: str) -> torch.Tensor:
        """Return one stage by name: ``scores``, ``masked_scores``, ``weights`` or ``output``."""
        if name not in STAGES:
            raise ValueError(f"Unknown stage {name!r}; choose one of {', '.join(STAGES)}.")
        return getattr(self, name)


STAGES = ("scores", "masked_scores", "weights", "output")


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> AttentionTrace:
    """Masked attention that returns every stage.

    Args:
        q: ``(B, H, Tq, d)`` queries.
        k: ``(B, H, Tk, d)`` keys.
        v: ``(B, H, Tk, d_v)`` values.
        mask: boolean (or 0/1 integers), broadcastable to ``(B, H, Tq, Tk)``, True = may attend;
            None = no mask. A float mask raises: an additive mask would be read inverted.
        scale: multiplies Q Kᵀ; defaults to ``1/√d``.

    Returns:
        An :class:`AttentionTrace`.

    Shape: ``weights`` is ``(B, H, Tq, Tk)``, ``output`` is ``(B, H, Tq, d_v)``.
    """
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(
            "q, k and v must have shape (batch, heads, tokens, head_dim); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}."
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same head_dim, got {q.shape[-1]} and {k.shape[-1]}.")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k and v need the same number of tokens, got {k.shape[-2]} and {v.shape[-2]}.")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[-1])

    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale)  # (B, H, Tq, Tk)
    if mask is None:
        mask = torch.ones((), dtype=torch.bool, device=q.device)
    mask = as_boolean(mask)  # kept at its own (broadcastable) shape: T² work, not H·T²
    if torch.broadcast_shapes(mask.shape, scores.shape) != scores.shape:
        raise ValueError(
            f"The mask of shape {tuple(mask.shape)} does not broadcast to (batch, heads, queries, keys) = "
            f"{tuple(scores.shape)}."
        )
    # -inf where masked: the same as scores + to_additive(mask), without a second T² buffer.
    masked_scores = scores.masked_fill(~mask, float("-inf"))
    empty_rows = (~mask.any(dim=-1)).expand(scores.shape[:-1])  # (B, H, Tq)
    # A fully masked row is softmax(-inf, ..., -inf) = NaN; by rule it becomes exactly zero.
    weights = torch.softmax(masked_scores, dim=-1).masked_fill_(empty_rows[..., None], 0.0)
    output = torch.matmul(weights, v)  # (B, H, Tq, d_v)
    mask = mask.expand(scores.shape)  # (B, H, Tq, Tk), a view
    return AttentionTrace(
        scores=scores,
        masked_scores=masked_scores,
        weights=weights,
        output=output,
        empty_rows=empty_rows,
        mask=mask,
    )


@dataclass(frozen=True)
class MultiHeadTrace:
    """A multi-head self-attention pass: the per-head trace and the merged result.

    Attributes:
        heads: the :class:`AttentionTrace` of all heads at once.
        q: ``(B, H, T, d)`` projected queries; ``k`` and ``v`` likewise.
        merged: ``(B, T, D)`` heads concatenated and passed through the output projection.
    """

    heads: AttentionTrace
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    merged: torch.Tensor


def multi_head_self_attention(
    embeddings: torch.Tensor,
    num_heads: int,
    mask: torch.Tensor | None = None,
    seed: int = 0,
    tie_query_key: bool = True,
) -> MultiHeadTrace:
    """Project token embeddings with seeded random weights, split heads, attend, merge.

    The projections are random (there is nothing to train here). With ``tie_query_key`` each
    head's key projection equals its query projection, so a token's query best matches keys
    that look like itself: identical words then attend to each other, which makes the toy
    heatmaps easy to explain. Set it to False for fully independent projections.

    Args:
        embeddings: ``(B, T, D)`` token embeddings; ``D`` must be divisible by ``num_heads``.
        num_heads: number of heads ``H``.
        mask: boolean, broadcastable to ``(B, H, T, T)``, True = may attend.
        seed: seeds the projection weights.
        tie_query_key: use the same projection for queries and keys.

    Shape: ``heads.weights`` is ``(B, H, T, T)``; ``merged`` is ``(B, T, D)``.
    """
    batch, length, width = embeddings.shape
    if num_heads < 1 or width % num_heads != 0:
        raise ValueError(f"Model width {width} must be divisible by the number of heads {num_heads}.")
    head_dim = width // num_heads
    generator = torch.Generator().manual_seed(seed)

    def projection() -> torch.Tensor:
        # Scaled so projected vectors keep roughly the input's norm.
        return torch.randn(width, width, generator=generator, dtype=embeddings.dtype) / math.sqrt(width)

    w_query, w_key, w_value, w_out = projection(), projection(), projection(), projection()
    if tie_query_key:
        w_key = w_query

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        return x.view(batch, length, num_heads, head_dim).transpose(1, 2)  # (B, H, T, d)

    q = split_heads(embeddings @ w_query)
    k = split_heads(embeddings @ w_key)
    v = split_heads(embeddings @ w_value)
    trace = scaled_dot_product_attention(q, k, v, mask=mask)
    concatenated = trace.output.transpose(1, 2).reshape(batch, length, width)  # (B, T, D)
    return MultiHeadTrace(heads=trace, q=q, k=k, v=v, merged=concatenated @ w_out)
