"""The masks of issue 11 (prefix-LM, attention sinks, chunks, packed documents) against references.

Three independent references:

* slow plain-Python loops written here from the definitions in the docstrings of
  :mod:`attention_viz.policy` and :mod:`attention_viz.masks` (never from the builders);
* transformers' own eager attention, run on the same ids, positions and 4-D mask as a capture;
* for packing: each packed document against the same text run alone.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_capture import eager_attentions, real_rows

from attention_viz import masks
from attention_viz.capture import capture, encode, position_ids_for, run_forward
from attention_viz.errors import UserFacingError
from attention_viz.policy import MaskPolicy, document_positions

SETTINGS = settings(max_examples=150, deadline=None)

# --- slow references -------------------------------------------------------------------------


def loop_document_positions(
    attention_mask: list[list[int]], documents: list[list[int]] | None
) -> list[list[int]]:
    """(B, T): how many real tokens of the same document (the same row if None) come before; pads 0."""
    positions = []
    for b, row in enumerate(attention_mask):
        owner = documents[b] if documents is not None else [0] * len(row)
        positions.append(
            [
                sum(1 for j in range(i) if row[j] and owner[j] == owner[i]) if row[i] else 0
                for i in range(len(row))
            ]
        )
    return positions


def loop_policy(policy: MaskPolicy, attention_mask: list[list[int]], documents: list[list[int]] | None):
    """(B, T, T) the policy's mask, read off the module docstring of attention_viz.policy::

    allowed = (causal OR bidirectional prefix) if causal AND (window OR sinks) if window
          AND same chunk if chunk AND same document if pack and document_mask
          AND real query AND real key if padding_mask

    The window counts row indices; the chunks count from the row's first real token, so left
    pads do not shift them (as transformers' chunked mask does: row index minus left pads), and
    restart at each packed text whose positions restart (real tokens only);
    the prefix and the sinks count the real tokens of each document. A pad belongs to no
    document, so it is never part of a prefix nor a sink.
    """
    return [
        loop_policy_row(
            policy, real, documents[b] if documents is not None else [0 if r else -1 for r in real]
        )
        for b, real in enumerate(attention_mask)
    ]


def loop_policy_row(policy: MaskPolicy, real: list[int], owner: list[int]) -> list[list[bool]]:
    """(T, T) :func:`loop_policy` for one row with its document ids."""
    length = len(real)
    local = loop_document_positions([real], [owner])[0]
    left_pads = next((i for i, r in enumerate(real) if r), length)
    counted = [i - left_pads for i in range(length)]
    if policy.pack and policy.reset_positions:
        # Packed texts with restarted positions restart their chunks too (padding keeps the row count).
        counted = [local[i] if real[i] else counted[i] for i in range(length)]

    def in_prefix(i: int) -> bool:
        return bool(real[i]) and local[i] < policy.prefix

    def is_sink(i: int) -> bool:
        return bool(real[i]) and local[i] < policy.sinks

    def allowed(q: int, k: int) -> bool:
        ok = True
        if policy.causal:
            bidirectional = (
                policy.prefix is not None and in_prefix(q) and in_prefix(k) and owner[q] == owner[k]
            )
            ok = ok and (k <= q or bidirectional)
        if policy.window is not None:
            ok = ok and (abs(q - k) < policy.window or (policy.sinks is not None and is_sink(k)))
        if policy.chunk is not None:
            ok = ok and counted[q] // policy.chunk == counted[k] // policy.chunk
        if policy.pack and policy.document_mask:
            ok = ok and owner[q] == owner[k]
        if policy.padding_mask:
            ok = ok and bool(real[q]) and bool(real[k])
        return ok

    return [[allowed(q, k) for k in range(length)] for q in range(length)]


# --- strategies ------------------------------------------------------------------------------


@st.composite
def padded_rows(draw: st.DrawFn, max_length: int = 14) -> tuple[list[list[int]], list[list[int]]]:
    """(B, T) attention masks and document ids of packed rows: pads on both sides (-1), and
    between them documents 0, 1, ... one after another (a row may hold no real token)."""
    batch = draw(st.integers(min_value=1, max_value=3))
    length = draw(st.integers(min_value=1, max_value=max_length))
    attention_mask, documents = [], []
    for _ in range(batch):
        real = draw(st.integers(min_value=0, max_value=length))
        left = draw(st.integers(min_value=0, max_value=length - real))
        cuts = (
            sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, real - 1)), max_size=3)))
            if real > 1
            else []
        )
        owner = [sum(1 for cut in cuts if cut <= i) for i in range(real)]
        right = length - real - left
        attention_mask.append([0] * left + [1] * real + [0] * right)
        documents.append([-1] * left + owner + [-1] * right)
    return attention_mask, documents


@st.composite
def policies(draw: st.DrawFn) -> MaskPolicy:
    """A resolved MaskPolicy with any valid mix of the new parts."""
    causal = draw(st.booleans())
    window = draw(st.none() | st.integers(min_value=1, max_value=8))
    pack = draw(st.booleans())
    return MaskPolicy(
        causal=causal,
        padding_mask=draw(st.booleans()),
        window=window,
        prefix=draw(st.none() | st.integers(min_value=1, max_value=6)) if causal else None,
        sinks=draw(st.none() | st.integers(min_value=1, max_value=4)) if window else None,
        chunk=draw(st.none() | st.integers(min_value=1, max_value=6)),
        pack=pack,
        document_mask=draw(st.booleans()) if pack else True,
        reset_positions=draw(st.booleans()) if pack else True,
    )


def square(mask: torch.Tensor, batch: int, length: int) -> list[list[list[bool]]]:
    """A (B, 1, T, T)-broadcastable boolean mask as (B, T, T) nested lists."""
    assert mask.dtype == torch.bool and mask.ndim == 4 and mask.shape[1] == 1
    return mask.expand(batch, 1, length, length)[:, 0].tolist()


# --- the builders against loops --------------------------------------------------------------

grids = st.integers(min_value=1, max_value=3).flatmap(
    lambda batch: st.integers(min_value=1, max_value=12).flatmap(
        lambda length: st.tuples(
            st.lists(
                st.lists(st.integers(0, 9), min_size=length, max_size=length), min_size=batch, max_size=batch
            ),
            st.none()
            | st.lists(
                st.lists(st.integers(-1, 3), min_size=length, max_size=length), min_size=batch, max_size=batch
            ),
        )
    )
)


@SETTINGS
@given(grid=grids, prefix=st.integers(min_value=1, max_value=10))
def test_bidirectional_prefix_mask_matches_loop(grid, prefix: int) -> None:
    positions, documents = grid
    batch, length = len(positions), len(positions[0])
    mask = masks.bidirectional_prefix_mask(
        torch.tensor(positions), prefix, None if documents is None else torch.tensor(documents)
    )
    assert mask.shape == (batch, 1, length, length)
    expected = [
        [
            [
                positions[b][q] < prefix
                and positions[b][k] < prefix
                and (documents is None or documents[b][q] == documents[b][k])
                for k in range(length)
            ]
            for q in range(length)
        ]
        for b in range(batch)
    ]
    assert square(mask, batch, length) == expected


@SETTINGS
@given(grid=grids, sinks=st.integers(min_value=1, max_value=10))
def test_sink_mask_matches_loop(grid, sinks: int) -> None:
    positions = grid[0]
    batch, length = len(positions), len(positions[0])
    mask = masks.sink_mask(torch.tensor(positions), sinks)
    assert mask.shape == (batch, 1, 1, length)
    expected = [
        [[positions[b][k] < sinks for k in range(length)] for _ in range(length)] for b in range(batch)
    ]
    assert square(mask, batch, length) == expected


@SETTINGS
@given(grid=grids, chunk=st.integers(min_value=1, max_value=10))
def test_chunked_mask_matches_loop(grid, chunk: int) -> None:
    positions = grid[0]
    batch, length = len(positions), len(positions[0])
    mask = masks.chunked_mask(torch.tensor(positions), chunk)
    assert mask.shape == (batch, 1, length, length)
    expected = [
        [[positions[b][q] // chunk == positions[b][k] // chunk for k in range(length)] for q in range(length)]
        for b in range(batch)
    ]
    assert square(mask, batch, length) == expected


@SETTINGS
@given(rows=padded_rows(), packed=st.booleans())
def test_document_positions_match_loop(rows, packed: bool) -> None:
    attention_mask, documents = rows
    got = document_positions(torch.tensor(attention_mask), torch.tensor(documents) if packed else None)
    assert got.dtype == torch.long
    assert got.tolist() == loop_document_positions(attention_mask, documents if packed else None)


def test_document_positions_restart_at_each_packed_document() -> None:
    attention_mask = torch.tensor([[0, 1, 1, 1, 1, 1, 0, 0]])
    documents = torch.tensor([[-1, 0, 0, 1, 1, 1, -1, -1]])
    assert document_positions(attention_mask, documents).tolist() == [[0, 0, 1, 0, 1, 2, 0, 0]]
    assert document_positions(attention_mask).tolist() == [[0, 0, 1, 2, 3, 4, 0, 0]]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: masks.bidirectional_prefix_mask(torch.zeros(1, 3, dtype=torch.long), 0), id="prefix"
        ),
        pytest.param(lambda: masks.sink_mask(torch.zeros(1, 3, dtype=torch.long), 0), id="sinks"),
        pytest.param(lambda: masks.chunked_mask(torch.zeros(1, 3, dtype=torch.long), 0), id="chunk"),
    ],
)
def test_new_builders_refuse_widths_below_one(build) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        build()


# --- MaskPolicy.build against the loop -------------------------------------------------------


def real_block(mask: list[list[list[bool]]], attention_mask: list[list[int]]) -> list[list[list[bool]]]:
    """Only the cells where query and key are both real tokens."""
    return [
        [
            [cell for cell, key in zip(row, real, strict=True) if key]
            for row, query in zip(rows, real, strict=True)
            if query
        ]
        for rows, real in zip(mask, attention_mask, strict=True)
    ]


@SETTINGS
@given(policy=policies(), rows=padded_rows())
def test_policy_build_matches_loop(policy: MaskPolicy, rows) -> None:
    """Every mix of prefix, window, sinks, chunks, packing and padding, cell for cell.

    Without the padding mask only real-token cells are compared here: what pads do then is
    pinned down by the tests below, one part at a time.
    """
    attention_mask, documents = rows
    batch, length = len(attention_mask), len(attention_mask[0])
    given_documents = documents if policy.pack else None
    built = policy.build(
        torch.tensor(attention_mask), None if given_documents is None else torch.tensor(given_documents)
    )
    assert built.shape == (batch, 1, length, length) and built.dtype == torch.bool
    expected = loop_policy(policy, attention_mask, given_documents)
    got = square(built, batch, length)
    if policy.padding_mask:
        assert got == expected
    else:
        assert real_block(got, attention_mask) == real_block(expected, attention_mask)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(MaskPolicy(causal=True, prefix=3), id="prefix-lm"),
        pytest.param(MaskPolicy(causal=True, prefix=2, pack=True), id="prefix-lm-packed"),
        pytest.param(
            MaskPolicy(causal=True, prefix=2, pack=True, document_mask=False), id="prefix-lm-packed-no-doc"
        ),
        pytest.param(MaskPolicy(causal=True, window=3, sinks=2), id="streaming-llm"),
        pytest.param(MaskPolicy(causal=True, window=2, sinks=1, pack=True), id="streaming-llm-packed"),
        pytest.param(MaskPolicy(causal=True, chunk=3), id="chunked-causal"),
        pytest.param(MaskPolicy(causal=False, chunk=3), id="chunked-bidirectional"),
        pytest.param(MaskPolicy(causal=True, pack=True), id="packed"),
        pytest.param(MaskPolicy(causal=True, pack=True, document_mask=False), id="packed-no-doc"),
        pytest.param(MaskPolicy(causal=False, pack=True), id="packed-encoder"),
        pytest.param(MaskPolicy(causal=False, pack=True, document_mask=False), id="packed-encoder-no-doc"),
    ],
)
@pytest.mark.parametrize("padding_mask", [True, False])
def test_named_policies_match_loop_on_a_padded_packed_batch(policy: MaskPolicy, padding_mask: bool) -> None:
    """The combinations an engineer ships, on rows padded on the left, the right and both sides."""
    policy = policy.with_changes(padding_mask=padding_mask)
    attention_mask = [
        [0, 0, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 1, 1, 0],
    ]
    documents = [
        [-1, -1, 0, 0, 0, 1, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, -1, -1, -1],
        [-1, 0, 0, 0, 1, 1, 1, 2, 2, -1],
    ]
    given_documents = documents if policy.pack else None
    built = policy.build(
        torch.tensor(attention_mask), None if given_documents is None else torch.tensor(given_documents)
    )
    got = square(built, 3, 10)
    expected = loop_policy(policy, attention_mask, given_documents)
    if padding_mask:
        assert got == expected
    else:
        assert real_block(got, attention_mask) == real_block(expected, attention_mask)


@SETTINGS
@given(
    causal=st.booleans(),
    chunk=st.integers(min_value=1, max_value=5),
    real=st.integers(min_value=1, max_value=10),
    pads=st.integers(min_value=1, max_value=5),
)
def test_left_padding_does_not_shift_the_chunks(causal: bool, chunk: int, real: int, pads: int) -> None:
    policy = MaskPolicy(causal=causal, chunk=chunk)
    alone = policy.build(torch.ones(1, real, dtype=torch.long))[0, 0]  # (T, T)
    padded = policy.build(torch.tensor([[0] * pads + [1] * real]))[0, 0]  # (P + T, P + T)
    assert torch.equal(padded[pads:, pads:], alone)
    assert not padded[:pads].any() and not padded[:, :pads].any()


def test_chunked_causal_drawing() -> None:
    """Chunks of 2 counted from the first real token, causal inside each chunk."""
    built = MaskPolicy(causal=True, chunk=2).build(torch.tensor([[0, 1, 1, 1, 1, 1]]))
    assert masks.render_mask(built[0]) == "\n".join(
        [
            "0 ⬚ ⬚ ⬚ ⬚ ⬚ ⬚",
            "1 ⬚ ■ ⬚ ⬚ ⬚ ⬚",
            "2 ⬚ ■ ■ ⬚ ⬚ ⬚",
            "3 ⬚ ⬚ ⬚ ■ ⬚ ⬚",
            "4 ⬚ ⬚ ⬚ ■ ■ ⬚",
            "5 ⬚ ⬚ ⬚ ⬚ ⬚ ■",
        ]
    )


# Without the padding mask the model sees the pads as tokens, but they still belong to no text:
# they must not join a prefix (a real token of a causal model would then see later pads) nor
# the sinks (every pad would stay visible beyond the window), and they keep the chunk that
# their row index gives them, as in transformers' chunked mask (not all chunk 0).


@pytest.mark.parametrize("pads", ["right", "left"])
def test_without_the_padding_mask_pads_never_join_the_prefix(pads: str) -> None:
    attention_mask = [[1, 1, 1, 0, 0]] if pads == "right" else [[0, 0, 1, 1, 1]]
    policy = MaskPolicy(causal=True, prefix=2, padding_mask=False)
    built = policy.build(torch.tensor(attention_mask))
    assert square(built, 1, 5) == loop_policy(policy, attention_mask, None)


def test_without_the_padding_mask_pads_are_not_sinks() -> None:
    attention_mask = [[0, 0, 0, 1, 1, 1, 1, 1]]
    policy = MaskPolicy(causal=True, window=2, sinks=1, padding_mask=False)
    built = policy.build(torch.tensor(attention_mask))
    assert square(built, 1, 8) == loop_policy(policy, attention_mask, None)


@pytest.mark.parametrize("causal", [True, False])
def test_without_the_padding_mask_pads_keep_their_own_chunks(causal: bool) -> None:
    """Chunks as transformers counts them: row index minus the left pads, pads included."""
    attention_mask = [[0, 0, 0, 1, 1, 1, 1, 1, 0, 0]]
    policy = MaskPolicy(causal=causal, chunk=2, padding_mask=False)
    built = policy.build(torch.tensor(attention_mask))
    assert square(built, 1, 10) == loop_policy(policy, attention_mask, None)


def test_position_ids_restart_per_document_only_with_reset(smollm2, minilm) -> None:
    texts = ["The cat sat.", "Dogs bark", "Hi there"]
    for loaded in (smollm2, minilm):
        for reset in (True, False):
            policy = MaskPolicy(pack=True, reset_positions=reset, max_length=40).for_model(loaded.decoder)
            encoded = encode(loaded, texts, policy)
            attention_mask, documents = encoded.attention_mask.tolist(), encoded.documents.tolist()
            got = position_ids_for(encoded, policy, loaded.decoder).tolist()
            if reset:
                assert got == loop_document_positions(attention_mask, documents)
            elif loaded.decoder:
                assert got == [
                    [max(0, p - 1) for p in (sum(row[: i + 1]) for i in range(len(row)))]
                    for row in attention_mask
                ]
            else:
                assert got == [list(range(len(attention_mask[0])))]


# --- captures against transformers' eager attention under the same 4-D mask ------------------

UNPACKED = ["The cat sat on the mat because it was tired.", "Hello there, friend"]
PACKED = ["The cat sat on the mat.", "Dogs bark loudly at night", "Hello there, friend"]

CAPTURE_POLICIES = {
    "prefix-3": (UNPACKED, MaskPolicy(causal=True, prefix=3)),
    "sinks-2-window-4": (UNPACKED, MaskPolicy(window=4, sinks=2)),
    "chunk-4": (UNPACKED, MaskPolicy(chunk=4)),
    "chunk-4-left": (UNPACKED, MaskPolicy(chunk=4, padding_side="left")),
    "packed": (PACKED, MaskPolicy(pack=True)),
    "packed-no-document-mask": (PACKED, MaskPolicy(pack=True, document_mask=False)),
    "packed-no-reset": (PACKED, MaskPolicy(pack=True, reset_positions=False)),
}


@pytest.mark.parametrize("name", list(CAPTURE_POLICIES))
@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_captures_under_new_policies_match_eager_under_the_same_mask(
    model_name: str, name: str, request
) -> None:
    loaded = request.getfixturevalue(model_name)
    texts, policy = CAPTURE_POLICIES[name]
    last = loaded.num_layers - 1
    result = capture(loaded, texts, layers=[0, last], policy=policy, effect=False)
    batch, length = result.input_ids.shape

    # The mask really applied is the policy's, read off the docstring by the loop.
    documents = None if result.documents is None else result.documents.tolist()
    expected = loop_policy(result.policy, result.attention_mask.tolist(), documents)
    assert square(result.mask, batch, length) == expected
    if policy.pack:
        assert batch == 1 and sorted(set(documents[0]) - {-1}) == [0, 1, 2]

    additive = torch.where(result.mask, 0.0, torch.finfo(torch.float32).min)  # eager's convention
    eager = eager_attentions(
        loaded, input_ids=result.input_ids, attention_mask=additive, position_ids=result.position_ids
    )
    # The layers between the two captured ones run transformers' SDPA under the same mask, whose
    # rounding differs from eager's; 28 layers can carry that to a few 1e-5 in the last layer's
    # weights on some CPUs (2.6e-5 seen on an AMD EPYC for prefix-3; with every layer captured the
    # difference is exactly 0). A mask wrong in those layers moves the weights by far more.
    for layer, tolerance in ((0, 1e-5), (last, 1e-4)):
        rows = real_rows(result, layer)
        assert rows.any()
        difference = (result.layers[layer].weights - eager[layer]).abs()[rows]
        assert difference.max() <= tolerance, f"{name}, layer {layer}: max |Δ| = {difference.max():.2e}"


# --- packing parity: each packed document against the same text alone ------------------------


def outputs_per_document(loaded, texts: list[str], policy: MaskPolicy) -> tuple[list[torch.Tensor], int]:
    """The packed row's output (logits or last hidden state) split by document, and the row length."""
    policy = policy.for_model(loaded.decoder)
    encoded = encode(loaded, texts, policy)
    output = run_forward(loaded, encoded, policy, [])[3]  # (1, T, V or D)
    documents = encoded.documents[0]  # (T,)
    return [output[0, documents == index] for index in range(len(texts))], encoded.input_ids.shape[1]


def output_alone(loaded, text: str, length: int) -> torch.Tensor:
    """The text alone, right-padded to ``length`` with the padding mask on: its real positions."""
    policy = MaskPolicy(max_length=length).for_model(loaded.decoder)
    encoded = encode(loaded, [text], policy)
    output = run_forward(loaded, encoded, policy, [])[3]  # (1, T, V or D)
    return output[0, encoded.attention_mask[0].bool()]


@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_packed_documents_match_each_text_alone_only_with_the_document_mask(model_name: str, request) -> None:
    loaded = request.getfixturevalue(model_name)
    kept_apart, length = outputs_per_document(loaded, PACKED, MaskPolicy(pack=True))
    mixed, _ = outputs_per_document(loaded, PACKED, MaskPolicy(pack=True, document_mask=False))
    for index, text in enumerate(PACKED):
        alone = output_alone(loaded, text, length)
        assert kept_apart[index].shape == alone.shape
        delta = float((kept_apart[index] - alone).abs().max())
        assert delta <= 1e-4, f"document {index}: packed vs alone max |Δ| = {delta:.2e}"
        drift = float((mixed[index] - alone).abs().max())
        if index > 0:
            assert drift > 1e-2, f"document {index} without the document mask drifts only {drift:.2e}"
        elif loaded.decoder:
            # Causal: the first document cannot see the later ones even without the mask.
            assert drift <= 1e-4, f"document 0 of a decoder drifts {drift:.2e}"


# --- bad combinations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"sinks": 2}, "window"),
        ({"chunk": 0}, "at least 1"),
        ({"prefix": 0}, "at least 1"),
        ({"sinks": 0, "window": 3}, "at least 1"),
        ({"prefix": 2, "causal": False}, "causal"),
    ],
)
def test_bad_combinations_are_refused_by_the_policy(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaskPolicy(**options)


@pytest.mark.parametrize("pack", [False, True])
def test_a_prefix_longer_than_a_text_is_refused_by_capture(smollm2, pack: bool) -> None:
    texts = ["The cat sat on the mat because it was tired.", "Hi there"]
    with pytest.raises(UserFacingError, match=r"prefix \(5 tokens\) is longer than a text \(2 tokens"):
        capture(smollm2, texts, layers=[0], policy=MaskPolicy(prefix=5, pack=pack), effect=False)


def test_a_prefix_on_an_encoder_asks_for_the_causal_mask(minilm) -> None:
    """The encoder resolves causal to False, so a prefix-LM needs the causal mask turned on."""
    with pytest.raises(UserFacingError, match="turn the causal mask on"):
        capture(minilm, "The cat sat on the mat.", layers=[0], policy=MaskPolicy(prefix=2), effect=False)
