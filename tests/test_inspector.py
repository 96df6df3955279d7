"""The cell inspector: one cell's chain from q_i and k_j to w_ij, number by number.

Every number is checked against the trace it came from (a real model's capture, the
Playground's multi-head trace) to 1e-6, and the key of a grouped-query head against an
independent reference: the layer's own k_proj output, rotated by transformers' RoPE. The pages
are driven through their inputs and a link; a click's report (from the browser listener) is fed
to the callback that turns it into the inspected cell.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from apptest_helpers import ROOT, chart, decode_array, run_page
from streamlit.testing.v1 import AppTest

from attention_viz.capture import capture
from attention_viz.errors import UserFacingError
from attention_viz.figures import HIGHLIGHT_COLOUR
from attention_viz.inspector import default_cell, inspect_capture, inspect_playground
from attention_viz.inspector_figures import (
    chain_latex,
    mark_cell,
    output_figure,
    output_latex,
    softmax_figure,
    vector_figure,
)
from attention_viz.playground import run_playground
from attention_viz.policy import MaskPolicy
from ui.inspector import clicked_cell

TOLERANCE = 1e-6
TEXTS = ["The cat sat on the mat because it was tired.", "Hi there"]  # 11 and 2 tokens (+ 9 pads)
LAYER = 2
# The Playground's defaults (pages/1_playground.py).
SENTENCES = ["the cat sat on the mat", "the dog barked"]
PLAYGROUND_POLICY = MaskPolicy(causal=True, padding_mask=True, max_length=6, padding_side="right")


def close(a: float, b: float) -> bool:
    """Equal to 1e-6, relative for large numbers (float32 scores reach ~50)."""
    return abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))


def assert_chain_matches(cell, scores, masked_scores, weights, query_vectors, key_vectors) -> None:
    """Every number of ``cell`` against the trace's tensors of its head.

    Shapes: ``scores``, ``masked_scores``, ``weights`` ``(T, T)``; ``query_vectors``,
    ``key_vectors`` ``(T, d)``.
    """
    i, j = cell.query, cell.key
    assert torch.equal(cell.q, query_vectors[i]) and torch.equal(cell.k, key_vectors[j])
    assert torch.equal(cell.product, query_vectors[i].double() * key_vectors[j].double())
    assert close(cell.dot, float(query_vectors[i].double() @ key_vectors[j].double()))
    assert close(cell.dot * cell.scale, float(scores[i, j])), "q·k × scale is not the trace's score"
    assert cell.score == float(scores[i, j])
    assert cell.masked_score == float(masked_scores[i, j])
    assert cell.masked_score == cell.score + cell.bias
    assert torch.equal(cell.row_weights, weights[i]) and cell.weight == float(weights[i, j])
    assert abs(cell.softmax_weight - cell.weight) <= TOLERANCE, (
        "the chain does not end at the heatmap's weight"
    )
    # The denominator by a loop over the row's keys.
    by_loop = sum(math.exp(float(s) - cell.shift) for s in masked_scores[i] if math.isfinite(float(s)))
    assert close(cell.denominator, by_loop)


@pytest.fixture(scope="module")
def smollm2_run(smollm2):
    """A capture of layer ``LAYER`` and, recorded during the same forward, the layer's own keys
    before RoPE: ``(capture, (B, H_kv, T, d) keys)``."""
    recorded = {}
    k_proj = smollm2.model.model.layers[LAYER].self_attn.k_proj
    hook = k_proj.register_forward_hook(
        lambda module, args, output: recorded.setdefault("k", output.detach())
    )
    try:
        captured = capture(smollm2, TEXTS, layers=[LAYER], policy=MaskPolicy(), effect=False)
    finally:
        hook.remove()
    batch, length, _ = recorded["k"].shape
    head_dim = captured.layer(LAYER).key.shape[-1]
    keys = (
        recorded["k"].view(batch, length, smollm2.num_kv_heads, head_dim).transpose(1, 2)
    )  # (B, H_kv, T, d)
    return captured, keys


def test_a_grouped_query_cell_of_smollm2_equals_the_capture_number_by_number(smollm2_run):
    captured, _ = smollm2_run
    layer = captured.layer(LAYER)
    item, head, query, key = 0, 4, 7, 3
    cell = inspect_capture(captured, LAYER, item, head, query, key)
    assert cell.allowed and not cell.empty_row and cell.layer == LAYER
    assert cell.kv_head == 1 and cell.kv_group == (3, 4, 5) and cell.grouped
    assert cell.scale == layer.scale == 0.125
    assert (cell.query_token, cell.key_token) == ("it", "on") and cell.tokens == tuple(captured.tokens[item])
    assert_chain_matches(
        cell,
        layer.scores[item, head],
        layer.masked_scores[item, head],
        layer.weights[item, head],
        layer.query[item, head],
        layer.key[item, head],
    )


def test_a_grouped_query_key_is_its_kv_heads_key_after_rope(smollm2, smollm2_run):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    captured, keys = smollm2_run
    cos, sin = smollm2.model.model.rotary_emb(keys, captured.position_ids)  # (B, T, d) each
    _, rotated = apply_rotary_pos_emb(keys, keys, cos, sin)  # (B, H_kv, T, d)
    for head in (3, 4, 5, 8):
        cell = inspect_capture(captured, LAYER, 0, head, 6, 2)
        assert torch.allclose(cell.k, rotated[0, cell.kv_head, 2], atol=TOLERANCE, rtol=0), (
            f"head {head}: k is not KV head {cell.kv_head}'s key after RoPE"
        )
    other_group = inspect_capture(captured, LAYER, 0, 0, 6, 2)
    assert other_group.kv_head == 0 and not torch.equal(other_group.k, cell.k)


def test_a_causally_masked_cell_adds_minus_infinity_and_gets_weight_zero(smollm2_run):
    captured, _ = smollm2_run
    layer = captured.layer(LAYER)
    cell = inspect_capture(captured, LAYER, 0, 4, 2, 6)  # key 6 is in query 2's future
    assert not cell.allowed and cell.bias == float("-inf") and cell.masked_score == float("-inf")
    assert math.isfinite(cell.score), "the score before the mask exists"
    assert cell.numerator == 0.0 and cell.weight == 0.0 and cell.softmax_weight == 0.0
    assert_chain_matches(
        cell,
        layer.scores[0, 4],
        layer.masked_scores[0, 4],
        layer.weights[0, 4],
        layer.query[0, 4],
        layer.key[0, 4],
    )
    latex = chain_latex(cell)
    assert r"+ (-\infty) = -\infty" in latex and latex.endswith(r"= 0\end{aligned}")


def test_a_padding_key_of_minilm_is_masked_and_a_real_one_matches_the_capture(minilm):
    captured = capture(minilm, TEXTS, layers=[3], effect=False)
    layer = captured.layer(3)
    short = 1  # "Hi there": [CLS] hi there [SEP] and pads
    pad_key = len(captured.tokens[short]) - 1
    assert captured.tokens[short][pad_key] == "[PAD]"
    masked = inspect_capture(captured, 3, short, 7, 1, pad_key)
    assert not masked.allowed and masked.weight == 0.0 and masked.softmax_weight == 0.0
    assert masked.kv_group == (7,) and not masked.grouped, "BERT has a key per head"
    for item, head, query, key in [(0, 7, 1, 5), (short, 0, 2, 1), (0, 11, 8, 0)]:
        cell = inspect_capture(captured, 3, item, head, query, key)
        assert cell.allowed
        assert_chain_matches(
            cell,
            layer.scores[item, head],
            layer.masked_scores[item, head],
            layer.weights[item, head],
            layer.query[item, head],
            layer.key[item, head],
        )


@pytest.fixture(scope="module")
def playground():
    return run_playground(SENTENCES, PLAYGROUND_POLICY, num_heads=4, width=32, seed=0)


def test_a_playground_cell_and_its_output_row_equal_the_trace(playground):
    trace = playground.attention
    cell = inspect_playground(playground, 0, 1, 4, 2)
    assert cell.layer is None and cell.kv_group == (1,)
    assert math.isclose(cell.scale, 1 / math.sqrt(8))  # width 32 over 4 heads
    assert_chain_matches(
        cell,
        trace.heads.scores[0, 1],
        trace.heads.masked_scores[0, 1],
        trace.heads.weights[0, 1],
        trace.q[0, 1],
        trace.k[0, 1],
    )
    assert torch.equal(cell.output, trace.heads.output[0, 1, 4])
    by_loop = sum(float(trace.heads.weights[0, 1, 4, k]) * trace.v[0, 1, k].double() for k in range(6))
    assert torch.allclose(cell.output.double(), by_loop, atol=TOLERANCE, rtol=0)
    assert torch.allclose(cell.contributions.sum(0), by_loop, atol=TOLERANCE, rtol=0)
    assert torch.allclose(cell.contributions[2], cell.weight * trace.v[0, 1, 2].double(), atol=1e-12)


def test_an_empty_row_is_zero_by_rule_and_says_so(playground):
    left = run_playground(
        SENTENCES, PLAYGROUND_POLICY.with_changes(padding_side="left"), num_heads=4, width=32
    )
    assert left.tokens[1][:3] == ["[PAD]"] * 3
    cell = inspect_playground(left, 1, 2, 0, 0)  # a [PAD] query that may see only [PAD] keys
    assert cell.empty_row and not cell.row_allowed.any()
    assert cell.weight == 0.0 and cell.softmax_weight == 0.0 and cell.denominator == 0.0
    assert "every key of this row is masked" in chain_latex(cell)


def test_indices_out_of_range_say_which_positions_exist(playground, smollm2_run):
    with pytest.raises(UserFacingError, match="Query 6 does not exist: the sentence has positions 0–5"):
        inspect_playground(playground, 0, 0, 6, 0)
    with pytest.raises(UserFacingError, match="Head 4 does not exist"):
        inspect_playground(playground, 0, 4, 0, 0)
    with pytest.raises(UserFacingError, match="Layer 5 was not captured"):
        inspect_capture(smollm2_run[0], 5, 0, 0, 0, 0)
    with pytest.raises(TypeError):
        inspect_playground(playground, 0, 0, 1.0, 0)


def test_the_first_cell_shown_is_the_last_real_tokens_strongest_key(playground):
    weights = playground.attention.heads.weights[1, 0]  # "the dog barked" + 3 pads on the right
    pads = (playground.batch.attention_mask[1] == 0).tolist()
    query, key = default_cell(weights, pads)
    assert query == 2 and key == int(weights[2].argmax())


def test_figures_draw_the_cells_own_numbers_and_mark_its_key(playground):
    cell = inspect_playground(playground, 0, 1, 4, 2)
    vectors = vector_figure(cell)
    q_bars, k_bars, products = (decode_array(trace.y) for trace in vectors.data)
    assert np.allclose(q_bars, cell.q.numpy()) and np.allclose(k_bars, cell.k.numpy())
    assert np.allclose(products, cell.product.numpy()) and math.isclose(products.sum(), cell.dot)
    assert f"{cell.dot:.4f}" in vectors.layout.annotations[2].text

    row = softmax_figure(cell, width_px=600)
    scores, masked, weights = row.data
    assert np.allclose(decode_array(scores.y), cell.row_scores[:5].numpy()), "the 5 keys query 4 may see"
    assert list(decode_array(masked.x)) == [5] and list(masked.text) == ["−∞"]
    assert np.allclose(decode_array(weights.y), cell.row_weights.numpy())
    assert weights.marker.color[2] == HIGHLIGHT_COLOUR and weights.marker.color[1] != HIGHLIGHT_COLOUR
    assert any(f"{cell.weight:.4f}" in (note.text or "") for note in row.layout.annotations)

    output = output_figure(cell)
    assert np.allclose(decode_array(output.data[0].y), cell.output.numpy())
    assert np.allclose(decode_array(output.data[1].y), cell.contributions[2].numpy())
    assert output_latex(cell).startswith(r"o_{4} = \sum_{k} w_{4,k}\, v_{k} = ")

    latex = chain_latex(cell)
    for number in (cell.dot, cell.score, cell.weight):
        assert f"{number:.4f}" in latex
    assert r"\tfrac{1}{\sqrt{8}}" in latex


def test_mark_cell_outlines_one_cell_of_one_panel():
    import plotly.graph_objects as go

    figure = go.Figure()
    mark_cell(figure, 3, 1, panel=2)
    (shape,) = figure.layout.shapes
    assert (shape.xref, shape.yref, shape.x0, shape.x1, shape.y0, shape.y1) == (
        "x2",
        "y2",
        0.5,
        1.5,
        2.5,
        3.5,
    )


@pytest.mark.parametrize(
    "click, cell",
    [
        ({"x": "2: sat", "y": "4: the", "axis": "x"}, (0, 4, 2)),
        ({"x": "0: 0", "y": "11: it", "axis": "x3"}, (2, 11, 0)),
        ({"x": 7.0, "y": 130, "axis": "x"}, (0, 130, 7)),  # an image: positions
        ({"x": "sat", "y": "4: the"}, None),
        ({"x": "1: a", "y": "2: b", "axis": "y"}, None),
        ({"x": "1: a", "y": "nan: b"}, None),
        ("garbage", None),
        (None, None),
    ],
)
def test_a_clicks_report_names_its_panel_query_and_key(click, cell):
    assert clicked_cell(click) == cell


def _click_app():
    import streamlit as st

    from ui.inspector import take_click

    for name, value in (("pg_query", 0), ("pg_key", 0), ("pg_cell_head", 0)):
        st.session_state.setdefault(name, value)
    take_click("clicks", "pg", st.session_state.get("keys", True), True)
    st.write(
        f"{st.session_state['pg_cell_head']} {st.session_state['pg_query']} {st.session_state['pg_key']}"
    )


def test_the_click_callback_sets_the_inspected_head_and_cell():
    app = AppTest.from_function(_click_app)
    app.session_state["clicks"] = {"click": {"x": "2: sat", "y": "4: the", "axis": "x3"}}
    app.run()
    assert app.markdown[0].value == "2 4 2"
    app.session_state["clicks"] = {"click": {"x": "0: 0", "y": "1: cat", "axis": "x2"}}
    app.session_state["keys"] = False  # the output stage: columns are features, not keys
    app.run()
    assert app.markdown[0].value == "1 1 2"
    app.session_state["clicks"] = {"click": None}
    app.run()
    assert app.markdown[0].value == "1 1 2", "no click leaves the cell alone"


def _shown(app: AppTest) -> str:
    """Everything the inspector writes: its heading, notes and equations."""
    return "\n".join(
        [element.value for element in app.markdown]
        + [element.value for element in app.latex]
        + [element.value for element in app.info]
    )


def test_playground_inspector_shows_the_chain_of_the_chosen_cell(playground):
    app = run_page("1_playground.py")
    app.number_input(key="pg_query").set_value(4)
    app.number_input(key="pg_key").set_value(2)
    app.selectbox(key="pg_cell_head").set_value(1).run()
    assert not app.exception
    cell = inspect_playground(playground, 0, 1, 4, 2)
    shown = _shown(app)
    assert "Query 4 ` the ` → key 2 ` sat `, head 1" in shown
    for number in (f"{cell.dot:.4f}", f"{cell.score:.4f}", f"{cell.weight:.4f}"):
        assert number in shown, f"{number} is not shown"
    assert r"o_{4} = \sum_{k}" in shown
    marks = [s for s in chart(app, "pg_heads_chart").layout.shapes if s.xref == "x2"]
    assert [(s.x0, s.y0) for s in marks] == [(1.5, 3.5)], "the inspected cell is outlined on head 1"
    bars = chart(app, "pg_cell_vectors").data
    assert np.allclose(decode_array(bars[0].y), cell.q.numpy())
    assert app.query_params["query"] == "4" and app.query_params["key"] == "2"
    assert app.query_params["cellhead"] == "1"

    app.number_input(key="pg_key").set_value(5).run()  # in query 4's future
    masked = inspect_playground(playground, 0, 1, 4, 5)
    assert masked.weight == 0.0
    assert r"+ (-\infty) = -\infty" in _shown(app) and "the weight is exactly 0" in _shown(app)


def test_playground_inspector_opens_at_the_cell_of_a_link_within_range():
    app = AppTest.from_file(str(ROOT / "pages" / "1_playground.py"), default_timeout=60)
    app.query_params.update({"query": "3", "key": "1", "cellhead": "2", "heads": "4"})
    app.run()
    assert not app.exception
    assert (app.number_input(key="pg_query").value, app.number_input(key="pg_key").value) == (3, 1)
    assert app.selectbox(key="pg_cell_head").value == 2
    app.selectbox(key="pg_heads").set_value(2).run()  # fewer heads: head 2 no longer exists
    assert not app.exception and app.selectbox(key="pg_cell_head").value == 1
    app.text_area(key="pg_text").set_value("a b").run()  # shorter: query 3 no longer exists
    assert not app.exception
    assert (app.number_input(key="pg_query").value, app.number_input(key="pg_key").value) == (1, 1)


def test_explorer_inspector_shows_a_grouped_query_cell_of_smollm2(smollm2):
    app = run_page("2_model_explorer.py", timeout=300)
    app.selectbox(key="ex_head").set_value(4)
    app.number_input(key="ex_query").set_value(6)
    app.number_input(key="ex_key").set_value(2).run()
    assert not app.exception
    text = "The cat sat on the mat because it was tired."
    expected = capture(smollm2, [text], layers=[0], policy=MaskPolicy(max_length=11), effect=False)
    cell = inspect_capture(expected, 0, 0, 4, 6, 2)
    shown = _shown(app)
    assert "Query 6 ` because ` → key 2 ` sat `, layer 0, head 4" in shown
    assert "query head 4 reads the keys (and values) of KV head 1, which query heads 3, 4, 5 share" in shown
    for number in (f"{cell.dot:.4f}", f"{cell.score:.4f}", f"{cell.weight:.4f}"):
        assert number in shown, f"{number} is not shown"
    (mark,) = chart(app, "ex_head_chart").layout.shapes
    assert (mark.x0, mark.y0) == (1.5, 5.5)
    assert app.query_params["query"] == "6" and app.query_params["key"] == "2"


def test_the_inspector_says_rope_only_for_a_model_that_uses_it(smollm2, minilm):
    assert smollm2.rotary and not minilm.rotary, (
        "read from the config: Llama has rope settings, BERT absolute"
    )
    captions = {}
    for name in ("smollm2", "minilm"):
        app = AppTest.from_file(str(ROOT / "pages" / "2_model_explorer.py"), default_timeout=300)
        app.query_params.update({"model": name})
        app.run()
        assert not app.exception
        captions[name] = "\n".join(caption.value for caption in app.caption)
    assert "rotary position embedding (RoPE)" in captions["smollm2"]
    assert "absolute position embeddings" not in captions["smollm2"]
    assert "absolute position embeddings" in captions["minilm"]
    assert "RoPE" not in captions["minilm"]


def test_the_chain_writes_large_sums_as_powers_of_ten_never_as_python_exponents(playground):
    """A softmax denominator of 154,400 is 1.544 × 10^5: LaTeX would set "1.544e+05" as e plus 05."""
    cell = inspect_playground(playground, 0, 1, 4, 2)
    scores = torch.full_like(cell.row_scores, -math.inf)  # e^score is each key's term of the sum
    scores[cell.key] = math.log(365.0)
    scores[(cell.key + 1) % len(scores)] = math.log(154_400.0 - 365.0)
    cell = dataclasses.replace(cell, row_scores=scores, shift=0.0)
    latex = chain_latex(cell)
    assert r"\frac{365}{1.544 \times 10^{5}}" in latex
    assert "e+" not in latex and "e-" not in latex
    # The weight's line is split from its definition, so neither runs past a laptop's column.
    assert latex.count(r"\\") == 4
