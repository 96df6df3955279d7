"""A mask policy: which masks are switched on, turned into the one boolean mask that is applied.

The Playground and the real-model capture use the same policy object, so a toggle means the
same thing everywhere.
"""

from __future__ import annotations

import numbers
import reprlib
from dataclasses import dataclass, replace

import torch

from attention_viz import masks

__all__ = ["MaskPolicy", "check_flag", "check_whole_number"]


def _shown(value: object) -> str:
    """``value`` and its type for an error message, shortened (a text may be 50,000 characters)."""
    return f"{reprlib.repr(value)} ({type(value).__name__})"


def check_flag(name: str, value: object) -> bool:
    """``value`` if it is a real ``bool``; else a TypeError (the string ``"no"`` would be truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_shown(value)}.")
    return value


def check_whole_number(name: str, value: object, minimum: int | None = None, unit: str = "") -> int:
    """``value`` as an ``int`` if it is a whole number (of at least ``minimum`` ``unit``s, if given).

    Python and numpy integers pass; a bool, a float (even ``3.0``: ``nan`` and ``2.5`` have no
    honest integer) or a string raises TypeError, a number below ``minimum`` ValueError.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number (an int), got {_shown(value)}.")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}{unit}, got {value}.")
    return int(value)


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
        check_flag("causal", self.causal)
        check_flag("padding_mask", self.padding_mask)
        if not isinstance(self.padding_side, str):
            raise TypeError(f"padding_side must be 'left' or 'right', got {_shown(self.padding_side)}.")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}.")
        # Stored as plain ints, so a numpy integer gives an equal (and equally hashed) policy.
        if self.window is not None:
            width = check_whole_number("window (the sliding-window width)", self.window, 1, " token")
            object.__setattr__(self, "window", width)
        if self.max_length is not None:
            length = check_whole_number("max_length (the sequence length)", self.max_length, 1, " token")
            object.__setattr__(self, "max_length", length)

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
