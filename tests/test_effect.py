"""The output effect, computed a chunk of positions at a time, against a direct computation."""

from __future__ import annotations

import torch

from attention_viz import effect
from attention_viz.capture import capture


def test_chunked_effect_equals_the_whole_tensor_computation(smollm2, monkeypatch):
    monkeypatch.setattr(effect, "POSITIONS_PER_CHUNK", 3)  # several chunks and a ragged last one
    texts = ["The cat sat on the mat because it was tired.", "Hello there"]
    result = capture(smollm2, texts, layers=[0], causal=False, padding_side="left")
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
            names = smollm2.tokenizer.convert_ids_to_tokens(top_ids[item, position].tolist())
            shown = [name for name, _ in measured.top_tokens[item][position]]
            assert shown == [n.replace("Ġ", " ").replace("Ċ", "↵") for n in names]
