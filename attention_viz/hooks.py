"""The attention function we register with transformers, and how it records requested layers.

We use transformers' public registries, never a copy of its modelling code:

* ``AttentionInterface.register(ATTENTION_NAME, attention_forward)``: the model calls our
  function in every layer. Layers that a capture asked for run the reference implementation
  (:func:`attention_viz.attention.scaled_dot_product_attention`), which materialises every
  stage; every other layer runs transformers' own SDPA, so a one-layer capture costs about one
  plain forward.
* ``AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)``: without a mask function
  registered under the same name, transformers would pass *no mask* to a custom
  implementation, silently ignoring padding. Captures pass a prepared 4-D boolean mask, which
  transformers hands through unchanged; the registration protects plain ``model(...)`` calls.

Which layers to record is held in a :class:`contextvars.ContextVar`, so concurrent captures in
different threads never see each other's recorder.
"""

from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from attention_viz.attention import AttentionTrace, scaled_dot_product_attention
from attention_viz.errors import UserFacingError
from attention_viz.i18n import _

__all__ = ["ATTENTION_NAME", "AllLayersRecorded", "LayerRecord", "Recorder", "recording", "register"]

ATTENTION_NAME = "attention_viz"
# Arguments some models pass to their attention function that change the softmax itself (Gemma 2's
# tanh score capping, gpt-oss's sink logits): plain softmax(Q Kᵀ · scale + M) would be wrong.
UNDRAWN_KWARGS = ("softcap", "s_aux", "sinks")


@dataclass(frozen=True)
class LayerRecord:
    """What one requested layer computed.

    Attributes:
        trace: every stage of the layer's attention, KV heads expanded to query heads.
        query: ``(B, H, T, d)`` queries as the layer used them (after RoPE, if any).
        key: ``(B, H, T, d)`` keys, expanded from the KV heads to one per query head.
        kv_head: ``(H,)`` index of the KV head that each query head reads.
        scale: the scale the model applied to Q Kᵀ.
        model_parity: max |Δ| between ``trace.weights`` and the weights of the model's own eager
            attention on the same Q, K, V and mask, over rows that attend to something; None if
            the model's code has no eager attention function to compare with.
    """

    trace: AttentionTrace
    query: torch.Tensor
    key: torch.Tensor
    kv_head: torch.Tensor
    scale: float
    model_parity: float | None = None


class AllLayersRecorded(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by a recorder with ``stop_when_done`` once every requested layer is recorded.

    It ends the forward pass early: the layers after the last requested one cannot change what
    was recorded. :func:`attention_viz.capture.run_forward` catches it.
    """


@dataclass
class Recorder:
    """Collects :class:`LayerRecord` for the requested zero-based layer indices.

    Attributes:
        layers: zero-based layers to record.
        stop_when_done: end the forward (with :class:`AllLayersRecorded`) after the last of them.
        records: filled during the forward; a layer called again (``generate`` calls every
            layer once per new token) keeps its latest call.
        every_call: also keep every call's record, in order, in ``calls`` (for ``generate``:
            the prefill, then one call per new token with one query row against the cache).
        calls: per layer, one record per call; filled only with ``every_call``.
    """

    layers: frozenset[int]
    stop_when_done: bool = False
    records: dict[int, LayerRecord] = field(default_factory=dict)
    every_call: bool = False
    calls: dict[int, list[LayerRecord]] = field(default_factory=dict)


_ACTIVE: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "attention_viz_recorder", default=None
)


@contextlib.contextmanager
def recording(
    layers: list[int], stop_when_done: bool = False, every_call: bool = False
) -> Iterator[Recorder]:
    """Record the given layers during the forward passes run inside this block.

    With ``stop_when_done`` the forward raises :class:`AllLayersRecorded` as soon as every
    requested layer has been recorded (the caller catches it and has no model output). With
    ``every_call`` each call of a layer is kept in ``Recorder.calls`` (see :class:`Recorder`).
    """
    recorder = Recorder(layers=frozenset(layers), stop_when_done=stop_when_done, every_call=every_call)
    token = _ACTIVE.set(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.reset(token)


def _as_boolean_mask(attention_mask: torch.Tensor | None, query: torch.Tensor) -> torch.Tensor | None:
    """Our convention (True = may attend) from whatever transformers passed.

    Shape: returns ``(B, 1, Tq, Tk)`` bool or None.
    """
    if attention_mask is None or attention_mask.dtype == torch.bool:
        return attention_mask
    # An additive float mask: 0 = attend, a very negative number (finfo.min or -inf) = masked.
    return attention_mask > torch.finfo(attention_mask.dtype).min / 2


def _model_eager_attention(module: torch.nn.Module) -> Callable | None:
    """The eager attention function defined beside the model's attention class, if any.

    transformers' modelling files (Llama, BERT, ...) each define a public
    ``eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout)``
    that returns ``(output, weights)``: the model's own plain-PyTorch attention, independent of
    our reference implementation.
    """
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def model_parity(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    trace: AttentionTrace,
) -> float | None:
    """Max |Δ| between ``trace.weights`` and the model's own eager attention weights.

    Args:
        query: ``(B, H, T, d)``. key, value: ``(B, H_kv, T, d)``, as the layer computed them (the
            eager function expands shared KV heads itself). mask: ``(B, 1, T, T)`` bool or None.
        trace: what the reference implementation computed from the same inputs.

    Returns:
        the largest difference over rows that attend to something (eager spreads a fully masked
        row uniformly; we zero it), or None if the model has no eager attention function.
    """
    eager = _model_eager_attention(module)
    if eager is None:
        return None
    # Eager attention adds its mask to the scores; transformers' own convention is finfo.min.
    additive = None if mask is None else torch.where(mask, 0.0, torch.finfo(query.dtype).min).to(query.dtype)
    _, eager_weights = eager(module, query, key, value, additive, scaling=scale, dropout=0.0)  # (B, H, T, T)
    real_rows = ~trace.empty_rows  # (B, H, T)
    if not bool(real_rows.any()):
        return 0.0
    return float((eager_weights - trace.weights).abs()[real_rows].max())


def attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The function transformers calls in every attention layer.

    Args:
        query: ``(B, H, Tq, d)``. key, value: ``(B, H_kv, Tk, d)`` (grouped-query models share KV
            heads; Tk = Tq except during ``generate``, where the keys include the KV cache).
            attention_mask: ``(B, 1, Tq, Tk)``, bool or additive.

    Returns:
        ``(output, weights)``: output ``(B, Tq, H, d)`` as transformers expects; weights
        ``(B, H, Tq, Tk)`` for recorded layers, else None.

    Shape: query ``(B, H, Tq, d)`` in, output ``(B, Tq, H, d)`` out.
    """
    if any(kwargs.get(name) is not None for name in UNDRAWN_KWARGS):
        # Caught before any weights load for the models we know (attention_viz.models); this
        # guards the rest: never compute, or draw, attention the reference does not implement.
        raise UserFacingError(
            _(
                "This model changes its attention scores beyond softmax(Q Kᵀ · scale + M) "
                "(score capping or sink logits), which attention-viz does not draw; it cannot be shown truly."
            )
        )
    recorder = _ACTIVE.get()
    layer = getattr(module, "layer_idx", None)
    if recorder is None or layer not in recorder.layers:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs
        )
    heads, kv_heads = query.shape[1], key.shape[1]
    assert heads % kv_heads == 0, f"{heads} query heads cannot share {kv_heads} KV heads evenly"
    group = heads // kv_heads
    kv_head = torch.arange(heads, device=query.device) // group  # (H,): query head h reads KV head h // group
    key_expanded = key[:, kv_head]  # (B, H, T, d)
    value_expanded = value[:, kv_head]  # (B, H, T, d)
    mask = _as_boolean_mask(attention_mask, query)
    if mask is None and getattr(module, "is_causal", False):
        # transformers would let SDPA apply is_causal=True; make that explicit for the reference.
        # With a KV cache the Tq queries are the *last* Tq of the Tk positions (one new token
        # against the cache: Tq = 1), so query i may see keys up to Tk - Tq + i.
        query_length, key_length = query.shape[2], key.shape[2]
        mask = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device).tril(
            diagonal=key_length - query_length
        )[None, None]  # (1, 1, Tq, Tk)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    trace = scaled_dot_product_attention(query, key_expanded, value_expanded, mask=mask, scale=scale)
    record = LayerRecord(
        trace=trace,
        query=query,
        key=key_expanded,
        kv_head=kv_head.cpu(),
        scale=float(scale),
        model_parity=model_parity(module, query, key, value, mask, scale, trace),
    )
    recorder.records[layer] = record
    if recorder.every_call:
        recorder.calls.setdefault(layer, []).append(record)
    if recorder.stop_when_done and len(recorder.records) == len(recorder.layers):
        raise AllLayersRecorded
    return trace.output.transpose(1, 2).contiguous(), trace.weights  # (B, T, H, d)


def register() -> None:
    """Register our attention and mask functions with transformers (idempotent)."""
    AttentionInterface.register(ATTENTION_NAME, attention_forward)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
