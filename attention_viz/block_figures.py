"""The block view drawn: FlexAttention's empty, partial and full blocks as one grid. No Streamlit here.

Rows are query blocks (block 0 at the top), columns key blocks, zero-based; cells are square.
Hover names both blocks with their token ranges and the block's kind.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from attention_viz.blocks import EMPTY, FULL, KIND_NAMES, PARTIAL, BlockView
from attention_viz.figures import MASKED_COLOUR, FigureStyle, escape_label
from attention_viz.i18n import _

__all__ = ["KIND_COLOURS", "block_figure"]

# Indexed by kind. Empty is the masked grey and full the "may attend" dark of mask_figure;
# partial is Okabe-Ito orange, apart from both in hue and in lightness (colour-blind safe).
KIND_COLOURS = (MASKED_COLOUR, "#e69f00", "#1f2937")
MARGIN_PX = {"l": 70, "r": 110, "b": 60}  # room for the query ticks, the colour bar, the key ticks
GAP_MIN_CELL_PX = 6  # cells smaller than this get no gap (the gaps would hide them)


def _hover_data(view: BlockView) -> np.ndarray:
    """Each cell's first and last query token and first and last key token.

    Shape: returns ``(Qb, Kb, 4)`` int.
    """
    rows, cols = view.kinds.shape
    query = np.array([view.token_range(i) for i in range(rows)])  # (Qb, 2)
    key = np.array([view.token_range(j) for j in range(cols)])  # (Kb, 2)
    return np.concatenate(
        [
            np.broadcast_to(query[:, None, :], (rows, cols, 2)),
            np.broadcast_to(key[None, :, :], (rows, cols, 2)),
        ],
        axis=-1,
    )  # (Qb, Kb, 4)


def _discrete_scale() -> list[list[float | str]]:
    """A colour scale with one flat band per kind, for z in ``[-0.5, 2.5]``."""
    bands = len(KIND_COLOURS)
    scale: list[list[float | str]] = []
    for kind, colour in enumerate(KIND_COLOURS):
        scale += [[kind / bands, colour], [(kind + 1) / bands, colour]]
    return scale


def block_figure(
    view: BlockView, title: str, width_px: int = 600, *, style: FigureStyle = FigureStyle()
) -> go.Figure:
    """The block grid as a heatmap in three colours (empty, partial, full), titled with the sparsity.

    Args:
        view: the block view (:func:`attention_viz.blocks.block_view`).
        title: the figure's title; shown literally (no HTML renders).
        width_px: the figure's width in px.
        style: font sizes (presentation mode enlarges them).

    Shape: ``view.kinds`` is ``(Qb, Kb)``; the heatmap's z is that grid, row = query block.
    """
    kinds = view.kinds.detach().cpu().numpy()  # (Qb, Kb)
    rows, cols = kinds.shape
    kind_names = [_(name) for name in KIND_NAMES]
    names = np.asarray(kind_names)[kinds]  # (Qb, Kb)
    title_px = (style.font_size + 1) * 3.2  # two lines
    side = max(width_px - MARGIN_PX["l"] - MARGIN_PX["r"], 50)
    cell_px = side / max(rows, cols)
    gap = 1 if cell_px >= GAP_MIN_CELL_PX else 0
    trace = go.Heatmap(
        z=kinds,
        x=list(range(cols)),
        y=list(range(rows)),
        zmin=EMPTY - 0.5,
        zmax=FULL + 0.5,
        colorscale=_discrete_scale(),
        colorbar={
            "tickmode": "array",
            "tickvals": [EMPTY, PARTIAL, FULL],
            "ticktext": kind_names,
            "thickness": 14,
            "tickfont": {"size": style.tick_size},
        },
        customdata=_hover_data(view),
        text=names.tolist(),
        hovertemplate=(
            _("query block {block} (tokens {first}–{last})").format(
                block="%{y}", first="%{customdata[0]}", last="%{customdata[1]}"
            )
            + " · "
            + _("key block {block} (tokens {first}–{last})").format(
                block="%{x}", first="%{customdata[2]}", last="%{customdata[3]}"
            )
            + " · %{text}<extra></extra>"
        ),
        xgap=gap,
        ygap=gap,
    )
    figure = go.Figure(trace)
    step = max(1, math.ceil(max(rows, cols) / 12))  # whole block numbers, at most about 12 ticks
    fonts = {"tickfont_size": style.tick_size, "title_font_size": style.tick_size + 1}
    figure.update_xaxes(
        title=_("key block"), dtick=step, tick0=0, showgrid=False, constrain="domain", **fonts
    )
    figure.update_yaxes(
        title=_("query block"),
        dtick=step,
        tick0=0,
        showgrid=False,
        autorange="reversed",
        scaleanchor="x",
        constrain="domain",
        **fonts,
    )
    summary = _(
        "{sparsity} of blocks skipped · {full} full, {partial} partial, {empty} empty · "
        "blocks of {size} over {length} tokens"
    ).format(
        sparsity=f"{view.sparsity:.1f}%",  # the % outside the message: it is no printf format
        full=view.full_blocks,
        partial=view.partial_blocks,
        empty=view.empty_blocks,
        size=view.block_size,
        length=view.length,
    )
    heading = f"{escape_label(title)}<br><sup>{summary}</sup>"
    figure.update_layout(
        title={"text": heading, "font": {"size": style.font_size + 1}},
        width=width_px,
        height=round(side + title_px + MARGIN_PX["b"]),
        margin={**MARGIN_PX, "t": round(title_px)},
        font={"size": style.font_size},
        plot_bgcolor="white",
    )
    return figure
