"""What a mask policy changes downstream: next-token predictions or sentence embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["OutputEffect", "measure_effect", "TOP_K"]

TOP_K = 5


@dataclass(frozen=True)
class OutputEffect:
    """The output under the chosen policy, compared with the model's default policy.

    Decoder fields (None for an encoder):
        top_tokens: per item, per position, the ``TOP_K`` (token, probability) pairs under the policy.
        reference_top_tokens: the same under the default policy.
        kl: ``(B, T)`` KL(default ‖ policy) of the next-token distributions; 0 at padding.
        flips: ``(B,)`` real positions whose top-1 token differs.
    Encoder fields (None for a decoder):
        cosine: ``(B,)`` cosine similarity of the mean-pooled embeddings of real tokens.
    """

    reference_label: str
    top_tokens: list[list[list[tuple[str, float]]]] | None = None
    reference_top_tokens: list[list[list[tuple[str, float]]]] | None = None
    kl: torch.Tensor | None = None
    flips: torch.Tensor | None = None
    cosine: torch.Tensor | None = None


def _top_tokens(tokenizer, probabilities: torch.Tensor) -> list[list[list[tuple[str, float]]]]:
    """Shape: ``probabilities`` is ``(B, T, V)``."""
    values, indices = probabilities.topk(TOP_K, dim=-1)  # (B, T, K)
    vocabulary = tokenizer.convert_ids_to_tokens(sorted(set(indices.flatten().tolist())))
    names = dict(zip(sorted(set(indices.flatten().tolist())), vocabulary, strict=True))
    return [
        [
            [
                (names[i].replace("Ġ", " ").replace("Ċ", "↵"), round(p, 4))
                for i, p in zip(row_i, row_p, strict=True)
            ]
            for row_i, row_p in zip(item_i, item_p, strict=True)
        ]
        for item_i, item_p in zip(indices.tolist(), values.tolist(), strict=True)
    ]


def measure_effect(
    model,
    attention_mask: torch.Tensor,
    output: torch.Tensor,
    reference_output: torch.Tensor,
    reference_policy,
) -> OutputEffect:
    """Compare the output under the policy with the output under the default policy.

    Args:
        model: the :class:`attention_viz.loading.LoadedModel`.
        attention_mask: ``(B, T)`` 1 = real token.
        output, reference_output: decoder logits ``(B, T, V)`` or encoder hidden states ``(B, T, D)``.
    """
    real = attention_mask.bool()  # (B, T)
    label = reference_policy.describe()
    if model.decoder:
        log_policy = torch.log_softmax(output.float(), dim=-1)  # (B, T, V)
        log_reference = torch.log_softmax(reference_output.float(), dim=-1)
        kl = (log_reference.exp() * (log_reference - log_policy)).sum(-1).clamp(min=0)  # (B, T)
        kl = kl.masked_fill(~real, 0.0)
        flips = ((log_policy.argmax(-1) != log_reference.argmax(-1)) & real).sum(-1)  # (B,)
        return OutputEffect(
            reference_label=label,
            top_tokens=_top_tokens(model.tokenizer, log_policy.exp()),
            reference_top_tokens=_top_tokens(model.tokenizer, log_reference.exp()),
            kl=kl,
            flips=flips,
        )
    weights = real[..., None].to(output.dtype)  # (B, T, 1)
    pooled = (output * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
    reference_pooled = (reference_output * weights).sum(1) / weights.sum(1).clamp(min=1)
    cosine = torch.nn.functional.cosine_similarity(pooled, reference_pooled, dim=-1)  # (B,)
    return OutputEffect(reference_label=label, cosine=cosine)
