"""The Playground, driven like a person: the causal toggle, the length slider, stepping through rows.

Figures are checked from the data Plotly holds in the browser (see ``read_plot``): what a test
reads is what the page draws.
"""

from __future__ import annotations

import pytest

from .conftest import (
    click_toggle,
    read_plot,
    switch,
    upper_triangle,
    wait_for_app,
    wait_for_plot,
    wait_for_plot_change,
)

HEADS = "pg_heads_chart"  # one heatmap per head; trace 0 is head 0's weights
MASK = "pg_mask_chart"  # the mask M itself: 1 = may attend, 0 = masked
# The default text's first (shown) sentence, as the toy tokenizer splits it.
FIRST_SENTENCE = ["the", "cat", "sat", "on", "the", "mat"]


@pytest.fixture
def playground(streamlit_server, page):
    page.goto(streamlit_server)
    wait_for_app(page, plots=2)
    return page


def revealed_rows(matrix: list[list[float | None]]) -> int:
    """Rows that show anything: rows not yet revealed are all NaN (blank)."""
    return sum(any(value is not None for value in row) for row in matrix)


def test_playground_loads_clean(playground, browser_page):
    page = playground
    assert page.get_by_role("heading", name="Playground: masked self-attention").is_visible()
    heads, mask = read_plot(page, HEADS), read_plot(page, MASK)
    assert heads is not None and mask is not None, "the heads chart or the mask chart is missing"
    assert heads.ticktext == FIRST_SENTENCE
    assert mask.ticktext == FIRST_SENTENCE
    assert browser_page.problems() == []


def test_causal_toggle_redraws_heatmap_and_empties_upper_triangle(playground):
    page = playground
    causal = switch(page, "Causal mask")
    assert causal.is_checked(), "the Playground starts with the causal mask on"
    on = read_plot(page, HEADS)
    assert on.names[0] != "masked"
    assert all(value == 0 for value in upper_triangle(on.matrix)), "causal on: a query sees a later key"
    assert all(value == 0 for value in upper_triangle(read_plot(page, MASK).z[0]))

    click_toggle(page, "Causal mask")
    wait_for_app(page, plots=2)
    off = wait_for_plot_change(page, HEADS, on)
    assert not causal.is_checked()
    assert off.ticktext == on.ticktext
    assert any(value != 0 for value in upper_triangle(off.matrix)), "causal off: the future is still hidden"
    assert any(value != 0 for value in upper_triangle(read_plot(page, MASK).z[0]))

    click_toggle(page, "Causal mask")
    wait_for_app(page, plots=2)
    again = wait_for_plot_change(page, HEADS, off)
    assert causal.is_checked()
    assert again.matrix == on.matrix, "toggling back did not restore the same weights"


def test_sequence_length_slider_changes_token_count(playground):
    page = playground
    slider = page.get_by_role("slider", name="Sequence length")
    start = read_plot(page, HEADS)
    length = int(slider.get_attribute("aria-valuetext"))
    assert len(start.ticktext) == start.rows == length == len(FIRST_SENTENCE)

    slider.focus()
    page.keyboard.press("ArrowRight")
    wait_for_app(page, plots=2)
    longer = wait_for_plot_change(page, HEADS, start)
    assert slider.get_attribute("aria-valuetext") == str(length + 1)
    assert longer.ticktext == [*FIRST_SENTENCE, "[PAD]"], "one more position should be padding"
    assert longer.rows == len(longer.z[0][0]) == length + 1
    assert len(read_plot(page, MASK).ticktext) == length + 1

    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    wait_for_app(page, plots=2)
    # The two key presses may land in one rerun or two: wait for where they lead.
    shorter = wait_for_plot(page, HEADS, "plot.ticktext.length === arg", length - 1)
    wait_for_app(page, plots=2)
    assert slider.get_attribute("aria-valuetext") == str(length - 1)
    assert shorter.ticktext == FIRST_SENTENCE[: length - 1]
    assert shorter.rows == length - 1
    assert "length=5" in page.url, "the address bar does not follow the slider"


def test_step_through_rows_reveals_one_row_per_click(playground):
    page = playground
    full = read_plot(page, HEADS)
    assert revealed_rows(full.matrix) == full.rows

    click_toggle(page, "Step through the rows")
    wait_for_app(page, plots=2)
    first = wait_for_plot_change(page, HEADS, full)
    assert switch(page, "Step through the rows").is_checked()
    assert revealed_rows(first.matrix) == 1
    assert revealed_rows(read_plot(page, MASK).z[0]) == 1
    assert page.get_by_role("button", name="◀ Previous row").is_disabled()
    assert page.get_by_text("Query 0 “the” may attend to").is_visible()

    next_row = page.get_by_role("button", name="Next row ▶")
    shown = first
    for row in (1, 2):
        next_row.click()
        wait_for_app(page, plots=2)
        shown = wait_for_plot_change(page, HEADS, shown)
        assert revealed_rows(shown.matrix) == row + 1
        assert revealed_rows(read_plot(page, MASK).z[0]) == row + 1
        # The revealed rows are the real weights, unchanged.
        assert shown.matrix[: row + 1] == full.matrix[: row + 1]
    narration = page.get_by_text(f"Query 2 “{FIRST_SENTENCE[2]}” may attend to")
    assert narration.is_visible()
    # What the teacher reads aloud, as rendered: the visible keys, with no markdown escapes showing.
    assert narration.inner_text().endswith("may attend to 0: the, 1: cat, 2: sat")
    assert page.get_by_role("button", name="◀ Previous row").is_enabled()
