"""The cell inspector of the Playground and the Model explorer: pick a cell, see its arithmetic.

A page uses it like this::

    PARAMS = [..., *inspector.cell_params("ex", MAX_POSITIONS)]      # the cell is in the URL
    head, query, key = inspector.choose_cell("ex", weights, pad_rows, head=head)  # before the chart
    inspector.clickable_chart(figure, "ex_head_chart", "ex", (query, key))        # the chart itself
    query, key, _head = inspector.cell_inputs("ex", tokens)                        # below it
    inspector.show_cell(run_or_stop(lambda: inspect_capture(...)), style, presentation, "ex_cell")

Clicking. Streamlit 1.67 reports no click on a heatmap: ``st.plotly_chart(on_select="rerun",
selection_mode="points")`` turns plotly's *point* selections into events, but plotly selects
only traces that can select points (scatter, bar, ...), never heatmap or image cells, and
Streamlit's own click handler takes only treemap-like points (with an ``id`` and a ``parent``).
So a tiny component (inline JavaScript, no iframe, no network, like :mod:`ui.viewport`) listens
to the chart's own ``plotly_click`` event, plotly's public click event, which heatmaps and images
do fire, and sends the clicked cell back as a trigger value. Its callback puts the cell into the
inspector's inputs before the next run draws them, so the chart's outline and the inspector
follow the click at once. The figure itself is not changed, and hover stays the heatmap's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import streamlit as st
import torch

from attention_viz.figures import FigureStyle
from attention_viz.i18n import N_, _
from attention_viz.inspector import CellInspection, default_cell
from attention_viz.inspector_figures import (
    chain_latex,
    mark_cell,
    output_figure,
    output_latex,
    softmax_figure,
    vector_figure,
)
from ui.chrome import literal
from ui.state import Param, clamp_index
from ui.viewport import column_widths

__all__ = [
    "cell_inputs",
    "cell_params",
    "choose_cell",
    "clickable_chart",
    "clicked_cell",
    "show_cell",
    "take_click",
]

# --- every visible word of the inspector (marked here, translated where shown) ----------------------
TITLE = N_("Inside one cell")
HOW_TO_PICK = N_("Click a cell of the heatmap above, or type its query and key.")
QUERY_LABEL = N_("Query i (row)")
KEY_LABEL = N_("Key j (column)")
HEAD_LABEL = N_("Head")
QUERY_HELP = N_("The zero-based position of the token that asks: a row of the heatmap.")
KEY_HELP = N_("The zero-based position of the token that is looked at: a column of the heatmap.")
HEAD_HELP = N_("Which head's cell to take apart; clicking a cell of a head's heatmap picks that head too.")
HEADING = N_("Query {query} {query_token} → key {key} {key_token}, head {head}")
HEADING_LAYER = N_("Query {query} {query_token} → key {key} {key_token}, layer {layer}, head {head}")
GROUPED_NOTE = N_(
    "Grouped-query attention: query head {head} reads the keys (and values) of KV head {kv_head}, "
    "which query heads {group} share. So k below is KV head {kv_head}'s key."
)
ROTARY_NOTE = N_(
    "q and k are the vectors this layer really used, after the rotary position embedding (RoPE) "
    "has turned them by their positions."
)
ABSOLUTE_NOTE = N_(
    "q and k are the vectors this layer really used. This model has absolute position embeddings: "
    "positions were added to the token embeddings before the first layer, so q and k are not "
    "turned by their positions here."
)
VECTORS_CAPTION = N_(
    "The dot product multiplies q and k dimension by dimension and adds the products up: red bars "
    "raise the score, blue bars lower it."
)
CHAIN_CAPTION = N_(
    "From the two vectors to the weight in the heatmap, with this cell's own numbers. M is 0 where "
    "the query may attend to the key and −∞ where it may not."
)
MASKED_NOTE = N_("This key is masked for this query: s + M = −∞, so e^(−∞) = 0 and the weight is exactly 0.")
EMPTY_ROW_NOTE = N_(
    "Every key of this row is masked, so the softmax would be 0/0; by rule the whole row is 0 "
    "(a [PAD] query or a query that may see nothing)."
)
SOFTMAX_CAPTION = N_("The softmax turns the whole row into weights that add up to 1; key {key} is orange.")
OUTPUT_TITLE = N_("What the head passes on")
OUTPUT_CAPTION = N_(
    "The output row is the weighted sum of the value vectors: each key contributes its value, "
    "scaled by its weight. Orange: key {key}'s share."
)
# ----------------------------------------------------------------------------------------------------

# Listens to one chart's plotly_click and sends the clicked cell as the trigger value "click".
# Plotly gives a chart new event handlers (a new ``on``) whenever it draws it from scratch, and
# Streamlit may replace the chart's element on a rerun: the listener checks for both every 250 ms
# and attaches again. The chart keeps the sender of the listener mounted last, so a click is sent
# once, by the live listener.
_JS = """
export default function(component) {
    const { data, setTriggerValue } = component;
    const attach = () => {
        const plot = document.querySelector(`.st-key-${data.chart} .js-plotly-plot`);
        if (plot === null || typeof plot.on !== "function") return;
        plot.attnvizSend = setTriggerValue;
        if (plot.attnvizClicks === plot.on) return;
        plot.attnvizClicks = plot.on;
        plot.on("plotly_click", (event) => {
            const point = event && event.points && event.points[0];
            if (!point || typeof plot.attnvizSend !== "function") return;
            plot.attnvizSend("click", {x: point.x, y: point.y, axis: (point.data && point.data.xaxis) || "x"});
        });
    };
    attach();
    const timer = setInterval(attach, 250);
    return () => clearInterval(timer);
}
"""

_listener = st.components.v2.component("attention_viz.cell_clicks", js=_JS)


def cell_params(prefix: str, max_positions: int, head: bool = False, max_heads: int = 64) -> list[Param]:
    """URL-backed state of the inspected cell: ``{prefix}_query`` and ``{prefix}_key`` (None = not
    chosen yet: :func:`choose_cell` picks one), and with ``head`` the inspector's own
    ``{prefix}_cell_head`` (the Playground, whose heatmap shows every head)."""
    params = [
        Param(f"{prefix}_query", "query", None, "int", low=0, high=max_positions - 1),
        Param(f"{prefix}_key", "key", None, "int", low=0, high=max_positions - 1),
    ]
    if head:
        params.append(Param(f"{prefix}_cell_head", "cellhead", 0, "int", low=0, high=max_heads - 1))
    return params


def clicked_cell(click: Mapping | None) -> tuple[int, int, int] | None:
    """``(panel index, query, key)`` of a click the listener reported, or None if it names no cell.

    ``click`` is ``{"x": ..., "y": ..., "axis": "x2"}``: on a heatmap the labels of the key and
    the query (``"12: cat"``: the position comes first), on an image their positions. The panel
    index is zero-based (the head of a grid of heads).
    """
    if not isinstance(click, Mapping):
        return None

    def position(value: object) -> int | None:
        text = str(value).split(":", 1)[0].strip()
        try:
            number = float(text)
        except ValueError:
            return None
        return round(number) if math.isfinite(number) and number >= -0.5 else None

    query, key = position(click.get("y")), position(click.get("x"))
    axis = str(click.get("axis") or "x")
    panel = int(axis[1:]) if axis[1:].isdigit() else 1
    if query is None or key is None or not axis.startswith("x") or panel < 1:
        return None
    return panel - 1, max(0, query), max(0, key)


def take_click(listener_key: str, prefix: str, keys: bool, pick_head: bool) -> None:
    """Listener callback: put the clicked cell into ``{prefix}_query`` and ``{prefix}_key`` (not the
    key when ``keys`` is False: a chart whose columns are not keys) and, with ``pick_head``, the
    clicked panel into ``{prefix}_cell_head``. Module-level, bound with ``functools.partial``: a
    function written in a page would keep the page's namespace alive (see ui/controls.py)."""
    listener = st.session_state.get(listener_key) or {}
    clicked = clicked_cell(listener.get("click") if isinstance(listener, Mapping) else None)
    if clicked is None:
        return
    panel, query, key = clicked
    st.session_state[f"{prefix}_query"] = query
    if keys:
        st.session_state[f"{prefix}_key"] = key
    if pick_head:
        st.session_state[f"{prefix}_cell_head"] = panel


def choose_cell(
    prefix: str,
    weights: torch.Tensor,
    pad_rows: torch.Tensor | list[bool] | None = None,
    *,
    head: int | None = None,
) -> tuple[int, int, int]:
    """Settle the inspected cell before the chart is drawn and return ``(head, query, key)``.

    ``head`` is the page's focused head; None means the inspector has a head choice of its own
    (``{prefix}_cell_head``, which a click on a grid's panel sets). A cell not chosen yet becomes
    :func:`default_cell` of the head's weights; one out of range (a shorter text, fewer heads)
    is brought into range.

    Shape: ``weights`` is ``(H, T, T)``, every head's; ``pad_rows`` ``(T,)``.
    """
    state = st.session_state
    if head is None:
        head = clamp_index(f"{prefix}_cell_head", weights.shape[0])
    query_key, key_key = f"{prefix}_query", f"{prefix}_key"
    if state.get(query_key) is None or state.get(key_key) is None:
        query, key = default_cell(weights[head], pad_rows)
        if state.get(query_key) is None:
            state[query_key] = query
        if state.get(key_key) is None:
            state[key_key] = key
    length = weights.shape[-1]
    return head, clamp_index(query_key, length), clamp_index(key_key, length)


def clickable_chart(
    figure,
    chart_key: str,
    prefix: str,
    cell: tuple[int, int] | None = None,
    panel: int = 1,
    *,
    keys: bool = True,
    pick_head: bool = False,
) -> None:
    """Draw the focused heatmap with ``cell`` (query, key) outlined in subplot ``panel`` (one-based),
    and listen to its clicks: a click picks the cell (and, on a grid of heads, the head) for the
    inspector of ``prefix``. ``keys`` False: the chart's columns are not keys (output features).
    ``pick_head``: the chart is a grid of heads, one panel each, and the inspector has its own
    head choice (:func:`cell_params` with ``head``)."""
    if cell is not None:
        mark_cell(figure, *cell, panel=panel)
    st.plotly_chart(figure, key=chart_key, width="content", theme=None)
    listener_key = f"{chart_key}_clicks"
    with st.sidebar:  # an empty slot there takes no room
        _listener(
            key=listener_key,
            data={"chart": chart_key},
            height=1,
            on_click_change=partial(take_click, listener_key, prefix, keys, pick_head),
        )


def cell_inputs(prefix: str, tokens: Sequence[str], heads: int | None = None) -> tuple[int, int, int | None]:
    """The inspector's title and its inputs: query and key (and, with ``heads``, a head choice).

    Returns ``(query, key, head)``; head is None without ``heads``.
    """
    st.subheader(_(TITLE))
    length = len(tokens)
    columns = st.columns([1, 1, 1, 2] if heads is not None else [1, 1, 3], vertical_alignment="bottom")
    columns[0].number_input(
        _(QUERY_LABEL), min_value=0, max_value=length - 1, step=1, key=f"{prefix}_query", help=_(QUERY_HELP)
    )
    columns[1].number_input(
        _(KEY_LABEL), min_value=0, max_value=length - 1, step=1, key=f"{prefix}_key", help=_(KEY_HELP)
    )
    head = None
    if heads is not None:
        columns[2].selectbox(_(HEAD_LABEL), range(heads), key=f"{prefix}_cell_head", help=_(HEAD_HELP))
        head = int(st.session_state[f"{prefix}_cell_head"])
    columns[-1].caption(_(HOW_TO_PICK))
    return int(st.session_state[f"{prefix}_query"]), int(st.session_state[f"{prefix}_key"]), head


def _token_text(token: str) -> str:
    # A code span shows a token exactly as typed: escaping alone still lets Streamlit autolink
    # "www.…" or "a@b.c" (see ui.chrome.literal).
    return literal(token)


def show_cell(
    cell: CellInspection, style: FigureStyle, presentation: bool, key_prefix: str, rotary: bool = False
) -> None:
    """Everything about one cell: the vectors, the chain of equations, the row's softmax and,
    where the trace keeps values (Playground), the output row. Charts get ``key_prefix`` keys.
    ``rotary``: a real model's layer turns q and k by their positions (RoPE; see
    :attr:`attention_viz.loading.LoadedModel.rotary`); the note under the heading says which."""
    words = {
        "query": cell.query,
        "query_token": _token_text(cell.query_token),
        "key": cell.key,
        "key_token": _token_text(cell.key_token),
        "head": cell.head,
        "layer": cell.layer,
    }
    st.markdown("**" + _(HEADING if cell.layer is None else HEADING_LAYER).format(**words) + "**")
    if cell.grouped:
        group = _(", ").join(str(h) for h in cell.kv_group)
        st.info(_(GROUPED_NOTE).format(head=cell.head, kv_head=cell.kv_head, group=group), icon="🔑")
    if cell.layer is not None:
        st.caption(_(ROTARY_NOTE if rotary else ABSOLUTE_NOTE))

    ratios = [1] if presentation else [1, 1]
    widths = column_widths(ratios)
    columns = st.columns(ratios)
    left, right = columns[0], columns[-1]
    with left:
        st.plotly_chart(
            vector_figure(cell, style, widths[0]), key=f"{key_prefix}_vectors", width="content", theme=None
        )
        st.caption(_(VECTORS_CAPTION))
    with right:
        st.latex(chain_latex(cell))
        st.caption(_(CHAIN_CAPTION))
        if cell.empty_row:
            st.warning(_(EMPTY_ROW_NOTE))
        elif not cell.allowed:
            st.info(_(MASKED_NOTE))
        st.plotly_chart(
            softmax_figure(cell, style, widths[-1]), key=f"{key_prefix}_softmax", width="content", theme=None
        )
        st.caption(_(SOFTMAX_CAPTION).format(key=cell.key))
    if cell.output is not None:
        st.markdown("**" + _(OUTPUT_TITLE) + "**")
        st.latex(output_latex(cell))
        st.plotly_chart(
            output_figure(cell, style, column_widths([1])[0] * (1.0 if presentation else 0.6)),
            key=f"{key_prefix}_output",
            width="content",
            theme=None,
        )
        st.caption(_(OUTPUT_CAPTION).format(key=cell.key))
