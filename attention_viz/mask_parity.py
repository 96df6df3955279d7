"""Parity with transformers' own masks: our policy's mask against the one ``masking_utils`` builds.

For the same inputs, :func:`transformers_mask` builds the mask with transformers' own functions
only, and :func:`compare_masks` sets it beside :meth:`MaskPolicy.build`, cell for cell.

Which transformers functions build it:

* **The model's own masks** (the policy is what the config asks for: causal and padding for a
  decoder, plus the config's sliding window or chunk; padding only for an encoder; packed texts
  kept apart): the ``create_*_mask`` function the model's forward calls (``create_causal_mask``,
  ``create_sliding_window_causal_mask``, ``create_chunked_causal_mask`` or
  ``create_bidirectional_mask``), on a copy of the config set to ``sdpa`` with the "skip the mask"
  shortcuts off, so it always returns a dense boolean mask. A packed decoder row is given as
  padding-free training gives it: ``position_ids`` that restart at each document and no
  ``attention_mask``, so transformers finds the documents itself (``find_packed_sequence_indices``).
* **Any other policy**: transformers' mask functions (``causal_mask_function``,
  ``sliding_window_overlay``, ``chunked_overlay``, ``packed_sequence_mask_function``,
  ``padding_mask_function``, ...) combined with ``and_masks`` / ``or_masks`` as the policy
  module's docstring combines our parts, and evaluated with ``sdpa_mask``. The two parts
  transformers has no function for, the prefix-LM's bidirectional prefix and attention sinks, are
  index functions written here from the policy's words (the first P or S real tokens of each
  document), not from our tensor builders; the result names them in ``written_here``.

Padding query rows: our padding mask leaves a pad token's own query row empty (it means nothing),
while transformers masks pad *keys* only, so its pad rows may see real tokens. When the policy's
padding mask is on, differences in pad query rows are reported apart, in ``by_convention``, and
do not count; every other cell counts. A leak into or out of a real token always lies in a real
query row (a real query seeing a pad key, or a real key it must not see), so none is hidden.
With the padding mask off, pad rows are compared like any other.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import masking_utils as mu

from attention_viz.capture import encode, position_ids_for
from attention_viz.i18n import _
from attention_viz.loading import LoadedModel
from attention_viz.policy import MaskPolicy

__all__ = [
    "MaskParity",
    "TransformersMask",
    "compare",
    "compare_masks",
    "config_policy",
    "mask_parity",
    "transformers_mask",
]

MaskFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Layer kinds (config.layer_types) whose mask one MaskPolicy can express, and the function the
# model's forward calls for each (as masking_utils.LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING).
_CREATE = {
    "full_attention": mu.create_causal_mask,
    "sliding_attention": mu.create_sliding_window_causal_mask,
    "chunked_attention": mu.create_chunked_causal_mask,
}


@dataclass(frozen=True)
class TransformersMask:
    """A mask built by transformers' ``masking_utils``, and what built it.

    Attributes:
        mask: ``(B, 1, T, T)`` boolean, True = may attend.
        sources: the transformers functions used, e.g. ``"masking_utils.create_causal_mask"``.
        written_here: policy parts transformers has no function for, written in this module.
        model_default: True if the config's own ``create_*_mask`` built it (the model's masks).
    """

    mask: torch.Tensor
    sources: tuple[str, ...]
    written_here: tuple[str, ...] = ()
    model_default: bool = False


@dataclass(frozen=True)
class MaskParity:
    """Our policy's mask beside transformers' own, cell for cell.

    Attributes:
        ours: ``(B, 1, T, T)`` :meth:`MaskPolicy.build`.
        theirs: ``(B, 1, T, T)`` :func:`transformers_mask`.
        differ: ``(B, 1, T, T)`` cells where the two disagree and that count: all but
            ``by_convention``.
        by_convention: ``(B, 1, T, T)`` disagreements in padding query rows, which our padding
            mask leaves empty on purpose (only when the policy's padding mask is on).
        cells_differ: ``differ.sum()``. cells_by_convention: ``by_convention.sum()``.
        sources: the transformers functions that built ``theirs``.
        written_here: the policy parts built by index functions of this module instead.
        model_default: ``theirs`` is the config's own ``create_*_mask`` result.
        policy: the resolved policy compared.
    """

    ours: torch.Tensor
    theirs: torch.Tensor
    differ: torch.Tensor
    by_convention: torch.Tensor
    cells_differ: int
    cells_by_convention: int
    sources: tuple[str, ...]
    written_here: tuple[str, ...]
    model_default: bool
    policy: MaskPolicy

    @property
    def equal(self) -> bool:
        """No cell that counts differs."""
        return self.cells_differ == 0


def _sdpa_config(config: object) -> object:
    """A copy of ``config`` whose masks come out as dense booleans (``sdpa``), the model's own untouched.

    A model loaded for capture names our attention function, which ``masking_utils`` does not know,
    and would make every ``create_*_mask`` return None.
    """
    config = copy.deepcopy(config)
    config._attn_implementation = "sdpa"
    return config


def _config_kind(config: object, decoder: bool) -> str:
    """The layer kind the config asks for: ``full_attention``, ``sliding_attention``,
    ``chunked_attention``, or ``bidirectional`` for an encoder."""
    if not decoder:
        return "bidirectional"
    kinds = set(getattr(config, "layer_types", None) or ())
    if len(kinds) > 1:
        raise ValueError(
            f"This model mixes layer kinds ({', '.join(sorted(kinds))}), so its layers use different "
            "masks; one mask policy applies to every layer. Compare against a config whose layers "
            "all share one kind."
        )
    if kinds:
        kind = kinds.pop()
    elif getattr(config, "attention_chunk_size", None):
        kind = "chunked_attention"
    elif getattr(config, "sliding_window", None):  # Mistral's rule: a window unless it is None
        kind = "sliding_attention"
    else:
        kind = "full_attention"
    if kind not in _CREATE:
        raise ValueError(
            f"Layers of kind {kind!r} have no mask one policy can express; known: {', '.join(_CREATE)}."
        )
    return kind


def config_policy(config: object, policy: MaskPolicy, decoder: bool) -> MaskPolicy:
    """The masks the config asks for, keeping ``policy``'s batching (padding side, length, packing):
    :meth:`MaskPolicy.model_default` plus the config's sliding window or chunk size."""
    default = policy.model_default(decoder)
    kind = _config_kind(config, decoder)
    if kind == "sliding_attention":
        return default.with_changes(window=config.sliding_window)
    if kind == "chunked_attention":
        return default.with_changes(chunk=config.attention_chunk_size)
    return default


def transformers_mask(
    config: object,
    attention_mask: torch.Tensor,
    policy: MaskPolicy,
    *,
    decoder: bool,
    documents: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> TransformersMask:
    """The mask ``policy`` asks for, built only with transformers' ``masking_utils``.

    Args:
        config: the model's config (copied, never changed).
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        policy: the masks to build; ``causal=None`` is resolved with ``decoder``.
        decoder: True for a causal language model (picks the model's own masks).
        documents: ``(B, T)`` document index of each token of a packed row (padding -1), or None.
        position_ids: ``(B, T)`` the positions the model is given; needed for a packed decoder
            row, whose documents transformers finds from restarted positions.

    Shape: ``mask`` is a boolean ``(B, 1, T, T)``, True = may attend.
    """
    policy = policy.for_model(decoder)
    if policy == config_policy(config, policy, decoder):
        return _model_default(_sdpa_config(config), attention_mask, policy, decoder, documents, position_ids)
    return _composed(attention_mask, policy, documents)


def _model_default(
    config: object,
    attention_mask: torch.Tensor,
    policy: MaskPolicy,
    decoder: bool,
    documents: torch.Tensor | None,
    position_ids: torch.Tensor | None,
) -> TransformersMask:
    """The config's own ``create_*_mask``, forced to a dense boolean. Shapes as :func:`transformers_mask`."""
    batch, length = attention_mask.shape
    # Only the batch size, length, dtype and device of the embeddings are read.
    embeds = torch.zeros(batch, length, 1, device=attention_mask.device)  # (B, T, 1)
    real = attention_mask.bool()  # (B, T)
    kind = _config_kind(config, decoder)
    if not decoder:
        create, sources = mu.create_bidirectional_mask, ["masking_utils.create_bidirectional_mask"]
        extra = {}
        if policy.pack:
            # Encoders find no documents from positions: give them as an and-mask, as a packing
            # collator for an encoder would.
            if documents is None:
                raise ValueError("A packed policy needs the documents of each token to build its mask.")
            extra["and_mask_function"] = mu.packed_sequence_mask_function(documents)
            sources.append("masking_utils.packed_sequence_mask_function")
        built = create(config, embeds, real, allow_is_bidirectional_skip=False, **extra)
        fallback = mu.bidirectional_mask_function
    else:
        create = _CREATE[kind]
        sources = [f"masking_utils.{create.__name__}"]
        given_mask: torch.Tensor | None = real
        if policy.pack:
            if position_ids is None:
                raise ValueError(
                    "A packed decoder row needs its position_ids: transformers finds the documents from them."
                )
            # Padding-free packing: positions only. transformers looks for documents only when
            # there is no attention_mask; a pad (position 0) is then a document of its own.
            given_mask = None
            if mu.find_packed_sequence_indices(position_ids) is not None:
                sources.append("masking_utils.find_packed_sequence_indices")
        built = create(
            config, embeds, given_mask, None, position_ids=position_ids, allow_is_causal_skip=False
        )
        fallback = mu.causal_mask_function
    sources.append("masking_utils.sdpa_mask")
    if built is None:  # "no mask needed": say so, and draw what that means
        sources.append(
            _("{source} returned None (no mask needed), drawn with {fallback}").format(
                source=sources[0], fallback="masking_utils.sdpa_mask"
            )
        )
        built = mu.sdpa_mask(
            batch, length, length, mask_function=fallback, attention_mask=real, allow_is_causal_skip=False
        )
    if (
        not isinstance(built, torch.Tensor)
        or built.dtype != torch.bool
        or built.shape != (batch, 1, length, length)
    ):
        raise TypeError(
            f"{sources[0]} did not return a dense boolean (B, 1, T, T) mask: {type(built).__name__}."
        )
    return TransformersMask(mask=built, sources=tuple(sources), model_default=True)


def _composed(
    attention_mask: torch.Tensor, policy: MaskPolicy, documents: torch.Tensor | None
) -> TransformersMask:
    """The policy's parts as transformers' mask functions, ANDed and drawn with ``sdpa_mask``.

    Mirrors the policy module's docstring::

        allowed = (causal  OR  bidirectional prefix)        if causal
              AND (sliding window  OR  attention sinks)     if window
              AND same chunk                                if chunk
              AND same document                             if pack and document_mask
              AND real key                                  if padding_mask

    Shapes as :func:`transformers_mask`.
    """
    batch, length = attention_mask.shape
    real = attention_mask.bool()  # (B, T)
    rank = _rank_in_document(real, documents)  # (B, T)
    document = documents if documents is not None else torch.zeros_like(attention_mask)  # (B, T)
    sources: list[str] = []
    here: list[str] = []

    def use(name: str) -> None:
        if f"masking_utils.{name}" not in sources:
            sources.append(f"masking_utils.{name}")

    parts: list[MaskFunction] = []
    if policy.causal:
        use("causal_mask_function")
        base = mu.causal_mask_function
        if policy.prefix:
            use("or_masks")
            base = mu.or_masks(base, _prefix_function(rank, document, policy.prefix))
            here.append(
                _(
                    "prefix-LM: the first {count} real tokens of each document see each other both ways"
                ).format(count=policy.prefix)
            )
        parts.append(base)
    else:
        use("bidirectional_mask_function")
        parts.append(mu.bidirectional_mask_function)
    if policy.window:
        if policy.causal and not policy.prefix:
            use("sliding_window_overlay")  # keys at most window-1 back; the causal part hides the future
            window = mu.sliding_window_overlay(policy.window)
        else:
            # transformers' two-sided window is inclusive (|q - k| <= w, 2w+1 keys) and its causal
            # one exclusive (q - k < w, w keys); ours is exclusive both ways, hence window - 1.
            use("sliding_window_bidirectional_overlay")
            window = mu.sliding_window_bidirectional_overlay(policy.window - 1)
        if policy.sinks:
            use("or_masks")
            window = mu.or_masks(window, _sink_function(rank, policy.sinks))
            here.append(
                _("attention sinks: the first {count} real tokens of each document stay visible").format(
                    count=policy.sinks
                )
            )
        parts.append(window)
    if policy.chunk:
        use("chunked_overlay")
        # Left padding counted as create_chunked_causal_mask counts it, so chunks start at the first real token.
        left_padding = (real.long().cumsum(-1) == 0).sum(-1)  # (B,)
        chunked = mu.chunked_overlay(policy.chunk, left_padding)
        if policy.pack and policy.reset_positions:
            # A packed row whose positions restart: transformers remaps the indices to the
            # positions, so chunks restart at each text (padding keeps its row index).
            use("remap_positions_for_packed_sequence")
            rows = torch.arange(length)[None] - left_padding[:, None]  # (B, T)
            remapped = torch.where(real, rank, rows)  # rank: real tokens within each text
            chunked = mu.remap_positions_for_packed_sequence(
                mu.chunked_overlay(policy.chunk, torch.zeros_like(left_padding)), remapped
            )
        parts.append(chunked)
    if policy.pack and policy.document_mask:
        if documents is None:
            raise ValueError("A packed policy needs the documents of each token to build its mask.")
        use("packed_sequence_mask_function")
        parts.append(mu.packed_sequence_mask_function(documents))
    if policy.padding_mask:
        use("padding_mask_function")
        parts.append(mu.padding_mask_function(real))
    use("and_masks")
    use("sdpa_mask")
    built = mu.sdpa_mask(
        batch_size=batch,
        q_length=length,
        kv_length=length,
        mask_function=mu.and_masks(*parts),
        attention_mask=None,  # padding is a part above, so the sources name it
        allow_is_causal_skip=False,
        allow_is_bidirectional_skip=False,
        device=attention_mask.device,
    )
    mask = built.expand(batch, 1, length, length)  # (B, 1, T, T)
    return TransformersMask(mask=mask, sources=tuple(sources), written_here=tuple(here))


def _rank_in_document(real: torch.Tensor, documents: torch.Tensor | None) -> torch.Tensor:
    """Each real token's zero-based rank among the real tokens of its document, counted by a plain
    loop (independent of :func:`attention_viz.policy.document_positions`). Padding gets ``T``,
    which is below no prefix or sink count, so a pad is never a prefix or sink token.

    Args:
        real: ``(B, T)`` True for real tokens.
        documents: ``(B, T)`` document index of each token, or None (one document per row).

    Shape: returns ``(B, T)`` long.
    """
    batch, length = real.shape
    flags = real.tolist()
    ids = documents.tolist() if documents is not None else [[0] * length] * batch
    rank = [[length] * length for _ in range(batch)]
    for row in range(batch):
        seen: dict[int, int] = {}
        for index in range(length):
            if flags[row][index]:
                document = ids[row][index]
                rank[row][index] = seen.get(document, 0)
                seen[document] = rank[row][index] + 1
    return torch.tensor(rank, dtype=torch.long, device=real.device)  # (B, T)


def _prefix_function(rank: torch.Tensor, document: torch.Tensor, prefix: int) -> MaskFunction:
    """Prefix-LM's bidirectional block: both tokens among the first ``prefix`` real tokens of one document.

    Args:
        rank: ``(B, T)`` rank of each token in its document (padding: ``T``).
        document: ``(B, T)`` document index of each token.
    """

    def inner(batch_idx, head_idx, q_idx, kv_idx):
        return (
            (rank[batch_idx, q_idx] < prefix)
            & (rank[batch_idx, kv_idx] < prefix)
            & (document[batch_idx, q_idx] == document[batch_idx, kv_idx])
        )

    return inner


def _sink_function(rank: torch.Tensor, sinks: int) -> MaskFunction:
    """Attention sinks: the key is among the first ``sinks`` real tokens of its document.

    Args:
        rank: ``(B, T)`` rank of each token in its document (padding: ``T``).
    """

    def inner(batch_idx, head_idx, q_idx, kv_idx):
        return rank[batch_idx, kv_idx] < sinks

    return inner


def compare(
    ours: torch.Tensor, theirs: TransformersMask, attention_mask: torch.Tensor, policy: MaskPolicy
) -> MaskParity:
    """Set two masks side by side, cell for cell (see the module docstring for pad query rows).

    Args:
        ours: ``(B, 1, T, T)`` boolean, e.g. ``policy.build(...)``.
        theirs: transformers' mask and its sources, ``mask`` ``(B, 1, T, T)``.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        policy: the resolved policy; its padding mask decides whether pad rows are a convention.

    Shape: every mask of the result is a boolean ``(B, 1, T, T)``.
    """
    if ours.shape != theirs.mask.shape:
        raise ValueError(
            f"The masks differ in shape: ours {tuple(ours.shape)}, theirs {tuple(theirs.mask.shape)}."
        )
    disagree = ours != theirs.mask  # (B, 1, T, T)
    pad_query = (attention_mask == 0)[:, None, :, None]  # (B, 1, T, 1)
    by_convention = disagree & pad_query if policy.padding_mask else torch.zeros_like(disagree)
    differ = disagree & ~by_convention
    return MaskParity(
        ours=ours,
        theirs=theirs.mask,
        differ=differ,
        by_convention=by_convention,
        cells_differ=int(differ.sum()),
        cells_by_convention=int(by_convention.sum()),
        sources=theirs.sources,
        written_here=theirs.written_here,
        model_default=theirs.model_default,
        policy=policy,
    )


def compare_masks(
    config: object,
    attention_mask: torch.Tensor,
    policy: MaskPolicy,
    *,
    decoder: bool,
    documents: torch.Tensor | None = None,
    position_ids: torch.Tensor | None = None,
) -> MaskParity:
    """Our mask for ``policy`` against transformers' own for the same inputs (no model or tokenizer).

    Args:
        config: the model's config.
        attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
        policy: the masks to compare; ``causal=None`` is resolved with ``decoder``.
        decoder: True for a causal language model.
        documents: ``(B, T)`` document index of each token of a packed row (padding -1), or None.
        position_ids: ``(B, T)`` the positions the model is given (needed for a packed decoder row).

    Shape: every mask of the result is a boolean ``(B, 1, T, T)``.
    """
    policy = policy.for_model(decoder)
    ours = policy.build(attention_mask, documents)  # (B, 1, T, T)
    theirs = transformers_mask(
        config, attention_mask, policy, decoder=decoder, documents=documents, position_ids=position_ids
    )
    return compare(ours, theirs, attention_mask, policy)


def mask_parity(model: LoadedModel, texts: list[str], policy: MaskPolicy) -> MaskParity:
    """Encode ``texts`` as a capture would and compare our mask with transformers' own, cell for cell.

    Shape: every mask of the result is a boolean ``(B, 1, T, T)``.
    """
    policy = policy.for_model(model.decoder)
    encoded = encode(model, texts, policy)
    return compare_masks(
        model.model.config,
        encoded.attention_mask,
        policy,
        decoder=model.decoder,
        documents=encoded.documents,
        position_ids=position_ids_for(encoded, policy, model.decoder),
    )
