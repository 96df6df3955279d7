"""Streamlit glue shared by the pages: caching, shared controls, page chrome.

Only this package and ``pages/`` import Streamlit; ``attention_viz`` stays free of it.
"""
