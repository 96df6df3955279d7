"""Compare two mask policies on the same text: their weights, the difference B − A, and the output.

Both policies run on the same tokens (same text, model and sequence length), so every cell of
the difference is one query attending to one key under two sets of masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from attention_viz.capture import Capture
from attention_viz.effect import OutputEffect
from attention_viz.errors import UserFacingError
from attention_viz.i18n import N_, _
from attention_viz.policy import MaskPolicy

__all__ = [
    "PRESETS",
    "Comparison",
    "Preset",
    "SidePolicy",
    "compare_head",
    "effect_table",
    "shortest_text",
    "with_shorter_text",
]


@dataclass(frozen=True)
class SidePolicy:
    """The toggles of one side of the comparison.

    Attributes:
        causal: causal mask on or off; None = the model's own choice (decoder: on, encoder: off).
        padding_mask: mask padding keys (and leave padding rows empty).
        window: sliding-window width, None = off.
        document_mask: with packed texts, the block-diagonal mask between them.
    """

    causal: bool | None = None  # None = what the model was trained with
    padding_mask: bool = True  # what a correct pipeline does
    window: int | None = None  # None = no sliding window
    document_mask: bool = True  # packed texts kept apart


@dataclass(frozen=True)
class Preset:
    """A one-click example pair.

    Attributes:
        label: the button text (in English: translate it with ``_`` where it is shown).
        a, b: the two sides.
        needs_padding: the texts must have different lengths (see :func:`with_shorter_text`).
        padding_side: where the padding goes; left padding lets real tokens see pads under a
            causal mask, so the difference shows up in real rows.
        pack: both sides pack the texts into one row (the texts must be several).
    """

    label: str
    a: SidePolicy
    b: SidePolicy
    needs_padding: bool = False
    padding_side: str = "right"
    pack: bool = False


PRESETS: dict[str, Preset] = {
    "causal": Preset(N_("causal vs no causal"), SidePolicy(causal=True), SidePolicy(causal=False)),
    "padding": Preset(
        N_("padding mask vs none"),
        SidePolicy(padding_mask=True),
        SidePolicy(padding_mask=False),
        needs_padding=True,
        padding_side="left",
    ),
    "window": Preset(N_("full vs window 4"), SidePolicy(), SidePolicy(window=4)),
    "packing": Preset(
        N_("packed: kept apart vs not"),
        SidePolicy(),
        SidePolicy(document_mask=False),
        needs_padding=True,
        pack=True,
    ),
}


def with_shorter_text(texts: tuple[str, ...], most: int = 4) -> tuple[str, ...]:
    """The texts, plus a shorter one (the first half of the first text's words) if needed.

    Texts that already differ in length are kept as they are. Otherwise every text is kept and
    the shorter one is added, in place of the last one if the batch would exceed ``most``. A
    one-word text cannot be shortened, so a two-word text is added instead (the first text is
    then the padded one).

    >>> with_shorter_text(("the cat sat on the mat",))
    ('the cat sat on the mat', 'the cat sat')
    >>> with_shorter_text(("a b c d", "e f g h", "i j k l"))
    ('a b c d', 'e f g h', 'i j k l', 'a b')
    """
    texts = tuple(text for text in texts if text.strip())
    if len(texts) >= 2 and len({len(text.split()) for text in texts}) > 1:
        return texts
    first = texts[0] if texts else "The cat sat on the mat because it was tired."
    words = first.split()
    shorter = " ".join(words[: max(1, len(words) // 2)]) if len(words) > 1 else "Hello there"
    kept = texts or (first,)
    return (*kept[: max(1, most - 1)], shorter)


def shortest_text(texts: tuple[str, ...]) -> int:
    """Index of the text with the fewest words: the one that gets padded."""
    return min(range(len(texts)), key=lambda index: len(texts[index].split()))


@dataclass(frozen=True)
class Comparison:
    """One head of one item under policies A and B.

    Attributes:
        tokens: ``T`` display tokens (the same for both sides).
        a, b: ``(T, T)`` attention weights under A and under B.
        difference: ``(T, T)`` ``b - a``.
        allowed_a, allowed_b: ``(T, T)`` bool, the mask each side really applied (True = may attend).
        pad_rows: ``(T,)`` bool, True where the query is a [PAD] token.
    """

    tokens: list[str]
    a: torch.Tensor
    b: torch.Tensor
    difference: torch.Tensor
    allowed_a: torch.Tensor
    allowed_b: torch.Tensor
    pad_rows: torch.Tensor

    @property
    def max_change(self) -> float:
        """Largest |B − A| over the rows of real queries. A [PAD] query's row is read by nothing
        downstream, so its change (an empty row becoming uniform) is not a change of attention."""
        real = self.difference[~self.pad_rows]  # (real queries, T)
        return float(real.abs().max()) if real.numel() else 0.0


def compare_head(a: Capture, b: Capture, layer: int, item: int, head: int) -> Comparison:
    """The weights of one head under two captures of the same tokens, and their difference.

    Shape: each capture's layer weights are ``(B, H, T, T)``; the result's matrices are ``(T, T)``.
    """
    if a.input_ids.shape != b.input_ids.shape or not torch.equal(a.input_ids, b.input_ids):
        raise UserFacingError(
            _(
                "The two sides saw different tokens; give both the same text, model, sequence length "
                "and padding side."
            )
        )
    if not 0 <= item < a.input_ids.shape[0]:
        raise UserFacingError(
            _("Text {item} does not exist: there are texts 0–{last}.").format(
                item=item, last=a.input_ids.shape[0] - 1
            )
        )
    weights_a = a.layer(layer).weights[item, head].float()  # (T, T)
    weights_b = b.layer(layer).weights[item, head].float()  # (T, T)
    return Comparison(
        tokens=a.tokens[item],
        a=weights_a,
        b=weights_b,
        difference=weights_b - weights_a,
        allowed_a=a.mask_for(layer)[item, 0],
        allowed_b=b.mask_for(layer)[item, 0],
        pad_rows=a.pad_rows[item],
    )


def effect_table(
    sides: dict[str, tuple[MaskPolicy, OutputEffect | None]], attention_mask: torch.Tensor, item: int
) -> pd.DataFrame:
    """What each policy changes in the output of one text, against the model's default policy.

    Decoder: the mean KL(default ‖ policy) over real positions, the top-1 flips, and the top-1
    next token at the last real position under the policy and under the default. Encoder: the
    cosine similarity of the mean-pooled sentence embedding to the default one.

    Args:
        sides: per side name, its policy and its effect (from ``capture.effect_of``; None = not measured).
        attention_mask: ``(B, T)`` 1 = real token, of the batch both sides ran on.
        item: the text to report.

    Returns one row per side, in the order given, with column names in the run's language.

    Shape: ``attention_mask`` is ``(B, T)``.
    """
    real = attention_mask[item].bool()  # (T,)
    positions = real.nonzero().flatten()  # (real tokens,)
    last = int(positions[-1]) if positions.numel() else None
    rows = []
    for name, (policy, effect) in sides.items():
        row: dict[str, object] = {_("side"): name, _("masks"): policy.describe()}
        if effect is None:
            rows.append(row)
            continue
        row[_("default")] = effect.reference_label
        if effect.kl is not None and effect.flips is not None:
            kl = effect.kl[item][real]  # (real tokens,)
            row[_("mean KL vs default")] = float(kl.mean()) if kl.numel() else 0.0
            row[_("top-1 flips")] = int(effect.flips[item])
            if last is not None and effect.top_tokens and effect.reference_top_tokens:
                token, probability = effect.top_tokens[item][last][0]
                reference, reference_probability = effect.reference_top_tokens[item][last][0]
                row[_("next token (this policy)")] = f"{token!r} {probability:.1%}"
                row[_("next token (default)")] = f"{reference!r} {reference_probability:.1%}"
        elif effect.cosine is not None:
            row[_("cosine to default")] = float(effect.cosine[item])
        rows.append(row)
    return pd.DataFrame(rows)
