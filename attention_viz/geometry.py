"""Figure geometry: how big a heatmap is drawn and which tick labels fit. No Streamlit here.

A heatmap is laid out for the width its column gives it: cells are square, the matrix fills the
width (up to a height cap), and tick labels are thinned (every k-th one) so that no two overlap.
Key labels stand upright when they fit in a cell, and are turned a quarter turn (never a slant,
which makes neighbours overlap) when they do not. Hover always names every cell.

Text widths are estimated from the font size, without a browser: ``CHAR_WIDTH`` per character
(wide East Asian characters count twice). Estimates err on the wide side.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

__all__ = ["Frame", "Ticks", "frame", "label_width", "short_label", "ticks_for"]

CHAR_WIDTH = 0.62  # average glyph width as a share of the font size (sans-serif, generous)
LINE_HEIGHT = 1.35  # the space one line of text needs, as a share of the font size
MAX_LABEL_CHARS = 12  # longer tokens are shortened on the axis (hover shows them whole)
COLORBAR_THICKNESS = 14
MAX_PANEL_PX = 900  # no matrix is drawn taller than this: it must fit a screen
# The room beside a tick label's text: plotly sets labels a few px off their axis.
LABEL_OFFSET_PX = 8


def label_width(text: str, font_px: float) -> float:
    """Estimated width of ``text`` in px at ``font_px``."""
    units = sum(2 if unicodedata.east_asian_width(c) in ("W", "F") else 1 for c in text)
    return units * CHAR_WIDTH * font_px


def short_label(text: str) -> str:
    """An axis label of at most ``MAX_LABEL_CHARS`` characters."""
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


@dataclass(frozen=True)
class Ticks:
    """Which tick labels an axis shows.

    Attributes:
        positions: zero-based cell indices that get a label (every ``step``-th one).
        text: the label shown at each position.
        angle: 0 (upright) or -90 (a quarter turn, for keys that are wider than a cell).
        extent_px: the space the labels take away from the axis (their width on a y axis,
            their height on an x axis).
    """

    positions: list[int]
    text: list[str]
    angle: int
    extent_px: float

    @property
    def step(self) -> int:
        return self.positions[1] - self.positions[0] if len(self.positions) > 1 else 1


def _labels(tokens: list[str], picks: list[int], step: int, first: int) -> list[str]:
    # Thinned labels carry their position, so a reader knows which row a label names.
    if step == 1:
        return [short_label(tokens[i]) for i in picks]
    return [short_label(f"{first + i}: {tokens[i]}") for i in picks]


def ticks_for(tokens: list[str], cell_px: float, font_px: float, axis: str, first: int = 0) -> Ticks:
    """The tick labels of one axis with cells ``cell_px`` wide (or tall), none overlapping.

    Args:
        tokens: one label per cell.
        cell_px: the size of one cell along this axis.
        font_px: the tick font size.
        axis: "x" (labels side by side) or "y" (labels stacked).
        first: the position of ``tokens[0]`` (a zoomed range starts later).
    """
    count = len(tokens)
    if count == 0:
        return Ticks([], [], 0, 0.0)
    line = font_px * LINE_HEIGHT
    # Stacked (y labels, or x labels turned): one line of text per label.
    step = max(1, math.ceil(line / max(cell_px, 1e-6)))
    picks = list(range(0, count, step))
    text = _labels(tokens, picks, step, first)
    widest = max(label_width(t, font_px) for t in text)
    if axis == "y":
        return Ticks(picks, text, 0, widest + LABEL_OFFSET_PX)
    upright = [short_label(t) for t in tokens]
    if max(label_width(t, font_px) for t in upright) + 6 <= cell_px:
        return Ticks(list(range(count)), upright, 0, line + LABEL_OFFSET_PX)
    return Ticks(picks, text, -90, widest + LABEL_OFFSET_PX)


@dataclass(frozen=True)
class Frame:
    """The layout of a figure of ``rows × cols`` panels, each a ``(Tq, Tk)`` matrix of square cells.

    All sizes are px. ``left``/``right``/``top``/``bottom`` are the figure's margins; panels are
    ``panel_w × panel_h`` with ``gap_x`` / ``gap_y`` between them.
    """

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    panel_w: float
    panel_h: float
    gap_x: float
    gap_y: float
    cell: float
    x_ticks: Ticks
    y_ticks: Ticks

    @property
    def margin(self) -> dict:
        return {"l": round(self.left), "r": round(self.right), "t": round(self.top), "b": round(self.bottom)}

    def spacing(self, rows: int, cols: int) -> tuple[float, float]:
        """``make_subplots`` spacings (fractions of the plotting area) for these gaps."""
        area_w = cols * self.panel_w + (cols - 1) * self.gap_x
        area_h = rows * self.panel_h + (rows - 1) * self.gap_y
        return self.gap_x / area_w if cols > 1 else 0.0, self.gap_y / area_h if rows > 1 else 0.0


def frame(
    query_tokens: list[str],
    key_tokens: list[str],
    width_px: float,
    font_px: float,
    *,
    rows: int = 1,
    cols: int = 1,
    colorbar: bool = True,
    title_px: float = 0.0,
    panel_title_px: float = 0.0,
    axis_titles: bool = False,
    right_extra_px: float = 0.0,
    labels_between_rows: bool = False,
    max_panel_px: float = MAX_PANEL_PX,
    first_query: int = 0,
    first_key: int = 0,
) -> Frame:
    """Lay out ``rows × cols`` panels of square cells in ``width_px``, labels thinned to fit.

    Args:
        query_tokens, key_tokens: the row and column labels of one panel (``Tq`` and ``Tk``).
        width_px: the width the figure may take.
        font_px: the tick label font size.
        colorbar: leave room at the bottom for a (horizontal) colour bar.
        title_px: height of the figure's title (0 = none).
        panel_title_px: height of each panel's title (0 = none).
        axis_titles: leave room for "keys" / "queries" axis titles.
        right_extra_px: more room right of each panel (e.g. row sums).
        labels_between_rows: key labels also sit between rows of panels (a last row that is
            not full leaves panels above it at the bottom of their column).
        max_panel_px: the tallest a panel may be.
        first_query, first_key: positions of the first row and column (a zoomed range).
    """
    n_rows, n_cols = max(1, len(query_tokens)), max(1, len(key_tokens))
    axis_title_px = font_px * 1.8 if axis_titles else 0.0
    right = 10.0 + right_extra_px
    # The colour bar lies under the matrix: width is what square cells are short of, not height.
    colorbar_px = COLORBAR_THICKNESS + font_px * LINE_HEIGHT + 16 if colorbar else 0.0
    gap_x = 14.0 + right_extra_px
    # First pass with every label, then again with the thinned labels' real widths.
    y_extent = max(label_width(short_label(t), font_px) for t in query_tokens or [""]) + LABEL_OFFSET_PX
    x_extent = font_px * LINE_HEIGHT + LABEL_OFFSET_PX
    for _ in range(2):
        left = 8.0 + y_extent + axis_title_px
        free_w = width_px - left - right - (cols - 1) * gap_x
        cell = free_w / (cols * n_cols)
        cell = max(0.05, min(cell, max_panel_px / n_rows))  # long texts get cells under a pixel
        x_ticks = ticks_for(key_tokens, cell, font_px, "x", first_key)
        y_ticks = ticks_for(query_tokens, cell, font_px, "y", first_query)
        if (y_ticks.extent_px, x_ticks.extent_px) == (y_extent, x_extent):
            break
        y_extent, x_extent = y_ticks.extent_px, x_ticks.extent_px
    panel_w, panel_h = cell * n_cols, cell * n_rows
    gap_y = panel_title_px + 8.0 + (x_extent if labels_between_rows else 0.0)
    top = 8.0 + title_px + panel_title_px
    bottom = 8.0 + x_extent + axis_title_px + colorbar_px
    used_w = left + right + cols * panel_w + (cols - 1) * gap_x
    height = top + bottom + rows * panel_h + (rows - 1) * gap_y
    return Frame(
        width=math.ceil(min(width_px, used_w)),
        height=math.ceil(height),
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        panel_w=panel_w,
        panel_h=panel_h,
        gap_x=gap_x,
        gap_y=gap_y,
        cell=cell,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
    )
