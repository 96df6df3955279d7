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
