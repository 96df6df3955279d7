"""attention_viz.gallery against slow, loop-based references: tiling, pooling, colouring, ranking."""

from __future__ import annotations

import base64
import dataclasses
import io

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from attention_viz.capture import Capture, LayerCapture
from attention_viz.errors import UserFacingError
from attention_viz.figures import MASKED_RGB
from attention_viz.gallery import (
    SEPARATOR_RGB,
    TYPICAL,
    colour_lut,
    pool,
    selected_heads,
    stacked_weights,
    thumbnail_figure,
    thumbnails,
    tile,
    typical_heads,
)
from attention_viz.policy import MaskPolicy


def slow_tile(cells: np.ndarray, separator) -> np.ndarray:
    """Place each cell by explicit index arithmetic, one pixel at a time."""
    rows, columns, size = cells.shape[:3]
    out = np.empty((rows * (size + 1) - 1, columns * (size + 1) - 1, *cells.shape[4:]), dtype=float)
    out[...] = separator
    for layer in range(rows):
        for head in range(columns):
            for i in range(size):
                for j in range(size):
                    out[layer * (size + 1) + i, head * (size + 1) + j] = cells[layer, head, i, j]
    return out


def slow_pool(weights: np.ndarray, allowed: np.ndarray, max_cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool one (T, T) matrix with loops: block factor f, query mean over real rows, key sum."""
    length = weights.shape[0]
    factor = -(-length // max_cell)
    cells = -(-length // factor)
    pooled = np.zeros((cells, cells))
    pooled_allowed = np.zeros((cells, cells), dtype=bool)
    for a in range(cells):
        rows = range(a * factor, min((a + 1) * factor, length))
        for b in range(cells):
            keys = range(b * factor, min((b + 1) * factor, length))
            pooled[a, b] = sum(weights[i, j] for i in rows for j in keys) / len(rows)
            pooled_allowed[a, b] = any(allowed[i, j] for i in rows for j in keys)
    return pooled, pooled_allowed


def random_weights(generator: torch.Generator, shape: tuple[int, ...], allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over random scores under ``allowed`` (rows with nothing allowed become zeros)."""
    scores = torch.randn(*shape, generator=generator, dtype=torch.float64)
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return torch.nan_to_num(weights, nan=0.0)


def fake_capture(layers: int = 3, heads: int = 4, length: int = 6, texts: int = 2, seed: int = 0) -> Capture:
    """A Capture built by hand (causal mask, second text right-padded by two tokens)."""
    generator = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(texts, length, dtype=torch.long)  # (B, T)
    attention_mask[1:, -2:] = 0
    policy = MaskPolicy(causal=True)
    mask = policy.build(attention_mask)  # (B, 1, T, T)
    captured = {}
    for layer in range(layers):
        weights = random_weights(generator, (texts, heads, length, length), mask).float()  # (B, H, T, T)
        fields = {
            "scores": weights,
            "masked_scores": weights,
            "weights": weights,
            "mask": mask,
            "query": torch.zeros(texts, heads, length, 2),
            "key": torch.zeros(texts, heads, length, 2),
            "kv_head": torch.arange(heads),
            "empty_rows": ~mask.any(-1).expand(texts, heads, length),
            "scale": 1.0,
        }
        captured[layer] = build(LayerCapture, fields)
    return build(
        Capture,
        dict(
            model_name="fake",
            decoder=True,
            texts=tuple(f"text {i}" for i in range(texts)),
            tokens=[[f"t{i}" for i in range(length)] for _ in range(texts)],
            input_ids=torch.zeros(texts, length, dtype=torch.long),
            attention_mask=attention_mask,
            position_ids=torch.arange(length).expand(texts, length),
            mask=mask,
            policy=policy,
            layers=captured,
            truncated=[0] * texts,
        ),
    )


def build(cls, values: dict):
    """A dataclass from the values it declares: the capture types gain and lose derived fields
    (``masked_scores`` became a property), and these tests only need the ones the gallery reads."""
    declared = {field.name for field in dataclasses.fields(cls) if field.init}
    return cls(**{name: value for name, value in values.items() if name in declared})


def decode_png(uri: str) -> np.ndarray:
    data = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# --- tiling -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 4, 2), (2, 9, 5), (30, 9, 3)])
def test_tile_matches_loop(shape):
    cells = np.random.default_rng(0).random((*shape, shape[-1]))  # (L, H, C, C)
    tiled = tile(cells)
    expected = slow_tile(cells, np.nan)
    assert tiled.shape == (shape[0] * (shape[2] + 1) - 1, shape[1] * (shape[2] + 1) - 1)
    np.testing.assert_array_equal(tiled, expected)  # NaN separators compare equal in place


def test_tile_keeps_channels_and_separator_colour():
    cells = np.random.default_rng(1).integers(0, 200, size=(3, 2, 4, 4, 3)).astype(np.uint8)
    tiled = tile(cells, SEPARATOR_RGB)
    np.testing.assert_array_equal(tiled, slow_tile(cells, SEPARATOR_RGB))
    assert (tiled[4] == SEPARATOR_RGB).all(), "row 4 separates layer 0 from layer 1"
    assert (tiled[:, 4] == SEPARATOR_RGB).all(), "column 4 separates head 0 from head 1"


# --- pooling ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "max_cell"), [(7, 3), (10, 4), (9, 3), (5, 1), (13, 5)])
def test_pool_matches_loop(length, max_cell):
    generator = torch.Generator().manual_seed(length)
    allowed = MaskPolicy(causal=True).build(torch.ones(1, length, dtype=torch.long))[0]  # (1, T, T)
    weights = random_weights(generator, (2, 3, length, length), allowed).numpy()  # (L, H, T, T)
    pooled, pooled_allowed = pool(weights, allowed.numpy(), max_cell)
    for layer in range(2):
        for head in range(3):
            expected, expected_allowed = slow_pool(weights[layer, head], allowed[0].numpy(), max_cell)
            np.testing.assert_allclose(pooled[layer, head], expected, atol=1e-12)
            np.testing.assert_array_equal(pooled_allowed[layer, head], expected_allowed)


def test_pool_leaves_short_sequences_alone():
    weights = np.random.default_rng(2).random((2, 2, 5, 5))
    allowed = np.tril(np.ones((5, 5), dtype=bool))
    pooled, pooled_allowed = pool(weights, allowed, max_cell=5)
    np.testing.assert_array_equal(pooled, weights)
    assert pooled_allowed.shape == (2, 2, 5, 5)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 40), max_cell=st.integers(1, 12), causal=st.booleans())
def test_pooled_rows_of_full_blocks_still_sum_to_one(length, max_cell, causal):
    """Keys are summed and queries averaged, so a pooled row keeps the mass of a distribution."""
    generator = torch.Generator().manual_seed(length * 100 + max_cell)
    allowed = MaskPolicy(causal=causal).build(torch.ones(1, length, dtype=torch.long))[0]  # (1, T, T)
    weights = random_weights(generator, (1, 1, length, length), allowed).numpy()
    pooled, _ = pool(weights, allowed.numpy(), max_cell)
    assert pooled.shape[-1] <= max_cell
    np.testing.assert_allclose(pooled.sum(-1), 1.0, atol=1e-9)


# --- thumbnails ---------------------------------------------------------------------------------


def test_thumbnails_colour_every_cell_like_a_loop():
    result = fake_capture(layers=3, heads=4, length=6)
    thumbs = thumbnails(result, item=1, palette="Viridis")
    lut = colour_lut("Viridis")
    assert thumbs.rgb.shape == (3 * 7 - 1, 4 * 7 - 1, 3)
    assert (thumbs.cell, thumbs.tokens, thumbs.layers, thumbs.heads) == (6, 6, [0, 1, 2], 4)
    allowed = result.mask[1, 0].numpy()
    for layer in range(3):
        weights = result.layers[layer].weights[1].double().numpy()  # (H, T, T)
        for head in range(4):
            for i in range(6):
                for j in range(6):
                    pixel = thumbs.rgb[layer * 7 + i, head * 7 + j]
                    if allowed[i, j]:
                        expected = lut[int(round(weights[head, i, j] * 255))]
                    else:
                        expected = MASKED_RGB
                    np.testing.assert_array_equal(pixel, expected, err_msg=f"{layer=} {head=} {i=} {j=}")
    np.testing.assert_array_equal(decode_png(thumbs.png()), thumbs.rgb)


def test_thumbnails_pool_long_sequences():
    result = fake_capture(layers=2, heads=3, length=20, texts=1)
    thumbs = thumbnails(result, max_cell=8)
    assert (thumbs.tokens, thumbs.cell) == (20, 7)  # factor 3: ceil(20 / 3) = 7 cells a side
    assert thumbs.rgb.shape == (2 * 8 - 1, 3 * 8 - 1, 3)


def test_thumbnail_figure_is_one_image_with_labels_and_outlines():
    result = fake_capture(layers=3, heads=4, length=6)
    thumbs = thumbnails(result)
    figure = thumbnail_figure(thumbs, highlight=[(2, 3), (0, 1), (9, 9)])
    kinds = [trace.type for trace in figure.data]
    assert kinds == ["image", "heatmap"], "one image for all heads, one invisible hover grid"
    np.testing.assert_array_equal(decode_png(figure.data[0].source), thumbs.rgb)
    assert list(figure.layout.xaxis.ticktext) == [f"head {h}" for h in range(4)]
    assert list(figure.layout.yaxis.ticktext) == [f"layer {layer}" for layer in range(3)]
    assert figure.data[1].text[2][3] == "layer 2 · head 3"
    # Tick positions are the tile centres.
    assert list(figure.layout.xaxis.tickvals) == [2.5 + 7 * h for h in range(4)]
    shapes = figure.layout.shapes
    assert len(shapes) == 2, "a pair outside the grid is skipped"
    first = shapes[0]
    assert (first.x0, first.x1, first.y0, first.y1) == (3 * 7 - 1, 3 * 7 + 6, 2 * 7 - 1, 2 * 7 + 6)


def test_stacked_and_selected_weights():
    result = fake_capture()
    weights, layers = stacked_weights(result, item=1)
    assert weights.shape == (3, 4, 6, 6) and layers == [0, 1, 2]
    torch.testing.assert_close(weights[2, 3], result.layers[2].weights[1, 3])
    chosen = selected_heads(result, [(2, 3), (0, 1)], item=0)
    torch.testing.assert_close(chosen[0], result.layers[2].weights[0, 3])
    torch.testing.assert_close(chosen[1], result.layers[0].weights[0, 1])
    with pytest.raises(UserFacingError, match="Head 4 does not exist"):
        selected_heads(result, [(0, 4)])
    with pytest.raises(UserFacingError, match="Text 5 does not exist"):
        stacked_weights(result, item=5)


# --- ranking ------------------------------------------------------------------------------------


def random_stats(seed: int = 0, layers: int = 5, heads: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = layers * heads
    # Values rounded to one decimal, so ties happen and the tie-break is exercised.
    return pd.DataFrame(
        {
            "layer": np.repeat(np.arange(layers), heads),
            "head": np.tile(np.arange(heads), layers),
            "kv_head": np.tile(np.arange(heads) // 2, layers),
            "entropy": rng.random(rows).round(1),
            "distance": rng.random(rows) * 5,
            "sink": rng.random(rows).round(1),
            "previous": rng.random(rows).round(1),
            "padding": np.zeros(rows),
        }
    ).sample(frac=1.0, random_state=seed)  # shuffled: the order must not come from the input


@pytest.mark.parametrize("kind", list(TYPICAL))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_typical_heads_ranks_like_sorted(kind, seed):
    stats = random_stats(seed)
    spec = TYPICAL[kind]
    sign = -1 if spec.largest else 1
    records = stats.to_dict("records")
    expected = sorted(records, key=lambda r: (sign * r[spec.column], r["layer"], r["head"]))[:6]
    picked = typical_heads(stats, kind, 6)
    assert list(picked["rank"]) == [1, 2, 3, 4, 5, 6]
    assert list(zip(picked["layer"], picked["head"], strict=True)) == [
        (r["layer"], r["head"]) for r in expected
    ]
    assert list(picked.columns) == ["rank", *stats.columns]


def test_typical_heads_directions():
    stats = random_stats(3)
    assert typical_heads(stats, "previous", 1)["previous"].iloc[0] == stats["previous"].max()
    assert typical_heads(stats, "sink", 1)["sink"].iloc[0] == stats["sink"].max()
    assert typical_heads(stats, "broad", 1)["entropy"].iloc[0] == stats["entropy"].max()
    assert typical_heads(stats, "sharp", 1)["entropy"].iloc[0] == stats["entropy"].min()


def test_typical_heads_edge_cases():
    stats = random_stats(layers=1, heads=3)
    assert len(typical_heads(stats, "sharp", 10)) == 3, "asking for more heads than exist returns all"
    with pytest.raises(UserFacingError, match="choose one of previous, sink, broad, sharp"):
        typical_heads(stats, "induction", 3)
    with pytest.raises(UserFacingError, match="at least one"):
        typical_heads(stats, "sharp", 0)
