"""The Model explorer, driven like a person: live re-runs under the masks, shareable links, exports.

The first test to open the page may wait for the bundled model to load (or, on a cold cache,
to be converted), so the first wait is generous.
"""

from __future__ import annotations

import csv
import io
import re

import pytest

from .conftest import (
    click_toggle,
    read_plot,
    switch,
    upper_triangle,
    wait_for_app,
    wait_for_plot_change,
)

PATH = "/model_explorer"
HEAD = "ex_head_chart"  # the focused head: trace 0 is its weights
PLOTS = 3  # head grid, focused head, mean over heads (rollout comes on top for short texts)
# Loading the model, converting it on a cold cache, and running it on a loaded CI machine.
FIRST_LOAD_MS = 180_000
RUN_MS = 120_000
TOLERANCE = 1e-6


@pytest.fixture
def explorer(streamlit_server, page):
    page.goto(streamlit_server + PATH)
    wait_for_app(page, plots=PLOTS, timeout_ms=FIRST_LOAD_MS)
    assert page.get_by_role("heading", name="Model explorer").is_visible()
    return page


def max_difference(a: list[list[float | None]], b: list[list[float | None]]) -> float:
    assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b, strict=True)), "shapes differ"
    pairs = [(x, y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)]
    assert all((x is None) == (y is None) for x, y in pairs), "blank cells differ"
    return max((abs(x - y) for x, y in pairs if x is not None), default=0.0)


def test_causal_toggle_reruns_model_and_link_restores_view(streamlit_server, explorer, open_browser_page):
    page = explorer
    assert "model=smollm2" in page.url, "smollm2 should be the default model"
    assert switch(page, "Causal mask").is_checked(), "a decoder starts with its own causal mask"
    causal = read_plot(page, HEAD)
    assert len(causal.ticktext) > 3
    assert all(value == 0 for value in upper_triangle(causal.matrix)), "causal on: a query sees a later key"

    click_toggle(page, "Causal mask")
    wait_for_app(page, plots=PLOTS, timeout_ms=RUN_MS)
    free = wait_for_plot_change(page, HEAD, causal)
    assert not switch(page, "Causal mask").is_checked()
    assert free.ticktext == causal.ticktext
    assert any(value != 0 for value in upper_triangle(free.matrix)), (
        "causal off: the model still ignores the future"
    )
    # Re-run, not un-hidden: each row's weights still sum to 1 over the keys it now sees.
    for row in free.matrix:
        assert sum(row) == pytest.approx(1.0, abs=1e-4)

    page.wait_for_url(re.compile(r"[?&]causal=0(?:&|$)"))
    link = page.url

    # Someone else opens the link: a new browser context, with no session of its own.
    other = open_browser_page().page
    other.goto(link)
    wait_for_app(other, plots=PLOTS, timeout_ms=RUN_MS)
    assert not switch(other, "Causal mask").is_checked()
    assert switch(other, "Padding mask").is_checked() == switch(page, "Padding mask").is_checked()
    shared = read_plot(other, HEAD)
    assert shared.ticktext == free.ticktext
    assert max_difference(shared.matrix, free.matrix) <= TOLERANCE
    assert re.search(r"[?&]causal=0(?:&|$)", other.url), "opening the link rewrote its causal setting"


def test_export_downloads_weights_csv(explorer):
    page = explorer
    export = page.get_by_test_id("stExpander").filter(has_text="Export")
    export.locator("summary").click()
    button = page.get_by_role("button", name="Weights (CSV)")
    # The expander's content is inert until it has opened; a click before that does nothing.
    page.wait_for_function(
        "() => { const d = document.querySelector('[data-testid=\"stExpanderDetails\"]:has(.st-key-ex_dl_csv)');"
        " return d !== null && !d.hasAttribute('inert'); }"
    )
    button.wait_for(state="visible")

    with page.expect_download(timeout=RUN_MS) as download_info:
        button.click()
    download = download_info.value
    assert download.failure() is None
    # The name and the columns record the model, the layer and the mask policy.
    assert download.suggested_filename.startswith("smollm2-layer0-causal-padding-right-len"), (
        download.suggested_filename
    )
    assert download.suggested_filename.endswith(".csv")
    content = download.path().read_bytes()
    assert content, "the downloaded file is empty"

    rows = list(csv.reader(io.StringIO(content.decode("utf-8"))))
    header = rows[0]
    assert "weight" in header, f"no weight column in {header}"
    for column in ("model", "causal", "padding_mask", "window", "padding_side", "max_length", "layer"):
        assert column in header, f"no {column} column in {header}"
    assert {row[header.index("causal")] for row in rows[1:]} == {"True"}
    assert len(rows) > 1, "the CSV has a header but no rows"
    weights = [float(row[header.index("weight")]) for row in rows[1:]]
    assert all(0.0 <= weight <= 1.0 for weight in weights)
    wait_for_app(page, plots=PLOTS)
