"""An open tab must not keep its capture alive: memory per tab stays small however many are open.

A function defined in a page keeps the page's whole namespace alive (a function holds its
module's globals). Widgets remember some functions past the run (a download button's data
callable, a button's callback, a select slider's ``format_func``), so one written in a page
would pin that tab's captures (about 300 MB at 2048 tokens) until the tab closes.
"""

from __future__ import annotations

import gc

from apptest_helpers import run_page

from attention_viz.capture import Capture


def live_captures() -> int:
    gc.collect()
    return sum(isinstance(thing, Capture) for thing in gc.get_objects())


def test_more_open_explorer_tabs_keep_no_more_captures_alive():
    tabs = [run_page("2_model_explorer.py", timeout=300) for _ in range(2)]
    before = live_captures()
    tabs += [run_page("2_model_explorer.py", timeout=300) for _ in range(3)]
    for tab in tabs:  # every tab draws its export buttons (deferred downloads) and widgets
        assert not tab.exception
    assert live_captures() <= before, "each open tab holds on to its captures"


def test_more_open_compare_tabs_keep_no_more_captures_alive():
    tabs = [run_page("5_compare.py", timeout=300) for _ in range(2)]
    for tab in tabs:
        tab.button(key="cmp_preset_padding").click().run()
    before = live_captures()
    more = [run_page("5_compare.py", timeout=300) for _ in range(3)]
    for tab in more:
        tab.button(key="cmp_preset_padding").click().run()
        assert not tab.exception
    assert live_captures() <= before, "each open tab holds on to its captures"
