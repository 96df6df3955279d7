"""Per-head statistics of captured attention, as a pandas DataFrame (one row per layer and head)."""

from __future__ import annotations

import pandas as pd
import torch

from attention_viz.capture import Capture
from attention_viz.i18n import N_

__all__ = ["COLUMN_LABELS", "STAT_COLUMNS", "head_statistics", "padding_mass"]

# Each statistic's column and what it measures (in English: translate with ``_`` where shown).
STAT_COLUMNS = {
    "entropy": N_("mean row entropy (nats): low = sharp, high = broad"),
    "distance": N_("mean attention distance (tokens between query and key)"),
    "sink": N_("mass on the first real token (the 'attention sink')"),
    "previous": N_("weight on the previous token"),
    "padding": N_("mass on padding keys (should be 0 with the padding mask on)"),
}
# The columns' names as a table header shows them (the frame keeps the names above, which code reads).
COLUMN_LABELS = {
    "rank": N_("rank"),
    "layer": N_("layer"),
    "head": N_("head"),
    "kv_head": N_("kv_head"),
    "entropy": N_("entropy"),
    "distance": N_("distance"),
    "sink": N_("sink"),
    "previous": N_("previous"),
    "padding": N_("padding"),
}


def _row_weights(weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Average a per-row quantity over the selected rows, per head.

    Shape: ``weights`` is ``(B, H, T)`` per-row values, ``rows`` is ``(B, H, T)`` bool; returns ``(H,)``.
    """
    count = rows.sum(dim=(0, 2)).clamp(min=1)
    return (weights * rows).sum(dim=(0, 2)) / count


def padding_mass(weights: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Attention mass that real query rows put on padding keys, averaged per head.

    Shape: ``weights`` is ``(B, H, T, T)``, ``attention_mask`` is ``(B, T)``; returns ``(H,)``.
    """
    real = attention_mask.bool()
    on_padding = (weights * (~real)[:, None, None, :]).sum(-1)  # (B, H, T)
    rows = real[:, None, :].expand_as(on_padding)
    return _row_weights(on_padding, rows)


def head_statistics(result: Capture) -> pd.DataFrame:
    """Entropy, distance, sink, previous-token and padding mass for every captured head.

    Averages run over real (non-padding), non-empty query rows of every item.
    """
    real = result.attention_mask.bool()  # (B, T)
    length = real.shape[1]
    index = torch.arange(length)
    distance = (index[:, None] - index[None, :]).abs().float()  # (T, T)
    first_real = real.float().argmax(dim=1)  # (B,): left padding moves the first token
    frames = []
    for layer, captured in sorted(result.layers.items()):
        weights = captured.weights.float()  # (B, H, T, T)
        rows = real[:, None, :] & ~captured.empty_rows  # (B, H, T)
        entropy = torch.special.entr(weights).sum(-1)  # (B, H, T): Σ −w·ln w, with 0·ln 0 = 0
        mean_distance = (weights * distance).sum(-1)  # (B, H, T)
        sink = weights[torch.arange(weights.shape[0]), :, :, first_real]  # (B, H, T)
        previous = torch.diagonal(weights, offset=-1, dim1=-2, dim2=-1)  # (B, H, T-1): row i, key i-1
        previous_rows = rows[..., 1:] & real[:, None, :-1]
        heads = weights.shape[1]
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "head": range(heads),
                    "kv_head": captured.kv_head.tolist(),
                    "entropy": _row_weights(entropy, rows).tolist(),
                    "distance": _row_weights(mean_distance, rows).tolist(),
                    "sink": _row_weights(sink, rows).tolist(),
                    "previous": _row_weights(previous, previous_rows).tolist(),
                    "padding": padding_mass(weights, result.attention_mask).tolist(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
