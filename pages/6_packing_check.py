"""Packing check: several texts packed into one row, and whether each still computes what it would alone."""

from __future__ import annotations

import streamlit as st

from attention_viz.i18n import _
from attention_viz.packing import (
    MAX_TEXTS,
    MIN_TEXTS,
    VARIANTS,
    delta_column,
    drift_table,
    positions_table,
    summary_table,
)
from attention_viz.packing_figures import cross_mass_figure
from ui import cache
from ui.chrome import display_settings, run_or_stop, show_table
from ui.controls import model_and_texts, model_params
from ui.routing import ensure_app_navigation
from ui.state import Param, publish, restore, show_notes
from ui.viewport import column_widths

PAGE = "packing_check"
DEFAULT_TEXT = (
    "The cat sat on the mat because it was tired.\nParis is the capital of France.\nTwo plus two is four."
)
LABELS = tuple(label for label, *_switches in VARIANTS)
TABLE_ROW_PX = 35  # st.dataframe's row height
PARAMS = [
    *(param for param in model_params("pk", DEFAULT_TEXT) if param.key in ("pk_model", "pk_text")),
    Param("pk_variant", "variant", LABELS[-1], "choice", choices=LABELS),
]

ensure_app_navigation()
notes = restore(PAGE, PARAMS)
style, presentation = display_settings()
st.title(_("Packing check"))
st.caption(
    _(
        "Packed training puts several texts into one row. Kept apart by a block-diagonal document mask "
        "and with positions that restart at each text, every text computes exactly what it would alone. "
        "Here the texts are packed four ways and each one is compared with the same text run alone."
    )
)
show_notes(notes)

model_name, loaded, texts = model_and_texts(
    "pk",
    _("Texts to pack ({least}–{most}, one per line)").format(least=MIN_TEXTS, most=MAX_TEXTS),
    height=100,
    most=MAX_TEXTS,
)
if len(texts) < MIN_TEXTS:
    st.warning(
        _("Type {least} to {most} texts, one per line: packing needs at least two.").format(
            least=MIN_TEXTS, most=MAX_TEXTS
        )
    )
    st.stop()

check = run_or_stop(
    lambda: cache.packing(model_name, texts),
    _("Running the packed row four ways and each text alone…"),
    can_choose_layers=False,
)
publish(PAGE, PARAMS)

output = _("logits") if check.decoder else _("last hidden states")
st.subheader(_("Does each packed text compute what it computes alone?"))
show_table(
    summary_table(check),
    presentation,
    "pk_summary",
    hide_index=True,
    column_config={
        _("worst max |Δ|"): st.column_config.NumberColumn(format="%.2e"),
        _("most cross-document attention"): st.column_config.NumberColumn(format="%.3f"),
    },
)
st.caption(
    _(
        "max |Δ|: the largest difference of the {output} between a packed text and the same text alone "
        "(in a row of the same length, its padding masked). Up to 1e-4 is float32 rounding; the same "
        "code in both runs usually gives exactly 0. Cross-document attention: the largest share of a "
        "head's attention that lands on another text."
    ).format(output=output)
)
if check.decoder:
    st.info(
        _(
            "With the document mask on, this RoPE model gives the same output whether positions restart "
            "or not: rotary embeddings see only distances between tokens. Models with absolute position "
            "embeddings (BERT, GPT-2) do need the restart; try minilm."
        )
    )

widths = column_widths([3, 2])
left, right = st.columns([3, 2])
with left:
    st.radio(_("Packing shown"), LABELS, key="pk_variant", format_func=_, horizontal=True)
    variant = st.session_state["pk_variant"]
    st.plotly_chart(
        cross_mass_figure(
            check.cross_mass[variant],
            _("Cross-document attention · {variant}").format(variant=_(variant)),
            style,
            width_px=widths[0],
        ),
        key="pk_mass_chart",
        width="content",
    )
with right:
    st.markdown(_("**Positions the model was given** · {variant}").format(variant=_(variant)))
    show_table(positions_table(check, variant), presentation, "pk_positions", hide_index=True)

st.subheader(_("Each text, packed against alone"))
show_table(
    drift_table(check),
    presentation,
    "pk_drift",
    hide_index=True,
    height=TABLE_ROW_PX * (len(VARIANTS) * len(texts) + 1) + 3,  # every row, no scrolling
    column_config={
        delta_column(check.decoder): st.column_config.NumberColumn(format="%.2e"),
        _("KL(alone ‖ packed)"): st.column_config.NumberColumn(format="%.2e"),
        _("cosine (mean-pooled)"): st.column_config.NumberColumn(format="%.6f"),
    },
)
st.caption(
    _(
        "Text 0 starts the row, so only the document mask's absence can reach it through the texts after "
        "it in an encoder; in a causal decoder it never sees them. The later texts show what "
        "contamination and shifted positions cost."
    )
)
