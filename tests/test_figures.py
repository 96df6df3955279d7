"""Figures tell the truth and fit their space: one trace per kind of cell, square cells, labels
that never overlap, values written in small matrices, colour scales named on their colour bar."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from apptest_helpers import decode_array

from attention_viz.figures import (
    ANNOTATE_MAX_TOKENS,
    FigureStyle,
    data_revision,
    head_grid,
    heatmap,
    mask_figure,
)
from attention_viz.geometry import LINE_HEIGHT, frame, label_width, ticks_for
from attention_viz.masks import causal_mask
from attention_viz.scales import LOG_FLOOR, scaled, stage_range

TOKENS = ["the", "cat", "sat", "[PAD]", "[PAD]"]
PADS = [False, False, False, True, True]


def padded_causal_weights() -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of a 5-token row whose last two tokens are padding, under causal + padding masks.

    Shape: both ``(5, 5)``; the second is the mask (True = may attend).
    """
    allowed = causal_mask(5)[0, 0] & ~torch.tensor(PADS)[None, :] & ~torch.tensor(PADS)[:, None]
    scores = torch.randn(5, 5, generator=torch.Generator().manual_seed(0))
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)
    return weights, allowed


def traces_by_name(figure) -> dict[str, np.ndarray]:
    return {trace.name: decode_array(trace.z) for trace in figure.data if trace.type == "heatmap"}


def test_every_cell_belongs_to_exactly_one_trace_so_hover_cannot_lie():
    weights, allowed = padded_causal_weights()
    figure = heatmap(weights, TOKENS, TOKENS, stage_range("weights", weights), allowed=allowed, pad_rows=PADS)
    traces = traces_by_name(figure)
    assert set(traces) == {"values", "masked", "padding row"}
    covered = sum((~np.isnan(z)).astype(int) for z in traces.values())
    assert np.all(covered == 1), "a cell is in no trace or in two (its hover could show the wrong one)"
    # The value trace holds exactly the allowed cells, with their true weights.
    values = traces["values"]
    assert np.array_equal(~np.isnan(values), allowed.numpy())
    assert np.allclose(values[allowed.numpy()], weights.numpy()[allowed.numpy()], atol=1e-7)
    # The [PAD] query rows are the empty rows; other masked cells are plain masked.
    assert np.array_equal(~np.isnan(traces["padding row"])[:, 0], np.array(PADS))
    assert all(trace.hoverongaps is False for trace in figure.data)


def test_hover_names_tokens_positions_value_and_why_a_cell_is_empty():
    weights, allowed = padded_causal_weights()
    figure = heatmap(weights, TOKENS, TOKENS, stage_range("weights", weights), allowed=allowed, pad_rows=PADS)
    templates = {trace.name: trace.hovertemplate for trace in figure.data}
    assert "query %{y}" in templates["values"] and "key %{x}" in templates["values"]
    assert "weight %{z:.4f}" in templates["values"]
    assert "masked" in templates["masked"] and "weight 0" in templates["masked"]
    assert "[PAD] query row" in templates["padding row"]
    assert list(figure.data[0].y[:2]) == ["0: the", "1: cat"], "rows are named with their positions"


def test_padding_query_rows_left_open_say_so():
    weights = torch.full((5, 5), 0.2)
    figure = heatmap(weights, TOKENS, TOKENS, stage_range("weights", weights), allowed=None, pad_rows=PADS)
    traces = {trace.name: trace for trace in figure.data}
    assert set(traces) == {"values", "padding query"}
    assert "[PAD] query row" in traces["padding query"].hovertemplate
    assert np.array_equal(~np.isnan(decode_array(traces["padding query"].z))[:, 0], np.array(PADS))


@pytest.mark.parametrize("scale, title", [("row", "weight ÷ row max"), ("log", "log₁₀ weight")])
def test_row_and_log_scales_colour_differently_but_hover_shows_true_weights(scale, title):
    weights, allowed = padded_causal_weights()
    value_range = stage_range("weights", weights, scale=scale)
    figure = heatmap(weights, TOKENS, TOKENS, value_range, allowed=allowed, pad_rows=PADS)
    values = next(trace for trace in figure.data if trace.name == "values")
    assert values.colorbar.title.text == title
    assert "%{customdata:.4f}" in values.hovertemplate
    truth = decode_array(values.customdata)
    cells = allowed.numpy()
    assert np.allclose(truth[cells], weights.numpy()[cells], atol=1e-7)
    colours = decode_array(values.z)
    if scale == "row":
        real = [0, 1, 2]
        assert np.allclose(np.nanmax(colours[real], axis=1), 1.0), "each row's largest weight is 1"
    else:
        assert np.allclose(colours[cells], np.log10(np.clip(weights.numpy()[cells], 10**LOG_FLOOR, None)))


def test_scaled_keeps_blank_cells_blank_and_zero_rows_zero():
    values = np.array([[0.5, 0.25, np.nan], [0.0, 0.0, 0.0]])
    row = scaled(values, stage_range("weights", torch.zeros(1), scale="row"))
    assert row[0, 0] == 1.0 and row[0, 1] == 0.5 and np.isnan(row[0, 2])
    assert np.all(row[1] == 0.0)


def test_fixed_scale_is_the_default_and_named_weight():
    value_range = stage_range("weights", torch.zeros(1))
    assert (value_range.zmin, value_range.zmax, value_range.colorbar_title) == (0.0, 1.0, "weight")


def test_small_matrices_carry_their_values_and_row_sums():
    weights, allowed = padded_causal_weights()
    figure = heatmap(
        weights, TOKENS, TOKENS, stage_range("weights", weights), allowed=allowed, pad_rows=PADS, width_px=600
    )
    values = next(trace for trace in figure.data if trace.name == "values")
    assert values.texttemplate == "%{text}"
    assert values.text[2][1] == f"{float(weights[2, 1]):.2f}"
    assert values.text[0][3] == "", "masked cells carry no number"
    sums = [a.text for a in figure.layout.annotations if a.text.startswith("Σ")]
    assert sums == [f"Σ {float(s):.2f}" for s in weights.sum(-1)]


def test_larger_matrices_carry_no_numbers():
    length = ANNOTATE_MAX_TOKENS + 1
    weights = torch.softmax(torch.randn(length, length), -1)
    tokens = [f"t{i}" for i in range(length)]
    figure = heatmap(weights, tokens, tokens, stage_range("weights", weights), width_px=1200)
    assert all(trace.text is None for trace in figure.data)
    assert not [a for a in figure.layout.annotations if a.text.startswith("Σ")]


def test_step_through_outlines_the_current_row_in_every_panel():
    weights = torch.softmax(torch.randn(4, 5, 5), -1)
    figure = head_grid(weights, TOKENS, TOKENS, stage_range("weights", weights), columns=2, highlight_row=2)
    shapes = [shape for shape in figure.layout.shapes if shape.type == "rect"]
    assert len(shapes) == 4
    assert all((shape.y0, shape.y1) == (1.5, 2.5) for shape in shapes)


@pytest.mark.parametrize("width", [300, 520, 900, 1500])
@pytest.mark.parametrize("length", [6, 30, 120])
def test_cells_are_square_and_fill_the_width(width, length):
    tokens = [f"tok{i}" for i in range(length)]
    layout = frame(tokens, tokens, width, 12)
    assert layout.panel_w == pytest.approx(layout.cell * length)
    assert layout.panel_h == pytest.approx(layout.cell * length)
    assert layout.width <= width
    if layout.panel_h < 900 - 1:  # not capped by the height limit: the width is used up
        assert layout.left + layout.right + layout.panel_w == pytest.approx(width, abs=1)


@pytest.mark.parametrize("cell", [3.0, 9.0, 17.0, 30.0, 80.0])
@pytest.mark.parametrize("font", [11, 19])
def test_tick_labels_never_overlap(cell, font):
    tokens = ["because", "a", "Ġtransformer", "猫", "[PAD]"] * 20
    for axis in ("x", "y"):
        ticks = ticks_for(tokens, cell, font, axis)
        gaps = np.diff(ticks.positions) * cell
        if axis == "y" or ticks.angle == -90:
            assert np.all(gaps >= font * LINE_HEIGHT - 1e-6), f"{axis}: stacked labels closer than a line"
        else:
            widest = max(label_width(text, font) for text in ticks.text)
            assert ticks.step == 1 and widest <= cell, "upright key labels wider than their cell"


def test_mask_figure_hover_says_what_each_cell_means():
    allowed = causal_mask(3)[0, 0]
    figure = mask_figure(allowed, ["a", "b", "c"], title="")
    trace = figure.data[0]
    assert trace.text[0][1] == "masked (M = −∞)" and trace.text[1][0] == "may attend (M = 0)"


def test_presentation_style_is_larger():
    assert FigureStyle().presentation().font_size > FigureStyle().font_size
    assert math.isclose(FigureStyle().tick_size, FigureStyle().font_size - 1)


@pytest.mark.parametrize(
    ("rows", "columns", "horizontal", "vertical", "heads"),
    [(4, 3, 0.05, 0.08, 12), (3, 3, 0.11, 0.07, 9), (1, 4, 0.02, 0.3, 4), (3, 5, 0.04, 0.06, 12)],
)
def test_grid_panels_sit_where_make_subplots_puts_them(rows, columns, horizontal, vertical, heads):
    """The head grid lays its panels out itself (one validated step instead of make_subplots and
    an update per axis): the domains, anchors and panel titles are make_subplots' own."""
    from plotly.subplots import make_subplots

    from attention_viz.figures import _grid_layout

    titles = [f"head {h}" for h in range(heads)]
    ours = _grid_layout(rows, columns, horizontal, vertical, titles, 14)
    theirs = make_subplots(
        rows=rows,
        cols=columns,
        subplot_titles=titles,
        horizontal_spacing=horizontal,
        vertical_spacing=vertical,
    ).layout
    for panel in range(1, rows * columns + 1):
        suffix = "" if panel == 1 else str(panel)
        for axis, other in (("xaxis", "y"), ("yaxis", "x")):
            expected = theirs[f"{axis}{suffix}"]
            assert ours[f"{axis}{suffix}"]["anchor"] == f"{other}{suffix}" == expected.anchor
            assert ours[f"{axis}{suffix}"]["domain"] == pytest.approx(list(expected.domain), abs=1e-12)
    assert [note["text"] for note in ours["annotations"]] == [note.text for note in theirs.annotations]
    for note, expected in zip(ours["annotations"], theirs.annotations, strict=True):
        assert (note["x"], note["y"]) == pytest.approx((expected.x, expected.y), abs=1e-12)
        assert (note["xanchor"], note["yanchor"]) == (expected.xanchor, expected.yanchor)


def test_images_use_the_colour_scale_and_grey_for_masked_cells():
    """A long matrix is drawn as a PNG: each cell's pixel is the colour scale's colour at its
    value (to within one step of the image's levels), masked cells the masked grey."""
    import base64
    import io

    from PIL import Image
    from plotly.colors import get_colorscale, sample_colorscale

    from attention_viz.figures import IMAGE_LEVELS, MASKED_RGB, _png_data_uri
    from attention_viz.scales import ValueRange

    values = np.linspace(0.0, 1.0, 40 * 40).reshape(40, 40)
    allowed = np.tril(np.ones((40, 40), dtype=bool))
    uri = _png_data_uri(values, allowed, ValueRange(0.0, 1.0, "Viridis", "weight"))
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB"))
    assert pixels.shape == (40, 40, 3)
    assert (pixels[~allowed] == MASKED_RGB).all()
    step = 1 / (IMAGE_LEVELS - 1)
    for value, pixel in zip(values[allowed][::97], pixels[allowed][::97], strict=True):
        level = round(value / step) * step  # the nearest of the image's levels
        expected = np.asarray(sample_colorscale(get_colorscale("Viridis"), [level], colortype="tuple")[0])
        assert np.abs(pixel - expected * 255).max() <= 1, (value, pixel, expected * 255)


@pytest.mark.parametrize(("shape", "max_side"), [((64, 64), 16), ((97, 130), 40), ((2050, 1030), 512)])
def test_downsampling_keeps_each_blocks_maximum_and_masks_only_fully_masked_blocks(shape, max_side):
    """Against a slow loop over the blocks: a pooled cell is its block's largest value (blank
    cells never win; a wholly blank block stays blank), masked only if its whole block is."""
    from attention_viz.figures import downsample

    rng = np.random.default_rng(1)
    values = rng.standard_normal(shape)
    values[rng.random(shape) < 0.3] = np.nan
    values[:9] = np.nan  # whole blank blocks
    allowed = rng.random(shape) < 0.4
    allowed[:, :11] = False  # whole masked blocks
    pooled, pooled_allowed, factor = downsample(values, allowed, max_side)
    assert factor == math.ceil(max(shape) / max_side)
    assert (
        pooled.shape == pooled_allowed.shape == (math.ceil(shape[0] / factor), math.ceil(shape[1] / factor))
    )
    for row in range(0, pooled.shape[0], 7):
        for col in range(0, pooled.shape[1], 5):
            block = values[row * factor : (row + 1) * factor, col * factor : (col + 1) * factor]
            expected = np.nan if np.isnan(block).all() else np.nanmax(block)
            np.testing.assert_equal(pooled[row, col], expected)
            mask_block = allowed[row * factor : (row + 1) * factor, col * factor : (col + 1) * factor]
            assert pooled_allowed[row, col] == mask_block.any()


def test_a_grid_pools_the_mask_its_heads_share_once_and_draws_what_pooling_each_head_draws():
    """A long grid's panels are max-pooled images. A mask every head shares is pooled once for
    them all; the figure is exactly the one drawn from the same mask given head by head (each
    pooled on its own), PNG for PNG."""
    heads, length = 3, 700
    generator = torch.Generator().manual_seed(2)
    allowed = causal_mask(length)[0, 0] & (torch.rand(length, length, generator=generator) < 0.9)
    weights = torch.softmax(torch.randn(heads, length, length, generator=generator), -1) * allowed
    value_range = stage_range("weights", weights)
    tokens = [f"t{i}" for i in range(length)]

    def grid(mask: torch.Tensor):
        return head_grid(weights, tokens, tokens, value_range, allowed=mask, columns=3, max_side=128)

    shared, per_head = grid(allowed), grid(allowed.expand(heads, -1, -1))
    sources = [trace.source for trace in shared.data if trace.type == "image"]
    assert len(sources) == heads and len(set(sources)) == heads  # one pooled image per head
    assert shared.to_json() == per_head.to_json()


def test_the_app_draws_without_validation_what_plotly_validates(monkeypatch):
    """The app builds figures without plotly's validation (figure_of); the same figure built with
    it is the same JSON, so skipping it changes nothing that is drawn."""
    import json

    import plotly.graph_objects as go

    from attention_viz import figures

    assert figures.VALIDATE_FIGURES, "tests/conftest.py turns validation on for the tests"
    monkeypatch.setattr(figures, "VALIDATE_FIGURES", False)  # as in the app
    weights, allowed = padded_causal_weights()
    value_range = stage_range("weights", weights)
    built = [
        heatmap(weights, TOKENS, TOKENS, value_range, allowed=allowed, pad_rows=PADS, title="t"),
        head_grid(torch.stack([weights, weights.T]), TOKENS, TOKENS, value_range, allowed=allowed, columns=2),
    ]
    for figure in built:
        spec = json.loads(figure.to_json())
        assert "template" not in spec["layout"], "the app's figures carry their own look"
        validated = json.loads(go.Figure(spec).to_json())  # plotly checks and writes out every property
        validated["layout"].pop("template")  # the one thing it adds: its default template
        assert validated == spec


def test_a_figures_data_revision_changes_with_its_data_and_only_with_it():
    """Plotly redraws a chart's data only when ``layout.datarevision`` changes: equal data must
    give an equal revision (Streamlit's second render is then cheap) and other data another one
    (never a stale picture), whatever else in the layout differs."""
    weights = torch.softmax(torch.randn(6, 6), dim=-1)
    tokens = [f"t{i}" for i in range(6)]
    value_range = stage_range("weights", weights, "Blues")
    first = heatmap(weights, tokens, tokens, value_range)
    again = heatmap(weights.clone(), tokens, tokens, value_range, width_px=500)
    assert first.layout.datarevision == again.layout.datarevision
    assert first.layout.width != again.layout.width
    changed = weights.clone()
    changed[3, 2] += 1e-6
    assert heatmap(changed, tokens, tokens, value_range).layout.datarevision != first.layout.datarevision
    other_tokens = heatmap(weights, tokens[:-1] + ["other"], tokens, value_range)
    assert other_tokens.layout.datarevision != first.layout.datarevision
    assert data_revision([{"z": np.zeros(3)}]) != data_revision([{"z": np.zeros(4)}])


def test_a_figures_bars_are_sent_as_plain_lists_and_its_matrices_as_binary():
    """Streamlit draws every new chart twice; plotly.js takes a binary-coded coordinate array for
    new data each time, so a bar chart sent that way was recomputed and redrawn whole on the second
    render. figure_of sends one-dimensional arrays as JSON lists (the same numbers, every digit of
    a double) and keeps matrices binary (a heatmap's z: half the bytes as float32)."""
    import json

    from attention_viz.figures import figure_of, trace

    heights = np.random.default_rng(0).standard_normal(64)
    colours = np.where(heights >= 0, "#b2182b", "#2166ac")
    matrix = np.random.default_rng(1).random((4, 4)).astype(np.float32)
    figure = figure_of(
        [
            trace("bar", x=np.arange(64), y=heights, marker={"color": colours, "line": {"width": 0.5}}),
            trace("heatmap", z=matrix),
        ],
        {},
    )
    bars, cells = json.loads(figure.to_json())["data"]
    assert bars["x"] == list(range(64))
    assert bars["y"] == heights.tolist(), "every bar's height, exactly"
    assert bars["marker"]["color"] == colours.tolist()
    assert "bdata" in cells["z"], "a matrix stays binary"
    assert np.array_equal(decode_array(cells["z"]), matrix)


@pytest.mark.parametrize("width, tiny", [(700, True), (4000, False)])
def test_a_grids_cells_too_small_to_point_at_leave_masked_cells_to_a_grey_shape(width, tiny):
    """A grid whose cells are narrower than MIN_POINTED_CELL_PX draws masked cells with one grey
    rectangle under each panel's cells instead of a 'masked' trace (one image less per panel for
    the browser); the picture is the same: every allowed cell in the values trace with its weight,
    every masked cell in no trace, over the grey. With larger cells the masked trace stays (its
    hover says why the cell is grey)."""
    from apptest_helpers import heatmap_values

    from attention_viz.figures import MASKED_COLOUR, MIN_POINTED_CELL_PX

    heads, length = 3, 64
    allowed = causal_mask(length)[0, 0]
    scores = torch.randn(heads, length, length, generator=torch.Generator().manual_seed(0))
    weights = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
    tokens = [f"t{i}" for i in range(length)]
    figure = head_grid(
        weights, tokens, tokens, stage_range("weights", weights), allowed=allowed, width_px=width, columns=3
    )
    panel_px = figure.layout.xaxis.domain[1] * (
        figure.layout.width - figure.layout.margin.l - figure.layout.margin.r
    )
    assert (panel_px / length < MIN_POINTED_CELL_PX) == tiny
    names = [trace.name for trace in figure.data]
    grey = [shape for shape in figure.layout.shapes if shape.fillcolor == MASKED_COLOUR]
    if not tiny:
        assert names.count("masked") == heads and not grey
        return
    assert names == ["values"] * heads, "no masked trace in a grid of tiny cells"
    assert len(grey) == heads
    for panel, shape in enumerate(grey, start=1):
        suffix = "" if panel == 1 else str(panel)
        assert (shape.xref, shape.yref, shape.layer) == (f"x{suffix}", f"y{suffix}", "below")
        assert (shape.x0, shape.x1, shape.y0, shape.y1) == (-0.5, length - 0.5, -0.5, length - 0.5)
        assert shape.line.width == 0
    for head, trace in enumerate(figure.data):
        values = decode_array(trace.z)
        assert np.array_equal(~np.isnan(values), allowed.numpy()), (
            "the values trace holds the allowed cells only"
        )
        assert np.allclose(values[allowed.numpy()], weights[head].numpy()[allowed.numpy()], atol=1e-7)
    # Read as a person reads it: masked cells are grey, weight 0.
    for head, panel in enumerate(heatmap_values(figure)):
        np.testing.assert_allclose(panel, weights[head].numpy(), atol=1e-7)
