"""Generation one token at a time: what a decoder's attention does under ``generate`` and its KV cache.

``generate`` runs the prompt once (the *prefill*: every prompt token is a query row), then one
forward per new token: that token is the only query, and its keys and values are appended to
the KV cache, so the earlier tokens' keys and values are never computed again. Step ``s``
(zero-based) therefore adds query rows to the attention matrix::

    step 0 (prefill)   rows 0 … P−1      the cache then holds P tokens
    step s ≥ 1         row  P+s−1        the cache then holds P+s tokens

and the last generated token is never fed back, so it has no row (T = P + N − 1 rows for N
new tokens). The cache is exact only because the model is causal: row i depends on tokens
0…i alone, so one full forward over the final sequence gives the same rows. Without the causal
mask every earlier row (and, in deeper layers, every cached key and value) would change with
each new token: the cached rows would be stale.

We use transformers' own ``generate`` (greedy, ``use_cache=True``) with a :class:`DynamicCache`
we hand it, the attention-function registry (:mod:`attention_viz.hooks`, recording one layer at
every call) and a :class:`LogitsProcessor` that only measures the cache after each step. No
modelling code is copied.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList

from attention_viz.capture import Encoded, check_budget, run_forward
from attention_viz.errors import UserFacingError
from attention_viz.hooks import LayerRecord, recording
from attention_viz.i18n import N_, _
from attention_viz.loading import LoadedModel
from attention_viz.policy import MaskPolicy, check_whole_number
from attention_viz.tokens import token_labels

__all__ = [
    "MAX_NEW_TOKENS",
    "MAX_PROMPT_TOKENS",
    "STALE_TOLERANCE",
    "Candidate",
    "Generation",
    "GenerationStep",
    "NEEDS_DECODER",
    "generate_stepwise",
    "kv_cache_bytes",
]

# One request stays small: at most 256 + 32 tokens, one layer's (H, T, T) weights three times
# (cached, full causal, full bidirectional): 9 heads × 287² × 4 bytes × 3 ≈ 9 MB for SmolLM2.
MAX_NEW_TOKENS = 32
MAX_PROMPT_TOKENS = 256
TOP_CANDIDATES = 5  # next-token candidates kept per step
# Float32 rounding between a cached row and the same row of a full forward stays far below this
# (measured: ~1e-7 on SmolLM2, every layer); a row that differs by more has really changed.
STALE_TOLERANCE = 1e-5

# Marked here, translated where shown (the page words it in the run's language).
NEEDS_DECODER = N_(
    "Generation needs a decoder: {name} is an encoder, which reads a whole text at once and has no "
    "next-token head and no KV cache. Pick a decoder such as smollm2."
)


@dataclass(frozen=True)
class Candidate:
    """One next-token candidate: its display label and the model's probability for it."""

    token: str
    probability: float


@dataclass(frozen=True)
class GenerationStep:
    """One forward call of ``generate``.

    Attributes:
        rows: query rows this call added (the prompt's P at the prefill, then 1).
        cache_tokens: tokens the KV cache held after the call (measured on the cache).
        cache_bytes: bytes of the cache's key and value tensors after the call (measured).
        token: the token this call produced (greedy: the most probable one).
        token_id: its id.
        candidates: the most probable next tokens, most probable first (the first is ``token``).
        text: the prompt and every token generated so far, this one included, decoded.
    """

    rows: int
    cache_tokens: int
    cache_bytes: int
    token: str
    token_id: int
    candidates: tuple[Candidate, ...]
    text: str


@dataclass(frozen=True)
class Generation:
    """A greedy generation with one layer's attention recorded at every step, and two full forwards.

    Attributes:
        model_name: the model's name. layer: the zero-based layer recorded.
        prompt: the prompt as typed. prompt_length: its tokens, P.
        tokens: display labels of every token of the final sequence (P + N; the last one has no row).
        input_ids: ``(P + N,)`` the final sequence's ids.
        cached: ``(H, T, T)`` weights as ``generate`` computed them, row by row (T = P + N − 1);
            0 for keys that did not exist yet.
        cached_mask: ``(T, T)`` bool, the mask those rows used (True = may attend).
        full_causal: ``(H, T, T)`` weights of one full forward over the T fed tokens, causal.
        full_bidirectional: ``(H, T, T)`` the same forward without the causal mask.
        kv_head: ``(H,)`` the KV head each query head reads (grouped-query attention).
        steps: one per forward call of ``generate`` (N of them).
        stopped_at_eos: generation ended on the end-of-sequence token, before the limit.
        cache_layers, kv_heads, head_dim, value_bytes: what one cached token costs is
            ``cache_layers × 2 (K and V) × kv_heads × head_dim × value_bytes``.
        model_parity: the largest max |Δ| between our recorded weights and the model's own eager
            attention over every call; None if the model has no eager function.
    """

    model_name: str
    layer: int
    prompt: str
    prompt_length: int
    tokens: list[str]
    input_ids: torch.Tensor
    cached: torch.Tensor
    cached_mask: torch.Tensor
    full_causal: torch.Tensor
    full_bidirectional: torch.Tensor
    kv_head: torch.Tensor
    steps: tuple[GenerationStep, ...]
    stopped_at_eos: bool
    cache_layers: int
    kv_heads: int
    head_dim: int
    value_bytes: int
    model_parity: float | None = None

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def num_heads(self) -> int:
        return self.cached.shape[0]

    @property
    def length(self) -> int:
        """T: the query rows after the last step."""
        return self.cached.shape[-1]

    @property
    def bytes_per_token(self) -> int:
        """What one token costs in the cache, from the formula (equals the measured growth)."""
        return self.cache_layers * 2 * self.kv_heads * self.head_dim * self.value_bytes

    def check_step(self, step: int) -> int:
        """``step`` if it is one of this generation's (0 … N−1); else a UserFacingError."""
        if not 0 <= step < self.num_steps:
            raise UserFacingError(
                _("Step {step} does not exist: this generation has steps 0–{last}.").format(
                    step=step, last=self.num_steps - 1
                )
            )
        return step

    def rows_at(self, step: int) -> int:
        """How many query rows exist after ``step``: P at the prefill, one more per step."""
        return self.prompt_length + self.check_step(step)

    def full(self, causal: bool) -> torch.Tensor:
        """The full forward's weights, with or without the causal mask. Shape: ``(H, T, T)``."""
        return self.full_causal if causal else self.full_bidirectional

    def full_mask(self, causal: bool) -> torch.Tensor:
        """The full forward's mask: lower-triangular with the causal mask, every cell without.

        Shape: returns ``(T, T)`` bool, True = may attend.
        """
        ones = torch.ones(self.length, self.length, dtype=torch.bool)
        return ones.tril() if causal else ones

    def row_delta(self, causal: bool) -> torch.Tensor:
        """Per head and query row, max |Δ| over keys between the cached row and the full forward's.

        Shape: returns ``(H, T)``.
        """
        return (self.cached - self.full(causal)).abs().amax(dim=-1)  # (H, T)

    def max_delta(self, head: int, step: int, causal: bool) -> float:
        """max |Δ| over the rows that exist after ``step``, for one head."""
        return float(self.row_delta(causal)[head, : self.rows_at(step)].max())

    def stale_rows(self, head: int, step: int, causal: bool, tolerance: float = STALE_TOLERANCE) -> list[int]:
        """The zero-based query rows (of those after ``step``) whose cached weights differ from
        the full forward's by more than ``tolerance``: rows the cache could not be trusted for."""
        delta = self.row_delta(causal)[head, : self.rows_at(step)]  # (rows,)
        return [int(row) for row in torch.nonzero(delta > tolerance).flatten()]


class _CacheMeter(LogitsProcessor):
    """Measures the KV cache after each forward of ``generate``; leaves the scores untouched."""

    def __init__(self, cache: DynamicCache) -> None:
        self.cache = cache
        self.sizes: list[tuple[int, int]] = []  # (tokens held, bytes) after each step

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.sizes.append((self.cache.get_seq_length(), kv_cache_bytes(self.cache)))
        return scores


def kv_cache_bytes(cache: DynamicCache) -> int:
    """Bytes held by a cache's key and value tensors, every layer."""
    total = 0
    for layer in cache.layers:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def _checked_prompt(model: LoadedModel, prompt: object) -> list[int]:
    """The prompt's token ids, or a UserFacingError saying what to change."""
    if not isinstance(prompt, str):
        raise TypeError(f"The prompt must be a string, got {type(prompt).__name__}.")
    if not prompt.strip():
        raise UserFacingError(
            _("The prompt is empty. Type the start of a sentence for the model to continue.")
        )
    ids = model.tokenize([prompt], truncation=False, verbose=False)["input_ids"][0]
    if len(ids) > MAX_PROMPT_TOKENS:
        raise UserFacingError(
            _(
                "The prompt has {count:,} tokens; generation here takes at most {most}. Shorten the prompt."
            ).format(count=len(ids), most=MAX_PROMPT_TOKENS)
        )
    if not ids:
        raise UserFacingError(_("The prompt has no tokens. Type a few words."))
    return list(ids)


def _assemble(calls: list[LayerRecord], prompt_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(H, T, T)`` matrix (and its ``(T, T)`` mask) from the recorded calls: the prefill's
    P rows, then one row per later call. Keys a row could not see yet stay 0 / masked."""
    length = prompt_length + len(calls) - 1
    heads = calls[0].trace.weights.shape[1]
    weights = torch.zeros(heads, length, length)  # (H, T, T)
    mask = torch.zeros(length, length, dtype=torch.bool)  # (T, T)
    prefill = calls[0].trace
    assert prefill.weights.shape[-2:] == (prompt_length, prompt_length), "the prefill has every prompt row"
    weights[:, :prompt_length, :prompt_length] = prefill.weights[0]
    mask[:prompt_length, :prompt_length] = prefill.mask[0, 0]
    for step, record in enumerate(calls[1:], start=1):
        row, keys = prompt_length + step - 1, prompt_length + step
        trace = record.trace
        assert trace.weights.shape[-2:] == (1, keys), "a decoding step is one query against the cache"
        weights[:, row, :keys] = trace.weights[0, :, 0]  # (H, keys)
        mask[row, :keys] = trace.mask[0, 0, 0]
    return weights, mask


def _full_forward(model: LoadedModel, ids: torch.Tensor, layer: int, causal: bool) -> torch.Tensor:
    """One forward over ``ids`` without a cache, with or without the causal mask; the layer's weights.

    Shape: ``ids`` is ``(T,)``; returns ``(H, T, T)``.
    """
    encoded = Encoded(input_ids=ids[None], attention_mask=torch.ones_like(ids)[None], truncated=[0])
    policy = MaskPolicy(causal=causal)
    _, _, records, _ = run_forward(model, encoded, policy, [layer], need_output=False)
    return records[layer].trace.weights[0]  # (H, T, T)


def generate_stepwise(model: LoadedModel, prompt: str, layer: int, max_new_tokens: int = 12) -> Generation:
    """Generate greedily with ``generate`` and its KV cache, recording ``layer`` at every step.

    Then run two full forwards over the fed tokens (with and without the causal mask) to compare
    the cached rows with.

    Args:
        model: a decoder from :func:`attention_viz.load_model`.
        prompt: the text to continue (at most ``MAX_PROMPT_TOKENS`` tokens).
        layer: the zero-based layer to record.
        max_new_tokens: 1 … ``MAX_NEW_TOKENS``; fewer come if the model ends on its
            end-of-sequence token.

    Raises:
        UserFacingError: an encoder, an empty or too long prompt, a layer out of range.

    Shape: ``cached`` and the full forwards are ``(H, T, T)`` with T = P + N − 1.
    """
    if not model.decoder:
        raise UserFacingError(_(NEEDS_DECODER).format(name=model.name))
    max_new_tokens = check_whole_number("max_new_tokens", max_new_tokens, 1, " token")
    if max_new_tokens > MAX_NEW_TOKENS:
        raise UserFacingError(
            _("At most {most} new tokens are generated here, not {count}.").format(
                most=MAX_NEW_TOKENS, count=max_new_tokens
            )
        )
    check_whole_number("layer", layer)
    layer = model.check_layers([layer])[0]
    prompt_ids = _checked_prompt(model, prompt)
    prompt_length = len(prompt_ids)
    check_budget(model, 1, prompt_length + max_new_tokens, 1, can_choose_layers=False)

    config = model.model.config
    cache = DynamicCache(config=config)
    meter = _CacheMeter(cache)
    input_ids = torch.tensor([prompt_ids])  # (1, P)
    tokenizer = model.tokenizer
    with model.lock, torch.inference_mode(), recording([layer], every_call=True) as recorder:
        output = model.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            past_key_values=cache,
            logits_processor=LogitsProcessorList([meter]),
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=tokenizer.pad_token_id,
        )
    calls = recorder.calls[layer]
    sequence = output.sequences[0]  # (P + N,)
    new_tokens = len(sequence) - prompt_length
    assert len(calls) == new_tokens == len(output.logits) == len(meter.sizes), "one forward per new token"
    cached, cached_mask = _assemble(calls, prompt_length)
    parities = [record.model_parity for record in calls if record.model_parity is not None]
    kv_head = calls[0].kv_head.clone()  # (H,)
    del recorder, calls  # the prefill's full trace is not needed any more

    fed = sequence[:-1]  # the last generated token is never fed back: it has no row
    full_causal = _full_forward(model, fed, layer, causal=True)
    full_bidirectional = _full_forward(model, fed, layer, causal=False)

    labels = token_labels(tokenizer, sequence.tolist())
    steps = []
    for step, logits in enumerate(output.logits):
        probabilities = torch.softmax(logits[0].float(), dim=-1)  # (V,)
        top = torch.topk(probabilities, TOP_CANDIDATES)
        candidates = tuple(
            Candidate(label, float(p))
            for label, p in zip(token_labels(tokenizer, top.indices.tolist()), top.values, strict=True)
        )
        tokens_held, size = meter.sizes[step]
        position = prompt_length + step  # where this step's token lands in the sequence
        steps.append(
            GenerationStep(
                rows=prompt_length if step == 0 else 1,
                cache_tokens=tokens_held,
                cache_bytes=size,
                token=labels[position],
                token_id=int(sequence[position]),
                candidates=candidates,
                text=tokenizer.decode(sequence[: position + 1].tolist()),
            )
        )
    eos = model.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    first_layer = cache.layers[0]
    return Generation(
        model_name=model.name,
        layer=layer,
        prompt=prompt,
        prompt_length=prompt_length,
        tokens=labels,
        input_ids=sequence.clone(),
        cached=cached,
        cached_mask=cached_mask,
        full_causal=full_causal.clone(),
        full_bidirectional=full_bidirectional.clone(),
        kv_head=kv_head,
        steps=tuple(steps),
        stopped_at_eos=new_tokens < max_new_tokens and int(sequence[-1]) in eos_ids,
        cache_layers=len(cache.layers),
        kv_heads=first_layer.keys.shape[1],
        head_dim=first_layer.keys.shape[-1],
        value_bytes=first_layer.keys.element_size(),
        model_parity=max(parities) if parities else None,
    )
