"""A mask policy: which masks are switched on, turned into the one boolean mask that is applied.

The Playground, the real-model capture, every page, the CLI and the Python API pass this one
object, so a toggle means the same thing everywhere. The model's own choices (is it causal?)
are resolved in one place, :meth:`MaskPolicy.for_model`, and the model's default masks (what it
was trained with) in :meth:`MaskPolicy.model_default`.

How the parts combine (every part is a boolean mask, True = may attend; see :meth:`MaskPolicy.build`)::

    allowed = (causal  OR  bidirectional prefix)        if causal
          AND (sliding window  OR  attention sinks)     if window
          AND same chunk                                if chunk
          AND same document                             if pack and document_mask
          AND real query AND real key                   if padding_mask

Positions: the window counts row indices. Chunks count from the row's first real token (left
padding does not shift them, as in transformers; left pads fall before chunk 0, right pads after
the last); packed texts whose positions restart also restart their chunks, as transformers
remaps a packed row. The prefix and the sinks count the real tokens of each document: each
packed text has its own; padding, masked or not, is never part of either.
"""

from __future__ import annotations

import numbers
import reprlib
from dataclasses import dataclass, fields, replace

import torch

from attention_viz import masks
from attention_viz.errors import UserFacingError
from attention_viz.i18n import _

__all__ = [
    "NOT_IN_DOCUMENT",
    "MaskPolicy",
    "check_flag",
    "check_prefix",
    "check_whole_number",
    "document_positions",
    "row_positions",
]


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


# The optional widths: field name -> how an error message names it. None = off; at least 1.
# The document position of a padding token in the masks: beyond any prefix or sink count.
NOT_IN_DOCUMENT = torch.iinfo(torch.long).max

_WIDTHS = {
    "window": "window (the sliding-window width)",
    "max_length": "max_length (the sequence length)",
    "prefix": "prefix (the bidirectional prefix length)",
    "sinks": "sinks (the number of attention-sink tokens)",
    "chunk": "chunk (the chunk size)",
}


def document_positions(attention_mask: torch.Tensor, documents: torch.Tensor | None = None) -> torch.Tensor:
    """Each token's zero-based position among the real tokens of its own document.

    Without ``documents`` the whole row is one document, so this counts real tokens from the
    row's first real one (left padding does not shift it). Padding positions get 0.

    Args:
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        documents: ``(B, T)`` integer document index of each token (packed rows), or None.

    Shape: returns ``(B, T)`` long.
    """
    real = attention_mask.bool().long()  # (B, T)
    count = real.cumsum(-1)  # (B, T): real tokens up to and including this one
    if documents is None:
        return (count - 1).clamp(min=0) * real
    start = torch.ones_like(documents, dtype=torch.bool)
    start[:, 1:] = documents[:, 1:] != documents[:, :-1]  # (B, T): first token of a document
    before = count - real  # (B, T): real tokens strictly before; never decreases along the row
    offset = torch.cummax(torch.where(start, before, torch.zeros_like(before)), dim=-1).values
    return (count - 1 - offset).clamp(min=0) * real


def check_prefix(policy: MaskPolicy, attention_mask: torch.Tensor, documents: torch.Tensor | None) -> None:
    """Refuse a prefix longer than a text: that text would be wholly bidirectional, not a prefix-LM.

    Args:
        attention_mask: ``(B, T)`` 1 for real tokens. documents: ``(B, T)`` document index of
            each token of a packed row (-1 for padding), or None.

    Raises:
        UserFacingError: naming the prefix and the shortest text's length.
    """
    if policy.prefix is None:
        return
    if documents is None:
        lengths = attention_mask.sum(-1).tolist()
    else:
        lengths = [int((documents == index).sum()) for index in documents[documents >= 0].unique().tolist()]
    shortest = min(lengths)
    if policy.prefix > shortest:
        raise UserFacingError(
            _(
                "The prefix ({prefix} tokens) is longer than a text ({shortest} tokens after "
                "truncation): choose a prefix shorter than every text."
            ).format(prefix=policy.prefix, shortest=shortest)
        )


def row_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Row indices counted from the row's first real token, as transformers' chunked masks count
    them: left padding does not shift the chunks, left pads get negative positions (chunks of
    their own) and right pads continue the count.

    Args:
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.

    Shape: returns ``(B, T)`` long.
    """
    real = attention_mask.bool()
    left_pads = (real.long().cumsum(-1) == 0).sum(-1, keepdim=True)  # (B, 1) pads before the first real token
    return torch.arange(attention_mask.shape[1], device=attention_mask.device)[None] - left_pads  # (B, T)


@dataclass(frozen=True)
class MaskPolicy:
    """The masks to apply, as the app's toggles and the CLI's flags set them.

    Attributes:
        causal: forbid attending to later tokens; None = the model's own choice (decoder: on,
            encoder: off), resolved by :meth:`for_model`.
        padding_mask: forbid attending to padding tokens, and leave the padding tokens' own
            query rows empty (False simulates a forgotten ``attention_mask``).
        window: if set, only keys within this many positions (causal: before; otherwise: on
            either side) are visible, the query itself included.
        padding_side: where padding goes when texts of different lengths are batched.
        max_length: truncate or pad every row to this many tokens; None = longest row.
        prefix: prefix-LM: the first ``prefix`` tokens of each document see each other both
            ways, the rest causally. Needs the causal mask.
        sinks: the first ``sinks`` tokens of each document stay visible to every later query
            beside the sliding window (StreamingLLM). Needs a window.
        chunk: attention only within fixed chunks of this many tokens (causal within them when
            the causal mask is on), nothing across them.
        pack: put every text into one row, one document after another, instead of a padded batch.
        document_mask: packed: a block-diagonal mask, so no token attends across documents.
        reset_positions: packed: position ids restart at 0 at each document.
    """

    causal: bool | None = None
    padding_mask: bool = True  # what a correct pipeline does
    window: int | None = None  # None = no sliding window
    padding_side: str = "right"  # "left" or "right"
    max_length: int | None = None  # None = pad to the longest row
    prefix: int | None = None
    sinks: int | None = None
    chunk: int | None = None
    pack: bool = False
    document_mask: bool = True
    reset_positions: bool = True

    def __post_init__(self) -> None:
        if self.causal is not None:
            check_flag("causal", self.causal)
        for name in ("padding_mask", "pack", "document_mask", "reset_positions"):
            check_flag(name, getattr(self, name))
        if not isinstance(self.padding_side, str):
            raise TypeError(f"padding_side must be 'left' or 'right', got {_shown(self.padding_side)}.")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}.")
        # Stored as plain ints, so a numpy integer gives an equal (and equally hashed) policy.
        for name, label in _WIDTHS.items():
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_whole_number(label, value, 1, " token"))
        if self.sinks is not None and self.window is None:
            raise ValueError(
                _(
                    "Attention sinks stay visible beside a sliding window (StreamingLLM); set a window "
                    "too (without one, every earlier token is visible anyway)."
                )
            )
        if self.prefix is not None and self.causal is False:
            raise ValueError(
                _(
                    "A prefix-LM is causal after its prefix; turn the causal mask on (without it, "
                    "every token already sees the whole text)."
                )
            )
        if not self.pack and not (self.document_mask and self.reset_positions):
            raise ValueError(
                _(
                    "document_mask and reset_positions apply to packed texts only; set pack=True "
                    "to pack the texts into one row."
                )
            )

    def with_changes(self, **changes: object) -> MaskPolicy:
        """A copy with some fields changed (validated like a new policy)."""
        return replace(self, **changes)

    def for_model(self, decoder: bool) -> MaskPolicy:
        """This policy with the model's own choices filled in: ``causal=None`` becomes ``decoder``."""
        return self if self.causal is not None else replace(self, causal=decoder)

    def model_default(self, decoder: bool) -> MaskPolicy:
        """The masks the model was trained with, keeping this policy's batching (padding side,
        length, packing): causal for a decoder, none for an encoder, padding masked, no window,
        prefix, sinks or chunks; packed texts kept apart with restarted positions."""
        return MaskPolicy(
            causal=decoder,
            padding_side=self.padding_side,
            max_length=self.max_length,
            pack=self.pack,
        )

    def for_layer_kind(self, kind: str, sliding_window: int | None, chunk_size: int | None) -> MaskPolicy:
        """The policy a layer of ``kind`` applies (``config.layer_types``' words).

        A sliding layer keeps the model's own window (``sliding_window``) and a chunked layer its
        own chunk (``chunk_size``), unless this policy sets a window or a chunk, which then applies
        to every layer alike. Full and bidirectional layers apply this policy as it is.
        """
        if kind == "sliding_attention" and self.window is None and sliding_window:
            return replace(self, window=int(sliding_window))
        if kind == "chunked_attention" and self.chunk is None and chunk_size:
            return replace(self, chunk=int(chunk_size))
        return self

    @property
    def is_resolved(self) -> bool:
        return self.causal is not None

    def changed_fields(self) -> dict[str, object]:
        """The fields that differ from a fresh ``MaskPolicy()`` (for labels and logs)."""
        default = MaskPolicy()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if getattr(self, f.name) != getattr(default, f.name)
        }

    def part_positions(
        self, attention_mask: torch.Tensor, documents: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The positions the prefix and sinks count, and the positions chunks count (one rule for
        :meth:`build` and the FlexAttention ``mask_mod`` of :mod:`attention_viz.blocks`).

        Prefix and sinks: real tokens within each document; padding is ``NOT_IN_DOCUMENT``, in
        no prefix and no sinks, even unmasked. Chunks follow the positions the model is given:
        :func:`row_positions`, except that packed texts whose positions restart restart their
        chunks too (transformers remaps a packed row the same way); padding keeps the row count,
        so it never joins a chunk of real tokens ahead of it.

        Args:
            attention_mask: ``(B, T)`` 1 for real tokens. documents: ``(B, T)`` or None.

        Shape: returns two ``(B, T)`` long tensors.
        """
        real = attention_mask.bool()
        within = document_positions(attention_mask, documents)  # (B, T)
        local = torch.where(real, within, NOT_IN_DOCUMENT)
        chunk_positions = row_positions(attention_mask)
        if self.pack and self.reset_positions:
            chunk_positions = torch.where(real, within, chunk_positions)
        return local, chunk_positions

    def build(self, attention_mask: torch.Tensor, documents: torch.Tensor | None = None) -> torch.Tensor:
        """Combine the enabled masks for a batch (see the module docstring for how).

        Args:
            attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
            documents: ``(B, T)`` document index of each token of a packed row (padding: -1);
                None = one document per row. Needed for the document mask.

        Shape: returns a boolean ``(B, 1, T, T)``, True = may attend.
        """
        if self.causal is None:
            raise ValueError("Resolve the causal choice first: policy.for_model(decoder).")
        batch, length = attention_mask.shape
        device = attention_mask.device
        if documents is None and self.pack and self.document_mask:
            raise ValueError("A packed policy needs the documents of each token to build its mask.")
        local, chunk_positions = self.part_positions(attention_mask, documents)  # (B, T) each
        same_document = masks.block_diagonal_mask(documents) if documents is not None else None
        padding = None
        if self.padding_mask:
            keys = masks.padding_mask(attention_mask)  # (B, 1, 1, T): nobody attends to a pad
            # A pad's own query row means nothing, so it attends to nothing: an empty row, which
            # the reference zeroes. Real rows are unaffected (they never read a pad's output).
            padding = keys & keys.transpose(-1, -2)  # (B, 1, T, T)
        causal = None
        if self.causal:
            causal = masks.causal_mask(length, device)
            if self.prefix:
                causal = causal | masks.bidirectional_prefix_mask(local, self.prefix, documents)
        window = None
        if self.window:
            # Two-sided: the causal part above already hides the future (except a prefix's own).
            window = masks.sliding_window_mask(length, self.window, causal=False, device=device)
            if self.sinks:
                window = window | masks.sink_mask(local, self.sinks)
        chunks = None
        if self.chunk:
            chunks = masks.chunked_mask(chunk_positions, self.chunk)
        combined = masks.combine(
            masks.full_mask(length, device),
            causal,
            window,
            chunks,
            same_document if self.pack and self.document_mask else None,
            padding,
        )
        return combined.expand(batch, 1, length, length)  # (B, 1, T, T)

    def describe(self) -> str:
        """A short human label in the run's language, e.g. ``causal + padding, window 4 + 2 sinks,
        packed, no document mask``."""
        causal = _("prefix-LM {prefix}").format(prefix=self.prefix) if self.prefix else _("causal")
        parts = [name for name, on in ((causal, self.causal), (_("padding"), self.padding_mask)) if on]
        clauses = [" + ".join(parts) if parts else _("no mask")]
        if self.window:
            window = _("window {width}").format(width=self.window)
            if self.sinks:
                window += " + " + _("{count} sinks").format(count=self.sinks)
            clauses.append(window)
        if self.chunk:
            clauses.append(_("chunks of {size}").format(size=self.chunk))
        if self.pack:
            # Named by what is missing: "packed" alone is packing done right.
            clauses.append(_("packed"))
            if not self.document_mask:
                clauses.append(_("no document mask"))
            if not self.reset_positions:
                clauses.append(_("no position reset"))
        return _(", ").join(clauses)
