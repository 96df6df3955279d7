"""attention-viz: the entry point. Routes the pages in ``pages/``; each page does its own layout."""

import streamlit as st

st.set_page_config(page_title="attention-viz", page_icon="🔍", layout="wide")

PAGES = [
    st.Page("pages/1_playground.py", title="Playground", icon="🧪", default=True),
]

st.navigation(PAGES).run()
