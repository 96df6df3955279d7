"""Export captured attention as JSON, NPZ or CSV (the CLI's ``--out`` and the app's downloads).

Every format records the settings it was captured with (model, captured layers, mask policy),
and :func:`export_stem` names a file after them, so two downloads under different masks never
share a name.

JSON schema (also in the README)::

    {
      "model": "smollm2",
      "policy": {"causal": true, "padding_mask": true, "window": null,
                 "padding_side": "right", "max_length": null, "prefix": null,
                 "sinks": null, "chunk": null, "pack": false,
                 "document_mask": true, "reset_positions": true},  # MaskPolicy(**policy) rebuilds it
      "layers_captured": [0, 5],                      # zero-based, ascending
      "tokens": [["The", "cat", ...], ...],          # per item, T display tokens
      "attention_mask": [[1, 1, ..., 0], ...],       # (B, T) 1 = real token
      "position_ids": [[0, 1, ...], ...],            # (B, T) the positions the model was given
      "documents": null,                              # packed: (B, T) text index per token, -1 = pad
      "mask": [[[true, false, ...], ...], ...],      # (B, T, T) True = may attend
      "truncated": [0, ...],                          # tokens cut per text
      "layers": {"0": {"weights": [...]}, ...}       # (B, H, T, T) per captured layer
    }
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from attention_viz.capture import Capture
from attention_viz.policy import MaskPolicy

__all__ = ["FORMATS", "export_stem", "to_csv", "to_dataframe", "to_json", "to_npz", "write"]

FORMATS = (".json", ".npz", ".csv")
# Tables and arrays cannot hold None in an int column; the policy never uses 0 (window,
# max_length, prefix, sinks and chunk are at least 1), so 0 stands for "off" / "longest".
NONE_AS_INT = 0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_model_name(model_name: str) -> str:
    """The last path component of ``model_name`` with every character outside [A-Za-z0-9._-]
    replaced by ``_`` and no leading dots (so never ``..`` or a hidden file)."""
    last = [part for part in re.split(r"[/\\]", model_name) if part.strip()]
    safe = _UNSAFE.sub("_", last[-1].strip() if last else "").lstrip(".")
    return safe or "model"


def _layers_label(layers: list[int] | tuple[int, ...]) -> str:
    """``layer3``, or ``layers0to2_5`` (runs of consecutive layers shortened)."""
    ordered = sorted(set(layers))
    if not ordered:
        raise ValueError("Name at least one captured layer for the file name.")
    if len(ordered) == 1:
        return f"layer{ordered[0]}"
    runs: list[list[int]] = []
    for layer in ordered:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    parts = [f"{run[0]}to{run[-1]}" if len(run) > 2 else "_".join(map(str, run)) for run in runs]
    return "layers" + "_".join(parts)


def export_stem(
    model_name: str, layers: list[int] | tuple[int, ...], policy: MaskPolicy, item: int | None = None
) -> str:
    """A file-name stem (no suffix) that records the model, layers and every policy field.

    Two different policies always give different stems; only ``[A-Za-z0-9._-]`` is used, and a
    model name that is a path is reduced to its last component. Examples::

        smollm2-layer3-causal-padding-right-len12
        minilm-layers0to5-item1-nocausal-nopadding-left-window4-longest

    Args:
        model_name: ``smollm2``, ``minilm`` or an allowlisted name (``org/model`` gives ``model``).
        layers: the captured layers (zero-based; order and repeats do not matter).
        policy: the mask policy; ``window``, ``prefix``, ``sinks``, ``chunk`` and packing are left
            out when off, ``max_length`` None reads ``longest``.
        item: which text of the batch, when the file holds one text only.
    """
    if item is not None and item < 0:
        raise ValueError(f"item must be 0 or more, got {item}.")
    parts = [_safe_model_name(model_name), _layers_label(layers)]
    if item is not None:
        parts.append(f"item{item}")
    parts += [
        "causal" if policy.causal else "nocausal",
        "padding" if policy.padding_mask else "nopadding",
        policy.padding_side,
    ]
    for name in ("window", "prefix", "sinks", "chunk"):
        if getattr(policy, name) is not None:
            parts.append(f"{name}{getattr(policy, name)}")
    if policy.pack:
        parts.append("packed")
        parts += [
            label
            for label, on in (("nodocmask", policy.document_mask), ("noreset", policy.reset_positions))
            if not on
        ]
    parts.append("longest" if policy.max_length is None else f"len{policy.max_length}")
    return "-".join(parts)


def _policy_columns(result: Capture) -> dict[str, object]:
    """The model and every policy field as scalar values (None written as ``NONE_AS_INT``), in
    the policy's field order, so a new policy field is recorded without a change here."""
    policy = result.policy
    columns: dict[str, object] = {"model": result.model_name}
    for item in dataclasses.fields(policy):
        value = getattr(policy, item.name)
        columns[item.name] = NONE_AS_INT if value is None else value
    return columns


def to_json(result: Capture) -> str:
    """The capture as JSON text (schema in the module docstring)."""
    document = {
        "model": result.model_name,
        "policy": dataclasses.asdict(result.policy),
        "layers_captured": sorted(result.layers),
        "tokens": result.tokens,
        "attention_mask": result.attention_mask.tolist(),
        "position_ids": result.position_ids.tolist(),
        "documents": None if result.documents is None else result.documents.tolist(),
        "mask": result.mask[:, 0].tolist(),
        "truncated": result.truncated,
        "layers": {
            str(layer): {"weights": np.round(captured.weights.numpy(), 7).tolist()}
            for layer, captured in sorted(result.layers.items())
        },
    }
    return json.dumps(document, ensure_ascii=False)


def to_npz(result: Capture) -> bytes:
    """The capture as a compressed ``.npz``; every array loads with ``allow_pickle=False``.

    Arrays:
        ``model`` 0-d str; ``policy_json`` 0-d str (the policy as in :func:`to_json`);
        ``causal``, ``padding_mask`` 0-d bool; ``window``, ``max_length`` 0-d int
        (0 = no window / pad to the longest text); ``padding_side`` 0-d str;
        ``prefix``, ``sinks``, ``chunk`` 0-d int (0 = off); ``pack``, ``document_mask``,
        ``reset_positions`` 0-d bool;
        ``layers`` (L,) int, the captured layers in ascending order;
        ``tokens`` (B, T) str; ``attention_mask``, ``position_ids`` (B, T); ``documents`` (B, T)
        packed only (text index per token, -1 = padding); ``mask`` (B, T, T) bool;
        ``layer{L}_weights`` / ``layer{L}_scores`` (B, H, T, T) per captured layer.
    """
    arrays = {name: np.array(value) for name, value in _policy_columns(result).items()}
    arrays["policy_json"] = np.array(json.dumps(dataclasses.asdict(result.policy)))
    arrays["layers"] = np.array(sorted(result.layers), dtype=np.int64)
    arrays["tokens"] = np.array(result.tokens, dtype=str)
    arrays["attention_mask"] = result.attention_mask.numpy()
    arrays["position_ids"] = result.position_ids.numpy()
    if result.documents is not None:
        arrays["documents"] = result.documents.numpy()
    arrays["mask"] = result.mask[:, 0].numpy()  # (B, T, T)
    for layer, captured in sorted(result.layers.items()):
        arrays[f"layer{layer}_weights"] = captured.weights.numpy()
        arrays[f"layer{layer}_scores"] = captured.scores.numpy()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _frame(result: Capture, layer: int, item: int, head: int) -> pd.DataFrame:
    """The rows of one (layer, item, head): ``T × T`` of them, queries then keys."""
    weights = result.layers[layer].weights[item, head]  # (T, T)
    length = weights.shape[-1]
    query, key = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")  # each (T, T)
    tokens = np.array(result.tokens[item], dtype=object)  # (T,)
    return pd.DataFrame(
        {
            **_policy_columns(result),
            "item": item,
            "layer": layer,
            "head": head,
            "query": query.ravel(),
            "key": key.ravel(),
            "query_token": tokens[query.ravel()],
            "key_token": tokens[key.ravel()],
            "weight": weights.numpy().ravel(),
        }
    )


def _frames(result: Capture):
    """Every (layer, item, head) block of rows, in order: one block in memory at a time."""
    for layer, captured in sorted(result.layers.items()):
        batch, heads = captured.weights.shape[:2]
        for item in range(batch):
            for head in range(heads):
                yield _frame(result, layer, item, head)


# The app's CSV download is built in memory: beyond this many rows (about 90 MB of text) it
# points to the NPZ or the command line, which writes a CSV to a file one head at a time.
CSV_MAX_ROWS = 1_000_000
CSV_BYTES_PER_ROW = 90  # a typical row with its settings columns, measured on smollm2 exports


def csv_rows(result: Capture, layers: Iterable[int] | None = None) -> int:
    """How many data rows :func:`to_csv` writes for ``layers`` of ``result`` (all of its layers
    by default): ``B × Σ_layers H × T × T``."""
    chosen = result.layers if layers is None else layers
    return sum(result.layer(layer).weights.numel() for layer in chosen)


def to_dataframe(result: Capture) -> pd.DataFrame:
    """Long format: one row per (item, layer, head, query, key).

    Columns: ``model``, ``causal``, ``padding_mask``, ``window`` (0 = no window),
    ``padding_side``, ``max_length`` (0 = padded to the longest text), ``prefix``, ``sinks``,
    ``chunk`` (0 = off), ``pack``, ``document_mask``, ``reset_positions`` repeat the capture's
    settings on every row; then ``item``, ``layer``, ``head``, ``query``, ``key``,
    ``query_token``, ``key_token``, ``weight``. Rows are ordered by layer, item, head, query, key.

    Shape: ``B × Σ_layers H × T × T`` rows.
    """
    return pd.concat(list(_frames(result)), ignore_index=True)


def write_csv(result: Capture, handle) -> None:
    """Write :func:`to_dataframe`'s rows as CSV to a text ``handle``, one head at a time, so that
    memory holds one head's rows, not the whole table."""
    for index, frame in enumerate(_frames(result)):
        frame.to_csv(handle, index=False, header=index == 0)


def to_csv(result: Capture) -> str:
    """:func:`to_dataframe` as CSV text (``causal`` and ``padding_mask`` read ``True``/``False``)."""
    buffer = io.StringIO()
    write_csv(result, buffer)
    return buffer.getvalue()


def statistics_csv(result: Capture) -> str:
    """The per-head statistics table as CSV, the capture's settings in its first columns."""
    from attention_viz.stats import head_statistics

    table = head_statistics(result)
    for offset, (name, value) in enumerate(_policy_columns(result).items()):
        table.insert(offset, name, value)
    return table.to_csv(index=False)


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
            write_csv(result, handle)
    else:
        raise ValueError(f"Unknown output format {suffix or path!r}: use .json, .npz or .csv.")
