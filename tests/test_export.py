"""Exports record their settings: file names, CSV columns, NPZ arrays and JSON fields."""

from __future__ import annotations

import io
import itertools
import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from attention_viz.capture import capture
from attention_viz.export import csv_rows, export_stem, to_csv, to_json, to_npz
from attention_viz.policy import MaskPolicy

TEXTS = ["The cat sat.", "Hi"]
SETTINGS_COLUMNS = [
    "model",
    "causal",
    "padding_mask",
    "window",
    "padding_side",
    "max_length",
    "prefix",
    "sinks",
    "chunk",
    "pack",
    "document_mask",
    "reset_positions",
]
CELL_COLUMNS = ["item", "layer", "head", "query", "key", "query_token", "key_token", "weight"]


@pytest.fixture(scope="module")
def result(smollm2):
    """Two layers, both texts padded on the left, the causal mask off and a window on."""
    return capture(
        smollm2,
        TEXTS,
        layers=[1, 3],
        policy=MaskPolicy(causal=False, padding_side="left", window=2),
        effect=False,
    )


def test_every_policy_gives_its_own_safe_stem():
    policies = [
        MaskPolicy(causal=causal, padding_mask=padding, window=window, padding_side=side, max_length=length)
        for causal, padding, window, side, length in itertools.product(
            (True, False), (True, False), (None, 1, 4), ("left", "right"), (None, 1, 12)
        )
    ]
    stems = [export_stem("smollm2", [3], policy) for policy in policies]
    assert len(set(stems)) == len(policies) == 72
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", stem) for stem in stems)
    assert (
        export_stem("smollm2", [3], MaskPolicy(causal=True, max_length=12))
        == "smollm2-layer3-causal-padding-right-len12"
    )
    left_window = MaskPolicy(causal=False, padding_mask=False, window=4, padding_side="left", max_length=7)
    assert export_stem("minilm", [0], left_window) == "minilm-layer0-nocausal-nopadding-left-window4-len7"


def test_the_stem_names_layers_and_item_and_keeps_only_a_path_s_last_component():
    policy = MaskPolicy(causal=True)
    assert export_stem("HuggingFaceTB/SmolLM2-360M", [5, 0, 1, 2, 2], policy, item=1) == (
        "SmolLM2-360M-layers0to2_5-item1-causal-padding-right-longest"
    )
    assert export_stem("../..", [0], policy).startswith("model-layer0-")
    assert export_stem(r"C:\models\my model:v2", [0], policy).startswith("my_model_v2-layer0-")
    assert export_stem("smollm2", [0], policy, item=0) != export_stem("smollm2", [0], policy, item=1)
    with pytest.raises(ValueError, match="at least one"):
        export_stem("smollm2", [], policy)


def test_causal_on_and_off_captures_get_different_stems(smollm2):
    on = capture(smollm2, "The cat sat.", layers=[1], effect=False)
    off = capture(smollm2, "The cat sat.", layers=[1], policy=MaskPolicy(causal=False), effect=False)
    stem_on = export_stem(on.model_name, sorted(on.layers), on.policy)
    stem_off = export_stem(off.model_name, sorted(off.layers), off.policy)
    assert stem_on == "smollm2-layer1-causal-padding-right-longest"
    assert stem_off == "smollm2-layer1-nocausal-padding-right-longest"


def test_csv_rows_carry_the_settings_and_the_captured_weights(result):
    table = pd.read_csv(io.StringIO(to_csv(result)), keep_default_na=False)
    assert list(table.columns) == SETTINGS_COLUMNS + CELL_COLUMNS
    batch, heads, length, _ = result.layers[1].weights.shape
    assert len(table) == 2 * batch * heads * length * length
    assert csv_rows(result) == len(table)
    # One layer's file from a capture of more layers (the explorer's, once it has every layer).
    one_layer = pd.read_csv(io.StringIO(to_csv(replace(result, layers={3: result.layers[3]}))))
    assert csv_rows(result, [3]) == len(one_layer) == batch * heads * length * length
    settings = table[SETTINGS_COLUMNS].drop_duplicates().to_dict("records")
    assert settings == [
        {
            "model": "smollm2",
            "causal": False,
            "padding_mask": True,
            "window": 2,
            "padding_side": "left",
            "max_length": 0,  # 0 = padded to the longest text
            "prefix": 0,  # 0 = off
            "sinks": 0,
            "chunk": 0,
            "pack": False,
            "document_mask": True,
            "reset_positions": True,
        }
    ]
    for layer in (1, 3):
        rows = table[table["layer"] == layer]
        index = [torch.tensor(rows[name].to_numpy()) for name in ("item", "head", "query", "key")]
        expected = result.layers[layer].weights[index[0], index[1], index[2], index[3]]
        np.testing.assert_allclose(rows["weight"].to_numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
    for row in table.sample(50, random_state=0).itertuples():
        assert row.query_token == result.tokens[row.item][row.query]
        assert row.key_token == result.tokens[row.item][row.key]
    assert result.tokens[1][0] == "[PAD]"  # "Hi" is shorter and padded on the left


def test_csv_window_reads_zero_when_off(smollm2):
    plain = capture(smollm2, "The cat sat.", layers=[0], policy=MaskPolicy(max_length=4), effect=False)
    table = pd.read_csv(io.StringIO(to_csv(plain)))
    assert table["window"].eq(0).all() and table["max_length"].eq(4).all()
    assert table["causal"].all()


def test_npz_arrays_round_trip_with_the_policy(result):
    arrays = np.load(io.BytesIO(to_npz(result)), allow_pickle=False)
    assert str(arrays["model"]) == "smollm2"
    assert MaskPolicy(**json.loads(str(arrays["policy_json"]))) == result.policy
    assert bool(arrays["causal"]) is False and bool(arrays["padding_mask"]) is True
    assert int(arrays["window"]) == 2 and int(arrays["max_length"]) == 0
    assert str(arrays["padding_side"]) == "left"
    assert arrays["layers"].tolist() == [1, 3]
    assert arrays["tokens"].tolist() == result.tokens
    np.testing.assert_array_equal(arrays["mask"], result.mask[:, 0].numpy())
    np.testing.assert_array_equal(arrays["attention_mask"], result.attention_mask.numpy())
    for layer in (1, 3):
        np.testing.assert_array_equal(arrays[f"layer{layer}_weights"], result.layers[layer].weights.numpy())
        np.testing.assert_array_equal(arrays[f"layer{layer}_scores"], result.layers[layer].scores.numpy())


def test_json_records_the_layers_and_policy_and_round_trips(result):
    document = json.loads(to_json(result))
    assert document["model"] == "smollm2"
    assert document["layers_captured"] == [1, 3] == [int(key) for key in document["layers"]]
    assert MaskPolicy(**document["policy"]) == result.policy
    assert document["tokens"] == result.tokens
    assert document["truncated"] == result.truncated
    np.testing.assert_array_equal(np.array(document["mask"]), result.mask[:, 0].numpy())
    for layer in (1, 3):
        weights = np.array(document["layers"][str(layer)]["weights"])
        np.testing.assert_allclose(weights, result.layers[layer].weights.numpy(), atol=1e-7)
