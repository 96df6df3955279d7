"""The packing check: are packed documents really kept apart?

Packed training puts several texts into one row. Done right (a block-diagonal document mask
and position ids that restart at each document), every document computes exactly what it
would alone. Done wrong, documents read each other (cross-document contamination) or see
positions they never had alone, and nothing fails: the loss just gets worse.

:func:`packing_check` runs the packed row under the four combinations of the two switches,
records every layer's attention to measure how much of it crosses documents, and compares
each document's output with the same text run alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from attention_viz.capture import Encoded, check_budget, checked_texts, encode, run_forward
from attention_viz.errors import UserFacingError
from attention_viz.i18n import N_, _
from attention_viz.loading import LoadedModel
from attention_viz.policy import MaskPolicy
from attention_viz.tokens import display_tokens

__all__ = [
    "VARIANTS",
    "DocumentDrift",
    "PackingCheck",
    "cross_document_mass",
    "delta_column",
    "drift_table",
    "packing_check",
    "positions_table",
    "summary_table",
]

MIN_TEXTS, MAX_TEXTS = 2, 4
# float32 sums in another order differ by ~1e-5; a real contamination moves outputs by 1e-1 or more.
AGREEMENT_TOLERANCE = 1e-4
# (label, document_mask, reset_positions): the correct packing first. A label names its variant
# in results and links (in English); translate it with ``_`` where it is shown.
VARIANTS = (
    (N_("document mask + position reset"), True, True),
    (N_("document mask only"), True, False),
    (N_("position reset only"), False, True),
    (N_("neither"), False, False),
)


@dataclass(frozen=True)
class DocumentDrift:
    """How far one packed document's output is from the same text run alone.

    Attributes:
        variant: the label of the packing variant (see :data:`VARIANTS`).
        document: zero-based text index. tokens: its tokens in the row.
        max_abs_delta: max |Δ| of the decoder's logits or the encoder's last hidden states.
        kl: decoder: mean over the document's positions of KL(alone ‖ packed) of the next-token
            distributions; None for an encoder.
        top1_flips: decoder: positions whose most likely next token differs; None for an encoder.
        cosine: encoder: cosine similarity of the mean-pooled embeddings; None for a decoder.
    """

    variant: str
    document: int
    tokens: int
    max_abs_delta: float
    kl: float | None
    top1_flips: int | None
    cosine: float | None

    @property
    def agrees(self) -> bool:
        return self.max_abs_delta <= AGREEMENT_TOLERANCE


@dataclass(frozen=True)
class PackingCheck:
    """The packing check of 2–4 texts.

    Attributes:
        model_name: the model. decoder: a causal language model.
        texts: the packed texts, in row order.
        tokens: the ``T`` display tokens of the packed row.
        documents: ``(T,)`` the text index of each token.
        position_ids: per variant label, ``(T,)`` the positions the model was given.
        cross_mass: per variant label, ``(L, H)`` the attention mass that crosses documents:
            for each layer and head, the mean over the row's queries of the summed weights on
            keys of other documents (0 = kept apart, 1 = all attention elsewhere).
        drift: per variant and document, the output against the text alone.
    """

    model_name: str
    decoder: bool
    texts: tuple[str, ...]
    tokens: list[str]
    documents: torch.Tensor
    position_ids: dict[str, torch.Tensor]
    cross_mass: dict[str, torch.Tensor]
    drift: list[DocumentDrift]

    def variant_policy(self, label: str) -> MaskPolicy:
        """The policy a variant ran under."""
        _, document_mask, reset = next(variant for variant in VARIANTS if variant[0] == label)
        return MaskPolicy(pack=True, document_mask=document_mask, reset_positions=reset).for_model(
            self.decoder
        )


def cross_document_mass(weights: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """For each head, the mean over queries of the attention weight on other documents' keys.

    Args:
        weights: ``(H, T, T)`` one row's attention weights. documents: ``(T,)`` document index
            of each token (no padding).

    Shape: returns ``(H,)``.
    """
    elsewhere = documents[:, None] != documents[None, :]  # (T, T)
    return (weights * elsewhere).sum(-1).mean(-1)  # (H,)


def _compare(
    model: LoadedModel, packed: torch.Tensor, alone: torch.Tensor
) -> tuple[float, float | None, int | None, float | None]:
    """max |Δ|, KL, top-1 flips and cosine between one document's packed and alone outputs.

    Args:
        packed, alone: ``(n, V)`` logits of a decoder or ``(n, D)`` hidden states of an encoder.
    """
    delta = float((packed - alone).abs().max())
    if model.decoder:
        log_packed = torch.log_softmax(packed.float(), dim=-1)
        log_alone = torch.log_softmax(alone.float(), dim=-1)
        kl = (log_alone.exp() * (log_alone - log_packed)).sum(-1).clamp(min=0)  # (n,)
        flips = int((log_packed.argmax(-1) != log_alone.argmax(-1)).sum())
        return delta, float(kl.mean()), flips, None
    cosine = torch.nn.functional.cosine_similarity(packed.mean(0), alone.mean(0), dim=0)
    return delta, None, None, float(cosine)


def packing_check(model: LoadedModel, texts: list[str]) -> PackingCheck:
    """Pack ``texts`` into one row and measure what each packing variant changes.

    Each document is compared with its text run alone in a row of the same length (its padding
    masked) through the same attention code, so both runs do the same arithmetic and agree to
    float32 rounding when kept apart.

    Raises:
        UserFacingError: fewer than 2 or more than 4 texts, or texts longer together than the model
            takes; :class:`attention_viz.capture.OverBudget` over the memory budget.
    """
    texts = checked_texts(texts)
    if not MIN_TEXTS <= len(texts) <= MAX_TEXTS:
        raise UserFacingError(
            _("Pack {least} to {most} texts (one per line); {count} were given.").format(
                least=MIN_TEXTS, most=MAX_TEXTS, count=len(texts)
            )
        )
    base = MaskPolicy(pack=True).model_default(model.decoder)  # packed, kept apart: the model's own masks
    row = encode(model, texts, base)
    if any(row.truncated):
        raise UserFacingError(
            _("The texts together are longer than {model} takes ({limit} tokens): shorten them.").format(
                model=model.name, limit=model.max_positions
            )
        )
    length = row.input_ids.shape[1]
    layers = list(range(model.num_layers))
    check_budget(model, len(layers), length, 1, can_choose_layers=False)
    documents = row.documents[0]  # (T,)

    # Alone runs record every layer too, so both sides use the same attention code in every layer.
    alone_policy = MaskPolicy(max_length=length).model_default(model.decoder)
    alone_outputs = [
        run_forward(model, encode(model, [text], alone_policy), alone_policy, layers)[3] for text in texts
    ]

    position_ids, cross_mass, drift = {}, {}, []
    for label, document_mask, reset in VARIANTS:
        policy = base.with_changes(document_mask=document_mask, reset_positions=reset)
        _mask, positions, records, output = run_forward(model, row, policy, layers)
        position_ids[label] = positions[0]
        cross_mass[label] = torch.stack(
            [cross_document_mass(records[layer].trace.weights[0], documents) for layer in layers]
        )  # (L, H)
        del records
        for index, alone in enumerate(alone_outputs):
            in_document = documents == index
            count = int(in_document.sum())
            delta, kl, flips, cosine = _compare(model, output[0, in_document], alone[0, :count])
            drift.append(DocumentDrift(label, index, count, delta, kl, flips, cosine))
    return PackingCheck(
        model_name=model.name,
        decoder=model.decoder,
        texts=tuple(texts),
        tokens=_row_tokens(model, row),
        documents=documents,
        position_ids=position_ids,
        cross_mass=cross_mass,
        drift=drift,
    )


def _row_tokens(model: LoadedModel, row: Encoded) -> list[str]:
    """The packed row's display tokens."""
    return display_tokens(model.tokenizer, row.input_ids, row.attention_mask)[0]


def delta_column(decoder: bool) -> str:
    """The name of :func:`drift_table`'s max |Δ| column, in the run's language."""
    return _("max |Δ| {output}").format(output=_("logits") if decoder else _("hidden states"))


def drift_table(check: PackingCheck) -> pd.DataFrame:
    """One row per variant and document: its tokens, max |Δ| from the text alone, and the
    decoder's KL and top-1 flips or the encoder's cosine, with a verdict (in the run's language)."""
    rows = []
    for drift in check.drift:
        row = {
            _("packing"): _(drift.variant),
            _("text"): drift.document,
            _("tokens"): drift.tokens,
            delta_column(check.decoder): drift.max_abs_delta,
        }
        if check.decoder:
            row[_("KL(alone ‖ packed)")] = drift.kl
            row[_("top-1 flips")] = drift.top1_flips
        else:
            row[_("cosine (mean-pooled)")] = drift.cosine
        row[_("same as alone")] = _("yes") if drift.agrees else _("no")
        rows.append(row)
    return pd.DataFrame(rows)


def summary_table(check: PackingCheck) -> pd.DataFrame:
    """One row per variant: the worst document's max |Δ| and the most attention any head sends
    across documents (in the run's language)."""
    rows = []
    for label, *_switches in VARIANTS:
        drifts = [drift for drift in check.drift if drift.variant == label]
        mass = check.cross_mass[label]  # (L, H)
        worst = int(mass.flatten().argmax())
        layer, head = divmod(worst, mass.shape[1])
        rows.append(
            {
                _("packing"): _(label),
                _("worst max |Δ|"): max(drift.max_abs_delta for drift in drifts),
                _("texts as alone"): _("{count} of {total}").format(
                    count=sum(drift.agrees for drift in drifts), total=len(drifts)
                ),
                _("most cross-document attention"): float(mass.max()),
                _("in layer, head"): f"{layer}, {head}" if float(mass.max()) > 0 else _("none"),
            }
        )
    return pd.DataFrame(rows)


def positions_table(check: PackingCheck, label: str) -> pd.DataFrame:
    """The packed row under one variant: each token, its text and the position the model was
    given (headed in the run's language)."""
    return pd.DataFrame(
        {
            _("token"): check.tokens,
            _("text"): check.documents.tolist(),
            _("position"): check.position_ids[label].tolist(),
        }
    )
