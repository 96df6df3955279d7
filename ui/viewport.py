"""How wide the page really is, so figures can fill their columns with square cells.

Streamlit tells the server nothing about the browser's size. A tiny component (inline
JavaScript, no iframe, no network) measures the main column and reports its width, in steps of
20 px so that a scroll bar appearing does not rerun the page; it reports again when the window
or the sidebar changes size. Until the first report (and in ``AppTest``, which runs no
JavaScript) a typical laptop width is assumed, and a width equal to the one the page was drawn
for is not reported: a page opened at that width is drawn once, not drawn again for the same
width (every figure sent twice).
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

# The main column of a 1400 px wide window with the sidebar open (measured: Streamlit 1.67).
DEFAULT_MAIN_WIDTH = 940
STEP_PX = 20
COLUMN_GAP_PX = 16  # st.columns(gap="small"), Streamlit's default: 1rem
KEY = "_viewport"
WIDTH_KEY = "_viewport_width"

_JS = f"""
export default function(component) {{
    const {{ data, setStateValue }} = component;
    // The width the server drew this run for: the same width needs no report (and no rerun).
    let last = data && data.drawn ? data.drawn : null, timer = null;
    const measure = () => {{
        const main = document.querySelector('[data-testid="stMainBlockContainer"]');
        if (main === null) return;
        const style = getComputedStyle(main);
        const inner = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
        const width = Math.floor(inner / {STEP_PX}) * {STEP_PX};
        if (width > 0 && width !== last) {{
            last = width;
            setStateValue("width", width);
        }}
    }};
    const observer = new ResizeObserver(() => {{
        clearTimeout(timer);
        timer = setTimeout(measure, 200);
    }});
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    if (main !== null) observer.observe(main);
    measure();
    return () => {{ observer.disconnect(); clearTimeout(timer); }};
}}
"""

_probe = st.components.v2.component("attention_viz.viewport", js=_JS)


def _remember() -> None:
    reported = (st.session_state.get(KEY) or {}).get("width")
    if reported:
        st.session_state[WIDTH_KEY] = int(reported)


def measure() -> None:
    """Draw the measuring component (once per page run, in the sidebar, where its empty slot
    takes no room)."""
    with st.sidebar:
        result = _probe(key=KEY, data={"drawn": main_width()}, on_width_change=_remember, height=1)
    reported = getattr(result, "width", None)
    if reported:
        st.session_state[WIDTH_KEY] = int(reported)


def main_width() -> int:
    """The width of the page's main column in px: as last measured, else the default."""
    return int(st.session_state.get(WIDTH_KEY) or DEFAULT_MAIN_WIDTH)


def column_widths(
    ratios: Sequence[float], total: float | None = None, gap: float = COLUMN_GAP_PX
) -> list[float]:
    """The widths ``st.columns(ratios)`` gives its columns, out of ``total`` (the main column).

    Streamlit sizes each column as its share of the whole width less an equal share of the gaps
    (measured, Streamlit 1.67: ``[3, 2]`` of 940 px are 556 and 368 px, not 554.4 and 369.6). A
    chart laid out for a width its column does not have is drawn again at the column's width.
    """
    total = main_width() if total is None else total
    share_of_gaps = gap * (len(ratios) - 1) / len(ratios)
    return [total * ratio / sum(ratios) - share_of_gaps for ratio in ratios]
