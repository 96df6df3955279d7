"""Page chrome shared by every page: the sidebar's display settings and error reporting."""

from __future__ import annotations

import streamlit as st

from attention_viz.figures import PALETTES, FigureStyle


def display_settings() -> tuple[FigureStyle, bool]:
    """Sidebar switches for presentation mode and palette.

    Returns the figure style and whether presentation mode is on (pages then hide secondary
    controls).
    """
    st.session_state.setdefault("presentation", False)
    st.session_state.setdefault("palette", PALETTES[0])
    with st.sidebar:
        st.toggle(
            "Presentation mode",
            key="presentation",
            help="Large fonts for a projector; secondary controls are hidden.",
        )
        st.selectbox(
            "Colour palette",
            PALETTES,
            key="palette",
            help="All palettes are readable with colour-vision deficiencies; Viridis is the default.",
        )
    presentation = bool(st.session_state["presentation"])
    style = FigureStyle(palette=st.session_state["palette"])
    if presentation:
        style = style.presentation()
        st.markdown(
            "<style>.stApp p, .stApp label, .stApp li {font-size: 1.35rem !important;}"
            " .stApp h1 {font-size: 3rem !important;}</style>",
            unsafe_allow_html=True,
        )
    return style, presentation
