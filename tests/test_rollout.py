"""Attention rollout and where it can be non-zero, against a slow loop written out step by step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attention_viz.masks import causal_mask
from attention_viz.rollout import attention_rollout, rollout_reach


def masked_weights(mask: torch.Tensor, heads: int, seed: int) -> torch.Tensor:
    """Softmax of random scores under ``mask`` (``(B, 1 or H, T, T)``, True = may attend); an
    empty row is all zeros. Shape: ``(B, H, T, T)``."""
    batch, _, length, _ = mask.shape
    scores = torch.randn(batch, heads, length, length, generator=torch.Generator().manual_seed(seed))
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1).nan_to_num(0.0)


def slow_rollout(layer_weights: list[torch.Tensor], residual: float = 0.5) -> np.ndarray:
    """Rollout one text and one row at a time, in float64: each layer's row is
    ``residual·e_i + (1 − residual)·mean_h(W_i)``, renormalised, skipped (zero) when empty."""
    batch, _, length, _ = layer_weights[0].shape
    out = np.zeros((batch, length, length))
    for b in range(batch):
        rolled = np.eye(length)
        for weights in layer_weights:
            mean = weights[b].double().mean(0).numpy()
            mixed = np.zeros((length, length))
            for i in range(length):
                if mean[i].sum() > 0:
                    row = (1 - residual) * mean[i]
                    row[i] += residual
                    mixed[i] = row / row.sum()
            rolled = mixed @ rolled
        out[b] = rolled
    return out


def windowed_causal(length: int, window: int) -> torch.Tensor:
    """``(1, 1, T, T)``: causal, and each query sees only its ``window`` latest keys (itself included)."""
    query = torch.arange(length)[:, None]
    key = torch.arange(length)[None, :]
    return causal_mask(length) & (query - key < window)


def test_rollout_equals_the_slow_loop():
    mask = causal_mask(7)
    layers = [masked_weights(mask.expand(2, 1, 7, 7), heads=3, seed=seed) for seed in range(4)]
    np.testing.assert_allclose(attention_rollout(layers).numpy(), slow_rollout(layers), atol=1e-6)


@pytest.mark.parametrize("window", [2, 3])
def test_a_window_in_every_layer_reaches_further_than_one_layers_window(window):
    """Rollout reaches back a window per layer: one layer's mask would grey cells it reaches."""
    length, layers = 10, 4
    mask = windowed_causal(length, window)
    weights = [masked_weights(mask, heads=2, seed=seed) for seed in range(layers)]
    reach = rollout_reach([mask] * layers)[0]
    nonzero = attention_rollout(weights)[0] > 0
    assert torch.equal(reach, nonzero)
    query = torch.arange(length)[:, None]
    key = torch.arange(length)[None, :]
    expected = (key <= query) & (query - key <= layers * (window - 1))
    assert torch.equal(reach, expected)
    assert (reach & ~mask[0, 0]).any(), "some reached cells are masked in every single layer"


def test_reach_is_where_rollout_is_non_zero_under_mixed_masks():
    """Per layer a different mask (causal, windows, per-head masks), a padded second text whose
    [PAD] query rows attend to nothing: the reach is exactly where the rollout is non-zero."""
    length = 9
    causal = causal_mask(length).expand(2, 1, length, length).clone()
    padding = torch.ones(2, length, dtype=torch.bool)
    padding[1, 6:] = False  # text 1: the last three positions are [PAD]
    padded = causal & padding[:, None, None, :] & padding[:, None, :, None]
    per_head = padded.expand(2, 2, length, length).clone()
    per_head[:, 1] &= windowed_causal(length, 2)[0]  # head 1 of that layer has a window
    masks = [padded, windowed_causal(length, 3).expand(2, 1, length, length) & padded, per_head, padded]
    weights = [masked_weights(mask, heads=2, seed=seed) for seed, mask in enumerate(masks)]
    reach = rollout_reach(masks)
    assert torch.equal(reach, torch.from_numpy(slow_rollout(weights) > 0))
    assert not reach[1, 6:].any(), "a [PAD] query row that attends to nothing stays empty"


def test_a_causal_mask_in_every_layer_reaches_the_causal_triangle():
    masks = [causal_mask(6)] * 30
    assert torch.equal(rollout_reach(masks)[0], causal_mask(6)[0, 0])
    with pytest.raises(ValueError):
        rollout_reach([])
