"""The block view: a policy's mask as FlexAttention sees it, in blocks of ``block_size`` tokens.

FlexAttention does not read a (T, T) mask. It reads a ``mask_mod(b, h, q_idx, kv_idx)`` function
and a ``BlockMask`` that ``create_block_mask`` builds from it: the (query, key) grid cut into
``block_size × block_size`` blocks, each one

* **empty** (no cell may attend: the kernel skips the block),
* **partial** (some cells may attend: the kernel computes the block and applies ``mask_mod``),
* **full** (every cell may attend: the kernel computes the block without calling ``mask_mod``).

The share of empty blocks is the work FlexAttention saves. Everything here is built from the
policy's built-in parts (:mod:`attention_viz.policy`), never from text a user typed, and
:func:`mask_mod_snippet` writes those parts out as Python source for the user to copy: the app
never executes it.

Edge blocks: when T is not a multiple of ``block_size``, the last block row and column are cut
short. ``create_block_mask`` pads them with masked cells, so they are never full (they are
partial if any real cell may attend), and the kernel still calls ``mask_mod`` on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn.attention.flex_attention import and_masks, create_block_mask, or_masks

from attention_viz import masks
from attention_viz.i18n import N_, _
from attention_viz.policy import (
    NOT_IN_DOCUMENT,
    MaskPolicy,
    check_whole_number,
)

__all__ = [
    "EMPTY",
    "FULL",
    "KIND_NAMES",
    "MAX_BLOCK_SIZE",
    "MIN_BLOCK_SIZE",
    "PARTIAL",
    "BlockView",
    "block_view",
    "mask_mod_snippet",
    "policy_mask_mod",
    "text_drawing",
]

MaskMod = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

EMPTY, PARTIAL, FULL = 0, 1, 2  # the values of BlockView.kinds
# Indexed by kind; in English, shown in the run's language (``_``).
KIND_NAMES = (N_("empty"), N_("partial"), N_("full"))
MIN_BLOCK_SIZE = 16  # smaller blocks make a grid with more blocks than a screen has pixels
MAX_BLOCK_SIZE = 1024  # larger blocks than any FlexAttention kernel uses
# create_block_mask may call mask_mod up to T rounded up to its block size, so the lookup
# tensors are padded to a multiple of the largest block size (the padding is masked anyway).
_LOOKUP_MULTIPLE = MAX_BLOCK_SIZE


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _check_block_size(block_size: object) -> int:
    """``block_size`` as an int if it is a whole number in ``MIN_BLOCK_SIZE..MAX_BLOCK_SIZE``."""
    size = check_whole_number("block_size (tokens per FlexAttention block)", block_size)
    if not MIN_BLOCK_SIZE <= size <= MAX_BLOCK_SIZE:
        raise ValueError(
            f"block_size must be between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE} tokens, got {size}; "
            "FlexAttention's default is 128."
        )
    return size


def _one_row(
    policy: MaskPolicy, attention_mask: torch.Tensor, documents: torch.Tensor | None, item: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Check the inputs and pick row ``item``: its real flags, document ids and both positions,
    exactly as :meth:`MaskPolicy.build` counts them.

    Shape: returns ``(T,)`` bool real flags, ``(T,)`` long document ids (or None), ``(T,)`` long
    positions within each document (padding: ``NOT_IN_DOCUMENT``, in no prefix and no sinks) and
    ``(T,)`` long row positions from the first real token (for chunks).
    """
    if not policy.is_resolved:
        raise ValueError("Resolve the causal choice first: policy.for_model(decoder).")
    if attention_mask.ndim != 2 or attention_mask.shape[1] < 1:
        raise ValueError(
            f"attention_mask must have shape (batch, tokens) with at least one token, got {tuple(attention_mask.shape)}."
        )
    if documents is not None and documents.shape != attention_mask.shape:
        raise ValueError(
            f"documents must have the shape of attention_mask {tuple(attention_mask.shape)}, got {tuple(documents.shape)}."
        )
    if documents is None and policy.pack and policy.document_mask:
        raise ValueError("A packed policy needs the documents of each token to build its mask.")
    batch = attention_mask.shape[0]
    row = check_whole_number("item (the batch row)", item, 0)
    if row >= batch:
        raise ValueError(f"item {row} does not exist: the batch has rows 0–{batch - 1}.")
    attention_mask = attention_mask.cpu()
    documents = documents.cpu() if documents is not None else None
    real = attention_mask[row].bool()  # (T,)
    positions, chunk_positions = (
        part[row] for part in policy.part_positions(attention_mask, documents)
    )  # (T,) each
    ids = documents[row].long() if documents is not None else None  # (T,)
    return real, ids, positions, chunk_positions


def policy_mask_mod(
    policy: MaskPolicy, attention_mask: torch.Tensor, documents: torch.Tensor | None = None, item: int = 0
) -> MaskMod:
    """The policy as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx)``, True = may attend.

    One small ``mask_mod`` per part, combined as :meth:`MaskPolicy.build` combines them (see
    :mod:`attention_viz.policy`), with ``and_masks`` / ``or_masks``. Per-token facts (real or
    padding, document id, positions) are read from lookup tensors of batch row ``item``, padded
    to a multiple of ``MAX_BLOCK_SIZE``; indices at or beyond T are always masked. ``b`` is
    ignored: the mask_mod describes the one row ``item``.

    Args:
        policy: a resolved policy (``policy.causal`` is True or False).
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        documents: ``(B, T)`` document index of each token of a packed row (padding: -1), or
            None (one document per row).
        item: the zero-based batch row to describe.

    Shape: the returned function maps index tensors to a bool tensor of their broadcast shape;
    ``create_mask(mask_mod, 1, 1, T, T)`` equals ``policy.build(attention_mask, documents)[item:item + 1]``.
    """
    real, ids, positions, chunk_positions = _one_row(policy, attention_mask, documents, item)
    length = real.shape[0]
    padded = _round_up(length, _LOOKUP_MULTIPLE) - length

    def pad(lookup: torch.Tensor, value: int | bool) -> torch.Tensor:
        return torch.nn.functional.pad(lookup, (0, padded), value=value)  # (T + padded,)

    real, positions, chunk_positions = (
        pad(real, False),
        pad(positions, NOT_IN_DOCUMENT),
        pad(chunk_positions, 0),
    )
    ids = pad(ids, -1) if ids is not None else None

    def inside(b, h, q_idx, kv_idx):
        # create_block_mask may ask about indices past T (its blocks are whole): never allowed.
        return (q_idx < length) & (kv_idx < length)

    def causal(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx

    def prefix(b, h, q_idx, kv_idx):
        both = (positions[q_idx] < policy.prefix) & (positions[kv_idx] < policy.prefix)
        if ids is not None:  # each document has its own prefix
            both = both & (ids[q_idx] == ids[kv_idx])
        return both

    def window(b, h, q_idx, kv_idx):
        # Two-sided: the causal part hides the future (except a prefix's own).
        return (q_idx - kv_idx).abs() < policy.window

    def sinks(b, h, q_idx, kv_idx):
        return positions[kv_idx] < policy.sinks

    def same_chunk(b, h, q_idx, kv_idx):
        # Floor division: left pads (negative positions) form chunks of their own.
        return chunk_positions[q_idx] // policy.chunk == chunk_positions[kv_idx] // policy.chunk

    def same_document(b, h, q_idx, kv_idx):
        return ids[q_idx] == ids[kv_idx]

    def padding(b, h, q_idx, kv_idx):
        return real[q_idx] & real[kv_idx]

    parts: list[MaskMod] = [inside]
    if policy.causal:
        parts.append(or_masks(causal, prefix) if policy.prefix else causal)
    if policy.window:
        parts.append(or_masks(window, sinks) if policy.sinks else window)
    if policy.chunk:
        parts.append(same_chunk)
    if policy.pack and policy.document_mask:
        parts.append(same_document)
    if policy.padding_mask:
        parts.append(padding)
    return and_masks(*parts)


@dataclass(frozen=True)
class BlockView:
    """A mask at FlexAttention block granularity, as ``create_block_mask`` classified it.

    Attributes:
        kinds: ``(Qb, Kb)`` long, one entry per (query block, key block): ``EMPTY`` (0),
            ``PARTIAL`` (1) or ``FULL`` (2). Block ``i`` holds tokens ``i * block_size`` to
            ``min((i + 1) * block_size, length) - 1``.
        block_size: tokens per block along each axis.
        length: T, the number of tokens (queries = keys).
    """

    kinds: torch.Tensor
    block_size: int
    length: int

    @property
    def blocks(self) -> int:
        """How many blocks the grid has (``Qb * Kb``)."""
        return self.kinds.numel()

    @property
    def full_blocks(self) -> int:
        return int((self.kinds == FULL).sum())

    @property
    def partial_blocks(self) -> int:
        return int((self.kinds == PARTIAL).sum())

    @property
    def empty_blocks(self) -> int:
        return int((self.kinds == EMPTY).sum())

    @property
    def sparsity(self) -> float:
        """The percentage of blocks FlexAttention skips (the empty ones).

        This is ``BlockMask.sparsity()`` when T is a multiple of ``block_size``. Otherwise torch
        divides the area of the computed (whole, padded) blocks by the unpadded T × T and can
        report a negative percentage; counting blocks is what the kernel really skips.
        """
        return 100.0 * self.empty_blocks / self.blocks

    def token_range(self, index: int) -> tuple[int, int]:
        """The zero-based first and last token (inclusive) of block ``index``."""
        first = index * self.block_size
        return first, min(first + self.block_size, self.length) - 1


def _dense(counts: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """A BlockMask's ordered block lists as a dense grid: row i lists its blocks first.

    Shape: ``counts`` is ``(Qb,)``, ``indices`` ``(Qb, Kb)``; returns ``(Qb, Kb)`` bool.
    """
    slots = torch.arange(indices.shape[-1])[None, :] < counts[:, None]  # (Qb, Kb): listed slots
    # Unlisted slots hold leftover indices, so add (never overwrite) the listed ones.
    hits = torch.zeros(indices.shape, dtype=torch.long).scatter_add_(1, indices.long(), slots.long())
    return hits > 0  # (Qb, Kb)


def block_view(
    policy: MaskPolicy,
    attention_mask: torch.Tensor,
    documents: torch.Tensor | None = None,
    block_size: int = 128,
    item: int = 0,
) -> BlockView:
    """Classify the policy's mask into FlexAttention blocks with torch's own ``create_block_mask``.

    Args:
        policy: a resolved policy (``policy.causal`` is True or False).
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        documents: ``(B, T)`` document index of each token of a packed row (padding: -1), or None.
        block_size: tokens per block, a whole number from 16 to 1024 (FlexAttention's default: 128).
        item: the zero-based batch row to show.

    Shape: ``kinds`` of the result is ``(ceil(T / block_size), ceil(T / block_size))``.
    """
    size = _check_block_size(block_size)
    mask_mod = policy_mask_mod(policy, attention_mask, documents, item)
    length = attention_mask.shape[-1]
    block_mask = create_block_mask(
        mask_mod, B=None, H=None, Q_LEN=length, KV_LEN=length, device="cpu", BLOCK_SIZE=size
    )
    partial = _dense(block_mask.kv_num_blocks[0, 0], block_mask.kv_indices[0, 0])  # (Qb, Kb)
    full = torch.zeros_like(partial)  # (Qb, Kb)
    if block_mask.full_kv_num_blocks is not None:
        full = _dense(block_mask.full_kv_num_blocks[0, 0], block_mask.full_kv_indices[0, 0])
    assert not (partial & full).any(), "create_block_mask listed a block as both partial and full"
    kinds = torch.full(partial.shape, EMPTY, dtype=torch.long)  # (Qb, Kb)
    kinds[partial] = PARTIAL
    kinds[full] = FULL
    return BlockView(kinds=kinds, block_size=size, length=length)


def _int(name: str, value: object) -> int:
    """A policy width, rechecked as a plain int before it is written into source code."""
    return check_whole_number(name, value, 1)


def mask_mod_snippet(policy: MaskPolicy) -> str:
    """Copyable Python source that defines ``mask_mod`` for FlexAttention from the policy.

    Only validated ints from the policy go into the source; the inputs it reads (``is_real``,
    ``positions``, ``chunk_positions``, ``document_ids``: whichever the policy needs) are
    described in its comments for the user to supply. The app shows it and never runs it.
    """
    if not policy.is_resolved:
        raise ValueError("Resolve the causal choice first: policy.for_model(decoder).")
    packed_ids = policy.pack and (policy.document_mask or bool(policy.prefix))
    constants: list[str] = []
    functions: list[str] = []
    parts: list[str] = []
    if policy.causal:
        functions.append("def causal(b, h, q_idx, kv_idx):\n    return kv_idx <= q_idx")
        if policy.prefix:
            constants.append(f"PREFIX = {_int('prefix', policy.prefix)}  # bidirectional tokens per document")
            same = " & (document_ids[q_idx] == document_ids[kv_idx])" if packed_ids else ""
            functions.append(
                "def prefix(b, h, q_idx, kv_idx):\n"
                "    # Prefix tokens see each other both ways.\n"
                f"    return (positions[q_idx] < PREFIX) & (positions[kv_idx] < PREFIX){same}"
            )
            parts.append("or_masks(causal, prefix)")
        else:
            parts.append("causal")
    if policy.window:
        constants.append(
            f"WINDOW = {_int('window', policy.window)}  # keys closer than this, the query included"
        )
        functions.append(
            "def window(b, h, q_idx, kv_idx):\n"
            "    # Two-sided: the causal part (if any) hides the future.\n"
            "    return (q_idx - kv_idx).abs() < WINDOW"
        )
        if policy.sinks:
            constants.append(
                f"SINKS = {_int('sinks', policy.sinks)}  # first tokens of each document, always visible"
            )
            functions.append("def sinks(b, h, q_idx, kv_idx):\n    return positions[kv_idx] < SINKS")
            parts.append("or_masks(window, sinks)")
        else:
            parts.append("window")
    if policy.chunk:
        constants.append(f"CHUNK = {_int('chunk', policy.chunk)}  # tokens per chunk")
        functions.append(
            "def same_chunk(b, h, q_idx, kv_idx):\n"
            "    return chunk_positions[q_idx] // CHUNK == chunk_positions[kv_idx] // CHUNK"
        )
        parts.append("same_chunk")
    if policy.pack and policy.document_mask:
        functions.append(
            "def same_document(b, h, q_idx, kv_idx):\n    return document_ids[q_idx] == document_ids[kv_idx]"
        )
        parts.append("same_document")
    if policy.padding_mask:
        functions.append("def padding(b, h, q_idx, kv_idx):\n    return is_real[q_idx] & is_real[kv_idx]")
        parts.append("padding")

    inputs = _snippet_inputs(policy, packed_ids)
    lines = [
        "# FlexAttention mask_mod written by attention-viz from its built-in mask parts.",
        "# True = may attend; zero-based indices.",
    ]
    if inputs:
        lines += [
            "# Inputs: 1-D tensors over the row's T tokens, on the device you attend on. If",
            "# something asks mask_mod about indices past T, pad them (is_real with False):",
            *inputs,
        ]
    if not parts:
        return "\n".join(
            [
                *lines,
                "",
                "",
                "def mask_mod(b, h, q_idx, kv_idx):",
                "    # No mask part is on: every query sees every key.",
                "    return q_idx >= 0",
                "",
            ]
        )
    names = "and_masks, or_masks" if any(part.startswith("or_masks") for part in parts) else "and_masks"
    lines += [f"from torch.nn.attention.flex_attention import {names}", ""]
    if constants:
        lines += [*constants, ""]
    lines += ["", "\n\n\n".join(functions), "", "", f"mask_mod = and_masks({', '.join(parts)})", ""]
    return "\n".join(lines)


def _snippet_inputs(policy: MaskPolicy, packed_ids: bool) -> list[str]:
    """Comment lines naming each input the snippet reads, and how to compute it."""
    inputs: list[tuple[str, str, list[str]]] = []  # (name, dtype, description lines)
    if policy.padding_mask:
        inputs.append(
            ("is_real", "bool", ["True for real tokens, False for padding;", "attention_mask[0].bool()"])
        )
    if policy.prefix or policy.sinks:
        inputs.append(
            (
                "positions",
                "long",
                [
                    "each real token's position among the real tokens of its",
                    "own document; padding: above any prefix or sink count; torch.where(",
                    "is_real, document_positions(attention_mask, documents)[0], NOT_IN_DOCUMENT)",
                ],
            )
        )
    if policy.chunk and policy.pack and policy.reset_positions:
        recipe = [
            "each real token's position in its own document (chunks",
            "restart with the positions); padding: its row position; torch.where(is_real,",
            "document_positions(attention_mask, documents)[0], row_positions(attention_mask)[0])",
        ]
        inputs.append(("chunk_positions", "long", recipe))
    elif policy.chunk:
        recipe = [
            "the row index counted from the row's first real token",
            "(left pads negative); row_positions(attention_mask)[0]",
        ]
        inputs.append(("chunk_positions", "long", recipe))
    if packed_ids:
        inputs.append(("document_ids", "long", ["the document index of each token (padding: -1)"]))
    lines = []
    for name, dtype, description in inputs:
        lines.append(f"#   {name:<15} (T,) {dtype}: {description[0]}")
        lines += [f"#   {'':<15} {text}" for text in description[1:]]
    if any(name in ("positions", "chunk_positions") for name, _, _ in inputs):
        lines.append("# (document_positions, row_positions and NOT_IN_DOCUMENT are in attention_viz.policy.)")
    return lines


def text_drawing(mask: torch.Tensor, most: int = 64) -> str:
    """The ■/⬚ drawing of a token-level mask (for slides), cut to the first ``most`` tokens.

    Rows are queries, columns keys, ■ = may attend (:func:`attention_viz.masks.render_mask`).
    A cut drawing ends with a line saying so (in the run's language).

    Shape: ``mask`` is ``(T, T)`` bool, or any shape whose leading axes are all 1.
    """
    limit = check_whole_number("most (tokens to draw)", most, 1)
    allowed = masks.as_boolean(mask)
    if allowed.ndim < 2 or allowed.numel() != allowed.shape[-2] * allowed.shape[-1]:
        raise ValueError(f"text_drawing draws one (T, T) mask; pick one item first, got {tuple(mask.shape)}.")
    square = allowed.reshape(allowed.shape[-2], allowed.shape[-1])  # (T, T)
    length = square.shape[0]
    drawing = masks.render_mask(square[:limit, :limit])
    if length <= limit:
        return drawing
    return (
        drawing
        + "\n"
        + _("… cut: queries and keys 0–{last} of {length} tokens shown.").format(
            last=limit - 1, length=length
        )
    )
