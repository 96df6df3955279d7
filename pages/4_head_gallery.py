"""Head gallery: every head of a real model at a glance, its statistics, and its typical heads."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from attention_viz.figures import head_grid, stage_range
from attention_viz.gallery import (
    TYPICAL,
    selected_heads,
    selected_masks,
    thumbnail_figure,
    thumbnails,
    typical_heads,
)
from attention_viz.i18n import _
from attention_viz.stats import COLUMN_LABELS, STAT_COLUMNS
from ui import cache
from ui.chrome import cut_notes, display_settings, run_or_stop, show_table
from ui.controls import model_and_texts, model_params, page_masks, set_value
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "gallery"
DEFAULT_TEXT = "The cat sat on the mat because it was tired. It slept all afternoon."
# Resolved next to this file, so the switch works whichever script is the app's entry point.
EXPLORER = str(Path(__file__).resolve().with_name("2_model_explorer.py"))
TYPICAL_COUNT = 6  # heads listed per kind: enough to compare, few enough to read
MODEL_PARAMS = model_params("hg", DEFAULT_TEXT)
PARAMS = [
    *MODEL_PARAMS,
    Param("hg_kind", "kind", None, "choice", choices=tuple(TYPICAL)),
    Param("hg_layer", "layer", 0, "int", low=0, high=1000),
    Param("hg_head", "head", 0, "int", low=0, high=1000),
]


def column_config() -> dict:
    """The statistics tables' columns, named and explained in the run's language."""
    counts = {
        "rank": _("1 = most typical"),
        "layer": _("zero-based layer"),
        "head": _("zero-based query head"),
        "kv_head": _("the key/value head this query head reads (grouped-query attention)"),
    }
    return {
        **{
            name: st.column_config.NumberColumn(_(COLUMN_LABELS[name]), help=help_text, format="%d")
            for name, help_text in counts.items()
        },
        **{
            name: st.column_config.NumberColumn(_(COLUMN_LABELS[name]), help=_(help_text), format="%.3f")
            for name, help_text in STAT_COLUMNS.items()
        },
    }


def explorer_query(layer: int, head: int) -> dict[str, str]:
    """The explorer's link parameters for one head, with this page's model, texts and masks.

    Both pages build their model parameters with ``model_params``, so the URL names match.
    """
    query = {
        param.url: param.dump(st.session_state[param.key])
        for param in MODEL_PARAMS
        if st.session_state.get(param.key) is not None
    }
    return {**query, "layer": str(layer), "head": str(head)}


ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
COLUMN_CONFIG = column_config()
st.title(_("Head gallery"))
st.caption(
    _(
        "Every head of every layer of a real model, as small pictures of its attention weights, with "
        "statistics to sort by. Pick a kind of head to find the most typical ones, then open one in the "
        "model explorer."
    )
)
show_notes(notes)

model_name, loaded, texts = model_and_texts("hg")
if not texts:
    st.warning(_("Type a sentence to see its attention."))
    st.stop()

policy = page_masks("hg", model_name, loaded, texts, presentation)
# Out-of-range values (from a shared link or a model switch) fall back to the nearest valid one.
clamp_index("hg_layer", loaded.num_layers)
clamp_index("hg_head", loaded.num_heads)

every_layer = tuple(range(loaded.num_layers))
stats = run_or_stop(
    lambda: cache.statistics(model_name, texts, policy),
    _("Running the model on every layer…"),
    can_choose_layers=False,
)
result = run_or_stop(  # cached by statistics
    lambda: cache.capture(model_name, texts, every_layer, policy), can_choose_layers=False
)
publish(PAGE, PARAMS)
cut_notes(result.texts, result.truncated)

st.subheader(_("Find typical heads"))
buttons = st.columns(len(TYPICAL))
for column, (kind, spec) in zip(buttons, TYPICAL.items(), strict=True):
    column.button(
        _(spec.label),
        key=f"hg_pick_{kind}",
        on_click=set_value,
        args=("hg_kind", kind),
        help=_(spec.explanation),
        type="primary" if st.session_state["hg_kind"] == kind else "secondary",
        width="stretch",
    )
kind = st.session_state["hg_kind"]
picked = typical_heads(stats, kind, TYPICAL_COUNT) if kind else None
pairs = list(zip(picked["layer"], picked["head"], strict=True)) if picked is not None else []

thumbs = thumbnails(result, item=0, palette=style.palette)
ratios = [5, 6] if not presentation else [1, 1]
right_width = column_widths(ratios)[1]
left, right = st.columns(ratios)
with left:
    st.subheader(_("Every head"))
    st.caption(
        _("{layers} layers × {heads} heads · first text, {tokens} tokens").format(
            layers=loaded.num_layers, heads=loaded.num_heads, tokens=thumbs.tokens
        )
        + (_(" (pooled to {cell} px)").format(cell=thumbs.cell) if thumbs.cell < thumbs.tokens else "")
        + " · "
        + _("{masks} · rows are queries, columns keys; grey = masked.").format(masks=policy.describe())
    )
    st.plotly_chart(
        thumbnail_figure(thumbs, highlight=pairs, style=style, width_px=380),
        key="hg_thumbs_chart",
        width="content",
    )

with right:
    if picked is not None:
        spec = TYPICAL[kind]
        st.subheader(_("{kind}: top {count}").format(kind=_(spec.label), count=len(picked)))
        st.caption(
            _("{explanation} Ranked by `{column}`; outlined in the gallery.").format(
                explanation=_(spec.explanation), column=_(COLUMN_LABELS[spec.column])
            )
        )
        show_table(picked, presentation, "hg_typical_table", column_config=COLUMN_CONFIG, hide_index=True)
        tokens = result.tokens[0]
        st.plotly_chart(
            head_grid(
                selected_heads(result, pairs, item=0),
                tokens,
                tokens,
                stage_range("weights", result.layer(0).weights, style.palette),
                allowed=selected_masks(result, pairs, item=0),
                # Short titles with projector fonts, or neighbouring titles run into each other.
                titles=[
                    f"#{rank} · L{layer} H{head}"
                    if presentation
                    else _("#{rank} · layer {layer} head {head}").format(rank=rank, layer=layer, head=head)
                    for rank, (layer, head) in enumerate(pairs, 1)
                ],
                columns=3 if not presentation else 2,
                style=style,
                width_px=right_width,
                pad_rows=result.pad_rows[0],
                annotate=False,
                row_sums=False,
            ),
            key="hg_typical_chart",
            width="content",
        )
        # Two buttons a row; one in presentation mode, where the large font would cut the labels.
        opens = st.columns(2 if not presentation else 1)
        for index, (layer, head) in enumerate(pairs):
            if opens[index % len(opens)].button(
                _("Open layer {layer} head {head} in the explorer").format(layer=layer, head=head),
                key=f"hg_open_{layer}_{head}",
                width="stretch",
            ):
                st.switch_page(EXPLORER, query_params=explorer_query(layer, head))

    st.subheader(_("Statistics of every head"))
    st.caption(
        _(
            "One row per layer and head, averaged over every text · {masks}. Click a column header to sort."
        ).format(masks=policy.describe())
    )
    # Interactive in both modes: hundreds of rows need sorting and scrolling, not a long plain table.
    st.dataframe(stats, column_config=COLUMN_CONFIG, hide_index=True, height=420, key="hg_stats_table")

    if not presentation:
        st.subheader(_("Open any head"))
        picks = st.columns([1, 1, 2], vertical_alignment="bottom")
        picks[0].number_input(_("Layer"), 0, loaded.num_layers - 1, step=1, key="hg_layer")
        picks[1].number_input(_("Head"), 0, loaded.num_heads - 1, step=1, key="hg_head")
        layer, head = int(st.session_state["hg_layer"]), int(st.session_state["hg_head"])
        if picks[2].button(
            _("Open layer {layer} head {head} in the explorer").format(layer=layer, head=head),
            key="hg_open_any",
        ):
            st.switch_page(EXPLORER, query_params=explorer_query(layer, head))
