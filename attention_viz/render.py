"""Render one captured layer to a self-contained HTML file or a PNG, for slides."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from attention_viz.capture import Capture
from attention_viz.figures import FigureStyle, escape_label, head_grid, stage_range
from attention_viz.i18n import _

__all__ = ["layer_figure", "render_layer", "standalone_html"]


# Export cells are at least this big, so that every token label fits (up to EXPORT_MAX_WIDTH).
EXPORT_CELL_PX = 18
EXPORT_MIN_WIDTH = 1200
EXPORT_MAX_WIDTH = 6000


def export_width(tokens: int, columns: int = 3) -> int:
    """A width at which a grid of ``columns`` heads gives every token its own readable label."""
    return min(EXPORT_MAX_WIDTH, max(EXPORT_MIN_WIDTH, columns * tokens * EXPORT_CELL_PX + 400))


def layer_figure(result: Capture, layer: int, item: int = 0, style: FigureStyle = FigureStyle()) -> go.Figure:
    """All heads of one layer for one batch item, as the app's explorer draws them, wide enough
    for every token label, with square cells, titled with the model, layer, item and masks (in
    the run's language: :func:`attention_viz.i18n.language`)."""
    captured = result.layer(layer)
    weights = captured.weights[item]  # (H, T, T)
    tokens = result.tokens[item]
    figure = head_grid(
        weights,
        tokens,
        tokens,
        stage_range("weights", weights, style.palette),
        allowed=result.mask_for(layer)[item, 0],
        columns=3,
        style=style,
        width_px=export_width(len(tokens)),
        pad_rows=result.pad_rows[item],
        annotate=False,
        row_sums=False,
    )
    title = _("{model} · layer {layer} · text {item} · {masks}").format(
        model=result.model_name, layer=layer, item=item, masks=result.policy.describe()
    )
    if result.policy.padding_mask or len(result.tokens) > 1:
        title += " · " + (
            _("pads on the left") if result.policy.padding_side == "left" else _("pads on the right")
        )
    figure.update_layout(
        title={"text": escape_label(title), "x": 0.01, "font": {"size": style.font_size + 5}},
        margin={"t": figure.layout.margin.t + 50},
        height=figure.layout.height + 50,
    )
    return figure


def standalone_html(figure: go.Figure) -> str:
    """HTML with plotly.js embedded, so it opens offline (no CDN)."""
    return figure.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def render_layer(result: Capture, layer: int, item: int, out: str) -> None:
    """Write the layer figure to ``out``: .html self-contained, or .png through kaleido, which
    drives the system's Chromium."""
    if not 0 <= item < len(result.tokens):
        from attention_viz.errors import UserFacingError

        raise UserFacingError(
            _("Item {item} does not exist: the batch has items 0–{last}.").format(
                item=item, last=len(result.tokens) - 1
            )
        )
    figure = layer_figure(result, layer, item)
    path = Path(out)
    if path.suffix.lower() == ".html":
        path.write_text(standalone_html(figure), encoding="utf-8")
    else:
        figure.write_image(path, width=int(figure.layout.width), height=int(figure.layout.height), scale=2)
