"""Every Streamlit cache in the app lives here: models in ``cache_resource``, results in ``cache_data``."""

from __future__ import annotations

import streamlit as st

from attention_viz.playground import PlaygroundResult, run_playground
from attention_viz.policy import MaskPolicy

# Results are small for toy inputs; the bound keeps a classroom of sessions from growing memory.
PLAYGROUND_CACHE_ENTRIES = 256


@st.cache_data(max_entries=PLAYGROUND_CACHE_ENTRIES, show_spinner=False)
def playground(
    sentences: tuple[str, ...], policy: MaskPolicy, num_heads: int, width: int, seed: int
) -> PlaygroundResult:
    """Cached :func:`attention_viz.playground.run_playground`."""
    return run_playground(list(sentences), policy, num_heads=num_heads, width=width, seed=seed)
