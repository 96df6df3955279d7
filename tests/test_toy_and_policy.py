"""The toy tokenizer and embedding, the mask policy, and the Playground computation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_viz import masks
from attention_viz.playground import run_playground
from attention_viz.policy import MaskPolicy
from attention_viz.toy import PAD, sinusoidal_positions, tokenize, toy_batch, word_vector

SETTINGS = settings(max_examples=100, deadline=None)

# --- tokenizer and batch ---------------------------------------------------------------------


def test_tokenize_splits_words_and_punctuation_and_lowercases() -> None:
    assert tokenize("Hello, World!") == ["hello", ",", "world", "!"]
    assert tokenize("  The cat\tsat.\n") == ["the", "cat", "sat", "."]
    assert tokenize("It's") == ["it", "'", "s"]
    assert tokenize("") == []
    # A literal "[PAD]" in the text is split, so it can never pose as padding.
    assert PAD not in tokenize("[PAD] is not padding")


def test_right_padding() -> None:
    batch = toy_batch(["One two three", "four"], length=None, width=8, seed=0)
    assert batch.tokens == [["one", "two", "three"], ["four", PAD, PAD]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch.truncated == [0, 0]
    assert batch.embeddings.shape == (2, 3, 8)


def test_left_padding() -> None:
    batch = toy_batch(["One two three", "four"], length=None, width=8, seed=0, padding_side="left")
    assert batch.tokens == [["one", "two", "three"], [PAD, PAD, "four"]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch.truncated == [0, 0]


def test_explicit_length_pads_and_truncates() -> None:
    longer = toy_batch(["a b", "c"], length=4, width=4, seed=0)
    assert longer.tokens == [["a", "b", PAD, PAD], ["c", PAD, PAD, PAD]]
    assert longer.attention_mask.tolist() == [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert longer.truncated == [0, 0]

    shorter = toy_batch(["a b c d e", "f g"], length=2, width=4, seed=0, padding_side="left")
    assert shorter.tokens == [["a", "b"], ["f", "g"]]  # truncation cuts the end
    assert shorter.attention_mask.tolist() == [[1, 1], [1, 1]]
    assert shorter.truncated == [3, 0]
    assert shorter.embeddings.shape == (2, 2, 4)


words = st.sampled_from(["the", "cat", "sat", "on", "mat", "dog", "a", ",", "."])
sentences = st.lists(words, min_size=1, max_size=12).map(" ".join)


@SETTINGS
@given(
    texts=st.lists(sentences, min_size=1, max_size=4),
    length=st.none() | st.integers(min_value=1, max_value=15),
    side=st.sampled_from(["left", "right"]),
    half_width=st.integers(min_value=1, max_value=8),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_batch_invariants(
    texts: list[str], length: int | None, side: str, half_width: int, seed: int
) -> None:
    width = 2 * half_width
    batch = toy_batch(texts, length=length, width=width, seed=seed, padding_side=side)
    split = [tokenize(text) for text in texts]
    expected_length = max(len(tokens) for tokens in split) if length is None else length

    assert batch.embeddings.shape == (len(texts), expected_length, width)
    assert batch.attention_mask.shape == (len(texts), expected_length)
    for tokens, row, mask_row, cut in zip(
        split, batch.tokens, batch.attention_mask.tolist(), batch.truncated, strict=True
    ):
        kept = tokens[:expected_length]
        padding = [PAD] * (expected_length - len(kept))
        assert row == (padding + kept if side == "left" else kept + padding)
        assert cut == max(0, len(tokens) - expected_length)
        assert mask_row == [0 if token == PAD else 1 for token in row]

    # Deterministic per seed: the same call gives bit-identical embeddings.
    again = toy_batch(texts, length=length, width=width, seed=seed, padding_side=side)
    assert torch.equal(batch.embeddings, again.embeddings)
    # An embedding depends only on (token, position): equal pairs give equal rows.
    seen: dict[tuple[str, int], torch.Tensor] = {}
    for b, row in enumerate(batch.tokens):
        for position, token in enumerate(row):
            vector = batch.embeddings[b, position]
            if (token, position) in seen:
                assert torch.equal(seen[token, position], vector)
            seen[token, position] = vector


def test_embeddings_change_with_the_seed() -> None:
    first = toy_batch(["the cat sat"], length=None, width=16, seed=1)
    second = toy_batch(["the cat sat"], length=None, width=16, seed=2)
    assert not torch.allclose(first.embeddings, second.embeddings)


def test_word_vectors_are_fixed_per_word_and_seed() -> None:
    assert torch.equal(word_vector("cat", 32, 0), word_vector("cat", 32, 0))
    assert not torch.allclose(word_vector("cat", 32, 0), word_vector("cat", 32, 1))
    assert not torch.allclose(word_vector("cat", 32, 0), word_vector("dog", 32, 0))
    assert word_vector("cat", 32, 0).shape == (32,)


@pytest.mark.parametrize(("length", "width"), [(1, 2), (7, 8), (20, 32)])
def test_sinusoidal_positions_follow_the_paper(length: int, width: int) -> None:
    encoding = sinusoidal_positions(length, width)
    assert encoding.shape == (length, width)
    for position in range(length):
        for i in range(width // 2):
            angle = position / 10000 ** (2 * i / width)
            assert encoding[position, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert encoding[position, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_same_word_at_two_positions_is_more_alike_than_two_words() -> None:
    cosine = torch.nn.functional.cosine_similarity
    same, different = [], []
    for seed in range(40):
        # Same positions (0 and 2) in both sentences, so only the word identity differs.
        repeated = toy_batch(["river stone river"], length=None, width=32, seed=seed).embeddings[0]
        distinct = toy_batch(["river stone cloud"], length=None, width=32, seed=seed).embeddings[0]
        same.append(cosine(repeated[0], repeated[2], dim=0).item())
        different.append(cosine(distinct[0], distinct[2], dim=0).item())
    average_same, average_different = sum(same) / len(same), sum(different) / len(different)
    assert average_same > average_different + 0.5
    assert average_same > 0.8  # the position signal is deliberately weak
    assert not all(value == pytest.approx(1.0) for value in same)  # but positions do differ


@pytest.mark.parametrize(
    ("texts", "length", "width", "message"),
    [
        (["a b"], None, 7, r"width must be even for sinusoidal positions, got 7"),
        ([], None, 8, r"at least one word"),
        (["a b", ""], None, 8, r"at least one word"),
        (["   "], None, 8, r"at least one word"),
        (["a b"], 0, 8, r"at least 1, got 0"),
    ],
)
def test_toy_batch_rejects_bad_arguments(
    texts: list[str], length: int | None, width: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        toy_batch(texts, length=length, width=width, seed=0)


# --- mask policy -----------------------------------------------------------------------------


def loop_policy_mask(
    attention_mask: list[list[int]], causal: bool, padding: bool, window: int | None
) -> list[list[list[bool]]]:
    """(B, T, T) from the policy's rules, one (query, key) pair at a time.

    With the padding mask on, nobody attends to a pad key, and a pad's own query row is empty.
    """
    result = []
    for row in attention_mask:
        length = len(row)
        square = []
        for query in range(length):
            line = []
            for key in range(length):
                allowed = True
                if causal and key > query:
                    allowed = False
                if padding and (row[key] == 0 or row[query] == 0):
                    allowed = False
                if window is not None:
                    inside = 0 <= query - key < window if causal else abs(query - key) < window
                    allowed = allowed and inside
                line.append(allowed)
            square.append(line)
        result.append(square)
    return result


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("window", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("padding", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_policy_build_combines_the_enabled_builders(
    causal: bool, padding: bool, window: int | None, padding_side: str
) -> None:
    texts = ["the cat sat on the mat", "a dog", "birds fly"]
    attention_mask = toy_batch(texts, length=None, width=4, seed=0, padding_side=padding_side).attention_mask
    batch, length = attention_mask.shape
    policy = MaskPolicy(causal=causal, padding_mask=padding, window=window, padding_side=padding_side)
    built = policy.build(attention_mask)

    assert built.dtype == torch.bool
    assert built.shape == (batch, 1, length, length)
    padding_keys = masks.padding_mask(attention_mask)  # (B, 1, 1, T)
    expected = masks.combine(
        masks.full_mask(length),
        masks.causal_mask(length) if causal else None,
        padding_keys if padding else None,
        padding_keys.transpose(-1, -2) if padding else None,  # (B, 1, T, 1): pad query rows
        masks.sliding_window_mask(length, window, causal=causal) if window is not None else None,
    )
    assert torch.equal(built, expected.expand(batch, 1, length, length))
    assert built[:, 0].tolist() == loop_policy_mask(attention_mask.tolist(), causal, padding, window)


def test_policy_defaults_and_description() -> None:
    unresolved = MaskPolicy()  # causal: None = the model's own choice
    assert (unresolved.causal, unresolved.padding_mask, unresolved.window) == (None, True, None)
    assert (unresolved.padding_side, unresolved.max_length) == ("right", None)
    assert unresolved.for_model(False).causal is False
    policy = unresolved.for_model(True)  # a decoder's default
    assert (policy.causal, policy.padding_mask, policy.window) == (True, True, None)
    assert (policy.padding_side, policy.max_length) == ("right", None)
    assert policy.describe() == "causal + padding"
    assert policy.with_changes(window=4).describe() == "causal + padding, window 4"
    assert MaskPolicy(causal=False, padding_mask=False).describe() == "no mask"
    assert MaskPolicy(causal=False, padding_mask=True, window=2).describe() == "padding, window 2"
    changed = policy.with_changes(causal=False)
    assert changed.causal is False and policy.causal is True  # a copy, not an edit


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"padding_side": "middle"}, r"padding_side must be 'left' or 'right', got 'middle'"),
        ({"window": 0}, r"at least 1 token, got 0"),
        ({"window": -2}, r"at least 1 token, got -2"),
        ({"max_length": 0}, r"at least 1 token, got 0"),
    ],
)
def test_policy_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskPolicy(**changes)
    with pytest.raises(ValueError, match=message):
        MaskPolicy().with_changes(**changes)  # changes are validated too


# --- playground ------------------------------------------------------------------------------

SENTENCES = ["The cat sat on the mat .", "A dog barked", "Birds sing at dawn"]


def pad_columns(tokens: list[str]) -> list[int]:
    return [position for position, token in enumerate(tokens) if token == PAD]


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("window", [None, 2])
@pytest.mark.parametrize("padding", [True, False])
def test_causal_playground_never_looks_ahead(padding: bool, window: int | None, padding_side: str) -> None:
    policy = MaskPolicy(causal=True, padding_mask=padding, window=window, padding_side=padding_side)
    result = run_playground(SENTENCES, policy, num_heads=4, width=32, seed=3)
    weights = result.attention.heads.weights  # (B, H, T, T)
    length = weights.shape[-1]
    upper = torch.ones(length, length, dtype=torch.bool).triu(diagonal=1)
    assert (weights[..., upper] == 0.0).all()
    assert (weights[..., ~upper].sum() > 0).item()


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("causal", [True, False])
def test_padding_mask_silences_pad_keys(causal: bool, padding_side: str) -> None:
    policy = MaskPolicy(causal=causal, padding_mask=True, padding_side=padding_side)
    result = run_playground(SENTENCES, policy, num_heads=2, width=16, seed=0)
    weights = result.attention.heads.weights
    padded = 0
    for b, tokens in enumerate(result.tokens):
        columns = pad_columns(tokens)
        padded += len(columns)
        assert (weights[b, :, :, columns] == 0.0).all()
    assert padded > 0  # the sentences have different lengths, so there is padding to check
    # A pad's own query row is empty (and zeroed by rule); no real token's row ever is.
    is_pad = torch.tensor([[token == PAD for token in tokens] for tokens in result.tokens])  # (B, T)
    assert torch.equal(
        result.attention.heads.empty_rows, is_pad[:, None, :].expand_as(result.attention.heads.empty_rows)
    )
    # Rows stay distributions, or are empty by rule.
    row_sums = weights.sum(dim=-1)
    empty = result.attention.heads.empty_rows
    torch.testing.assert_close(row_sums[~empty], torch.ones_like(row_sums[~empty]))
    assert (row_sums[empty] == 0.0).all()


@pytest.mark.parametrize("padding_side", ["left", "right"])
@pytest.mark.parametrize("causal", [True, False])
def test_forgotten_padding_mask_lets_pad_keys_through(causal: bool, padding_side: str) -> None:
    policy = MaskPolicy(causal=causal, padding_mask=False, padding_side=padding_side)
    result = run_playground(SENTENCES, policy, num_heads=2, width=16, seed=0)
    weights = result.attention.heads.weights
    leaked = [
        (weights[b, :, :, pad_columns(tokens)] > 0).any().item()
        for b, tokens in enumerate(result.tokens)
        if pad_columns(tokens)
    ]
    assert leaked and any(leaked)
    assert not result.attention.heads.empty_rows.any()


@pytest.mark.parametrize("max_length", [None, 1, 3, 10])
def test_sequence_length_sets_t(max_length: int | None) -> None:
    policy = MaskPolicy(causal=True, max_length=max_length)
    result = run_playground(SENTENCES, policy, num_heads=4, width=32, seed=0)
    longest = max(len(tokenize(text)) for text in SENTENCES)
    length = longest if max_length is None else max_length
    batch, heads = len(SENTENCES), 4
    assert all(len(tokens) == length for tokens in result.tokens)
    assert result.mask.shape == (batch, 1, length, length)
    assert result.attention.heads.weights.shape == (batch, heads, length, length)
    assert result.attention.merged.shape == (batch, length, 32)
    assert result.batch.truncated == [max(0, len(tokenize(text)) - length) for text in SENTENCES]


def test_playground_applies_the_policy_mask() -> None:
    policy = MaskPolicy(causal=True, padding_mask=True, window=3, padding_side="left")
    result = run_playground(SENTENCES, policy, num_heads=4, width=32, seed=5)
    assert result.policy is policy
    assert torch.equal(result.mask, policy.build(result.batch.attention_mask))
    assert torch.equal(result.attention.heads.mask, result.mask.expand(-1, 4, -1, -1))
    assert (result.attention.heads.weights[~result.attention.heads.mask] == 0.0).all()


def test_playground_is_deterministic_per_seed() -> None:
    policy = MaskPolicy(causal=True)
    first = run_playground(SENTENCES, policy, seed=11)
    again = run_playground(SENTENCES, policy, seed=11)
    other = run_playground(SENTENCES, policy, seed=12)
    assert torch.equal(first.attention.heads.weights, again.attention.heads.weights)
    assert not torch.allclose(first.attention.heads.weights, other.attention.heads.weights)
