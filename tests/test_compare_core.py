"""The comparison core: presets, the shorter second text, B − A and the output-effect table."""

from __future__ import annotations

import pytest
import torch

from attention_viz.capture import capture
from attention_viz.compare import PRESETS, compare_head, effect_table, shortest_text, with_shorter_text
from attention_viz.errors import UserFacingError
from attention_viz.policy import MaskPolicy

TEXT = "The cat sat on the mat because it was tired."


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        ((TEXT,), (TEXT, "The cat sat on the")),
        (("a b", "c d"), ("a b", "c d", "a")),  # same length: a shorter one is added, nothing typed is lost
        (("a b", "c d", "e f", "g h"), ("a b", "c d", "e f", "a")),  # a full batch: the last gives way
        (("a b c", "d"), ("a b c", "d")),  # already different: kept
        (("word",), ("word", "Hello there")),
    ],
)
def test_with_shorter_text(texts, expected):
    assert with_shorter_text(texts) == expected
    padded = with_shorter_text(texts)
    assert len({len(text.split()) for text in padded}) == 2, "the lengths differ, so one text is padded"


def test_shortest_text():
    assert shortest_text(("a b c", "d", "e f")) == 1


def test_presets_differ_in_exactly_what_their_name_says():
    causal, padding, window = PRESETS["causal"], PRESETS["padding"], PRESETS["window"]
    assert (causal.a.causal, causal.b.causal) == (True, False)
    assert (padding.a.padding_mask, padding.b.padding_mask) == (True, False) and padding.needs_padding
    assert padding.padding_side == "left", "under a causal mask only left padding lets real tokens see pads"
    assert (window.a.window, window.b.window) == (None, 4)  # None = no window, as in MaskPolicy


def test_compare_head_is_b_minus_a(smollm2):
    a = capture(smollm2, [TEXT], [2], policy=MaskPolicy(causal=True))
    b = capture(smollm2, [TEXT], [2], policy=MaskPolicy(causal=False))
    comparison = compare_head(a, b, layer=2, item=0, head=4)
    torch.testing.assert_close(comparison.a, a.layers[2].weights[0, 4])
    torch.testing.assert_close(comparison.b, b.layers[2].weights[0, 4])
    torch.testing.assert_close(comparison.difference, comparison.b - comparison.a)
    assert comparison.max_change > 0
    assert comparison.tokens == a.tokens[0]
    assert torch.equal(comparison.allowed_a, a.mask[0, 0]) and not comparison.allowed_b.logical_not().any()

    table = effect_table({"A": (a.policy, a.effect), "B": (b.policy, b.effect)}, a.attention_mask, item=0)
    assert table["side"].tolist() == ["A", "B"]
    assert table.loc[0, "mean KL vs default"] == 0.0 and table.loc[0, "top-1 flips"] == 0, "A is the default"
    assert table.loc[1, "mean KL vs default"] > 0

    with pytest.raises(UserFacingError, match="different tokens"):
        compare_head(
            a,
            capture(smollm2, [TEXT], [2], policy=MaskPolicy(max_length=5), effect=False),
            layer=2,
            item=0,
            head=0,
        )
    with pytest.raises(UserFacingError, match="Text 3 does not exist"):
        compare_head(a, b, layer=2, item=3, head=0)


def test_effect_table_of_an_encoder_gives_cosine(minilm):
    a = capture(minilm, [TEXT], [0])
    b = capture(minilm, [TEXT], [0], policy=MaskPolicy(causal=True))
    table = effect_table({"A": (a.policy, a.effect), "B": (b.policy, b.effect)}, a.attention_mask, item=0)
    assert table.loc[0, "cosine to default"] == pytest.approx(1.0, abs=1e-5)
    assert table.loc[1, "cosine to default"] < 1.0
