"""Shareable page state: each page's settings live in ``st.session_state`` and in the URL.

A page declares its :class:`Param` list, calls :func:`restore` before drawing widgets and
:func:`publish` after. Opening a shared URL restores the same view; a garbled, oversized,
repeated or hostile parameter falls back to the default with a visible note, never a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from attention_viz.figures import escape_markdown

# A URL value longer than this is refused: texts this long belong in the text box, not a link.
MAX_PARAM_CHARS = 4000
# A note about a refused value quotes at most this much of it, escaped so it shows as typed.
SHOWN_VALUE_CHARS = 60


@dataclass(frozen=True)
class Param:
    """One piece of page state: its session key, its URL name and how to read it from text.

    Attributes:
        key: the ``st.session_state`` key (also the widget key).
        url: the short name in the URL.
        default: value used when the URL has none or a bad one; a callable is called.
        kind: ``bool``, ``int``, ``str`` or ``choice``.
        choices: allowed values for ``choice``.
        low, high: inclusive bounds for ``int``.
    """

    key: str
    url: str
    default: Any
    kind: str = "str"
    choices: tuple = ()
    low: int | None = None
    high: int | None = None

    def initial(self) -> Any:
        return self.default() if callable(self.default) else self.default

    def parse(self, raw: str) -> Any:
        """The value for a URL string; raises ValueError with a reason if it is not acceptable."""
        if len(raw) > MAX_PARAM_CHARS:
            raise ValueError(f"too long ({len(raw):,} characters)")
        if self.kind == "bool":
            if raw.lower() in ("1", "true", "on", "yes"):
                return True
            if raw.lower() in ("0", "false", "off", "no"):
                return False
            raise ValueError("expected on or off")
        if self.kind == "int":
            try:
                value = int(raw.strip())
            except ValueError:
                raise ValueError("expected a whole number") from None
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(f"expected a number from {self.low} to {self.high}")
            return value
        if self.kind == "choice":
            for choice in self.choices:
                if str(choice) == raw:
                    return choice
            raise ValueError(f"expected one of {', '.join(map(str, self.choices))}")
        if "\x00" in raw:
            raise ValueError("contains a NUL character")
        return raw

    def dump(self, value: Any) -> str:
        if self.kind == "bool":
            return "1" if value else "0"
        return str(value)


def restore(page: str, params: Sequence[Param]) -> list[str]:
    """Set each param's session value from the URL (when the URL changed) or its default.

    Returns notes about parameters that were ignored, for the page to show.
    """
    notes: list[str] = []
    applied_key = f"_url_applied_{page}"
    current = {name: st.query_params.get_all(name) for name in st.query_params.keys()}
    if st.session_state.get(applied_key) != current:
        for param in params:
            values = current.get(param.url)
            if not values:
                continue
            if len(values) > 1:
                notes.append(f"“{param.url}” was given {len(values)} times; the first one is used.")
            try:
                st.session_state[param.key] = param.parse(values[0])
            except ValueError as reason:
                shown = values[0][:SHOWN_VALUE_CHARS] + ("…" if len(values[0]) > SHOWN_VALUE_CHARS else "")
                notes.append(
                    f"“{param.url}” = “{escape_markdown(shown)}” was ignored "
                    f"({escape_markdown(str(reason))}); the default is used."
                )
                st.session_state[param.key] = param.initial()
        known = {param.url for param in params}
        unknown = sorted(name for name in current if name not in known)
        if unknown and len(unknown) <= 5:
            notes.append(
                "Unknown link parameters ignored: "
                + ", ".join(f"“{escape_markdown(name[:40])}”" for name in unknown)
                + "."
            )
        elif unknown:
            notes.append(f"{len(unknown)} unknown link parameters were ignored.")
        st.session_state[applied_key] = current
    for param in params:
        # Re-assigning (not setdefault) keeps the value of a widget that this run does not draw
        # (e.g. hidden in presentation mode): Streamlit drops the state of undrawn widgets.
        value = st.session_state.get(param.key)
        st.session_state[param.key] = param.initial() if value is None else value
    return notes


def publish(page: str, params: Sequence[Param], skip: Callable[[Param], bool] | None = None) -> None:
    """Write the page's current state into the URL, so the address bar is always a shareable link."""
    values = {}
    for param in params:
        if skip and skip(param):
            continue
        value = st.session_state.get(param.key)
        if value is None:
            continue
        text = param.dump(value)
        if len(text) <= MAX_PARAM_CHARS:
            values[param.url] = text
    current = {name: st.query_params.get_all(name) for name in st.query_params.keys()}
    wanted = {name: [value] for name, value in values.items()}
    if current != wanted:
        st.query_params.from_dict(values)
    st.session_state[f"_url_applied_{page}"] = wanted


def show_notes(notes: list[str]) -> None:
    """Tell the user which link parameters were not used.

    Values and names are quoted escaped (and shortened): they show as typed, so a link cannot
    inject markdown such as an image that would make the browser fetch another host.
    """
    for note in notes:
        st.info("Link: " + note, icon="🔗")


def clamp_index(key: str, count: int) -> int:
    """Bring a zero-based index in session state into ``0..count-1`` (a shared link or a model
    switch can leave it out of range) and return it."""
    value = min(max(0, int(st.session_state[key])), count - 1)
    st.session_state[key] = value
    return value
