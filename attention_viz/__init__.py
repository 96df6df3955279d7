"""attention-viz: see what attention does, and what its masks change.

The core library. It never imports Streamlit: it takes and returns tensors, dataclasses,
DataFrames and plotly figures. The small public API:

* :mod:`attention_viz.masks`: mask builders (True = may attend, axes (batch, head, query, key)).
* :func:`scaled_dot_product_attention`: the reference implementation that returns every stage.
* :class:`MaskPolicy`: the toggles, as one object.
* :func:`load_model` and :func:`capture`: a real model's attention under a mask policy.
"""

from attention_viz.attention import AttentionTrace, scaled_dot_product_attention
from attention_viz.capture import Capture, capture
from attention_viz.loading import load_model
from attention_viz.policy import MaskPolicy

__all__ = ["AttentionTrace", "Capture", "MaskPolicy", "capture", "load_model", "scaled_dot_product_attention"]
__version__ = "0.1.0"
