"""The mask check: one policy's mask against transformers' own, at FlexAttention block
granularity, as a copyable ``mask_mod`` and as a ■/⬚ drawing, all from the same encoded texts."""

from __future__ import annotations

from dataclasses import dataclass

from attention_viz.blocks import BlockView, block_view, mask_mod_snippet, text_drawing
from attention_viz.capture import checked_texts, encode, position_ids_for, resolve_policy
from attention_viz.loading import LoadedModel
from attention_viz.mask_parity import MaskParity, compare_masks
from attention_viz.policy import MaskPolicy
from attention_viz.tokens import display_tokens

__all__ = ["DRAWING_MAX_TOKENS", "MaskCheck", "mask_check"]

DRAWING_MAX_TOKENS = 64  # wider ■/⬚ drawings no longer fit a slide


@dataclass(frozen=True)
class MaskCheck:
    """What the mask check shows for one row.

    Attributes:
        policy: the resolved policy. item: the zero-based row shown.
        tokens: the row's ``T`` display tokens.
        parity: our mask against transformers' own (every row of the batch).
        blocks: the row's mask at FlexAttention block granularity.
        snippet: the policy as FlexAttention ``mask_mod`` source (never executed here).
        drawing: the row's token-level mask as ■/⬚ text, cut at :data:`DRAWING_MAX_TOKENS`.
    """

    policy: MaskPolicy
    item: int
    tokens: list[str]
    parity: MaskParity
    blocks: BlockView
    snippet: str
    drawing: str


def mask_check(
    model: LoadedModel, texts: list[str], policy: MaskPolicy, block_size: int = 128, item: int = 0
) -> MaskCheck:
    """Encode ``texts`` as a capture would, then build the mask check of row ``item``.

    Raises:
        UserFacingError: an empty text or an impossible policy for this model. ValueError: a
            block size outside 16–1024.
    """
    policy = resolve_policy(model, policy)
    encoded = encode(model, checked_texts(texts), policy)
    rows = encoded.input_ids.shape[0]
    item = min(max(0, item), rows - 1)
    parity = compare_masks(
        model.model.config,
        encoded.attention_mask,
        policy,
        decoder=model.decoder,
        documents=encoded.documents,
        position_ids=position_ids_for(encoded, policy, model.decoder),
    )
    return MaskCheck(
        policy=policy,
        item=item,
        tokens=display_tokens(model.tokenizer, encoded.input_ids, encoded.attention_mask)[item],
        parity=parity,
        blocks=block_view(policy, encoded.attention_mask, encoded.documents, block_size, item),
        snippet=mask_mod_snippet(policy),
        drawing=text_drawing(parity.ours[item, 0], DRAWING_MAX_TOKENS),
    )
