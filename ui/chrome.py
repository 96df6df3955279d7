"""Page chrome shared by every page: display settings, model loading feedback, error reporting."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import TypeVar

import streamlit as st

from attention_viz.capture import OverBudget
from attention_viz.errors import UserFacingError
from attention_viz.figures import PALETTES, FigureStyle, escape_markdown
from attention_viz.i18n import DEFAULT_LANGUAGE, LANGUAGES, _, localized
from attention_viz.loading import LoadedModel, needs_conversion
from ui import cache
from ui.viewport import measure

T = TypeVar("T")
LOG = logging.getLogger("attention_viz.app")


# Toggles read from the back of a room: off is a dark grey track with a white knob on the left,
# on is the theme's red with the knob on the right (Streamlit's own off state is pale grey).
TOGGLE_CSS = (
    '.stApp [data-testid="stCheckbox"] label:has(input[role="switch"]:not(:checked)) > div:first-of-type'
    " {background-color: #6b7280 !important;}"
)
# Presentation mode: everything that carries the lesson grows (text, formula, metrics, tables,
# buttons, toggles); figures grow through their own FigureStyle.
PRESENTATION_CSS = (
    ".stApp p, .stApp label, .stApp li {font-size: 1.35rem !important;}"
    " .stApp h1 {font-size: 3rem !important;} .stApp h2, .stApp h3 {font-size: 1.9rem !important;}"
    " .stApp textarea {font-size: 1.25rem !important;}"
    # What a selectbox or number input holds (model, head, palette) must read as well as its label.
    ' .stApp [data-testid="stSelectbox"] input, .stApp [data-testid="stNumberInput"] input'
    " {font-size: 1.2rem !important;}"
    # A slider's value floats just above its track: enlarged, it would cover the track.
    ' .stApp [data-testid="stSliderThumbValue"], .stApp [data-testid="stSliderThumbValue"] *,'
    ' .stApp [data-testid="stSliderTickBar"] * {font-size: 1rem !important;}'
    " .stApp .katex {font-size: 1.9rem !important;}"
    # The value's own <p> must be named: `.stApp p` above would otherwise keep it small.
    ' .stApp [data-testid="stMetricValue"], .stApp [data-testid="stMetricValue"] p,'
    ' .stApp [data-testid="stMetricValue"] div {font-size: 3rem !important;}'
    ' .stApp [data-testid="stMetricLabel"] p {font-size: 1.3rem !important;}'
    ' .stApp [data-testid="stTable"] td, .stApp [data-testid="stTable"] th {font-size: 1.3rem !important;}'
    " .stApp button p {font-size: 1.3rem !important; white-space: nowrap;}"
    ' .stApp [data-testid="stCheckbox"] label > div:first-of-type'
    " {transform: scale(1.35); transform-origin: left center; margin-right: 0.9rem;}"
)


def display_settings() -> tuple[FigureStyle, bool]:
    """Sidebar switches for the language, presentation mode and palette.

    The language itself was set for this run by ``ui.state.restore``; a change here reruns the
    page in the other language.

    Returns the figure style and whether presentation mode is on.
    """
    # Re-assigned, not setdefault: the same switch on another page is another widget to
    # Streamlit, which would drop this one's value on a page change. A teacher who turns on
    # presentation mode (or Chinese) once keeps it on every page.
    for key, default in (("lang", DEFAULT_LANGUAGE), ("presentation", False), ("palette", PALETTES[0])):
        value = st.session_state.get(key)
        st.session_state[key] = default if value is None else value
    with st.sidebar:
        # Each language named in itself, so a person who reads only one of them finds it.
        st.radio(
            _("Language"),
            tuple(LANGUAGES),
            key="lang",
            format_func=LANGUAGES.get,
            horizontal=True,
            help=_("The language of every page. It is part of the page's link."),
        )
        st.toggle(
            _("Presentation mode"),
            key="presentation",
            help=_("Large fonts and pictures for a projector. It is part of the page's link."),
        )
        st.selectbox(
            _("Colour palette"),
            PALETTES,
            key="palette",
            help=_("All palettes are readable with colour-vision deficiencies; Viridis is the default."),
        )
    measure()
    presentation = bool(st.session_state["presentation"])
    style = FigureStyle(palette=st.session_state["palette"])
    css = TOGGLE_CSS
    if presentation:
        style = style.presentation()
        css += PRESENTATION_CSS
    st.markdown(f"<style>{css}</style>", unsafe_allow_html=True)
    return style, presentation


def show_table(frame, presentation: bool, key: str, **dataframe_options) -> None:
    """A table: interactive (sortable, scrollable) normally; in presentation mode a plain table
    whose text the projector CSS enlarges (the interactive one draws on a canvas CSS cannot
    enlarge). Columns are named by their ``column_config`` labels in both."""
    if presentation:
        # st.table renders markdown: quote every text cell literally.
        shown = frame.copy()
        for column in shown.columns:
            if shown[column].dtype == object:
                shown[column] = shown[column].map(lambda value: literal(str(value)))
        labels = {
            column: config["label"]
            for column, config in (dataframe_options.get("column_config") or {}).items()
            if isinstance(config, dict) and config.get("label")
        }
        st.table(shown.rename(columns=labels), hide_index=dataframe_options.get("hide_index", False))
    else:
        st.dataframe(frame, key=key, **dataframe_options)


def model_or_stop(name: str) -> LoadedModel:
    """The shared model, with a spinner (and a first-load note); on failure an error, then stop."""
    try:
        info, problem, _short = cache.model_summary(name)
        if info is None:  # a host's allowlisted path: shown as it is, underscores and all
            raise UserFacingError(escape_markdown(problem))
        message = _("Loading {name}…").format(name=name)
        if needs_conversion(name):
            message = _("Converting the bundled model {name} (about 20 s, only the first time)…").format(
                name=name
            )
        with st.spinner(message):
            loaded = cache.model(name)
    except UserFacingError as error:
        st.error(str(error))
        st.stop()
        raise  # unreachable: st.stop() ends the run
    # A repaired model cache says so once per session (the model, and its notes, are shared).
    for note in loaded.notes:
        if not st.session_state.get(f"_model_note_{name}_{note}"):
            st.session_state[f"_model_note_{name}_{note}"] = True
            st.toast(localized(note), icon="🛠️")
    return loaded


def run_or_stop(
    task: Callable[[], T], message: str | None = None, can_choose_layers: bool = True, spinner: bool = True
) -> T:
    """Run a capture with a spinner; a failure becomes ``st.error`` and stops the page.

    A :class:`UserFacingError` says what to do. A request over the memory budget is worded for
    what this page offers (``can_choose_layers``: False where every layer is always captured,
    so "capture fewer layers" is no advice). Anything else is a bug: the page still shows a short
    message instead of a traceback (a class is watching), and the traceback goes to the server's log.
    ``message`` is the spinner's text (translated by the caller); None: "Running the model…".
    ``spinner=False`` for a task that never takes long (each spinner starts a timer thread).
    """
    message = message or _("Running the model…")
    try:
        with st.spinner(message) if spinner else contextlib.nullcontext():
            return task()
    except OverBudget as error:
        st.error(error.refusal.message(can_choose_layers))
        st.stop()
        raise
    except UserFacingError as error:
        st.error(str(error))
        st.stop()
        raise
    except Exception as error:
        LOG.exception("unexpected failure while: %s", message)
        st.error(
            _(
                "Something went wrong ({error}). Change a setting or reload the page to try "
                "again; the details are in the server's log for the host."
            ).format(error=type(error).__name__)
        )
        st.stop()
        raise


def literal(text: str) -> str:
    """Markdown that shows ``text`` exactly as typed, as a code span: nothing renders inside one
    (no link, autolink, e-mail address, image, HTML, emphasis or math). Escaping is not enough:
    Streamlit's markdown turns ``www.example.com`` or ``a@b.c`` into links even when escaped.

    The fence is longer than any run of backticks in the text; the spaces inside it are the
    ones markdown strips from a code span.
    """
    text = " ".join(text.splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}"


def cut_notes(texts: tuple[str, ...] | list[str], truncated: list[int]) -> None:
    """Say which texts lost tokens to the sequence length (the text is shown literally)."""
    for text, cut in zip(texts, truncated, strict=True):
        if cut:
            shown = literal(text[:40] + ("…" if len(text) > 40 else ""))
            st.info(
                _("{count} token(s) of {text} were cut by the sequence length.").format(count=cut, text=shown)
            )
