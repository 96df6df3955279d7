"""The sidebar's display settings follow the user from page to page."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.tests_support import ROOT

PADDING_LAB = str(ROOT / "pages" / "3_padding_lab.py")
PLAYGROUND = str(ROOT / "pages" / "1_playground.py")


def window_inputs(app: AppTest) -> list:
    return [box for box in app.number_input if box.key == "pl_window"]


def test_presentation_mode_and_palette_survive_page_changes():
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    app.run()
    app.switch_page(PADDING_LAB).run()
    assert window_inputs(app), "outside presentation mode the Padding lab shows its window input"

    app.switch_page(PLAYGROUND).run()
    app.toggle(key="presentation").set_value(True).run()
    other_palette = app.selectbox(key="palette").options[-1]
    app.selectbox(key="palette").set_value(other_palette).run()

    app.switch_page(PADDING_LAB).run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.toggle(key="presentation").value is True, "presentation mode was lost on a page change"
    assert app.selectbox(key="palette").value == other_palette, "the palette was lost on a page change"
    assert not window_inputs(app), "presentation mode hides secondary controls on the new page too"
