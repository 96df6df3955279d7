"""Settings a host may change, read from environment variables prefixed ``ATTNVIZ_``.

=============================  ==========================================================
``ATTNVIZ_CACHE_DIR``          where converted model weights are kept
                               (default ``$XDG_CACHE_HOME/attention-viz`` or
                               ``~/.cache/attention-viz``)
``ATTNVIZ_ALLOWED_MODELS``     extra models that may load, besides the bundled ones:
                               local directories and hub ids, separated by commas
``ATTNVIZ_MEMORY_BUDGET_MB``   most memory (MB) one request may allocate at its peak, as
                               ``capture.memory_estimate`` counts it: attention matrices,
                               the parity check, masks, activations, compared outputs
                               (default 2048)
``ATTNVIZ_MAX_TOKENS``         longest sequence the app accepts (default 2048)
``ATTNVIZ_MAX_TEXTS``          most texts one request may batch (default 4)
=============================  ==========================================================

The memory estimate counts tensors. glibc's malloc may keep freed tensors of 1–32 MB resident in
its heap: an all-layer capture of 4 × 366 tokens peaked 2–20% over its estimate (depending on what
ran before) and left 2.6 GB resident for 1.3 GB of live tensors. A host that sets
``MALLOC_MMAP_THRESHOLD_=1048576`` in the server's environment gets every such tensor back when
it is freed (measured: peak within 1% of the estimate, 1.3 GB resident afterwards).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from attention_viz.errors import UserFacingError
from attention_viz.i18n import _

PREFIX = "ATTNVIZ_"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attention-viz"


def _int_setting(name: str, default: int) -> int:
    raw = os.environ.get(PREFIX + name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as error:
        raise UserFacingError(
            _("{name} must be a whole number, got {value}.").format(name=PREFIX + name, value=repr(raw))
        ) from error
    if value < 1:
        raise UserFacingError(
            _("{name} must be positive, got {value}.").format(name=PREFIX + name, value=value)
        )
    return value


@dataclass(frozen=True)
class Settings:
    """The host's settings; build with :func:`load_settings` to read the environment."""

    cache_dir: Path = field(default_factory=_default_cache_dir)  # converted weights live here
    allowed_models: tuple[str, ...] = ()  # local dirs / hub ids beyond the bundled models
    memory_budget_mb: int = 2048  # per-request cap on the peak a capture allocates
    max_tokens: int = 2048  # longest sequence accepted
    max_texts: int = 4  # most texts batched in one request


def load_settings() -> Settings:
    """Read ``ATTNVIZ_*`` environment variables; unset ones keep their defaults."""
    raw_allowed = os.environ.get(PREFIX + "ALLOWED_MODELS", "")
    cache_dir = os.environ.get(PREFIX + "CACHE_DIR", "").strip()
    return Settings(
        cache_dir=Path(cache_dir).expanduser() if cache_dir else _default_cache_dir(),
        allowed_models=tuple(entry.strip() for entry in raw_allowed.split(",") if entry.strip()),
        memory_budget_mb=_int_setting("MEMORY_BUDGET_MB", Settings.memory_budget_mb),
        max_tokens=_int_setting("MAX_TOKENS", Settings.max_tokens),
        max_texts=_int_setting("MAX_TEXTS", Settings.max_texts),
    )
