"""attention-viz: the entry point. Routes the pages in ``pages/``; each page does its own layout."""

import os

import streamlit as st

# The models ship inside installed packages: never reach for a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

st.set_page_config(page_title="attention-viz", page_icon="🔍", layout="wide")

PAGES = [
    st.Page("pages/1_playground.py", title="Playground", icon=":material/science:", default=True),
    st.Page("pages/2_model_explorer.py", title="Model explorer", icon=":material/biotech:"),
    st.Page("pages/3_padding_lab.py", title="Padding lab", icon=":material/space_bar:"),
    st.Page("pages/4_head_gallery.py", title="Head gallery", icon=":material/grid_view:"),
    st.Page("pages/5_compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/6_packing_check.py", title="Packing check", icon=":material/view_stream:"),
    st.Page("pages/7_mask_check.py", title="Mask check", icon=":material/grid_on:"),
    st.Page("pages/8_generation.py", title="Generation", icon=":material/auto_awesome:"),
]

st.navigation(PAGES).run()
