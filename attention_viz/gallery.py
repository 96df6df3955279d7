"""Head gallery: every head of every layer tiled into one image, and the heads typical of a pattern.

A model has hundreds of heads (SmolLM2: 30 layers × 9 heads). Drawing each as its own heatmap
trace would send hundreds of traces to the browser, so the thumbnails are tiled into one RGB
array with a 1-pixel white separator and sent as a single PNG (one ``go.Image``)::

    layer 0   ▦ ▦ ▦ … ▦      each ▦ is one head's (query, key) weights,
    layer 1   ▦ ▦ ▦ … ▦      pooled to at most ``max_cell`` pixels a side
    …
              head 0 … head H-1

Long sequences are pooled block by block: queries by their mean, keys by their sum, so each
pooled row still shows where a query's attention mass goes (a full row still sums to 1).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.colors import get_colorscale, sample_colorscale

from attention_viz.capture import Capture
from attention_viz.errors import UserFacingError
from attention_viz.figures import MASKED_RGB, FigureStyle
from attention_viz.i18n import N_, _

__all__ = [
    "TYPICAL",
    "HeadKind",
    "Thumbnails",
    "pool",
    "selected_heads",
    "stacked_weights",
    "thumbnail_figure",
    "thumbnails",
    "tile",
    "typical_heads",
]

SEPARATOR_RGB = (255, 255, 255)  # white: distinct from the grey of masked cells
HIGHLIGHT_COLOUR = "#e6007e"  # magenta: stands out on every sequential palette we offer
# Above this many tokens a thumbnail is pooled; 48 px keeps the SmolLM2 image under 1500 × 450 px.
MAX_CELL_PX = 48


@dataclass(frozen=True)
class HeadKind:
    """A kind of typical head: which statistic ranks it, and in which direction.

    Attributes:
        label: the button label.
        column: the column of :func:`attention_viz.stats.head_statistics` that ranks heads.
        largest: True = the highest values are the most typical.
        explanation: one sentence on what such a head does.

    ``label`` and ``explanation`` are in English: translate them with ``_`` where they are shown.
    """

    label: str
    column: str
    largest: bool
    explanation: str


TYPICAL: dict[str, HeadKind] = {
    "previous": HeadKind(
        N_("Previous-token heads"),
        "previous",
        True,
        N_("Each token looks mostly at the token just before it."),
    ),
    "sink": HeadKind(
        N_("First-token sink heads"),
        "sink",
        True,
        N_(
            "Most of the attention lands on the first token, a 'sink' for mass that has nowhere useful to go."
        ),
    ),
    "broad": HeadKind(
        N_("Broad heads"),
        "entropy",
        True,
        N_("Attention is spread over many tokens (high entropy): averaging."),
    ),
    "sharp": HeadKind(
        N_("Sharp heads"),
        "entropy",
        False,
        N_("Attention is concentrated on very few tokens (low entropy)."),
    ),
}


def typical_heads(stats: pd.DataFrame, kind: str, count: int = 6) -> pd.DataFrame:
    """The ``count`` heads most typical of ``kind``, most typical first.

    Ties are broken by layer, then head, so the order is deterministic.

    Args:
        stats: one row per (layer, head), as :func:`attention_viz.stats.head_statistics` returns.
        kind: a key of :data:`TYPICAL` (``previous``, ``sink``, ``broad``, ``sharp``).
        count: how many heads to return (fewer if the model has fewer).

    Returns:
        The selected rows with a fresh index and a leading ``rank`` column (1 = most typical).
    """
    if kind not in TYPICAL:
        raise UserFacingError(
            _("Unknown kind of head {kind}; choose one of {kinds}.").format(
                kind=repr(kind), kinds=", ".join(TYPICAL)
            )
        )
    if count < 1:
        raise UserFacingError(_("Ask for at least one head, not {count}.").format(count=count))
    spec = TYPICAL[kind]
    ranked = stats.sort_values(
        [spec.column, "layer", "head"],
        ascending=[not spec.largest, True, True],
        kind="mergesort",
        na_position="last",
    ).head(count)
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, "rank", range(1, len(ranked) + 1))
    return ranked


def stacked_weights(result: Capture, item: int = 0) -> tuple[torch.Tensor, list[int]]:
    """The weights of every captured layer for one batch item, stacked.

    Returns ``(weights, layers)``: ``weights`` in the order of ``layers`` (the captured layer
    indices, ascending).

    Shape: ``weights`` is ``(L, H, T, T)``.
    """
    if not 0 <= item < len(result.texts):
        raise UserFacingError(
            _("Text {item} does not exist: there are texts 0–{last}.").format(
                item=item, last=len(result.texts) - 1
            )
        )
    layers = sorted(result.layers)
    if not layers:
        raise UserFacingError(_("No layer was captured; capture at least one layer to draw thumbnails."))
    weights = torch.stack([result.layers[layer].weights[item] for layer in layers])  # (L, H, T, T)
    return weights, layers


def selected_masks(result: Capture, pairs: Sequence[tuple[int, int]], item: int = 0) -> torch.Tensor:
    """The mask each chosen ``(layer, head)`` pair's layer applied, for one item (a sliding
    layer keeps its window), in the given order.

    Shape: returns ``(K, T, T)`` bool for ``K`` pairs.
    """
    return torch.stack([result.mask_for(layer)[item, 0] for layer, _head in pairs])


def selected_heads(result: Capture, pairs: Sequence[tuple[int, int]], item: int = 0) -> torch.Tensor:
    """The weights of chosen ``(layer, head)`` pairs for one item, in the given order.

    Shape: returns ``(K, T, T)`` for ``K`` pairs.
    """
    matrices = []
    for layer, head in pairs:
        captured = result.layer(layer)
        heads = captured.weights.shape[1]
        if not 0 <= head < heads:
            raise UserFacingError(
                _("Head {head} does not exist: layer {layer} has heads 0–{last}.").format(
                    head=head, layer=layer, last=heads - 1
                )
            )
        matrices.append(captured.weights[item, head])  # (T, T)
    if not matrices:
        raise UserFacingError(_("Choose at least one head."))
    return torch.stack(matrices)  # (K, T, T)


def pool(
    weights: np.ndarray, allowed: np.ndarray, max_cell: int = MAX_CELL_PX
) -> tuple[np.ndarray, np.ndarray]:
    """Shrink the last two axes to at most ``max_cell``: queries by block mean, keys by block sum.

    A pooled cell may attend if any cell of its block may. Sequences no longer than ``max_cell``
    come back unchanged.

    Args:
        weights: ``(..., T, T)`` attention weights (rows are queries).
        allowed: ``(..., T, T)`` bool, True = may attend (broadcastable to ``weights``).
        max_cell: the largest side of a pooled matrix.

    Shape: returns ``(..., C, C)`` twice, with ``C = ceil(T / ceil(T / max_cell))``.
    """
    if max_cell < 1:
        raise ValueError(f"max_cell must be at least 1, got {max_cell}.")
    length = weights.shape[-1]
    allowed = np.broadcast_to(allowed, weights.shape)
    factor = math.ceil(length / max_cell)
    if factor == 1:
        return weights, allowed
    cells = math.ceil(length / factor)
    extra = cells * factor - length
    pad = [(0, 0)] * (weights.ndim - 2) + [(0, extra), (0, extra)]
    # Padded cells carry no weight and may not attend, so sums and "any" ignore them.
    padded = np.pad(weights, pad)  # (..., C*f, C*f)
    padded_allowed = np.pad(allowed, pad)
    lead = weights.shape[:-2]
    blocks = padded.reshape(*lead, cells, factor, cells, factor)  # (..., Cq, fq, Ck, fk)
    rows_per_block = np.full(cells, factor)
    rows_per_block[-1] = factor - extra  # the last block may be partial: average its real rows only
    pooled = blocks.sum(axis=(-3, -1)) / rows_per_block[:, None]  # (..., Cq, Ck)
    pooled_allowed = padded_allowed.reshape(*lead, cells, factor, cells, factor).any(axis=(-3, -1))
    return pooled, pooled_allowed


def tile(cells: np.ndarray, separator: float | Sequence[float] = np.nan) -> np.ndarray:
    """Lay out a grid of equal matrices as one array, with a 1-pixel separator between them.

    Args:
        cells: ``(L, H, C, C, ...)``: row ``l``, column ``h`` of the grid holds ``cells[l, h]``;
            trailing axes (e.g. RGB) are kept.
        separator: the value of separator pixels (one value, or one per trailing channel).

    Shape: returns ``(L·(C+1) − 1, H·(C+1) − 1, ...)``.
    """
    rows, columns, height, width = cells.shape[:4]
    trailing = cells.shape[4:]
    dtype = np.result_type(cells.dtype, np.asarray(separator).dtype)
    canvas = np.empty((rows, height + 1, columns, width + 1, *trailing), dtype=dtype)  # (L, C+1, H, C+1, ...)
    canvas[...] = separator
    canvas[:, :height, :, :width] = cells.swapaxes(1, 2)  # (L, C, H, C, ...)
    canvas = canvas.reshape(rows * (height + 1), columns * (width + 1), *trailing)
    return canvas[:-1, :-1]  # the last row and column of separators are dropped


def colour_lut(colorscale: str) -> np.ndarray:
    """256 RGB colours sampled from a plotly colour scale. Shape: ``(256, 3)`` uint8."""
    colours = sample_colorscale(get_colorscale(colorscale), np.linspace(0, 1, 256), colortype="tuple")
    return (np.asarray(colours) * 255).round().astype(np.uint8)


@dataclass(frozen=True)
class Thumbnails:
    """The tiled thumbnails of every head, ready to draw.

    Attributes:
        rgb: ``(L·(C+1) − 1, H·(C+1) − 1, 3)`` uint8 image.
        layers: the layer index of each grid row.
        heads: number of heads (grid columns).
        cell: the side ``C`` of one thumbnail in pixels.
        tokens: the sequence length ``T`` the thumbnails show (before pooling).
    """

    rgb: np.ndarray
    layers: list[int]
    heads: int
    cell: int
    tokens: int

    def centre(self, row: int, head: int) -> tuple[float, float]:
        """Pixel coordinates ``(x, y)`` of the centre of grid row ``row``, column ``head``."""
        step = self.cell + 1
        return head * step + (self.cell - 1) / 2, row * step + (self.cell - 1) / 2

    def png(self) -> str:
        """The image as a PNG data URI."""
        from PIL import Image  # pillow ships with streamlit and plotly

        buffer = io.BytesIO()
        Image.fromarray(self.rgb, mode="RGB").save(buffer, format="PNG", compress_level=6)
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnails(
    result: Capture, item: int = 0, palette: str = "Viridis", max_cell: int = MAX_CELL_PX
) -> Thumbnails:
    """Colour every captured head's weights for one item and tile them: layers down, heads across.

    Weights use the fixed range [0, 1], masked cells are grey (as in every other figure).

    Shape: uses ``result.layers[l].weights`` ``(B, H, T, T)`` and each layer's mask ``(B, 1, T, T)``.
    """
    weights, layers = stacked_weights(result, item)  # (L, H, T, T)
    allowed = (
        torch.stack([result.mask_for(layer)[item] for layer in layers]).cpu().numpy().astype(bool)
    )  # (L, 1, T, T)
    values, pooled_allowed = pool(weights.detach().to(torch.float64).cpu().numpy(), allowed, max_cell)
    index = np.clip(np.nan_to_num(values, nan=0.0) * 255, 0, 255).round().astype(np.uint8)
    rgb = colour_lut(palette)[index]  # (L, H, C, C, 3)
    rgb[~pooled_allowed] = MASKED_RGB
    return Thumbnails(
        rgb=tile(rgb, SEPARATOR_RGB).astype(np.uint8),
        layers=layers,
        heads=weights.shape[1],
        cell=values.shape[-1],
        tokens=weights.shape[-1],
    )


def thumbnail_figure(
    thumbs: Thumbnails,
    highlight: Sequence[tuple[int, int]] = (),
    style: FigureStyle = FigureStyle(),
    width_px: int = 380,
) -> go.Figure:
    """One figure with every head's thumbnail: one PNG image plus an invisible hover grid.

    Args:
        thumbs: from :func:`thumbnails`.
        highlight: ``(layer, head)`` pairs to outline.
        width_px: on-screen width of the grid, without its labels; the height follows from the
            image's aspect ratio, so pixels stay square.
    """
    rows, heads, step = len(thumbs.layers), thumbs.heads, thumbs.cell + 1
    xs = [thumbs.centre(0, head)[0] for head in range(heads)]
    ys = [thumbs.centre(row, 0)[1] for row in range(rows)]
    figure = go.Figure(go.Image(source=thumbs.png(), hoverinfo="skip"))
    # A transparent heatmap over the tiles, so hovering names the head (an image can only say pixels).
    figure.add_trace(
        go.Heatmap(
            z=np.zeros((rows, heads)),
            x=xs,
            y=ys,
            text=[
                [_("layer {layer} · head {head}").format(layer=layer, head=head) for head in range(heads)]
                for layer in thumbs.layers
            ],
            hovertemplate="%{text}<extra></extra>",
            colorscale=[[0, "rgba(0,0,0,0)"], [1, "rgba(0,0,0,0)"]],
            showscale=False,
            name="heads",
        )
    )
    row_of = {layer: row for row, layer in enumerate(thumbs.layers)}
    for layer, head in highlight:
        if layer not in row_of or not 0 <= head < heads:
            continue
        x, y = thumbs.centre(row_of[layer], head)
        half = thumbs.cell / 2 + 0.5  # over the separator, so the outline does not hide the cells
        figure.add_shape(
            type="rect",
            x0=x - half,
            x1=x + half,
            y0=y - half,
            y1=y + half,
            line={"color": HIGHLIGHT_COLOUR, "width": 3},
        )
    figure.update_xaxes(
        tickmode="array",
        tickvals=xs,
        ticktext=[_("head {head}").format(head=head) for head in range(heads)],
        tickangle=-90,
        side="top",
        tickfont={"size": style.font_size},  # pinned: the margins below are sized for this font
        showgrid=False,
        zeroline=False,
        range=[-1.5, heads * step - 0.5],  # one spare pixel a side keeps outlines whole
        constrain="domain",
        constraintoward="left",
        ticks="",
    )
    figure.update_yaxes(
        tickmode="array",
        tickvals=ys,
        ticktext=[_("layer {layer}").format(layer=layer) for layer in thumbs.layers],
        tickfont={"size": style.font_size},
        showgrid=False,
        zeroline=False,
        range=[rows * step - 0.5, -1.5],  # row 0 at the top, like the image
        # In a column narrower than the figure, plotly shrinks the grid; keep it under its labels.
        constrain="domain",
        constraintoward="top",
        ticks="",
        scaleanchor="x",
    )
    # Fixed margins (no automargin) and a plot area with the image's own aspect ratio, so the
    # square-pixel constraint leaves no blank band around the grid.
    label_px = 4 * style.font_size + 12  # room for "layer 29" and the upright "head 8"
    margin = {"l": label_px, "r": 8, "t": label_px, "b": 8}
    image_height, image_width = thumbs.rgb.shape[:2]
    plot_width = width_px
    plot_height = round(plot_width * (image_height + 2) / (image_width + 2))  # the ranges add 2 px
    figure.update_xaxes(automargin=False)
    figure.update_yaxes(automargin=False)
    figure.update_layout(
        width=plot_width + margin["l"] + margin["r"],
        height=plot_height + margin["t"] + margin["b"],
        margin=margin,
        font={"size": style.font_size},
        plot_bgcolor="white",
        showlegend=False,
    )
    return figure
