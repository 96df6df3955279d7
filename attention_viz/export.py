"""Export captured attention as JSON, NPZ or CSV (the CLI's ``--out`` and the app's downloads).

JSON schema (also in the README)::

    {
      "model": "smollm2",
      "policy": {"causal": true, "padding_mask": true, "window": null,
                 "padding_side": "right", "max_length": null},
      "tokens": [["The", "cat", ...], ...],          # per item, T display tokens
      "attention_mask": [[1, 1, ..., 0], ...],       # (B, T) 1 = real token
      "mask": [[[true, false, ...], ...], ...],      # (B, T, T) True = may attend
      "truncated": [0, ...],                          # tokens cut per text
      "layers": {"0": {"weights": [...]}, ...}       # (B, H, T, T) per captured layer
    }
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pandas as pd

from attention_viz.capture import Capture

__all__ = ["FORMATS", "to_csv", "to_json", "to_npz", "write"]

FORMATS = (".json", ".npz", ".csv")


def to_json(result: Capture) -> str:
    """The capture as JSON text (schema in the module docstring)."""
    document = {
        "model": result.model_name,
        "policy": dataclasses.asdict(result.policy),
        "tokens": result.tokens,
        "attention_mask": result.attention_mask.tolist(),
        "mask": result.mask[:, 0].tolist(),
        "truncated": result.truncated,
        "layers": {
            str(layer): {"weights": np.round(captured.weights.numpy(), 7).tolist()}
            for layer, captured in sorted(result.layers.items())
        },
    }
    return json.dumps(document, ensure_ascii=False)


def to_npz(result: Capture) -> bytes:
    """Arrays: ``tokens`` (B, T) str, ``attention_mask`` (B, T), ``mask`` (B, T, T) bool, and
    ``layer{L}_weights`` / ``layer{L}_scores`` (B, H, T, T) per captured layer."""
    arrays = {
        "tokens": np.array(result.tokens, dtype=str),
        "attention_mask": result.attention_mask.numpy(),
        "mask": result.mask[:, 0].numpy(),
    }
    for layer, captured in result.layers.items():
        arrays[f"layer{layer}_weights"] = captured.weights.numpy()
        arrays[f"layer{layer}_scores"] = captured.scores.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def to_dataframe(result: Capture) -> pd.DataFrame:
    """Long format: one row per (item, layer, head, query, key) with tokens and weight."""
    frames = []
    for layer, captured in sorted(result.layers.items()):
        batch, heads, length, _ = captured.weights.shape
        item, head, query, key = np.meshgrid(
            np.arange(batch), np.arange(heads), np.arange(length), np.arange(length), indexing="ij"
        )
        tokens = np.array(result.tokens, dtype=object)  # (B, T)
        frames.append(
            pd.DataFrame(
                {
                    "item": item.ravel(),
                    "layer": layer,
                    "head": head.ravel(),
                    "query": query.ravel(),
                    "key": key.ravel(),
                    "query_token": tokens[item.ravel(), query.ravel()],
                    "key_token": tokens[item.ravel(), key.ravel()],
                    "weight": captured.weights.numpy().ravel(),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def to_csv(result: Capture) -> str:
    return to_dataframe(result).to_csv(index=False)


def write(result: Capture, path: str) -> None:
    """Write ``result`` to ``path``; the suffix picks the format (.json, .npz or .csv)."""
    suffix = path[path.rfind(".") :].lower() if "." in path else ""
    if suffix == ".json":
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(to_json(result))
    elif suffix == ".npz":
        with open(path, "wb") as handle:
            handle.write(to_npz(result))
    elif suffix == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write(to_csv(result))
    else:
        raise ValueError(f"Unknown output format {suffix or path!r}: use .json, .npz or .csv.")
