"""Attention rollout (Abnar & Zuidema, 2020): how much each input token feeds each position."""

from __future__ import annotations

import torch

__all__ = ["attention_rollout", "rollout_reach"]


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


def rollout_reach(layer_masks: list[torch.Tensor]) -> torch.Tensor:
    """Where :func:`attention_rollout` of weights under ``layer_masks`` can be non-zero.

    Position ``i`` reaches input token ``j`` if a chain of allowed cells leads from ``i`` back to
    ``j`` through the layers, or if ``i`` is ``j`` (the residual carries every token on). A rollout
    drawn with one layer's mask would grey cells that a chain of layers does reach: under a window
    of w tokens in every layer (w − 1 back), rollout reaches L·(w − 1) tokens back after L layers.

    Args:
        layer_masks: one boolean mask per layer, first layer first, each ``(B, 1, T, T)`` or
            ``(B, H, T, T)`` (True = may attend; a cell counts if any head may attend it).

    Shape: returns ``(B, T, T)`` bool. As in the rollout, a row with every key masked in some
    layer (an empty row) is empty from that layer on.
    """
    if not layer_masks:
        raise ValueError("Rollout needs at least one layer.")
    batch, _, length, _ = layer_masks[0].shape
    identity = torch.eye(length, dtype=torch.bool).expand(batch, length, length)
    reach = identity
    previous_step, settled = None, False
    for mask in layer_masks:
        allowed = mask.any(dim=1)  # (B, T, T)
        live = allowed.any(dim=-1, keepdim=True)  # (B, T, 1)
        step = (identity | allowed) & live  # the cells the layer's mixed matrix is non-zero in
        # A step that left the reach as it was leaves it so when it comes again (a causal mask in
        # every layer settles after the second): no product to compute.
        if settled and torch.equal(step, previous_step):
            continue
        composed = (step.float() @ reach.float()) > 0  # (B, T, T), exact: counts stay below 2**24
        settled = torch.equal(composed, reach)
        reach, previous_step = composed, step
    return reach
