"""The mask builders against slow, plain-Python double loops, plus their drawings and errors.

Every reference below is a loop over (query, key) index pairs that spells out the rule from
the docstring, so a vectorised builder can only pass by agreeing with the plain reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attention_viz import masks

SETTINGS = settings(max_examples=150, deadline=None)

lengths = st.integers(min_value=1, max_value=40)
windows = st.integers(min_value=1, max_value=45)
prefixes = st.integers(min_value=0, max_value=45)


# --- slow references -------------------------------------------------------------------------


def loop_square(length: int, allowed: Callable[[int, int], bool]) -> list[list[bool]]:
    """A (T, T) mask as nested lists: row = query, column = key."""
    return [[bool(allowed(query, key)) for key in range(length)] for query in range(length)]


def loop_causal(length: int) -> list[list[bool]]:
    return loop_square(length, lambda query, key: key <= query)


def loop_sliding(length: int, window: int, causal: bool) -> list[list[bool]]:
    if causal:
        return loop_square(length, lambda query, key: 0 <= query - key < window)
    return loop_square(length, lambda query, key: abs(query - key) < window)


def loop_prefix(length: int, prefix: int) -> list[list[bool]]:
    return loop_square(length, lambda query, key: key <= query or key < prefix)


def loop_full(length: int) -> list[list[bool]]:
    return loop_square(length, lambda query, key: True)


def loop_padding(attention_mask: list[list[int]]) -> list[list[list[bool]]]:
    """(B, T, T): every query row sees exactly the real keys of its sequence."""
    return [loop_square(len(row), lambda query, key, row=row: row[key] == 1) for row in attention_mask]


def loop_block_diagonal(segment_ids: list[list[int]]) -> list[list[list[bool]]]:
    """(B, T, T): a query sees a key only if both carry the same segment id."""
    return [loop_square(len(row), lambda query, key, row=row: row[query] == row[key]) for row in segment_ids]


def as_batch(mask: torch.Tensor, batch: int, length: int) -> list[list[list[bool]]]:
    """Broadcast a builder's mask to (B, T, T) nested lists (head axis must be 1)."""
    assert mask.dtype == torch.bool
    assert mask.ndim == 4 and mask.shape[1] == 1
    return mask.expand(batch, 1, length, length)[:, 0].tolist()


def assert_broadcasts(mask: torch.Tensor, batch: int, heads: int, length: int) -> None:
    target = (batch, heads, length, length)
    assert torch.broadcast_shapes(mask.shape, target) == target
    assert mask.expand(*target).shape == target


# --- strategies ------------------------------------------------------------------------------


@st.composite
def attention_masks(draw: st.DrawFn) -> list[list[int]]:
    """A random (B, T) 0/1 tokenizer mask, any pattern (all-padding rows included)."""
    batch = draw(st.integers(min_value=1, max_value=4))
    length = draw(lengths)
    row = st.lists(st.integers(min_value=0, max_value=1), min_size=length, max_size=length)
    return draw(st.lists(row, min_size=batch, max_size=batch))


@st.composite
def segment_id_batches(draw: st.DrawFn) -> list[list[int]]:
    """A random (B, T) tensor of segment ids, not necessarily contiguous or sorted."""
    batch = draw(st.integers(min_value=1, max_value=4))
    length = draw(lengths)
    row = st.lists(st.integers(min_value=-3, max_value=5), min_size=length, max_size=length)
    return draw(st.lists(row, min_size=batch, max_size=batch))


# --- builders against loops ------------------------------------------------------------------


@SETTINGS
@given(length=lengths)
def test_full_mask_matches_loop(length: int) -> None:
    mask = masks.full_mask(length)
    assert mask.shape == (1, 1, length, length)
    assert mask.dtype == torch.bool
    assert mask[0, 0].tolist() == loop_full(length)
    assert_broadcasts(mask, batch=3, heads=2, length=length)


@SETTINGS
@given(length=lengths)
def test_causal_mask_matches_loop(length: int) -> None:
    mask = masks.causal_mask(length)
    assert mask.shape == (1, 1, length, length)
    assert mask.dtype == torch.bool
    assert mask[0, 0].tolist() == loop_causal(length)
    assert_broadcasts(mask, batch=3, heads=2, length=length)


@SETTINGS
@given(length=lengths, window=windows)
def test_causal_sliding_window_matches_loop(length: int, window: int) -> None:
    mask = masks.sliding_window_mask(length, window)  # causal is the default
    assert mask.shape == (1, 1, length, length)
    assert mask.dtype == torch.bool
    assert mask[0, 0].tolist() == loop_sliding(length, window, causal=True)
    assert torch.equal(mask, masks.sliding_window_mask(length, window, causal=True))
    assert_broadcasts(mask, batch=2, heads=3, length=length)


@SETTINGS
@given(length=lengths, window=windows)
def test_two_sided_sliding_window_matches_loop(length: int, window: int) -> None:
    mask = masks.sliding_window_mask(length, window, causal=False)
    assert mask.shape == (1, 1, length, length)
    assert mask.dtype == torch.bool
    assert mask[0, 0].tolist() == loop_sliding(length, window, causal=False)
    assert torch.equal(mask, mask.transpose(-2, -1))  # two-sided windows are symmetric
    assert_broadcasts(mask, batch=2, heads=3, length=length)


@SETTINGS
@given(length=lengths)
def test_wide_windows_reduce_to_causal_and_full(length: int) -> None:
    assert torch.equal(masks.sliding_window_mask(length, length), masks.causal_mask(length))
    assert torch.equal(masks.sliding_window_mask(length, length, causal=False), masks.full_mask(length))


@SETTINGS
@given(length=lengths, prefix=prefixes)
def test_prefix_lm_mask_matches_loop(length: int, prefix: int) -> None:
    mask = masks.prefix_lm_mask(length, prefix)
    assert mask.shape == (1, 1, length, length)
    assert mask.dtype == torch.bool
    assert mask[0, 0].tolist() == loop_prefix(length, prefix)
    assert_broadcasts(mask, batch=2, heads=3, length=length)


@SETTINGS
@given(length=lengths)
def test_prefix_edge_cases(length: int) -> None:
    assert torch.equal(masks.prefix_lm_mask(length, 0), masks.causal_mask(length))
    assert torch.equal(masks.prefix_lm_mask(length, 1), masks.causal_mask(length))
    assert torch.equal(masks.prefix_lm_mask(length, length), masks.full_mask(length))


@SETTINGS
@given(attention_mask=attention_masks(), as_bool=st.booleans())
def test_padding_mask_matches_loop(attention_mask: list[list[int]], as_bool: bool) -> None:
    batch, length = len(attention_mask), len(attention_mask[0])
    tensor = torch.tensor(attention_mask)
    mask = masks.padding_mask(tensor.bool() if as_bool else tensor)
    assert mask.shape == (batch, 1, 1, length)
    assert mask.dtype == torch.bool
    assert as_batch(mask, batch, length) == loop_padding(attention_mask)
    assert_broadcasts(mask, batch=batch, heads=4, length=length)


@SETTINGS
@given(segment_ids=segment_id_batches())
def test_block_diagonal_mask_matches_loop(segment_ids: list[list[int]]) -> None:
    batch, length = len(segment_ids), len(segment_ids[0])
    mask = masks.block_diagonal_mask(torch.tensor(segment_ids))
    assert mask.shape == (batch, 1, length, length)
    assert mask.dtype == torch.bool
    assert as_batch(mask, batch, length) == loop_block_diagonal(segment_ids)
    assert_broadcasts(mask, batch=batch, heads=4, length=length)


# --- combine ---------------------------------------------------------------------------------


@st.composite
def mask_sets(draw: st.DrawFn) -> tuple[list[torch.Tensor | None], list[list[list[bool]]], int, int]:
    """Several masks for one (B, T), with Nones mixed in, and the loop version of each."""
    batch = draw(st.integers(min_value=1, max_value=3))
    length = draw(st.integers(min_value=1, max_value=20))
    binary_row = st.lists(st.integers(0, 1), min_size=length, max_size=length)
    segment_row = st.lists(st.integers(0, 3), min_size=length, max_size=length)
    chosen: list[torch.Tensor | None] = []
    references: list[list[list[list[bool]]]] = []
    kinds = draw(
        st.lists(
            st.sampled_from(["none", "full", "causal", "window", "two_sided", "prefix", "padding", "block"]),
            min_size=1,
            max_size=6,
        )
    )
    for kind in kinds:
        if kind == "none":
            chosen.append(None)
            continue
        if kind == "full":
            mask, square = masks.full_mask(length), loop_full(length)
        elif kind == "causal":
            mask, square = masks.causal_mask(length), loop_causal(length)
        elif kind in ("window", "two_sided"):
            window = draw(windows)
            causal = kind == "window"
            mask = masks.sliding_window_mask(length, window, causal=causal)
            square = loop_sliding(length, window, causal)
        elif kind == "prefix":
            prefix = draw(prefixes)
            mask, square = masks.prefix_lm_mask(length, prefix), loop_prefix(length, prefix)
        elif kind == "padding":
            attention_mask = draw(st.lists(binary_row, min_size=batch, max_size=batch))
            chosen.append(masks.padding_mask(torch.tensor(attention_mask)))
            references.append(loop_padding(attention_mask))
            continue
        else:
            segment_ids = draw(st.lists(segment_row, min_size=batch, max_size=batch))
            chosen.append(masks.block_diagonal_mask(torch.tensor(segment_ids)))
            references.append(loop_block_diagonal(segment_ids))
            continue
        chosen.append(mask)
        references.append([square] * batch)
    return chosen, references, batch, length


@SETTINGS
@given(case=mask_sets())
def test_combine_is_elementwise_and_of_loops(case) -> None:
    chosen, references, batch, length = case
    originals = [None if mask is None else mask.clone() for mask in chosen]
    combined = masks.combine(*chosen)

    if not references:
        assert combined is None
        return
    assert combined is not None
    assert combined.dtype == torch.bool
    present = [mask for mask in chosen if mask is not None]
    assert combined.shape == torch.broadcast_shapes(*(mask.shape for mask in present))
    expected = [
        [[all(reference[b][q][k] for reference in references) for k in range(length)] for q in range(length)]
        for b in range(batch)
    ]
    assert as_batch(combined, batch, length) == expected
    # combine never writes into its inputs.
    for mask, original in zip(chosen, originals, strict=True):
        assert (mask is None) == (original is None)
        if mask is not None:
            assert torch.equal(mask, original)


def test_combine_of_nothing_or_only_none_is_none() -> None:
    assert masks.combine() is None
    assert masks.combine(None) is None
    assert masks.combine(None, None, None) is None


def test_combine_skips_none_and_returns_bool() -> None:
    causal = masks.causal_mask(4)
    assert torch.equal(masks.combine(None, causal, None), causal)
    padding = masks.padding_mask(torch.tensor([[1, 1, 0, 1]]))
    assert torch.equal(masks.combine(causal, None, padding), causal & padding)
    integer_mask = torch.tensor([[[[1, 0], [0, 1]]]])
    combined = masks.combine(integer_mask)
    assert combined.dtype == torch.bool
    assert combined.tolist() == [[[[True, False], [False, True]]]]


# --- to_additive -----------------------------------------------------------------------------


@SETTINGS
@given(
    shape=st.lists(st.integers(min_value=1, max_value=5), min_size=1, max_size=4),
    seed=st.integers(min_value=0, max_value=2**31 - 1),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_to_additive_is_zero_or_exact_minus_inf(shape: list[int], seed: int, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=generator) < 0.5
    additive = masks.to_additive(mask, dtype)
    assert additive.dtype == dtype
    assert additive.shape == mask.shape
    flat_mask, flat_additive = mask.flatten().tolist(), additive.flatten().tolist()
    for allowed, value in zip(flat_mask, flat_additive, strict=True):
        if allowed:
            assert value == 0.0
        else:
            assert value == float("-inf")  # a true -inf, not finfo.min
    # Adding it to finite scores leaves allowed cells untouched and masked cells at -inf.
    scores = torch.randn(shape, generator=generator, dtype=dtype)
    shifted = scores + additive
    assert torch.equal(shifted[mask], scores[mask])
    assert torch.isneginf(shifted[~mask]).all()


def test_to_additive_defaults_to_float32() -> None:
    additive = masks.to_additive(masks.causal_mask(3))
    assert additive.dtype == torch.float32
    assert additive[0, 0].tolist() == [
        [0.0, float("-inf"), float("-inf")],
        [0.0, 0.0, float("-inf")],
        [0.0, 0.0, 0.0],
    ]


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [0, -1, -7])
def test_window_below_one_is_rejected(window: int) -> None:
    for causal in (True, False):
        with pytest.raises(ValueError, match=rf"at least 1 token wide, got window={window}"):
            masks.sliding_window_mask(5, window, causal=causal)


def test_negative_prefix_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"cannot be negative, got prefix=-1"):
        masks.prefix_lm_mask(5, -1)


@pytest.mark.parametrize("shape", [(5,), (1, 1, 5), ()])
def test_padding_mask_needs_batch_and_tokens(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\)"):
        masks.padding_mask(torch.ones(shape, dtype=torch.long))


@pytest.mark.parametrize("shape", [(5,), (1, 1, 5)])
def test_block_diagonal_mask_needs_batch_and_tokens(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"shape \(batch, tokens\)"):
        masks.block_diagonal_mask(torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize("length", [0, -3])
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(masks.causal_mask, id="causal"),
        pytest.param(lambda length: masks.sliding_window_mask(length, 2), id="window"),
        pytest.param(lambda length: masks.sliding_window_mask(length, 2, causal=False), id="two_sided"),
        pytest.param(lambda length: masks.prefix_lm_mask(length, 1), id="prefix"),
    ],
)
def test_empty_length_is_rejected(build: Callable[[int], torch.Tensor], length: int) -> None:
    with pytest.raises(ValueError, match=rf"at least one position, got length={length}"):
        build(length)


@pytest.mark.parametrize("length", [0, -3])
def test_full_mask_rejects_empty_length(length: int) -> None:
    with pytest.raises(ValueError, match=r"at least one position"):
        masks.full_mask(length)


# --- drawings --------------------------------------------------------------------------------

_DRAWING_ROW = re.compile(r"^\s*\d+(?: [■⬚])+\s*$")


def docstring_drawings(function: Callable[..., object]) -> list[str]:
    """Every block of consecutive ■/⬚ rows in a docstring, dedented to match render_mask."""
    drawings: list[list[str]] = []
    previous_was_row = False
    for line in (function.__doc__ or "").splitlines():
        is_row = bool(_DRAWING_ROW.match(line))
        if is_row and not previous_was_row:
            drawings.append([])
        if is_row:
            drawings[-1].append(line.strip())
        previous_was_row = is_row
    return ["\n".join(rows) for rows in drawings]


# For each builder: (text the docstring must contain to name the arguments, the call it names).
# Padding masks are (B, 1, 1, T); the docstring draws them broadcast over the query rows.
DOCSTRING_EXAMPLES: dict[str, list[tuple[list[str], Callable[[], torch.Tensor]]]] = {
    "causal_mask": [(["length=5"], lambda: masks.causal_mask(5))],
    "padding_mask": [
        (
            ["attention_mask=[[1, 1, 1, 0, 0]]"],
            lambda: masks.padding_mask(torch.tensor([[1, 1, 1, 0, 0]])).expand(1, 1, 5, 5),
        )
    ],
    "sliding_window_mask": [
        (["window=3", "length=5"], lambda: masks.sliding_window_mask(5, 3)),
        (["causal=False", "window=3"], lambda: masks.sliding_window_mask(5, 3, causal=False)),
    ],
    "prefix_lm_mask": [(["length=5", "prefix=2"], lambda: masks.prefix_lm_mask(5, 2))],
    "block_diagonal_mask": [
        (
            ["segment_ids=[[0, 0, 1, 1, 1]]"],
            lambda: masks.block_diagonal_mask(torch.tensor([[0, 0, 1, 1, 1]])),
        )
    ],
    "bidirectional_prefix_mask": [
        (
            ["positions=[[0, 1, 2, 3, 4]]", "prefix=2"],
            lambda: masks.bidirectional_prefix_mask(torch.tensor([[0, 1, 2, 3, 4]]), 2),
        )
    ],
    "chunked_mask": [
        (
            ["positions=[[0, 1, 2, 3, 4]]", "chunk=2"],
            lambda: masks.chunked_mask(torch.tensor([[0, 1, 2, 3, 4]]), 2),
        )
    ],
    # Sinks are (B, 1, 1, T), like the padding mask; the docstring draws them over the query rows.
    "sink_mask": [
        (
            ["positions=[[0, 1, 2, 3, 4]]", "sinks=1"],
            lambda: masks.sink_mask(torch.tensor([[0, 1, 2, 3, 4]]), 1).expand(1, 1, 5, 5),
        )
    ],
}


def test_causal_docstring_drawing_is_render_mask_output() -> None:
    (drawing,) = docstring_drawings(masks.causal_mask)
    assert drawing == masks.render_mask(masks.causal_mask(5))
    assert drawing.splitlines()[0] == "0 ■ ⬚ ⬚ ⬚ ⬚"
    assert drawing.splitlines()[-1] == "4 ■ ■ ■ ■ ■"


@pytest.mark.parametrize("name", sorted(masks.__all__))
def test_every_docstring_drawing_matches_render_mask(name: str) -> None:
    function = getattr(masks, name)
    drawings = docstring_drawings(function)
    examples = DOCSTRING_EXAMPLES.get(name, [])
    assert len(drawings) == len(examples), f"{name}: {len(drawings)} drawings, {len(examples)} known calls"
    for drawing, (argument_texts, build) in zip(drawings, examples, strict=True):
        for text in argument_texts:
            assert text in function.__doc__, f"{name}'s docstring should name {text!r}"
        assert drawing == masks.render_mask(build()), f"{name}: drawing differs from render_mask"


def test_every_mask_builder_with_a_drawing_is_covered() -> None:
    builders_with_drawings = {name for name in masks.__all__ if docstring_drawings(getattr(masks, name))}
    assert builders_with_drawings == set(DOCSTRING_EXAMPLES)


@SETTINGS
@given(length=lengths, seed=st.integers(min_value=0, max_value=2**31 - 1), leading=st.integers(0, 2))
def test_render_mask_layout(length: int, seed: int, leading: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    square = torch.rand(length, length, generator=generator) < 0.5
    mask = square.reshape((1,) * leading + (length, length))
    lines = masks.render_mask(mask).split("\n")
    assert len(lines) == length
    assert len({len(line) for line in lines}) == 1  # query indices are right-aligned
    for query, line in enumerate(lines):
        index, *cells = line.split()
        assert index == str(query)
        assert cells == ["■" if allowed else "⬚" for allowed in square[query].tolist()]
