"""The block view against independent references: the policy's own dense mask and slow loops.

* ``policy_mask_mod`` through torch's ``create_mask`` equals ``MaskPolicy.build`` cell for cell;
* block kinds equal a loop over the blocks of ``MaskPolicy.build``'s dense mask;
* the copyable snippet, run here (tests may run our own generated source; the app never does),
  equals ``MaskPolicy.build`` too.
"""

from __future__ import annotations

import ast
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.attention.flex_attention import create_block_mask, create_mask

from attention_viz import masks
from attention_viz.block_figures import block_figure
from attention_viz.blocks import (
    EMPTY,
    FULL,
    PARTIAL,
    block_view,
    mask_mod_snippet,
    policy_mask_mod,
    text_drawing,
)
from attention_viz.policy import NOT_IN_DOCUMENT, MaskPolicy, document_positions, row_positions

LENGTHS = (37, 130, 300)
# (T, block size): cut edge blocks at every size, a row just past one block, whole blocks.
BLOCK_GRIDS = [(37, 16), (130, 32), (130, 128), (300, 16), (300, 128), (256, 32)]


# --- inputs ----------------------------------------------------------------------------------


def padded(length: int, side: str | None, pads: int = 5) -> torch.Tensor:
    """A (1, T) attention mask with ``pads`` padding tokens on ``side`` (None: no padding)."""
    row = torch.ones(1, length, dtype=torch.long)  # (1, T)
    if side == "right":
        row[0, length - pads :] = 0
    elif side == "left":
        row[0, :pads] = 0
    return row


def packed(length: int, pads: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A (1, T) packed row of four documents of uneven lengths and right padding.

    Shape: returns ``(1, T)`` attention mask and ``(1, T)`` documents (padding: -1).
    """
    real = length - pads
    cuts = [0, real // 7, real // 2, real * 5 // 6, real]
    documents = torch.full((1, length), -1, dtype=torch.long)  # (1, T)
    for index, (start, stop) in enumerate(zip(cuts, cuts[1:], strict=False)):
        documents[0, start:stop] = index
    return (documents >= 0).long(), documents


# name -> (policy, input kind): "plain", "right", "left" (5 pads) or "packed".
CASES = {
    "causal": (MaskPolicy(causal=True), "plain"),
    "encoder": (MaskPolicy(causal=False), "plain"),
    "window": (MaskPolicy(causal=True, window=20), "plain"),
    "two-sided window": (MaskPolicy(causal=False, window=9), "right"),
    "sinks + window": (MaskPolicy(causal=True, window=24, sinks=3), "plain"),
    "prefix": (MaskPolicy(causal=True, prefix=40), "plain"),
    "chunk": (MaskPolicy(causal=True, chunk=48), "left"),
    "encoder chunk": (MaskPolicy(causal=False, chunk=32), "right"),
    "right padding": (MaskPolicy(causal=True), "right"),
    "left padding": (MaskPolicy(causal=True, padding_side="left"), "left"),
    "padding mask off": (MaskPolicy(causal=True, padding_mask=False), "right"),
    "encoder padding off": (MaskPolicy(causal=False, padding_mask=False), "left"),
    "left-padded chunks, padding off": (MaskPolicy(causal=False, chunk=16, padding_mask=False), "left"),
    "prefix + sinks, padding off": (
        MaskPolicy(causal=True, prefix=8, window=10, sinks=2, padding_mask=False),
        "left",
    ),
    "packed": (MaskPolicy(causal=True, pack=True), "packed"),
    "packed, no document mask": (MaskPolicy(causal=True, pack=True, document_mask=False), "packed"),
    "packed prefix, no document mask": (
        MaskPolicy(causal=True, pack=True, document_mask=False, prefix=6),
        "packed",
    ),
    "packed prefix + sinks": (MaskPolicy(causal=True, pack=True, prefix=6, window=16, sinks=2), "packed"),
    "packed chunk": (MaskPolicy(causal=True, pack=True, chunk=24, reset_positions=False), "packed"),
    "packed encoder, padding off": (MaskPolicy(causal=False, pack=True, padding_mask=False), "packed"),
    "everything": (
        MaskPolicy(causal=True, window=30, sinks=4, prefix=5, chunk=64, pack=True),
        "packed",
    ),
}


def inputs(kind: str, length: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (1, T) attention mask and (1, T) documents (or None) of one input kind."""
    if kind == "packed":
        return packed(length)
    return padded(length, None if kind == "plain" else kind), None


def dense(policy: MaskPolicy, attention_mask: torch.Tensor, documents: torch.Tensor | None) -> torch.Tensor:
    """The policy's own mask for the one row. Shape: ``(T, T)`` bool."""
    return policy.build(attention_mask, documents)[0, 0]


# --- slow references -------------------------------------------------------------------------


def loop_kinds(allowed: torch.Tensor, block_size: int) -> list[list[int]]:
    """Classify each block of a (T, T) mask by a loop, as create_block_mask does.

    A block cut short by T (the last block row and column when T is not a multiple of the
    block size) is never full: create_block_mask pads the mask with masked cells to whole
    blocks, so such a block is partial if any of its real cells may attend.
    """
    length = allowed.shape[0]
    count = -(-length // block_size)
    kinds = []
    for query_block in range(count):
        row = []
        for key_block in range(count):
            q0, k0 = query_block * block_size, key_block * block_size
            cells = allowed[q0 : q0 + block_size, k0 : k0 + block_size]
            whole = cells.shape == (block_size, block_size)
            if not cells.any():
                row.append(EMPTY)
            elif whole and cells.all():
                row.append(FULL)
            else:
                row.append(PARTIAL)
        kinds.append(row)
    return kinds


# --- mask_mod --------------------------------------------------------------------------------


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("name", CASES)
def test_mask_mod_through_create_mask_equals_the_policys_own_mask(name: str, length: int) -> None:
    policy, kind = CASES[name]
    attention_mask, documents = inputs(kind, length)
    mask_mod = policy_mask_mod(policy, attention_mask, documents)
    got = create_mask(mask_mod, 1, 1, length, length, device="cpu")[0, 0]  # (T, T)
    assert torch.equal(got, dense(policy, attention_mask, documents))


@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    length=st.integers(min_value=1, max_value=40),
    causal=st.booleans(),
    padding_mask=st.booleans(),
    document_mask=st.booleans(),
)
def test_mask_mod_equals_the_policys_own_mask_for_random_packed_rows(
    data: st.DataObject, length: int, causal: bool, padding_mask: bool, document_mask: bool
) -> None:
    widths = st.one_of(st.none(), st.integers(min_value=1, max_value=12))
    window = data.draw(widths)
    policy = MaskPolicy(
        causal=causal,
        padding_mask=padding_mask,
        window=window,
        sinks=data.draw(widths) if window else None,
        prefix=data.draw(widths) if causal else None,
        chunk=data.draw(widths),
        pack=True,
        document_mask=document_mask,
        reset_positions=data.draw(st.booleans()),
    )
    starts = data.draw(st.lists(st.booleans(), min_size=length, max_size=length))
    pads = data.draw(st.integers(min_value=0, max_value=length - 1))
    documents = (torch.tensor(starts).long().cumsum(0) - 1).clamp(min=0)[None]  # (1, T)
    documents[0, length - pads :] = -1
    attention_mask = (documents >= 0).long()  # (1, T)
    got = create_mask(policy_mask_mod(policy, attention_mask, documents), 1, 1, length, length, device="cpu")
    assert torch.equal(got[0, 0], dense(policy, attention_mask, documents))


def test_mask_mod_masks_indices_past_the_row_without_an_index_error() -> None:
    attention_mask, documents = packed(37)
    policy = MaskPolicy(causal=False, padding_mask=False, pack=True, document_mask=False)
    mask_mod = policy_mask_mod(policy, attention_mask, documents)
    # Whole 128-token blocks, as a compiled create_block_mask may evaluate them.
    got = create_mask(mask_mod, 1, 1, 128, 128, device="cpu")[0, 0]  # (128, 128)
    assert got[:37, :37].all()
    assert not got[37:].any() and not got[:, 37:].any()


def test_mask_mod_describes_the_chosen_batch_row() -> None:
    attention_mask = torch.stack([padded(20, "right")[0], padded(20, "left")[0]])  # (2, T)
    policy = MaskPolicy(causal=True, padding_side="left")
    got = create_mask(policy_mask_mod(policy, attention_mask, item=1), 1, 1, 20, 20, device="cpu")
    assert torch.equal(got[0, 0], policy.build(attention_mask)[1, 0])
    with pytest.raises(ValueError, match="rows 0–1"):
        policy_mask_mod(policy, attention_mask, item=2)


def test_mask_mod_needs_a_resolved_policy_and_the_documents_of_a_packed_row() -> None:
    attention_mask, _ = packed(20)
    with pytest.raises(ValueError, match="for_model"):
        policy_mask_mod(MaskPolicy(), attention_mask)
    with pytest.raises(ValueError, match="documents"):
        policy_mask_mod(MaskPolicy(causal=True, pack=True), attention_mask)


# --- block view ------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "block_size"), BLOCK_GRIDS)
@pytest.mark.parametrize("name", CASES)
def test_block_kinds_equal_a_loop_over_the_blocks_of_the_dense_mask(
    name: str, length: int, block_size: int
) -> None:
    policy, kind = CASES[name]
    attention_mask, documents = inputs(kind, length)
    view = block_view(policy, attention_mask, documents, block_size=block_size)
    expected = loop_kinds(dense(policy, attention_mask, documents), block_size)
    assert view.kinds.tolist() == expected
    assert (view.block_size, view.length) == (block_size, length)
    assert view.full_blocks + view.partial_blocks + view.empty_blocks == view.blocks == len(expected) ** 2
    assert view.sparsity == pytest.approx(
        100 * sum(row.count(EMPTY) for row in expected) / len(expected) ** 2
    )


@pytest.mark.parametrize(("length", "block_size"), [(256, 32), (128, 16), (384, 128)])
@pytest.mark.parametrize("name", ["causal", "sinks + window", "packed prefix + sinks", "left padding"])
def test_sparsity_is_torchs_own_when_the_length_is_whole_blocks(
    name: str, length: int, block_size: int
) -> None:
    policy, kind = CASES[name]
    attention_mask, documents = inputs(kind, length)
    view = block_view(policy, attention_mask, documents, block_size=block_size)
    block_mask = create_block_mask(
        policy_mask_mod(policy, attention_mask, documents),
        B=None,
        H=None,
        Q_LEN=length,
        KV_LEN=length,
        device="cpu",
        BLOCK_SIZE=block_size,
    )
    assert view.sparsity == pytest.approx(block_mask.sparsity())


def test_a_block_cut_short_by_the_length_is_partial_even_when_every_real_cell_may_attend() -> None:
    # 37 tokens in 16-token blocks: blocks 0-1 are whole, block 2 holds tokens 32-36 only.
    view = block_view(MaskPolicy(causal=False), padded(37, None), block_size=16)
    assert view.kinds.tolist() == [[FULL, FULL, PARTIAL], [FULL, FULL, PARTIAL], [PARTIAL, PARTIAL, PARTIAL]]
    assert view.token_range(2) == (32, 36)
    assert view.sparsity == 0.0


@pytest.mark.parametrize("block_size", [0, 8, 15, 1025, 4096, -128])
def test_block_sizes_outside_16_to_1024_are_refused(block_size: int) -> None:
    with pytest.raises(ValueError, match="between 16 and 1024"):
        block_view(MaskPolicy(causal=True), padded(37, None), block_size=block_size)


@pytest.mark.parametrize("block_size", [64.0, "128", True, None])
def test_block_sizes_that_are_not_whole_numbers_are_refused(block_size: object) -> None:
    with pytest.raises(TypeError, match="block_size"):
        block_view(MaskPolicy(causal=True), padded(37, None), block_size=block_size)


# --- snippet ---------------------------------------------------------------------------------


def snippet_inputs(snippet: str) -> set[str]:
    """The input names the snippet's comments document (lines ``#   name  (T,) ...``)."""
    return set(re.findall(r"^#   (\w+) +\(T,\)", snippet, flags=re.MULTILINE))


@pytest.mark.parametrize("length", [37, 130])
@pytest.mark.parametrize("name", CASES)
def test_the_snippet_run_with_its_documented_inputs_equals_the_policys_own_mask(
    name: str, length: int
) -> None:
    policy, kind = CASES[name]
    attention_mask, documents = inputs(kind, length)
    snippet = mask_mod_snippet(policy)
    is_real = attention_mask[0].bool()  # (T,)
    available = {
        "is_real": is_real,
        "positions": torch.where(is_real, document_positions(attention_mask, documents)[0], NOT_IN_DOCUMENT),
        "chunk_positions": row_positions(attention_mask)[0],
        "restarted chunk_positions": torch.where(
            is_real, document_positions(attention_mask, documents)[0], row_positions(attention_mask)[0]
        ),
        "document_ids": documents[0] if documents is not None else None,
    }
    # Only the documented inputs: an undocumented one would fail with a NameError.
    if policy.pack and policy.reset_positions:  # packed texts restart their chunks with their positions
        available["chunk_positions"] = available.pop("restarted chunk_positions")
    namespace = {name: available[name] for name in snippet_inputs(snippet)}
    exec(compile(snippet, "<mask_mod snippet>", "exec"), namespace)
    got = create_mask(namespace["mask_mod"], 1, 1, length, length, device="cpu")[0, 0]
    assert torch.equal(got, dense(policy, attention_mask, documents))


@pytest.mark.parametrize(
    ("policy", "inputs_named"),
    [
        (MaskPolicy(causal=True, padding_mask=False), set()),
        (MaskPolicy(causal=True), {"is_real"}),
        (MaskPolicy(causal=True, window=4, sinks=2), {"is_real", "positions"}),
        (MaskPolicy(causal=True, chunk=8), {"is_real", "chunk_positions"}),
        (MaskPolicy(causal=True, pack=True, chunk=8), {"is_real", "chunk_positions", "document_ids"}),
        (MaskPolicy(causal=False, pack=True, document_mask=False, padding_mask=False), set()),
    ],
)
def test_the_snippet_asks_only_for_the_inputs_its_policy_uses(
    policy: MaskPolicy, inputs_named: set[str]
) -> None:
    assert snippet_inputs(mask_mod_snippet(policy)) == inputs_named


def test_the_snippet_holds_no_value_but_the_policys_ints() -> None:
    policy = MaskPolicy(causal=True, window=30, sinks=4, prefix=5, chunk=64, pack=True)
    tree = ast.parse(mask_mod_snippet(policy))
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert all(type(value) is int for value in constants)
    assert constants <= {30, 4, 5, 64, 0}


def test_the_snippet_needs_a_resolved_policy() -> None:
    with pytest.raises(ValueError, match="for_model"):
        mask_mod_snippet(MaskPolicy())


# --- text drawing ----------------------------------------------------------------------------


def test_a_short_text_drawing_is_render_mask_itself() -> None:
    allowed = MaskPolicy(causal=True, window=3).build(padded(9, "right", pads=2))[0, 0]
    assert text_drawing(allowed) == masks.render_mask(allowed)


def test_a_long_text_drawing_is_cut_with_a_note() -> None:
    allowed = MaskPolicy(causal=True).build(padded(100, None))  # (1, 1, T, T)
    drawing = text_drawing(allowed, most=10)
    lines = drawing.splitlines()
    assert lines[:10] == masks.render_mask(allowed[0, 0, :10, :10]).splitlines()
    assert lines[10] == "… cut: queries and keys 0–9 of 100 tokens shown."
    assert len(lines) == 11


def test_a_text_drawing_refuses_an_additive_mask() -> None:
    with pytest.raises(ValueError, match="boolean"):
        text_drawing(masks.to_additive(masks.causal_mask(4))[0, 0])


# --- figure ----------------------------------------------------------------------------------


def hover(figure, query_block: int, key_block: int) -> str:
    """The hover text plotly shows for one cell: the template filled with the cell's data."""
    trace = figure.data[0]
    data = trace.customdata[query_block][key_block]
    text = trace.hovertemplate.replace("<extra></extra>", "")
    text = text.replace("%{y}", str(query_block)).replace("%{x}", str(key_block))
    text = text.replace("%{text}", trace.text[query_block][key_block])
    return re.sub(r"%\{customdata\[(\d)\]\}", lambda match: str(data[int(match.group(1))]), text)


def test_block_figure_draws_the_grid_with_hover_per_block() -> None:
    view = block_view(MaskPolicy(causal=True, window=20), padded(37, None), block_size=16)
    figure = block_figure(view, "sliding window <b>20</b>", width_px=500)
    trace = figure.data[0]
    assert len(figure.data) == 1
    assert [list(row) for row in trace.z] == view.kinds.tolist()
    # Query 32 sees key 13 (distance 19 < 20), not key 12: a partial block.
    assert hover(figure, 2, 0) == "query block 2 (tokens 32–36) · key block 0 (tokens 0–15) · partial"
    assert hover(figure, 0, 0) == "query block 0 (tokens 0–15) · key block 0 (tokens 0–15) · partial"
    assert hover(figure, 0, 2) == "query block 0 (tokens 0–15) · key block 2 (tokens 32–36) · empty"
    assert trace.hovertemplate.endswith("<extra></extra>")
    assert list(trace.colorbar.ticktext) == ["empty", "partial", "full"]
    assert figure.layout.yaxis.autorange == "reversed" and figure.layout.yaxis.scaleanchor == "x"
    assert f"{view.sparsity:.1f}% of blocks skipped" in figure.layout.title.text
    assert "&lt;b&gt;20&lt;/b&gt;" in figure.layout.title.text  # the title shows literally
    assert figure.layout.width == 500


def test_block_figure_shows_full_blocks_as_full() -> None:
    view = block_view(MaskPolicy(causal=True), padded(256, None), block_size=128)
    figure = block_figure(view, "causal")
    assert hover(figure, 1, 0) == "query block 1 (tokens 128–255) · key block 0 (tokens 0–127) · full"
    assert "25.0% of blocks skipped" in figure.layout.title.text
