"""The least a Streamlit page with a plotly chart costs to open: a title and one 2 × 2 heatmap.

benchmarks/peer_bertviz.py opens it in a brand-new browser, as it opens the Model explorer, to
measure the part of our cold start that the stack itself takes (Streamlit's and plotly.js's
download and boot), with no model, no text and no work of ours.
"""

import plotly.graph_objects as go
import streamlit as st

st.title("attention-viz")
st.plotly_chart(go.Figure(go.Heatmap(z=[[0.1, 0.9], [0.6, 0.4]])), key="floor_chart", theme=None)
