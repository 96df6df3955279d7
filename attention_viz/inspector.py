"""One cell of an attention matrix taken apart: how the weight w_ij comes from q_i and k_j.

    q_i · k_j = Σ_m q_i[m] k_j[m]                         (dimension by dimension)
    s_ij      = (q_i · k_j) × scale                        (the ``scores`` stage)
    s_ij + M_ij                                            (M = 0 where i may attend to j, −∞ where not)
    w_ij      = exp(s_ij + M_ij) / Σ_k exp(s_ik + M_ik)    (the ``weights`` stage)
    o_i       = Σ_j w_ij v_j                               (the head's output row, where V is kept)

The vectors, the score, the masked score, the row's weights and the output are the trace's own
numbers (a real model's :class:`~attention_viz.capture.LayerCapture`, or the Playground's
:class:`~attention_viz.attention.MultiHeadTrace`), copied, never recomputed. The dot product and
the softmax's numerator and denominator are computed here in float64 from those numbers, so
that every step of the chain can be shown; they agree with the trace to float32 precision.
A real model's queries and keys are the ones its layer used: after RoPE, with a grouped-query
model's KV heads expanded, so ``k`` is the key of the KV head that the query head reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attention_viz.capture import Capture
from attention_viz.errors import UserFacingError
from attention_viz.i18n import N_, _
from attention_viz.playground import PlaygroundResult
from attention_viz.policy import check_whole_number

__all__ = ["CellInspection", "default_cell", "inspect_capture", "inspect_playground"]

# Beyond this, exp(s) is too large to read (e^50 ≈ 5·10²¹): the softmax's terms are then shown
# as exp(s − the row's largest s), which leaves every weight unchanged.
SHIFT_ABOVE = 50.0


@dataclass(frozen=True)
class CellInspection:
    """Every number between q_i, k_j and the weight w_ij of one head, for one query row.

    Attributes:
        layer: zero-based layer of a real model; None for the Playground's one layer.
        item: zero-based row of the batch. head: zero-based query head.
        query, key: zero-based positions i (the row) and j (the column).
        kv_head: the KV head whose keys the query head reads (``head`` when each head has its own).
        kv_group: the query heads that read that KV head (just ``(head,)`` without grouped-query attention).
        tokens: the row's ``T`` display tokens (keys and queries are the same sequence).
        q: ``(d,)`` the query vector q_i. k: ``(d,)`` the key vector k_j.
        scale: the factor applied to q·k (``1/√d`` unless the model says otherwise).
        score: s_ij = (q_i·k_j) × scale, as the trace has it.
        allowed: whether the mask lets query i attend to key j (M_ij = 0, else −∞).
        row_scores: ``(T,)`` the row's masked scores s_ik + M_ik (``-inf`` where masked).
        row_allowed: ``(T,)`` bool, True where query i may attend to key k.
        row_weights: ``(T,)`` the row's weights as the trace has them.
        weight: w_ij as the trace has it (the number in the heatmap).
        empty_row: every key of the row is masked; by rule its weights are all 0.
        shift: subtracted from every score before ``exp`` (0 unless the row's scores exceed
            ``SHIFT_ABOVE``; the softmax is the same either way).
        values: ``(T, d_v)`` the value vectors v_k, where the trace keeps them (Playground); else None.
        output: ``(d_v,)`` o_i = Σ_k w_ik v_k as the trace has it; None without values.
    """

    layer: int | None
    item: int
    head: int
    query: int
    key: int
    kv_head: int
    kv_group: tuple[int, ...]
    tokens: tuple[str, ...]
    q: torch.Tensor
    k: torch.Tensor
    scale: float
    score: float
    allowed: bool
    row_scores: torch.Tensor
    row_allowed: torch.Tensor
    row_weights: torch.Tensor
    weight: float
    empty_row: bool
    shift: float
    values: torch.Tensor | None = None
    output: torch.Tensor | None = None

    @property
    def query_token(self) -> str:
        return self.tokens[self.query]

    @property
    def key_token(self) -> str:
        return self.tokens[self.key]

    @property
    def grouped(self) -> bool:
        """Whether other query heads read the same KV head (grouped-query attention)."""
        return len(self.kv_group) > 1

    @property
    def product(self) -> torch.Tensor:
        """``(d,)`` q_i[m] · k_j[m] for each dimension m, in float64 (exact for float32 inputs)."""
        return self.q.double() * self.k.double()

    @property
    def dot(self) -> float:
        """q_i · k_j: the sum of :attr:`product`."""
        return float(self.product.sum())

    @property
    def bias(self) -> float:
        """M_ij: 0 where query i may attend to key j, −∞ where it may not."""
        return 0.0 if self.allowed else float("-inf")

    @property
    def masked_score(self) -> float:
        """s_ij + M_ij, the number the softmax receives (−∞ for a masked key)."""
        return float(self.row_scores[self.key])

    @property
    def terms(self) -> torch.Tensor:
        """``(T,)`` exp(s_ik + M_ik − shift) for every key k, in float64 (0 for a masked key)."""
        return torch.exp(self.row_scores.double() - self.shift)

    @property
    def numerator(self) -> float:
        """exp(s_ij + M_ij − shift): 0 for a masked key."""
        return float(self.terms[self.key])

    @property
    def denominator(self) -> float:
        """Σ_k exp(s_ik + M_ik − shift) over the row: 0 for an empty row."""
        return float(self.terms.sum())

    @property
    def softmax_weight(self) -> float:
        """numerator / denominator, the weight the chain arrives at (0 for an empty row, by rule)."""
        return 0.0 if self.empty_row else self.numerator / self.denominator

    @property
    def contributions(self) -> torch.Tensor | None:
        """``(T, d_v)`` w_ik v_k for every key k (their sum over k is the output row); None without values."""
        if self.values is None:
            return None
        return self.row_weights[:, None].double() * self.values.double()


def _position(name: str, value: object, count: int, message: str, **values: object) -> int:
    """A zero-based index in ``0..count-1``, or an error that names the valid range.

    ``message`` is marked with :func:`N_` and has the placeholders ``{value}`` and ``{last}``
    (and those of ``values``); it is shown in the run's language.
    """
    value = check_whole_number(name, value)
    if not 0 <= value < count:
        raise UserFacingError(_(message).format(value=value, last=count - 1, **values))
    return value


def _shift(row_scores: torch.Tensor) -> float:
    """The row's largest finite masked score if it is over ``SHIFT_ABOVE``, else 0. Shape: ``(T,)``."""
    finite = row_scores[torch.isfinite(row_scores)]
    largest = float(finite.max()) if finite.numel() else 0.0
    return largest if largest > SHIFT_ABOVE else 0.0


def _cell(
    *,
    layer: int | None,
    item: int,
    head: int,
    query: int,
    key: int,
    kv_head: torch.Tensor,
    tokens: list[str],
    q: torch.Tensor,
    k: torch.Tensor,
    scale: float,
    scores: torch.Tensor,
    masked_scores: torch.Tensor,
    allowed: torch.Tensor,
    weights: torch.Tensor,
    values: torch.Tensor | None = None,
    output: torch.Tensor | None = None,
) -> CellInspection:
    """Copy one cell's numbers out of a trace (copies: a view would keep the whole trace alive).

    Shapes: ``q``, ``k`` ``(T, d)`` of the head; ``scores``, ``masked_scores``, ``weights``,
    ``allowed`` ``(T, T)``; ``kv_head`` ``(H,)``; ``values`` ``(T, d_v)``; ``output`` ``(T, d_v)``.
    """
    row_scores = masked_scores[query].detach().clone()  # (T,)
    row_allowed = allowed[query].detach().clone()  # (T,)
    kv = int(kv_head[head])
    return CellInspection(
        layer=layer,
        item=item,
        head=head,
        query=query,
        key=key,
        kv_head=kv,
        kv_group=tuple(int(h) for h in torch.nonzero(kv_head == kv).flatten()),
        tokens=tuple(tokens),
        q=q[query].detach().clone(),
        k=k[key].detach().clone(),
        scale=float(scale),
        score=float(scores[query, key]),
        allowed=bool(row_allowed[key]),
        row_scores=row_scores,
        row_allowed=row_allowed,
        row_weights=weights[query].detach().clone(),
        weight=float(weights[query, key]),
        empty_row=not bool(row_allowed.any()),
        shift=_shift(row_scores),
        values=None if values is None else values.detach().clone(),
        output=None if output is None else output[query].detach().clone(),
    )


def inspect_capture(
    capture: Capture, layer: int, item: int, head: int, query: int, key: int
) -> CellInspection:
    """The cell (``query``, ``key``) of ``head`` in a captured ``layer`` of a real model, taken apart.

    Args:
        capture: from :func:`attention_viz.capture.capture`; ``layer`` must be among its layers.
        layer, item, head, query, key: zero-based.

    Raises:
        UserFacingError: an index out of range (the message names the valid range).

    Shape: ``q``/``k`` are ``(d,)`` (after RoPE, the key of the head's KV head); the row is ``(T,)``.
    """
    captured = capture.layer(layer)
    batch, heads, length, _ = captured.query.shape  # (B, H, T, d)
    item = _position("text", item, batch, N_("Text {value} does not exist: the batch has rows 0–{last}."))
    head = _position(
        "head", head, heads, N_("Head {value} does not exist: layer {layer} has heads 0–{last}."), layer=layer
    )
    query = _position(
        "query", query, length, N_("Query {value} does not exist: the text has positions 0–{last}.")
    )
    key = _position("key", key, length, N_("Key {value} does not exist: the text has positions 0–{last}."))
    allowed = captured.mask[item, 0]  # (T, T)
    return _cell(
        layer=layer,
        item=item,
        head=head,
        query=query,
        key=key,
        kv_head=captured.kv_head,
        tokens=capture.tokens[item],
        q=captured.query[item, head],
        k=captured.key[item, head],
        scale=captured.scale,
        scores=captured.scores[item, head],
        masked_scores=captured.masked_scores[item, head],
        allowed=allowed,
        weights=captured.weights[item, head],
    )


def inspect_playground(
    result: PlaygroundResult, item: int, head: int, query: int, key: int
) -> CellInspection:
    """The cell (``query``, ``key``) of ``head`` in the Playground's layer, with its values and output row.

    The Playground's heads attend with the reference implementation's default scale, ``1/√d``.

    Raises:
        UserFacingError: an index out of range (the message names the valid range).

    Shape: ``q``/``k`` are ``(d,)``, ``values`` ``(T, d)``, ``output`` ``(d,)``.
    """
    trace = result.attention
    batch, heads, length, head_dim = trace.q.shape  # (B, H, T, d)
    item = _position(
        "sentence", item, batch, N_("Sentence {value} does not exist: the batch has rows 0–{last}.")
    )
    head = _position(
        "head", head, heads, N_("Head {value} does not exist: the Playground has heads 0–{last}.")
    )
    query = _position(
        "query", query, length, N_("Query {value} does not exist: the sentence has positions 0–{last}.")
    )
    key = _position(
        "key", key, length, N_("Key {value} does not exist: the sentence has positions 0–{last}.")
    )
    return _cell(
        layer=None,
        item=item,
        head=head,
        query=query,
        key=key,
        kv_head=torch.arange(heads),  # every head has keys of its own
        tokens=result.tokens[item],
        q=trace.q[item, head],
        k=trace.k[item, head],
        scale=1.0 / math.sqrt(head_dim),
        scores=trace.heads.scores[item, head],
        masked_scores=trace.heads.masked_scores[item, head],
        allowed=trace.heads.mask[item, head],
        weights=trace.heads.weights[item, head],
        values=trace.v[item, head],
        output=trace.heads.output[item, head],
    )


def default_cell(weights: torch.Tensor, pad_rows: torch.Tensor | list[bool] | None = None) -> tuple[int, int]:
    """A cell worth showing first: the last real token's row, at the key it attends to most.

    Shape: ``weights`` is ``(T, T)`` of one head; ``pad_rows`` ``(T,)`` True where the query is [PAD].
    """
    length = weights.shape[0]
    pads = [False] * length if pad_rows is None else [bool(p) for p in pad_rows]
    real = [row for row in range(length) if not pads[row]]
    query = real[-1] if real else length - 1
    return query, int(torch.argmax(weights[query]))
