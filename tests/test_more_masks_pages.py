"""AppTest runs of the new mask parts (prefix-LM, sinks, chunks, packing) on every page that offers
them, and of the Mask check page: what a person sets is what the pictures show."""

from __future__ import annotations

import numpy as np
import torch
from apptest_helpers import axis_ticktext, chart, heatmap_values, run_page

from attention_viz.policy import MaskPolicy

FIRST, SECOND = "The cat sat on the mat.", "Paris is lovely."


def test_explorer_packs_two_texts_into_one_row_and_the_document_mask_keeps_them_apart(smollm2):
    app = run_page("2_model_explorer.py", timeout=240)
    app.text_area(key="ex_text").set_value(f"{FIRST}\n{SECOND}").run()
    app.toggle(key="ex_pack").set_value(True).run()
    assert not app.exception and not app.error
    assert len(app.selectbox(key="ex_item").options) == 1, "packed texts share one row"
    figure = chart(app, "ex_head_chart")
    (weights,) = heatmap_values(figure)
    first, second = (len(ids) for ids in smollm2.tokenize([FIRST, SECOND])["input_ids"])
    assert weights.shape == (first + second, first + second), "one row holds both texts, no padding"
    documents = np.array([0] * first + [1] * second)
    across = documents[:, None] != documents[None, :]
    assert np.nansum(weights[across]) == 0.0, "with the document mask no weight crosses texts"
    app.toggle(key="ex_docmask").set_value(False).run()
    assert not app.exception
    (leaking,) = heatmap_values(chart(app, "ex_head_chart"))
    assert np.nansum(leaking[across]) > 0, "without it the second text reads the first"


def test_explorer_prefix_is_bidirectional_and_sinks_need_a_window():
    app = run_page("2_model_explorer.py", timeout=240)
    app.number_input(key="ex_prefix_lm").set_value(3).run()
    assert not app.exception
    (weights,) = heatmap_values(chart(app, "ex_head_chart"))
    assert weights[0, 1] > 0 and weights[0, 2] > 0, "prefix tokens see each other both ways"
    assert weights[0, 3] == 0 and weights[3, 4] == 0, "after the prefix: causal"
    assert app.number_input(key="ex_sinks").proto.disabled, "sinks are off until a window is set"
    app.number_input(key="ex_window").set_value(2).run()
    app.number_input(key="ex_sinks").set_value(1).run()
    assert not app.exception
    (weights,) = heatmap_values(chart(app, "ex_head_chart"))
    last = weights.shape[0] - 1
    assert weights[last, 0] > 0, "the sink stays visible to the last query"
    assert weights[last, 1] == 0 and weights[last, last - 1] > 0, "the rest is the window of 2"


def test_playground_chunks_and_packing_match_the_policy_drawing():
    app = run_page("1_playground.py", timeout=120)
    app.number_input(key="pg_chunk").set_value(2).run()
    assert not app.exception
    (mask,) = heatmap_values(chart(app, "pg_mask_chart"))
    length = mask.shape[0]
    expected = MaskPolicy(causal=True, chunk=2).build(torch.ones(1, length, dtype=torch.long))[0, 0]  # (T, T)
    np.testing.assert_array_equal(mask.astype(bool), expected.numpy())
    app.number_input(key="pg_chunk").set_value(0).run()
    app.toggle(key="pg_pack").set_value(True).run()
    assert not app.exception
    tokens = axis_ticktext(chart(app, "pg_mask_chart"))
    assert "[PAD]" not in tokens, "packed sentences fill one row"
    (mask,) = heatmap_values(chart(app, "pg_mask_chart"))
    first = len("the cat sat on the mat".split())
    assert mask.shape[0] == len(tokens) == first + len("the dog barked".split())
    assert not mask[first:, :first].any(), "the second sentence never sees the first"


def test_compare_packing_preset_shows_cross_document_attention_on_one_side():
    app = run_page("5_compare.py", timeout=240)
    app.button(key="cmp_preset_packing").click().run()
    assert not app.exception and not app.error
    state = app.session_state
    assert state["cmp_pack"] is True
    assert state["cmp_a_docmask"] is True and state["cmp_b_docmask"] is False
    (a,) = heatmap_values(chart(app, "cmp_a_chart"))
    (b,) = heatmap_values(chart(app, "cmp_b_chart"))
    assert a.shape == b.shape and a.shape[0] > 3
    assert not np.allclose(a, b), "B lets texts read each other"
    assert np.nanmax(np.abs(b - a)) > 0.01


def test_mask_check_page_agrees_with_transformers_and_shows_blocks_code_and_drawing():
    app = run_page("7_mask_check.py", timeout=240)
    assert not app.error
    assert any("Equal, cell for cell" in message.value for message in app.success)
    codes = [block.value for block in app.code]
    assert any("def mask_mod" in code or "mask_mod =" in code for code in codes), "the copyable mask_mod"
    assert any("■" in code and "⬚" in code for code in codes), "the drawing for slides"
    blocks = chart(app, "mc_block_chart")
    assert blocks.data, "the block view is drawn"
    app.toggle(key="mc_pack").set_value(True).run()
    app.number_input(key="mc_chunk").set_value(4).run()
    assert not app.exception and not app.error
    assert any("Equal, cell for cell" in message.value for message in app.success)
    assert app.query_params.get("pack") in ("1", "true", ["1"], ["true"]) or "pack" in app.query_params, (
        "the link carries the packing"
    )


def test_a_link_with_sinks_but_no_window_is_ignored_with_a_note_not_an_error():
    app = run_page("7_mask_check.py", timeout=240)
    app.session_state["mc_sinks"] = 2
    app.run()
    assert not app.exception and not app.error
    assert any("Ignored for now" in caption.value for caption in app.caption)
