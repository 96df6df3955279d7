"""The packing check's picture: how much attention crosses documents, per layer and head."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from attention_viz.figures import FigureStyle
from attention_viz.i18n import _

__all__ = ["cross_mass_figure"]


def cross_mass_figure(mass: torch.Tensor, title: str, style: FigureStyle, width_px: int = 600) -> go.Figure:
    """A layers × heads heatmap of the attention mass that crosses documents (0 to 1).

    Args:
        mass: ``(L, H)`` per layer and head, the mean share of a query's attention on other
            documents' keys.

    The colour scale is fixed at 0–1, so a kept-apart packing is uniformly the lowest colour
    and never rescaled into a pattern; hover gives the exact value.
    """
    values = mass.detach().float().numpy()
    layers, heads = values.shape
    cell = max(8.0, min(40.0, (width_px - 160) / max(heads, 1), 700 / max(layers, 1)))
    height = int(cell * layers + 110 + 2 * style.font_size)
    hover = np.vectorize(lambda value: f"{value:.4f}")(values)  # exact text, independent of rounding
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=[_("head {head}").format(head=head) for head in range(heads)],
            y=[_("layer {layer}").format(layer=layer) for layer in range(layers)],
            zmin=0.0,
            zmax=1.0,
            colorscale=style.palette,
            customdata=hover,
            hovertemplate="%{y} · %{x}<br>"
            + _("cross-document attention: {value}").format(value="%{customdata}")
            + "<extra></extra>",
            colorbar={"title": {"text": _("share")}, "tickfont": {"size": style.tick_size}},
            showscale=style.show_colorbar,
        )
    )
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 2}, "y": 0.995, "yanchor": "top"},
        width=int(width_px),
        height=height,
        margin={"l": 80, "r": 20, "t": 50 + 2 * style.font_size, "b": 30},
        font={"size": style.font_size},
        yaxis={"autorange": "reversed", "tickfont": {"size": style.tick_size}},
        xaxis={"side": "top", "tickfont": {"size": style.tick_size}},
    )
    return figure
