"""The leak meter against a loop over items, rows and keys, and the padding overlay of a heatmap."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch

from attention_viz.capture import capture
from attention_viz.figures import heatmap, stage_range
from attention_viz.leak import leak_frame, leak_meter, padded_items, padding_runs, shade_padding
from attention_viz.policy import MaskPolicy

TEXTS = ["Cats purr.", "The dog barked at the mailman.", "A storm rolled in over the old harbour last night."]
LAYERS = [0, 7, 29]


def leak_by_loop(result) -> torch.Tensor:
    """The same meter, one query row at a time: the independent reference. Shape: ``(L, H)``."""
    rows = []
    for layer in sorted(result.layers):
        weights = result.layers[layer].weights  # (B, H, T, T)
        per_head = []
        for head in range(weights.shape[1]):
            shares = []
            for item in range(weights.shape[0]):
                real = result.attention_mask[item].tolist()
                if all(real):
                    continue  # an unpadded item cannot leak and is not averaged
                for query, is_real in enumerate(real):
                    if is_real:
                        shares.append(
                            sum(
                                float(weights[item, head, query, key])
                                for key in range(len(real))
                                if not real[key]
                            )
                        )
            per_head.append(sum(shares) / len(shares) if shares else 0.0)
        rows.append(per_head)
    return torch.tensor(rows)


@pytest.mark.parametrize("side", ["left", "right"])
def test_leak_is_exactly_zero_with_the_padding_mask(smollm2, side):
    result = capture(smollm2, TEXTS, LAYERS, policy=MaskPolicy(padding_side=side), effect=False)
    assert padded_items(result) == [0, 1]
    leak = leak_meter(result)
    assert leak.shape == (len(LAYERS), smollm2.num_heads)
    assert torch.all(leak == 0.0)


def test_leak_without_the_padding_mask_matches_a_loop(smollm2):
    result = capture(
        smollm2, TEXTS, LAYERS, policy=MaskPolicy(padding_mask=False, padding_side="left"), effect=False
    )
    leak = leak_meter(result)
    assert leak.min() > 0, "left padding under a causal mask: every head sees the pads"
    torch.testing.assert_close(leak, leak_by_loop(result).to(leak.dtype), atol=1e-5, rtol=1e-5)


def test_right_padding_under_a_causal_mask_cannot_leak(smollm2):
    # The pads come after every real token, which never looks ahead.
    result = capture(
        smollm2, TEXTS, LAYERS, policy=MaskPolicy(padding_mask=False, padding_side="right"), effect=False
    )
    assert torch.all(leak_meter(result) == 0.0)


def test_an_unpadded_batch_reads_zero(minilm):
    result = capture(
        minilm,
        ["one two three", "four five six"],
        [0, 5],
        policy=MaskPolicy(padding_mask=False),
        effect=False,
    )
    assert padded_items(result) == []
    assert torch.all(leak_meter(result) == 0.0)


def test_leak_frame_has_a_row_per_layer_and_a_mean_column():
    leak = torch.tensor([[0.0, 0.5], [0.25, 0.75]])
    frame = leak_frame(leak, [3, 8])
    assert list(frame.index) == [3, 8] and frame.index.name == "layer"
    assert list(frame.columns) == ["head 0", "head 1", "mean"]
    assert frame["mean"].tolist() == [0.25, 0.5]
    with pytest.raises(ValueError, match="layer labels"):
        leak_frame(leak, [0])


@pytest.mark.parametrize(
    ("flags", "runs"),
    [
        ([], []),
        ([False, False], []),
        ([True, True, False, False, True], [(0, 1), (4, 4)]),
        ([False, True, True, True], [(1, 3)]),
    ],
)
def test_padding_runs(flags, runs):
    assert padding_runs(flags) == runs


def test_shade_padding_adds_shapes_and_keeps_the_values():
    weights = torch.softmax(torch.randn(4, 4), dim=-1)  # (T, T)
    tokens = ["[PAD]", "[PAD]", "a", "b"]
    figure = heatmap(weights, tokens, tokens, stage_range("weights", weights))
    before = [trace.z for trace in figure.data]
    shade_padding(figure, [True, True, False, False])
    assert len(figure.layout.shapes) == 2, "one band of pad columns, one of pad rows"
    assert {shape.x0 for shape in figure.layout.shapes} == {-0.5, 0}
    assert [trace.z for trace in figure.data] == before
    assert figure.layout.annotations
    assert not shade_padding(go.Figure(), [False, False]).layout.shapes
