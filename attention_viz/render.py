"""Render one captured layer to a self-contained HTML file or a PNG, for slides."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from attention_viz.capture import Capture
from attention_viz.figures import FigureStyle, head_grid, stage_range

__all__ = ["layer_figure", "render_layer", "standalone_html"]


def layer_figure(result: Capture, layer: int, item: int = 0, style: FigureStyle = FigureStyle()) -> go.Figure:
    """All heads of one layer for one batch item, as the app's explorer draws them."""
    captured = result.layer(layer)
    weights = captured.weights[item]  # (H, T, T)
    tokens = result.tokens[item]
    figure = head_grid(
        weights,
        tokens,
        tokens,
        stage_range("weights", weights, style.palette),
        allowed=result.mask[item, 0],
        columns=3,
        style=style,
    )
    figure.update_layout(
        title={"text": f"{result.model_name} · layer {layer} · {result.policy.describe()}", "x": 0.01},
        margin={"t": 80},
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

        raise UserFacingError(f"Item {item} does not exist: the batch has items 0–{len(result.tokens) - 1}.")
    figure = layer_figure(result, layer, item)
    path = Path(out)
    if path.suffix.lower() == ".html":
        path.write_text(standalone_html(figure), encoding="utf-8")
    else:
        figure.write_image(path, width=1200, height=int(figure.layout.height or 800), scale=2)
