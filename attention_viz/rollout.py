"""Attention rollout (Abnar & Zuidema, 2020): how much each input token feeds each position."""

from __future__ import annotations

import torch

__all__ = ["attention_rollout"]


def attention_rollout(layer_weights: list[torch.Tensor], residual: float = 0.5) -> torch.Tensor:
    """Multiply head-averaged attention through the layers, mixing in the residual connection.

    Each layer's matrix is ``residual·I + (1 − residual)·mean_h(W)``, rows renormalised, and the
    product runs from the first layer to the last. Empty (all-zero) rows stay zero.

    Args:
        layer_weights: one ``(B, H, T, T)`` weights tensor per layer, first layer first.
        residual: share of the identity (the residual stream) in each layer.

    Shape: returns ``(B, T, T)``: row ``i`` is how much each input token reaches position ``i``.
    """
    if not layer_weights:
        raise ValueError("Rollout needs at least one layer.")
    batch, _, length, _ = layer_weights[0].shape
    identity = torch.eye(length).expand(batch, length, length)
    rollout = identity
    for weights in layer_weights:
        mean = weights.float().mean(dim=1)  # (B, T, T)
        live = mean.sum(-1, keepdim=True) > 0  # (B, T, 1): empty rows stay empty
        mixed = residual * identity + (1 - residual) * mean
        mixed = torch.where(live, mixed / mixed.sum(-1, keepdim=True), torch.zeros_like(mixed))
        rollout = mixed @ rollout  # (B, T, T)
    return rollout
