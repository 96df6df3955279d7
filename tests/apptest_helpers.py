"""Helpers for Streamlit ``AppTest`` runs: read back the plotly figures a page drew."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import plotly.io
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def run_page(page: str, timeout: float = 60) -> AppTest:
    """Run one page file alone, as Streamlit would, and fail on any exception."""
    app = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=timeout)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def chart(app: AppTest, key_part: str):
    """The one chart whose element id contains ``key_part`` (the ``key=`` given to st.plotly_chart)."""
    matches = [
        plotly.io.from_json(element.proto.spec, skip_invalid=True)
        for element in app.get("plotly_chart")
        if key_part in element.proto.id
    ]
    assert len(matches) == 1, f"expected one chart with key {key_part!r}, found {len(matches)}"
    return matches[0]


def decode_array(value) -> np.ndarray:
    """Plotly serialises numpy arrays as typed arrays (base64 ``bdata``); turn them back into numpy."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(n) for n in str(shape).split(",")])
        return array.astype(float)
    return np.asarray(value, dtype=float)


def heatmap_values(figure) -> list[np.ndarray]:
    """Each panel's cells as a person reads them: the value of every allowed cell, 0 for a masked
    (grey) weight (exactly 0), NaN for a masked score (−∞) or a blank cell.

    A panel's cells are split over traces named "values", "padding query", "masked" and
    "padding row" (see ``attention_viz.figures``); a mask figure is one plain heatmap. In a grid of
    cells too small to point at, masked cells are in no trace but over a grey rectangle under the
    panel: there a weight panel's cells that no trace holds are masked (0).
    """
    from attention_viz.figures import MASKED_COLOUR

    grey_under = {shape.xref for shape in figure.layout.shapes or () if shape.fillcolor == MASKED_COLOUR}
    panels: dict[str, np.ndarray] = {}
    for trace in figure.data:
        if trace.type != "heatmap":
            continue
        z = decode_array(trace.z)
        axis = trace.xaxis or "x"
        if axis not in panels:
            grey_weights = axis in grey_under and "weight %{" in (trace.hovertemplate or "")
            panels[axis] = np.full(z.shape, 0.0 if grey_weights else np.nan)
        panel = panels[axis]
        known = ~np.isnan(z)
        if trace.name in ("masked", "padding row"):
            # A masked weight is exactly 0; a masked score is −∞, which no heatmap can colour.
            panel[known] = np.nan if "−∞" in (trace.hovertemplate or "") else 0.0
        else:
            panel[known] = z[known]
    return list(panels.values())


def axis_ticktext(figure, axis: str = "xaxis") -> list[str]:
    return list(getattr(figure.layout, axis).ticktext)
