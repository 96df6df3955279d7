"""Colour scales: which value each colour of a picture stands for. No Streamlit here.

Weights use a fixed 0–1 scale by default, so a toggle never rescales them. On long texts attention
spreads thin and every cell looks dark on that scale, so two more scales are offered for weights,
each named on its colour bar:

* ``row``: each query row divided by its own maximum (1 = the key that query attends to most);
* ``log``: log₁₀ of the weight, from 10⁻⁴ (anything smaller shows as 10⁻⁴) up to 1.

The scale changes colours only: hover and exports always give the true weight.
Scores are drawn on a diverging scale symmetric around 0 (blue negative, red positive).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attention_viz.i18n import N_, _

__all__ = [
    "DIVERGING",
    "PALETTES",
    "SCALES",
    "SCALE_LABELS",
    "ValueRange",
    "scale_label",
    "scaled",
    "stage_range",
]

# Colour-blind-safe sequential palettes; the first is the default.
PALETTES = ("Viridis", "Cividis", "Plasma", "Greys")
DIVERGING = "RdBu_r"  # blue (negative) - white (0) - red (positive)
SCALES = ("fixed", "row", "log")
# In English; :func:`scale_label` gives them in the run's language.
SCALE_LABELS = {
    "fixed": N_("0 to 1 (fixed)"),
    "row": N_("per row (÷ row maximum)"),
    "log": N_("log (10⁻⁴ to 1)"),
}
# What one value of a stage is called (``ValueRange.label``): kept in English, shown translated.
STAGE_VALUE_LABELS = {"scores": N_("score"), "masked_scores": N_("masked score"), "output": N_("output")}
WEIGHT = N_("weight")
# log₁₀ of the smallest weight the log scale tells apart: 1e-4 is far below 1/2048, the
# weight of a uniform row at the longest text the app takes.
LOG_FLOOR = -4.0


@dataclass(frozen=True)
class ValueRange:
    """A colour range for one stage.

    Attributes:
        zmin, zmax: the values at the two ends of the colour scale (after :func:`scaled`).
        colorscale: a plotly colour scale name.
        label: what one value is ("weight", "score"), in English (code compares it): hover and
            the colour bar name values with it in the run's language (see :attr:`shown_label`).
        scale: ``fixed``, ``row`` or ``log`` (weights only); see the module docstring.
    """

    zmin: float
    zmax: float
    colorscale: str
    label: str
    scale: str = "fixed"

    @property
    def transformed(self) -> bool:
        """Whether colours stand for something other than the value itself."""
        return self.scale != "fixed"

    @property
    def shown_label(self) -> str:
        """:attr:`label` in the run's language."""
        return _(self.label)

    @property
    def colorbar_title(self) -> str:
        """The colour bar's title, naming the scale, in the run's language."""
        label = self.shown_label
        if self.scale == "row":
            return _("{label} ÷ row max").format(label=label)
        if self.scale == "log":
            return f"log₁₀ {label}"
        return label


def scale_label(scale: str) -> str:
    """A colour scale's name as a choice shows it (``"0 to 1 (fixed)"``), in the run's language."""
    return _(SCALE_LABELS[scale])


def stage_range(
    stage: str, values: torch.Tensor, palette: str = PALETTES[0], scale: str = "fixed"
) -> ValueRange:
    """The colour range for a stage. Weights use [0, 1] (or ``scale``); other stages a range
    symmetric around 0 that covers every finite value.

    Shape: ``values`` is any shape; only finite entries set a symmetric range.
    """
    if scale not in SCALES:
        raise ValueError(f"Unknown colour scale {scale!r}: use one of {', '.join(SCALES)}.")
    if stage == "weights":
        if scale == "log":
            return ValueRange(LOG_FLOOR, 0.0, palette, WEIGHT, "log")
        return ValueRange(0.0, 1.0, palette, WEIGHT, scale)
    finite = values[torch.isfinite(values)]
    bound = float(finite.abs().max()) if finite.numel() else 1.0
    bound = bound or 1.0
    label = STAGE_VALUE_LABELS.get(stage, stage)
    return ValueRange(-bound, bound, DIVERGING, label)


def scaled(values: np.ndarray, value_range: ValueRange) -> np.ndarray:
    """The numbers the colours stand for under ``value_range.scale`` (NaN stays NaN).

    ``row`` divides each row by its largest finite value (a row of zeros stays zeros); ``log``
    takes log₁₀, clipped below at ``LOG_FLOOR``.

    Shape: ``values`` is ``(Tq, Tk)``; returns the same shape.
    """
    if value_range.scale == "row":
        finite = np.where(np.isfinite(values), values, -np.inf)
        row_max = finite.max(axis=-1, keepdims=True)  # (Tq, 1)
        safe = np.where(row_max > 0, row_max, 1.0)
        return np.where(np.isfinite(values), values / safe, values)
    if value_range.scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            logged = np.log10(np.clip(values, 10.0**LOG_FLOOR, None))
        return np.where(np.isnan(values), np.nan, logged)
    return values
