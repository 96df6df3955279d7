"""AppTest runs of the Playground page: each control changes what the figures show."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import axis_ticktext, chart, heatmap_values, run_page

PAGE = "1_playground.py"


def weights_shown(app) -> list[np.ndarray]:
    return heatmap_values(chart(app, "pg_heads_chart"))


@pytest.fixture
def app():
    return run_page(PAGE)


def test_page_draws_one_panel_per_head_and_the_mask(app):
    panels = weights_shown(app)
    assert len(panels) == app.session_state["pg_heads"] == 4
    mask_chart = chart(app, "pg_mask_chart")
    assert len(heatmap_values(mask_chart)) == 1
    assert app.get("latex"), "the formula is shown"


def test_causal_mask_zeroes_upper_triangle(app):
    app.toggle(key="pg_causal").set_value(False).run()
    upper = np.triu_indices(weights_shown(app)[0].shape[0], k=1)
    assert any(panel[upper].max() > 0 for panel in weights_shown(app)), "without the mask the future is seen"

    app.toggle(key="pg_causal").set_value(True).run()
    assert not app.exception
    for panel in weights_shown(app):
        assert np.all(panel[upper] == 0.0)
        np.testing.assert_allclose(panel.sum(axis=1), 1.0, atol=1e-6)


def test_padding_mask_zeroes_pad_key_columns(app):
    app.toggle(key="pg_causal").set_value(False).run()
    # The second sentence ("the dog barked") is the padded one; show it.
    app.selectbox(key="pg_item").set_value(1).run()
    tokens = axis_ticktext(chart(app, "pg_heads_chart"))
    pad_columns = [index for index, token in enumerate(tokens) if token == "[PAD]"]
    assert pad_columns, tokens

    app.toggle(key="pg_padding").set_value(False).run()
    assert any(panel[:, pad_columns].sum() > 0 for panel in weights_shown(app)), (
        "pads get weight without the mask"
    )

    app.toggle(key="pg_padding").set_value(True).run()
    for panel in weights_shown(app):
        assert np.all(panel[:, pad_columns] == 0.0)


def test_sequence_length_sets_tokens_on_both_axes(app):
    for length in (1, 3, 9):
        app.slider(key="pg_length").set_value(length).run()
        assert not app.exception
        figure = chart(app, "pg_heads_chart")
        assert len(axis_ticktext(figure, "xaxis")) == length
        assert len(axis_ticktext(figure, "yaxis")) == length
        assert all(panel.shape == (length, length) for panel in heatmap_values(figure))
    tokens = axis_ticktext(chart(app, "pg_heads_chart"))
    assert tokens[-1] == "[PAD]", "sentences shorter than the length are padded"


@pytest.mark.parametrize("stage", ["scores", "masked_scores", "weights", "output"])
def test_every_stage_renders(app, stage):
    app.radio(key="pg_stage").set_value(stage).run()
    assert not app.exception
    panels = weights_shown(app)
    assert len(panels) == 4
    upper = np.triu_indices(panels[0].shape[0], k=1)
    overlays = [trace for trace in chart(app, "pg_heads_chart").data if trace.name == "masked"]
    if stage == "masked_scores":
        assert np.all(np.isnan(panels[0][upper])), "masked scores are -inf, drawn as masked cells"
    if stage == "scores":
        assert np.isfinite(panels[0][upper]).all(), "scores exist before the mask"
        assert not overlays, "scores come before the mask: nothing is greyed out"
    if stage in ("masked_scores", "weights"):
        assert overlays, "masked cells are drawn grey"


def test_heads_width_seed_controls(app):
    app.selectbox(key="pg_heads").set_value(8).run()
    app.selectbox(key="pg_width").set_value(64).run()
    assert len(weights_shown(app)) == 8
    before = weights_shown(app)[0]
    app.number_input(key="pg_seed").set_value(7).run()
    assert not np.allclose(before, weights_shown(app)[0])


def test_empty_text_shows_a_message_not_an_error(app):
    app.text_area(key="pg_text").set_value("   \n  ").run()
    assert not app.exception
    assert app.warning, "an empty box explains what to do"


def test_step_through_reveals_one_row_at_a_time(app):
    app.toggle(key="pg_stepping").set_value(True).run()
    first = weights_shown(app)[0]
    assert not np.isnan(first[0]).any() and np.isnan(first[1:]).all(), "only query row 0 is revealed"
    app.button(key="pg_next").click().run()
    app.button(key="pg_next").click().run()
    assert app.session_state["pg_step"] == 2
    shown = weights_shown(app)[0]
    assert not np.isnan(shown[:3]).any() and np.isnan(shown[3:]).all()
    app.button(key="pg_prev").click().run()
    assert app.session_state["pg_step"] == 1
    assert any("may attend to" in block.value for block in app.markdown)


def test_url_restores_state_and_survives_garbage():
    from streamlit.testing.v1 import AppTest
    from tests_support import ROOT

    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=60)
    app.query_params.update({"causal": "0", "length": "3", "heads": "2", "text": "a b c d\nx"})
    app.run()
    assert not app.exception
    assert app.session_state["pg_causal"] is False and app.session_state["pg_length"] == 3
    assert len(weights_shown(app)) == 2

    hostile = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=60)
    hostile.query_params.update(
        {"causal": "maybe", "length": "-5", "heads": "3", "seed": "1e99", "text": "x" * 100_000, "zzz": "1"}
    )
    hostile.run()
    assert not hostile.exception
    assert hostile.session_state["pg_causal"] is True and hostile.session_state["pg_heads"] == 4
    assert len(hostile.info) >= 4, "each ignored parameter gets a visible note"
