"""AppTest runs of the Compare page: presets, one colour scale, the difference B − A."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import axis_ticktext, chart, heatmap_values, run_page

PAGE = "5_compare.py"
CHARTS = ("cmp_a_chart", "cmp_b_chart", "cmp_diff_chart")


def values(app, key: str) -> np.ndarray:
    (matrix,) = heatmap_values(chart(app, key))
    return matrix


@pytest.fixture
def app():
    return run_page(PAGE, timeout=120)


def test_causal_preset_difference_and_shared_colour_scale(app):
    app.button(key="cmp_preset_causal").click().run()
    assert not app.exception
    assert app.session_state["cmp_a_causal"] is True and app.session_state["cmp_b_causal"] is False

    a, b, difference = (values(app, key) for key in CHARTS)
    upper = np.triu_indices(a.shape[0], k=1)
    assert np.all(a[upper] == 0.0), "A (causal) never looks ahead"
    assert b[upper].max() > 0, "B (no causal mask) does"
    np.testing.assert_allclose(difference, b - a, atol=1e-6)

    for key in CHARTS[:2]:
        trace = chart(app, key).data[0]
        assert (trace.zmin, trace.zmax) == (0.0, 1.0), "both sides share the weights' scale"
    diff_trace = chart(app, "cmp_diff_chart").data[0]
    assert diff_trace.zmin == -diff_trace.zmax > -1.0001, "diverging scale centred at 0"
    table = app.dataframe[0].value
    assert table["side"].tolist() == ["A", "B"], "one output-effect row per side"
    assert table.loc[0, "mean KL vs default"] == 0.0, "A is the decoder's own masks"
    assert table.loc[1, "mean KL vs default"] > 0, "seeing the future changes the predictions"


def test_sequence_length_sets_both_axes_of_every_picture(app):
    for length in (4, 7):
        app.slider(key="cmp_length").set_value(length).run()
        assert not app.exception
        for key in CHARTS:
            figure = chart(app, key)
            assert len(axis_ticktext(figure, "xaxis")) == length
            assert len(axis_ticktext(figure, "yaxis")) == length
            assert values(app, key).shape == (length, length)


def test_padding_and_window_presets(app):
    app.button(key="cmp_preset_padding").click().run()
    assert not app.exception
    lines = app.session_state["cmp_text"].splitlines()
    assert len(lines) == 2 and len(lines[1].split()) < len(lines[0].split()), "a second, shorter text"
    assert app.session_state["cmp_item"] == 1 and app.session_state["cmp_side"] == "left"
    tokens = axis_ticktext(chart(app, "cmp_a_chart"))
    pads = [i for i, token in enumerate(tokens) if token == "[PAD]"]
    real = [i for i, token in enumerate(tokens) if token != "[PAD]"]
    assert pads, tokens
    a, b = values(app, "cmp_a_chart"), values(app, "cmp_b_chart")
    assert np.all(a[np.ix_(real, pads)] == 0.0), "with the padding mask, real tokens ignore pads"
    assert b[np.ix_(real, pads)].sum() > 0, "without it, they attend to them"

    app.button(key="cmp_preset_window").click().run()
    assert not app.exception
    assert app.session_state["cmp_b_window"] == 4 and app.session_state["cmp_a_window"] == 0
    b = values(app, "cmp_b_chart")
    far = np.tril_indices(b.shape[0], k=-4)  # keys 4 or more tokens back
    assert np.all(b[far] == 0.0), "window 4: each token sees itself and the 3 before it"
    assert values(app, "cmp_a_chart")[far].max() > 0


def test_each_side_has_its_own_live_toggles(app):
    assert app.session_state["cmp_a_causal"] is True, "A starts as the decoder's own causal mask"
    upper = None
    for causal in (False, True):
        app.toggle(key="cmp_a_causal").set_value(causal).run()
        assert not app.exception
        a = values(app, "cmp_a_chart")
        upper = np.triu_indices(a.shape[0], k=1)
        assert bool(a[upper].max() > 0) == (not causal)
        np.testing.assert_allclose(values(app, "cmp_diff_chart"), values(app, "cmp_b_chart") - a, atol=1e-6)

    app.text_area(key="cmp_text").set_value("The cat sat on the mat because it was tired.\nHi there").run()
    app.selectbox(key="cmp_item").set_value(1).run()
    app.radio(key="cmp_side").set_value("left").run()
    tokens = axis_ticktext(chart(app, "cmp_b_chart"))
    pads = [i for i, token in enumerate(tokens) if token == "[PAD]"]
    real = [i for i, token in enumerate(tokens) if token != "[PAD]"]
    assert pads and real
    for padding in (False, True):
        app.toggle(key="cmp_b_padding").set_value(padding).run()
        assert not app.exception
        b = values(app, "cmp_b_chart")
        assert bool(b[np.ix_(real, pads)].sum() > 0) == (not padding)


def test_a_preset_that_replaces_the_text_offers_it_back():
    app = run_page("5_compare.py")
    typed = "one two three\nfour five six\nseven eight nine"
    app.text_area(key="cmp_text").set_value(typed).run()
    app.button(key="cmp_preset_padding").click().run()
    assert not app.exception
    shown = app.session_state["cmp_text"]
    assert shown != typed and all(line in shown.splitlines() for line in typed.splitlines())
    assert any("Your text" in info.value for info in app.info)
    app.button(key="cmp_restore_text").click().run()
    assert not app.exception
    assert app.session_state["cmp_text"] == typed
    assert not [button for button in app.button if button.key == "cmp_restore_text"]
