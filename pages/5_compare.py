"""Compare: two mask policies side by side on the same text, their difference, and their output."""

from __future__ import annotations

import streamlit as st

from attention_viz.compare import PRESETS, compare_head, effect_table
from attention_viz.figures import difference_figure, heatmap, stage_range
from attention_viz.i18n import _
from attention_viz.policy import MaskPolicy
from ui import cache, presets
from ui.chrome import cut_notes, display_settings, run_or_stop, show_table
from ui.controls import (
    CAUSAL_HELP,
    batching_params,
    follow_length,
    mask_params,
    mask_switches,
    model_and_texts,
    model_param,
    more_masks,
    padding_side_radio,
    policy_or_stop,
    window_input,
)
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "compare"
DEFAULT_TEXT = "The cat sat on the mat because it was tired."
SIDES = presets.SIDES
PARAMS = [
    model_param("cmp_model"),
    Param("cmp_text", "text", DEFAULT_TEXT),
    *batching_params("cmp"),
    Param("cmp_layer", "layer", 0, "int", low=0, high=1000),
    Param("cmp_head", "head", 0, "int", low=0, high=1000),
    Param("cmp_item", "item", 0, "int", low=0, high=1000),
    # Causal None = decided below from the model: A does what the model was trained with, B the opposite.
    *(param for side in SIDES for param in mask_params(f"cmp_{side}", f"{side}_")),
]


ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
st.title(_("Compare two mask policies"))
st.caption(
    _(
        "The same model and text run twice, once under policy A and once under policy B. Both sides "
        "share one colour scale (weights from 0 to 1), and the third picture is the difference B − A."
    )
)
show_notes(notes)

examples = st.columns([1.0, 1.3, 1.5, 1.3, 1.7], vertical_alignment="center")
examples[0].markdown(_("**Try an example:**"))
for column, (name, preset) in zip(examples[1:], PRESETS.items(), strict=False):
    column.button(
        _(preset.label),
        key=f"cmp_preset_{name}",
        on_click=presets.apply_preset,
        args=(name,),
        width="stretch",
    )

if st.session_state.get("cmp_text_before_preset") is not None:
    typed = st.session_state["cmp_text_before_preset"]
    note, undo = st.columns([4, 1], vertical_alignment="center")
    note.info(
        _(
            "The example replaced your text with texts of different lengths (to show padding or packing). "
            "Your text ({count} line(s)) is kept: put it back with the button."
        ).format(count=len(typed.splitlines()))
    )
    undo.button(
        _("Restore my text"), key="cmp_restore_text", on_click=presets.restore_typed_text, width="stretch"
    )
model_name, loaded, texts = model_and_texts("cmp", height=80 if not presentation else 100)
if not texts:
    st.warning(_("Type a sentence to compare its attention under two policies."))
    st.stop()

own_causal = MaskPolicy().for_model(loaded.decoder).causal  # A: the model's own choice, B: the opposite
for side, own in zip(SIDES, (own_causal, not own_causal), strict=True):
    if st.session_state.get(f"cmp_{side}_causal") is None:
        st.session_state[f"cmp_{side}_causal"] = own
packed = bool(st.session_state.get("cmp_pack"))
follow_length(
    "cmp",
    run_or_stop(lambda: cache.token_count(model_name, texts, packed), _("Tokenising…")),
    loaded.max_positions,
)
rows = 1 if packed else len(texts)  # packed texts share one row
clamp_index("cmp_layer", loaded.num_layers)
clamp_index("cmp_head", loaded.num_heads)
clamp_index("cmp_item", rows)

shared = st.columns([3, 3, 1, 1, 2])
shared[0].slider(
    _("Sequence length"),
    min_value=1,
    max_value=loaded.max_positions,
    key="cmp_length",
    help=_("Every text is cut or padded to this many tokens, on both sides."),
)
shared[1].slider(_("Layer"), 0, loaded.num_layers - 1, key="cmp_layer")
shared[2].selectbox(_("Head"), range(loaded.num_heads), key="cmp_head")
shared[3].selectbox(_("Text shown"), range(rows), key="cmp_item", disabled=rows == 1)
padding_side_radio(shared[4], "cmp_side")
shared[4].toggle(
    _("Pack the texts into one row"),
    key="cmp_pack",
    help=_(
        "Both sides pack every line into one row, one document after another; each side chooses "
        "its own document mask and position reset under More masks."
    ),
)
layer, head, item = st.session_state["cmp_layer"], st.session_state["cmp_head"], st.session_state["cmp_item"]

controls = st.columns(3)
policies = {}
for side, column in zip(SIDES, controls, strict=False):
    with column:
        st.subheader(_("Policy {side}").format(side=side.upper()))
        # One above the other: side by side, a third of the page cuts their labels.
        mask_switches(st, st, f"cmp_{side}_causal", f"cmp_{side}_padding", _(CAUSAL_HELP))
        window_input(st, f"cmp_{side}_window")
        more_masks(st, f"cmp_{side}")
        policies[side] = policy_or_stop(f"cmp_{side}", "cmp")

captures = {
    side.upper(): run_or_stop(lambda policy=policy: cache.capture(model_name, texts, (layer,), policy))
    for side, policy in policies.items()
}
publish(PAGE, PARAMS)
comparison = run_or_stop(lambda: compare_head(captures["A"], captures["B"], layer, item, head))
weights_range = stage_range("weights", comparison.a, style.palette)  # [0, 1] on both sides

with controls[2]:
    st.subheader(_("Difference B − A"))
    st.markdown(
        _(
            "Layer {layer}, head {head}, text {item}. Largest change of a real token's attention: "
            "**{change:.3f}**."
        ).format(layer=layer, head=head, item=item, change=comparison.max_change)
        + "\n\n"
        + _("Red: B attends more than A. Blue: less. White: no change.")
    )

# The pictures get their own row so that the three heatmaps start at the same height.
panels = st.columns(3)
width = column_widths([1, 1, 1])[0]
for side, panel, matrix, allowed in (
    ("a", panels[0], comparison.a, comparison.allowed_a),
    ("b", panels[1], comparison.b, comparison.allowed_b),
):
    figure = heatmap(
        matrix,
        comparison.tokens,
        comparison.tokens,
        weights_range,
        allowed=allowed,
        title=f"{side.upper()}: {policies[side].describe()}",
        style=style,
        width_px=width,
        pad_rows=comparison.pad_rows,
        annotate=False,
    )
    panel.plotly_chart(figure, key=f"cmp_{side}_chart", width="content")
difference = difference_figure(
    comparison.difference,
    comparison.tokens,
    comparison.tokens,
    title="B − A",
    style=style,
    width_px=width,
    pad_rows=comparison.pad_rows,
)
panels[2].plotly_chart(difference, key="cmp_diff_chart", width="content")

cut_notes(captures["A"].texts, captures["A"].truncated)

st.subheader(_("What each policy changes in the output"))
effects = {
    side.upper(): run_or_stop(
        lambda policy=policy: cache.effect(model_name, texts, policy), _("Comparing with the default masks…")
    )
    for side, policy in policies.items()
}
table = effect_table(
    {name: (policies[name.lower()], effects[name]) for name in effects}, captures["A"].attention_mask, item
)
show_table(table, presentation, "cmp_effect_table", hide_index=True)
if not presentation:
    st.caption(
        _(
            "Against the model's default masks (the ones it was trained with). Decoder: KL divergence of "
            "the next-token distributions over the real tokens of the text shown, and how many top-1 "
            "predictions flip. Encoder: cosine similarity of the mean-pooled sentence embedding."
        )
    )
