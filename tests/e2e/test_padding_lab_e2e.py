"""The Padding lab and the other model pages, driven like a person in Chromium."""

from __future__ import annotations

import pytest

from .conftest import click_toggle, read_plot, switch, wait_for_app, wait_for_plot_change

FIRST_LOAD_MS = 180_000
RUN_MS = 120_000
SHORTEST = "pl_heat_0"  # text 0 of the default batch, "Cats purr.", is padded the most


def pad_cells_of_real_rows(plot) -> list[float | None]:
    """Weights that real query rows give to [PAD] keys, in the chart's first trace."""
    pads = [index for index, label in enumerate(plot.ticktext) if "[PAD]" in label]
    reals = [index for index, label in enumerate(plot.ticktext) if "[PAD]" not in label]
    assert pads and reals, "the default batch should pad its shortest sentence"
    return [plot.matrix[row][column] for row in reals for column in pads]


def test_padding_mask_toggle_changes_the_pad_columns(streamlit_server, page):
    page.goto(streamlit_server + "/padding_lab")
    wait_for_app(page, plots=7, timeout_ms=FIRST_LOAD_MS)
    assert switch(page, "Padding mask").is_checked(), "the padding mask starts on"
    masked = read_plot(page, SHORTEST)
    assert all(not value for value in pad_cells_of_real_rows(masked)), "masked pads still get weight"

    click_toggle(page, "Padding mask")
    wait_for_app(page, plots=7, timeout_ms=RUN_MS)
    leaking = wait_for_plot_change(page, SHORTEST, masked)
    assert not switch(page, "Padding mask").is_checked()
    assert leaking.ticktext == masked.ticktext, "the tokens stay; only the mask changes"
    leaked = [value for value in pad_cells_of_real_rows(leaking) if value]
    assert leaked and max(leaked) > 1e-3, "with the mask off, real tokens attend to the left pads"
    page.wait_for_url("**padding=0**")


@pytest.mark.parametrize(
    ("path", "title", "plots"),
    [("/head_gallery", "Head gallery", 1), ("/compare", "Compare two mask policies", 3)],
)
def test_model_page_loads_clean(streamlit_server, browser_page, path, title, plots):
    page = browser_page.page
    page.goto(streamlit_server + path)
    wait_for_app(page, plots=plots, timeout_ms=FIRST_LOAD_MS)
    assert page.get_by_role("heading", name=title).first.is_visible()
    assert page.get_by_test_id("stException").count() == 0
    assert browser_page.problems() == []
