"""Rapid key presses on a slider: the widget, the heading, the figure and the URL end up agreeing.

Streamlit sends each rerun with the query string the browser holds at that moment. While
presses come faster than runs finish, that is the URL of an earlier run. These tests press a
slider's arrow keys with no pause, let the app settle (idle, and nothing changing for a while),
and only then compare: waiting for them to agree would hide the bug they are here to catch.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from .conftest import read_plot, switch, wait_for_app

EXPLORER = "/model_explorer"
EXPLORER_PLOTS = 3  # head grid, focused head, mean over heads
GRID = "ex_grid_chart"  # trace 0 is head 0 of the shown layer
MASK = "pg_mask_chart"  # the Playground's mask: one row per position
FIRST_LOAD_MS = 180_000  # the first test to open the explorer may load (or convert) the model
RUN_MS = 120_000
# Three presses, this far apart (ms), before the app settles. Before the fix, 14 of 24 such
# rounds on the explorer's Layer slider ended with the slider, heading or URL wrong (3/8 with
# 40 ms, 4/8 with none, 7/8 with 100 ms); with no gap the slider often sends one change.
QUICK_MS = 40
SLOW_MS = 100
# (key, change of the value, gap): the value stays within 0..9 of where it started.
ROUNDS = [
    ("ArrowRight", 3, QUICK_MS),
    ("ArrowRight", 3, 0),
    ("ArrowRight", 3, QUICK_MS),
    ("ArrowLeft", -3, QUICK_MS),
    ("ArrowLeft", -3, SLOW_MS),
    ("ArrowRight", 3, QUICK_MS),
    ("ArrowLeft", -3, 0),
    ("ArrowLeft", -3, SLOW_MS),
]
# The app counts as settled once it is idle and nothing a person sees changed for this long.
QUIET_S = 1.5
SETTLE_S = 90.0
TOLERANCE = 1e-6


@dataclass(frozen=True)
class View:
    """What a person sees of one slider's state: the slider, the URL, a heading and a figure."""

    slider: int
    url: int | None
    heading: str
    figure: str  # JSON of what the figure holds, to tell whether it still changes

    def __str__(self) -> str:
        return f"slider={self.slider} url={self.url} heading={self.heading!r}"


def url_value(url: str, name: str) -> int | None:
    values = parse_qs(urlsplit(url).query).get(name)
    return int(values[0]) if values else None


def explorer_view(page) -> View:
    heading = page.locator("h3").filter(has_text=re.compile(r"^Layer \d+: all")).first.inner_text()
    plot = read_plot(page, GRID)
    return View(
        slider=int(page.get_by_role("slider", name="Layer").get_attribute("aria-valuetext")),
        url=url_value(page.url, "layer"),
        heading=heading.strip(),
        figure=json.dumps(plot.z[0] if plot else None),
    )


def playground_view(page) -> View:
    plot = read_plot(page, MASK)
    return View(
        slider=int(page.get_by_role("slider", name="Sequence length").get_attribute("aria-valuetext")),
        url=url_value(page.url, "length"),
        heading="",
        figure=json.dumps(plot.z[0] if plot else None),
    )


def settle(page, view) -> View:
    """Wait until the app is idle and what ``view`` reads has not changed for ``QUIET_S``."""
    deadline = time.monotonic() + SETTLE_S
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        wait_for_app(page, timeout_ms=RUN_MS)
        now = view(page)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET_S:
            return now
        page.wait_for_timeout(250)
    pytest.fail(f"the app never settled; last seen: {last}")


def press_quickly(page, slider_label: str, key: str, times: int, gap_ms: int = 0) -> None:
    """Focus the slider's thumb and press ``key`` ``times`` times, ``gap_ms`` apart.

    With no gap, the slider often sends one change for all presses; 40 ms apart (a quick
    finger) each press is its own rerun, and a rerun starts while the last one's URL is on its way.
    """
    page.get_by_role("slider", name=slider_label).focus()
    for press in range(times):
        if press and gap_ms:
            page.wait_for_timeout(gap_ms)
        page.keyboard.press(key)


def layer_of(heading: str) -> int:
    match = re.match(r"Layer (\d+):", heading)
    assert match, f"unexpected heading {heading!r}"
    return int(match.group(1))


def max_difference(a: list, b: list) -> float:
    assert len(a) == len(b) and all(len(x) == len(y) for x, y in zip(a, b, strict=True)), "shapes differ"
    pairs = [(x, y) for row_a, row_b in zip(a, b, strict=True) for x, y in zip(row_a, row_b, strict=True)]
    assert all((x is None) == (y is None) for x, y in pairs), "blank cells differ"
    return max((abs(x - y) for x, y in pairs if x is not None), default=0.0)


@pytest.fixture
def explorer(streamlit_server, page):
    page.goto(streamlit_server + EXPLORER)
    wait_for_app(page, plots=EXPLORER_PLOTS, timeout_ms=FIRST_LOAD_MS)
    return page


def test_rapid_arrow_keys_on_the_layer_slider_leave_slider_heading_figure_and_url_agreeing(explorer):
    page = explorer
    # One press at a time, each run finished before the next: the grid each layer really draws.
    reference = {}
    start = settle(page, explorer_view)
    assert start.slider == 0 and start.url == 0
    reference[0] = json.loads(start.figure)
    for layer in range(1, 10):
        press_quickly(page, "Layer", "ArrowRight", 1)
        view = settle(page, explorer_view)
        assert (view.slider, view.url, layer_of(view.heading)) == (layer, layer, layer), str(view)
        reference[layer] = json.loads(view.figure)
    assert len({json.dumps(grid) for grid in reference.values()}) == len(reference), "layers look alike"
    page.goto(page.url.replace("layer=9", "layer=0"))  # a new session on layer 0
    wait_for_app(page, plots=EXPLORER_PLOTS, timeout_ms=RUN_MS)

    expected = 0
    for key, step, gap_ms in ROUNDS:
        press_quickly(page, "Layer", key, 3, gap_ms)
        expected += step
        view = settle(page, explorer_view)
        assert (view.slider, view.url, layer_of(view.heading)) == (expected, expected, expected), (
            f"after 3× {key}, expected layer {expected} everywhere; the page shows {view}"
        )
        assert max_difference(json.loads(view.figure), reference[expected]) <= TOLERANCE, (
            f"the grid is not layer {expected}'s"
        )


def test_browser_back_and_forward_restore_the_layer_of_that_url(explorer):
    page = explorer
    for _ in range(2):
        press_quickly(page, "Layer", "ArrowRight", 1)
        settle(page, explorer_view)
    assert settle(page, explorer_view).slider == 2
    page.go_back()
    view = settle(page, explorer_view)
    assert (view.slider, view.url, layer_of(view.heading)) == (1, 1, 1), str(view)
    page.go_forward()
    view = settle(page, explorer_view)
    assert (view.slider, view.url, layer_of(view.heading)) == (2, 2, 2), str(view)


def test_rapid_arrow_keys_on_the_sequence_length_slider_keep_the_url_and_mask_in_step(streamlit_server, page):
    # Twenty words cut to five: every length the rounds reach shows in the mask.
    text = " ".join(f"w{n}" for n in range(20))
    page.goto(f"{streamlit_server}/?{urlencode({'text': text, 'length': 5})}")
    wait_for_app(page, plots=2)
    expected = settle(page, playground_view).slider
    assert expected == 5
    for key, step, gap_ms in ROUNDS:
        press_quickly(page, "Sequence length", key, 3, gap_ms)
        expected += step
        view = settle(page, playground_view)
        shown = len(json.loads(view.figure))
        assert (view.slider, view.url, shown) == (expected, expected, expected), (
            f"after 3× {key}, expected length {expected}: slider {view.slider}, URL {view.url}, "
            f"mask with {shown} positions"
        )


def test_a_link_with_present_on_opens_in_presentation_mode_and_keeps_it(streamlit_server, page):
    page.goto(f"{streamlit_server}/?present=1")
    wait_for_app(page, plots=2)
    assert switch(page, "Presentation mode").is_checked()
    press_quickly(page, "Sequence length", "ArrowLeft", 1)
    settle(page, playground_view)
    assert url_value(page.url, "present") == 1, "the page's own link dropped presentation mode"
