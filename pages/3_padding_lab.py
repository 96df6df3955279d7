"""Padding lab: a padded batch on a real model, the masks it used, and what leaks without them."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from attention_viz.figures import ValueRange, heatmap, mask_figure, stage_range
from attention_viz.i18n import N_, _
from attention_viz.leak import leak_frame, leak_meter, shade_padding
from attention_viz.scales import SCALES
from ui import cache
from ui.chrome import cut_notes, display_settings, run_or_stop, show_table
from ui.controls import layer_note, mask_controls, model_and_texts, model_params, scale_picker
from ui.routing import ensure_app_navigation
from ui.state import Param, clamp_index, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "padding_lab"
DEFAULT_TEXT = (
    "Cats purr.\nThe dog barked at the mailman.\nA storm rolled in over the old harbour last night."
)
MIN_TEXTS, MAX_TEXTS = 2, 4
# Left is the default here: it is what batched generation uses, and under a causal mask it is
# the side where a forgotten attention_mask lets real tokens see the pads.
PARAMS = [
    *(
        replace(p, default="left") if p.key == "pl_side" else p
        for p in model_params("pl", DEFAULT_TEXT, more=False)
    ),
    Param("pl_layer", "layer", 0, "int", low=0, high=1000),
    Param("pl_head", "head", 0, "int", low=0, high=1000),
    Param("pl_scale", "scale", "fixed", "choice", choices=SCALES),
]

ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
st.title(_("Padding lab"))
st.caption(
    _(
        "Sentences of different lengths are batched by padding the short ones with [PAD] tokens. "
        "Here a real model runs on such a batch: see the mask each sentence used, its attention, and "
        "how much attention leaks onto the padding when the padding mask is off."
    )
)
show_notes(notes)

model_name, loaded, texts = model_and_texts(
    "pl",
    _("Sentences ({least}–{most}, one per line, of different lengths)").format(
        least=MIN_TEXTS, most=MAX_TEXTS
    ),
    height=100 if not presentation else 120,
    most=MAX_TEXTS,
)
if len(texts) < MIN_TEXTS:
    st.warning(
        _("Type at least {least} sentences of different lengths, one per line: ").format(least=MIN_TEXTS)
        + (_("with one sentence there is nothing to pad, so there is no padding to show.") if texts else "")
    )
    st.stop()

natural = run_or_stop(lambda: cache.token_count(model_name, texts), _("Tokenising…"))
policy = mask_controls(
    "pl", loaded.decoder, natural, loaded.max_positions, show_window=not presentation, more=False
)

clamp_index("pl_layer", loaded.num_layers)
clamp_index("pl_head", loaded.num_heads)

# Every layer: the leak meter reads all of them, the heatmaps one.
result = run_or_stop(
    lambda: cache.capture(model_name, texts, tuple(range(loaded.num_layers)), policy),
    _("Running every layer of the model…"),
    can_choose_layers=False,
)
publish(PAGE, PARAMS)

pads = result.pad_rows.sum(dim=1).tolist()  # (B,) padding tokens per text
reals = result.attention_mask.sum(dim=1).tolist()  # (B,) real tokens per text
if not any(pads):
    st.info(
        _(
            "No sentence is padded at this sequence length (they all have the same number of tokens, "
            "or the length cuts them all). Make the sentences differ in length or raise the sequence length."
        )
    )
cut_notes(result.texts, result.truncated)

side_note = (
    _("The pads sit on the **left**, before each sentence.")
    if policy.padding_side == "left"
    else _("The pads sit on the **right**, after each sentence.")
)
picture_width = [1] * len(texts)

st.subheader(_("1 · The mask each sentence really used"))
mask_widths = column_widths([*picture_width, 1.1])
columns = st.columns([*picture_width, 1.1])
for item, column in enumerate(columns[:-1]):
    with column:
        # The title is markdown, not a plotly title: it wraps instead of being cut in narrow columns.
        st.markdown(
            _("**text {item}** · {real} tokens + {pads} [PAD]").format(
                item=item, real=reals[item], pads=pads[item]
            )
        )
        st.plotly_chart(
            mask_figure(
                result.mask[item, 0], result.tokens[item], title="", style=style, width_px=mask_widths[item]
            ),
            key=f"pl_mask_{item}",
            width="content",
        )
with columns[-1]:
    st.markdown(
        _("Dark: may attend. Grey: masked. {side}").format(side=side_note)
        + "\n\n"
        + (
            _(
                "**Why decoders pad on the left.** A decoder predicts the next token from the *last* "
                "position. With right padding, the last position of a short sentence is a [PAD], so "
                "batched generation pads on the left and every sentence ends in the same column. Left "
                "padding shifts the real tokens, so their position ids must skip the pads: with the "
                "padding mask on, this capture counts positions over real tokens only, as `generate` does."
            )
            if loaded.decoder
            else _(
                "**Why encoders pad on the right.** An encoder numbers positions from the first "
                "column, pads included. With left padding every real token of a short sentence gets a "
                "later position than it would alone, so its embedding changes even with the padding "
                "mask on. With right padding the real tokens keep positions 0, 1, 2, …"
            )
        )
    )
    if not presentation:
        positions = result.position_ids[0].tolist()
        st.caption(_("Position ids given to text 0: {positions}").format(positions=positions))

st.subheader(_("2 · Attention of one head, for each sentence"))
picks = st.columns([3, 1, 2])
picks[0].slider(_("Layer"), 0, loaded.num_layers - 1, key="pl_layer")
picks[1].selectbox(_("Head"), range(loaded.num_heads), key="pl_head")
layer, head = st.session_state["pl_layer"], st.session_state["pl_head"]
weights = result.layer(layer).weights  # (B, H, T, T)
layer_note(loaded, policy, layer)
value_range = stage_range("weights", weights, style.palette, scale_picker("pl_scale", "weights"))
# Full width: with the colour bar and token labels, a narrower heatmap has no room for cells.
heat_widths = column_widths([1] * len(texts))
columns = st.columns(len(texts))
for item, column in enumerate(columns):
    figure = heatmap(
        weights[item, head],
        result.tokens[item],
        result.tokens[item],
        value_range,
        allowed=result.mask_for(layer)[item, 0],
        title=_("text {item} · layer {layer}, head {head}").format(item=item, layer=layer, head=head),
        style=style,
        width_px=heat_widths[item],
        pad_rows=result.pad_rows[item],
        annotate=False,
    )
    if not policy.padding_mask:
        shade_padding(figure, result.pad_rows[item].tolist())
    with column:
        st.plotly_chart(figure, key=f"pl_heat_{item}", width="content")
st.markdown(
    _(
        "Rows are queries, columns are keys; colours are the weights the model really used, on "
        "one scale from 0 to 1."
    )
    + "\n\n"
    + _(
        "**Padded query rows are not attention.** A row belongs to its query token, and a [PAD] "
        "row belongs to no real token: nothing downstream reads it. With the padding mask on we "
        "leave those rows empty (grey) instead of the uniform rows eager attention produces."
    )
    + (
        _(
            " With the padding mask off, the pad rows and columns hold real numbers, so they are "
            "shaded (▨) rather than hidden: hover to read the true weights."
        )
        if not policy.padding_mask
        else ""
    )
)

st.subheader(_("3 · Leak meter: attention real tokens pay to padding"))
leak = leak_meter(result)  # (L, H)
layers = sorted(result.layers)
frame = leak_frame(leak, layers)
meter_ratios = [2, 2] if presentation else [2, 1.7, 1.6]
meter_width = column_widths(meter_ratios)[0]
meter, *rest = st.columns(meter_ratios)
table, explanation = (None, rest[0]) if presentation else rest
with meter:
    st.markdown(_("**Share of real tokens' attention on [PAD] keys**"))
    st.plotly_chart(
        heatmap(
            leak,
            [str(index) for index in layers],
            [str(h) for h in range(leak.shape[1])],
            ValueRange(0.0, 1.0, style.palette, N_("mass on pads")),
            style=style,
            row_name="layer",
            col_name="head",
            width_px=meter_width,
            annotate=False,
            row_sums=False,
            max_panel_px=560,
        ),
        key="pl_leak_chart",
        width="content",
    )
if table is not None:
    with table:
        show_table(
            frame,
            presentation,
            "pl_leak_table",
            height=520,
            column_config={column: st.column_config.NumberColumn(format="%.3f") for column in frame.columns},
        )
        st.caption(_("The same numbers: one row per layer, one column per head, and their mean."))
with explanation:
    metrics = st.columns(2)
    metrics[0].metric(_("Largest leak (one head)"), f"{float(leak.max()):.1%}")
    metrics[1].metric(_("Mean over all heads"), f"{float(leak.mean()):.1%}")
    st.markdown(
        _(
            "**If `attention_mask` is forgotten**, nothing stops real tokens from attending to [PAD] "
            "tokens: the pads' values are mixed into every real token, layer after layer, and the "
            "outputs change. The meter shows, per layer and head, how much of a real token's attention "
            "goes to pads (averaged over the padded sentences). With the padding mask on it is exactly 0."
        )
    )
    if not policy.padding_mask and float(leak.max()) == 0.0 and any(pads):
        st.info(
            _(
                "Nothing leaks here: with the causal mask and right padding, every pad comes *after* "
                "the real tokens, which never look ahead. Switch the padding side to left to see a leak."
            )
        )
    effect = run_or_stop(
        lambda: cache.effect(model_name, texts, policy), _("Comparing with the default masks…")
    )
    if effect is not None and effect.flips is not None:
        st.markdown(
            _("Top-1 next-token flips against the model's default masks ({default}): ").format(
                default=effect.reference_label
            )
            + _(", ").join(
                _("text {item}: **{count}**").format(item=item, count=int(flips))
                for item, flips in enumerate(effect.flips)
            )
        )
    elif effect is not None and effect.cosine is not None:
        st.markdown(
            _("Cosine similarity of each sentence embedding to the default ({default}): ").format(
                default=effect.reference_label
            )
            + _(", ").join(
                _("text {item}: **{value:.4f}**").format(item=item, value=float(cosine))
                for item, cosine in enumerate(effect.cosine)
            )
        )
