"""The reference attention against torch's SDPA, its explicit rules, and the multi-head layer.

torch 2.13 returns zeros for a query row whose keys are all masked; we compare with it only on
rows that have at least one visible key, and check our own rule for empty rows separately.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_viz import masks
from attention_viz.attention import (
    STAGES,
    AttentionTrace,
    MultiHeadTrace,
    multi_head_self_attention,
    scaled_dot_product_attention,
)

SETTINGS = settings(max_examples=200, deadline=None)
seeds = st.integers(min_value=0, max_value=2**31 - 1)

# Per dtype: (rtol, atol) for comparing two correct implementations that round differently.
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.float64: (1e-10, 1e-12)}

SQUARE_KINDS = ["full", "causal", "window", "two_sided", "prefix", "block"]
ANY_SHAPE_KINDS = ["none", "padding", "random"]


@dataclasses.dataclass
class Case:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    mask: torch.Tensor | None
    scale: float | None
    description: str


def random_bool(shape: tuple[int, ...], keep: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=generator) < keep


def build_component(
    draw: st.DrawFn, kind: str, batch: int, heads: int, tq: int, tk: int, generator: torch.Generator
) -> torch.Tensor | None:
    """One mask made with the attention_viz.masks builders (or a random boolean mask)."""
    if kind == "none":
        return None
    if kind == "full":
        return masks.full_mask(tk)
    if kind == "causal":
        return masks.causal_mask(tk)
    if kind in ("window", "two_sided"):
        return masks.sliding_window_mask(tk, draw(st.integers(1, 14)), causal=kind == "window")
    if kind == "prefix":
        return masks.prefix_lm_mask(tk, draw(st.integers(0, 14)))
    if kind == "padding":
        return masks.padding_mask(random_bool((batch, tk), draw(st.floats(0.0, 1.0)), generator).long())
    if kind == "block":
        segment_ids = torch.randint(0, draw(st.integers(1, 4)), (batch, tk), generator=generator)
        return masks.block_diagonal_mask(segment_ids)
    # "random": any shape that broadcasts to (B, H, Tq, Tk); a low keep rate makes empty rows.
    shape = tuple(size if draw(st.booleans()) else 1 for size in (batch, heads, tq, tk))
    return random_bool(shape, draw(st.sampled_from([0.1, 0.3, 0.7, 1.0])), generator)


@st.composite
def attention_cases(draw: st.DrawFn) -> Case:
    batch, heads = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    head_dim, value_dim = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    scale = draw(st.none() | st.floats(min_value=0.05, max_value=2.0))
    generator = torch.Generator().manual_seed(draw(seeds))

    # Masks built from one length need self-attention (Tq == Tk); the others allow Tq != Tk.
    self_attention = draw(st.booleans())
    allowed_kinds = SQUARE_KINDS + ANY_SHAPE_KINDS if self_attention else ANY_SHAPE_KINDS
    kinds = draw(st.lists(st.sampled_from(allowed_kinds), min_size=1, max_size=4))
    tk = draw(st.integers(1, 12))
    tq = tk if self_attention else draw(st.integers(1, 12))
    components = [build_component(draw, kind, batch, heads, tq, tk, generator) for kind in kinds]
    mask = components[0] if len(components) == 1 else masks.combine(*components)

    q = torch.randn(batch, heads, tq, head_dim, generator=generator, dtype=dtype)
    k = torch.randn(batch, heads, tk, head_dim, generator=generator, dtype=dtype)
    v = torch.randn(batch, heads, tk, value_dim, generator=generator, dtype=dtype)
    return Case(q, k, v, mask, scale, f"kinds={kinds} dtype={dtype} scale={scale}")


def full_mask_of(case: Case) -> torch.Tensor:
    """The case's mask at (B, H, Tq, Tk), broadcast independently of the code under test."""
    batch, heads, tq, _ = case.q.shape
    target = (batch, heads, tq, case.k.shape[-2])
    if case.mask is None:
        return torch.ones(target, dtype=torch.bool)
    return torch.broadcast_to(case.mask, target)


@SETTINGS
@given(case=attention_cases())
def test_matches_torch_sdpa_on_rows_with_a_visible_key(case: Case) -> None:
    trace = scaled_dot_product_attention(case.q, case.k, case.v, mask=case.mask, scale=case.scale)
    expected = F.scaled_dot_product_attention(case.q, case.k, case.v, attn_mask=case.mask, scale=case.scale)

    mask = full_mask_of(case)
    nonempty = mask.any(dim=-1)  # (B, H, Tq)
    rtol, atol = TOLERANCE[case.q.dtype]
    assert trace.output.shape == expected.shape
    assert trace.output.dtype == case.q.dtype
    torch.testing.assert_close(trace.output[nonempty], expected[nonempty], rtol=rtol, atol=atol)

    # The same weights, recomputed with a plain masked softmax on the rows that have keys.
    scale = 1.0 / math.sqrt(case.q.shape[-1]) if case.scale is None else case.scale
    logits = torch.einsum("bhqd,bhkd->bhqk", case.q, case.k) * scale
    reference = torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(trace.weights[nonempty], reference[nonempty], rtol=rtol, atol=atol)


@SETTINGS
@given(case=attention_cases())
def test_stages_follow_their_definitions(case: Case) -> None:
    trace = scaled_dot_product_attention(case.q, case.k, case.v, mask=case.mask, scale=case.scale)
    batch, heads, tq, head_dim = case.q.shape
    tk, value_dim = case.v.shape[-2], case.v.shape[-1]
    mask = full_mask_of(case)
    rtol, atol = TOLERANCE[case.q.dtype]

    assert trace.scores.shape == trace.masked_scores.shape == trace.weights.shape == (batch, heads, tq, tk)
    assert trace.output.shape == (batch, heads, tq, value_dim)
    assert trace.empty_rows.shape == (batch, heads, tq)
    assert trace.mask.shape == (batch, heads, tq, tk)
    assert trace.mask.dtype == torch.bool and trace.empty_rows.dtype == torch.bool
    assert torch.equal(trace.mask, mask)

    # scores = Q Kᵀ · scale, with scale = 1/√d unless given.
    scale = 1.0 / math.sqrt(head_dim) if case.scale is None else case.scale
    torch.testing.assert_close(
        trace.scores, torch.einsum("bhqd,bhkd->bhqk", case.q, case.k) * scale, rtol=rtol, atol=atol
    )
    # masked_scores: exactly -inf where masked, exactly the scores elsewhere.
    assert torch.isneginf(trace.masked_scores[~mask]).all()
    assert torch.equal(trace.masked_scores[mask], trace.scores[mask])

    # No NaN anywhere; everything but masked_scores is finite.
    for name in ("scores", "masked_scores", "weights", "output"):
        assert not torch.isnan(getattr(trace, name)).any(), name
    for name in ("scores", "weights", "output"):
        assert torch.isfinite(getattr(trace, name)).all(), name

    # Empty rows: flagged, and exactly zero in weights and output, by rule.
    empty = ~mask.any(dim=-1)
    assert torch.equal(trace.empty_rows, empty)
    assert (trace.weights[empty] == 0.0).all()
    assert (trace.output[empty] == 0.0).all()

    # Masked cells get exactly zero weight; every other row is a distribution.
    assert (trace.weights[~mask] == 0.0).all()
    assert (trace.weights >= 0.0).all()
    row_sums = trace.weights.sum(dim=-1)[~empty]
    torch.testing.assert_close(row_sums, torch.ones_like(row_sums), rtol=rtol, atol=10 * atol)

    # output = weights · V, checked with a loop over the keys.
    recomputed = sum(trace.weights[..., key, None] * case.v[:, :, None, key, :] for key in range(tk))
    torch.testing.assert_close(trace.output, recomputed, rtol=rtol, atol=atol)


def test_a_fully_masked_row_is_zero_flagged_and_nan_free() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4, generator=generator) for _ in range(3))
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    trace = scaled_dot_product_attention(q, k, v, mask=mask)
    assert trace.empty_rows[0, 0].tolist() == [False, True, False]
    assert trace.weights[0, 0, 1].tolist() == [0.0, 0.0, 0.0]
    assert trace.output[0, 0, 1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert trace.weights[0, 0, 0].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(trace.output[0, 0, 0], v[0, 0, 0])
    assert not torch.isnan(trace.weights).any() and not torch.isnan(trace.output).any()
    assert torch.isneginf(trace.masked_scores[0, 0, 1]).all()


def test_no_mask_means_every_key_is_visible() -> None:
    generator = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    trace = scaled_dot_product_attention(q, k, v)
    assert trace.mask.all() and trace.mask.shape == (2, 3, 5, 5)
    assert not trace.empty_rows.any()
    assert torch.equal(trace.masked_scores, trace.scores)
    torch.testing.assert_close(trace.output, F.scaled_dot_product_attention(q, k, v))


def test_trace_fields_and_stages() -> None:
    assert [field.name for field in dataclasses.fields(AttentionTrace)] == [
        "scores",
        "masked_scores",
        "weights",
        "output",
        "empty_rows",
        "mask",
    ]
    assert STAGES == ("scores", "masked_scores", "weights", "output")
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 4, 3, generator=generator) for _ in range(3))
    trace = scaled_dot_product_attention(q, k, v, mask=masks.causal_mask(4))
    for name in STAGES:
        assert trace.stage(name) is getattr(trace, name)
    with pytest.raises(dataclasses.FrozenInstanceError):
        trace.weights = trace.scores  # type: ignore[misc]


@pytest.mark.parametrize("name", ["pattern", "mask", "empty_rows", "Weights", "", "attn_scores"])
def test_stage_rejects_unknown_names(name: str) -> None:
    generator = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 1, 2, 2, generator=generator) for _ in range(3))
    trace = scaled_dot_product_attention(q, k, v)
    with pytest.raises(
        ValueError, match=r"Unknown stage .*choose one of scores, masked_scores, weights, output"
    ):
        trace.stage(name)


def test_bad_input_shapes_are_rejected() -> None:
    four = torch.zeros(1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"\(batch, heads, tokens, head_dim\)"):
        scaled_dot_product_attention(torch.zeros(1, 3, 4), four, four)
    with pytest.raises(ValueError, match=r"same head_dim, got 5 and 4"):
        scaled_dot_product_attention(torch.zeros(1, 1, 3, 5), four, four)
    with pytest.raises(ValueError, match=r"same number of tokens, got 3 and 2"):
        scaled_dot_product_attention(four, four, torch.zeros(1, 1, 2, 4))


# --- multi-head self-attention ---------------------------------------------------------------


@st.composite
def multi_head_cases(draw: st.DrawFn) -> tuple[torch.Tensor, int, torch.Tensor | None, int, bool]:
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 10))
    heads = draw(st.integers(1, 4))
    width = heads * draw(st.integers(1, 8))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    generator = torch.Generator().manual_seed(draw(seeds))
    embeddings = torch.randn(batch, length, width, generator=generator, dtype=dtype)
    mask = draw(
        st.sampled_from(
            [
                None,
                masks.causal_mask(length),
                masks.combine(
                    masks.causal_mask(length),
                    masks.padding_mask(random_bool((batch, length), 0.7, generator).long()),
                ),
                random_bool((batch, heads, length, length), 0.5, generator),
            ]
        )
    )
    return embeddings, heads, mask, draw(seeds), draw(st.booleans())


def manual_multi_head(
    embeddings: torch.Tensor, num_heads: int, mask: torch.Tensor | None, seed: int, tie_query_key: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Recompute the layer head by head, query by query, from the documented recipe.

    The projections are four seeded (D, D) normal matrices scaled by 1/√D, drawn in the order
    query, key, value, output; with ``tie_query_key`` the key projection is the query's.
    """
    batch, length, width = embeddings.shape
    head_dim = width // num_heads
    generator = torch.Generator().manual_seed(seed)
    w_query, w_key, w_value, w_out = (
        torch.randn(width, width, generator=generator, dtype=embeddings.dtype) / math.sqrt(width)
        for _ in range(4)
    )
    if tie_query_key:
        w_key = w_query
    full = torch.ones(batch, num_heads, length, length, dtype=torch.bool)
    allowed = full if mask is None else torch.broadcast_to(mask, full.shape)
    merged = torch.zeros(batch, length, width, dtype=embeddings.dtype)
    q_all, k_all, v_all = (
        torch.zeros(batch, num_heads, length, head_dim, dtype=embeddings.dtype) for _ in "qkv"
    )
    for b in range(batch):
        concatenated = torch.zeros(length, width, dtype=embeddings.dtype)
        for h in range(num_heads):
            columns = slice(h * head_dim, (h + 1) * head_dim)
            q = embeddings[b] @ w_query[:, columns]  # (T, d)
            k = embeddings[b] @ w_key[:, columns]
            v = embeddings[b] @ w_value[:, columns]
            q_all[b, h], k_all[b, h], v_all[b, h] = q, k, v
            for i in range(length):
                visible = [j for j in range(length) if allowed[b, h, i, j]]
                if not visible:
                    continue  # an empty row attends to nothing: its output stays 0
                logits = torch.stack([q[i] @ k[j] for j in visible]) / math.sqrt(head_dim)
                weights = torch.softmax(logits, dim=0)
                concatenated[i, columns] = sum(w * v[j] for w, j in zip(weights, visible, strict=True))
        merged[b] = concatenated @ w_out
    return merged, q_all, k_all, v_all


@settings(max_examples=100, deadline=None)
@given(case=multi_head_cases())
def test_multi_head_matches_a_manual_recomputation(case) -> None:
    embeddings, heads, mask, seed, tie = case
    batch, length, width = embeddings.shape
    result = multi_head_self_attention(embeddings, heads, mask=mask, seed=seed, tie_query_key=tie)
    assert isinstance(result, MultiHeadTrace)
    head_dim = width // heads
    for tensor in (result.q, result.k, result.v):
        assert tensor.shape == (batch, heads, length, head_dim)
    assert result.heads.weights.shape == (batch, heads, length, length)
    assert result.heads.output.shape == (batch, heads, length, head_dim)
    assert result.merged.shape == (batch, length, width)
    assert result.merged.dtype == embeddings.dtype

    merged, q, k, v = manual_multi_head(embeddings, heads, mask, seed, tie)
    rtol, atol = TOLERANCE[embeddings.dtype]
    torch.testing.assert_close(result.q, q, rtol=rtol, atol=atol)
    torch.testing.assert_close(result.k, k, rtol=rtol, atol=atol)
    torch.testing.assert_close(result.v, v, rtol=rtol, atol=atol)
    torch.testing.assert_close(result.merged, merged, rtol=rtol, atol=atol)
    if tie:
        assert torch.equal(result.q, result.k)
        # scores[i, i] = q_i · q_i · scale >= 0 in every head.
        assert (torch.diagonal(result.heads.scores, dim1=-2, dim2=-1) >= 0).all()


@settings(max_examples=50, deadline=None)
@given(seed=seeds, other=seeds, tie=st.booleans())
def test_multi_head_is_deterministic_per_seed(seed: int, other: int, tie: bool) -> None:
    embeddings = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(99))
    mask = masks.causal_mask(6)
    first = multi_head_self_attention(embeddings, 4, mask=mask, seed=seed, tie_query_key=tie)
    again = multi_head_self_attention(embeddings, 4, mask=mask, seed=seed, tie_query_key=tie)
    for name in ("q", "k", "v", "merged"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert torch.equal(first.heads.weights, again.heads.weights)
    if other != seed:
        different = multi_head_self_attention(embeddings, 4, mask=mask, seed=other, tie_query_key=tie)
        assert not torch.allclose(first.merged, different.merged)
        assert not torch.allclose(first.q, different.q)


def test_untied_keys_differ_from_queries() -> None:
    embeddings = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(4))
    result = multi_head_self_attention(embeddings, 2, seed=0, tie_query_key=False)
    assert not torch.allclose(result.q, result.k)


def test_tied_projection_scores_have_a_nonnegative_diagonal() -> None:
    embeddings = torch.randn(3, 9, 24, generator=torch.Generator().manual_seed(5))
    result = multi_head_self_attention(embeddings, 3, seed=7, tie_query_key=True)
    diagonal = torch.diagonal(result.heads.scores, dim1=-2, dim2=-1)  # (B, H, T)
    assert diagonal.shape == (3, 3, 9)
    assert (diagonal >= 0).all()


@pytest.mark.parametrize(("width", "heads"), [(10, 3), (16, 5), (7, 2), (8, 0), (8, -2)])
def test_width_must_divide_into_heads(width: int, heads: int) -> None:
    embeddings = torch.zeros(1, 3, width)
    with pytest.raises(ValueError, match=rf"width {width} must be divisible by the number of heads {heads}"):
        multi_head_self_attention(embeddings, heads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_a_float_mask_is_refused_not_read_inverted(dtype):
    """An additive 0/−inf mask must never pass as boolean: .bool() would flip it."""
    q = torch.randn(1, 1, 4, 8)
    additive = masks.to_additive(masks.causal_mask(4), dtype)
    with pytest.raises(ValueError, match="boolean"):
        scaled_dot_product_attention(q, q, q, mask=additive)
    with pytest.raises(ValueError, match="boolean"):
        masks.combine(masks.causal_mask(4), additive)


def test_a_zero_one_integer_mask_means_what_it_says():
    q = torch.randn(1, 1, 4, 8)
    as_ints = masks.causal_mask(4).to(torch.int64)
    torch.testing.assert_close(
        scaled_dot_product_attention(q, q, q, mask=as_ints).weights,
        scaled_dot_product_attention(q, q, q, mask=masks.causal_mask(4)).weights,
    )
