"""The cell inspector, driven like a person: click a cell of the focused heatmap, see it taken apart.

The chart's own click event reaches the server through a small listener (``ui/inspector.py``); a
click must move the inspector's query and key (and, on the Playground's grid, its head) to the
clicked cell, outline that cell, put it in the link, and end the chain of equations at the very
weight the browser holds for the cell.
"""

from __future__ import annotations

import re

from .conftest import _CELL_CENTRE_JS, cell_value, fixed4, hover_cell, wait_for_app

FIRST_LOAD_MS = 180_000  # the first test to open a model page may load (or convert) the model
RUN_MS = 120_000
EXPLORER = "/model_explorer"
EX_HEAD = "ex_head_chart"
PG_HEADS = "pg_heads_chart"  # 4 heads in 2 columns: panel n is head n - 1
# Explorer: grid, focused head, mean, rollout, then the inspector's vectors and softmax row.
EXPLORER_PLOTS = 6
PLAYGROUND_PLOTS = 5  # heads, mask, vectors, softmax row, output row


def click_cell(page, chart: str, query: int, key: int, panel: int = 1) -> str:
    """Hover cell (query, key) of subplot ``panel`` of ``chart``, click it, and return its tooltip."""
    tooltip = hover_cell(page, chart, query, key, panel)
    centre = page.evaluate(_CELL_CENTRE_JS, [chart, panel, query, key])
    page.mouse.click(centre["x"], centre["y"])
    return tooltip


def inputs(page) -> tuple[int, int]:
    """The inspector's query and key inputs, as shown."""
    query = page.get_by_role("spinbutton", name="Query i (row)")
    key = page.get_by_role("spinbutton", name="Key j (column)")
    return int(query.input_value()), int(key.input_value())


def marks(page, chart: str) -> list[list]:
    """The rectangles drawn on a chart: ``[x axis, left, top]`` each."""
    return page.evaluate(
        "(key) => (document.querySelector(`.st-key-${key} .js-plotly-plot`).layout.shapes || [])"
        ".map((s) => [s.xref, s.x0, s.y0])",
        chart,
    )


def equations(page) -> str:
    return "\n".join(page.locator(".katex").all_inner_texts())


def follow(page, plots: int, query: int, key: int) -> None:
    """Wait until the click's rerun has put (query, key) into the link and the page is drawn."""
    page.wait_for_url(re.compile(rf"[?&]query={query}&key={key}(?:&|$)"), timeout=RUN_MS)
    wait_for_app(page, plots=plots, timeout_ms=RUN_MS)


def test_clicking_a_cell_of_the_focused_head_takes_that_cell_apart(streamlit_server, page):
    page.goto(streamlit_server + EXPLORER)
    wait_for_app(page, plots=EXPLORER_PLOTS, timeout_ms=FIRST_LOAD_MS)
    assert inputs(page) == (10, 4), "the inspector opens at the last token's strongest key"
    assert marks(page, EX_HEAD) == [["x", 3.5, 9.5]]

    tooltip = click_cell(page, EX_HEAD, 4, 2)
    assert tooltip.split("\n")[:2] == ["query 4: the", "key 2: sat"], tooltip
    follow(page, EXPLORER_PLOTS, 4, 2)
    assert inputs(page) == (4, 2)
    assert page.get_by_text("Query 4 the → key 2 sat, layer 0, head 0").is_visible()
    assert marks(page, EX_HEAD) == [["x", 1.5, 3.5]], "the clicked cell is outlined"
    weight = cell_value(page, EX_HEAD, "values", 4, 2)
    assert fixed4(weight) in equations(page), "the chain does not end at the weight the heatmap holds"

    click_cell(page, EX_HEAD, 1, 4)  # grey: key 4 is in query 1's future
    follow(page, EXPLORER_PLOTS, 1, 4)
    assert inputs(page) == (1, 4)
    assert page.get_by_text("This key is masked for this query").is_visible()
    assert marks(page, EX_HEAD) == [["x", 3.5, 0.5]]


def test_clicking_a_cell_of_a_playground_head_picks_that_head_too(streamlit_server, page):
    page.goto(streamlit_server)
    wait_for_app(page, plots=PLAYGROUND_PLOTS)
    click_cell(page, PG_HEADS, 5, 1, panel=3)
    follow(page, PLAYGROUND_PLOTS, 5, 1)
    assert re.search(r"[?&]cellhead=2(?:&|$)", page.url), page.url
    assert inputs(page) == (5, 1)
    assert page.get_by_text("Query 5 mat → key 1 cat, head 2").is_visible()
    assert ["x3", 0.5, 4.5] in marks(page, PG_HEADS), "the cell is outlined on head 2's panel"
    weight = cell_value(page, PG_HEADS, "values", 5, 1, panel=3)
    assert fixed4(weight) in equations(page)
