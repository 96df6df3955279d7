"""The leak meter: how much attention real tokens pay to padding, per layer and head.

With the padding mask on, every padding key is masked before the softmax, so the meter reads
exactly 0. With it off (a forgotten ``attention_mask``), real query rows spread some of their
weight over the padding keys: that share is the leak.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import torch

from attention_viz.capture import Capture
from attention_viz.errors import UserFacingError
from attention_viz.i18n import _
from attention_viz.stats import padding_mass

__all__ = ["UNMASKED_PAD_FILL", "leak_frame", "leak_meter", "padded_items", "padding_runs", "shade_padding"]

# Padding the mask does *not* hide: translucent (the true colours still show through) and
# outlined in orange, so it cannot be confused with the solid grey of masked cells.
UNMASKED_PAD_FILL = "rgba(140, 140, 140, 0.55)"
UNMASKED_PAD_LINE = "#e8590c"


def padded_items(result: Capture) -> list[int]:
    """The batch items that contain at least one padding token."""
    return [item for item, pads in enumerate(result.pad_rows.tolist()) if any(pads)]


def leak_meter(result: Capture) -> torch.Tensor:
    """Mean attention mass that real query rows put on padding keys, for every captured layer and head.

    Only items that contain padding are averaged: an item without padding cannot leak, and
    counting its rows would only dilute the meter. Padding query rows are left out too: they
    belong to no real token (see :func:`attention_viz.stats.padding_mass`).

    Returns:
        ``(L, H)`` float tensor, rows in the order of ``sorted(result.layers)``; all zeros when
        no item is padded.

    Shape: each layer's weights are ``(B, H, T, T)``; returns ``(L, H)``.
    """
    if not result.layers:
        raise UserFacingError(_("The leak meter needs at least one captured layer; capture every layer."))
    items = torch.tensor(padded_items(result), dtype=torch.long)
    rows = []
    for _layer, captured in sorted(result.layers.items()):
        heads = captured.weights.shape[1]
        if items.numel() == 0:
            rows.append(torch.zeros(heads))
            continue
        weights = captured.weights[items].float()  # (B', H, T, T): padded items only
        rows.append(padding_mass(weights, result.attention_mask[items]))  # (H,)
    return torch.stack(rows)  # (L, H)


def leak_frame(leak: torch.Tensor, layers: list[int] | None = None) -> pd.DataFrame:
    """The meter as a table: one row per layer, one column per head, plus the mean over heads
    (headed in the run's language).

    Args:
        leak: ``(L, H)`` from :func:`leak_meter`.
        layers: the layer index of each row; defaults to ``0..L-1``.

    Shape: ``leak`` is ``(L, H)``; returns ``L`` rows and ``H + 1`` columns.
    """
    count, heads = leak.shape
    layers = list(range(count)) if layers is None else list(layers)
    if len(layers) != count:
        raise ValueError(f"Got {len(layers)} layer labels for a meter with {count} rows.")
    frame = pd.DataFrame(
        leak.detach().cpu().double().numpy(),
        index=pd.Index(layers, name=_("layer")),
        columns=[_("head {head}").format(head=head) for head in range(heads)],
    )
    frame[_("mean")] = frame.mean(axis=1)
    return frame


def padding_runs(is_pad: list[bool]) -> list[tuple[int, int]]:
    """Contiguous stretches of padding as ``(first, last)`` positions, inclusive.

    >>> padding_runs([True, True, False, False, True])
    [(0, 1), (4, 4)]
    """
    runs: list[tuple[int, int]] = []
    start = None
    for position, pad in enumerate([*is_pad, False]):
        if pad and start is None:
            start = position
        elif not pad and start is not None:
            runs.append((start, position - 1))
            start = None
    return runs


def shade_padding(figure: go.Figure, is_pad: list[bool], label: str | None = None) -> go.Figure:
    """Shade padding rows and columns of a single heatmap that the mask left visible, with a
    note above it (``label``; None = "padding (not masked)" in the run's language).

    The shading is layout shapes on top of the heatmap: the heatmap's values stay the true
    weights. Rows and columns are category positions ``0..T-1`` as
    :func:`attention_viz.figures.heatmap` draws them.

    Shape: ``is_pad`` has ``T`` entries, one per query row and key column.
    """
    runs = padding_runs(is_pad)
    label = _("padding (not masked)") if label is None else label
    style = {"fillcolor": UNMASKED_PAD_FILL, "line": {"color": UNMASKED_PAD_LINE, "width": 2, "dash": "dot"}}
    for first, last in runs:
        # Keys (columns) across every row, then queries (rows) across every column.
        figure.add_shape(
            type="rect", xref="x", yref="y domain", x0=first - 0.5, x1=last + 0.5, y0=0, y1=1, **style
        )
        figure.add_shape(
            type="rect", xref="x domain", yref="y", x0=0, x1=1, y0=first - 0.5, y1=last + 0.5, **style
        )
    if runs:
        figure.add_annotation(
            text=f"▨ {label}",
            xref="paper",
            yref="paper",
            x=0,
            y=1,
            yanchor="bottom",
            xanchor="left",
            showarrow=False,
            font={"color": UNMASKED_PAD_LINE},
        )
    return figure
