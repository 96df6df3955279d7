"""AppTest runs of the Head gallery page: statistics, thumbnails, typical heads, opening the explorer."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from apptest_helpers import ROOT, chart, run_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from attention_viz.stats import STAT_COLUMNS

PAGE = "4_head_gallery.py"
TIMEOUT = 180
COLUMNS = ["layer", "head", "kv_head", "entropy", "distance", "sink", "previous", "padding"]
# Two pages routed the way app.py routes them (absolute paths, so the entry file can live anywhere).
NAVIGATION = f"""
import streamlit as st
st.navigation([
    st.Page({str(ROOT / "pages" / PAGE)!r}, title="Head gallery", default=True),
    st.Page({str(ROOT / "pages" / "2_model_explorer.py")!r}, title="Model explorer"),
]).run()
"""
# Expected ranking of each button, computed here with numpy, independently of attention_viz.gallery.
RANKED_BY = {"previous": ("previous", True), "sink": ("sink", True), "broad": ("entropy", True)}
RANKED_BY["sharp"] = ("entropy", False)


def table_element(app: AppTest, which: str):
    """``"stats"``: the table of every head; ``"typical"``: the ranked heads (it has a ``rank`` column).

    (st.dataframe without selection keeps its ``key`` out of the element id, so AppTest cannot
    find a table by key.)
    """
    matches = [frame for frame in app.dataframe if ("rank" in frame.value.columns) == (which == "typical")]
    assert len(matches) == 1, f"expected one {which} table, found {len(matches)}"
    return matches[0]


def table(app: AppTest, which: str) -> pd.DataFrame:
    return table_element(app, which).value


def thumbnail_image(app: AppTest) -> np.ndarray:
    """The pixels of the one image that holds every head's thumbnail."""
    figure = chart(app, "hg_thumbs_chart")
    images = [trace for trace in figure.data if trace.type == "image"]
    assert len(images) == 1, "every head is drawn in one image"
    data = base64.b64decode(images[0].source.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def grid_shape(image: np.ndarray, layers: int, heads: int) -> int:
    """The thumbnail side C implied by an image of ``layers × heads`` tiles with 1-px separators."""
    height, width = image.shape[:2]
    cell = (height + 1) // layers - 1
    assert (height, width) == (layers * (cell + 1) - 1, heads * (cell + 1) - 1), image.shape
    return cell


def expected_ranking(stats: pd.DataFrame, kind: str, count: int = 6) -> list[tuple[int, int]]:
    column, largest = RANKED_BY[kind]
    values = stats[column].to_numpy()
    order = np.lexsort((stats["head"].to_numpy(), stats["layer"].to_numpy(), -values if largest else values))
    return [(int(stats["layer"].iloc[i]), int(stats["head"].iloc[i])) for i in order[:count]]


def open_buttons(app: AppTest) -> list:
    return [
        button
        for button in app.button
        if (button.key or "").startswith("hg_open_") and button.key != "hg_open_any"
    ]


@pytest.fixture
def app() -> AppTest:
    return run_page(PAGE, timeout=TIMEOUT)


def test_page_shows_every_head_of_smollm2(app):
    stats = table(app, "stats")
    assert list(stats.columns) == COLUMNS
    assert len(stats) == 270 and set(zip(stats["layer"], stats["head"], strict=True)) == {
        (layer, head) for layer in range(30) for head in range(9)
    }
    tokens = app.session_state["hg_length"]
    assert grid_shape(thumbnail_image(app), 30, 9) == tokens, "one tile per head, T×T pixels each"
    figure = chart(app, "hg_thumbs_chart")
    assert list(figure.layout.xaxis.ticktext) == [f"head {h}" for h in range(9)]
    assert list(figure.layout.yaxis.ticktext) == [f"layer {layer}" for layer in range(30)]
    # Number formats and help texts come from STAT_COLUMNS.
    config = json.loads(table_element(app, "stats").proto.columns)
    for name, help_text in STAT_COLUMNS.items():
        assert config[name]["help"] == help_text
        assert config[name]["type_config"]["format"] == "%.3f"
    assert app.toggle(key="hg_causal").value is True, "a decoder starts causal"


def test_minilm_has_72_heads(app):
    app.selectbox(key="hg_model").set_value("minilm").run()
    assert not app.exception
    stats = table(app, "stats")
    assert len(stats) == 72 and stats["layer"].max() == 5 and stats["head"].max() == 11
    grid_shape(thumbnail_image(app), 6, 12)
    assert app.toggle(key="hg_causal").value is False, "an encoder starts without the causal mask"


def test_causal_mask_off_changes_statistics(app):
    before = table(app, "stats")
    app.toggle(key="hg_causal").set_value(False).run()
    assert not app.exception
    after = table(app, "stats")
    assert not np.allclose(before["previous"], after["previous"])
    # Seeing the whole sentence, heads stop parking their mass on the first token and spread out.
    assert after["sink"].mean() < before["sink"].mean() - 0.2
    assert after["entropy"].mean() > before["entropy"].mean()
    # The thumbnails lose their grey upper triangle.
    image = thumbnail_image(app)
    assert not (image == (212, 212, 212)).all(-1).any(), "no masked cell is left"


def test_padding_mask_decides_attention_to_padding(app):
    # Left padding puts the pads before the short text's tokens, where a causal decoder can see them.
    app.text_area(key="hg_text").set_value(
        "A much longer first sentence that needs quite a few more tokens than the other.\nShort one."
    ).run()
    app.radio(key="hg_side").set_value("left").run()
    assert (table(app, "stats")["padding"] == 0).all(), "padding mask on: no mass on pads"

    app.toggle(key="hg_padding").set_value(False).run()
    assert not app.exception
    padding = table(app, "stats")["padding"]
    assert (padding > 0).any() and padding.max() > 0.01, "padding mask off: real tokens read the pads"

    app.toggle(key="hg_padding").set_value(True).run()
    assert (table(app, "stats")["padding"] == 0).all()


def test_sequence_length_sets_thumbnail_size(app):
    for length in (5, 24):
        app.slider(key="hg_length").set_value(length).run()
        assert not app.exception
        assert grid_shape(thumbnail_image(app), 30, 9) == length
        assert any(f"{length} tokens" in caption.value for caption in app.caption)
        assert len(table(app, "stats")) == 270


@pytest.mark.parametrize("kind", ["previous", "sink", "broad", "sharp"])
def test_typical_head_buttons_rank_heads(app, kind):
    stats = table(app, "stats")
    app.button(key=f"hg_pick_{kind}").click().run()
    assert not app.exception
    picked = table(app, "typical")
    shown = list(zip(picked["layer"], picked["head"], strict=True))
    assert shown == expected_ranking(stats, kind)
    assert list(picked["rank"]) == list(range(1, 7))
    # Their larger thumbnails, their outlines in the gallery and one explorer button each.
    larger = chart(app, "hg_typical_chart")
    assert len([trace for trace in larger.data if trace.type == "heatmap" and trace.name != "masked"]) == 6
    assert len(chart(app, "hg_thumbs_chart").layout.shapes) == 6
    # (Two columns of buttons: AppTest lists them column by column, so compare as sets.)
    assert {button.label for button in open_buttons(app)} == {
        f"Open layer {layer} head {head} in the explorer" for layer, head in shown
    }
    assert app.query_params["kind"] == kind, "the choice is part of the shareable link"


def test_presentation_mode_hides_secondary_controls(app):
    assert app.number_input(key="hg_window") and app.radio(key="hg_side")
    app.toggle(key="presentation").set_value(True).run()
    assert not app.exception
    keys = {widget.key for widget in (*app.number_input, *app.radio, *app.button)}
    assert not keys & {"hg_window", "hg_side", "hg_layer", "hg_head", "hg_open_any"}
    assert app.toggle(key="hg_causal") and app.slider(key="hg_length"), "the mask controls stay"
    assert len(table(app, "stats")) == 270


def test_a_shared_link_restores_the_view():
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=TIMEOUT)
    app.query_params.update({"model": "minilm", "kind": "sharp", "causal": "1", "length": "7"})
    app.run()
    assert not app.exception
    assert len(table(app, "stats")) == 72
    assert app.toggle(key="hg_causal").value is True
    assert grid_shape(thumbnail_image(app), 6, 12) == 7
    assert len(table(app, "typical")) == 6


def navigation_app() -> AppTest:
    app = AppTest.from_string(NAVIGATION, default_timeout=TIMEOUT)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value == "Head gallery"
    return app


def test_open_button_switches_to_the_explorer_on_that_head():
    """AppTest follows st.switch_page: the same run ends on the explorer, with its URL applied."""
    app = navigation_app()
    app.slider(key="hg_length").set_value(12).run()
    app.button(key="hg_pick_previous").click().run()
    (layer, head) = table(app, "typical")[["layer", "head"]].iloc[1]
    text = app.session_state["hg_text"]

    next(b for b in open_buttons(app) if b.key == f"hg_open_{layer}_{head}").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert [title.value for title in app.title] == ["Model explorer"]
    params = app.query_params
    assert (params["model"], params["text"], params["layer"], params["head"]) == (
        "smollm2",
        text,
        str(layer),
        str(head),
    )
    assert (params["causal"], params["padding"], params["length"]) == ("1", "1", "12")
    # The explorer really shows that head under those masks.
    state = app.session_state
    assert (state["ex_layer"], state["ex_head"], state["ex_length"], state["ex_causal"]) == (
        layer,
        head,
        12,
        True,
    )


def test_open_any_head_switches_with_the_masks():
    app = navigation_app()
    app.toggle(key="hg_causal").set_value(False).run()
    app.number_input(key="hg_layer").set_value(29).run()
    app.number_input(key="hg_head").set_value(8).run()
    app.button(key="hg_open_any").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert [title.value for title in app.title] == ["Model explorer"]
    state = app.session_state
    assert (state["ex_layer"], state["ex_head"], state["ex_causal"]) == (29, 8, False)
    assert app.query_params["causal"] == "0"


def test_opening_another_model_keeps_the_causal_setting_of_the_link():
    app = AppTest.from_string(NAVIGATION.replace("default=True", ""), default_timeout=TIMEOUT)
    app.run()  # no default: the gallery (first page) opens
    app.switch_page(str(ROOT / "pages" / "2_model_explorer.py")).run()  # the explorer sees smollm2
    assert app.session_state["ex_model"] == "smollm2"
    app.switch_page(str(ROOT / "pages" / PAGE)).run()
    app.selectbox(key="hg_model").set_value("minilm").run()
    app.toggle(key="hg_causal").set_value(True).run()  # an encoder, made causal on purpose
    assert app.query_params["causal"] == "1", "the link the gallery sends says causal on"
    app.button(key="hg_open_any").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert [title.value for title in app.title] == ["Model explorer"]
    assert app.session_state["ex_model"] == "minilm"
    assert app.session_state["ex_causal"] is True
