"""Plotly figures: per-head heatmaps, masks and differences. No Streamlit here.

Two drawing paths, chosen by size, so that every picture is true and stays fast:

* **Small matrices** (up to ``HOVER_CELL_LIMIT`` cells per panel) are ``go.Heatmap`` traces that
  carry the exact values, with hover showing the query token, the key token and the value.
  Masked cells get a separate grey overlay trace on top; the values underneath stay the true
  values (0 for masked weights), so the figure data never lies.
* **Large matrices** are rendered to PNG images server-side (one ``go.Image`` per panel): a few
  hundred kB instead of tens of MB of JSON numbers. Hover then shows positions only.

Rows are queries (top to bottom), columns are keys (left to right), zero-based everywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, replace

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.colors import get_colorscale, sample_colorscale
from plotly.subplots import make_subplots

__all__ = [
    "FigureStyle",
    "HOVER_CELL_LIMIT",
    "PALETTES",
    "head_grid",
    "heatmap",
    "mask_figure",
    "difference_figure",
    "stage_range",
    "token_labels",
]

# Beyond this many cells per panel we draw images instead of JSON numbers (see module docstring).
HOVER_CELL_LIMIT = 96 * 96
# Colour-blind-safe sequential palettes; the first is the default.
PALETTES = ("Viridis", "Cividis", "Plasma", "Greys")
DIVERGING = "RdBu_r"  # blue (negative) - white (0) - red (positive)
MASKED_COLOUR = "#d4d4d4"  # light grey: clearly not the darkest colour that weight 0 gets
MASKED_RGB = (212, 212, 212)
MAX_TICK_LABELS = 40  # beyond this many tokens, axis labels become unreadable: show indices


@dataclass(frozen=True)
class FigureStyle:
    """How figures look; presentation mode swaps in larger fonts.

    Attributes:
        palette: sequential colour scale for weights (colour-blind-safe by default).
        font_size: base font size in px.
        cell_px: approximate pixels per cell for the focused heatmap's height.
        show_colorbar: draw a colour bar.
    """

    palette: str = PALETTES[0]  # colour-blind safe
    font_size: int = 13  # 20+ for a projector
    cell_px: int = 28
    show_colorbar: bool = True

    def presentation(self) -> FigureStyle:
        """The same style with projector-sized fonts."""
        return replace(self, font_size=22, cell_px=40)


@dataclass(frozen=True)
class ValueRange:
    """A colour range for one stage: fixed [0, 1] for weights, symmetric around 0 otherwise."""

    zmin: float
    zmax: float
    colorscale: str
    label: str


def stage_range(stage: str, values: torch.Tensor, palette: str = PALETTES[0]) -> ValueRange:
    """The colour range for a stage: weights always use [0, 1] so toggles never rescale them.

    Shape: ``values`` is any shape; only finite entries set a symmetric range.
    """
    if stage == "weights":
        return ValueRange(0.0, 1.0, palette, "weight")
    finite = values[torch.isfinite(values)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    bound = bound or 1.0
    label = {"scores": "score", "masked_scores": "masked score", "output": "output"}.get(stage, stage)
    return ValueRange(-bound, bound, DIVERGING, label)


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


def token_labels(tokens: list[str]) -> list[str]:
    """Unique category labels ``"3: the"`` so repeated tokens keep their own row/column."""
    return [f"{index}: {escape_label(token)}" for index, token in enumerate(tokens)]


def _to_numpy(matrix: torch.Tensor) -> np.ndarray:
    return matrix.detach().to(torch.float64).cpu().numpy()


def _rgb_lut(colorscale: str) -> np.ndarray:
    """256 RGB colours sampled from a plotly colour scale. Shape: ``(256, 3)`` uint8."""
    colours = sample_colorscale(get_colorscale(colorscale), np.linspace(0, 1, 256), colortype="tuple")
    return (np.asarray(colours) * 255).round().astype(np.uint8)


def _png_data_uri(matrix: np.ndarray, allowed: np.ndarray | None, value_range: ValueRange) -> str:
    """Render a matrix to a PNG data URI with the colour scale; masked cells are grey.

    Shape: ``matrix`` and ``allowed`` are ``(Tq, Tk)``.
    """
    from PIL import Image  # pillow ships with streamlit and plotly's image export

    span = value_range.zmax - value_range.zmin
    finite = np.where(np.isfinite(matrix), matrix, value_range.zmin)
    index = np.clip((finite - value_range.zmin) / span * 255, 0, 255).round().astype(np.uint8)
    rgb = _rgb_lut(value_range.colorscale)[index]  # (Tq, Tk, 3)
    if allowed is not None:
        rgb[~allowed] = MASKED_RGB
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _panel_traces(
    matrix: torch.Tensor,
    allowed: torch.Tensor | None,
    row_labels: list[str],
    col_labels: list[str],
    value_range: ValueRange,
    show_scale: bool,
    row_name: str = "query",
    col_name: str = "key",
    revealed_rows: int | None = None,
    max_side: int | None = None,
) -> list[go.BaseTraceType]:
    """The traces of one panel: a heatmap plus masked overlay, or one image when large.

    ``max_side`` caps an image's side in cells: larger matrices are max-pooled (see
    :func:`downsample`).

    ``revealed_rows`` (for stepping through a mask) leaves rows from that index on blank.

    Shape: ``matrix`` is ``(Tq, Tk)``; ``allowed`` is ``(Tq, Tk)`` bool or None.
    """
    values = _to_numpy(matrix)
    allowed_np = allowed.detach().cpu().numpy().astype(bool) if allowed is not None else None
    if revealed_rows is not None:
        values = values.copy()
        values[revealed_rows:] = np.nan  # not yet revealed: drawn blank, neither value nor mask
        if allowed_np is not None:
            allowed_np = allowed_np.copy()
            allowed_np[revealed_rows:] = True
    if values.size > HOVER_CELL_LIMIT:
        return _image_traces(values, allowed_np, value_range, show_scale, max_side, row_name, col_name)

    # float32 halves the typed-array payload; the values keep 7 significant digits.
    shown = np.where(np.isfinite(values), values, np.nan).astype(np.float32)  # -inf is drawn as masked
    traces: list[go.BaseTraceType] = [
        go.Heatmap(
            z=shown,
            x=col_labels,
            y=row_labels,
            zmin=value_range.zmin,
            zmax=value_range.zmax,
            colorscale=value_range.colorscale,
            showscale=show_scale,
            colorbar={"title": {"text": value_range.label}, "thickness": 14},
            hovertemplate=(
                f"{row_name} %{{y}}<br>{col_name} %{{x}}<br>{value_range.label} %{{z:.4f}}<extra></extra>"
            ),
            xgap=0,
            ygap=0,
        )
    ]
    if allowed_np is not None and not allowed_np.all():
        overlay = np.where(allowed_np, np.nan, 1.0).astype(np.float32)
        traces.append(
            go.Heatmap(
                z=overlay,
                x=col_labels,
                y=row_labels,
                zmin=0,
                zmax=1,
                colorscale=[[0, MASKED_COLOUR], [1, MASKED_COLOUR]],
                showscale=False,
                hovertemplate=f"{row_name} %{{y}}<br>{col_name} %{{x}}<br>masked<extra></extra>",
                name="masked",
            )
        )
    return traces


def downsample_factor(length: int, max_side: int) -> int:
    """The integer pooling factor that brings ``length`` cells to at most ``max_side``."""
    return max(1, math.ceil(length / max_side))


def downsample(
    values: np.ndarray, allowed: np.ndarray | None, max_side: int
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Max-pool a matrix by an integer factor so neither side exceeds ``max_side``.

    Max (not mean) keeps a sharp attention peak visible after pooling; a pooled cell is masked
    only if every cell in its block was masked.

    Shape: ``values`` and ``allowed`` are ``(Tq, Tk)``; returns ``(ceil(Tq/f), ceil(Tk/f))`` and ``f``.
    """
    factor = downsample_factor(max(values.shape), max_side)
    if factor <= 1:
        return values, allowed, 1
    rows, cols = (math.ceil(n / factor) * factor for n in values.shape)
    padded = np.full((rows, cols), -np.inf)
    padded[: values.shape[0], : values.shape[1]] = np.where(np.isnan(values), -np.inf, values)
    pooled = padded.reshape(rows // factor, factor, cols // factor, factor).max(axis=(1, 3))
    pooled[np.isneginf(pooled)] = np.nan
    pooled_allowed = None
    if allowed is not None:
        padded_allowed = np.zeros((rows, cols), dtype=bool)
        padded_allowed[: allowed.shape[0], : allowed.shape[1]] = allowed
        pooled_allowed = padded_allowed.reshape(rows // factor, factor, cols // factor, factor).any(
            axis=(1, 3)
        )
    return pooled, pooled_allowed, factor


def _colorbar_trace(value_range: ValueRange) -> go.Scatter:
    """An invisible trace that only draws the colour bar (images have none of their own)."""
    return go.Scatter(
        x=[None],
        y=[None],
        mode="markers",
        hoverinfo="skip",
        showlegend=False,
        marker={
            "colorscale": value_range.colorscale,
            "cmin": value_range.zmin,
            "cmax": value_range.zmax,
            "color": [value_range.zmin],
            "showscale": True,
            "colorbar": {"title": {"text": value_range.label}, "thickness": 14},
        },
    )


def _image_traces(
    values: np.ndarray,
    allowed: np.ndarray | None,
    value_range: ValueRange,
    show_scale: bool,
    max_side: int | None,
    row_name: str,
    col_name: str,
) -> list[go.BaseTraceType]:
    """A large matrix as one PNG image, in token coordinates, optionally max-pooled.

    Shape: ``values`` and ``allowed`` are ``(Tq, Tk)``.
    """
    factor = 1
    if max_side is not None:
        values, allowed, factor = downsample(values, allowed, max_side)
    offset = (factor - 1) / 2  # pixel centres sit in the middle of their token block
    traces: list[go.BaseTraceType] = [
        go.Image(
            source=_png_data_uri(values, allowed, value_range),
            x0=offset,
            y0=offset,
            dx=factor,
            dy=factor,
            hovertemplate=f"{row_name} %{{y:.0f}}<br>{col_name} %{{x:.0f}}<extra></extra>",
            name=f"pooled {factor}×{factor}" if factor > 1 else "",
        )
    ]
    if show_scale:
        traces.append(_colorbar_trace(value_range))
    return traces


def _axis_ticks(labels: list[str], tokens: list[str]) -> dict:
    """Tick settings: the bare tokens when they fit, sparse indices when there are too many."""
    if len(tokens) <= MAX_TICK_LABELS:
        return {"tickmode": "array", "tickvals": labels, "ticktext": [escape_label(t) for t in tokens]}
    step = math.ceil(len(tokens) / 16)
    picks = list(range(0, len(tokens), step))
    return {"tickmode": "array", "tickvals": [labels[i] for i in picks], "ticktext": [str(i) for i in picks]}


def _is_image(matrix: torch.Tensor) -> bool:
    return matrix.shape[-1] * matrix.shape[-2] > HOVER_CELL_LIMIT


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
) -> go.Figure:
    """Small multiples: one heatmap per head, sharing one colour scale.

    Args:
        matrices: ``(H, Tq, Tk)`` one matrix per head (e.g. weights of one batch item).
        query_tokens: ``Tq`` row labels. key_tokens: ``Tk`` column labels.
        value_range: colour range shared by every panel (see :func:`stage_range`).
        allowed: ``(Tq, Tk)`` or ``(H, Tq, Tk)`` bool, True = may attend; masked cells turn grey.
        titles: one per head; defaults to ``head 0``, ``head 1``, ...
        columns: panels per row.
        revealed_rows: draw only query rows before this index (stepping through a mask).
        max_side: max-pool panels drawn as images to at most this many cells a side.

    Shape: ``matrices`` is ``(H, Tq, Tk)``.
    """
    heads = matrices.shape[0]
    columns = max(1, min(columns, heads))
    rows = math.ceil(heads / columns)
    titles = titles or [f"head {h}" for h in range(heads)]
    figure = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=titles,
        horizontal_spacing=0.04 if len(key_tokens) > 16 else 0.08,
        vertical_spacing=min(0.12, 0.3 / rows),
    )
    row_labels, col_labels = token_labels(query_tokens), token_labels(key_tokens)
    for head in range(heads):
        head_allowed = None
        if allowed is not None:
            head_allowed = allowed[head] if allowed.ndim == 3 else allowed
        for trace in _panel_traces(
            matrices[head],
            head_allowed,
            row_labels,
            col_labels,
            value_range,
            show_scale=head == 0,
            revealed_rows=revealed_rows,
            max_side=max_side,
        ):
            figure.add_trace(trace, row=head // columns + 1, col=head % columns + 1)
    # Token labels only where they fit: rows on the first column, keys on the bottom row.
    show_ticks = len(query_tokens) <= 24
    _style_axes(
        figure,
        query_tokens,
        key_tokens,
        row_labels,
        col_labels,
        show_ticks,
        _is_image(matrices),
        style.font_size - 3,
    )
    for head in range(heads):
        row, col = head // columns + 1, head % columns + 1
        if col > 1:
            figure.update_yaxes(showticklabels=False, row=row, col=col)
        if head + columns < heads:
            figure.update_xaxes(showticklabels=False, row=row, col=col)
    figure.update_layout(
        height=max(320, rows * panel_px + 60),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        font={"size": style.font_size},
        plot_bgcolor="white",
    )
    figure.update_annotations(font_size=style.font_size + 1)
    return figure


def _style_axes(
    figure: go.Figure,
    query_tokens: list[str],
    key_tokens: list[str],
    row_labels: list[str],
    col_labels: list[str],
    show_ticks: bool,
    is_image: bool,
    tick_size: int,
) -> None:
    """Queries top to bottom, keys left to right, square cells, token tick labels.

    ``tick_size`` is set explicitly: Streamlit's chart theme would otherwise keep tick labels
    small even in presentation mode.
    """
    fonts = {"tickfont_size": tick_size, "title_font_size": tick_size + 1}
    if is_image:
        # go.Image already puts row 0 at the top, in pixel coordinates.
        figure.update_xaxes(showticklabels=show_ticks, title_text=None, **fonts)
        figure.update_yaxes(showticklabels=show_ticks, scaleanchor=None, **fonts)
        return
    x_ticks = _axis_ticks(col_labels, key_tokens) if show_ticks else {"showticklabels": False}
    y_ticks = _axis_ticks(row_labels, query_tokens) if show_ticks else {"showticklabels": False}
    figure.update_xaxes(type="category", tickangle=-60, showgrid=False, **x_ticks, **fonts)
    figure.update_yaxes(type="category", autorange="reversed", showgrid=False, **y_ticks, **fonts)


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
) -> go.Figure:
    """One large heatmap with token labels on both axes (the focused head, the head mean).

    Shape: ``matrix`` and ``allowed`` are ``(Tq, Tk)``.
    """
    row_labels, col_labels = token_labels(query_tokens), token_labels(key_tokens)
    figure = go.Figure(
        _panel_traces(
            matrix, allowed, row_labels, col_labels, value_range, style.show_colorbar, row_name, col_name
        )
    )
    _style_axes(
        figure, query_tokens, key_tokens, row_labels, col_labels, True, _is_image(matrix), style.font_size - 1
    )
    side = min(900, max(360, style.cell_px * len(query_tokens) + 140))
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 3}},
        height=side,
        margin={"l": 10, "r": 10, "t": 60 if title else 20, "b": 10},
        font={"size": style.font_size},
        xaxis_title=_plural(col_name),
        yaxis_title=_plural(row_name),
        plot_bgcolor="white",
    )
    return figure


def _plural(noun: str) -> str:
    """English plural of an axis noun: "query" → "queries", "key" → "keys"."""
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def mask_figure(
    allowed: torch.Tensor,
    tokens: list[str],
    title: str = "mask",
    style: FigureStyle = FigureStyle(),
    revealed_rows: int | None = None,
) -> go.Figure:
    """The boolean mask itself: dark = may attend, grey = masked.

    Shape: ``allowed`` is ``(T, T)``.
    """
    labels = token_labels(tokens)
    values = allowed.detach().cpu().numpy().astype(float)
    if revealed_rows is not None:
        values[revealed_rows:] = np.nan
    if values.size > HOVER_CELL_LIMIT:
        value_range = ValueRange(0.0, 1.0, "Greys", "may attend")
        trace = go.Image(source=_png_data_uri(values, values.astype(bool), value_range), hoverinfo="x+y")
    else:
        trace = go.Heatmap(
            z=values,
            x=labels,
            y=labels,
            zmin=0,
            zmax=1,
            colorscale=[[0, MASKED_COLOUR], [1, "#1f2937"]],
            showscale=False,
            hovertemplate="query %{y}<br>key %{x}<br>may attend: %{z}<extra></extra>",
            xgap=1,
            ygap=1,
        )
    figure = go.Figure(trace)
    _style_axes(
        figure, tokens, tokens, labels, labels, True, values.size > HOVER_CELL_LIMIT, style.font_size - 2
    )
    side = min(700, max(300, style.cell_px * len(tokens) + 120))
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 1}},
        height=side,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        font={"size": style.font_size},
        plot_bgcolor="white",
    )
    return figure


def difference_figure(
    difference: torch.Tensor,
    query_tokens: list[str],
    key_tokens: list[str],
    title: str = "difference",
    style: FigureStyle = FigureStyle(),
) -> go.Figure:
    """A diverging heatmap of ``B − A`` centred at 0 (blue: less attention, red: more).

    Shape: ``difference`` is ``(Tq, Tk)``.
    """
    finite = difference[torch.isfinite(difference)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    value_range = ValueRange(-(bound or 1.0), bound or 1.0, DIVERGING, "Δ weight")
    return heatmap(difference, query_tokens, key_tokens, value_range, title=title, style=style)


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
            hovertemplate="key %{x}: %{customdata}<br>weight %{y:.5f}<extra></extra>",
        )
    )
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 1}},
        height=300,
        margin={"l": 10, "r": 10, "t": 50 if title else 10, "b": 10},
        font={"size": style.font_size},
        xaxis_title="key position",
        yaxis_title="weight",
        yaxis_range=[0, 1],
        bargap=0,
        plot_bgcolor="white",
    )
    return figure
