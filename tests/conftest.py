"""Settings shared by every test.

The environment is set at import time, before any test module imports
transformers or tokenizers, and is inherited by servers the tests start.
"""

import os

# Models come from installed packages; never reach for a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The Rust tokenizers warn (and can deadlock) when a process forks after using threads.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Plotly validates every property of every figure the tests draw (the app skips it for speed:
# attention_viz.figures.figure_of), so a misspelt property fails a test.
os.environ.setdefault("ATTNVIZ_VALIDATE_FIGURES", "1")

import pytest  # noqa: E402  (after the environment is set)


@pytest.fixture(scope="session")
def smollm2():
    """The bundled SmolLM2 decoder, loaded once (converted on first use, ~20 s)."""
    from attention_viz.loading import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2 encoder, loaded once."""
    from attention_viz.loading import load_model

    return load_model("minilm")
