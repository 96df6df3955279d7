"""Pictures as a person reads them: the tooltip of a hovered cell, and tick labels that never collide.

Hover: every heatmap on the hover path splits its cells into traces named "values",
"padding query", "masked" and "padding row", one trace per cell, so a hovered cell shows exactly
one tooltip. The value it shows must be the value the browser holds for that cell (its ``z``, or
its ``customdata`` on a transformed colour scale) and, where the core is cheap to run here, the
weight the core computes: the toy Playground and one layer of the bundled model.

Ticks: the server thins and turns tick labels for the width the browser reports (see
``ui/viewport.py``), so at any window size, with or without Presentation mode, no two labels of
one axis may overlap on screen.
"""

from __future__ import annotations

import pytest

from attention_viz.capture import capture
from attention_viz.loading import load_model
from attention_viz.playground import run_playground
from attention_viz.policy import MaskPolicy

from .conftest import (
    cell_value,
    chart_keys,
    click_toggle,
    clipped_labels,
    fixed4,
    hover_cell,
    overlapping_tick_labels,
    resize,
    switch,
    trace_values,
    wait_for_app,
)

FIRST_LOAD_MS = 180_000  # the first test to open a model page may load (or convert) the model
RUN_MS = 120_000
# A weight shown to 4 decimals is within half a unit of the 4th decimal of the true one (plus
# float32 noise between the server's run and ours).
SHOWN_TOLERANCE = 0.5e-4 + 1e-6

# The Playground's defaults (pages/1_playground.py): two sentences, padded on the right to the longer.
PLAYGROUND_SENTENCES = ["the cat sat on the mat", "the dog barked"]
PLAYGROUND_POLICY = MaskPolicy(causal=True, padding_mask=True, max_length=6, padding_side="right")
PLAYGROUND_HEADS, PLAYGROUND_WIDTH, PLAYGROUND_SEED = 4, 32, 0
PG_HEADS = "pg_heads_chart"  # 4 heads in 2 columns: panel n is head n - 1

EXPLORER = "/model_explorer"
EXPLORER_MODEL = "smollm2"
EXPLORER_TEXT = "The cat sat on the mat because it was tired."
EX_GRID, EX_HEAD = "ex_grid_chart", "ex_head_chart"  # all 9 heads of layer 0; head 0 alone

VIEWPORTS = [(1400, 900), (1920, 1080)]
# Each page: its path, how many charts it draws at least (to wait for), and the charts that must
# be among those checked (every chart on the page is checked).
PAGES = {
    "playground": (
        "/",
        2,
        {PG_HEADS, "pg_mask_chart", "pg_cell_vectors", "pg_cell_softmax", "pg_cell_output"},
    ),
    "explorer": (EXPLORER, 3, {EX_GRID, EX_HEAD, "ex_cell_vectors", "ex_cell_softmax"}),
    "padding_lab": ("/padding_lab", 7, {"pl_heat_0", "pl_heat_1", "pl_heat_2"}),
    "compare": ("/compare", 3, {"cmp_a_chart", "cmp_b_chart", "cmp_diff_chart"}),
}
MIN_PRESENTED_HEAD_PX = 500


@pytest.fixture(scope="module")
def playground_weights():
    """``(B, H, T, T)`` the weights the Playground draws with its default settings."""
    result = run_playground(
        PLAYGROUND_SENTENCES,
        PLAYGROUND_POLICY,
        num_heads=PLAYGROUND_HEADS,
        width=PLAYGROUND_WIDTH,
        seed=PLAYGROUND_SEED,
    )
    assert result.tokens[0] == ["the", "cat", "sat", "on", "the", "mat"]
    return result.attention.heads.weights


@pytest.fixture(scope="module")
def explorer_capture():
    """Layer 0 of the bundled model on the explorer's default text, under the model's own masks."""
    return capture(
        load_model(EXPLORER_MODEL),
        [EXPLORER_TEXT],
        layers=[0],
        policy=MaskPolicy(padding_side="right"),
        effect=False,
    )


def open_app(page, url: str, plots: int, timeout_ms: int = RUN_MS) -> None:
    """Open a page and wait past the rerun the width probe asks for on its first report."""
    page.goto(url)
    wait_for_app(page, plots=plots, timeout_ms=timeout_ms)
    page.wait_for_timeout(1500)
    wait_for_app(page, plots=plots, timeout_ms=timeout_ms)


def shown_value(tooltip: str, label: str = "weight") -> str:
    """The number on the tooltip's ``"<label> 0.1234"`` line."""
    lines = tooltip.split("\n")
    values = [line.removeprefix(f"{label} ") for line in lines if line.startswith(f"{label} ")]
    assert len(values) == 1, f"no single {label!r} line in the tooltip {lines}"
    return values[0].replace("−", "-")


def assert_shows_browser_value(
    page, key: str, query: int, key_index: int, panel: int = 1, label: str = "weight"
):
    """Hover an allowed cell: the tooltip names it and shows the value the browser holds. Returns that value."""
    value = cell_value(page, key, "values", query, key_index, panel)
    assert value is not None, f"{key} panel {panel}: cell ({query}, {key_index}) is not in the 'values' trace"
    tooltip = hover_cell(page, key, query, key_index, panel)
    lines = tooltip.split("\n")
    assert len(lines) == 3, f"{key} panel {panel} ({query}, {key_index}): tooltip {lines}"
    assert lines[0].startswith(f"query {query}: ") and lines[1].startswith(f"key {key_index}: "), (
        f"{key} panel {panel}: hovering ({query}, {key_index}) names another cell: {lines}"
    )
    assert shown_value(tooltip, label) == fixed4(value), (
        f"{key} panel {panel} ({query}, {key_index}): tooltip {lines}, the figure holds {value!r}"
    )
    return value


def assert_says_masked(page, key: str, query: int, key_index: int, panel: int = 1) -> None:
    assert cell_value(page, key, "masked", query, key_index, panel) is not None, (
        f"{key} panel {panel}: cell ({query}, {key_index}) is not in the 'masked' trace"
    )
    lines = hover_cell(page, key, query, key_index, panel).split("\n")
    assert lines[0].startswith(f"query {query}: ") and lines[1].startswith(f"key {key_index}: "), lines
    assert lines[2:] == ["masked: may not attend (weight 0)"], f"{key} ({query}, {key_index}): {lines}"


def first_cell(values: list[list[float | None]] | None, want=lambda q, k: True) -> tuple[int, int] | None:
    """The first cell (query, key) a trace holds, among those ``want`` accepts."""
    for q, row in enumerate(values or []):
        for k, value in enumerate(row):
            if value is not None and want(q, k):
                return q, k
    return None


# --- hover -----------------------------------------------------------------------------------------


def test_playground_tooltips_show_the_cores_weight_the_mask_and_the_diagonal(
    streamlit_server, page, playground_weights
):
    open_app(page, streamlit_server, plots=2)
    tokens = PLAYGROUND_SENTENCES[0].split()
    # (panel, query, key): head 0 below the diagonal, head 0's diagonal, head 3 (last panel).
    for panel, query, key in [(1, 2, 1), (1, 3, 3), (4, 5, 2)]:
        lines = hover_cell(page, PG_HEADS, query, key, panel).split("\n")
        expected = float(playground_weights[0, panel - 1, query, key])
        assert lines[:2] == [f"query {query}: {tokens[query]}", f"key {key}: {tokens[key]}"], lines
        assert lines[2] == f"weight {fixed4(cell_value(page, PG_HEADS, 'values', query, key, panel))}", lines
        assert abs(float(shown_value("\n".join(lines))) - expected) <= SHOWN_TOLERANCE, (
            f"head {panel - 1} ({query}, {key}): tooltip {lines}, the core computes {expected:.6f}"
        )
    assert float(playground_weights[0, 0, 0, 3]) == 0.0
    assert_says_masked(page, PG_HEADS, 0, 3)
    assert cell_value(page, PG_HEADS, "values", 0, 3) is None, "a masked cell is also in the 'values' trace"


def test_playground_pad_query_row_says_it_attends_to_nothing(streamlit_server, page, playground_weights):
    open_app(page, streamlit_server + "/?item=1", plots=2)
    # "the dog barked" + 3 [PAD] on the right; with the padding mask on, pad rows are empty.
    lines = hover_cell(page, PG_HEADS, 4, 0).split("\n")
    assert lines[:2] == ["query 4: [PAD]", "key 0: the"], lines
    assert lines[2:] == ["a [PAD] query row: it attends to nothing", "(an empty row, every weight 0)"], lines
    assert cell_value(page, PG_HEADS, "padding row", 4, 0) is not None
    value = assert_shows_browser_value(page, PG_HEADS, 2, 1)
    assert abs(value - float(playground_weights[1, 0, 2, 1])) <= 1e-6


def test_explorer_tooltips_show_the_models_own_weights(streamlit_server, page, explorer_capture):
    open_app(page, streamlit_server + EXPLORER, plots=3, timeout_ms=FIRST_LOAD_MS)
    weights = explorer_capture.layer(0).weights[0]  # (H, T, T)
    tokens = explorer_capture.tokens[0]
    assert weights.shape[0] == 9 and len(tokens) > 6
    # (chart, panel, head, query, key): grid panels 1, 5 and 9, and the focused head 0.
    cells = [
        (EX_GRID, 1, 0, 3, 1),
        (EX_GRID, 5, 4, 5, 2),
        (EX_GRID, 9, 8, 6, 6),
        (EX_HEAD, 1, 0, 6, 2),
        (EX_HEAD, 1, 0, 4, 4),
    ]
    for chart, panel, head, query, key in cells:
        value = assert_shows_browser_value(page, chart, query, key, panel)
        expected = float(weights[head, query, key])
        assert abs(value - expected) <= 1e-5, (
            f"{chart} head {head} ({query}, {key}): the figure holds {value:.6f}, the core computes {expected:.6f}"
        )
        tooltip = hover_cell(page, chart, query, key, panel)
        assert tooltip.split("\n")[0] == f"query {query}: {tokens[query]}", tooltip
    assert float(weights[4, 1, 4]) == 0.0
    assert_says_masked(page, EX_GRID, 1, 4, panel=5)
    assert_says_masked(page, EX_HEAD, 1, 4)


def test_padding_lab_tooltips_show_the_values_each_figure_holds(streamlit_server, page):
    open_app(page, streamlit_server + "/padding_lab", plots=7, timeout_ms=FIRST_LOAD_MS)
    for key in ("pl_heat_0", "pl_heat_1"):
        values = trace_values(page, key, "values")
        # The last row is a real token (left padding, the default here): its earliest key is a pad
        # for a padded text, so take the last key it may attend to, i.e. the diagonal or before it.
        rows = len(values)
        cell = first_cell(values, lambda q, k, last=rows - 1: q == last and k >= last - 2)
        assert cell is not None, f"{key}: the last query row holds no values near the diagonal"
        assert_shows_browser_value(page, key, *cell)
        masked = first_cell(trace_values(page, key, "masked"))
        assert masked is not None, f"{key}: nothing is masked under the causal mask"
        assert_says_masked(page, key, *masked)
    # Text 0 is the shortest: its [PAD] query rows are empty.
    pad = first_cell(trace_values(page, "pl_heat_0", "padding row"))
    assert pad is not None, "pl_heat_0: the shortest text has no empty [PAD] query row"
    lines = hover_cell(page, "pl_heat_0", *pad).split("\n")
    assert lines[0] == f"query {pad[0]}: [PAD]", lines
    assert "a [PAD] query row: it attends to nothing" in lines, lines


def test_compare_tooltips_show_the_values_each_figure_holds(streamlit_server, page):
    open_app(page, streamlit_server + "/compare", plots=3, timeout_ms=FIRST_LOAD_MS)
    for key in ("cmp_a_chart", "cmp_b_chart"):
        values = trace_values(page, key, "values")
        rows = len(values)
        assert_shows_browser_value(page, key, rows - 1, rows - 2)
        assert_shows_browser_value(page, key, rows // 2, rows // 2)
    # A is the model's own causal mask: the cell right of the diagonal is masked there.
    assert_says_masked(page, "cmp_a_chart", 0, 1)
    difference = trace_values(page, "cmp_diff_chart", "values")
    # The largest change, where the tooltip has a sign to get right.
    _, query, key = max(
        (abs(v), q, k) for q, row in enumerate(difference) for k, v in enumerate(row) if v is not None
    )
    assert_shows_browser_value(page, "cmp_diff_chart", query, key, label="Δ weight")
    a = cell_value(page, "cmp_a_chart", "values", query, key) or 0.0  # masked on A: weight 0
    b = cell_value(page, "cmp_b_chart", "values", query, key) or 0.0
    assert abs(difference[query][key] - (b - a)) <= 1e-6, "the difference is not B − A"


# --- tick labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAGES))
def test_tick_labels_never_overlap_at_any_size_or_in_presentation_mode(streamlit_server, page, name):
    path, plots, required = PAGES[name]
    page.set_viewport_size({"width": VIEWPORTS[0][0], "height": VIEWPORTS[0][1]})
    open_app(page, streamlit_server + path, plots=plots, timeout_ms=FIRST_LOAD_MS)
    problems: list[str] = []
    checked: set[str] = set()
    size, presenting = VIEWPORTS[0], False
    # One page through every combination, one change at a time: off, on, then the larger window.
    for want_size, want_presenting in [
        (VIEWPORTS[0], False),
        (VIEWPORTS[0], True),
        (VIEWPORTS[1], True),
        (VIEWPORTS[1], False),
    ]:
        if want_size != size:
            resize(page, *want_size, plots=plots, timeout_ms=RUN_MS)
            size = want_size
        if want_presenting != presenting:
            click_toggle(page, "Presentation mode")
            wait_for_app(page, plots=plots, timeout_ms=RUN_MS)
            presenting = want_presenting
            assert switch(page, "Presentation mode").is_checked() == presenting
        where = f"{size[0]}×{size[1]} presentation {'on' if presenting else 'off'}"
        for key in chart_keys(page):
            checked.add(key)
            problems.extend(f"{where}: {overlap}" for overlap in overlapping_tick_labels(page, key))
            problems.extend(f"{where}: {clipped}" for clipped in clipped_labels(page, key))
        if name == "explorer" and presenting and size == VIEWPORTS[1]:
            box = page.locator(f".st-key-{EX_HEAD} .js-plotly-plot .nsewdrag").first.bounding_box()
            if box["width"] < MIN_PRESENTED_HEAD_PX:
                problems.append(
                    f"{where}: the focused head's plot area is {box['width']:.0f} px wide, "
                    f"less than {MIN_PRESENTED_HEAD_PX}"
                )
    assert required <= checked, f"charts missing from the page: {sorted(required - checked)}"
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


# The explorer's column layouts (pages/2_model_explorer.py), by the key of an element inside each.
EXPLORER_COLUMNS = {"ex_layer": [3, 1, 1, 2], EX_GRID: [3, 2], "ex_mean_chart": [1, 1]}
COLUMN_WIDTHS_JS = """
(keys) => {
    const main = document.querySelector('[data-testid="stMainBlockContainer"]');
    const style = getComputedStyle(main);
    const inner = main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const blocks = {};
    for (const key of keys) {
        const block = document.querySelector('.st-key-' + key).closest('[data-testid="stHorizontalBlock"]');
        blocks[key] = [...block.children].map((column) => column.getBoundingClientRect().width);
    }
    return {inner, blocks};
}
"""


@pytest.mark.parametrize("width,height", VIEWPORTS)
def test_charts_are_laid_out_for_the_width_their_column_has(streamlit_server, page, width, height):
    """The server sizes every chart for its column (``column_widths``); the browser's own layout of
    the columns is the reference. A chart laid out for another width is drawn twice (Streamlit
    draws it again at its column's width) and its cells are no longer square."""
    from ui.viewport import column_widths

    page.set_viewport_size({"width": width, "height": height})
    open_app(page, streamlit_server + EXPLORER, plots=3, timeout_ms=FIRST_LOAD_MS)
    measured = page.evaluate(COLUMN_WIDTHS_JS, list(EXPLORER_COLUMNS))
    for key, ratios in EXPLORER_COLUMNS.items():
        expected = column_widths(ratios, total=measured["inner"])
        drawn = measured["blocks"][key]
        assert len(drawn) == len(ratios), (key, drawn)
        assert all(abs(a - b) <= 0.5 for a, b in zip(drawn, expected, strict=True)), (
            f"columns {ratios} of {measured['inner']} px: the browser drew {drawn}, the server assumed {expected}"
        )
