"""AppTest runs of the Padding lab: the padding mask, the leak meter, sequence length and padding side."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import axis_ticktext, chart, heatmap_values, run_page

PAGE = "3_padding_lab.py"
PAD = "[PAD]"


def texts_shown(app) -> int:
    return len([line for line in app.session_state["pl_text"].splitlines() if line.strip()])


def item_view(app, item: int) -> tuple[list[str], np.ndarray]:
    """The tokens and the weights of the chosen head, as drawn for one text."""
    figure = chart(app, f"pl_heat_{item}")
    (weights,) = heatmap_values(figure)
    return axis_ticktext(figure), weights


def leak_values(app) -> np.ndarray:
    (values,) = heatmap_values(chart(app, "pl_leak_chart"))
    return values


@pytest.fixture
def app():
    return run_page(PAGE, timeout=120)


def test_padding_mask_on_gives_zero_pad_columns_and_no_leak_off_leaks(app):
    assert app.session_state["pl_padding"] is True
    assert app.session_state["pl_side"] == "left", "the lab starts with the decoder's padding side"
    assert texts_shown(app) == 3

    app.toggle(key="pl_padding").set_value(False).run()
    assert not app.exception
    leak = leak_values(app)
    assert leak.shape == (30, 9), "one cell per layer and head of smollm2"
    assert leak.max() > 0, "without the padding mask real tokens attend to pads"
    assert app.dataframe[0].value.to_numpy().max() > 0, "the table shows the same leak"
    tokens, weights = item_view(app, 0)
    pads = [i for i, token in enumerate(tokens) if token == PAD]
    real = [i for i, token in enumerate(tokens) if token != PAD]
    assert pads and real
    assert weights[np.ix_(real, pads)].sum() > 0
    np.testing.assert_allclose(weights[real].sum(axis=1), 1.0, atol=1e-5)  # the true weights, not hidden
    assert chart(app, "pl_heat_0").layout.shapes, "unmasked pads are shaded by an overlay"
    assert any("Top-1 next-token flips" in block.value for block in app.markdown), "the output change"

    app.toggle(key="pl_padding").set_value(True).run()
    assert not app.exception
    assert np.all(leak_values(app) == 0.0), "the leak meter reads exactly 0 with the padding mask"
    assert np.all(app.dataframe[0].value.to_numpy() == 0.0)
    padded = 0
    for item in range(3):
        tokens, weights = item_view(app, item)
        pads = [i for i, token in enumerate(tokens) if token == PAD]
        real = [i for i, token in enumerate(tokens) if token != PAD]
        padded += bool(pads)
        assert np.all(weights[np.ix_(real, pads)] == 0.0)
        np.testing.assert_allclose(weights[real].sum(axis=1), 1.0, atol=1e-5)
        assert not chart(app, f"pl_heat_{item}").layout.shapes
    assert padded == 2, "the two shorter sentences are padded"


def test_sequence_length_and_padding_side(app):
    for length in (6, 9):
        app.slider(key="pl_length").set_value(length).run()
        assert not app.exception
        for item in range(3):
            figure = chart(app, f"pl_heat_{item}")
            assert len(axis_ticktext(figure, "xaxis")) == length
            assert len(axis_ticktext(figure, "yaxis")) == length
            assert heatmap_values(figure)[0].shape == (length, length)
            assert heatmap_values(chart(app, f"pl_mask_{item}"))[0].shape == (length, length)

    left, _ = item_view(app, 0)
    assert left[0] == PAD and left[-1] != PAD, left
    app.radio(key="pl_side").set_value("right").run()
    assert not app.exception
    right, _ = item_view(app, 0)
    assert right[0] != PAD and right[-1] == PAD, right
    assert [t for t in left if t != PAD] == [t for t in right if t != PAD], "the same tokens, moved"
    assert left.count(PAD) == right.count(PAD) > 0


def test_wrong_number_of_sentences_warns_instead_of_failing(app):
    app.text_area(key="pl_text").set_value("Only one sentence here.").run()
    assert not app.exception
    assert app.warning and "padding" in app.warning[0].value
    assert not app.get("plotly_chart")

    app.text_area(key="pl_text").set_value("a\nb c\nd e f\ng h i j\nk l m n o").run()
    assert not app.exception
    assert any("5 lines were given; the first 4 are used" in info.value for info in app.info)
    assert app.text_area(key="pl_text").value == "a\nb c\nd e f\ng h i j\nk l m n o", (
        "the box keeps every line"
    )
    assert len([c for c in app.get("plotly_chart") if "pl_heat_" in c.proto.id]) == 4


def test_causal_mask_toggle_empties_the_upper_triangle_of_every_text(app):
    assert app.session_state["pl_causal"] is True, "smollm2 is a decoder"
    for causal in (False, True):
        app.toggle(key="pl_causal").set_value(causal).run()
        assert not app.exception
        for item in range(3):
            tokens, weights = item_view(app, item)
            real = [i for i, token in enumerate(tokens) if token != PAD]
            upper = [(q, k) for q in real for k in real if k > q]
            ahead = np.array([weights[q, k] for q, k in upper])
            if causal:
                assert np.all(ahead == 0.0), "causal on: no real token sees a later one"
            elif len(real) > 1:
                assert ahead.max() > 0, "causal off: real tokens see later ones"
            mask = heatmap_values(chart(app, f"pl_mask_{item}"))[0]
            assert mask.shape == weights.shape
