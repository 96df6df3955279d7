"""A mask policy: which masks are switched on, turned into the one boolean mask that is applied.

The Playground and the real-model capture use the same policy object, so a toggle means the
same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from attention_viz import masks

__all__ = ["MaskPolicy"]


@dataclass(frozen=True)
class MaskPolicy:
    """The masks to apply, as the app's toggles set them.

    Attributes:
        causal: forbid attending to later tokens.
        padding_mask: forbid attending to padding tokens, and leave the padding tokens' own
            query rows empty (False simulates a forgotten ``attention_mask``).
        window: if set, only keys within this many positions (causal: before; otherwise: on
            either side) are visible.
        padding_side: where padding goes when texts of different lengths are batched.
        max_length: truncate or pad every item to this many tokens; None = longest item.
    """

    causal: bool = True  # the decoder default; encoders start from causal=False
    padding_mask: bool = True  # what a correct pipeline does
    window: int | None = None  # None = no sliding window
    padding_side: str = "right"  # "left" or "right"
    max_length: int | None = None  # None = pad to the longest text

    def __post_init__(self) -> None:
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}.")
        if self.window is not None and self.window < 1:
            raise ValueError(f"The sliding window must be at least 1 token, got {self.window}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"The sequence length must be at least 1 token, got {self.max_length}.")

    def with_changes(self, **changes: object) -> MaskPolicy:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def build(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Combine the enabled masks for a batch.

        Args:
            attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.

        Shape: returns a boolean ``(B, 1, T, T)``, True = may attend.
        """
        batch, length = attention_mask.shape
        device = attention_mask.device
        padding = None
        if self.padding_mask:
            keys = masks.padding_mask(attention_mask)  # (B, 1, 1, T): nobody attends to a pad
            # A pad's own query row means nothing, so it attends to nothing: an empty row, which
            # the reference zeroes. Real rows are unaffected (they never read a pad's output).
            padding = keys & keys.transpose(-1, -2)  # (B, 1, T, T)
        combined = masks.combine(
            masks.full_mask(length, device),
            masks.causal_mask(length, device) if self.causal else None,
            padding,
            masks.sliding_window_mask(length, self.window, self.causal, device) if self.window else None,
        )
        return combined.expand(batch, 1, length, length)  # (B, 1, T, T)

    def describe(self) -> str:
        """A short human label, e.g. ``causal + padding, window 4``."""
        parts = [name for name, on in (("causal", self.causal), ("padding", self.padding_mask)) if on]
        label = " + ".join(parts) if parts else "no mask"
        if self.window:
            label += f", window {self.window}"
        return label
