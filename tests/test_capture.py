"""Faithfulness of captures on both bundled models, against transformers' own eager attention."""

from __future__ import annotations

import dataclasses
import pickle
import sys

import pytest
import torch

from attention_viz.attention import scaled_dot_product_attention
from attention_viz.capture import LayerCapture, capture, capture_and_output
from attention_viz.errors import UserFacingError
from attention_viz.loading import load_model
from attention_viz.policy import MaskPolicy

TEXTS = ["The cat sat on the mat because it was tired.", "Hello there"]


def eager_attentions(loaded, **inputs) -> tuple[torch.Tensor, ...]:
    """Per-layer weights from transformers' own eager implementation with output_attentions."""
    model = loaded.model
    model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            return model(**inputs, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("attention_viz")


def real_rows(result, layer: int) -> torch.Tensor:
    """(B, H, T) rows of real tokens that attend to something."""
    return result.attention_mask.bool()[:, None, :] & ~result.layers[layer].empty_rows


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_default_policy_matches_transformers_eager_in_every_layer(model_name, padding_side, request):
    loaded = request.getfixturevalue(model_name)
    result = capture(loaded, TEXTS, policy=MaskPolicy(padding_side=padding_side), effect=False)
    assert sorted(result.layers) == list(range(loaded.num_layers))
    # The model's own pipeline, nothing of ours: transformers builds the mask from the 2-D
    # attention_mask; an encoder numbers positions itself, a decoder gets the positions that
    # transformers' generate() prepares (they skip left padding).
    inputs = {"input_ids": result.input_ids, "attention_mask": result.attention_mask}
    if loaded.decoder:
        inputs["position_ids"] = loaded.model._prepare_position_ids_for_generation(
            result.input_ids, {"attention_mask": result.attention_mask}
        )
    eager = eager_attentions(loaded, **inputs)
    for layer, expected in enumerate(eager):
        rows = real_rows(result, layer)
        difference = (result.layers[layer].weights - expected).abs()[rows]
        assert difference.max() <= 1e-5, f"layer {layer}: max |Δ| = {difference.max():.2e}"


@pytest.mark.parametrize(
    "options",
    [
        {"causal": False},
        {"padding_mask": False},
        {"padding_side": "left"},
        {"window": 3},
        {"max_length": 6},
        {"max_length": 16, "padding_side": "left", "window": 2},
    ],
)
@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_every_policy_matches_eager_under_the_same_mask(model_name, options, request):
    loaded = request.getfixturevalue(model_name)
    result = capture(loaded, TEXTS, policy=MaskPolicy(**options), effect=False)
    additive = torch.where(result.mask, 0.0, torch.finfo(torch.float32).min)  # eager's convention
    eager = eager_attentions(
        loaded, input_ids=result.input_ids, attention_mask=additive, position_ids=result.position_ids
    )
    for layer, expected in enumerate(eager):
        rows = real_rows(result, layer)
        difference = (result.layers[layer].weights - expected).abs()[rows]
        assert difference.max() <= 1e-5, f"layer {layer}: max |Δ| = {difference.max():.2e}"


@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_reference_on_captured_queries_and_keys_reproduces_the_models_weights(model_name, request):
    """The exposed Q and K are what the layer really used (after RoPE): the reference run on them
    gives transformers' own eager weights, which a pre-RoPE query would not."""
    loaded = request.getfixturevalue(model_name)
    last = loaded.num_layers - 1
    result = capture(loaded, TEXTS, layers=[0, last], policy=MaskPolicy(padding_side="left"), effect=False)
    additive = torch.where(result.mask, 0.0, torch.finfo(torch.float32).min)  # eager's convention
    eager = eager_attentions(
        loaded, input_ids=result.input_ids, attention_mask=additive, position_ids=result.position_ids
    )
    for layer in (0, last):
        captured = result.layers[layer]
        trace = scaled_dot_product_attention(
            captured.query, captured.key, captured.key, mask=result.mask, scale=captured.scale
        )
        rows = real_rows(result, layer)
        difference = (trace.weights - eager[layer]).abs()[rows]
        assert difference.max() <= 1e-5, f"layer {layer}: max |Δ| = {difference.max():.2e}"


def test_grouped_query_heads_record_their_kv_head(smollm2):
    result = capture(smollm2, TEXTS[0], layers=[3], effect=False)
    captured = result.layers[3]
    assert captured.weights.shape[1] == 9
    assert captured.kv_head.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # Query heads sharing a KV head see identical keys.
    torch.testing.assert_close(captured.key[:, 0], captured.key[:, 2])
    assert not torch.equal(captured.key[:, 0], captured.key[:, 3])


@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_mask_gives_pad_keys_exactly_zero_and_flags_pad_rows(model_name, side, request):
    loaded = request.getfixturevalue(model_name)
    masked = capture(loaded, TEXTS, policy=MaskPolicy(padding_side=side), effect=False)
    pads = masked.pad_rows  # (B, T)
    assert pads.any()
    for captured in masked.layers.values():
        assert torch.all(
            captured.weights.transpose(-1, -2)[pads[:, None].expand(-1, captured.weights.shape[1], -1)] == 0
        )
        # Padded query rows are empty by rule: zero and flagged, never uniform.
        pad_rows = pads[:, None, :].expand_as(captured.empty_rows)
        assert torch.all(captured.empty_rows[pad_rows])
        assert torch.all(captured.weights[pad_rows] == 0)

    unmasked = capture(loaded, TEXTS, policy=MaskPolicy(padding_side=side, padding_mask=False), effect=False)
    mass = sum(
        float(c.weights[..., :, :][pads[:, None, None, :].expand_as(c.weights)].sum())
        for c in unmasked.layers.values()
    )
    assert mass > 0, "without the padding mask, pad keys get weight"


def test_causal_off_lets_a_decoder_see_the_future_in_every_layer(smollm2):
    result = capture(smollm2, TEXTS[0], policy=MaskPolicy(causal=False))
    for captured in result.layers.values():
        upper = torch.triu(captured.weights[0], diagonal=1)
        assert upper.sum() > 0
    assert result.effect.flips[0] > 0, "seeing the future changes next-token predictions"
    assert result.effect.kl[0].max() > 0


def test_causal_on_imposes_a_mask_an_encoder_never_had(minilm):
    result = capture(minilm, TEXTS[0], policy=MaskPolicy(causal=True))
    for captured in result.layers.values():
        assert torch.all(torch.triu(captured.weights[0], diagonal=1) == 0)
    assert result.effect.cosine[0] < 0.999


def test_default_policy_has_no_effect(smollm2, minilm):
    decoder = capture(smollm2, TEXTS)
    assert decoder.effect.flips.tolist() == [0, 0] and float(decoder.effect.kl.max()) == 0.0
    assert len(decoder.effect.top_tokens[0][0]) == 5
    encoder = capture(minilm, TEXTS)
    torch.testing.assert_close(encoder.effect.cosine, torch.ones(2))


def test_display_tokens_are_clean(smollm2, minilm):
    assert capture(smollm2, "The cat sat", effect=False).tokens[0] == ["The", "cat", "sat"]
    assert capture(minilm, "The cat sat", effect=False).tokens[0] == ["[CLS]", "the", "cat", "sat", "[SEP]"]


def test_partial_characters_show_as_their_bytes(smollm2):
    """Byte-level BPE splits an emoji into byte pieces: each label is its bytes, not mojibake."""
    tokens = capture(smollm2, "cats 🐱", layers=[0], effect=False).tokens[0]
    assert tokens[0] == "cats"
    fragments = [token for token in tokens[1:] if token.startswith("⟨")]
    assert len(fragments) == len(tokens) - 1 > 1
    assert bytes.fromhex(" ".join(token.strip("⟨⟩") for token in fragments)) == "🐱".encode()


def test_max_length_truncates_and_pads(smollm2):
    result = capture(smollm2, TEXTS, policy=MaskPolicy(max_length=4), layers=[0], effect=False)
    assert result.input_ids.shape == (2, 4)
    assert result.truncated[0] > 0
    long = capture(smollm2, TEXTS, policy=MaskPolicy(max_length=20), layers=[0], effect=False)
    assert long.tokens[1][-1] == "[PAD]" and long.layers[0].weights.shape[-1] == 20


def test_errors_say_what_to_do(smollm2):
    with pytest.raises(UserFacingError, match="layers 0–29"):
        capture(smollm2, "hi", layers=[30])
    with pytest.raises(UserFacingError, match="empty"):
        capture(smollm2, "   ")
    # The policy itself refuses a window below 1 (a ValueError; UserFacingError is one too).
    with pytest.raises(ValueError, match="window"):
        capture(smollm2, "hi", policy=MaskPolicy(window=0))


def test_models_outside_the_allowlist_are_refused():
    for name in ("../../etc", "/etc", "someone/some-model", "nope"):
        with pytest.raises(UserFacingError, match="allowlist"):
            load_model(name)


@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_parity_compares_with_the_models_own_eager_attention(model_name, request, monkeypatch):
    """The explorer's parity line checks the reference against the model's code, not itself."""
    from attention_viz.capture import parity_delta

    loaded = request.getfixturevalue(model_name)
    result = capture(
        loaded, TEXTS, layers=[0, loaded.num_layers - 1], policy=MaskPolicy(padding_side="left"), effect=False
    )
    for layer in result.layers:
        delta = parity_delta(result, layer)
        assert delta is not None and delta <= 1e-6, f"layer {layer}: {delta}"

    # A model whose own eager attention computed something else must show up as a mismatch.
    attention_class = next(m for m in loaded.model.modules() if getattr(m, "layer_idx", None) == 0)
    modelling = sys.modules[type(attention_class).__module__]
    model_eager = modelling.eager_attention_forward

    def off_by_a_little(*args, **kwargs):
        output, weights = model_eager(*args, **kwargs)
        return output, weights * 0.99

    monkeypatch.setattr(modelling, "eager_attention_forward", off_by_a_little)
    skewed = capture(loaded, TEXTS, layers=[0], effect=False)
    assert parity_delta(skewed, 0) > 1e-3


@pytest.mark.parametrize("model_name", ["smollm2", "minilm"])
def test_the_output_a_capture_under_default_masks_returns_is_the_models_own(model_name, request):
    """The app keeps this output as the reference of the texts' other masks, so it must be what the
    model computes with nothing of ours: transformers' forward on the same inputs (its default
    masks built from the 2-D attention_mask)."""
    loaded = request.getfixturevalue(model_name)
    policy = MaskPolicy(padding_side="left")
    result, output = capture_and_output(loaded, TEXTS, policy=policy, effect=True)
    inputs = {"input_ids": result.input_ids, "attention_mask": result.attention_mask}
    if loaded.decoder:
        inputs["position_ids"] = result.position_ids
    with torch.no_grad():
        own = loaded.model(**inputs)
    expected = own.logits if loaded.decoder else own.last_hidden_state
    real = result.attention_mask.bool()
    assert output.shape == expected.shape
    assert (output - expected).abs()[real].max() <= 1e-4
    assert capture_and_output(loaded, TEXTS, policy=policy, effect=False)[1] is None


def _same(before: object, after: object) -> None:
    """``after`` holds exactly what ``before`` does: tensors of the same dtype, shape and values."""
    if isinstance(before, torch.Tensor):
        assert isinstance(after, torch.Tensor)
        assert (after.dtype, after.shape) == (before.dtype, before.shape)
        assert torch.equal(after, before)
    elif dataclasses.is_dataclass(before):
        assert type(after) is type(before)
        for field in dataclasses.fields(before):
            _same(getattr(before, field.name), getattr(after, field.name))
    elif isinstance(before, dict):
        assert before.keys() == after.keys()
        for key in before:
            _same(before[key], after[key])
    else:
        assert after == before


@pytest.mark.parametrize(
    ("model_name", "policy"),
    [
        ("smollm2", MaskPolicy(causal=False, padding_side="left")),
        ("minilm", MaskPolicy(padding_mask=False)),
    ],
)
def test_a_capture_pickles_its_tensors_as_numpy_arrays_and_comes_back_the_same(model_name, policy, request):
    """The result cache pickles every capture it keeps and unpickles it on every read: its tensors
    go as numpy arrays (far cheaper for torch's many small tensors), and come back as tensors equal
    to the ones captured, dtype and shape too (bool masks, integer ids, float weights)."""
    loaded = request.getfixturevalue(model_name)
    result = capture(loaded, TEXTS, layers=[0, 1], policy=policy, effect=True)
    assert result.effect is not None
    pickled = pickle.dumps(result)
    assert b"_rebuild_tensor" not in pickled  # no tensor went through torch.save
    back = pickle.loads(pickled)
    _same(result, back)
    assert all(isinstance(layer, LayerCapture) for layer in back.layers.values())
    # The one layer a layer switch copies out of the cache, alone.
    _same(result.with_layers([1]), pickle.loads(pickle.dumps(result.with_layers([1]))))
