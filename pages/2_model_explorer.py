"""Model explorer: a real model's attention, re-run live under the masks you choose."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from attention_viz.capture import parity_delta
from attention_viz.export import (
    CSV_BYTES_PER_ROW,
    CSV_MAX_ROWS,
    csv_rows,
    export_stem,
)
from attention_viz.figures import (
    SINGLE_HOVER_CELL_LIMIT,
    FigureStyle,
    downsample_factor,
    escape_label,
    head_grid,
    heatmap,
    row_figure,
    stage_range,
    stage_shows_mask,
)
from attention_viz.i18n import N_, _, get_language
from attention_viz.inspector import inspect_capture
from attention_viz.loading import LoadedModel
from attention_viz.policy import MaskPolicy
from attention_viz.scales import SCALES
from ui import cache, downloads, inspector
from ui.chrome import cut_notes, display_settings, run_or_stop, show_table
from ui.controls import (
    layer_note,
    model_and_texts,
    model_params,
    numbered,
    page_masks,
    scale_picker,
    translated,
    zoom_ranges,
)
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "explorer"
DEFAULT_TEXT = "The cat sat on the mat because it was tired."
STAGES = ("weights", "scores", "masked_scores")
# Marked here, translated where shown.
STAGE_LABELS = {
    "weights": N_("weights"),
    "scores": N_("scores (QKᵀ·scale)"),
    "masked_scores": N_("masked scores"),
}
# Rollout needs every layer captured; beyond this length that costs too much memory to do by default.
ROLLOUT_DEFAULT_MAX_TOKENS = 64
# The output effect costs two full forward passes: automatic up to this length, opt-in beyond.
EFFECT_DEFAULT_MAX_TOKENS = 128
# Small multiples beyond this many tokens are max-pooled to this side; the focused head never is.
GRID_MAX_SIDE = 512
# Beyond this many tokens, cells are too small to hover: offer a query-row picker with exact values.
ROW_PICKER_MIN_TOKENS = 97
# float32 softmax on the same inputs agrees to ~1e-7; a real mismatch is orders of magnitude larger.
PARITY_TOLERANCE = 1e-4
# The longest text any bundled model takes (SmolLM2: 8192 tokens): the inspected cell's range in a link.
MAX_POSITIONS = 8192
PARAMS = [
    *model_params("ex", DEFAULT_TEXT),
    Param("ex_layer", "layer", 0, "int", low=0, high=1000),
    Param("ex_head", "head", 0, "int", low=0, high=1000),
    Param("ex_item", "item", 0, "int", low=0, high=3),
    Param("ex_stage", "stage", "weights", "choice", choices=STAGES),
    Param("ex_scale", "scale", "fixed", "choice", choices=SCALES),
    *inspector.cell_params("ex", MAX_POSITIONS),
]


@st.fragment
def views(
    model_name: str,
    loaded: LoadedModel,
    texts: tuple[str, ...],
    policy: MaskPolicy,
    style: FigureStyle,
    presentation: bool,
) -> None:
    """The layer, head and stage pickers and everything drawn from one capture: a fragment.

    Moving a picker, clicking a cell or opening the effect reruns only this, not the title, the
    text box and the mask controls above (the browser then redraws fewer elements before the
    charts). Changing the text, the masks or the display settings reruns the whole page, which
    calls this again with the new arguments.
    """
    # Out-of-range values (from a shared link or a model switch) fall back to the nearest valid one.
    clamp_index("ex_layer", loaded.num_layers)
    clamp_index("ex_head", loaded.num_heads)
    rows = 1 if policy.pack else len(texts)  # packed texts share one row
    clamp_index("ex_item", rows)

    picks = st.columns([3, 1, 1, 2])
    picks[0].slider(_("Layer"), 0, loaded.num_layers - 1, key="ex_layer")
    picks[1].selectbox(_("Head"), range(loaded.num_heads), key="ex_head")
    picks[2].selectbox(_("Text shown"), range(rows), key="ex_item", disabled=rows == 1)
    picks[3].radio(
        _("Stage"), STAGES, format_func=partial(translated, STAGE_LABELS), key="ex_stage", horizontal=True
    )
    layer, head, item = st.session_state["ex_layer"], st.session_state["ex_head"], st.session_state["ex_item"]
    stage = st.session_state["ex_stage"]

    # Once rollout has captured every layer of these texts under these masks (a short text, by
    # default), the shown layer comes from that capture (kept layer by layer), so moving the Layer
    # slider runs no model. A new text or mask is first captured in the shown layer only, so its
    # charts come at once. ex_every_layer names those inputs and whether that capture measured the
    # output effect too.
    inputs = (model_name, texts, policy)
    captured_inputs, with_effect = st.session_state.get("ex_every_layer") or (None, False)
    if captured_inputs == inputs:
        read = partial(cache.layer_of_every, model_name, texts, policy, with_effect, layer)
    else:
        read = partial(cache.capture, model_name, texts, (layer,), policy, False)
    result = run_or_stop(read, _("Running the model…"))
    # The inspected cell (a click on the focused head set it already), before publish and the chart.
    _focused, cell_query, cell_key = inspector.choose_cell(
        "ex", result.layer(layer).weights[item], result.pad_rows[item], head=head
    )
    publish(PAGE, PARAMS)

    captured = result.layer(layer)
    tokens = result.tokens[item]
    matrices = captured.stage(stage)[item]  # (H, T, T)
    allowed = result.mask_for(layer)[item, 0]  # (T, T): this layer's (a sliding layer keeps its window)
    pad_rows = result.pad_rows[item]  # (T,) True where the query is [PAD]
    stage_allowed = allowed if stage_shows_mask(stage) else None  # raw scores are drawn whole
    scale = scale_picker("ex_scale", stage)
    value_range = stage_range(stage, matrices, style.palette, scale)
    cut_notes(result.texts, result.truncated)
    layer_policy = layer_note(loaded, policy, layer)

    # On a projector the focused head gets half the page; on a laptop the grid gets more.
    ratios = [1, 1] if presentation else [3, 2]
    widths = column_widths(ratios)
    left, right = st.columns(ratios)
    with left:
        st.subheader(
            _("Layer {layer}: all {heads} heads · {policy}").format(
                layer=layer, heads=loaded.num_heads, policy=layer_policy.describe()
            )
        )
        grid = head_grid(
            matrices,
            tokens,
            tokens,
            value_range,
            allowed=stage_allowed,
            titles=[
                _("head {head}").format(head=h)
                + (
                    _(" (kv {kv_head})").format(kv_head=int(captured.kv_head[h]))
                    if loaded.num_kv_heads != loaded.num_heads
                    else ""
                )
                for h in range(loaded.num_heads)
            ],
            columns=3,
            style=style,
            max_side=GRID_MAX_SIDE,
            width_px=widths[0],
            pad_rows=pad_rows,
            annotate=False,
            row_sums=False,
        )
        st.plotly_chart(grid, key="ex_grid_chart", width="content", theme=None)
        factor = downsample_factor(len(tokens), GRID_MAX_SIDE)
        if factor > 1:
            st.caption(
                _(
                    "{count} tokens: these small multiples are downsampled {factor}× (each pixel is the "
                    "maximum of a {factor}×{factor} block). The focused head on the right is at full resolution."
                ).format(count=len(tokens), factor=factor)
            )
    with right:
        st.subheader(_("Head {head}").format(head=head))
        inspector.clickable_chart(
            heatmap(
                matrices[head],
                tokens,
                tokens,
                value_range,
                allowed=stage_allowed,
                style=style,
                width_px=widths[1],
                pad_rows=pad_rows,
            ),
            "ex_head_chart",
            "ex",
            (cell_query, cell_key),
        )
        if len(tokens) ** 2 > SINGLE_HOVER_CELL_LIMIT:
            st.caption(
                _(
                    "This many tokens are drawn as an image: zoom into a range below for tokens and values on hover."
                )
            )

    zoom = zoom_ranges("ex", len(tokens))
    if zoom is not None:
        (q0, q1), (k0, k1) = zoom
        st.plotly_chart(
            heatmap(
                matrices[head, q0 : q1 + 1, k0 : k1 + 1],
                tokens[q0 : q1 + 1],
                tokens[k0 : k1 + 1],
                value_range,
                allowed=None if stage_allowed is None else stage_allowed[q0 : q1 + 1, k0 : k1 + 1],
                title=_("Head {head}, queries {q0}–{q1} × keys {k0}–{k1} (full resolution)").format(
                    head=head, q0=q0, q1=q1, k0=k0, k1=k1
                ),
                style=style,
                width_px=column_widths([1])[0] * (0.75 if not presentation else 1.0),
                pad_rows=pad_rows[q0 : q1 + 1],
                first_query=q0,
                first_key=k0,
            ),
            key="ex_zoom_chart",
            width="content",
            theme=None,
        )

    if len(tokens) >= ROW_PICKER_MIN_TOKENS:
        st.session_state["ex_row"] = min(st.session_state.get("ex_row", len(tokens) - 1), len(tokens) - 1)
        st.number_input(
            _("Inspect one query row (exact values on hover)"),
            min_value=0,
            max_value=len(tokens) - 1,
            key="ex_row",
        )
        query_row = int(st.session_state["ex_row"])
        st.plotly_chart(
            row_figure(
                captured.weights[item, head, query_row],
                tokens,
                allowed[query_row],
                title=_("Head {head}, query {query} “{token}”: weight on each key").format(
                    head=head, query=query_row, token=escape_label(tokens[query_row])
                ),
                style=style,
            ),
            key="ex_row_chart",
        )

    cell_query, cell_key, _no_head = inspector.cell_inputs("ex", tokens)
    inspection = run_or_stop(
        partial(inspect_capture, result, layer, item, head, cell_query, cell_key),
        _("Taking the cell apart…"),
        spinner=False,
    )
    inspector.show_cell(inspection, style, presentation, "ex_cell", rotary=loaded.rotary)

    delta = parity_delta(result, layer)
    if delta is None:
        st.caption(
            _(
                "Parity: this model's code has no eager attention to check the reference implementation against."
            )
        )
    elif delta < PARITY_TOLERANCE:
        st.caption(
            _(
                "✔ Parity: the reference implementation on this layer's Q/K reproduces the model's own "
                "(eager) attention weights, max |Δ| = {delta:.1e}."
            ).format(delta=delta)
        )
    else:
        st.warning(
            _(
                "⚠ Parity: the reference implementation differs from the model's own (eager) attention "
                "weights on this layer, max |Δ| = {delta:.1e}."
            ).format(delta=delta)
        )

    half = column_widths([1, 1])[0]
    mean_col, rollout_col = st.columns(2)
    with mean_col:
        st.subheader(_("Mean over heads"))
        st.plotly_chart(
            heatmap(
                captured.weights[item].mean(0),
                tokens,
                tokens,
                stage_range("weights", captured.weights, style.palette, scale),
                allowed=allowed,
                style=style,
                width_px=half,
                pad_rows=pad_rows,
            ),
            key="ex_mean_chart",
            width="content",
            theme=None,
        )
    with rollout_col:
        st.subheader(_("Attention rollout"))
        short = len(tokens) <= ROLLOUT_DEFAULT_MAX_TOKENS
        # Separate keys: on by default for short texts, opt-in (and remembered) for long ones.
        rollout_on = st.toggle(
            _("Compute rollout across all layers"),
            key="ex_rollout" if short else "ex_rollout_long",
            value=short,
            help=_("Captures every layer: fast for short texts, heavier for long ones."),
        )
        # A short text's capture of every layer measures the output effect in the same forward, if
        # the effect is wanted (the toggle below, read before it is drawn: its value or its default).
        short_for_effect = len(tokens) <= EFFECT_DEFAULT_MAX_TOKENS
        effect_key = "ex_effect" if short_for_effect else "ex_effect_long"
        shared_effect = short and rollout_on and bool(st.session_state.get(effect_key, short_for_effect))
        if rollout_on:
            rollout, reach, effect = run_or_stop(
                partial(cache.rollout, model_name, texts, policy, shared_effect, by_layer=short),
                _("Capturing every layer…"),
                can_choose_layers=False,
            )
            # Its capture of every layer is cached now; a long one is too big to copy out on every rerun.
            st.session_state["ex_every_layer"] = (inputs, shared_effect) if short else None
            st.plotly_chart(
                heatmap(
                    rollout[item],
                    tokens,
                    tokens,
                    stage_range("weights", rollout, style.palette, scale),
                    # Greyed: what no chain of allowed cells reaches. One layer's mask would grey
                    # cells the layers together do reach (a sliding window, say).
                    allowed=reach[item],
                    style=style,
                    col_name="input token",
                    row_name="position",
                    width_px=half,
                    pad_rows=pad_rows,
                ),
                key="ex_rollout_chart",
                width="content",
                theme=None,
            )
            st.caption(
                _("How much each input token reaches each position after all layers (residual share 0.5).")
            )

    st.subheader(_("What the masks change in the output"))
    # Separate keys, as for rollout: on by default for short texts, opt-in (and remembered) for long ones.
    effect_on = st.toggle(
        _("Compare the output with the model's default masks"),
        key=effect_key,
        value=short_for_effect,
        help=_(
            "Compares the output under these masks with the output under the model's default masks: "
            "up to two more passes of the whole model per toggle (fewer when a short text's passes "
            "can be reused). Instant for short texts, about a second per pass at 512 tokens on a "
            "laptop CPU."
        ),
    )
    if not effect_on:
        effect = None
    elif not shared_effect:
        effect = run_or_stop(
            partial(cache.effect, model_name, texts, policy), _("Comparing with the default masks…")
        )
    if not effect_on and not short_for_effect:
        st.caption(
            _("Off by default above {count} tokens, so that every toggle redraws at once.").format(
                count=EFFECT_DEFAULT_MAX_TOKENS
            )
        )
    if effect is not None and effect.kl is not None:
        real_positions = [i for i, token in enumerate(tokens) if result.attention_mask[item, i]]
        if real_positions:
            position = st.select_slider(
                _("Position"),
                options=real_positions,
                value=real_positions[-1],
                format_func=partial(numbered, tokens),
                key="ex_position",
            )
            metrics = st.columns(3)
            metrics[0].metric(
                _("KL(default ‖ this) at this position"), f"{float(effect.kl[item, position]):.4f}"
            )
            metrics[1].metric(_("Top-1 flips in this text"), int(effect.flips[item]))
            metrics[2].metric(_("Default policy"), effect.reference_label)
            table = pd.DataFrame(
                {
                    _("rank"): range(1, 6),
                    _("with these masks"): [f"“{t}” {p:.1%}" for t, p in effect.top_tokens[item][position]],
                    _("default masks"): [
                        f"“{t}” {p:.1%}" for t, p in effect.reference_top_tokens[item][position]
                    ],
                }
            )
            show_table(table, presentation, "ex_top_table", hide_index=True)
    elif effect is not None and effect.cosine is not None:
        st.metric(
            _("Cosine similarity of the sentence embedding to the default ({default})").format(
                default=effect.reference_label
            ),
            f"{float(effect.cosine[item]):.4f}",
        )

    # The buttons exist only while the expander is open (it reruns this fragment when it opens):
    # closed, as it starts, it costs a layer switch nothing (about 30 ms of the browser's time).
    export = None if presentation else st.expander(_("Export"), key="ex_export", on_change="rerun")
    if export is not None and export.open:
        with export:
            # Files are built only when a button is clicked (deferred data), so toggles stay fast.
            # on_click="ignore": a click must not rerun the script. A rerun re-registers every deferred
            # file under a new id and, when it ends, drops the old ones, so on a busy server the click's
            # own file request could arrive after its id was gone and no download would start.
            # The buttons hold the request, not the capture (see ui/downloads.py): an open tab must
            # not keep ~300 MB alive for a file it may never download.
            request = (model_name, texts, (layer,), policy)
            # The files hold the shown layer, whether this run drew it from a capture of every layer.
            stem = export_stem(model_name, [layer], result.policy)
            rows = csv_rows(result, [layer])
            columns = st.columns(4)
            columns[0].download_button(
                _("Weights (CSV)"),
                partial(downloads.weights_csv, *request),
                f"{stem}.csv",
                "text/csv",
                key="ex_dl_csv",
                on_click="ignore",
                disabled=rows > CSV_MAX_ROWS,
            )
            columns[1].download_button(
                _("Weights (NPZ)"),
                partial(downloads.weights_npz, *request),
                f"{stem}.npz",
                key="ex_dl_npz",
                on_click="ignore",
            )
            columns[2].download_button(
                _("Head statistics (CSV)"),
                partial(downloads.head_statistics_csv, *request),
                f"{stem}-heads.csv",
                "text/csv",
                key="ex_dl_stats",
                on_click="ignore",
            )
            columns[3].download_button(
                _("Figure (HTML, works offline)"),
                partial(downloads.layer_html, *request, item, style, lang=get_language()),
                f"{export_stem(model_name, [layer], result.policy, item=item)}.html",
                "text/html",
                key="ex_dl_html",
                on_click="ignore",
            )
            if rows > CSV_MAX_ROWS:
                st.caption(
                    _(
                        "The weights CSV would have {rows:,} rows (over {most:,}, about {megabytes:,} MB): "
                        "download the NPZ instead (the same numbers, compressed), or write the CSV on your "
                        "own machine with the command line: `python -m attention_viz capture --help`."
                    ).format(rows=rows, most=CSV_MAX_ROWS, megabytes=rows * CSV_BYTES_PER_ROW // 2**20)
                )
            st.caption(_("Every chart's camera icon also saves a PNG."))


ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
st.title(_("Model explorer"))
st.caption(
    _(
        "A real pretrained model runs again under the masks you pick, in every layer: what you see is "
        "exactly the attention it computed, not a picture with cells hidden."
    )
)
show_notes(notes)

model_name, loaded, texts = model_and_texts("ex")
if not texts:
    st.warning(_("Type a sentence to see its attention."))
    st.stop()

policy = page_masks("ex", model_name, loaded, texts, presentation)
views(model_name, loaded, texts, policy, style, presentation)
