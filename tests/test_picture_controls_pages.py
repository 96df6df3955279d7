"""AppTests of the picture controls: colour scales, zoom, step-through in the link, the HTML export."""

from __future__ import annotations

import numpy as np
import pytest
from apptest_helpers import ROOT, chart, decode_array, heatmap_values, run_page
from streamlit.testing.v1 import AppTest

LONG_TEXT = " ".join(f"word{i}" for i in range(40))


@pytest.fixture(scope="module")
def explorer() -> AppTest:
    return run_page("2_model_explorer.py", timeout=180)


def values_trace(figure):
    return next(trace for trace in figure.data if trace.name == "values")


@pytest.mark.parametrize(
    "scale, title", [("fixed", "weight"), ("row", "weight ÷ row max"), ("log", "log₁₀ weight")]
)
def test_colour_scale_is_named_on_the_colour_bar_and_hover_keeps_true_weights(explorer, scale, title):
    explorer.radio(key="ex_scale").set_value(scale).run()
    assert not explorer.exception
    focused = chart(explorer, "ex_head_chart")
    values = values_trace(focused)
    assert values.colorbar.title.text == title
    grid = chart(explorer, "ex_grid_chart")
    assert values_trace(grid).colorbar.title.text == title
    if scale == "fixed":
        assert values.customdata is None and "%{z:.4f}" in values.hovertemplate
        return
    colours, truth = decode_array(values.z), decode_array(values.customdata)
    assert "%{customdata:.4f}" in values.hovertemplate
    # The true weights of each real row still sum to 1, whatever the colours stand for.
    assert np.allclose(np.nansum(truth, axis=1), 1.0, atol=1e-4)
    if scale == "row":
        assert np.allclose(np.nanmax(colours, axis=1), 1.0)
    else:
        assert np.nanmax(colours) <= 0.0 and np.nanmin(colours) >= -4.0
    assert explorer.query_params.get("scale") == [scale] or explorer.query_params.get("scale") == scale
    explorer.radio(key="ex_scale").set_value("fixed").run()


def test_scale_choice_only_for_weights(explorer):
    explorer.radio(key="ex_stage").set_value("scores").run()
    assert not explorer.exception
    assert not [radio for radio in explorer.radio if radio.key == "ex_scale"]
    explorer.radio(key="ex_stage").set_value("weights").run()
    assert [radio for radio in explorer.radio if radio.key == "ex_scale"]


def test_zoom_draws_the_chosen_range_at_full_resolution_with_its_positions(explorer):
    explorer.text_area(key="ex_text").set_value(LONG_TEXT).run()
    assert not explorer.exception
    explorer.toggle(key="ex_zoom").set_value(True).run()
    explorer.slider(key="ex_zoom_queries").set_value((10, 19)).run()
    explorer.slider(key="ex_zoom_keys").set_value((5, 14)).run()
    assert not explorer.exception
    zoomed = chart(explorer, "ex_zoom_chart")
    (cells,) = heatmap_values(zoomed)
    assert cells.shape == (10, 10)
    assert values_trace(zoomed).y[0].startswith("10: ") and values_trace(zoomed).x[0].startswith("5: ")
    # The same numbers as the focused head at those positions.
    (full,) = heatmap_values(chart(explorer, "ex_head_chart"))
    assert np.allclose(cells, full[10:20, 5:15], equal_nan=True)
    explorer.toggle(key="ex_zoom").set_value(False).run()
    assert not [element for element in explorer.get("plotly_chart") if "ex_zoom_chart" in element.proto.id]


def test_step_through_and_its_row_come_from_the_link():
    app = AppTest.from_file(str(ROOT / "pages" / "1_playground.py"), default_timeout=60)
    app.query_params["stepping"] = "1"
    app.query_params["row"] = "2"
    app.run()
    assert not app.exception
    assert app.toggle(key="pg_stepping").value is True
    assert app.session_state["pg_step"] == 2
    figure = chart(app, "pg_heads_chart")
    rows_shown = [~np.isnan(panel).all(axis=1) for panel in heatmap_values(figure)]
    assert all(shown.tolist() == [True, True, True, False, False, False] for shown in rows_shown)
    assert [shape.y0 for shape in figure.layout.shapes][:1] == [1.5], "the current row is outlined"
    app.button(key="pg_next").click().run()
    assert app.query_params["row"] in ("3", ["3"])
    assert app.query_params["stepping"] in ("1", ["1"])


def test_playground_sentence_shown_and_padding_side_stay_in_presentation_mode():
    app = run_page("1_playground.py")
    app.toggle(key="presentation").set_value(True).run()
    assert not app.exception
    assert app.selectbox(key="pg_item").value == 0
    app.selectbox(key="pg_item").set_value(1).run()
    app.radio(key="pg_side").set_value("left").run()
    app.toggle(key="pg_padding").set_value(False).run()
    assert not app.exception
    (head0, *_rest) = heatmap_values(chart(app, "pg_heads_chart"))
    tokens = list(values_trace(chart(app, "pg_heads_chart")).x)
    pads = [index for index, label in enumerate(tokens) if label.endswith("[PAD]")]
    real = [index for index in range(len(tokens)) if index not in pads]
    assert pads == [0, 1, 2], "left padding puts the pads first"
    assert head0[np.ix_(real, pads)].sum() > 0, "with the padding mask off, real words attend to the pads"


def test_html_export_keeps_every_label_square_cells_and_its_settings(smollm2):
    from attention_viz.capture import capture
    from attention_viz.policy import MaskPolicy
    from attention_viz.render import layer_figure

    result = capture(
        smollm2, ["The cat sat on the mat because it was tired."], layers=[2], policy=MaskPolicy(causal=False)
    )
    figure = layer_figure(result, 2, 0)
    tokens = result.tokens[0]
    assert list(figure.layout.xaxis7.ticktext) == tokens, "every key label, upright or turned"
    assert list(figure.layout.yaxis.ticktext) == tokens, "every query label"
    assert "smollm2 · layer 2 · text 0 · padding" in figure.layout.title.text
    assert figure.layout.yaxis.scaleanchor == "x" and figure.layout.yaxis.constrain == "domain"


def deferred_downloads() -> dict[str, object]:
    """The download buttons' deferred files of the AppTest runs so far, by file name.

    AppTest gives each run a media file manager of its own and no public way to reach it; the
    managers are found among live objects. A file's data is built only when its callable runs.
    """
    import gc

    from streamlit.runtime.media_file_manager import MediaFileManager

    managers = [thing for thing in gc.get_objects() if isinstance(thing, MediaFileManager)]
    return {
        entry["filename"]: entry["callable"] for m in managers for entry in m._deferred_callables.values()
    }


def test_export_names_and_contents_record_the_masks(explorer):
    import io

    import pandas as pd

    # Each run has its own media file manager, which the garbage collector may free once the
    # next run replaces it, so each run's files are read right after it. Export is opened first:
    # its buttons (and their files) exist only while it is open.
    explorer.session_state["ex_export"] = True
    explorer.toggle(key="ex_causal").set_value(True).run()
    files = deferred_downloads()
    explorer.toggle(key="ex_causal").set_value(False).run()
    assert not explorer.exception
    files.update(deferred_downloads())
    length = explorer.slider(key="ex_length").value
    on, off = (f"smollm2-layer0-{causal}-padding-right-len{length}" for causal in ("causal", "nocausal"))
    for stem in (on, off):
        for suffix in (".csv", ".npz", "-heads.csv"):
            assert stem + suffix in files, f"{stem}{suffix} not offered: {sorted(files)}"
    assert f"smollm2-layer0-item0-nocausal-padding-right-len{length}.html" in files
    table = pd.read_csv(io.StringIO(files[off + ".csv"]()))
    assert {"model", "causal", "padding_mask", "window", "padding_side", "max_length", "layer"} <= set(table)
    assert set(table["causal"]) == {False} and set(table["model"]) == {"smollm2"}
    heads = pd.read_csv(io.StringIO(files[off + "-heads.csv"]()))
    assert set(heads["causal"]) == {False}
    arrays = np.load(io.BytesIO(files[off + ".npz"]()), allow_pickle=False)
    assert bool(arrays["causal"]) is False and str(arrays["model"]) == "smollm2"
    html = files[f"smollm2-layer0-item0-nocausal-padding-right-len{length}.html"]()
    title = "smollm2 · layer 0 · text 0 · padding"  # JSON inside the HTML may escape the dots
    assert title in html or title.replace("·", "\\u00b7") in html
    explorer.toggle(key="ex_causal").set_value(True).run()
