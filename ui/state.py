"""Shareable page state: each page's settings live in ``st.session_state`` and in the URL.

A page declares its :class:`Param` list, calls :func:`restore` before drawing widgets and
:func:`publish` after. Opening a shared URL restores the same view; a garbled, oversized,
repeated or hostile parameter falls back to the default with a visible note, never a crash.
The app-wide display settings (:data:`GLOBAL_PARAMS`) ride along in every page's URL.

The URL is read only when a page is *entered*: the first run of a session (a link opened, a
reload, an edited address bar), a run that comes from another page (the sidebar, or
``st.switch_page`` with query parameters), or the browser's back/forward. Within a page the URL
is output only. The browser sends each rerun with the query string it holds at that moment,
and while a person presses keys faster than runs finish, that is the URL of an *earlier* run:
reading it there would put an old value back over the widget the person just moved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from attention_viz import i18n
from attention_viz.figures import PALETTES, escape_markdown
from attention_viz.i18n import _
from ui.chrome import literal

try:  # Streamlit's flag for a rerun caused by the browser's back/forward; no public API has it.
    from streamlit.runtime.scriptrunner import get_script_run_ctx
except ImportError:  # without it, back/forward within a page keeps the page's current view
    get_script_run_ctx = None

# A URL value longer than this is refused: texts this long belong in the text box, not a link.
MAX_PARAM_CHARS = 4000
# A note about a refused value quotes at most this much of it, as a code span (shown as typed).
SHOWN_VALUE_CHARS = 60
# Session keys: the page whose run came last, and the last (page, query) this session sent.
_PAGE_KEY = "_url_page"
_PUBLISHED_KEY = "_url_published"
# Session keys: per page, the values its params had at the start of its last run; the notes of
# the link that opened the current page, with the values they are about.
_SEEN_KEY = "_url_seen"
_NOTES_KEY = "_url_notes"


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
            raise ValueError(_("too long ({count:,} characters)").format(count=len(raw)))
        if self.kind == "bool":
            if raw.lower() in ("1", "true", "on", "yes"):
                return True
            if raw.lower() in ("0", "false", "off", "no"):
                return False
            raise ValueError(_("expected on or off"))
        if self.kind == "int":
            # ASCII digits only: int() would also read other scripts' digits ("٥" as 5).
            if not re.fullmatch(r"[+-]?[0-9]+", raw.strip()):
                raise ValueError(_("expected a whole number"))
            value = int(raw.strip())
            if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
                raise ValueError(
                    _("expected a number from {low} to {high}").format(low=self.low, high=self.high)
                )
            return value
        if self.kind == "choice":
            for choice in self.choices:
                if str(choice) == raw:
                    return choice
            raise ValueError(_("expected one of {choices}").format(choices=", ".join(map(str, self.choices))))
        if "\x00" in raw:
            raise ValueError(_("contains a NUL character"))
        return raw

    def dump(self, value: Any) -> str:
        if self.kind == "bool":
            return "1" if value else "0"
        return str(value)


# Display settings of the whole app (the sidebar's ``ui.chrome.display_settings``): every page's
# link carries them, so a link made in presentation mode opens in presentation mode, and one
# made in Chinese opens in Chinese.
LANGUAGE = Param("lang", "lang", i18n.DEFAULT_LANGUAGE, "choice", choices=tuple(i18n.LANGUAGES))
GLOBAL_PARAMS: list[Param] = [
    LANGUAGE,
    Param("presentation", "present", False, "bool"),
    Param("palette", "palette", PALETTES[0], "choice", choices=tuple(PALETTES)),
]


def restore(page: str, params: Sequence[Param]) -> list[str]:
    """Set each param's session value: from the URL when the page is entered, else keep it.

    Entering (see the module docstring), a param takes its URL value, else the value it had
    when this page was last shown, else its current one. :data:`GLOBAL_PARAMS` are handled
    too; after back/forward one the URL leaves out is reset to its default, since
    :func:`publish` leaves defaults out.

    Within a page each value is assigned to its key again, which keeps the value of a widget
    this run does not draw (Streamlit drops the state of undrawn widgets; e.g. hidden in
    presentation mode) and sends it to a widget the browser has redrawn empty. A value that
    changed since the last run is left alone: the person is moving that widget, and while keys
    are pressed faster than runs finish, the value sent back would arrive late and undo the
    presses made since.

    The run's language (:data:`LANGUAGE`) is set here, before anything is worded, notes included.

    Returns notes about parameters of the link that were ignored, for the page to show; they
    are returned again on later runs until a setting changes.
    """
    language = use_language()
    every = [*GLOBAL_PARAMS, *params]
    seen_by_page = dict(st.session_state.get(_SEEN_KEY, {}))
    seen = seen_by_page.get(page, {})
    notes: list[str] = []
    history = _is_history_navigation()
    entering = st.session_state.get(_PAGE_KEY) != page or history
    if entering:
        for param in params:
            value = seen.get(param.key, st.session_state.get(param.key))
            if value is not None:
                st.session_state[param.key] = value
        notes = _apply_url(every, reset_missing=GLOBAL_PARAMS if history else [])
        if use_language() != language:  # the link chose another language: word its notes in it
            notes = _apply_url(every, reset_missing=GLOBAL_PARAMS if history else [])
    else:
        for param in params:
            value = st.session_state.get(param.key)
            if value is not None and seen.get(param.key) in (None, value):
                st.session_state[param.key] = value
    st.session_state[_PAGE_KEY] = page
    for param in every:
        if st.session_state.get(param.key) is None:
            st.session_state[param.key] = param.initial()
    seen_by_page[page] = {param.key: st.session_state[param.key] for param in params}
    st.session_state[_SEEN_KEY] = seen_by_page
    if entering:
        st.session_state[_NOTES_KEY] = (page, notes, _values(every)) if notes else None
        return notes
    return _standing_notes(page)


def use_language() -> str:
    """Set the run's language (:mod:`attention_viz.i18n`) from the session, and return it.

    Every run of every page sets it (through :func:`restore`), so that each run's messages are
    in the language the person chose, whatever an earlier run of this thread used. A script
    that shows text before :func:`restore` (``app.py``'s page titles) calls
    :func:`language_of_run` instead, since the session does not yet hold a link's choice.
    """
    code = st.session_state.get(LANGUAGE.key)
    if code not in i18n.LANGUAGES:
        code = LANGUAGE.initial()
    i18n.set_language(code)
    return code


def language_of_run() -> str:
    """Set and return the run's language before :func:`restore` has read the link: the
    session's choice, else a valid ``lang`` of the URL, else English. Nothing is stored, and a
    bad value is left for :func:`restore` to report."""
    code = st.session_state.get(LANGUAGE.key)
    if code not in i18n.LANGUAGES:
        try:
            code = LANGUAGE.parse((st.query_params.get_all(LANGUAGE.url) or [""])[0])
        except ValueError:
            code = LANGUAGE.initial()
    i18n.set_language(code)
    return code


def publish(page: str, params: Sequence[Param], skip: Callable[[Param], bool] | None = None) -> None:
    """Write the page's current state into the URL, so the address bar is always a shareable link.

    App-wide params at their default are left out, so an ordinary link stays short.
    """
    kept = st.session_state.get(_NOTES_KEY)
    if kept and kept[0] == page:  # the link's notes stay while the view is the one made here
        st.session_state[_NOTES_KEY] = (page, kept[1], _values([*GLOBAL_PARAMS, *params]))
    # What the page settled on (a length that follows a new text, a clamped index) is what the
    # next run compares with, to tell the widget a person moved from those it did not.
    st.session_state[_SEEN_KEY] = {**st.session_state.get(_SEEN_KEY, {}), page: _values(params)}
    values = {}
    for param in [*GLOBAL_PARAMS, *params]:
        if skip and skip(param):
            continue
        value = st.session_state.get(param.key)
        if value is None or (param in GLOBAL_PARAMS and value == param.initial()):
            continue
        text = param.dump(value)
        if len(text) <= MAX_PARAM_CHARS:
            values[param.url] = text
    wanted = {name: [value] for name, value in values.items()}
    current = {name: st.query_params.get_all(name) for name in st.query_params.keys()}
    # ``current`` can be stale (see the module docstring), and an earlier run's URL may still be
    # on its way to the browser: send unless both the browser and our last message already agree.
    if current != wanted or st.session_state.get(_PUBLISHED_KEY) != (page, wanted):
        st.session_state[_PUBLISHED_KEY] = None  # a run stopped mid-send makes the next one send
        st.query_params.from_dict(values)
        st.session_state[_PUBLISHED_KEY] = (page, wanted)


def _values(params: Sequence[Param]) -> dict[str, Any]:
    return {param.key: st.session_state.get(param.key) for param in params}


def _standing_notes(page: str) -> list[str]:
    """The notes of the link that opened this page, while no setting has changed since.

    A page can rerun on its own right after it opens (e.g. to report the window's width), even
    before the first run has finished: the notes must not flash by. A value that was still
    unset when last seen is the page's code filling it in (a length that follows the text),
    not a change.
    """
    kept = st.session_state.get(_NOTES_KEY)
    if kept and kept[0] == page:
        if all(value is None or st.session_state.get(key) == value for key, value in kept[2].items()):
            return kept[1]
    st.session_state[_NOTES_KEY] = None
    return []


def _is_history_navigation() -> bool:
    """Whether this run comes from the browser's back or forward button (its URL is the state)."""
    ctx = get_script_run_ctx() if get_script_run_ctx is not None else None
    return bool(getattr(ctx, "is_history_navigation", False))


def _apply_url(params: Sequence[Param], reset_missing: Sequence[Param]) -> list[str]:
    """Put the URL's values of ``params`` into session state; return notes about ignored ones.

    Params in ``reset_missing`` that the URL does not give are set to their default.
    """
    notes: list[str] = []
    current = {name: st.query_params.get_all(name) for name in st.query_params.keys()}
    for param in params:
        values = current.get(param.url)
        if not values:
            if param in reset_missing:
                st.session_state[param.key] = param.initial()
            continue
        if len(values) > 1:
            notes.append(
                _("“{name}” was given {count} times; the first one is used.").format(
                    name=param.url, count=len(values)
                )
            )
        try:
            st.session_state[param.key] = param.parse(values[0])
        except ValueError as reason:
            shown = values[0][:SHOWN_VALUE_CHARS] + ("…" if len(values[0]) > SHOWN_VALUE_CHARS else "")
            notes.append(
                _("“{name}” = {value} was ignored ({reason}); the default is used.").format(
                    name=param.url, value=literal(shown), reason=escape_markdown(str(reason))
                )
            )
            st.session_state[param.key] = param.initial()
    known = {param.url for param in params}
    unknown = sorted(name for name in current if name not in known)
    if unknown and len(unknown) <= 5:
        notes.append(
            _("Unknown link parameters ignored: {names}.").format(
                names=", ".join(literal(name[:40]) for name in unknown)
            )
        )
    elif unknown:
        notes.append(_("{count} unknown link parameters were ignored.").format(count=len(unknown)))
    return notes


def show_notes(notes: list[str]) -> None:
    """Tell the user which link parameters were not used.

    Values and names are quoted as code spans (and shortened): they show as typed, so a link
    cannot inject markdown such as an image or a link that would make the browser fetch another
    host (escaping alone still lets Streamlit autolink ``www.…`` and e-mail addresses).
    """
    for note in notes:
        st.info(_("Link: {note}").format(note=note), icon="🔗")


def clamp_index(key: str, count: int) -> int:
    """Bring a zero-based index in session state into ``0..count-1`` (a shared link or a model
    switch can leave it out of range) and return it."""
    value = min(max(0, int(st.session_state[key])), count - 1)
    if value != st.session_state[key]:  # only then: an assignment is sent back to the widget
        st.session_state[key] = value
        kept = st.session_state.get(_NOTES_KEY)
        if kept and key in kept[2]:  # the link's notes are about the view after this correction
            st.session_state[_NOTES_KEY] = (kept[0], kept[1], {**kept[2], key: value})
    return value
