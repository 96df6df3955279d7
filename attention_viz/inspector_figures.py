"""Pictures of one cell's arithmetic (:mod:`attention_viz.inspector`) and its outline on a heatmap.

* :func:`vector_figure`: q_i, k_j and their element-wise product, dimension by dimension.
* :func:`softmax_figure`: the query's row before the softmax (s + M) and after it (w), key j marked.
* :func:`output_figure`: the output row o_i = Σ_k w_ik v_k and key j's share of it (Playground).
* :func:`chain_latex` / :func:`output_latex`: the chain as equations with the actual numbers.
* :func:`mark_cell`: outlines the inspected cell on a heatmap.

No Streamlit here. Every visible word is in the block of constants below, marked with ``N_`` and
translated (``_``) where a figure is drawn, in the run's language.
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from attention_viz.figures import (
    HIGHLIGHT_COLOUR,
    MASKED_COLOUR,
    FigureStyle,
    escape_label,
    figure_of,
    merge_layout,
    trace,
)
from attention_viz.geometry import LINE_HEIGHT, label_width, ticks_for
from attention_viz.i18n import N_, _
from attention_viz.inspector import CellInspection

__all__ = [
    "chain_latex",
    "mark_cell",
    "output_figure",
    "output_latex",
    "softmax_figure",
    "vector_figure",
]

# --- every visible word of these figures (marked here, translated where drawn) -----------------------------------------------------------
Q_TITLE = N_("query vector q<sub>{query}</sub> of “{token}”")
K_TITLE = N_("key vector k<sub>{key}</sub> of “{token}”")
K_TITLE_GROUPED = N_("key vector k<sub>{key}</sub> of “{token}” (KV head {kv_head})")
PRODUCT_TITLE = N_("q<sub>{query}</sub>[m] · k<sub>{key}</sub>[m]: the bars add up to q·k = {dot}")
DIMENSION_AXIS = N_("dimension m")
Q_HOVER = N_("dimension %{x}<br>q[m] = %{y:.4f}<extra></extra>")
K_HOVER = N_("dimension %{x}<br>k[m] = %{y:.4f}<extra></extra>")
PRODUCT_HOVER = N_("dimension %{x}<br>q[m] · k[m] = %{y:.4f}<extra></extra>")
SCORES_TITLE = N_("row {query} before the softmax: s + M for every key")
WEIGHTS_TITLE = N_("after the softmax: the weights w (they add up to {total})")
KEY_AXIS = N_("key position")
SCORE_HOVER = N_("key %{customdata}<br>s + M = %{y:.4f}<extra></extra>")
MASKED_HOVER = N_("key %{customdata}<br>masked: s + M = −∞, weight 0<extra></extra>")
WEIGHT_HOVER = N_("key %{customdata}<br>weight %{y:.4f}<extra></extra>")
MINUS_INFINITY = "−∞"
CHOSEN_WEIGHT = N_("w = {weight}")
OUTPUT_TITLE = N_("output row o<sub>{query}</sub> = Σ<sub>k</sub> w<sub>{query}k</sub> v<sub>k</sub>")
OUTPUT_NAME = N_("o<sub>{query}</sub> (all keys)")
SHARE_NAME = N_("w<sub>{query},{key}</sub> v<sub>{key}</sub> (key {key} alone)")
OUTPUT_HOVER = N_("dimension %{x}<br>%{y:.4f}<extra></extra>")
EMPTY_ROW_TEXT = N_("every key of this row is masked: by rule its weights are all 0")  # in LaTeX \text{}
# ----------------------------------------------------------------------------------------------------

Q_COLOUR = "#3b528b"  # viridis blue
K_COLOUR = "#21918c"  # viridis teal
POSITIVE_COLOUR = "#b2182b"  # red, as positive scores are drawn (RdBu_r)
NEGATIVE_COLOUR = "#2166ac"  # blue, as negative scores are drawn
BAR_COLOUR = "#3b528b"
OUTPUT_TERMS = 8  # the output equation lists this many keys, then "+ …"
BAR_OUTLINE = {"color": "#E5ECF6", "width": 0.5}  # as plotly's default template outlined bars
X_TITLE_STANDOFF_PX = 10  # between the x-axis tick labels and the axis title


def _number(value: float, digits: int = 4) -> str:
    """Plain text for a number: fixed decimals, or scientific when it is very large or small."""
    if math.isinf(value):
        return MINUS_INFINITY if value < 0 else "∞"
    if value == 0:
        return "0"  # exactly: a masked key's weight, e^(−∞)
    if not 1e-3 <= abs(value) < 1e6:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}f}"


def _tex(value: float, digits: int = 4) -> str:
    """A number as LaTeX: ``-\\infty``, ``0.1234`` or ``1.234 \\times 10^{13}``."""
    if math.isinf(value):
        return r"-\infty" if value < 0 else r"\infty"
    if value == 0:
        return "0"
    if not 1e-3 <= abs(value) < 1e6:
        mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
        return rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return f"{value:.{digits}f}"


def _significant(value: float) -> str:
    """A positive sum of exponentials to 4 significant digits, as LaTeX (``1.544 \\times 10^{5}``,
    never Python's ``1.544e+05``, which LaTeX would set as the letter e plus 05)."""
    if value == 0 or not 1e-3 <= abs(value) < 1e6:
        return _tex(value, 4)
    text = f"{value:.4g}"
    if "e" in text:  # from 10^4 up, 4 significant digits need an exponent
        mantissa, exponent = text.split("e")
        return rf"{mantissa} \times 10^{{{int(exponent)}}}"
    return text


# Between the plot area and its tick labels: the margin's pad and the tick's own gap.
TICK_GAP_PX = 14
# The finest tick step plotly picks on these short value axes: about a tenth of the range.
FINEST_TICKS = 10


def _value_labels_px(series: list[np.ndarray], font_px: float) -> float:
    """The width of the widest tick label plotly writes on one value axis showing ``series`` (and
    0, where bars start): the extremes written with the decimals of its finest step.

    The figures size their margins themselves (no ``automargin``): plotly would otherwise measure
    every label after drawing and draw the figure again, which doubled an inspector figure's time.
    """
    finite = [values[np.isfinite(values)] for values in series]
    low = min([0.0, *(float(values.min()) for values in finite if values.size)])
    high = max([0.0, *(float(values.max()) for values in finite if values.size)])
    span = (high - low) or 1.0
    decimals = max(0, -math.floor(math.log10(span / FINEST_TICKS)))
    if decimals > 4 or max(-low, high) >= 1e5:
        return label_width("−0.0000", font_px)  # plotly switches to a short SI or exponent form
    return max(label_width(f"−{abs(value):.{decimals}f}"[value >= 0 :], font_px) for value in (low, high))


def _margins_for(left_labels_px: float, below_px: float) -> dict:
    """Margins that fit the value axis's labels on the left and ``below_px`` under the last panel."""
    return {"l": round(left_labels_px + TICK_GAP_PX), "b": round(below_px)}


def _x_title_px(style: FigureStyle) -> float:
    """Below the tick labels: the x-axis title at its standoff, then a little air."""
    return X_TITLE_STANDOFF_PX + (style.tick_size + 1) * LINE_HEIGHT + 6


def _layout(style: FigureStyle, width_px: float | None, height: float) -> dict:
    """The size, margins and fonts every inspector figure shares."""
    return {
        "width": None if width_px is None else round(width_px),
        "height": round(height),
        "margin": {"l": 10, "r": 10, "t": 10 + (style.font_size + 2) * 2, "b": 10},
        "font": {"size": style.font_size},
        "plot_bgcolor": "white",
        "showlegend": False,
        "bargap": 0.15,
        "hoverlabel": {"font": {"size": style.font_size}},
    }


def _x_axis(style: FigureStyle) -> dict:
    return {
        "tickfont": {"size": style.tick_size},
        "showgrid": False,
        "zeroline": False,
        "automargin": False,
        "title": {"standoff": X_TITLE_STANDOFF_PX},
    }


def _y_axis(style: FigureStyle) -> dict:
    return {
        "tickfont": {"size": style.tick_size},
        "gridcolor": "#eeeeee",
        "zeroline": True,
        "zerolinecolor": "#888888",
        "automargin": False,
    }


@functools.lru_cache(maxsize=8)
def _stacked_skeleton(rows: int, vertical_spacing: float) -> str:
    """``make_subplots``' layout of ``rows`` panels in one column sharing the x-axis, each titled
    (the titles are placeholders), as JSON: made once, copied for every figure."""
    figure = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=vertical_spacing,
        subplot_titles=[str(row) for row in range(rows)],
    )
    return json.dumps(figure.layout.to_plotly_json())


def _stacked(
    panels: list[list[dict]],
    titles: list[str],
    vertical_spacing: float,
    style: FigureStyle,
    layout: dict,
) -> go.Figure:
    """``panels`` (the traces of each row) stacked in one column sharing the x-axis, with
    ``titles`` above them, styled and then ``layout`` merged in, built in one validated step
    (plotly re-walks the whole layout on every update call)."""
    skeleton = json.loads(_stacked_skeleton(len(panels), vertical_spacing))
    for note, title in zip(skeleton["annotations"], titles, strict=True):
        note["text"] = title
        note["font"] = {"size": style.font_size + 1}
    traces = []
    for row, panel in enumerate(panels):
        suffix = "" if row == 0 else str(row + 1)
        merge_layout(skeleton[f"xaxis{suffix}"], _x_axis(style))
        merge_layout(skeleton[f"yaxis{suffix}"], _y_axis(style))
        traces += [{**bars, "xaxis": f"x{suffix}", "yaxis": f"y{suffix}"} for bars in panel]
    notes = layout.pop("annotations", [])
    merge_layout(skeleton, layout)
    skeleton["annotations"] += notes
    return figure_of(traces, skeleton)


def vector_figure(
    cell: CellInspection, style: FigureStyle = FigureStyle(), width_px: float | None = None
) -> go.Figure:
    """Three rows of bars over the dimensions m: q_i[m], k_j[m] and q_i[m]·k_j[m].

    The products are red where they raise the score and blue where they lower it; their sum is
    q·k. For a grouped-query head the key's title names the KV head it comes from.

    Shape: ``cell.q`` and ``cell.k`` are ``(d,)``.
    """
    dims = np.arange(cell.q.shape[0])
    product = cell.product.numpy()
    key_title = _(K_TITLE_GROUPED if cell.grouped else K_TITLE)
    q_bars = trace(
        "bar",
        x=dims,
        y=cell.q.double().numpy(),
        marker={"color": Q_COLOUR, "line": BAR_OUTLINE},
        hovertemplate=_(Q_HOVER),
    )
    k_bars = trace(
        "bar",
        x=dims,
        y=cell.k.double().numpy(),
        marker={"color": K_COLOUR, "line": BAR_OUTLINE},
        hovertemplate=_(K_HOVER),
    )
    product_bars = trace(
        "bar",
        x=dims,
        y=product,
        marker={
            "color": np.where(product >= 0, POSITIVE_COLOUR, NEGATIVE_COLOUR).tolist(),
            "line": BAR_OUTLINE,
        },
        hovertemplate=_(PRODUCT_HOVER),
    )
    presentation = style.font_size >= 18
    below = style.tick_size * LINE_HEIGHT + _x_title_px(style)  # the dimensions, then the title
    height = (3 * 150 if presentation else 3 * 115) + 4 * (style.font_size + 2) * 2 + below
    layout = _layout(style, width_px, height)
    left = max(_value_labels_px([values], style.tick_size) for values in (q_bars["y"], k_bars["y"], product))
    layout["margin"].update(_margins_for(left, below))
    return _stacked(
        [[q_bars], [k_bars], [product_bars]],
        [
            _(Q_TITLE).format(query=cell.query, token=escape_label(cell.query_token)),
            key_title.format(key=cell.key, token=escape_label(cell.key_token), kv_head=cell.kv_head),
            _(PRODUCT_TITLE).format(query=cell.query, key=cell.key, dot=_number(cell.dot)),
        ],
        0.12,
        style,
        {
            **layout,
            "xaxis3": {"title": {"text": _(DIMENSION_AXIS), "font": {"size": style.tick_size + 1}}},
        },
    )


def _key_ticks(cell: CellInspection, width_px: float | None, style: FigureStyle) -> tuple[dict, float]:
    """Tick labels for the key axis that never overlap (thinned as the heatmaps thin theirs), and
    the height they take below the axis."""
    count = len(cell.tokens)
    plot_px = (width_px or 700) - 40
    ticks = ticks_for(list(cell.tokens), plot_px / max(count, 1), style.tick_size, "x")
    axis = {
        "tickmode": "array",
        "tickvals": ticks.positions,
        "ticktext": [escape_label(text) for text in ticks.text],
        "tickangle": ticks.angle,
    }
    return axis, ticks.extent_px


def softmax_figure(
    cell: CellInspection, style: FigureStyle = FigureStyle(), width_px: float | None = None
) -> go.Figure:
    """The query's row as bars: s_ik + M_ik over the keys k (masked keys say −∞), then the weights w_ik.

    Key j, the inspected cell, is orange in both, and its weight is written beside its bar.

    Shape: the row is ``(T,)``.
    """
    keys = np.arange(len(cell.tokens))
    names = [f"{k}: {escape_label(token)}" for k, token in enumerate(cell.tokens)]
    allowed = cell.row_allowed.numpy().astype(bool)
    scores = cell.row_scores.double().numpy()
    weights = cell.row_weights.double().numpy()
    colours = np.where(keys == cell.key, HIGHLIGHT_COLOUR, BAR_COLOUR)
    score_traces: list[dict] = [
        trace(
            "bar",
            x=keys[allowed],
            y=scores[allowed],
            customdata=np.array(names, dtype=object)[allowed],
            marker={"color": colours[allowed].tolist(), "line": BAR_OUTLINE},
            hovertemplate=_(SCORE_HOVER),
        )
    ]
    if (~allowed).any():
        score_traces.append(
            trace(
                "scatter",
                x=keys[~allowed],
                y=np.zeros(int((~allowed).sum())),
                customdata=np.array(names, dtype=object)[~allowed],
                mode="text+markers" if (~allowed).sum() <= 64 else "markers",
                text=[MINUS_INFINITY] * int((~allowed).sum()),
                textposition="top center",
                textfont={"size": style.tick_size, "color": "#555555"},
                marker={
                    "symbol": "x-thin",
                    "size": 8,
                    "line": {
                        "width": 2,
                        "color": np.where(keys[~allowed] == cell.key, HIGHLIGHT_COLOUR, "#777777").tolist(),
                    },
                },
                hovertemplate=_(MASKED_HOVER),
            )
        )
    weight_bars = trace(
        "bar",
        x=keys,
        y=weights,
        customdata=names,
        marker={"color": np.where(allowed, colours, MASKED_COLOUR).tolist(), "line": BAR_OUTLINE},
        hovertemplate=_(WEIGHT_HOVER),
    )
    presentation = style.font_size >= 18
    ticks, below = _key_ticks(cell, width_px, style)
    below += _x_title_px(style)
    panels = 2 * 190 if presentation else 2 * 150
    layout = _layout(style, width_px, panels + 2 * (style.font_size + 2) * 2 + below)
    weights_axis = np.array([0.0, 1.15])  # its fixed range, below
    left = max(_value_labels_px([values], style.tick_size) for values in (scores[allowed], weights_axis))
    layout["margin"].update(_margins_for(left, below))
    key_axis = {"range": [-0.5, len(keys) - 0.5], **ticks}
    return _stacked(
        [score_traces, [weight_bars]],
        [
            _(SCORES_TITLE).format(query=cell.query),
            _(WEIGHTS_TITLE).format(total=f"{float(weights.sum()):.2f}"),
        ],
        0.16,
        style,
        {
            **layout,
            "xaxis": key_axis,
            "xaxis2": {**key_axis, "title": {"text": _(KEY_AXIS), "font": {"size": style.tick_size + 1}}},
            "yaxis2": {"range": [0, 1.15]},
            "annotations": [
                {
                    "x": cell.key,
                    "y": cell.weight,
                    "xref": "x2",
                    "yref": "y2",
                    "text": _(CHOSEN_WEIGHT).format(weight=_number(cell.weight)),
                    "showarrow": True,
                    "arrowhead": 2,
                    "arrowcolor": HIGHLIGHT_COLOUR,
                    "ax": 0,
                    "ay": -(style.font_size * 2),
                    "font": {"color": HIGHLIGHT_COLOUR, "size": style.font_size},
                }
            ],
        },
    )


def output_figure(
    cell: CellInspection, style: FigureStyle = FigureStyle(), width_px: float | None = None
) -> go.Figure:
    """The head's output row o_i beside key j's share w_ij v_j, dimension by dimension.

    Shape: ``cell.output`` is ``(d_v,)``; raises ValueError if the trace kept no values.
    """
    if cell.output is None or cell.contributions is None:
        raise ValueError("This inspection has no values: only the Playground keeps V.")
    dims = np.arange(cell.output.shape[0])
    bars = [
        trace(
            "bar",
            x=dims,
            y=cell.output.double().numpy(),
            name=_(OUTPUT_NAME).format(query=cell.query),
            marker={"color": BAR_COLOUR, "line": BAR_OUTLINE},
            hovertemplate=_(OUTPUT_HOVER),
        ),
        trace(
            "bar",
            x=dims,
            y=cell.contributions[cell.key].numpy(),
            name=_(SHARE_NAME).format(query=cell.query, key=cell.key),
            marker={"color": HIGHLIGHT_COLOUR, "line": BAR_OUTLINE},
            hovertemplate=_(OUTPUT_HOVER),
        ),
    ]
    presentation = style.font_size >= 18
    below = style.tick_size * LINE_HEIGHT + _x_title_px(style)
    layout = _layout(style, width_px, (300 if presentation else 240) + below)
    layout["margin"]["t"] = 10 + (style.font_size + 2) * 4
    left = _value_labels_px([bars[0]["y"], bars[1]["y"]], style.tick_size)
    layout["margin"].update(_margins_for(left, below))
    x_axis = _x_axis(style)
    x_axis["title"] = {
        "text": _(DIMENSION_AXIS),
        "font": {"size": style.tick_size + 1},
        "standoff": X_TITLE_STANDOFF_PX,
    }
    layout.update(
        showlegend=True,
        legend={
            "orientation": "h",
            "y": 1.02,
            "yanchor": "bottom",
            "x": 0,
            "font": {"size": style.font_size},
        },
        barmode="group",
        title={
            "text": _(OUTPUT_TITLE).format(query=cell.query),
            "font": {"size": style.font_size + 1},
            "y": 0.98,
        },
        xaxis=x_axis,
        yaxis=_y_axis(style),
    )
    return figure_of(bars, layout)


def chain_latex(cell: CellInspection) -> str:
    """The chain from q_i and k_j to w_ij as aligned LaTeX equations with the cell's numbers.

    Every number but the dot product and the softmax's numerator and denominator is the
    trace's own; the last one, w_ij, is the number in the heatmap.
    """
    i, j, d = cell.query, cell.key, cell.q.shape[0]
    ij = f"{i},{j}"
    scale = _tex(cell.scale)
    if math.isclose(cell.scale, 1 / math.sqrt(d), rel_tol=1e-6):
        scale += rf"\ \left(=\tfrac{{1}}{{\sqrt{{{d}}}}}\right)"
    bias = "0" if cell.allowed else r"(-\infty)"
    lines = [
        rf"q_{{{i}}} \cdot k_{{{j}}} &= \textstyle\sum_{{m=0}}^{{{d - 1}}} q_{{{i}}}[m]\, k_{{{j}}}[m] = {_tex(cell.dot)}",
        rf"s_{{{ij}}} &= {_tex(cell.dot)} \times {scale} = {_tex(cell.score)}",
        rf"s_{{{ij}}} + M_{{{ij}}} &= {_tex(cell.score)} + {bias} = {_tex(cell.masked_score)}",
    ]
    if cell.empty_row:
        lines.append(rf"w_{{{ij}}} &= 0 \quad \text{{{_(EMPTY_ROW_TEXT)}}}")
    else:
        shift = f" - {_tex(cell.shift)}" if cell.shift else ""
        exponent = _tex(cell.masked_score) + shift
        # Two lines: with a weight in scientific notation one line is wider than a laptop's column.
        lines.append(
            rf"w_{{{ij}}} &= \frac{{e^{{{exponent}}}}}{{\sum_{{k}} e^{{s_{{{i},k}} + M_{{{i},k}}{shift}}}}}"
        )
        lines.append(
            rf"&= \frac{{{_significant(cell.numerator)}}}{{{_significant(cell.denominator)}}} = {_tex(cell.weight)}"
        )
    return r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"


def output_latex(cell: CellInspection) -> str:
    """o_i = Σ_k w_ik v_k with the row's weights written out (the keys it may attend to)."""
    i = cell.query
    weights = cell.row_weights.double()
    attended = [k for k in range(len(cell.tokens)) if bool(cell.row_allowed[k])]
    terms = [f"{float(weights[k]):.2f}\\, v_{{{k}}}" for k in attended[:OUTPUT_TERMS]]
    if len(attended) > OUTPUT_TERMS:
        terms.append(r"\dots")
    written = " + ".join(terms) if terms else r"0"
    return rf"o_{{{i}}} = \sum_{{k}} w_{{{i},k}}\, v_{{k}} = {written}"


def mark_cell(figure: go.Figure, query: int, key: int, panel: int = 1) -> None:
    """Outline cell (``query``, ``key``) of subplot ``panel`` (one-based), counted from the figure's
    first row and column."""
    suffix = "" if panel == 1 else str(panel)
    figure.add_shape(
        type="rect",
        xref=f"x{suffix}",
        yref=f"y{suffix}",
        x0=key - 0.5,
        x1=key + 0.5,
        y0=query - 0.5,
        y1=query + 0.5,
        line={"color": HIGHLIGHT_COLOUR, "width": 3},
        fillcolor="rgba(0,0,0,0)",
        layer="above",
    )
