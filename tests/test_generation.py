"""Generation one token at a time: the rows ``generate`` computes with its KV cache are the rows of
one full forward, they would go stale without the causal mask, and the page steps through them."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from apptest_helpers import ROOT, chart, heatmap_values
from streamlit.testing.v1 import AppTest

from attention_viz import hooks
from attention_viz.errors import UserFacingError
from attention_viz.figures import stage_range
from attention_viz.generation import MAX_NEW_TOKENS, MAX_PROMPT_TOKENS, STALE_TOLERANCE, generate_stepwise
from attention_viz.generation_figures import (
    NOT_YET,
    cache_figure,
    candidates_figure,
    stale_figure,
    step_heatmap,
)

PROMPT = "Attention lets every token look back at"
LAYER = 15  # deep enough that every cached key and value depends on the mask of earlier layers
NEW_TOKENS = 8
PAGE = str(ROOT / "pages" / "8_generation.py")
TIMEOUT = 300


@pytest.fixture(scope="module")
def generated(smollm2):
    return generate_stepwise(smollm2, PROMPT, layer=LAYER, max_new_tokens=NEW_TOKENS)


@pytest.fixture(scope="module")
def reference(smollm2):
    """A copy of SmolLM2 running transformers' own attention (our registered function is not in it)."""
    model = copy.deepcopy(smollm2.model)
    yield model
    del model


def test_each_step_adds_its_query_rows_and_one_token_to_the_cache(generated):
    prompt_length, steps = generated.prompt_length, generated.steps
    assert generated.num_steps == NEW_TOKENS  # the model does not stop early on this prompt
    assert generated.length == prompt_length + NEW_TOKENS - 1, "the last token chosen is never fed back"
    assert [step.rows for step in steps] == [prompt_length] + [1] * (NEW_TOKENS - 1)
    assert [step.cache_tokens for step in steps] == [prompt_length + s for s in range(NEW_TOKENS)]
    assert [generated.rows_at(s) for s in range(NEW_TOKENS)] == [step.cache_tokens for step in steps]
    # Measured on the DynamicCache: every layer keeps one key and one value per KV head per token.
    assert generated.bytes_per_token == 30 * 2 * 3 * 64 * 4
    assert [step.cache_bytes for step in steps] == [
        step.cache_tokens * generated.bytes_per_token for step in steps
    ]
    # Each step's token is its most probable candidate (greedy), and the text grows by it.
    for step in steps:
        assert step.candidates[0].token == step.token
        assert step.candidates[0].probability >= step.candidates[1].probability
    assert steps[-1].text.startswith(PROMPT)


def test_a_cached_row_never_sees_a_key_that_did_not_exist_yet(generated):
    cached, mask = generated.cached, generated.cached_mask  # (H, T, T), (T, T)
    causal = torch.ones_like(mask).tril()
    assert torch.equal(mask, causal)
    assert float(cached[:, ~causal].abs().max()) == 0.0
    torch.testing.assert_close(cached.sum(-1), torch.ones(cached.shape[:2]), atol=1e-5, rtol=0)


def test_cached_rows_equal_one_full_causal_forward(generated):
    assert float((generated.cached - generated.full_causal).abs().max()) <= 1e-5
    for step in range(generated.num_steps):
        assert generated.stale_rows(head=0, step=step, causal=True) == []


def test_cached_rows_equal_transformers_own_eager_attention_without_a_cache(generated, reference):
    reference.set_attn_implementation("eager")
    with torch.inference_mode():
        output = reference(input_ids=generated.input_ids[None, :-1], output_attentions=True)
    eager = output.attentions[LAYER][0]  # (H, T, T)
    assert float((generated.cached - eager).abs().max()) <= 1e-5


def test_greedy_tokens_equal_plain_generate_with_sdpa(smollm2, generated, reference):
    reference.set_attn_implementation("sdpa")
    prompt_ids = generated.input_ids[: generated.prompt_length][None]
    with torch.inference_mode():
        plain = reference.generate(
            input_ids=prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            pad_token_id=smollm2.tokenizer.pad_token_id,
        )
    assert plain[0].tolist() == generated.input_ids.tolist()


def test_without_the_causal_mask_every_cached_row_goes_stale(generated):
    delta = generated.row_delta(causal=False)  # (H, T)
    assert bool((delta > STALE_TOLERANCE).all()), "in a deep layer even the newest row's keys have changed"
    last = generated.num_steps - 1
    for head in range(generated.num_heads):
        assert generated.stale_rows(head, last, causal=False) == list(range(generated.length))
    # Rows of earlier steps: the prompt's rows are stale as soon as anything follows them.
    assert generated.stale_rows(0, 0, causal=False) == list(range(generated.prompt_length))


def test_in_layer_0_only_the_last_row_survives_without_the_causal_mask(smollm2):
    """Layer 0's keys come straight from the embeddings; the last row sees every token either way."""
    generated = generate_stepwise(smollm2, PROMPT, layer=0, max_new_tokens=3)
    last = generated.num_steps - 1
    for head in range(generated.num_heads):
        assert generated.stale_rows(head, last, causal=False) == list(range(generated.length - 1))


def test_an_encoder_an_empty_or_long_prompt_and_too_many_tokens_are_refused(smollm2, minilm):
    with pytest.raises(UserFacingError, match="needs a decoder: minilm is an encoder"):
        generate_stepwise(minilm, PROMPT, layer=0)
    with pytest.raises(UserFacingError, match="prompt is empty"):
        generate_stepwise(smollm2, "   ", layer=0)
    with pytest.raises(UserFacingError, match=f"at most {MAX_PROMPT_TOKENS}"):
        generate_stepwise(smollm2, "word " * (MAX_PROMPT_TOKENS + 10), layer=0)
    with pytest.raises(UserFacingError, match=f"At most {MAX_NEW_TOKENS} new tokens"):
        generate_stepwise(smollm2, PROMPT, layer=0, max_new_tokens=MAX_NEW_TOKENS + 1)
    with pytest.raises(UserFacingError, match="Layer 30 does not exist"):
        generate_stepwise(smollm2, PROMPT, layer=30)


def test_the_pictures_show_only_what_exists_at_the_step_and_hover_without_trace_names(generated):
    step = 2
    rows = generated.rows_at(step)
    figure = step_heatmap(
        generated.cached[0],
        generated.cached_mask,
        generated.tokens,
        rows,
        stage_range("weights", generated.cached[0]),
        "cached",
        newest=(rows - 1, rows - 1),
    )
    (values,) = heatmap_values(figure)
    assert int((~np.isnan(values)).any(axis=1).sum()) == rows
    np.testing.assert_allclose(values[:rows], generated.cached[0, :rows].numpy(), atol=1e-6)
    assert [label.endswith(NOT_YET) for label in figure.data[0].x] == [
        k >= rows for k in range(generated.length)
    ]

    delta = generated.row_delta(causal=False)[0, :rows]
    stale = stale_figure(delta, generated.tokens, STALE_TOLERANCE, "stale")
    assert len(stale.data[0].y) == rows and set(stale.data[0].marker.color) == {"#e03131"}
    candidates = candidates_figure(generated.steps[step].candidates, "next")
    cache = cache_figure(generated.steps, step, "cache")
    assert len(cache.data[0].y) == step + 1, "the cache chart grows with the steps"
    for picture in (figure, stale, candidates, cache):
        for trace in picture.data:
            assert trace.hovertemplate.endswith("<extra></extra>")


class _CausalLayer(torch.nn.Module):
    """Stands in for a decoder's attention module: all the registered function reads of it."""

    is_causal = True
    layer_idx = 0


def test_the_default_causal_mask_puts_cached_queries_at_the_end_of_the_keys():
    query = torch.randn(1, 2, 2, 4)  # two new queries ...
    key = value = torch.randn(1, 1, 5, 4)  # ... against five keys, three of them cached
    with hooks.recording([0], every_call=True) as recorder:
        hooks.attention_forward(_CausalLayer(), query, key, value, None)
        hooks.attention_forward(_CausalLayer(), query[:, :, :1], key[:, :, :4], value[:, :, :4], None)
    first, second = recorder.calls[0]
    assert first.trace.mask[0, 0].tolist() == [[True, True, True, True, False], [True] * 5]
    assert second.trace.mask[0, 0].tolist() == [[True] * 4]
    assert recorder.records[0] is second, "records keeps the latest call, as before"


# ---- The page ---------------------------------------------------------------------------------


def open_page(**query: str) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    app.query_params.update(query)
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def click(app: AppTest, key: str) -> AppTest:
    app.button(key=key).click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def revealed_rows(app: AppTest, key: str) -> int:
    (values,) = heatmap_values(chart(app, key))
    return int((~np.isnan(values)).any(axis=1).sum())


def test_start_step_back_to_the_end_and_reset_with_the_step_in_the_url():
    app = open_page()
    assert "step" not in app.query_params, "nothing is generated before Start"
    assert not app.metric

    click(app, "gen_start")
    assert app.query_params["step"] == "0"
    shown = metrics(app)
    prompt_rows = int(shown["Query rows"])
    assert shown["Step"] == "0 (prefill)" and shown["KV cache"] == f"{prompt_rows} tokens"
    assert revealed_rows(app, "gen_cached_chart") == prompt_rows
    assert app.success, "with the causal mask the cached rows equal the full forward's"

    click(app, "gen_next")
    assert app.query_params["step"] == "1"
    assert metrics(app)["Query rows"] == str(prompt_rows + 1)
    assert revealed_rows(app, "gen_cached_chart") == prompt_rows + 1
    assert revealed_rows(app, "gen_full_chart") == prompt_rows + 1

    click(app, "gen_back")
    assert app.query_params["step"] == "0"
    click(app, "gen_end")
    last = int(app.query_params["step"])
    assert last >= 1 and app.button(key="gen_next").disabled

    click(app, "gen_reset")
    assert "step" not in app.query_params
    assert [button.key for button in app.button] == ["gen_start"]


def test_a_link_opens_at_its_step_and_a_step_past_the_end_shows_the_last():
    app = open_page(step="3")
    shown = metrics(app)
    assert shown["Step"].startswith("3 of")
    rows = int(shown["Query rows"])
    assert int(shown["KV cache"].split()[0]) == rows
    assert revealed_rows(app, "gen_cached_chart") == rows

    past = open_page(step=str(MAX_NEW_TOKENS - 1), new="4")
    assert past.query_params["step"] == "3", "four new tokens make steps 0–3"


def test_switching_the_causal_mask_off_shows_which_cached_rows_go_stale():
    app = open_page(step="2")
    assert app.success and not app.error
    app.toggle(key="gen_causal").set_value(False).run()
    assert not app.exception
    assert app.query_params["causal"] == "0"
    (message,) = [error.value for error in app.error]
    assert "would be stale" in message and "rows 0, 1, 2" in message
    bars = chart(app, "gen_stale_chart").data[0]
    assert set(bars.marker.color) == {"#e03131"}, "layer 0: every row but the very last is stale"


def test_an_encoder_gets_a_clear_message_instead_of_a_generation():
    app = open_page(model="minilm", step="2")
    (warning,) = [warning.value for warning in app.warning]
    assert "Generation needs a decoder" in warning and "smollm2" in warning
    assert not app.get("plotly_chart")
