"""Capture: run a real model once under a mask policy and keep the true attention of chosen layers.

The policy's mask is built with :mod:`attention_viz.masks` and handed to the model as a 4-D
boolean mask, which transformers passes unchanged to *every* layer: turning off the causal mask
of a decoder really lets every layer see the future, and downstream layers feel it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attention_viz.effect import OutputEffect, measure_effect
from attention_viz.errors import UserFacingError
from attention_viz.hooks import AllLayersRecorded, LayerRecord, recording
from attention_viz.loading import LoadedModel
from attention_viz.masks import to_additive
from attention_viz.policy import MaskPolicy
from attention_viz.settings import load_settings
from attention_viz.tokens import display_tokens

__all__ = [
    "Capture",
    "LayerCapture",
    "capture",
    "default_policy",
    "effect_of",
    "encode",
    "effect_bytes",
    "estimate_bytes",
    "parity_delta",
]

# While a layer is captured the reference holds three (B, H, T, T) float32 matrices at once
# (scores, masked scores, weights); the capture then keeps two (scores, weights).
STAGES_KEPT = 3
BYTES_PER_VALUE = 4
# The output effect compares two outputs (the policy's and the default's), kept whole; its
# log-softmax and KL run a chunk of positions at a time (attention_viz.effect).
EFFECT_OUTPUTS = 2


@dataclass(frozen=True)
class LayerCapture:
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
class Capture:
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
        effect: what the policy changed in the output, compared with the model's default.
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
    effect: OutputEffect | None = field(default=None)

    @property
    def pad_rows(self) -> torch.Tensor:
        """``(B, T)`` True at padding positions."""
        return self.attention_mask == 0

    def layer(self, index: int) -> LayerCapture:
        if index not in self.layers:
            captured = ", ".join(map(str, sorted(self.layers))) or "none"
            raise UserFacingError(f"Layer {index} was not captured (captured: {captured}).")
        return self.layers[index]


def default_policy(model: LoadedModel, policy: MaskPolicy | None = None) -> MaskPolicy:
    """The model's own masks (causal for a decoder, none for an encoder, padding on, no window),
    keeping the batching choices (padding side, length) of ``policy``."""
    base = policy or MaskPolicy()
    return base.with_changes(causal=model.decoder, padding_mask=True, window=None)


@dataclass(frozen=True)
class Encoded:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    truncated: list[int]


def encode(model: LoadedModel, texts: list[str], policy: MaskPolicy) -> Encoded:
    """Tokenise, truncate to the model's limit or ``policy.max_length``, and pad to one length."""
    if not texts or any(not text.strip() for text in texts):
        raise UserFacingError("The text is empty. Type a sentence or two.")
    limit = model.max_positions
    if policy.max_length is not None and policy.max_length > limit:
        raise UserFacingError(
            f"Sequence length {policy.max_length} is too long: {model.name} takes at most {limit}."
        )
    length = policy.max_length or limit
    # verbose=False: counting the full length is not an error ("sequence longer than..." warning).
    full_lengths = [len(ids) for ids in model.tokenize(texts, truncation=False, verbose=False)["input_ids"]]
    encoded = model.tokenize(
        texts,
        padding="max_length" if policy.max_length else "longest",
        truncation=True,
        max_length=length,
        padding_side=policy.padding_side,
        return_tensors="pt",
    )
    return Encoded(
        input_ids=encoded["input_ids"],
        attention_mask=encoded["attention_mask"],
        truncated=[max(0, full - length) for full in full_lengths],
    )


def position_ids_for(attention_mask: torch.Tensor, policy: MaskPolicy, decoder: bool) -> torch.Tensor:
    """Positions as the model's own pipeline gives them, or as a forgotten ``attention_mask`` does.

    A decoder with the padding mask on counts real tokens only (what ``generate`` does), so left
    padding does not shift them; with it off the model sees ``0..T-1``, as ``model(input_ids)``
    without an ``attention_mask`` would. An encoder always sees ``0..T-1``: BERT-style models
    never skip pads when numbering positions, so left padding really shifts their positions
    (one reason encoders are padded on the right).

    Shape: ``attention_mask`` is ``(B, T)``; returns ``(B, T)``.
    """
    if decoder and policy.padding_mask:
        return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    return torch.arange(attention_mask.shape[1]).expand_as(attention_mask)


def estimate_bytes(layers: int, heads: int, length: int, batch: int) -> int:
    """Memory a capture keeps: layers × heads × T² × batch × 3 stages × 4 bytes."""
    return layers * heads * length * length * batch * STAGES_KEPT * BYTES_PER_VALUE


def effect_bytes(model: LoadedModel, length: int, batch: int) -> int:
    """Memory the output effect holds: the two outputs it compares (a decoder's logits are
    batch × T × vocabulary: 400 MB for one 2048-token text of SmolLM2)."""
    width = model.model.config.vocab_size if model.decoder else model.model.config.hidden_size
    return EFFECT_OUTPUTS * batch * length * width * BYTES_PER_VALUE


def check_budget(model: LoadedModel, layers: int, length: int, batch: int, effect: bool = False) -> None:
    """Refuse a request bigger than the host's limits (texts per batch, memory), saying what would fit."""
    settings = load_settings()
    if batch > settings.max_texts:
        raise UserFacingError(
            f"{batch} texts were given; at most {settings.max_texts} are batched at once "
            f"(ATTNVIZ_MAX_TEXTS). Give fewer texts."
        )
    budget_mb = settings.memory_budget_mb
    attention_mb = estimate_bytes(layers, model.num_heads, length, batch) / 2**20
    effect_mb = effect_bytes(model, length, batch) / 2**20 if effect else 0.0
    needed_mb = attention_mb + effect_mb
    if needed_mb <= budget_mb:
        return
    if effect_mb > budget_mb:
        advice = "turn off the output comparison, or use a shorter sequence or fewer texts"
    else:
        per_layer_mb = estimate_bytes(1, model.num_heads, length, batch) / 2**20
        fitting_layers = int((budget_mb - effect_mb) // per_layer_mb)
        advice = (
            f"capture at most {fitting_layers} layer(s) at this length, or use a shorter sequence"
            if fitting_layers
            else "use a shorter sequence or fewer texts"
        )
    parts = f"{attention_mb:,.0f} MB of attention matrices ({layers} layers × {model.num_heads} heads × {length}² tokens × {batch} texts)"
    if effect:
        parts += f" and {effect_mb:,.0f} MB of model outputs to compare"
    raise UserFacingError(
        f"This request needs about {needed_mb:,.0f} MB: {parts}, over this server's budget of "
        f"{budget_mb:,} MB (ATTNVIZ_MEMORY_BUDGET_MB): {advice}."
    )


def parity_delta(result: Capture, layer: int) -> float | None:
    """The parity check the app reports: max |Δ| between the weights our reference implementation
    computed on this layer's Q/K and the model's own eager attention on the same inputs.

    None if the model's code has no eager attention function to compare with. (Comparing the
    reference with itself would always give 0 and prove nothing.)
    """
    return result.layer(layer).model_parity


def run_forward(
    model: LoadedModel, encoded: Encoded, policy: MaskPolicy, layers: list[int], need_output: bool = True
) -> tuple[torch.Tensor, torch.Tensor, dict[int, LayerRecord], torch.Tensor | None]:
    """One forward pass under ``policy``, recording ``layers``.

    Returns ``(mask (B,1,T,T), position_ids (B,T), records, output)`` where output is the logits
    ``(B, T, V)`` of a decoder or the last hidden state ``(B, T, D)`` of an encoder. With
    ``need_output=False`` the pass stops right after the last recorded layer (the later layers
    cannot change it) and output is None: a capture of layer 0 then costs a fraction of a forward.
    """
    mask = policy.build(encoded.attention_mask)  # (B, 1, T, T)
    position_ids = position_ids_for(encoded.attention_mask, policy, model.decoder)
    # The model's own masks with no padding: pass the plain 2-D mask, so transformers' mask
    # function (registered under our name) lets SDPA use its fast causal / unmasked path in the
    # layers we do not record. It is exactly the mask above; the recorded layers rebuild it.
    plain = policy == default_policy(model, policy) and bool(encoded.attention_mask.all())
    model_mask = encoded.attention_mask if plain else mask
    stop_early = not need_output and bool(layers)
    output = None
    with model.lock, torch.inference_mode(), recording(layers, stop_when_done=stop_early) as recorder:
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
    return mask, position_ids, recorder.records, output


def policy_effect(
    model: LoadedModel, encoded: Encoded, policy: MaskPolicy, output: torch.Tensor | None = None
) -> OutputEffect:
    """How the output under ``policy`` differs from the output under the model's default masks.

    ``output`` is the policy's forward output if already computed; otherwise it is run here.
    """
    if output is None:
        output = run_forward(model, encoded, policy, [])[3]
    reference = default_policy(model, policy)
    reference_output = output if reference == policy else run_forward(model, encoded, reference, [])[3]
    return measure_effect(model, encoded.attention_mask, output, reference_output, reference)


def effect_of(model: LoadedModel, texts: list[str], policy: MaskPolicy) -> OutputEffect:
    """The output effect alone (two plain forwards, no attention captured), for the app's panel."""
    encoded = encode(model, list(texts), policy)
    check_budget(model, 0, encoded.input_ids.shape[1], len(texts), effect=True)
    return policy_effect(model, encoded, policy)


def capture(
    model: LoadedModel,
    texts: list[str] | str,
    layers: list[int] | None = None,
    causal: bool | None = None,
    padding_mask: bool = True,
    padding_side: str = "right",
    window: int | None = None,
    max_length: int | None = None,
    effect: bool = True,
) -> Capture:
    """Run ``model`` once on ``texts`` under the given masks and capture the requested layers.

    Args:
        model: from :func:`attention_viz.load_model`.
        texts: one text or several (batched, padded to one length).
        layers: zero-based layers to capture; None = all.
        causal: None = the model's own choice (decoder: on, encoder: off).
        padding_mask: mask padding keys (off simulates a forgotten ``attention_mask``).
        padding_side: ``"left"`` or ``"right"``.
        window: sliding-window width, or None.
        max_length: truncate or pad every text to this many tokens; None = the longest text.
        effect: also measure the output change against the model's default policy.

    Shape: each captured layer's ``weights`` is ``(B, H, T, T)``.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    layers = model.check_layers(list(range(model.num_layers)) if layers is None else list(layers))
    try:
        policy = MaskPolicy(
            causal=model.decoder if causal is None else causal,
            padding_mask=padding_mask,
            window=window,
            padding_side=padding_side,
            max_length=max_length,
        )
    except ValueError as error:
        raise UserFacingError(str(error)) from error
    encoded = encode(model, texts, policy)
    check_budget(model, len(layers), encoded.input_ids.shape[1], len(texts), effect=effect)
    mask, position_ids, records, output = run_forward(model, encoded, policy, layers, need_output=effect)

    measured = policy_effect(model, encoded, policy, output) if effect else None
    return Capture(
        model_name=model.name,
        decoder=model.decoder,
        texts=tuple(texts),
        tokens=display_tokens(model.tokenizer, encoded.input_ids, encoded.attention_mask),
        input_ids=encoded.input_ids,
        attention_mask=encoded.attention_mask,
        position_ids=position_ids,
        mask=mask,
        policy=policy,
        layers={index: LayerCapture.from_record(records[index]) for index in layers},
        truncated=encoded.truncated,
        effect=measured,
    )
