"""The Playground's computation: toy sentences through one multi-head attention layer."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attention_viz.attention import MultiHeadTrace, multi_head_self_attention
from attention_viz.policy import MaskPolicy, check_prefix
from attention_viz.toy import ToyBatch, toy_batch

__all__ = ["PlaygroundResult", "run_playground"]


@dataclass(frozen=True)
class PlaygroundResult:
    """What the Playground shows.

    Attributes:
        batch: the tokenised, padded, embedded sentences.
        policy: the masks that were switched on.
        mask: ``(B, 1, T, T)`` the boolean mask that was applied.
        attention: the multi-head trace (every stage, every head).
    """

    batch: ToyBatch
    policy: MaskPolicy
    mask: torch.Tensor
    attention: MultiHeadTrace

    @property
    def tokens(self) -> list[list[str]]:
        return self.batch.tokens


def run_playground(
    sentences: list[str], policy: MaskPolicy, num_heads: int = 4, width: int = 32, seed: int = 0
) -> PlaygroundResult:
    """Embed ``sentences`` with the toy embedding and run one masked multi-head attention layer.

    The sequence length comes from ``policy.max_length`` (None = the longest sentence); shorter
    sentences are padded with ``[PAD]`` on ``policy.padding_side``. A packed policy puts every
    sentence into one row. ``policy.causal`` must be set (the toy has no default of its own).

    Shape: ``attention.heads.weights`` is ``(B, H, T, T)``.
    """
    batch = toy_batch(
        sentences,
        policy.max_length,
        width,
        seed,
        policy.padding_side,
        pack=policy.pack,
        reset_positions=policy.reset_positions,
    )
    check_prefix(policy, batch.attention_mask, batch.documents)
    mask = policy.build(batch.attention_mask, batch.documents)  # (B, 1, T, T)
    attention = multi_head_self_attention(batch.embeddings, num_heads=num_heads, mask=mask, seed=seed)
    return PlaygroundResult(batch=batch, policy=policy, mask=mask, attention=attention)
