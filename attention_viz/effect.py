"""What a mask policy changes downstream: next-token predictions or sentence embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attention_viz.pickling import TensorsPickledAsArrays
from attention_viz.tokens import token_labels

__all__ = ["OutputEffect", "measure_effect", "TOP_K"]

TOP_K = 5
POSITIONS_PER_CHUNK = 256  # positions whose (B, t, V) log-probabilities are held at once


@dataclass(frozen=True)
class OutputEffect(TensorsPickledAsArrays):
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


def _top_tokens(
    tokenizer, values: torch.Tensor, indices: torch.Tensor
) -> list[list[list[tuple[str, float]]]]:
    """Name the top tokens with the labels every other table uses (:func:`token_labels`), so a
    piece of a Chinese character reads ``⟨e6 b3⟩`` here too, not byte-alphabet mojibake.

    Shape: ``values`` (probabilities) and ``indices`` are ``(B, T, K)``.
    """
    ids = sorted(set(indices.flatten().tolist()))
    names = dict(zip(ids, token_labels(tokenizer, ids), strict=True))
    return [
        [
            [(names[i], round(p, 4)) for i, p in zip(row_i, row_p, strict=True)]
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

    Shape: ``kl`` is ``(B, T)``, ``flips`` and ``cosine`` are ``(B,)``.
    """
    real = attention_mask.bool()  # (B, T)
    label = reference_policy.describe()
    if model.decoder:
        batch, length, _ = output.shape
        kl = torch.zeros(batch, length)
        top1_differs = torch.zeros(batch, length, dtype=torch.bool)
        tops = {"policy": [], "reference": []}  # per chunk: (values (B, t, K), indices (B, t, K))
        # A chunk of positions at a time: log-softmax and KL over the vocabulary would otherwise
        # hold several more (B, T, V) tensors beside the two logits (1.6 GB each for 4 × 2048 tokens).
        for start in range(0, length, POSITIONS_PER_CHUNK):
            part = slice(start, start + POSITIONS_PER_CHUNK)
            log_policy = torch.log_softmax(output[:, part].float(), dim=-1)  # (B, t, V)
            log_reference = torch.log_softmax(reference_output[:, part].float(), dim=-1)
            kl[:, part] = (log_reference.exp() * (log_reference - log_policy)).sum(-1).clamp(min=0)
            top1_differs[:, part] = log_policy.argmax(-1) != log_reference.argmax(-1)
            for name, log_probabilities in (("policy", log_policy), ("reference", log_reference)):
                values, indices = log_probabilities.topk(TOP_K, dim=-1)  # (B, t, K)
                tops[name].append((values.exp(), indices))

        def named(name: str) -> list[list[list[tuple[str, float]]]]:
            values = torch.cat([chunk[0] for chunk in tops[name]], dim=1)  # (B, T, K)
            indices = torch.cat([chunk[1] for chunk in tops[name]], dim=1)
            return _top_tokens(model.tokenizer, values, indices)

        return OutputEffect(
            reference_label=label,
            top_tokens=named("policy"),
            reference_top_tokens=named("reference"),
            kl=kl.masked_fill(~real, 0.0),
            flips=(top1_differs & real).sum(-1),  # (B,)
        )
    weights = real[..., None].to(output.dtype)  # (B, T, 1)
    pooled = (output * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, D)
    reference_pooled = (reference_output * weights).sum(1) / weights.sum(1).clamp(min=1)
    cosine = torch.nn.functional.cosine_similarity(pooled, reference_pooled, dim=-1)  # (B,)
    return OutputEffect(reference_label=label, cosine=cosine)
