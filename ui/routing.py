"""Deep links open the app's own navigation, even as the first visit after a server start.

Because ``pages/`` sits beside ``app.py``, Streamlit starts in its old multipage mode: until
some session has run ``app.py`` (which calls ``st.navigation``), a link such as
``/padding_lab?...`` runs the page file on its own, under a navigation made from the file
names ("app", "padding lab", ...) and without the app's page config. The first page run that
sees this switches the server to ``st.navigation`` for good and reruns once; the rerun goes
through ``app.py`` and opens the same page (a page's identity is its URL path in both modes).
"""

from __future__ import annotations

import streamlit as st

try:  # Streamlit's own flag for that mode; no public API sets it before a first run.
    from streamlit.runtime.pages_manager import PagesManager
except ImportError:  # a Streamlit without it has no such mode to leave
    PagesManager = None


def ensure_app_navigation() -> None:
    """Rerun through ``app.py`` if this run came from Streamlit's file-name navigation."""
    if PagesManager is not None and getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()
