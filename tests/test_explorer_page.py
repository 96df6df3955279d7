"""AppTest runs of the Model explorer: each toggle re-runs the real model under that policy."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from apptest_helpers import axis_ticktext, chart, heatmap_values, run_page
from streamlit.testing.v1 import AppTest
from tests_support import ROOT

PAGE = "2_model_explorer.py"


@pytest.fixture(scope="module")
def app():
    return run_page(PAGE, timeout=180)


def grid_panels(app) -> list[np.ndarray]:
    return heatmap_values(chart(app, "ex_grid_chart"))


def test_default_view_shows_every_head_and_the_parity_line(app):
    assert app.session_state["ex_model"] == "smollm2"
    assert len(grid_panels(app)) == 9
    assert any("Parity" in caption.value and "max |Δ|" in caption.value for caption in app.caption)
    assert len(heatmap_values(chart(app, "ex_head_chart"))) == 1
    assert app.get("metric"), "the effect panel shows KL and flips"


def test_causal_toggle_reruns_the_model(app):
    app.toggle(key="ex_causal").set_value(False).run()
    assert not app.exception
    panels = grid_panels(app)
    upper = np.triu_indices(panels[0].shape[0], k=1)
    assert all(panel[upper].sum() > 0 for panel in panels), "without the mask every head sees the future"
    flips = [metric for metric in app.get("metric") if "flips" in metric.proto.label]
    assert flips and int(flips[0].proto.body) > 0, "seeing the future changes predictions"

    app.toggle(key="ex_causal").set_value(True).run()
    for panel in grid_panels(app):
        assert np.all(panel[upper] == 0.0)
        np.testing.assert_allclose(panel.sum(axis=1), 1.0, atol=1e-5)


def test_padding_toggle_zeroes_pad_columns(app):
    app.text_area(key="ex_text").set_value("The cat sat on the mat because it was tired.\nHi there").run()
    # Left padding: with right padding a causal model's real tokens never reach the pads anyway.
    app.radio(key="ex_side").set_value("left").run()
    app.selectbox(key="ex_item").set_value(1).run()
    tokens = axis_ticktext(chart(app, "ex_head_chart"))
    pads = [index for index, token in enumerate(tokens) if token == "[PAD]"]
    assert pads
    real = [index for index in range(len(tokens)) if index not in pads]
    app.toggle(key="ex_padding").set_value(False).run()
    assert any(panel[np.ix_(real, pads)].sum() > 0 for panel in grid_panels(app))
    app.toggle(key="ex_padding").set_value(True).run()
    for panel in grid_panels(app):
        assert np.all(panel[:, pads] == 0.0)
    assert tokens[0] == "[PAD]", "left padding puts the pads first"
    app.radio(key="ex_side").set_value("right").run()
    app.text_area(key="ex_text").set_value("The cat sat on the mat because it was tired.").run()


@pytest.mark.parametrize("length", [1, 4, 20])
def test_sequence_length_sets_tokens_on_each_axis(app, length):
    app.slider(key="ex_length").set_value(length).run()
    assert not app.exception
    figure = chart(app, "ex_head_chart")
    assert heatmap_values(figure)[0].shape == (length, length)
    # Every token is a row and a column (named on hover); the tick labels may be thinned to fit.
    assert len(figure.data[0].x) == len(figure.data[0].y) == length
    assert 1 <= len(axis_ticktext(figure, "xaxis")) <= length
    assert 1 <= len(axis_ticktext(figure, "yaxis")) <= length
    assert all(panel.shape == (length, length) for panel in grid_panels(app))


@pytest.mark.parametrize("stage", ["scores", "masked_scores", "weights"])
def test_stages_of_the_real_model(app, stage):
    app.slider(key="ex_length").set_value(8).run()
    app.radio(key="ex_stage").set_value(stage).run()
    assert not app.exception
    head = heatmap_values(chart(app, "ex_head_chart"))[0]
    upper = np.triu_indices(8, k=1)
    overlays = [trace for trace in chart(app, "ex_head_chart").data if trace.name == "masked"]
    if stage == "scores":
        assert np.isfinite(head[upper]).all(), "scores exist before the mask"
        assert not overlays, "scores come before the mask: nothing is greyed out"
    else:
        assert overlays, "masked cells are drawn grey"
        assert np.isnan(head[upper]).all() or (head[upper] == 0).all()
    app.radio(key="ex_stage").set_value("weights").run()


def test_encoder_and_url_state():
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=180)
    app.query_params.update({"model": "minilm", "layer": "99", "head": "-3", "causal": "1", "text": "a b c"})
    app.run()
    assert not app.exception
    assert app.session_state["ex_model"] == "minilm"
    assert app.session_state["ex_layer"] == 5, "an out-of-range layer falls back to the nearest valid one"
    panels = grid_panels(app)
    assert len(panels) == 12
    upper = np.triu_indices(panels[0].shape[0], k=1)
    assert all(np.all(panel[upper] == 0) for panel in panels), "causal imposed on an encoder"
    assert any("Link:" in info.value for info in app.info), "the bad head gets a visible note"


def test_long_text_makes_the_output_effect_opt_in():
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=180)
    app.query_params.update({"text": "the cat sat on the mat " * 30})  # about 180 tokens
    app.run()
    assert not app.exception
    assert app.session_state["ex_length"] > 128
    assert not app.get("metric"), "above 128 tokens the two extra forward passes wait for the user"
    assert any("Off by default above 128 tokens" in caption.value for caption in app.caption)
    app.toggle(key="ex_effect_long").set_value(True).run()
    assert not app.exception
    labels = [metric.proto.label for metric in app.get("metric")]
    assert any("KL" in label for label in labels) and any("flips" in label for label in labels)


def test_moving_through_the_layers_of_a_short_text_runs_no_model_and_shows_each_layer(monkeypatch):
    """Once rollout has captured every layer of a short text, the Layer slider draws each layer
    from that capture: no forward runs, and each grid equals the model's own attention of that
    layer (a fresh capture of it, outside the app)."""
    import gc
    import importlib

    from attention_viz.loading import load_model
    from attention_viz.policy import MaskPolicy

    capture_module = importlib.import_module("attention_viz.capture")  # the module, not the function
    text = "The cat sat on the mat because it was tired."
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=180)
    app.query_params["model"] = "minilm"
    app.query_params["text"] = text
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert gc.get_freeze_count() > 0, "the loaded model is frozen out of the collector's walk"
    forwards = []
    original = capture_module.run_forward
    monkeypatch.setattr(
        capture_module, "run_forward", lambda *args, **kwargs: forwards.append(1) or original(*args, **kwargs)
    )
    reference = capture_module.capture(load_model("minilm"), [text], policy=MaskPolicy(), effect=False)
    assert forwards, "the counter sees a capture's forward"
    forwards.clear()
    for layer in (1, 2, 5, 3):
        app.slider(key="ex_layer").set_value(layer).run()
        assert not app.exception
        expected = reference.layer(layer).weights[0]
        for head, panel in enumerate(grid_panels(app)):
            np.testing.assert_allclose(panel, expected[head].numpy(), atol=1e-6)
    assert forwards == [], f"{len(forwards)} forwards ran while moving through the layers"


def test_a_layer_switch_copies_one_layer_out_of_the_cache_not_every_layer(monkeypatch):
    """A cached result is copied out of the cache on every read, and a short text's capture of
    every layer is 18 MB for SmolLM2: when rollout captures every layer it also keeps each layer
    apart, so moving the Layer slider reads a capture of that layer alone. What is drawn is still
    that layer of the model (a fresh capture outside the app)."""
    from attention_viz.loading import load_model
    from attention_viz.policy import MaskPolicy
    from ui import cache

    capture_module = importlib.import_module("attention_viz.capture")
    text = "The cat sat on the mat because it was tired."
    # Other tests' texts may have pushed this one's layers out (a bounded cache): start from none.
    cache._rollout.clear()
    cache._layer_of_every.clear()
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=180)
    app.query_params["text"] = text
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    read = []
    original = cache._layer_of_every
    monkeypatch.setattr(
        cache, "_layer_of_every", lambda *args, **kwargs: read.append(original(*args, **kwargs)) or read[-1]
    )
    whole = []
    monkeypatch.setattr(cache, "capture", lambda *args, **kwargs: whole.append(args) or None)
    reference = capture_module.capture(load_model("smollm2"), [text], policy=MaskPolicy(), effect=False)
    for layer in (1, 29, 7):
        app.slider(key="ex_layer").set_value(layer).run()
        assert not app.exception, [e.value for e in app.exception]
        assert sorted(read[-1].layers) == [layer], "the switch read more than the shown layer"
        for head, panel in enumerate(grid_panels(app)):
            np.testing.assert_allclose(panel, reference.layer(layer).weights[0, head].numpy(), atol=1e-6)
    assert whole == [], "a layer switch read a whole capture"
    # Evicted, the layers come back all at once: the model runs once, then a switch reads a layer.
    original.clear()
    forwards = []
    run_forward = capture_module.run_forward
    monkeypatch.setattr(
        capture_module,
        "run_forward",
        lambda *args, **kwargs: forwards.append(1) or run_forward(*args, **kwargs),
    )
    for layer in (2, 5):
        app.slider(key="ex_layer").set_value(layer).run()
        assert not app.exception, [e.value for e in app.exception]
        assert sorted(read[-1].layers) == [layer]
    assert len(forwards) == 1, f"{len(forwards)} forwards after the layers were evicted"
    assert whole == [], "the whole capture is not kept in the cache"
    for head, panel in enumerate(grid_panels(app)):
        np.testing.assert_allclose(panel, reference.layer(5).weights[0, head].numpy(), atol=1e-6)


def test_a_toggle_runs_the_model_once_and_the_output_effect_is_the_models(monkeypatch):
    """A short text's mask toggle measures the output effect in the forward that captures every
    layer for rollout, against the default masks' output kept from the page's first run (its
    forward of every layer under those masks): one forward for the new masks, besides the shown
    layer's, from the first toggle on. The numbers shown are the model's own (an independent
    capture outside the app, which runs the default masks itself)."""
    import importlib

    from attention_viz.loading import load_model
    from attention_viz.policy import MaskPolicy

    capture_module = importlib.import_module("attention_viz.capture")  # the module, not the function
    texts = ["The cat sat on the mat because it was tired.", "Hi there"]
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=180)
    app.query_params.update({"model": "smollm2", "text": texts, "side": "left"})
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    forwards = []
    original = capture_module.run_forward
    monkeypatch.setattr(
        capture_module,
        "run_forward",
        lambda model, encoded, policy, layers, *rest, **kwargs: (
            forwards.append(len(layers)) or original(model, encoded, policy, layers, *rest, **kwargs)
        ),
    )

    def shown() -> tuple[float, int]:
        metrics = {metric.proto.label: metric.proto.body for metric in app.get("metric")}
        kl = next(value for label, value in metrics.items() if label.startswith("KL"))
        flips = next(value for label, value in metrics.items() if "flips" in label)
        return float(kl), int(flips)

    smollm2 = load_model("smollm2")
    for key, value, policy in [
        ("ex_causal", False, MaskPolicy(causal=False, padding_side="left")),
        ("ex_padding", False, MaskPolicy(causal=False, padding_mask=False, padding_side="left")),
    ]:
        forwards.clear()
        app.toggle(key=key).set_value(value).run()
        assert not app.exception, [e.value for e in app.exception]
        # The shown layer (layer 0: a partial forward) and every layer with the output; the
        # default masks' output was kept from the first run, so no forward of them (0 layers).
        assert forwards == [1, 30], forwards
        expected = capture_module.capture(smollm2, texts, layers=[0], policy=policy).effect
        position = app.session_state["ex_position"]
        kl, flips = shown()
        assert kl == pytest.approx(float(expected.kl[0, position]), abs=1e-4)
        assert flips == int(expected.flips[0]) > 0


def test_the_export_buttons_exist_only_while_export_is_open(app):
    """Export starts closed and then draws nothing inside it, so moving a picker re-sends no
    download buttons; opening it (a rerun) shows all four."""

    def buttons() -> list[str]:
        return [button.proto.label for button in app.get("download_button")]

    assert [expander.label for expander in app.expander if expander.label == "Export"] == ["Export"]
    assert buttons() == []
    app.session_state["ex_export"] = True
    app.run()
    assert not app.exception
    assert buttons() == [
        "Weights (CSV)",
        "Weights (NPZ)",
        "Head statistics (CSV)",
        "Figure (HTML, works offline)",
    ]
    app.session_state["ex_export"] = False
    app.run()
    assert buttons() == []


def test_rollout_under_a_sliding_window_shows_what_the_layers_reach_beyond_it():
    """With a window of 2 in every layer, rollout reaches further back than any one layer's mask
    allows: those cells are drawn with their values (a slow loop over a capture of every layer,
    outside the app), and only the cells no chain of layers reaches are grey."""
    from test_rollout import slow_rollout

    from attention_viz.capture import capture
    from attention_viz.loading import load_model
    from attention_viz.policy import MaskPolicy

    text = "The cat sat on the mat because it was tired."
    app = AppTest.from_file(str(ROOT / "pages" / PAGE), default_timeout=180)
    app.query_params["text"] = text
    app.query_params["window"] = "2"
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    (shown,) = heatmap_values(chart(app, "ex_rollout_chart"))
    model = load_model("smollm2")
    everything = capture(model, [text], policy=MaskPolicy(window=2), effect=False)
    expected = slow_rollout([everything.layer(layer).weights for layer in range(model.num_layers)])[0]
    np.testing.assert_allclose(shown, expected, atol=1e-5)
    beyond_window = np.tril(np.ones_like(expected, dtype=bool), k=-2)  # two or more tokens back
    assert (expected[beyond_window] > 0).all() and (shown[beyond_window] > 0).all()
