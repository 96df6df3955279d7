"""The output effect, computed a chunk of positions at a time, against a direct computation."""

from __future__ import annotations

import torch

from attention_viz import effect
from attention_viz.capture import capture
from attention_viz.policy import MaskPolicy
from attention_viz.tokens import display_tokens


def test_chunked_effect_equals_the_whole_tensor_computation(smollm2, monkeypatch):
    monkeypatch.setattr(effect, "POSITIONS_PER_CHUNK", 3)  # several chunks and a ragged last one
    texts = ["The cat sat on the mat because it was tired.", "Hello there"]
    result = capture(smollm2, texts, layers=[0], policy=MaskPolicy(causal=False, padding_side="left"))
    measured = result.effect
    assert measured.kl.shape == result.attention_mask.shape

    # The same comparison, written directly over whole (B, T, V) tensors.
    from attention_viz.capture import encode, run_forward

    encoded = encode(smollm2, texts, result.policy)
    logits = run_forward(smollm2, encoded, result.policy, [])[3]
    reference = run_forward(smollm2, encoded, result.policy.with_changes(causal=True), [])[3]
    log_policy, log_reference = logits.log_softmax(-1), reference.log_softmax(-1)
    real = result.attention_mask.bool()
    kl = (log_reference.exp() * (log_reference - log_policy)).sum(-1).clamp(min=0).masked_fill(~real, 0)
    flips = ((log_policy.argmax(-1) != log_reference.argmax(-1)) & real).sum(-1)

    torch.testing.assert_close(measured.kl, kl, atol=1e-5, rtol=1e-5)
    assert measured.flips.tolist() == flips.tolist() and int(flips.sum()) > 0
    top_ids = log_policy.topk(effect.TOP_K, dim=-1).indices  # (B, T, K)
    for item in range(len(texts)):
        for position in range(kl.shape[1]):
            ids = top_ids[item, position][None]  # (1, K): labelled as the attention axes are
            names = display_tokens(smollm2.tokenizer, ids, torch.ones_like(ids))[0]
            shown = [name for name, _ in measured.top_tokens[item][position]]
            assert shown == names


def _top_labels(tokenizer, ids: list[int]) -> list[str]:
    """The next-token table's labels for ``ids`` given as one position's top-K."""
    indices = torch.tensor(ids)[None, None]  # (B=1, T=1, K)
    values = torch.full(indices.shape, 1 / len(ids))
    return [name for name, _ in effect._top_tokens(tokenizer, values, indices)[0][0]]


def test_byte_pieces_in_the_next_token_table_read_as_their_utf8_bytes(smollm2):
    tokenizer = smollm2.tokenizer
    for text in ("猫", "🐱"):
        ids = tokenizer(text)["input_ids"]
        assert len(ids) > 1, "the test needs a character split into byte pieces"
        labels = _top_labels(tokenizer, ids)
        # Independent reference: the pieces together are the character's UTF-8 bytes.
        spelled = " ".join(label.strip("⟨⟩") for label in labels)
        assert spelled == text.encode("utf-8").hex(" ")
        assert all(label.startswith("⟨") and label.endswith("⟩") for label in labels)
        expected = display_tokens(tokenizer, torch.tensor([ids]), torch.ones(1, len(ids)))[0]
        assert labels == expected


def test_the_next_token_table_shows_no_byte_alphabet_markers(smollm2):
    tokenizer = smollm2.tokenizer
    (cat,) = tokenizer(" cat")["input_ids"]
    (newline,) = tokenizer("\n")["input_ids"]
    assert tokenizer.convert_ids_to_tokens([cat, newline]) == ["Ġcat", "Ċ"]
    assert _top_labels(tokenizer, [cat, newline]) == ["cat", "↵"]


POLICIES = [
    MaskPolicy(causal=False, padding_side="left"),
    MaskPolicy(padding_mask=False, padding_side="left"),
    MaskPolicy(window=3),
    MaskPolicy(pack=True, document_mask=False),
]


def test_a_kept_default_output_gives_the_same_effect_as_running_it_again(smollm2):
    """The default masks' output of a text, kept from an earlier call, is the reference every
    effect of that text is measured against: the same KL, flips and top tokens as running it anew."""
    from attention_viz.capture import default_output, effect_of, encode, run_forward

    texts = ["The cat sat on the mat because it was tired.", "Hello there"]
    for policy in POLICIES:
        kept = default_output(smollm2, texts, policy)
        # Independent reference: the forward under the model's own masks, with this batching.
        default_policy = policy.for_model(smollm2.decoder).model_default(smollm2.decoder)
        expected = run_forward(smollm2, encode(smollm2, texts, default_policy), default_policy, [])[3]
        torch.testing.assert_close(kept, expected, atol=0, rtol=0)

        # A capture's own forward (its recorded layer computed by the reference implementation)
        # and a plain forward agree to float32 rounding, not bit for bit: compare like with like.
        pairs = [
            (
                capture(smollm2, texts, layers=[0], policy=policy).effect,
                capture(smollm2, texts, layers=[0], policy=policy, reference_output=kept).effect,
            ),
            (effect_of(smollm2, texts, policy), effect_of(smollm2, texts, policy, reference_output=kept)),
        ]
        for anew, with_kept in pairs:
            torch.testing.assert_close(with_kept.kl, anew.kl, atol=0, rtol=0)
            assert with_kept.flips.tolist() == anew.flips.tolist()
            assert with_kept.top_tokens == anew.top_tokens
            assert with_kept.reference_top_tokens == anew.reference_top_tokens
            assert float(anew.kl.max()) > 0, f"{policy.describe()} changes the output"


def test_a_default_output_of_other_texts_is_refused(smollm2, minilm):
    import pytest

    from attention_viz.capture import default_output, effect_of

    kept = default_output(smollm2, ["A much longer text than the other one here."], MaskPolicy())
    with pytest.raises(ValueError, match="default_output"):
        effect_of(smollm2, ["Short."], MaskPolicy(causal=False), reference_output=kept)
    encoder_kept = default_output(minilm, ["The cat sat"], MaskPolicy())
    assert encoder_kept.shape == (1, 5, minilm.model.config.hidden_size)  # [CLS] the cat sat [SEP]
