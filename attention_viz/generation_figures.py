"""The generation page's pictures: the matrix as it grows step by step, stale rows, the next-token
candidates and the KV cache's size. No Streamlit here.

Every picture takes a :class:`~attention_viz.figures.FigureStyle`, so presentation mode enlarges
its fonts; hover gives exact values and ends with ``<extra></extra>`` (no trace name box).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import torch

from attention_viz.figures import HIGHLIGHT_COLOUR, MASKED_COLOUR, FigureStyle, escape_label, heatmap
from attention_viz.generation import Candidate, GenerationStep
from attention_viz.i18n import N_, _
from attention_viz.scales import ValueRange

__all__ = ["LABELS", "NOT_YET", "cache_figure", "candidates_figure", "stale_figure", "step_heatmap"]

# Every visible word of these pictures, in one place: marked with N_, translated (_) where drawn.
LABELS = {
    "not_yet": "…",
    "row_axis": N_("query row"),
    "delta_axis": N_("max |Δ| over keys"),
    "tolerance": N_("float32 rounding ({tolerance:.0e})"),
    "stale": N_("stale"),
    "exact": N_("exact"),
    "delta_hover": N_("row %{customdata[0]}<br>max |Δ| %{customdata[1]}<br>%{customdata[2]}<extra></extra>"),
    "probability_axis": N_("probability"),
    "candidate_hover": N_("%{y}<br>probability %{x:.4f}<extra></extra>"),
    "step_axis": N_("step"),
    "cache_axis": N_("KV cache (KB)"),
    "cache_hover": N_("step %{x}<br>%{customdata[0]} tokens<br>%{customdata[1]} bytes<extra></extra>"),
}
NOT_YET = LABELS["not_yet"]  # a key label for a token not generated yet at the step shown
STALE_COLOUR = "#e03131"  # red: the cached row no longer matches
EXACT_COLOUR = "#1f2937"  # dark: the cached row matches to float32 rounding
CANDIDATE_COLOUR = "#3b528b"


def _label(key: str) -> str:
    """One of :data:`LABELS` in the run's language."""
    return _(LABELS[key])


# Bars of exactly 0 cannot sit on a log axis: they are drawn at this floor (hover gives the truth).
DELTA_FLOOR = 1e-10


def step_heatmap(
    weights: torch.Tensor,
    allowed: torch.Tensor,
    tokens: list[str],
    rows: int,
    value_range: ValueRange,
    title: str,
    style: FigureStyle = FigureStyle(),
    *,
    width_px: float | None = None,
    newest: tuple[int, int] | None = None,
) -> go.Figure:
    """One head's matrix as it stands after a step: the first ``rows`` query rows, the rest blank.

    Keys that do not exist yet at this step are labelled ``…`` (their tokens are still to come);
    a full forward without the causal mask does put weight on them, which is the point.

    Args:
        weights: ``(T, T)`` weights of one head.
        allowed: ``(T, T)`` bool, True = may attend (masked cells are grey).
        tokens: at least ``T`` display tokens (the final sequence).
        rows: query rows shown (``Generation.rows_at(step)``).
        value_range: the colour range (see :func:`attention_viz.figures.stage_range`).
        newest: ``(first, last)`` rows this step added, outlined.

    Shape: ``weights`` and ``allowed`` are ``(T, T)``.
    """
    length = weights.shape[-1]
    shown = weights.detach().to(torch.float64).clone()
    shown[rows:] = float("nan")  # not computed yet at this step: blank, no hover
    keys = [token if index < rows else NOT_YET for index, token in enumerate(tokens[:length])]
    figure = heatmap(
        shown,
        keys,
        keys,
        value_range,
        allowed=allowed,
        title=title,
        style=style,
        width_px=width_px,
        annotate=False,
        row_sums=False,
    )
    figure.update_xaxes(title_font_size=style.font_size)
    figure.update_yaxes(title_font_size=style.font_size)
    if newest is not None:
        first, last = newest
        figure.add_shape(
            type="rect",
            xref="x domain",
            yref="y",
            x0=0,
            x1=1,
            y0=first - 0.5,
            y1=last + 0.5,
            line={"color": HIGHLIGHT_COLOUR, "width": 3},
            fillcolor="rgba(0,0,0,0)",
            layer="above",
        )
    return figure


def stale_figure(
    delta: torch.Tensor,
    tokens: list[str],
    tolerance: float,
    title: str,
    style: FigureStyle = FigureStyle(),
    *,
    width_px: float = 600,
) -> go.Figure:
    """Per query row, how far the cached row is from the full forward's: red above ``tolerance``
    (stale), dark below (exact to float32 rounding), on a log axis with the tolerance drawn.

    Args:
        delta: ``(R,)`` max |Δ| of each row shown.
        tokens: the ``R`` query tokens.

    Shape: ``delta`` is ``(R,)``.
    """
    values = delta.detach().to(torch.float64).cpu().numpy()
    stale = values > tolerance
    labels = [f"{index}: {escape_label(token)}" for index, token in enumerate(tokens[: len(values)])]
    verdicts = np.where(stale, _label("stale"), _label("exact"))
    figure = go.Figure(
        go.Bar(
            x=labels,
            y=np.maximum(values, DELTA_FLOOR),
            marker_color=np.where(stale, STALE_COLOUR, EXACT_COLOUR).tolist(),
            customdata=np.stack([labels, [f"{value:.2e}" for value in values], verdicts], axis=-1),
            hovertemplate=_label("delta_hover"),
        )
    )
    figure.add_hline(y=tolerance, line={"color": "#495057", "dash": "dash", "width": 2})
    figure.add_annotation(
        text=_label("tolerance").format(tolerance=tolerance),
        xref="x domain",
        x=0,
        yref="y",
        y=np.log10(tolerance),  # annotations on a log axis are placed by the exponent
        xanchor="left",
        yanchor="bottom",
        showarrow=False,
        font={"size": style.tick_size, "color": "#495057"},
    )
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 1}},
        width=int(width_px),
        height=320 if style.font_size < 18 else 420,
        margin={"l": 10, "r": 10, "t": 50 if title else 10, "b": 10},
        font={"size": style.font_size},
        xaxis_title=_label("row_axis"),
        yaxis_title=_label("delta_axis"),
        yaxis={"type": "log", "range": [np.log10(DELTA_FLOOR), 0.1], "exponentformat": "power"},
        bargap=0.15,
        plot_bgcolor="white",
        showlegend=False,
    )
    figure.update_xaxes(tickfont_size=style.tick_size, title_font_size=style.font_size, automargin=True)
    figure.update_yaxes(tickfont_size=style.tick_size, title_font_size=style.font_size, gridcolor="#e9ecef")
    return figure


def candidates_figure(
    candidates: tuple[Candidate, ...],
    title: str,
    style: FigureStyle = FigureStyle(),
    *,
    width_px: float = 400,
) -> go.Figure:
    """The most probable next tokens as horizontal bars, the greedy choice (the first) in orange."""
    labels = [
        f"{rank}. {escape_label(candidate.token)}" for rank, candidate in enumerate(candidates, start=1)
    ]
    probabilities = [candidate.probability for candidate in candidates]
    colours = [HIGHLIGHT_COLOUR] + [CANDIDATE_COLOUR] * (len(candidates) - 1)
    figure = go.Figure(
        go.Bar(
            x=probabilities,
            y=labels,
            orientation="h",
            marker_color=colours,
            text=[f"{p:.2f}" for p in probabilities],
            textposition="outside",
            hovertemplate=_label("candidate_hover"),
        )
    )
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 1}},
        width=int(width_px),
        height=90 + len(candidates) * (2.4 * style.font_size),
        margin={"l": 10, "r": 10, "t": 50 if title else 10, "b": 10},
        font={"size": style.font_size},
        xaxis={"range": [0, 1.15], "title": _label("probability_axis")},
        yaxis={"autorange": "reversed", "automargin": True},
        plot_bgcolor="white",
    )
    figure.update_xaxes(tickfont_size=style.tick_size, title_font_size=style.font_size)
    figure.update_yaxes(tickfont_size=style.tick_size)
    return figure


def cache_figure(
    steps: tuple[GenerationStep, ...],
    step: int,
    title: str,
    style: FigureStyle = FigureStyle(),
    *,
    width_px: float = 400,
) -> go.Figure:
    """The KV cache's size after each step up to ``step`` (that one in orange), on axes that already
    fit the last step: the bars grow by the same amount per token (every layer keeps one key and
    one value per KV head for each token)."""
    done = steps[: step + 1]
    kilobytes = [entry.cache_bytes / 1024 for entry in done]
    colours = [HIGHLIGHT_COLOUR if index == step else MASKED_COLOUR for index in range(len(done))]
    figure = go.Figure(
        go.Bar(
            x=list(range(len(done))),
            y=kilobytes,
            marker_color=colours,
            customdata=[[entry.cache_tokens, f"{entry.cache_bytes:,}"] for entry in done],
            hovertemplate=_label("cache_hover"),
        )
    )
    figure.update_layout(
        title={"text": title, "font": {"size": style.font_size + 1}},
        width=int(width_px),
        height=260 if style.font_size < 18 else 340,
        margin={"l": 10, "r": 10, "t": 50 if title else 10, "b": 10},
        font={"size": style.font_size},
        xaxis={"title": _label("step_axis"), "range": [-0.5, len(steps) - 0.5]},
        yaxis={"title": _label("cache_axis"), "range": [0, steps[-1].cache_bytes / 1024 * 1.05]},
        bargap=0.15,
        plot_bgcolor="white",
    )
    figure.update_xaxes(
        tickfont_size=style.tick_size, title_font_size=style.font_size, dtick=max(1, len(steps) // 8)
    )
    figure.update_yaxes(tickfont_size=style.tick_size, title_font_size=style.font_size, gridcolor="#e9ecef")
    return figure
