"""Plotly figures: per-head heatmaps, masks and differences. No Streamlit here.

Every picture is laid out for the width it is given (:mod:`attention_viz.geometry`): square
cells that fill the width, tick labels thinned so that none overlap.

Two drawing paths, chosen by size, so that every picture is true and stays fast:

* **Hover path** (up to ``HOVER_CELL_LIMIT`` cells per grid panel, ``SINGLE_HOVER_CELL_LIMIT``
  for a single heatmap): ``go.Heatmap`` traces with the exact values. Each cell belongs to
  exactly one trace, so hover can never be caught by the wrong one:

  - ``values``: the cells a real query may attend to, with the stage's value;
  - ``padding query``: cells of a [PAD] query row that the mask left open (padding mask off);
  - ``masked``: cells the mask forbids (grey; weight exactly 0, masked score −∞);
  - ``padding row``: a [PAD] query row the padding mask left empty (grey).

  Hover names the query and key tokens with their positions and the value to 4 decimals. Up to
  ``ANNOTATE_MAX_TOKENS`` tokens, cells also carry their value as text, and weights get their
  row sums. In a grid whose cells are narrower than ``MIN_POINTED_CELL_PX``, too small to point
  at one, masked cells are a grey rectangle under each panel's cells instead of a ``masked``
  trace of their own: one image less per panel for the browser to draw (a switch of layer
  redraws every panel).
  They have no hover there; a larger chart of the same head has.
* **Image path** (larger): one PNG per panel (optionally max-pooled), a few hundred kB instead
  of tens of MB of numbers. Hover gives positions; a zoomed range is drawn on the hover path.

Rows are queries (top to bottom), columns are keys (left to right), zero-based everywhere.
"""

from __future__ import annotations

import base64
import copy
import functools
import hashlib
import html
import io
import math
import os
import pickle
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from plotly.colors import get_colorscale, sample_colorscale

from attention_viz.geometry import COLORBAR_THICKNESS, Frame, frame, label_width
from attention_viz.i18n import N_, _
from attention_viz.scales import DIVERGING, PALETTES, ValueRange, scaled, stage_range

__all__ = [
    "ANNOTATE_MAX_TOKENS",
    "FigureStyle",
    "HOVER_CELL_LIMIT",
    "PALETTES",
    "PARITY_KINDS",
    "SINGLE_HOVER_CELL_LIMIT",
    "ValueRange",
    "difference_figure",
    "head_grid",
    "heatmap",
    "mask_figure",
    "parity_figure",
    "parity_kinds",
    "row_figure",
    "stage_range",
    "token_labels",
]

# Beyond this many cells per grid panel, panels are images (see module docstring).
HOVER_CELL_LIMIT = 96 * 96
# A single heatmap keeps exact hover up to 512 tokens (1 MB of float32 numbers).
SINGLE_HOVER_CELL_LIMIT = 512 * 512
# Up to this many tokens, cells carry their value as text (if the cells are big enough).
ANNOTATE_MAX_TOKENS = 16
# A grid's cells narrower than this (px) are too small to point at: masked ones are its background.
MIN_POINTED_CELL_PX = 6.0
DIGIT_WIDTH = 0.56  # a digit's width as a share of the font size (digits are narrower than letters)
MASKED_COLOUR = "#d4d4d4"  # light grey: clearly not the darkest colour that weight 0 gets
MASKED_RGB = (212, 212, 212)
HIGHLIGHT_COLOUR = "#e8590c"  # the current query row while stepping through (orange, not in any palette)
# Axis nouns (``row_name``, ``col_name``) are given in English and shown in the run's language;
# an axis title is the noun's plural. Other nouns show as given.
AXIS_NOUNS = {
    "query": N_("query"),
    "key": N_("key"),
    "layer": N_("layer"),
    "head": N_("head"),
    "input token": N_("input token"),
    "position": N_("position"),
}
AXIS_TITLES = {
    "query": N_("queries"),
    "key": N_("keys"),
    "layer": N_("layers"),
    "head": N_("heads"),
    "input token": N_("input tokens"),
    "position": N_("positions"),
}


@dataclass(frozen=True)
class FigureStyle:
    """How figures look; presentation mode swaps in larger fonts.

    Attributes:
        palette: sequential colour scale for weights (colour-blind-safe by default).
        font_size: base font size in px.
        cell_px: pixels per cell when a figure is not given a width to fill.
        show_colorbar: draw a colour bar.
    """

    palette: str = PALETTES[0]  # colour-blind safe
    font_size: int = 13  # 20+ for a projector
    cell_px: int = 28
    show_colorbar: bool = True

    def presentation(self) -> FigureStyle:
        """The same style with projector-sized fonts."""
        return replace(self, font_size=20, cell_px=40)

    @property
    def tick_size(self) -> int:
        return self.font_size - 1


def stage_shows_mask(stage: str) -> bool:
    """Whether a stage's picture greys out masked cells. Scores come before the mask (every
    cell has a value: greying them would make them look like masked scores); output has no keys."""
    return stage in ("masked_scores", "weights")


def escape_markdown(text: str) -> str:
    """Make text safe inside Streamlit markdown: it shows as typed, with no HTML, no markdown
    syntax, no entity (``&``) and no autolink (``:`` and ``@``; inside an autolinked URL the
    other escapes would show as backslashes)."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>~$:@&" else c for c in text)


def escape_label(text: str) -> str:
    """Make a token safe for plotly's pseudo-HTML labels: it shows literally, nothing renders."""
    return html.escape(text, quote=False)


def token_labels(tokens: list[str], first: int = 0) -> list[str]:
    """Unique category labels ``"3: the"`` so repeated tokens keep their own row/column."""
    return [f"{first + index}: {escape_label(token)}" for index, token in enumerate(tokens)]


def _to_numpy(matrix: torch.Tensor) -> np.ndarray:
    return matrix.detach().to(torch.float64).cpu().numpy()


# Validate every figure's properties as it is built (see figure_of): on in the tests.
VALIDATE_FIGURES = os.environ.get("ATTNVIZ_VALIDATE_FIGURES") == "1"

# An image's colours: this many steps of the colour scale, and one more palette entry for masked
# cells, so the PNG stores one byte per cell (a palette image: a third of the bytes of RGB to
# compress, several times faster at 2048 tokens).
IMAGE_LEVELS = 255


@functools.lru_cache(maxsize=16)
def _palette(colorscale: str) -> bytes:
    """The PNG palette of an image on ``colorscale``: ``IMAGE_LEVELS`` RGB colours evenly sampled
    from the scale, then the masked grey. ``3 × (IMAGE_LEVELS + 1)`` bytes."""
    steps = np.linspace(0, 1, IMAGE_LEVELS)
    colours = sample_colorscale(get_colorscale(colorscale), steps, colortype="tuple")
    rgb = (np.asarray(colours) * 255).round().astype(np.uint8)
    return rgb.tobytes() + bytes(MASKED_RGB)


def _png_data_uri(matrix: np.ndarray, allowed: np.ndarray | None, value_range: ValueRange) -> str:
    """Render a matrix (already on its colour scale) to a PNG data URI; masked cells are grey.

    Shape: ``matrix`` and ``allowed`` are ``(Tq, Tk)``.
    """
    from PIL import Image  # pillow ships with streamlit and plotly's image export

    span = value_range.zmax - value_range.zmin
    finite = np.where(np.isfinite(matrix), matrix, value_range.zmin)
    top = IMAGE_LEVELS - 1
    index = np.clip((finite - value_range.zmin) / span * top, 0, top).round().astype(np.uint8)
    if allowed is not None:
        index[~allowed] = IMAGE_LEVELS  # the masked grey
    image = Image.frombytes("P", (index.shape[1], index.shape[0]), np.ascontiguousarray(index).tobytes())
    image.putpalette(_palette(value_range.colorscale))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _colorbar(value_range: ValueRange, font_size: int) -> dict:
    """A horizontal colour bar along the figure's bottom edge, its title (naming the scale) beside it."""
    return {
        "title": {"text": value_range.colorbar_title, "side": "right", "font": {"size": font_size}},
        "orientation": "h",
        "thickness": COLORBAR_THICKNESS,
        "len": 0.7,
        "x": 0.45,
        "xanchor": "center",
        "yref": "container",
        "y": 0,
        "ypad": 6,
        "yanchor": "bottom",
        "tickfont": {"size": font_size - 1},
        "outlinewidth": 0,
        "ticks": "",
    }


def _value_format(value_range: ValueRange) -> str:
    """Text format of a cell's value: weights to 2 decimals, scores to 1."""
    return ".2f" if value_range.label == "weight" else ".1f"


@dataclass(frozen=True)
class _Panel:
    """What one panel draws, already as numpy. Shapes: ``(Tq, Tk)``; ``pad_rows`` ``(Tq,)``."""

    values: np.ndarray  # true values; NaN = a row not yet revealed (blank, no hover)
    allowed: np.ndarray | None  # True = may attend; None = the stage has no mask (scores)
    pad_rows: np.ndarray  # True where the query is a [PAD] token


def _panel(
    matrix: torch.Tensor,
    allowed: torch.Tensor | None,
    pad_rows: torch.Tensor | list[bool] | None,
    revealed_rows: int | None,
) -> _Panel:
    values = _to_numpy(matrix)
    allowed_np = allowed.detach().cpu().numpy().astype(bool) if allowed is not None else None
    pads = np.zeros(values.shape[0], dtype=bool)
    if pad_rows is not None:
        pads = np.asarray(pad_rows.tolist() if isinstance(pad_rows, torch.Tensor) else pad_rows, dtype=bool)
    if revealed_rows is not None:
        values = values.copy()
        values[revealed_rows:] = np.nan  # not yet revealed: drawn blank, neither value nor mask
        if allowed_np is not None:
            allowed_np = allowed_np.copy()
            allowed_np[revealed_rows:] = True
    return _Panel(values, allowed_np, pads)


def _where(cells: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` on ``cells``, NaN elsewhere, as float32 (half the payload; 7 significant digits)."""
    return np.where(cells, values, np.nan).astype(np.float32)


def _hover_traces(
    panel: _Panel,
    row_labels: list[str],
    col_labels: list[str],
    value_range: ValueRange,
    show_scale: bool,
    font_size: int,
    row_name: str,
    col_name: str,
    annotate: bool,
    masked_trace: bool = True,
) -> list[dict]:
    """The traces of one panel on the hover path; every cell is in exactly one of them, but for
    masked cells without ``masked_trace``: then they are in none (a grey shape under the panel
    shows them)."""
    values = panel.values
    revealed = ~np.isnan(values)
    allowed = panel.allowed if panel.allowed is not None else np.ones(values.shape, dtype=bool)
    pad = panel.pad_rows[:, None] & np.ones(values.shape, dtype=bool)  # (Tq, Tk)
    empty_pad_row = pad & ~allowed.any(axis=1, keepdims=True)
    shown = scaled(values, value_range)
    shown = np.where(np.isfinite(shown), shown, np.nan)
    where = f"{_noun(row_name)} %{{y}}<br>{_noun(col_name)} %{{x}}<br>"
    value_ref = "%{customdata:.4f}" if value_range.transformed else "%{z:.4f}"
    value_label = value_range.shown_label
    text_format = _value_format(value_range)
    common = {"x": col_labels, "y": row_labels, "hoverongaps": False, "xgap": 0, "ygap": 0}

    def value_trace(cells: np.ndarray, name: str, note: str, scale: bool) -> dict:
        extra = {}
        if value_range.transformed:
            extra["customdata"] = _where(cells, values)
        if annotate:
            extra["text"] = [
                [format(v, text_format) if cell else "" for v, cell in zip(row, cells_row, strict=True)]
                for row, cells_row in zip(values.tolist(), cells.tolist(), strict=True)
            ]
            extra["texttemplate"] = "%{text}"
            extra["textfont"] = {"size": _cell_text_px(font_size)}
        return trace(
            "heatmap",
            z=_where(cells, shown),
            zmin=value_range.zmin,
            zmax=value_range.zmax,
            colorscale=colour_list(value_range.colorscale),
            showscale=scale,
            colorbar=_colorbar(value_range, font_size),
            hovertemplate=f"{where}{value_label} {value_ref}{note}<extra></extra>",
            name=name,
            **common,
            **extra,
        )

    def grey_trace(cells: np.ndarray, name: str, note: str) -> dict:
        return trace(
            "heatmap",
            z=_where(cells, np.ones(values.shape)),
            zmin=0,
            zmax=1,
            colorscale=[[0, MASKED_COLOUR], [1, MASKED_COLOUR]],
            showscale=False,
            hovertemplate=f"{where}{note}<extra></extra>",
            name=name,
            **common,
        )

    traces = [value_trace(revealed & allowed & ~pad, "values", "", show_scale)]
    if (open_pads := revealed & allowed & pad).any():
        note = "<br>" + _("a [PAD] query row: nothing downstream reads it")
        traces.append(value_trace(open_pads, "padding query", note, False))
    masked_value = _("weight 0") if value_range.label == "weight" else f"{value_label} −∞"
    if masked_trace and (masked := revealed & ~allowed & ~empty_pad_row).any():
        note = _("masked: may not attend ({value})").format(value=masked_value)
        traces.append(grey_trace(masked, "masked", note))
    if (empty := revealed & empty_pad_row).any():
        note = _("a [PAD] query row: it attends to nothing") + "<br>" + _("(an empty row, every weight 0)")
        traces.append(grey_trace(empty, "padding row", note))
    return traces


def downsample_factor(length: int, max_side: int) -> int:
    """The integer pooling factor that brings ``length`` cells to at most ``max_side``."""
    return max(1, math.ceil(length / max_side))


def downsample(
    values: np.ndarray, allowed: np.ndarray | None, max_side: int, pooled_allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Max-pool a matrix by an integer factor so neither side exceeds ``max_side``.

    Max (not mean) keeps a sharp attention peak visible after pooling; a pooled cell is masked
    only if every cell in its block was masked. ``pooled_allowed``, if given, is ``allowed``
    already pooled (:func:`pool_mask`, once for a mask every panel of a grid shares).

    Shape: ``values`` and ``allowed`` are ``(Tq, Tk)``; returns ``(ceil(Tq/f), ceil(Tk/f))`` and ``f``.
    """
    factor = downsample_factor(max(values.shape), max_side)
    if factor <= 1:
        return values, allowed, 1
    # torch's max pool (several times faster than numpy's reduction over a reshaped view); a
    # block past the edge pools only the cells that exist (ceil_mode), and NaN (not drawn) pools
    # as -inf so it never wins over a value.
    finite = torch.from_numpy(values).nan_to_num(nan=-math.inf, posinf=math.inf, neginf=-math.inf)
    pooled = F.max_pool2d(finite[None, None], factor, ceil_mode=True)[0, 0].numpy()
    pooled[np.isneginf(pooled)] = np.nan
    if allowed is None:
        pooled_allowed = None
    elif pooled_allowed is None:
        pooled_allowed = pool_mask(allowed, factor)
    return pooled, pooled_allowed, factor


def pool_mask(allowed: np.ndarray, factor: int) -> np.ndarray:
    """``allowed`` pooled as :func:`downsample` pools it: a block may attend if any of its cells may.

    Shape: ``allowed`` is ``(Tq, Tk)``; returns ``(ceil(Tq/factor), ceil(Tk/factor))``.
    """
    blocks = torch.from_numpy(np.ascontiguousarray(allowed)).to(torch.float32)[None, None]
    return F.max_pool2d(blocks, factor, ceil_mode=True)[0, 0].numpy() > 0


def _colorbar_trace(value_range: ValueRange, font_size: int) -> dict:
    """An invisible trace that only draws the colour bar (images have none of their own)."""
    return trace(
        "scatter",
        x=[None],
        y=[None],
        mode="markers",
        hoverinfo="skip",
        showlegend=False,
        marker={
            "colorscale": colour_list(value_range.colorscale),
            "cmin": value_range.zmin,
            "cmax": value_range.zmax,
            "color": [value_range.zmin],
            "showscale": True,
            "colorbar": _colorbar(value_range, font_size),
        },
    )


def _image_traces(
    panel: _Panel,
    value_range: ValueRange,
    show_scale: bool,
    max_side: int | None,
    row_name: str,
    col_name: str,
    font_size: int,
    pooled_allowed: np.ndarray | None = None,
) -> list[dict]:
    """A large matrix as one PNG image, in token coordinates, optionally max-pooled
    (``pooled_allowed``: its mask already pooled, see :func:`downsample`)."""
    values, allowed, factor = scaled(panel.values, value_range), panel.allowed, 1
    if max_side is not None:
        values, allowed, factor = downsample(values, allowed, max_side, pooled_allowed)
    offset = (factor - 1) / 2  # pixel centres sit in the middle of their token block
    rows, cols = _noun(row_name), _noun(col_name)
    where = f"{rows} %{{y:.0f}}<br>{cols} %{{x:.0f}}"
    if factor > 1:
        near = _("{noun}s near")
        where = f"{near.format(noun=rows)} %{{y:.0f}}<br>{near.format(noun=cols)} %{{x:.0f}}<br>" + _(
            "(max of {factor}×{factor})"
        ).format(factor=factor)
    traces: list[dict] = [
        trace(
            "image",
            source=_png_data_uri(values, allowed, value_range),
            x0=offset,
            y0=offset,
            dx=factor,
            dy=factor,
            hovertemplate=where + "<br>" + _("zoom in for tokens and values") + "<extra></extra>",
            name=f"pooled {factor}×{factor}" if factor > 1 else "image",
        )
    ]
    if show_scale:
        traces.append(_colorbar_trace(value_range, font_size))
    return traces


def _axis_suffix(index: int) -> str:
    return "" if index == 1 else str(index)


def _axes_layout(
    layout: Frame,
    row_labels: list[str],
    col_labels: list[str],
    image: bool,
    panels: int,
    x_labelled: list[int],
    y_labelled: list[int],
    tick_size: int,
) -> dict:
    """The layout of every panel's axes: queries top to bottom, keys left to right, square cells,
    the frame's thinned tick labels.

    Tick sizes are set explicitly: Streamlit's chart theme would otherwise keep them small.
    ``x_labelled`` / ``y_labelled`` are the one-based panels whose key / query labels show.
    """

    def fonts() -> dict:  # a new dict for each axis: a title written into one stays its own
        return {"tickfont": {"size": tick_size}, "title": {"font": {"size": tick_size + 1}}}

    x_ticks, y_ticks = layout.x_ticks, layout.y_ticks
    if image:
        x_vals, y_vals = x_ticks.positions, y_ticks.positions
    else:
        x_vals = [col_labels[i] for i in x_ticks.positions]
        y_vals = [row_labels[i] for i in y_ticks.positions]
    axes = {}
    for panel in range(1, panels + 1):
        suffix = _axis_suffix(panel)
        x_axis = {
            "tickmode": "array",
            "tickvals": x_vals,
            "ticktext": [escape_label(text) for text in x_ticks.text],
            "tickangle": x_ticks.angle,
            "showticklabels": panel in x_labelled,
            "showgrid": False,
            "automargin": False,
            **fonts(),
        }
        y_axis = {
            "tickmode": "array",
            "tickvals": y_vals,
            "ticktext": [escape_label(text) for text in y_ticks.text],
            "showticklabels": panel in y_labelled,
            "showgrid": False,
            "automargin": False,
            "scaleanchor": f"x{suffix}",
            "constrain": "domain",
            **fonts(),
        }
        x_axis["constrain"] = "domain"
        if not image:
            x_axis["type"] = "category"
            y_axis["type"] = "category"
            y_axis["autorange"] = "reversed"
        axes[f"xaxis{suffix}"] = x_axis
        axes[f"yaxis{suffix}"] = y_axis
    return axes


def _highlight(row: int, panels: int) -> list[dict]:
    """Shapes outlining query ``row`` in every panel (stepping through the rows)."""
    return [
        {
            "type": "rect",
            "xref": f"x{_axis_suffix(panel)} domain",
            "yref": f"y{_axis_suffix(panel)}",
            "x0": 0,
            "x1": 1,
            "y0": row - 0.5,
            "y1": row + 0.5,
            "line": {"color": HIGHLIGHT_COLOUR, "width": 3},
            "fillcolor": "rgba(0,0,0,0)",
            "layer": "above",
        }
        for panel in range(1, panels + 1)
    ]


def _grey_cells(rows: int, columns: int, panels: int) -> list[dict]:
    """Shapes filling every cell of each panel grey, below its traces: the cells no trace draws
    (masked, in a grid without a ``masked`` trace) show them."""
    return [
        {
            "type": "rect",
            "xref": f"x{_axis_suffix(panel)}",
            "yref": f"y{_axis_suffix(panel)}",
            "x0": -0.5,
            "x1": columns - 0.5,
            "y0": -0.5,
            "y1": rows - 0.5,
            "line": {"width": 0},
            "fillcolor": MASKED_COLOUR,
            "layer": "below",
        }
        for panel in range(1, panels + 1)
    ]


def _row_sums(panel: _Panel, panel_index: int, row_labels: list[str], font_size: int) -> list[dict]:
    """Annotations writing each revealed row's sum right of the panel: weights sum to 1 (an empty
    row to 0)."""
    suffix = _axis_suffix(panel_index)
    sums = np.nansum(np.where(np.isnan(panel.values), 0.0, panel.values), axis=1)
    return [
        {
            "text": f"Σ {total:.2f}",
            "xref": f"x{suffix} domain",
            "yref": f"y{suffix}",
            "x": 1.0,
            "y": row_labels[row],
            "xanchor": "left",
            "xshift": 4,
            "showarrow": False,
            "font": {"size": max(9, font_size - 3), "color": "#444"},
        }
        for row, total in enumerate(sums)
        if not np.isnan(panel.values[row]).all()
    ]


def _row_sum_px(font_size: int) -> float:
    """Room right of a panel for "Σ 1.00"."""
    return label_width("Σ 1.00", max(9, font_size - 3)) + 10


def _cell_text_px(font_size: int) -> int:
    """The font size of the values written in cells."""
    return max(9, font_size - 4)


def _annotate(
    tokens: int, layout: Frame, value_range: ValueRange, font_size: int, annotate: bool | None
) -> bool:
    """Whether cells carry their value as text: few tokens, and cells wide enough for it."""
    if annotate is False or tokens > ANNOTATE_MAX_TOKENS:
        return False
    digits = 4 if value_range.label == "weight" else 5  # "0.25", "-3.1"
    text_px = _cell_text_px(font_size)
    return layout.cell >= max(digits * DIGIT_WIDTH * text_px + 3, text_px * 1.5)


def _default_width(tokens: int, style: FigureStyle, panels_across: int = 1) -> float:
    """A width for figures that are not told one: ``cell_px`` per token, within reason."""
    return min(1400, max(360, panels_across * style.cell_px * tokens + 200))


def colour_list(colorscale: str | list) -> list:
    """A colour scale as the ``[[position, colour], …]`` list plotly's validation would write
    (plotly.js knows few scales by name); a list is returned as it is."""
    return [list(step) for step in _named_scale(colorscale)] if isinstance(colorscale, str) else colorscale


@functools.lru_cache(maxsize=32)
def _named_scale(name: str) -> tuple:
    return tuple(tuple(step) for step in get_colorscale(name))


def trace(kind: str, **properties: object) -> dict:
    """A trace of type ``kind`` as a plain dict, nested properties as nested dicts (no plotly
    magic underscores): plotly validates it when the figure is built, if at all (:func:`figure_of`)."""
    return {"type": kind, **properties}


# The look of the app's figures, written into each figure (Streamlit's light chart theme, so they
# match the pages' other charts): a figure that carries its own look and no plotly template can
# be drawn with theme=None, and then Streamlit's second render of every new chart (it copies the
# figure after mounting it) costs plotly a few milliseconds instead of a whole redraw.
FONT_FAMILY = '"Source Sans", sans-serif'
TEXT_COLOUR = "#808495"
TITLE_COLOUR = "#2F2D2B"
LINE_COLOUR = "#e6eaf1"
LOOK = {
    "font": {"family": FONT_FAMILY, "color": TEXT_COLOUR},
    "title": {
        "font": {"family": FONT_FAMILY, "color": TITLE_COLOUR},
        "xanchor": "left",
        "x": 0,
        "pad": {"l": 4},
    },
    "paper_bgcolor": "#FFFFFF",
    "plot_bgcolor": "#FFFFFF",
    "hovermode": "closest",
    "hoverlabel": {
        "bgcolor": "#FFFFFF",
        "bordercolor": "#DCD8D4",
        "align": "left",
        "font": {"family": FONT_FAMILY, "color": TEXT_COLOUR, "size": 12},
    },
    "margin": {"pad": 8},
}
AXIS_LOOK = {
    "x": {"showgrid": False, "zeroline": False},
    "y": {"ticklabelposition": "outside", "title": {"standoff": 24}},
}
_EVERY_AXIS = {
    "gridcolor": LINE_COLOUR,
    "zerolinecolor": LINE_COLOUR,
    "tickcolor": LINE_COLOUR,
    "tickfont": {"color": TEXT_COLOUR},
    "title": {"font": {"color": TEXT_COLOUR}, "standoff": 20},
    "automargin": True,
}


def figure_of(data: list, layout: dict) -> go.Figure:
    """A figure of ``data`` (traces, as dicts or plotly objects) and a finished ``layout``, built
    in one step, with the app's look and no plotly template (draw it with ``theme=None``).

    Plotly's validation of every property costs about as much as building the figure again, and
    all it catches is a misspelt or ill-typed property: the tests run with it
    (``ATTNVIZ_VALIDATE_FIGURES=1``, set in tests/conftest.py) on every figure they draw, the app
    without it. Colour scales are therefore written out as lists (plotly.js knows few by name).
    """
    data = [_plain(item) if isinstance(item, dict) else item for item in data]
    styled = merge_layout(copy.deepcopy(LOOK), layout)
    styled["datarevision"] = data_revision(data)
    axes = [key for key in styled if key[:5] in ("xaxis", "yaxis")] or ["xaxis", "yaxis"]
    for key in axes:
        look = merge_layout(copy.deepcopy(_EVERY_AXIS), copy.deepcopy(AXIS_LOOK[key[0]]))
        styled[key] = merge_layout(look, styled.get(key, {}))
    title = styled.get("title", {})
    if title.get("text"):
        title["text"] = f"<b>{title['text']}</b>"  # as Streamlit's theme writes chart titles
    figure = go.Figure(data=data, layout=styled, _validate=VALIDATE_FIGURES)
    figure.layout.template = None
    figure.layout._props.pop("template", None)  # absent, not null: plotly.js redraws fully for either
    return figure


def _plain(value: object) -> object:
    """``value`` (a trace, or a property of one) with every one-dimensional array in it as a list.

    Only matrices (a heatmap's ``z``) stay arrays, which plotly sends as binary. plotly.js takes a
    binary-coded coordinate array for new data on every update, so Streamlit's second render of a
    bar chart (the same figure, copied) recomputed and redrew it whole (about 20 ms each); with
    plain lists it compares them and redraws nothing (about 4 ms). They are short (one bar each).
    """
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return value.tolist()
    if isinstance(value, dict):
        return {name: _plain(inner) for name, inner in value.items()}
    return value


def data_revision(data: list) -> str:
    """A digest of ``data`` (the traces, with every array in them), for ``layout.datarevision``.

    Streamlit draws every new chart twice: it mounts it, then gives plotly a copy of the same
    figure. Without a revision, plotly takes every copied array for new data and recomputes and
    redraws the whole chart (a grid of heads: about 70 ms of the browser's time); with the same
    revision it compares the rest and redraws nothing (about 13 ms). The digest is of the content,
    so a figure with other data always has another revision and is never drawn stale.
    """
    return hashlib.blake2b(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), digest_size=16).hexdigest()


def merge_layout(into: dict, update: dict) -> dict:
    """Merge ``update`` into ``into`` recursively (nested dicts merge, anything else replaces)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_layout(into[key], value)
        else:
            into[key] = value
    return into


def _grid_layout(
    rows: int, columns: int, horizontal: float, vertical: float, titles: list[str], title_px: int
) -> dict:
    """The axes of ``rows`` × ``columns`` panels (numbered row by row from the top left, as
    ``make_subplots`` numbers them) and a title above each of the first ``len(titles)``.

    The same domains and titles as ``make_subplots`` (a test checks), as a plain dict: building
    the figure from the finished layout in one step is several times faster.
    """
    width = (1.0 - horizontal * (columns - 1)) / columns
    height = (1.0 - vertical * (rows - 1)) / rows
    layout: dict = {"annotations": []}
    for index in range(rows * columns):
        row, column = divmod(index, columns)
        x0 = column * (width + horizontal)
        y0 = (rows - 1 - row) * (height + vertical)
        x_domain, y_domain = [x0, min(1.0, x0 + width)], [y0, min(1.0, y0 + height)]
        suffix = _axis_suffix(index + 1)
        layout[f"xaxis{suffix}"] = {"anchor": f"y{suffix}", "domain": x_domain}
        layout[f"yaxis{suffix}"] = {"anchor": f"x{suffix}", "domain": y_domain}
        if index < len(titles) and titles[index]:
            layout["annotations"].append(
                {
                    "text": titles[index],
                    "x": sum(x_domain) / 2,
                    "y": y_domain[1],
                    "xref": "paper",
                    "yref": "paper",
                    "xanchor": "center",
                    "yanchor": "bottom",
                    "showarrow": False,
                    "font": {"size": title_px},
                }
            )
    return layout


def _assembled(
    traces: list, layout: dict, shapes: list[dict] | None = None, annotations: list[dict] | None = None
) -> go.Figure:
    """A figure of ``traces`` with ``layout`` (axes merged key by key) plus ``shapes`` and
    ``annotations``, validated in one step.

    Plotly re-walks the whole layout on every update call, so a grid of panels styled call by
    call costs the square of its panels; one validated construction of the finished layout is
    several times faster.
    """
    if annotations:
        layout["annotations"] = [*layout.get("annotations", []), *annotations]
    if shapes:
        layout["shapes"] = [*layout.get("shapes", []), *shapes]
    return figure_of(traces, layout)


def head_grid(
    matrices: torch.Tensor,
    query_tokens: list[str],
    key_tokens: list[str],
    value_range: ValueRange,
    allowed: torch.Tensor | None = None,
    titles: list[str] | None = None,
    columns: int = 3,
    style: FigureStyle = FigureStyle(),
    panel_px: int = 260,
    revealed_rows: int | None = None,
    max_side: int | None = None,
    *,
    width_px: float | None = None,
    pad_rows: torch.Tensor | list[bool] | None = None,
    highlight_row: int | None = None,
    annotate: bool | None = None,
    row_sums: bool | None = None,
) -> go.Figure:
    """Small multiples: one heatmap per head, sharing one colour scale, filling ``width_px``.

    Args:
        matrices: ``(H, Tq, Tk)`` one matrix per head (e.g. weights of one batch item).
        query_tokens: ``Tq`` row labels. key_tokens: ``Tk`` column labels.
        value_range: colour range shared by every panel (see :func:`stage_range`).
        allowed: ``(Tq, Tk)`` bool, True = may attend; masked cells turn grey.
        titles: one per head; defaults to ``head 0``, ``head 1``, ... (in the run's language)
        columns: panels per row.
        panel_px: a panel's side when ``width_px`` is not given.
        revealed_rows: draw only query rows before this index (stepping through a mask).
        max_side: max-pool panels drawn as images to at most this many cells a side.
        width_px: the width the figure fills.
        pad_rows: ``(Tq,)`` True where the query is a [PAD] token (hover says so).
        highlight_row: outline this query row in every panel.
        annotate: cells carry their values (None = when there are few tokens and room).
        row_sums: write each row's sum (None = for weights, when cells carry values).

    Shape: ``matrices`` is ``(H, Tq, Tk)``.
    """
    heads = matrices.shape[0]
    columns = max(1, min(columns, heads))
    rows = math.ceil(heads / columns)
    titles = titles or [_("head {head}").format(head=h) for h in range(heads)]
    tick = style.tick_size
    image = matrices.shape[-1] * matrices.shape[-2] > HOVER_CELL_LIMIT
    if width_px is None:
        width_px = columns * panel_px + 160
    want_sums = row_sums is not False and value_range.label == "weight" and not image
    small = len(query_tokens) <= ANNOTATE_MAX_TOKENS

    def lay_out(sums: bool) -> Frame:
        return frame(
            query_tokens,
            key_tokens,
            width_px,
            tick,
            rows=rows,
            cols=columns,
            colorbar=style.show_colorbar,
            panel_title_px=(style.font_size + 1) * 1.6,
            right_extra_px=_row_sum_px(style.font_size) if sums else 0.0,
            labels_between_rows=heads % columns != 0,
        )

    # Row sums need room only if they are shown, and they are shown when cells carry values.
    layout = lay_out(want_sums and small)
    annotate = not image and _annotate(
        max(len(query_tokens), len(key_tokens)), layout, value_range, style.font_size, annotate
    )
    sums = want_sums and small and bool(row_sums or annotate)  # rows of a long text are too thin for them
    if want_sums and small and not sums:
        layout = lay_out(False)
    # Every cell no trace draws is masked (all rows are revealed): a grey rectangle under them shows it.
    grey_background = (
        not image and allowed is not None and revealed_rows is None and layout.cell < MIN_POINTED_CELL_PX
    )
    horizontal, vertical = layout.spacing(rows, columns)
    row_labels, col_labels = token_labels(query_tokens), token_labels(key_tokens)
    figure_traces: list = []
    annotations: list[dict] = []
    # A mask every head shares is pooled once, not once per head (20 ms a head at 2048 tokens).
    shared_pooled = None
    factor = downsample_factor(max(matrices.shape[-2:]), max_side) if max_side is not None else 1
    if image and factor > 1 and allowed is not None and allowed.ndim == 2 and revealed_rows is None:
        shared_pooled = pool_mask(allowed.detach().cpu().numpy().astype(bool), factor)
    for head in range(heads):
        panel = _panel(
            matrices[head],
            allowed[head] if allowed is not None and allowed.ndim == 3 else allowed,
            pad_rows,
            revealed_rows,
        )
        if image:
            traces = _image_traces(
                panel,
                value_range,
                head == 0 and style.show_colorbar,
                max_side,
                "query",
                "key",
                style.font_size,
                shared_pooled,
            )
        else:
            traces = _hover_traces(
                panel,
                row_labels,
                col_labels,
                value_range,
                head == 0 and style.show_colorbar,
                style.font_size,
                "query",
                "key",
                annotate,
                masked_trace=not grey_background,
            )
        suffix = _axis_suffix(head + 1)
        for trace in traces:
            trace.update(xaxis=f"x{suffix}", yaxis=f"y{suffix}")
        figure_traces += traces
        if sums:
            annotations += _row_sums(panel, head + 1, row_labels, style.font_size)
    # Query labels on the first column; key labels on the lowest panel of each column.
    axes = _axes_layout(
        layout,
        row_labels,
        col_labels,
        image,
        heads,
        x_labelled=[h + 1 for h in range(heads) if h + columns >= heads],
        y_labelled=[h + 1 for h in range(heads) if h % columns == 0],
        tick_size=tick,
    )
    grid = _grid_layout(rows, columns, horizontal, vertical, titles, style.font_size + 1)
    return _assembled(
        figure_traces,
        {
            **merge_layout(grid, axes),
            "width": layout.width,
            "height": layout.height,
            "margin": layout.margin,
            "font": {"size": style.font_size},
            "plot_bgcolor": "white",
        },
        shapes=(_grey_cells(len(query_tokens), len(key_tokens), heads) if grey_background else [])
        + (_highlight(highlight_row, heads) if highlight_row is not None else []),
        annotations=annotations,
    )


def heatmap(
    matrix: torch.Tensor,
    query_tokens: list[str],
    key_tokens: list[str],
    value_range: ValueRange,
    allowed: torch.Tensor | None = None,
    title: str = "",
    style: FigureStyle = FigureStyle(),
    row_name: str = "query",
    col_name: str = "key",
    *,
    width_px: float | None = None,
    pad_rows: torch.Tensor | list[bool] | None = None,
    highlight_row: int | None = None,
    first_query: int = 0,
    first_key: int = 0,
    annotate: bool | None = None,
    row_sums: bool | None = None,
    max_panel_px: float | None = None,
) -> go.Figure:
    """One heatmap with token labels on both axes (the focused head, the head mean), filling ``width_px``.

    Args:
        matrix: ``(Tq, Tk)`` values of one stage.
        query_tokens, key_tokens: the ``Tq`` row and ``Tk`` column labels.
        value_range: the colour range (see :func:`stage_range`).
        allowed: ``(Tq, Tk)`` bool, True = may attend; masked cells turn grey.
        width_px: the width the figure fills (None: ``style.cell_px`` per token).
        pad_rows: ``(Tq,)`` True where the query is a [PAD] token (hover says so).
        highlight_row: outline this query row.
        first_query, first_key: positions of the first row and column (a zoomed range).
        annotate, row_sums: as for :func:`head_grid`.
        max_panel_px: the tallest the matrix may be drawn.

    Shape: ``matrix`` and ``allowed`` are ``(Tq, Tk)``.
    """
    tick = style.tick_size
    image = matrix.shape[-1] * matrix.shape[-2] > SINGLE_HOVER_CELL_LIMIT
    if width_px is None:
        width_px = _default_width(len(key_tokens), style)
    want_sums = row_sums is not False and value_range.label == "weight" and not image
    small = len(query_tokens) <= ANNOTATE_MAX_TOKENS

    def lay_out(sums: bool) -> Frame:
        return frame(
            query_tokens,
            key_tokens,
            width_px,
            tick,
            colorbar=style.show_colorbar,
            title_px=(style.font_size + 3) * 1.8 if title else 0.0,
            axis_titles=True,
            right_extra_px=_row_sum_px(style.font_size) if sums else 0.0,
            first_query=first_query,
            first_key=first_key,
            **({"max_panel_px": max_panel_px} if max_panel_px else {}),
        )

    layout = lay_out(want_sums and small)
    annotate = not image and _annotate(
        max(len(query_tokens), len(key_tokens)), layout, value_range, style.font_size, annotate
    )
    sums = want_sums and small and bool(row_sums or annotate)
    if want_sums and small and not sums:
        layout = lay_out(False)
    panel = _panel(matrix, allowed, pad_rows, None)
    row_labels = token_labels(query_tokens, first_query)
    col_labels = token_labels(key_tokens, first_key)
    if image:
        traces = _image_traces(
            panel, value_range, style.show_colorbar, None, row_name, col_name, style.font_size
        )
    else:
        traces = _hover_traces(
            panel,
            row_labels,
            col_labels,
            value_range,
            style.show_colorbar,
            style.font_size,
            row_name,
            col_name,
            annotate,
        )
    axes = _axes_layout(layout, row_labels, col_labels, image, 1, [1], [1], tick)
    axes["xaxis"]["title"] = {"text": _axis_title(col_name)}
    axes["yaxis"]["title"] = {"text": _axis_title(row_name)}
    return _assembled(
        traces,
        _matrix_layout(axes, layout, title, style.font_size + 3, style),
        shapes=_highlight(highlight_row, 1) if highlight_row is not None else None,
        annotations=_row_sums(panel, 1, row_labels, style.font_size) if sums else None,
    )


def _noun(noun: str) -> str:
    """An axis noun (``"query"``) in the run's language."""
    return _(AXIS_NOUNS[noun]) if noun in AXIS_NOUNS else noun


def _axis_title(noun: str) -> str:
    """The axis title for a noun: its plural, in the run's language."""
    return _(AXIS_TITLES[noun]) if noun in AXIS_TITLES else _plural(noun)


def _plural(noun: str) -> str:
    """English plural of an axis noun: "query" → "queries", "key" → "keys"."""
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def mask_figure(
    allowed: torch.Tensor,
    tokens: list[str],
    title: str | None = None,
    style: FigureStyle = FigureStyle(),
    revealed_rows: int | None = None,
    *,
    width_px: float | None = None,
    highlight_row: int | None = None,
) -> go.Figure:
    """The boolean mask itself: dark = may attend (M = 0), grey = masked (M = −∞).

    ``title``: None = "mask" (in the run's language); "" = none.

    Shape: ``allowed`` is ``(T, T)``.
    """
    title = _("mask") if title is None else title
    labels = token_labels(tokens)
    values = allowed.detach().cpu().numpy().astype(float)
    if revealed_rows is not None:
        values[revealed_rows:] = np.nan
    tick = style.tick_size
    if width_px is None:
        width_px = _default_width(len(tokens), style)
    image = values.size > HOVER_CELL_LIMIT
    layout = frame(
        tokens, tokens, width_px, tick, colorbar=False, title_px=(style.font_size + 1) * 1.8 if title else 0.0
    )
    if image:
        value_range = ValueRange(0.0, 1.0, "Greys", N_("may attend"))
        trace = go.Image(
            source=_png_data_uri(values, values.astype(bool), value_range),
            hovertemplate=f"{_noun('query')} %{{y:.0f}}<br>{_noun('key')} %{{x:.0f}}<extra></extra>",
        )
    else:
        words = np.where(values == 1, _("may attend (M = 0)"), _("masked (M = −∞)"))
        trace = go.Heatmap(
            z=values,
            x=labels,
            y=labels,
            zmin=0,
            zmax=1,
            text=np.where(np.isnan(values), "", words).tolist(),
            colorscale=[[0, MASKED_COLOUR], [1, "#1f2937"]],
            showscale=False,
            hoverongaps=False,
            hovertemplate=f"{_noun('query')} %{{y}}<br>{_noun('key')} %{{x}}<br>%{{text}}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    return _single_matrix(
        [trace],
        layout,
        labels,
        image,
        title,
        style,
        shapes=_highlight(highlight_row, 1) if highlight_row is not None else None,
    )


def _matrix_layout(axes: dict, layout: Frame, title: str, title_px: int, style: FigureStyle) -> dict:
    """The layout of a figure of one matrix: its ``axes``, title, the frame's size and margins."""
    return {
        **axes,
        "title": {"text": title, "font": {"size": title_px}},
        "width": layout.width,
        "height": layout.height,
        "margin": layout.margin,
        "font": {"size": style.font_size},
        "plot_bgcolor": "white",
    }


def _single_matrix(
    traces: list,
    layout,
    labels: list[str],
    image: bool,
    title: str,
    style: FigureStyle,
    shapes: list[dict] | None = None,
) -> go.Figure:
    """A figure of one (T, T) matrix (the mask and parity pictures) with its axes, size and title."""
    axes = _axes_layout(layout, labels, labels, image, 1, [1], [1], style.tick_size)
    return _assembled(
        traces,
        _matrix_layout(axes, layout, title, style.font_size + 1, style),
        shapes=shapes,
    )


# (label, colour) of each kind of cell in :func:`parity_figure`, by code 0..4 (labels in English,
# shown in the run's language).
PARITY_KINDS = (
    (N_("both masked"), "#f1f3f5"),
    (N_("both may attend"), "#1f2937"),
    (N_("only ours may attend"), "#e03131"),
    (N_("only transformers may attend"), "#1971c2"),
    (N_("padding query row (by convention)"), MASKED_COLOUR),
)


def parity_kinds(ours: torch.Tensor, theirs: torch.Tensor, by_convention: torch.Tensor) -> np.ndarray:
    """Each cell's code in :data:`PARITY_KINDS`.

    Shape: ``ours``, ``theirs``, ``by_convention`` are ``(T, T)`` bool; returns ``(T, T)`` int.
    """
    ours_np, theirs_np = ours.cpu().numpy(), theirs.cpu().numpy()
    kinds = np.where(ours_np & theirs_np, 1, 0)
    kinds = np.where(ours_np & ~theirs_np, 2, kinds)
    kinds = np.where(~ours_np & theirs_np, 3, kinds)
    return np.where(by_convention.cpu().numpy(), 4, kinds)


def parity_figure(
    ours: torch.Tensor,
    theirs: torch.Tensor,
    by_convention: torch.Tensor,
    tokens: list[str],
    title: str = "",
    style: FigureStyle = FigureStyle(),
    *,
    width_px: float | None = None,
) -> go.Figure:
    """Our mask beside transformers' own in one picture: dark where both let a query attend,
    light where both mask, red where only ours lets it, blue where only transformers' does, and
    grey for padding query rows that differ by convention. Hover names the cell's kind.

    Shape: ``ours``, ``theirs``, ``by_convention`` are ``(T, T)`` bool (True = may attend / excused).
    """
    labels = token_labels(tokens)
    kinds = parity_kinds(ours, theirs, by_convention)  # (T, T)
    tick = style.tick_size
    if width_px is None:
        width_px = _default_width(len(tokens), style)
    layout = frame(
        tokens, tokens, width_px, tick, colorbar=False, title_px=(style.font_size + 1) * 1.8 if title else 0.0
    )
    count = len(PARITY_KINDS)
    colorscale = []
    for code, (_name, colour) in enumerate(PARITY_KINDS):
        colorscale += [[code / count, colour], [(code + 1) / count, colour]]
    names = np.array([_(name) for name, _colour in PARITY_KINDS], dtype=object)[kinds]
    gap = 1 if len(tokens) <= 64 else 0
    trace = go.Heatmap(
        z=kinds + 0.5,  # the middle of each kind's colour band
        x=labels,
        y=labels,
        zmin=0,
        zmax=count,
        text=names.tolist(),
        colorscale=colorscale,
        showscale=False,
        hovertemplate=f"{_noun('query')} %{{y}}<br>{_noun('key')} %{{x}}<br>%{{text}}<extra></extra>",
        xgap=gap,
        ygap=gap,
    )
    return _single_matrix([trace], layout, labels, False, title, style)


def difference_figure(
    difference: torch.Tensor,
    query_tokens: list[str],
    key_tokens: list[str],
    title: str | None = None,
    style: FigureStyle = FigureStyle(),
    *,
    width_px: float | None = None,
    pad_rows: torch.Tensor | list[bool] | None = None,
) -> go.Figure:
    """A diverging heatmap of ``B − A`` centred at 0 (blue: less attention, red: more).

    ``title``: None = "difference" (in the run's language).

    Shape: ``difference`` is ``(Tq, Tk)``.
    """
    title = _("difference") if title is None else title
    finite = difference[torch.isfinite(difference)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    value_range = ValueRange(-(bound or 1.0), bound or 1.0, DIVERGING, N_("Δ weight"))
    return heatmap(
        difference,
        query_tokens,
        key_tokens,
        value_range,
        title=title,
        style=style,
        width_px=width_px,
        pad_rows=pad_rows,
    )


def row_figure(
    row: torch.Tensor,
    key_tokens: list[str],
    allowed: torch.Tensor | None = None,
    title: str = "",
    style: FigureStyle = FigureStyle(),
) -> go.Figure:
    """One query row as bars: the exact weight on every key, with hover, at any length.

    Shape: ``row`` and ``allowed`` are ``(Tk,)``.
    """
    values = _to_numpy(row).astype(np.float32)
    masked = allowed.detach().cpu().numpy() == 0 if allowed is not None else np.zeros(len(values), bool)
    labels = [escape_label(token) for token in key_tokens]
    figure = go.Figure(
        go.Bar(
            x=np.arange(len(values)),
            y=values,
            customdata=labels,
            marker_color=np.where(masked, MASKED_COLOUR, "#3b528b").tolist(),
            hovertemplate=f"{_noun('key')} %{{x}}: %{{customdata}}<br>{_('weight')} %{{y:.4f}}<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 1}},
        height=300 if style.font_size < 18 else 380,
        margin={"l": 10, "r": 10, "t": 50 if title else 10, "b": 10},
        font={"size": style.font_size},
        xaxis_title=_("key position"),
        yaxis_title=_("weight"),
        yaxis_range=[0, 1],
        bargap=0,
        plot_bgcolor="white",
    )
    figure.update_xaxes(tickfont_size=style.tick_size)
    figure.update_yaxes(tickfont_size=style.tick_size)
    return figure
