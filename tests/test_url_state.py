"""The URL and the page agree: app-wide settings ride in every link, and reruns within a page
treat the URL as output only (a browser sends each rerun with the URL it holds, which lags
behind while a person presses keys faster than runs finish)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest
from tests_support import ROOT

import ui.state
from attention_viz.figures import PALETTES

PLAYGROUND = str(ROOT / "pages" / "1_playground.py")
PADDING_LAB = str(ROOT / "pages" / "3_padding_lab.py")
TIMEOUT = 60


def open_playground(**query: str) -> AppTest:
    app = AppTest.from_file(PLAYGROUND, default_timeout=TIMEOUT)
    app.query_params.update(query)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def link_notes(app: AppTest) -> list[str]:
    return [info.value for info in app.info if info.value.startswith("Link:")]


def test_a_link_with_present_on_opens_in_presentation_mode():
    app = open_playground(present="1")
    assert app.toggle(key="presentation").value is True
    assert not [box for box in app.selectbox if box.key == "pg_heads"], "secondary controls are hidden"
    assert app.query_params["present"] == "1", "the page's own link keeps it"


def test_switching_presentation_mode_on_puts_it_in_the_link_and_off_takes_it_out():
    app = open_playground()
    assert "present" not in app.query_params and "palette" not in app.query_params, (
        "an ordinary link leaves the default display settings out"
    )
    app.toggle(key="presentation").set_value(True).run()
    assert app.query_params["present"] == "1"
    app.toggle(key="presentation").set_value(False).run()
    assert "present" not in app.query_params


def test_a_link_carries_the_palette_and_a_garbled_one_falls_back_with_a_note():
    other = PALETTES[-1]
    assert other != PALETTES[0]
    app = open_playground(palette=other)
    assert app.selectbox(key="palette").value == other
    assert app.query_params["palette"] == other

    garbled = open_playground(palette="<img src=x>", present="maybe")
    assert garbled.selectbox(key="palette").value == PALETTES[0]
    assert garbled.toggle(key="presentation").value is False
    notes = link_notes(garbled)
    assert any("palette" in note for note in notes) and any("present" in note for note in notes), notes


def test_link_notes_stay_through_a_rerun_of_their_own_and_go_once_a_setting_changes():
    """A page reruns on its own right after opening (it reports the window's width); the
    notes about a garbled link must not flash by, nor follow the person's next change."""
    app = open_playground(causal="maybe", heads="999")
    first = link_notes(app)
    assert any("causal" in note for note in first) and any("heads" in note for note in first), first
    app.run()
    assert link_notes(app) == first
    app.slider(key="pg_length").set_value(3).run()
    assert link_notes(app) == []


def test_a_stale_url_from_an_earlier_run_does_not_undo_a_slider_move():
    app = open_playground()
    first = app.query_params["length"]  # the URL the page opened with
    app.slider(key="pg_length").set_value(4).run()
    assert app.query_params["length"] == "4"
    # The next rerun arrives with the URL of the first run: the browser had not yet heard of 4.
    app.slider(key="pg_length").set_value(3)
    app.query_params["length"] = first
    app.run()
    assert not app.exception
    assert app.slider(key="pg_length").value == 3, "the old URL was applied over the slider"
    assert app.query_params["length"] == "3", "the URL must follow the slider"
    assert app.get("plotly_chart"), "the page was drawn"


def test_a_moved_slider_is_not_sent_back_but_untouched_widgets_are():
    """Sending a widget's value back makes the browser adopt it: for the widget being moved that
    value is already old when it arrives (later presses would be undone)."""
    app = open_playground()
    app.slider(key="pg_length").set_value(3).run()
    assert app.slider(key="pg_length").proto.set_value is False
    assert app.toggle(key="pg_causal").proto.set_value is True, (
        "untouched widgets get their value again, so one the browser redrew is not left empty"
    )


def test_a_hidden_control_keeps_its_value_through_presentation_mode():
    app = open_playground()
    app.selectbox(key="pg_heads").set_value(2).run()
    app.toggle(key="presentation").set_value(True).run()
    app.slider(key="pg_length").set_value(3).run()  # runs in which "Heads" is not drawn
    app.toggle(key="presentation").set_value(False).run()
    assert app.selectbox(key="pg_heads").value == 2
    assert app.query_params["heads"] == "2"


def test_back_and_forward_apply_the_url_again(monkeypatch: pytest.MonkeyPatch):
    app = open_playground(present="1")
    app.slider(key="pg_length").set_value(3).run()
    # Back to an entry made before presentation mode and the slider move (defaults are left out).
    monkeypatch.setattr(ui.state, "_is_history_navigation", lambda: True)
    app.query_params.pop("present")
    app.query_params["length"] = "5"
    app.run()
    assert not app.exception
    assert app.slider(key="pg_length").value == 5
    assert app.toggle(key="presentation").value is False, "the entry had presentation mode off"


def test_returning_to_a_page_shows_it_as_it_was_left():
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    app.run()
    app.selectbox(key="pg_heads").set_value(2).run()
    app.slider(key="pg_length").set_value(3).run()
    # The sidebar opens a page with no query string.
    app.query_params.clear()
    app.switch_page(PADDING_LAB).run()
    assert not app.exception, [e.value for e in app.exception]
    app.query_params.clear()
    app.switch_page(PLAYGROUND).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="pg_heads").value == 2
    assert app.slider(key="pg_length").value == 3
    assert (app.query_params["heads"], app.query_params["length"]) == ("2", "3")
