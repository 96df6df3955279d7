"""Capture: run a real model once under a mask policy and keep the true attention of chosen layers.

The policy's mask is built with :mod:`attention_viz.masks` and handed to the model as a 4-D
boolean mask, which transformers passes unchanged to *every* layer: turning off the causal mask
of a decoder really lets every layer see the future, and downstream layers feel it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import torch

from attention_viz.effect import POSITIONS_PER_CHUNK, OutputEffect, measure_effect
from attention_viz.errors import UserFacingError
from attention_viz.hooks import AllLayersRecorded, LayerRecord, recording
from attention_viz.i18n import _, ngettext
from attention_viz.loading import LoadedModel
from attention_viz.masks import to_additive
from attention_viz.pickling import TensorsPickledAsArrays
from attention_viz.policy import MaskPolicy, check_flag, check_prefix, check_whole_number, document_positions
from attention_viz.settings import load_settings
from attention_viz.threads import forward_threads
from attention_viz.tokens import display_tokens

__all__ = [
    "BudgetRefusal",
    "Capture",
    "LayerCapture",
    "MemoryEstimate",
    "OverBudget",
    "capture",
    "check_budget",
    "default_output",
    "effect_of",
    "encode",
    "effect_bytes",
    "estimate_bytes",
    "memory_estimate",
    "output_bytes",
    "parity_delta",
    "resolve_policy",
]

# What one request allocates, counted in tensors of the shapes named (see memory_estimate).
# A captured layer's record holds three (B, H, T, T) float32 matrices (scores, masked scores,
# weights) until the capture returns, which then keeps two (scores, weights).
STAGES_KEPT = 3
BYTES_PER_VALUE = 4  # float32
# ... and three (B, H, T, d): the query, the key expanded to every query head, and the output.
RECORD_VECTORS = 3
# The parity check (hooks.model_parity) holds the eager weights, then their difference from ours
# and its absolute value, at once: three more (B, H, T, T) on the layer being recorded.
PARITY_MATRICES = 3
# The boolean (B, 1, T, T) mask, and its negation while the reference fills masked scores.
MASK_COPIES = 2
# The widest moment of the model's own layer is its MLP: gate, up and their product are
# (B, T, intermediate) at once, beside the residual stream, its norm, the MLP input and output (B, T, D).
MLP_TENSORS = 3
RESIDUAL_TENSORS = 4
# The output effect compares two outputs (the policy's and the default's), kept whole; its
# log-softmax and KL run a chunk of positions at a time (attention_viz.effect): two
# log-probabilities, their difference, one exponent and the product, (B, chunk, V) each, and a
# contiguous copy of the sliced logits.
EFFECT_OUTPUTS = 2
EFFECT_CHUNK_TENSORS = 6


@dataclass(frozen=True)
class LayerCapture(TensorsPickledAsArrays):
    """One layer's attention, with KV heads expanded to query heads.

    Attributes:
        scores: ``(B, H, T, T)`` Q Kᵀ · scale.
        weights: ``(B, H, T, T)`` the softmax: what the model really used.
        mask: ``(B, 1, T, T)`` the boolean mask applied (True = may attend).
        query: ``(B, H, T, d)`` queries after RoPE. key: ``(B, H, T, d)`` keys, expanded.
        kv_head: ``(H,)`` which KV head each query head reads (grouped-query attention).
        empty_rows: ``(B, H, T)`` query rows with every key masked (exactly zero in weights).
        scale: the scale the model applied to Q Kᵀ.
        model_parity: max |Δ| between ``weights`` and the model's own eager attention on the same
            inputs (rows that attend to something); None if the model has no eager function.
    """

    scores: torch.Tensor
    weights: torch.Tensor
    mask: torch.Tensor
    query: torch.Tensor
    key: torch.Tensor
    kv_head: torch.Tensor
    empty_rows: torch.Tensor
    scale: float
    model_parity: float | None = None

    @classmethod
    def from_record(cls, record: LayerRecord) -> LayerCapture:
        trace = record.trace
        return cls(
            scores=trace.scores,
            weights=trace.weights,
            mask=trace.mask[:, :1],  # (B, 1, T, T): the same for every head
            query=record.query,
            key=record.key,
            kv_head=record.kv_head,
            empty_rows=trace.empty_rows,
            scale=record.scale,
            model_parity=record.model_parity,
        )

    @property
    def masked_scores(self) -> torch.Tensor:
        """``(B, H, T, T)`` scores with ``-inf`` where masked (derived, so captures stay small)."""
        return self.scores + to_additive(self.mask, self.scores.dtype)

    def stage(self, name: str) -> torch.Tensor:
        """``scores``, ``masked_scores`` or ``weights``. Shape: ``(B, H, T, T)``."""
        if name not in ("scores", "masked_scores", "weights"):
            raise ValueError(f"Unknown stage {name!r}; choose scores, masked_scores or weights.")
        return getattr(self, name)


@dataclass(frozen=True)
class Capture(TensorsPickledAsArrays):
    """One real-model run under a mask policy.

    Attributes:
        model_name: the model's name (``smollm2``, ``minilm``, ...).
        decoder: True for a causal language model.
        texts: the input texts.
        tokens: per item, ``T`` display tokens (``[PAD]`` at padding positions).
        input_ids: ``(B, T)``. attention_mask: ``(B, T)`` 1 = real token, 0 = padding.
        position_ids: ``(B, T)`` the positions the model was given.
        mask: ``(B, 1, T, T)`` the boolean mask every layer really applied (True = may attend).
        policy: the mask policy.
        layers: captured layers by zero-based index.
        truncated: per text, how many tokens were cut off.
        documents: ``(B, T)`` text index of each token of a packed row (-1 = padding); None
            when each text has a row of its own.
        effect: what the policy changed in the output, compared with the model's default.
        layer_kinds: per zero-based layer of the model, its kind (``full_attention``,
            ``sliding_attention``, ``chunked_attention``, ``bidirectional``); empty = every layer
            applies ``mask``.
        kind_masks: ``(B, 1, T, T)`` the mask each kind of layer applied, when the model's layers
            are not all of one kind (a sliding layer keeps its own window); ``mask`` is then the
            full-attention layers'. Use :meth:`mask_for` for one layer's.
    """

    model_name: str
    decoder: bool
    texts: tuple[str, ...]
    tokens: list[list[str]]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    policy: MaskPolicy
    layers: dict[int, LayerCapture]
    truncated: list[int]
    documents: torch.Tensor | None = None
    effect: OutputEffect | None = field(default=None)
    layer_kinds: tuple[str, ...] = ()
    kind_masks: dict[str, torch.Tensor] = field(default_factory=dict)

    def mask_for(self, layer: int) -> torch.Tensor:
        """``(B, 1, T, T)`` the mask zero-based ``layer`` applied (True = may attend)."""
        if layer in self.layers:
            return self.layers[layer].mask
        kind = self.layer_kinds[layer] if layer < len(self.layer_kinds) else None
        return self.kind_masks.get(kind, self.mask)

    def kind_of(self, layer: int) -> str | None:
        """The kind of zero-based ``layer`` when the model's layers differ, else None."""
        if not self.kind_masks or layer >= len(self.layer_kinds):
            return None
        return self.layer_kinds[layer]

    @property
    def pad_rows(self) -> torch.Tensor:
        """``(B, T)`` True at padding positions."""
        return self.attention_mask == 0

    def with_layers(self, layers: Iterable[int]) -> Capture:
        """The same capture holding only zero-based ``layers`` (the tensors shared, not copied)."""
        return replace(self, layers={index: self.layer(index) for index in layers})

    def layer(self, index: int) -> LayerCapture:
        if index not in self.layers:
            captured = ", ".join(map(str, sorted(self.layers))) or _("none")
            raise UserFacingError(
                _("Layer {layer} was not captured (captured: {captured}).").format(
                    layer=index, captured=captured
                )
            )
        return self.layers[index]


@dataclass(frozen=True)
class Encoded:
    """Token ids ready for the model.

    Attributes:
        input_ids: ``(B, T)``. attention_mask: ``(B, T)`` 1 = real token, 0 = padding.
        documents: ``(B, T)`` document (text) index of each token of a packed row, -1 for
            padding; None when every text has a row of its own.
        truncated: per text, how many tokens were cut off.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    truncated: list[int]
    documents: torch.Tensor | None = None


def encode(model: LoadedModel, texts: list[str], policy: MaskPolicy) -> Encoded:
    """Tokenise, truncate to the model's limit or ``policy.max_length``, and pad to one length.

    A packed policy puts the texts one after another into a single row (each with the special
    tokens it would have alone), cuts the row at the length limit and pads its end.
    """
    if not texts or any(not text.strip() for text in texts):
        raise UserFacingError(_("The text is empty. Type a sentence or two."))
    limit = model.max_positions
    if policy.max_length is not None and policy.max_length > limit:
        raise UserFacingError(
            _("Sequence length {length} is too long: {model} takes at most {limit}.").format(
                length=policy.max_length, model=model.name, limit=limit
            )
        )
    length = policy.max_length or limit
    # verbose=False: counting the full length is not an error ("sequence longer than..." warning).
    alone = model.tokenize(texts, truncation=False, verbose=False)["input_ids"]
    if policy.pack:
        encoded = _packed(model, alone, length, policy)
    else:
        batch = model.tokenize(
            texts,
            padding="max_length" if policy.max_length else "longest",
            truncation=True,
            max_length=length,
            padding_side=policy.padding_side,
            return_tensors="pt",
        )
        encoded = Encoded(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            truncated=[max(0, len(ids) - length) for ids in alone],
        )
    check_prefix(policy, encoded.attention_mask, encoded.documents)
    return encoded


def _packed(model: LoadedModel, alone: list[list[int]], length: int, policy: MaskPolicy) -> Encoded:
    """The texts' ids one after another in one row of at most ``length`` tokens."""
    ids: list[int] = []
    documents: list[int] = []
    truncated = []
    for index, text_ids in enumerate(alone):
        kept = text_ids[: max(0, length - len(ids))]
        ids += kept
        documents += [index] * len(kept)
        truncated.append(len(text_ids) - len(kept))
    if truncated[0] == len(alone[0]) or not ids:
        raise UserFacingError(_("The sequence length leaves no room for the first text."))
    pads = (policy.max_length or len(ids)) - len(ids)
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    real = [1] * len(ids)
    if policy.padding_side == "left":
        ids, documents, real = [pad_id] * pads + ids, [-1] * pads + documents, [0] * pads + real
    else:
        ids, documents, real = ids + [pad_id] * pads, documents + [-1] * pads, real + [0] * pads
    return Encoded(
        input_ids=torch.tensor([ids]),
        attention_mask=torch.tensor([real]),
        truncated=truncated,
        documents=torch.tensor([documents]),
    )


def position_ids_for(encoded: Encoded, policy: MaskPolicy, decoder: bool) -> torch.Tensor:
    """Positions as the model's own pipeline gives them, or as a forgotten ``attention_mask`` does.

    A decoder with the padding mask on counts real tokens only (what ``generate`` does), so left
    padding does not shift them; with it off the model sees ``0..T-1``, as ``model(input_ids)``
    without an ``attention_mask`` would. An encoder always sees ``0..T-1``: BERT-style models
    never skip pads when numbering positions, so left padding really shifts their positions
    (one reason encoders are padded on the right). Packed texts with ``reset_positions`` restart
    at 0 at each document, as packed training does; without it they count on across the row.

    Shape: returns ``(B, T)``.
    """
    attention_mask = encoded.attention_mask
    if policy.pack and policy.reset_positions:
        return document_positions(attention_mask, encoded.documents)
    if decoder and policy.padding_mask:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.arange(attention_mask.shape[1]).expand_as(attention_mask)


def estimate_bytes(layers: int, heads: int, length: int, batch: int) -> int:
    """The attention matrices captured layers keep: layers × heads × T² × batch × 3 stages × 4 bytes.

    Only one term of what a capture allocates; :func:`memory_estimate` has them all.
    """
    return layers * heads * length * length * batch * STAGES_KEPT * BYTES_PER_VALUE


def output_bytes(model: LoadedModel, length: int, batch: int) -> int:
    """One output of the model: a decoder's logits ``(B, T, vocabulary)`` (400 MB for one
    2048-token text of SmolLM2), an encoder's last hidden state ``(B, T, D)``."""
    config = model.model.config
    width = config.vocab_size if model.decoder else config.hidden_size
    return batch * length * width * BYTES_PER_VALUE


def effect_bytes(model: LoadedModel, length: int, batch: int) -> int:
    """Memory the output effect holds: the two outputs it compares (:func:`output_bytes`), and,
    for a decoder, the log-probabilities of one chunk of positions it works on at a time.
    """
    if not model.decoder:
        return EFFECT_OUTPUTS * output_bytes(model, length, batch)
    chunk = min(length, POSITIONS_PER_CHUNK)
    return EFFECT_OUTPUTS * output_bytes(model, length, batch) + EFFECT_CHUNK_TENSORS * output_bytes(
        model, chunk, batch
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """What one request allocates at its peak, beyond the loaded model, term by term (bytes).

    The parity check runs inside the forward and is freed before the outputs exist, so the peak
    (:attr:`total`) counts the larger of the two, not both.

    Attributes:
        attention: per captured layer, what its record keeps until the capture returns: scores,
            masked scores and weights ``(B, H, T, T)``; query, expanded key and output ``(B, H, T, d)``.
        parity: the parity check on the layer being recorded: the model's eager weights, their
            difference from ours and its absolute value ``(B, H, T, T)``; the additive mask
            ``(B, 1, T, T)`` float. Zero if no layer is captured.
        masks: the boolean mask ``(B, 1, T, T)`` and its negation.
        activations: the model's own forward at its widest point (the MLP: gate, up and their
            product ``(B, T, I)``; the residual stream, its norm, the MLP input and output ``(B, T, D)``).
        outputs: the outputs the output comparison holds (:func:`effect_bytes`); zero without it.
    """

    attention: int
    parity: int
    masks: int
    activations: int
    outputs: int

    @property
    def total(self) -> int:
        return self.attention + self.masks + self.activations + max(self.parity, self.outputs)


def memory_estimate(
    model: LoadedModel, layers: int, length: int, batch: int, effect: bool = False
) -> MemoryEstimate:
    """The memory a capture of ``layers`` layers of ``batch`` texts of ``length`` tokens needs.

    Derived from the model's config (hidden and MLP width, heads, vocabulary); every tensor is
    float32 (``BYTES_PER_VALUE``) except the boolean mask (one byte a value).
    """
    config = model.model.config
    heads, width = model.num_heads, config.hidden_size
    # The MLP's width: GPT-2 names it n_inner, and None there means 4 × the hidden size.
    mlp_width = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * width
    head_dim = getattr(config, "head_dim", None) or width // heads
    matrix = batch * heads * length * length * BYTES_PER_VALUE  # one (B, H, T, T) stage
    vectors = batch * heads * length * head_dim * BYTES_PER_VALUE  # one (B, H, T, d) tensor
    square = batch * length * length  # one (B, 1, T, T) boolean mask
    return MemoryEstimate(
        attention=layers * (STAGES_KEPT * matrix + RECORD_VECTORS * vectors),
        parity=(PARITY_MATRICES * matrix + square * BYTES_PER_VALUE) if layers else 0,
        masks=MASK_COPIES * square,
        activations=batch * length * BYTES_PER_VALUE * (MLP_TENSORS * mlp_width + RESIDUAL_TENSORS * width),
        outputs=effect_bytes(model, length, batch) if effect else 0,
    )


@dataclass(frozen=True)
class BudgetRefusal:
    """Why a request is over the memory budget and what would fit, so a page can word its advice.

    Attributes:
        needed: the estimate of the request. budget_bytes: the host's budget.
        layers, length, batch, effect: the request (captured layers, tokens per text, texts,
            output comparison on).
        heads: the model's attention heads (for the message).
        max_layers: most layers that fit at this length and batch (0: none).
        max_length: longest sequence that fits with these layers and texts (0: none).
        max_batch: most texts that fit at this length with these layers (0: none).
        fits_without_effect: the request fits once the output comparison is off.
    """

    needed: MemoryEstimate
    budget_bytes: int
    layers: int
    length: int
    batch: int
    effect: bool
    heads: int
    max_layers: int
    max_length: int
    max_batch: int
    fits_without_effect: bool

    def advice(self, can_choose_layers: bool = True) -> str:
        """What the person can change, most useful first; layers only where they can pick them."""
        options = []
        if self.effect and self.fits_without_effect:
            options.append(_("turn off the output comparison"))
        if can_choose_layers and 0 < self.max_layers < self.layers:
            options.append(_("capture at most {count} layer(s) at this length").format(count=self.max_layers))
        if self.max_length:
            options.append(_("use at most {count:,} tokens per text").format(count=self.max_length))
        if 0 < self.max_batch < self.batch:
            options.append(_("give at most {count} text(s) at this length").format(count=self.max_batch))
        return _(", or ").join(options) or _("use a shorter sequence or fewer texts")

    def message(self, can_choose_layers: bool = True) -> str:
        """The whole refusal, in the run's language: how much is needed for what, the budget,
        and :meth:`advice`."""
        parts = []
        if self.layers:
            parts.append(
                ngettext(
                    "attention matrices for {layers} layer × {heads} heads × {length:,}² tokens × {batch} text(s)",
                    "attention matrices for {layers} layers × {heads} heads × {length:,}² tokens × {batch} text(s)",
                    self.layers,
                ).format(layers=self.layers, heads=self.heads, length=self.length, batch=self.batch)
            )
        if self.effect:
            parts.append(
                _("{size:,.0f} MB of model outputs to compare").format(size=self.needed.outputs / 2**20)
            )
        if not parts:
            parts.append(_("the mask and the model's activations"))
        return _(
            "This request needs about {size:,.0f} MB at its peak ({parts}), over this server's budget "
            "of {budget:,} MB (ATTNVIZ_MEMORY_BUDGET_MB): {advice}."
        ).format(
            size=self.needed.total / 2**20,
            parts=_(" and ").join(parts),
            budget=self.budget_bytes // 2**20,
            advice=self.advice(can_choose_layers),
        )


class OverBudget(UserFacingError):
    """A request over the memory budget; ``refusal`` says by how much and what would fit."""

    def __init__(self, refusal: BudgetRefusal, can_choose_layers: bool = True) -> None:
        super().__init__(refusal.message(can_choose_layers))
        self.refusal = refusal


def _most(fits: Callable[[int], bool], upper: int) -> int:
    """The largest ``n`` in ``1..upper`` with ``fits(n)`` (``fits`` shrinks as n grows), else 0."""
    low, high = 0, upper
    while low < high:
        middle = (low + high + 1) // 2
        if fits(middle):
            low = middle
        else:
            high = middle - 1
    return low


def check_budget(
    model: LoadedModel,
    layers: int,
    length: int,
    batch: int,
    effect: bool = False,
    can_choose_layers: bool = True,
) -> None:
    """Refuse a request bigger than the host's limits (texts per batch, memory), saying what would fit.

    Args:
        layers: layers to capture (0 for the output comparison alone).
        length: tokens per text after padding. batch: texts.
        effect: the output comparison runs too.
        can_choose_layers: the caller can capture fewer layers (False on pages that always
            capture every layer, so the advice does not suggest it).

    Raises:
        UserFacingError: too many texts. OverBudget: over ``ATTNVIZ_MEMORY_BUDGET_MB``.
    """
    settings = load_settings()
    if batch > settings.max_texts:
        raise UserFacingError(
            _(
                "{count} texts were given; at most {most} are batched at once "
                "(ATTNVIZ_MAX_TEXTS). Give fewer texts."
            ).format(count=batch, most=settings.max_texts)
        )
    budget = settings.memory_budget_mb * 2**20
    needed = memory_estimate(model, layers, length, batch, effect)
    if needed.total <= budget:
        return

    def fits(layers: int = layers, length: int = length, batch: int = batch, effect: bool = effect) -> bool:
        return memory_estimate(model, layers, length, batch, effect).total <= budget

    refusal = BudgetRefusal(
        needed=needed,
        budget_bytes=budget,
        layers=layers,
        length=length,
        batch=batch,
        effect=effect,
        heads=model.num_heads,
        max_layers=_most(lambda n: fits(layers=n), layers),
        max_length=_most(lambda n: fits(length=n), length),
        max_batch=_most(lambda n: fits(batch=n), batch),
        fits_without_effect=effect and fits(effect=False),
    )
    raise OverBudget(refusal, can_choose_layers)


def parity_delta(result: Capture, layer: int) -> float | None:
    """The parity check the app reports: max |Δ| between the weights our reference implementation
    computed on this layer's Q/K and the model's own eager attention on the same inputs.

    None if the model's code has no eager attention function to compare with. (Comparing the
    reference with itself would always give 0 and prove nothing.)
    """
    return result.layer(layer).model_parity


def layer_masks(model: LoadedModel, encoded: Encoded, policy: MaskPolicy) -> dict[str, torch.Tensor]:
    """Per kind of layer in ``model``, the ``(B, 1, T, T)`` mask ``policy`` gives it
    (:meth:`MaskPolicy.for_layer_kind`: a sliding layer keeps its own window), in layer order."""
    first_of_kind = {kind: layer for layer, kind in reversed(list(enumerate(model.layer_kinds)))}
    return {
        kind: model.layer_policy(policy, layer).build(encoded.attention_mask, encoded.documents)
        for kind, layer in sorted(first_of_kind.items(), key=lambda pair: pair[1])
    }


def model_position_ids(model: LoadedModel, encoded: Encoded, policy: MaskPolicy) -> torch.Tensor:
    """The positions ``model`` is given: :func:`position_ids_for`, except for an encoder that
    numbers its positions itself from the token ids (RoBERTa: real tokens from ``padding_idx + 1``
    on, padding at ``padding_idx``, so left padding does not shift them), numbered by the model's
    own ``create_position_ids_from_input_ids``. Packed texts with ``reset_positions`` restart at
    each document, from the same first number.

    Shape: returns ``(B, T)``.
    """
    embeddings = getattr(getattr(model.model, "base_model", model.model), "embeddings", None)
    numbering = getattr(embeddings, "create_position_ids_from_input_ids", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if model.decoder or numbering is None or padding_idx is None:
        return position_ids_for(encoded, policy, model.decoder)
    if policy.pack and policy.reset_positions:
        first = padding_idx + 1
        return torch.where(
            encoded.attention_mask.bool(),
            document_positions(encoded.attention_mask, encoded.documents) + first,
            padding_idx,
        )
    return numbering(encoded.input_ids, padding_idx)


def run_forward(
    model: LoadedModel, encoded: Encoded, policy: MaskPolicy, layers: list[int], need_output: bool = True
) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[int, LayerRecord], torch.Tensor | None]:
    """One forward pass under ``policy``, recording ``layers``.

    Returns ``(kind_masks, position_ids (B,T), records, output)``: ``kind_masks`` is
    :func:`layer_masks` (one ``(B,1,T,T)`` mask per kind of layer); output is the logits
    ``(B, T, V)`` of a decoder or the last hidden state ``(B, T, D)`` of an encoder. With
    ``need_output=False`` the pass stops right after the last recorded layer (the later layers
    cannot change it) and output is None: a capture of layer 0 then costs a fraction of a forward.
    """
    kind_masks = layer_masks(model, encoded, policy)
    position_ids = model_position_ids(model, encoded, policy)
    # The model's own masks with no padding: pass the plain 2-D mask, so transformers' mask
    # function (registered under our name) lets SDPA use its fast causal / unmasked path in the
    # layers we do not record, and builds each kind of layer's mask (a sliding layer's window) as
    # the model's forward does. It is exactly the masks above; the recorded layers rebuild them.
    plain = (
        policy == policy.model_default(model.decoder)
        and not policy.pack
        and bool(encoded.attention_mask.all())
    )
    if plain:
        model_mask = encoded.attention_mask
    elif len(kind_masks) == 1:
        model_mask = next(iter(kind_masks.values()))  # every layer applies it
    else:
        model_mask = kind_masks  # models with layer_types take one mask per kind of layer
    stop_early = not need_output and bool(layers)
    output = None
    with (
        model.lock,
        forward_threads(encoded.input_ids.numel()),
        torch.inference_mode(),
        recording(layers, stop_when_done=stop_early) as recorder,
    ):
        try:
            outputs = model.model(
                input_ids=encoded.input_ids,
                attention_mask=model_mask,
                position_ids=position_ids,
                use_cache=False,
            )
            output = outputs.logits if model.decoder else outputs.last_hidden_state
        except AllLayersRecorded:
            pass
    return kind_masks, position_ids, recorder.records, output


def policy_effect(
    model: LoadedModel,
    encoded: Encoded,
    policy: MaskPolicy,
    output: torch.Tensor | None = None,
    reference_output: torch.Tensor | None = None,
) -> OutputEffect:
    """How the output under ``policy`` differs from the output under the model's default masks.

    ``output`` is the policy's forward output and ``reference_output`` the default masks' one
    (:func:`default_output`), each ``(B, T, V)`` logits or ``(B, T, D)`` hidden states, if already
    computed; a missing one is run here.
    """
    if output is None:
        output = run_forward(model, encoded, policy, [])[3]
    reference = policy.model_default(model.decoder)
    if reference_output is None:
        reference_output = output if reference == policy else run_forward(model, encoded, reference, [])[3]
    elif reference_output.shape != output.shape:
        raise ValueError(
            f"reference_output has shape {tuple(reference_output.shape)}, but this policy's output "
            f"has {tuple(output.shape)}: it must come from default_output() on the same texts and batching."
        )
    return measure_effect(model, encoded.attention_mask, output, reference_output, reference)


def checked_texts(texts: object) -> list[str]:
    """``texts`` as a list of strings: one ``str``, or a list or tuple of them; else a TypeError.

    (An empty list, or a blank text, is refused later by :func:`encode` with what to type.)
    """
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, (list, tuple)):
        raise TypeError(
            f"texts must be a string or a list of strings, got {reprlib.repr(texts)} ({type(texts).__name__})."
        )
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{index}] must be a string, got {reprlib.repr(text)} ({type(text).__name__})."
            )
    return list(texts)


def checked_layers(model: LoadedModel, layers: object) -> list[int]:
    """Zero-based layer indices, sorted and unique; None = every layer.

    A non-integer (``0.5``, ``True``) raises TypeError, an index out of range a
    :class:`UserFacingError` naming the model's layers.
    """
    if layers is None:
        return list(range(model.num_layers))
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Iterable):
        raise TypeError(
            f"layers must be a list of zero-based layer indices such as [0, 5], or None for every layer; "
            f"got {reprlib.repr(layers)} ({type(layers).__name__})."
        )
    indices = [check_whole_number(f"layers[{i}]", layer) for i, layer in enumerate(layers)]
    return model.check_layers(indices)


def resolve_policy(model: LoadedModel, policy: object) -> MaskPolicy:
    """``policy`` with the model's own choices filled in (None = the model's default masks).

    Raises:
        TypeError: ``policy`` is not a :class:`MaskPolicy`.
        UserFacingError: the combination is impossible for this model (a prefix-LM on a model
            resolved to no causal mask).
    """
    if policy is None:
        policy = MaskPolicy()
    if not isinstance(policy, MaskPolicy):
        raise TypeError(f"policy must be a MaskPolicy, got {type(policy).__name__}.")
    try:
        return policy.for_model(model.decoder).with_changes()  # with_changes validates again
    except ValueError as error:
        raise UserFacingError(str(error)) from error


def effect_of(
    model: LoadedModel, texts: list[str], policy: MaskPolicy, reference_output: torch.Tensor | None = None
) -> OutputEffect:
    """The output effect alone (plain forwards, no attention captured), for the app's panel.

    ``reference_output``: :func:`default_output` of the same texts and batching, if kept from an
    earlier call (it is the same for every mask of a text); else run here. Two forwards without
    it, one with it.
    """
    policy = resolve_policy(model, policy)
    texts = checked_texts(texts)
    encoded = encode(model, texts, policy)
    check_budget(model, 0, encoded.input_ids.shape[1], encoded.input_ids.shape[0], effect=True)
    return policy_effect(model, encoded, policy, reference_output=reference_output)


def default_output(model: LoadedModel, texts: list[str], policy: MaskPolicy) -> torch.Tensor:
    """The output under the model's default masks with ``policy``'s batching (padding side,
    length, packing): what every output effect of these texts is measured against.

    Shape: ``(B, T, V)`` logits of a decoder or ``(B, T, D)`` last hidden state of an encoder.
    """
    reference = resolve_policy(model, policy).model_default(model.decoder)
    texts = checked_texts(texts)
    encoded = encode(model, texts, reference)
    check_budget(model, 0, encoded.input_ids.shape[1], encoded.input_ids.shape[0], effect=True)
    return run_forward(model, encoded, reference, [])[3]


def capture(
    model: LoadedModel,
    texts: list[str] | str,
    layers: list[int] | None = None,
    policy: MaskPolicy | None = None,
    effect: bool = True,
    reference_output: torch.Tensor | None = None,
) -> Capture:
    """Run ``model`` once on ``texts`` under ``policy`` and capture the requested layers.

    Args:
        model: from :func:`attention_viz.load_model`.
        texts: one text or several (batched and padded to one length, or packed into one row).
        layers: zero-based layers to capture; None = all.
        policy: the masks; None = the model's own (``MaskPolicy()``: causal for a decoder, none
            for an encoder, padding masked). A ``causal`` of None is the model's choice.
        effect: also measure the output change against the model's default masks.
        reference_output: with ``effect``, :func:`default_output` of the same texts and batching
            if kept from an earlier call (``(B, T, V)`` or ``(B, T, D)``); else run here.

    Raises:
        TypeError: an argument of the wrong type (a text that is not a string, a layer that is
            not an int, a flag that is not a bool, a policy that is not a MaskPolicy).
        UserFacingError: a value the person can fix (an empty text, a layer out of range, a
            prefix longer than a text); :class:`OverBudget` if the request is over the memory budget.

    Shape: each captured layer's ``weights`` is ``(B, H, T, T)``; one row when packed.
    """
    return capture_and_output(model, texts, layers, policy, effect, reference_output)[0]


def capture_and_output(
    model: LoadedModel,
    texts: list[str] | str,
    layers: list[int] | None = None,
    policy: MaskPolicy | None = None,
    effect: bool = True,
    reference_output: torch.Tensor | None = None,
) -> tuple[Capture, torch.Tensor | None]:
    """:func:`capture` (the same arguments), and the forward's output if ``effect`` measured it,
    else None.

    Under the model's default masks that output is :func:`default_output` of the same texts and
    batching, the reference of every other mask's effect: a caller can keep it instead of running
    the model once more on the texts' first toggle.

    Shape: the output is ``(B, T, V)`` logits of a decoder or ``(B, T, D)`` hidden states of an encoder.
    """
    texts = checked_texts(texts)
    layers = checked_layers(model, layers)
    check_flag("effect", effect)
    policy = resolve_policy(model, policy)
    encoded = encode(model, texts, policy)
    rows, length = encoded.input_ids.shape
    check_budget(model, len(layers), length, rows, effect=effect)
    kind_masks, position_ids, records, output = run_forward(
        model, encoded, policy, layers, need_output=effect
    )

    measured = policy_effect(model, encoded, policy, output, reference_output) if effect else None
    captured = Capture(
        model_name=model.name,
        decoder=model.decoder,
        texts=tuple(texts),
        tokens=display_tokens(model.tokenizer, encoded.input_ids, encoded.attention_mask),
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        position_ids=position_ids,
        mask=_main_mask(kind_masks),
        policy=policy,
        layers={index: LayerCapture.from_record(records[index]) for index in layers},
        truncated=encoded.truncated,
        documents=encoded.documents,
        effect=measured,
        layer_kinds=tuple(model.layer_kinds) if len(kind_masks) > 1 else (),
        kind_masks=kind_masks if len(kind_masks) > 1 else {},
    )
    return captured, output if effect else None


def _main_mask(kind_masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """The mask a capture names first: the only kind's, else the full-attention layers'."""
    return kind_masks.get("full_attention", next(iter(kind_masks.values())))
