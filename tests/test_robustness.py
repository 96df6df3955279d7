"""Classroom robustness: concurrent captures, strange text, memory budget, security of model names."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from attention_viz.capture import capture, effect_bytes, effect_of, estimate_bytes
from attention_viz.errors import UserFacingError
from attention_viz.loading import load_model
from attention_viz.policy import MaskPolicy

STRANGE_TEXTS = {
    "chinese": "注意力机制是变压器的核心。",
    "arabic": "الانتباه هو كل ما تحتاجه",
    "emoji": "cats 🐈‍⬛ love 🎉 attention 👀",
    "zero_width": "zero\u200bwidth\u200djoin\ufeffer",
    "combining": "e\u0301le\u0300ve a\u0308 n\u0303",
    "control": "tab\there\x07bell\x1bescape\rreturn",
    "html": "<script>alert(1)</script><img src=x onerror=alert(2)>",
}


@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
@pytest.mark.parametrize("kind", sorted(STRANGE_TEXTS))
def test_strange_text_captures_cleanly(model_name, kind, request):
    loaded = request.getfixturevalue(model_name)
    result = capture(loaded, STRANGE_TEXTS[kind], layers=[0], effect=False)
    weights = result.layers[0].weights
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]), atol=1e-5, rtol=0)
    assert all(isinstance(token, str) and token for token in result.tokens[0])


def test_html_stays_literal_in_tokens(smollm2):
    tokens = capture(smollm2, STRANGE_TEXTS["html"], layers=[0], effect=False).tokens[0]
    assert "<" in "".join(tokens) and "script" in "".join(tokens)


def test_fifty_thousand_characters_are_truncated_with_a_count(minilm):
    result = capture(minilm, "attention " * 5000, layers=[0], effect=False)
    assert result.input_ids.shape[1] == minilm.max_positions == 512
    assert result.truncated[0] > 4000


def test_sequence_length_one_and_maximum(smollm2, minilm):
    assert capture(
        smollm2, "one two three", layers=[0], policy=MaskPolicy(max_length=1), effect=False
    ).layers[0].weights.shape == (
        1,
        9,
        1,
        1,
    )
    full = capture(minilm, "word " * 600, layers=[0], policy=MaskPolicy(max_length=512), effect=False)
    assert full.layers[0].weights.shape[-1] == 512
    with pytest.raises(UserFacingError, match="at most 512"):
        capture(minilm, "hi", policy=MaskPolicy(max_length=513))


def test_concurrent_captures_equal_sequential_ones(smollm2):
    jobs = [
        ({"texts": ["The cat sat on the mat."], "causal": True}),
        (
            {
                "texts": ["A much longer sentence about attention heads and masks.", "Short"],
                "padding_side": "left",
            }
        ),
        ({"texts": ["Window of three tokens only, please."], "window": 3}),
        ({"texts": ["No causal mask here at all."], "causal": False}),
    ] * 2

    def run(job: dict):
        options = dict(job)
        texts = options.pop("texts")
        return capture(smollm2, texts, layers=[0, 7, 29], policy=MaskPolicy(**options))

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(run, jobs))
    for expected, got in zip(sequential, concurrent, strict=True):
        assert got.tokens == expected.tokens
        for layer in (0, 7, 29):
            assert torch.equal(got.layers[layer].weights, expected.layers[layer].weights)
        assert torch.equal(got.effect.kl, expected.effect.kl)


def test_memory_budget_refuses_with_advice(smollm2, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_MEMORY_BUDGET_MB", "50")
    needed = estimate_bytes(30, 9, 200, 1) / 2**20
    assert needed > 50
    with pytest.raises(UserFacingError, match=r"budget of 50 MB.*at most \d+ layer"):
        capture(smollm2, "word " * 300, policy=MaskPolicy(max_length=200), effect=False)
    # One layer fits.
    assert capture(
        smollm2, "word " * 300, layers=[3], policy=MaskPolicy(max_length=200), effect=False
    ).layers[3]


def test_the_output_effect_counts_against_the_budget(smollm2, monkeypatch):
    # Two (1, 200, 49152) float32 logits: 75 MB, over a 50 MB budget even for one layer.
    assert effect_bytes(smollm2, 200, 1) / 2**20 > 50
    monkeypatch.setenv("ATTNVIZ_MEMORY_BUDGET_MB", "50")
    with pytest.raises(UserFacingError, match=r"model outputs to compare.*turn off the output comparison"):
        capture(smollm2, "word " * 300, layers=[3], policy=MaskPolicy(max_length=200))
    with pytest.raises(UserFacingError, match="turn off the output comparison"):
        effect_of(smollm2, ["word " * 300], MaskPolicy(max_length=200))


def test_a_batch_holds_at_most_max_texts(minilm, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_MAX_TEXTS", "3")
    assert len(capture(minilm, ["a", "b", "c"], layers=[0]).tokens) == 3
    with pytest.raises(UserFacingError, match=r"4 texts.*at most 3.*ATTNVIZ_MAX_TEXTS"):
        capture(minilm, ["a", "b", "c", "d"], layers=[0])


@pytest.mark.parametrize(
    "name", ["../../etc", "/etc", "~/.ssh", "/tmp/../etc/passwd", "org/model", "bad name\x00"]
)
def test_model_names_outside_the_allowlist_are_refused(name):
    with pytest.raises(UserFacingError, match="allowlist"):
        load_model(name)


def test_allowlisted_directory_loads_but_only_from_safetensors(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
    )
    model_dir = tmp_path / "tiny-bert"
    model_dir.mkdir()
    config.save_pretrained(model_dir)
    torch.save(BertModel(config).state_dict(), model_dir / "pytorch_model.bin")  # pickled weights only
    (model_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]))
    monkeypatch.setenv("ATTNVIZ_ALLOWED_MODELS", str(model_dir))
    with pytest.raises(UserFacingError, match="safetensors"):
        load_model(str(model_dir))  # pytorch_model.bin is never unpickled

    BertModel(config).save_pretrained(model_dir)
    (model_dir / "pytorch_model.bin").unlink(missing_ok=True)
    loaded = load_model(str(model_dir))
    assert loaded.num_layers == 2 and not loaded.decoder
    result = capture(loaded, "a b a", effect=False)
    assert result.layers[1].weights.shape == (1, 2, 5, 5)


def test_concurrent_tokenising_with_different_options_never_mixes_them(smollm2):
    """A session counting tokens (no padding) while another pads a batch: the shared fast
    tokenizer must not hand the batch unpadded rows (the app once failed this under load)."""
    from attention_viz.capture import encode
    from attention_viz.policy import MaskPolicy

    texts = ["Student 2 writes that cats number 2 sat on mat 2.", "cats 2"]
    padded = MaskPolicy(causal=True, padding_side="left", max_length=15)

    def pad_batch(_: int) -> tuple[int, ...]:
        return tuple(encode(smollm2, texts, padded).input_ids.shape)

    def count(_: int) -> int:
        return max(len(ids) for ids in smollm2.tokenize(texts, truncation=False)["input_ids"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        shapes = list(pool.map(pad_batch, range(200)))
        counts = list(pool.map(count, range(200)))
        mixed = [pool.submit(pad_batch if i % 2 else count, i) for i in range(400)]
        results = [future.result() for future in mixed]
    assert set(shapes) == {(2, 15)}
    assert len(set(counts)) == 1
    assert {result for result in results if isinstance(result, tuple)} == {(2, 15)}


def test_an_unexpected_failure_shows_a_message_not_a_traceback():
    from streamlit.testing.v1 import AppTest

    def page():
        from ui.chrome import run_or_stop

        run_or_stop(lambda: 1 / 0)
        import streamlit as st

        st.write("never reached")

    app = AppTest.from_function(page, default_timeout=30)
    app.run()
    assert not app.exception, "no traceback on the page"
    assert len(app.error) == 1 and "ZeroDivisionError" in app.error[0].value
    assert "server's log" in app.error[0].value
    assert not app.markdown, "the page stops after the message"
