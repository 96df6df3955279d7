"""Our policy masks against the masks transformers' own ``masking_utils`` builds, cell for cell."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, Llama4TextConfig, LlamaConfig, MistralConfig, Qwen2Config

from attention_viz import mask_parity as parity_module
from attention_viz.capture import Encoded, encode, position_ids_for
from attention_viz.mask_parity import compare, compare_masks, config_policy, mask_parity, transformers_mask
from attention_viz.policy import MaskPolicy

TEXTS = ["The cat sat on the mat.", "Dogs bark.", "Packed rows keep their documents apart, or they do not."]
TINY = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, vocab_size=100)

# Two rows of 9 tokens: one full, one with 5 real tokens, padded on either side.
ATTENTION_MASKS = {
    "right": torch.tensor([[1] * 9, [1] * 5 + [0] * 4]),
    "left": torch.tensor([[1] * 9, [0] * 4 + [1] * 5]),
}
# One packed row: documents of 4, 3 and 2 tokens, then 2 pads.
DOCUMENTS = torch.tensor([[0, 0, 0, 0, 1, 1, 1, 2, 2, -1, -1]])


@functools.cache
def tiny_configs() -> dict[str, tuple[object, bool]]:
    """Random-size configs built here (no network): name -> (config, decoder)."""
    return {
        "llama": (LlamaConfig(num_key_value_heads=1, **TINY), True),
        "mistral-window-3": (MistralConfig(num_key_value_heads=1, sliding_window=3, **TINY), True),
        "qwen2-window-4": (
            Qwen2Config(
                num_key_value_heads=1, use_sliding_window=True, sliding_window=4, max_window_layers=0, **TINY
            ),
            True,
        ),
        "llama4-chunk-3": (
            Llama4TextConfig(
                hidden_size=16,
                num_hidden_layers=3,  # layers 0-2 are all chunked (every 4th is full)
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=8,
                intermediate_size=32,
                intermediate_size_mlp=32,
                vocab_size=100,
                attention_chunk_size=3,
            ),
            True,
        ),
        "bert": (BertConfig(**TINY), False),
    }


def positions(
    attention_mask: torch.Tensor, policy: MaskPolicy, decoder: bool, documents=None
) -> torch.Tensor:
    """The position ids a capture gives the model, from capture's own rule. Shape: ``(B, T)``."""
    encoded = Encoded(
        input_ids=torch.zeros_like(attention_mask),
        attention_mask=attention_mask,
        truncated=[],
        documents=documents,
    )
    return position_ids_for(encoded, policy.for_model(decoder), decoder)


def assert_same(result) -> None:
    assert not result.differ.any(), f"{result.cells_differ} cells differ; sources: {result.sources}"
    assert result.equal and result.cells_differ == 0


# --- the bundled models --------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_smollm2_default_mask_is_transformers_create_causal_mask(smollm2, side: str) -> None:
    result = mask_parity(smollm2, TEXTS, MaskPolicy(padding_side=side))
    assert_same(result)
    assert result.model_default
    assert result.sources[0] == "masking_utils.create_causal_mask"
    assert result.ours.shape == result.theirs.shape == (3, 1, result.ours.shape[-1], result.ours.shape[-1])
    # The batch is padded: transformers masks pad keys too, not just a causal triangle.
    assert not result.theirs[:, 0].all(-1).all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_minilm_default_mask_is_transformers_create_bidirectional_mask(minilm, side: str) -> None:
    result = mask_parity(minilm, TEXTS, MaskPolicy(padding_side=side))
    assert_same(result)
    assert result.model_default
    assert result.sources[0] == "masking_utils.create_bidirectional_mask"
    # transformers lets a pad query read the real tokens; ours leaves it empty: reported apart.
    assert result.cells_by_convention > 0
    assert result.by_convention.any(-1).any(-1).sum() > 0


def test_pad_query_rows_are_reported_apart_and_only_in_pad_rows(minilm) -> None:
    result = mask_parity(minilm, TEXTS, MaskPolicy())
    real_rows = encode(minilm, TEXTS, MaskPolicy()).attention_mask.bool()  # (B, T)
    assert not result.by_convention[:, 0][real_rows].any()
    assert result.cells_by_convention == int((result.ours != result.theirs).sum())


@pytest.mark.parametrize(
    ("policy", "function"),
    [
        (MaskPolicy(window=3), "masking_utils.sliding_window_overlay"),
        (MaskPolicy(window=3, padding_side="left"), "masking_utils.sliding_window_overlay"),
        (MaskPolicy(chunk=4, padding_side="left"), "masking_utils.chunked_overlay"),
        (MaskPolicy(chunk=4), "masking_utils.chunked_overlay"),
        (MaskPolicy(causal=False), "masking_utils.bidirectional_mask_function"),
        (MaskPolicy(causal=False, window=3), "masking_utils.sliding_window_bidirectional_overlay"),
        (MaskPolicy(pack=True, reset_positions=False), "masking_utils.packed_sequence_mask_function"),
        (MaskPolicy(pack=True, document_mask=False, max_length=48), "masking_utils.causal_mask_function"),
    ],
    ids=lambda value: value.describe() if isinstance(value, MaskPolicy) else None,
)
def test_smollm2_policies_match_transformers_mask_functions(
    smollm2, policy: MaskPolicy, function: str
) -> None:
    result = mask_parity(smollm2, TEXTS, policy)
    assert_same(result)
    assert not result.model_default
    assert function in result.sources
    assert result.sources[-1] == "masking_utils.sdpa_mask"


@pytest.mark.parametrize("max_length", [None, 48], ids=["unpadded", "padded"])
def test_packed_rows_match_transformers_finding_documents_from_restarted_positions(
    smollm2, max_length
) -> None:
    result = mask_parity(smollm2, TEXTS, MaskPolicy(pack=True, max_length=max_length))
    assert_same(result)
    assert result.model_default
    assert "masking_utils.find_packed_sequence_indices" in result.sources
    assert result.ours.shape[0] == 1
    # Three documents: nothing crosses between them, in both masks.
    assert result.theirs.sum() < result.theirs.shape[-1] * (result.theirs.shape[-1] + 1) // 2


def test_minilm_with_the_causal_mask_on_matches_causal_mask_function(minilm) -> None:
    result = mask_parity(minilm, TEXTS, MaskPolicy(causal=True, padding_side="left"))
    assert_same(result)
    assert not result.model_default
    assert "masking_utils.causal_mask_function" in result.sources


def test_minilm_packed_matches_create_bidirectional_mask_with_packed_documents(minilm) -> None:
    result = mask_parity(minilm, TEXTS, MaskPolicy(pack=True, max_length=48))
    assert_same(result)
    assert result.model_default
    assert result.sources[:2] == (
        "masking_utils.create_bidirectional_mask",
        "masking_utils.packed_sequence_mask_function",
    )


def test_prefix_and_sinks_are_written_here_and_said_so(smollm2) -> None:
    policy = MaskPolicy(causal=True, prefix=2, window=3, sinks=1, pack=True, max_length=48)
    result = mask_parity(smollm2, TEXTS, policy)
    assert_same(result)
    assert [part.split(":")[0] for part in result.written_here] == ["prefix-LM", "attention sinks"]
    assert "masking_utils.or_masks" in result.sources
    assert "masking_utils.sliding_window_bidirectional_overlay" in result.sources  # a prefix looks ahead


def test_the_loaded_models_config_is_left_alone(smollm2) -> None:
    before = smollm2.model.config._attn_implementation
    mask_parity(smollm2, TEXTS, MaskPolicy())
    assert smollm2.model.config._attn_implementation == before


# --- tiny random-config models ---------------------------------------------------------------


@pytest.mark.parametrize("name", list(tiny_configs()))
@pytest.mark.parametrize("side", ["left", "right"])
def test_tiny_models_default_masks_match_their_create_function(name: str, side: str) -> None:
    config, decoder = tiny_configs()[name]
    attention_mask = ATTENTION_MASKS[side]
    policy = config_policy(config, MaskPolicy(padding_side=side), decoder)
    result = compare_masks(
        config,
        attention_mask,
        policy,
        decoder=decoder,
        position_ids=positions(attention_mask, policy, decoder),
    )
    assert_same(result)
    assert result.model_default
    expected = {
        "llama": "create_causal_mask",
        "mistral-window-3": "create_sliding_window_causal_mask",
        "qwen2-window-4": "create_sliding_window_causal_mask",
        "llama4-chunk-3": "create_chunked_causal_mask",
        "bert": "create_bidirectional_mask",
    }[name]
    assert result.sources[0] == f"masking_utils.{expected}"


def test_a_sliding_window_config_gives_a_windowed_policy() -> None:
    config, decoder = tiny_configs()["mistral-window-3"]
    assert config_policy(config, MaskPolicy(), decoder) == MaskPolicy(causal=True, window=3)
    config, decoder = tiny_configs()["llama"]
    assert config_policy(config, MaskPolicy(), decoder) == MaskPolicy(causal=True)


# llama4-chunk-3: chunks of a packed row restart at each document, as transformers remaps them.
@pytest.mark.parametrize("name", ["llama", "mistral-window-3", "qwen2-window-4", "llama4-chunk-3", "bert"])
def test_tiny_models_packed_rows_match(name: str) -> None:
    config, decoder = tiny_configs()[name]
    attention_mask = (DOCUMENTS >= 0).long()
    policy = config_policy(config, MaskPolicy(pack=True), decoder)
    result = compare_masks(
        config,
        attention_mask,
        policy,
        decoder=decoder,
        documents=DOCUMENTS,
        position_ids=positions(attention_mask, policy, decoder, DOCUMENTS),
    )
    assert_same(result)
    assert result.model_default


@pytest.mark.parametrize(
    "policy",
    [
        MaskPolicy(causal=True, prefix=2, padding_mask=False),
        MaskPolicy(causal=True, window=2, sinks=2, padding_mask=False, padding_side="left"),
        MaskPolicy(causal=False, chunk=2, padding_mask=False),
        MaskPolicy(causal=False, chunk=2, padding_mask=False, padding_side="left"),
    ],
    ids=lambda policy: f"{policy.describe()}, {policy.padding_side}",
)
def test_with_the_padding_mask_off_pads_are_never_prefix_or_sink_tokens(policy: MaskPolicy) -> None:
    config, decoder = tiny_configs()["llama"]
    result = compare_masks(config, ATTENTION_MASKS[policy.padding_side], policy, decoder=decoder)
    assert_same(result)
    assert result.cells_by_convention == 0  # pad rows are compared like any other here


def test_mixed_layer_kinds_are_refused_with_a_reason() -> None:
    config = Qwen2Config(
        num_key_value_heads=1, use_sliding_window=True, sliding_window=4, max_window_layers=1, **TINY
    )
    with pytest.raises(ValueError, match="mixes layer kinds"):
        transformers_mask(config, ATTENTION_MASKS["right"], MaskPolicy(), decoder=True)


def test_a_packed_decoder_row_without_positions_is_refused() -> None:
    config, decoder = tiny_configs()["llama"]
    with pytest.raises(ValueError, match="position_ids"):
        transformers_mask(
            config, (DOCUMENTS >= 0).long(), MaskPolicy(pack=True), decoder=decoder, documents=DOCUMENTS
        )


def test_a_create_function_that_returns_none_is_drawn_and_said_so(monkeypatch) -> None:
    config, decoder = tiny_configs()["llama"]
    monkeypatch.setitem(parity_module._CREATE, "full_attention", lambda *args, **kwargs: None)
    attention_mask = ATTENTION_MASKS["left"]
    result = compare_masks(config, attention_mask, MaskPolicy(padding_side="left"), decoder=decoder)
    assert_same(result)
    assert any("returned None (no mask needed)" in source for source in result.sources)


# --- differences are found and counted -------------------------------------------------------


def test_a_window_off_by_one_is_reported_cell_by_cell() -> None:
    config, decoder = tiny_configs()["mistral-window-3"]
    attention_mask = ATTENTION_MASKS["right"]
    policy = MaskPolicy(causal=True, window=4)
    ours = policy.build(attention_mask)  # (B, 1, T, T)
    theirs = transformers_mask(config, attention_mask, policy.with_changes(window=3), decoder=decoder)
    assert theirs.model_default and theirs.sources[0] == "masking_utils.create_sliding_window_causal_mask"
    result = compare(ours, theirs, attention_mask, policy)
    # A window of 4 sees one key more than a window of 3: the key exactly 3 back, if both are real.
    real = attention_mask.tolist()
    expected = [
        (row, query, query - 3)
        for row in range(len(real))
        for query in range(3, len(real[row]))
        if real[row][query] and real[row][query - 3]
    ]
    assert not result.equal
    assert result.cells_differ == len(expected) == 8
    assert sorted(map(tuple, result.differ[:, 0].nonzero().tolist())) == expected
    # transformers' pad rows (row 1, queries 5-8) still read real keys in the window: apart.
    assert result.by_convention[1, 0, 5:].sum() == result.cells_by_convention == 3


def test_a_real_query_seeing_a_pad_is_never_excused_as_convention() -> None:
    config, decoder = tiny_configs()["bert"]
    attention_mask = ATTENTION_MASKS["right"]
    policy = MaskPolicy(causal=False)
    leaky = transformers_mask(
        config, attention_mask, policy.with_changes(padding_mask=False), decoder=decoder
    )
    result = compare(policy.build(attention_mask), leaky, attention_mask, policy)
    # Row 1 has 5 real queries and 4 pads: 20 real-query cells read a pad.
    assert result.cells_differ == 5 * 4
    assert result.differ[1, 0, :5, 5:].all()
    assert not result.differ[1, 0, 5:].any()  # the pad rows' differences are the convention's
    assert result.cells_by_convention == 4 * 9  # pad rows: theirs see every key, ours none


def test_with_the_padding_mask_off_pad_rows_are_compared_too() -> None:
    config, decoder = tiny_configs()["llama"]
    attention_mask = ATTENTION_MASKS["right"]
    policy = MaskPolicy(causal=True, padding_mask=False)
    result = compare(
        policy.with_changes(padding_mask=True).build(attention_mask),
        transformers_mask(config, attention_mask, policy, decoder=decoder),
        attention_mask,
        policy,
    )
    assert result.cells_by_convention == 0
    assert result.differ[1, 0, 5:].any()


# --- any policy -----------------------------------------------------


@st.composite
def cases(draw):
    decoder = draw(st.booleans())
    pack = draw(st.booleans())
    side = draw(st.sampled_from(["left", "right"]))
    if pack:
        sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
        pads = draw(st.integers(0, 3))
        ids = [index for index, size in enumerate(sizes) for _ in range(size)]
        ids = [-1] * pads + ids if side == "left" else ids + [-1] * pads
        documents = torch.tensor([ids])
        attention_mask = (documents >= 0).long()
        shortest = min(sizes)
    else:
        length = draw(st.integers(1, 8))
        rows = draw(st.lists(st.integers(1, length), min_size=1, max_size=3))
        real = [
            [1] * n + [0] * (length - n) if side == "right" else [0] * (length - n) + [1] * n for n in rows
        ]
        attention_mask, documents = torch.tensor(real), None
        shortest = min(rows)
    causal = draw(st.sampled_from([None, True, False]))
    padding_mask = draw(st.booleans())
    window = draw(st.none() | st.integers(1, 5))
    policy = MaskPolicy(
        causal=causal,
        padding_mask=padding_mask,
        padding_side=side,
        window=window,
        sinks=draw(st.none() | st.integers(1, 3)) if window else None,
        prefix=draw(st.none() | st.integers(1, shortest)) if causal else None,
        chunk=draw(st.none() | st.integers(1, 4)),
        pack=pack,
        document_mask=draw(st.booleans()) if pack else True,
        reset_positions=draw(st.booleans()) if pack else True,
    )
    return decoder, attention_mask, documents, policy


@settings(max_examples=150, deadline=None)
@given(cases())
def test_every_policy_matches_transformers_on_tiny_configs(case) -> None:
    decoder, attention_mask, documents, policy = case
    config = tiny_configs()["llama" if decoder else "bert"][0]
    result = compare_masks(
        config,
        attention_mask,
        policy,
        decoder=decoder,
        documents=documents,
        position_ids=positions(attention_mask, policy, decoder, documents),
    )
    assert_same(result)
