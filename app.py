"""attention-viz: the entry point. Routes the pages in ``pages/``; each page does its own layout."""

import os

import streamlit as st

# The models ship inside installed packages: never reach for a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# torch's OpenMP threads spin for a while at the end of each parallel step before they sleep.
# When other work shares the cores (many students' runs, a browser on the same laptop), a spinning
# thread waits for a partner that is not running: a short text's capture then cost 0.78 s of CPU
# against 0.43 s with a short spin (benchmarks, two busy cores), and no more time on idle cores.
# Read once, when torch loads its OpenMP library.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# Imported after the settings above: ui.state imports transformers (and torch), which read them once.
from attention_viz.i18n import _  # noqa: E402
from ui.state import language_of_run  # noqa: E402

st.set_page_config(page_title="attention-viz", page_icon="🔍", layout="wide")
language_of_run()  # the navigation's page titles are worded in the run's language

PAGES = [
    st.Page("pages/1_playground.py", title=_("Playground"), icon=":material/science:", default=True),
    st.Page("pages/2_model_explorer.py", title=_("Model explorer"), icon=":material/biotech:"),
    st.Page("pages/3_padding_lab.py", title=_("Padding lab"), icon=":material/space_bar:"),
    st.Page("pages/4_head_gallery.py", title=_("Head gallery"), icon=":material/grid_view:"),
    st.Page("pages/5_compare.py", title=_("Compare"), icon=":material/compare:"),
    st.Page("pages/6_packing_check.py", title=_("Packing check"), icon=":material/view_stream:"),
    st.Page("pages/7_mask_check.py", title=_("Mask check"), icon=":material/grid_on:"),
    st.Page("pages/8_generation.py", title=_("Generation"), icon=":material/auto_awesome:"),
]

st.navigation(PAGES).run()
