"""Compare's example buttons: callbacks that set both policies (and, for padding, the texts).

They live in a module, not in the page: a callback defined in a page keeps the page's namespace,
captures included, alive for as long as the button remembers it.
"""

from __future__ import annotations

import streamlit as st

from attention_viz.compare import PRESETS, shortest_text, with_shorter_text
from attention_viz.policy import MaskPolicy
from attention_viz.settings import load_settings
from ui import cache
from ui.controls import reset_more_masks, texts_of

SIDES = ("a", "b")


def apply_preset(name: str) -> None:
    """Button callback: set both sides (and, for padding, a second shorter text) before the rerun."""
    preset = PRESETS[name]
    info, _problem, _short = cache.model_summary(st.session_state["cmp_model"])
    decoder = info.decoder if info is not None else True  # a model that cannot open shows its error
    for side, choice in zip(SIDES, (preset.a, preset.b), strict=True):
        # The model's own choice, resolved where every policy resolves it.
        st.session_state[f"cmp_{side}_causal"] = MaskPolicy(causal=choice.causal).for_model(decoder).causal
        st.session_state[f"cmp_{side}_padding"] = choice.padding_mask
        st.session_state[f"cmp_{side}_window"] = choice.window or 0  # the widget: 0 = off
        reset_more_masks(f"cmp_{side}")
        st.session_state[f"cmp_{side}_docmask"] = choice.document_mask
    st.session_state["cmp_side"] = preset.padding_side
    st.session_state["cmp_pack"] = preset.pack
    if preset.needs_padding:
        typed = st.session_state["cmp_text"]
        texts = with_shorter_text(texts_of(typed), most=load_settings().max_texts)
        replaced = "\n".join(texts)
        if replaced != typed:
            # Nothing typed is lost: the page offers to put it back.
            st.session_state["cmp_text_before_preset"] = typed
        st.session_state["cmp_text"] = replaced
        st.session_state["cmp_item"] = shortest_text(texts)


def restore_typed_text() -> None:
    """Button callback: put back the text a preset replaced."""
    st.session_state["cmp_text"] = st.session_state.pop("cmp_text_before_preset")
    st.session_state["cmp_item"] = 0
