"""Playground: masked self-attention from scratch, on toy embeddings, every stage visible."""

from __future__ import annotations

from functools import partial

import streamlit as st

from attention_viz.attention import STAGES
from attention_viz.figures import escape_markdown, head_grid, mask_figure, stage_range, stage_shows_mask
from attention_viz.i18n import N_, _
from attention_viz.inspector import inspect_playground
from attention_viz.toy import tokenize
from ui import cache, inspector
from ui.chrome import display_settings, run_or_stop
from ui.controls import (
    PADDING_SIDES,
    batching_params,
    follow_length,
    mask_params,
    more_masks,
    move_row,
    numbered,
    policy_or_stop,
    side_label,
    translated,
    window_input,
)
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

DEFAULT_TEXT = "the cat sat on the mat\nthe dog barked"
MAX_SEQUENCE_LENGTH = 64
# One request stays small (at most 8 × 8 heads × 64 × 64 per stage, about 4 MB): the box keeps
# every line, the batch takes the first ones and says so.
MAX_SENTENCES = 8
HEAD_CHOICES = (1, 2, 4, 8)
WIDTH_CHOICES = (16, 32, 64, 128)
# Marked here, translated where shown (the Stage radio and the heading above the heads).
STAGE_LABELS = {
    "weights": N_("weights (after softmax)"),
    "scores": N_("scores (QKᵀ/√d)"),
    "masked_scores": N_("masked scores (+M)"),
    "output": N_("output (weights·V)"),
}

PAGE = "playground"
PARAMS = [
    Param("pg_text", "text", DEFAULT_TEXT),
    *mask_params("pg", causal_default=True),  # the toy has no trained choice: causal, as GPT
    *batching_params("pg", MAX_SEQUENCE_LENGTH),
    Param("pg_heads", "heads", 4, "choice", choices=HEAD_CHOICES),
    Param("pg_width", "width", 32, "choice", choices=WIDTH_CHOICES),
    Param("pg_seed", "seed", 0, "int", low=0, high=10_000),
    Param("pg_item", "item", 0, "int", low=0, high=100),
    Param("pg_stage", "stage", "weights", "choice", choices=STAGES),
    Param("pg_stepping", "stepping", False, "bool"),
    Param("pg_step", "row", None, "int", low=0, high=MAX_SEQUENCE_LENGTH - 1),
    *inspector.cell_params("pg", MAX_SEQUENCE_LENGTH, head=True, max_heads=max(HEAD_CHOICES)),
]

ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()

st.title(_("Playground: masked self-attention"))
st.latex(r"\mathrm{Attention}(Q,K,V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right)V")
st.caption(
    _(
        "M is 0 where a query may attend to a key and −∞ where it may not. The embeddings are a toy: "
        "one fixed random vector per word plus sinusoidal positions, and random projections whose "
        "queries match their own keys, so repeated words attend to each other. Nothing here is trained."
    )
)
show_notes(notes)

st.text_area(
    _("Sentences (one per line; two of different lengths show padding)"),
    key="pg_text",
    height=90 if not presentation else 70,
)
sentences = tuple(line.strip() for line in st.session_state["pg_text"].splitlines() if line.strip())
if len(sentences) > MAX_SENTENCES:
    st.info(
        _(
            "{count:,} lines were given; the first {most} are used "
            "(the Playground shows one sentence of a batch of at most {most})."
        ).format(count=len(sentences), most=MAX_SENTENCES)
    )
    sentences = sentences[:MAX_SENTENCES]
if not sentences:
    st.warning(_("Type at least one sentence to see its attention."))
    st.stop()
longest = max(len(tokenize(sentence)) for sentence in sentences)
if longest == 0:
    st.warning(_("The sentences have no words. Type a few words."))
    st.stop()

packed = bool(st.session_state.get("pg_pack"))
rows = 1 if packed else len(sentences)  # packed sentences share one row
# A shared link or an edited text can leave the chosen sentence out of range.
clamp_index("pg_item", rows)
controls = st.columns([1, 1, 2, 1] if not presentation else [1, 1, 2])
controls[0].toggle(
    _("Causal mask"), key="pg_causal", help=_("Each token sees only itself and earlier tokens.")
)
controls[1].toggle(_("Padding mask"), key="pg_padding", help=_("No token may attend to a [PAD] token."))
natural = sum(len(tokenize(sentence)) for sentence in sentences) if packed else longest
follow_length("pg", natural, MAX_SEQUENCE_LENGTH)
if not presentation:
    window_input(controls[3], "pg_window")
controls[2].slider(
    _("Sequence length"),
    min_value=1,
    max_value=MAX_SEQUENCE_LENGTH,
    key="pg_length",
    help=_("Every sentence is cut or padded with [PAD] to this many tokens."),
)
# The lesson needs these on a projector too: they are never hidden.
shown_row = st.columns([2, 1, 1])
row_labels = (
    [_("every sentence, packed into one row")] if packed else [sentence[:40] for sentence in sentences]
)
shown_row[0].selectbox(
    _("Sentence shown"),
    range(rows),
    format_func=partial(numbered, row_labels),
    key="pg_item",
    disabled=rows == 1,
)
shown_row[1].radio(
    _("Padding side"),
    PADDING_SIDES,
    key="pg_side",
    format_func=side_label,
    horizontal=True,
    help=_(
        "Where [PAD] tokens go in a shorter sentence. Under a causal mask, pads on the right are in "
        "every real word's future, so forgetting the padding mask changes only the [PAD] rows."
    ),
)
if not presentation:
    with st.expander(_("More settings")):
        more = st.columns(3)
        more[0].selectbox(_("Heads"), HEAD_CHOICES, key="pg_heads")
        more[1].selectbox(_("Model width"), WIDTH_CHOICES, key="pg_width")
        more[2].number_input(_("Random seed"), min_value=0, max_value=10_000, step=1, key="pg_seed")
item = st.session_state["pg_item"]

more_masks(st, "pg", pack_key="pg")
policy = policy_or_stop("pg")
result = run_or_stop(
    partial(
        cache.playground,
        sentences,
        policy,
        st.session_state["pg_heads"],
        st.session_state["pg_width"],
        st.session_state["pg_seed"],
    ),
    _("Computing…"),
)

stage = shown_row[2].radio(
    _("Stage"),
    STAGES,
    format_func=partial(translated, STAGE_LABELS),
    key="pg_stage",
)
tokens = result.tokens[item]
length = len(tokens)
trace = result.attention.heads
matrices = trace.stage(stage)[item]  # (H, T, T), or (H, T, d) for the output stage
value_range = stage_range(stage, matrices, style.palette)
is_output = stage == "output"
pad_rows = (result.batch.attention_mask[item] == 0).tolist()  # (T,) True where the query is [PAD]
# The inspected head and cell (a click on the heatmaps set them already), before they are drawn.
cell_head, cell_query, cell_key = inspector.choose_cell("pg", trace.weights[item], pad_rows)


stepping = st.toggle(
    _("Step through the rows"),
    key="pg_stepping",
    help=_("Reveal one query row at a time, to narrate which keys each token may attend to."),
)
revealed = None
if stepping:
    st.session_state["pg_step"] = min(max(0, st.session_state.get("pg_step") or 0), length - 1)
    row = st.session_state["pg_step"]
    revealed = row + 1
    buttons = st.columns([2, 1.7, 4] if presentation else [1.3, 1.1, 5], vertical_alignment="center")
    buttons[0].button(
        _("◀ Previous row"),
        on_click=move_row,
        args=("pg_step", -1, length - 1),
        disabled=row == 0,
        key="pg_prev",
    )
    buttons[1].button(
        _("Next row ▶"),
        on_click=move_row,
        args=("pg_step", 1, length - 1),
        disabled=row >= length - 1,
        key="pg_next",
    )
    visible = [f"{key}: {tokens[key]}" for key in range(length) if bool(result.mask[item, 0, row, key])]
    buttons[2].markdown(
        _("**Query {row} “{token}”** may attend to {keys}").format(
            row=row,
            token=escape_markdown(tokens[row]),
            # Escaped plain text: toy tokens are words or single punctuation marks, which no
            # autolink can be made of (a token such as "www" and the "." after it are separate).
            keys=_(", ").join(escape_markdown(v) for v in visible)
            if visible
            else _("nothing (an empty row)"),
        )
    )

ratios = [3, 1]
widths = column_widths(ratios)
columns = st.columns(ratios)
with columns[0]:
    st.subheader(f"{policy.describe()} · {_(STAGE_LABELS[stage])}")
    figure = head_grid(
        matrices,
        tokens,
        [str(feature) for feature in range(matrices.shape[-1])] if is_output else tokens,
        value_range,
        allowed=result.mask[item, 0] if stage_shows_mask(stage) else None,
        columns=2 if matrices.shape[0] > 1 else 1,
        style=style,
        revealed_rows=revealed,
        width_px=widths[0],
        pad_rows=pad_rows,
        highlight_row=revealed - 1 if revealed else None,
        row_sums=stage == "weights",
    )
    # Output columns are features, not keys: a click there picks the head and the query only.
    inspector.clickable_chart(
        figure,
        "pg_heads_chart",
        "pg",
        None if is_output else (cell_query, cell_key),
        panel=cell_head + 1,
        keys=not is_output,
        pick_head=True,
    )
    if stage == "weights":
        st.caption(_("Σ: each row's weights add up to 1 (a row with every key masked is empty: 0)."))
with columns[1]:
    st.subheader(_("Mask M"))
    st.plotly_chart(
        mask_figure(
            result.mask[item, 0],
            tokens,
            title="",
            style=style,
            revealed_rows=revealed,
            width_px=widths[1],
            highlight_row=revealed - 1 if revealed else None,
        ),
        key="pg_mask_chart",
        width="content",
    )
    st.caption(_("Dark: may attend (M = 0). Grey: masked (M = −∞, weight exactly 0)."))

cut = sum(result.batch.truncated) if packed else result.batch.truncated[item]
if cut:
    st.info(
        (
            _("{count} token(s) of the packed sentences were cut by the sequence length.")
            if packed
            else _("{count} token(s) of this sentence were cut by the sequence length.")
        ).format(count=cut)
    )

cell_query, cell_key, cell_head = inspector.cell_inputs("pg", tokens, heads=trace.weights.shape[1])
inspection = run_or_stop(
    partial(inspect_playground, result, item, cell_head, cell_query, cell_key),
    _("Taking the cell apart…"),
    spinner=False,
)
inspector.show_cell(inspection, style, presentation, "pg_cell")
publish(PAGE, PARAMS)
