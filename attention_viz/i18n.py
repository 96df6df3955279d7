"""Translations: every visible message in English or Simplified Chinese, with Python's gettext.

Messages are written in English where they are used and looked up in a message catalogue when
they are shown::

    _("Causal mask")                                  # "因果掩码" in Chinese
    _("Layer {layer} does not exist").format(layer=3)  # placeholders by name, filled after lookup
    ngettext("{n} layer", "{n} layers", n).format(n=n)

The English text is the key (the gettext ``msgid``), so English needs no catalogue and reads
exactly as written. A message that is defined in one place and shown in another (a table of
labels, a button's text) is marked with :func:`N_` where it is written and translated with
:func:`_` where it is shown, so that it follows the language of the run that shows it.

The current language lives in a :class:`contextvars.ContextVar`: every thread (each Streamlit
session's script runs in its own) and every task sees its own, so two classes on one server can
use two languages at once. The app sets it at the start of each run (``ui/state.py``); the CLI
and the Python API stay in English unless they set it.

The catalogue is ``locale/zh_CN/LC_MESSAGES/attention_viz.po`` (the source, edited by hand) and
its compiled ``.mo`` (what gettext reads); ``tests/test_i18n.py`` checks that every message of
the code is in the catalogue, translated with the same ``{placeholders}``, and that the ``.mo``
matches the ``.po``. After wrapping new messages (from the repository's root)::

    pybabel extract -F attention_viz/locale/babel.cfg -o /tmp/attention_viz.pot --no-location --sort-output .
    pybabel update -i /tmp/attention_viz.pot -d attention_viz/locale -D attention_viz -l zh_CN --no-fuzzy-matching
    # translate the new entries (their empty msgstr) in the .po, then:
    pybabel compile -d attention_viz/locale -D attention_viz -l zh_CN --statistics

Write placeholders by name and fill them after the lookup (``_("{n} tokens").format(n=n)``),
never inside an f-string: the catalogue holds the message with its placeholders.
"""

from __future__ import annotations

import gettext
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from functools import cache
from pathlib import Path

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGES",
    "Message",
    "N_",
    "_",
    "get_language",
    "language",
    "localized",
    "ngettext",
    "pgettext",
    "set_language",
]

# Language codes as the URL carries them (``lang=zh``), with each language's name in itself.
LANGUAGES = {"en": "English", "zh": "中文"}
DEFAULT_LANGUAGE = "en"  # the language the messages are written in
DOMAIN = "attention_viz"
LOCALE_DIR = Path(__file__).with_name("locale")
# The gettext locale folder of each translated language.
LOCALES = {"zh": "zh_CN"}

_current: ContextVar[str] = ContextVar("attention_viz_language", default=DEFAULT_LANGUAGE)


@cache
def catalogue(code: str) -> gettext.NullTranslations:
    """The compiled catalogue of a language (English: none, messages are their own text).

    A missing catalogue raises: a language the app offers must have one.
    """
    if code == DEFAULT_LANGUAGE:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[LOCALES[code]])


def _checked(code: str) -> str:
    if code not in LANGUAGES:
        raise ValueError(f"Unknown language {code!r}: use one of {', '.join(LANGUAGES)}.")
    return code


def set_language(code: str) -> Token[str]:
    """Show this context's messages in ``code`` (``en`` or ``zh``) from now on; returns the token
    that :meth:`contextvars.ContextVar.reset` takes to undo it."""
    return _current.set(_checked(code))


def get_language() -> str:
    """The language messages are shown in, here and now."""
    return _current.get()


@contextmanager
def language(code: str) -> Iterator[None]:
    """Show messages in ``code`` within the block, then go back to the language before it."""
    token = set_language(code)
    try:
        yield
    finally:
        _current.reset(token)


def _(message: str) -> str:
    """``message`` in the current language (unchanged if the catalogue has no translation)."""
    return catalogue(_current.get()).gettext(message)


def ngettext(singular: str, plural: str, count: int) -> str:
    """The singular or plural message for ``count``, in the current language."""
    return catalogue(_current.get()).ngettext(singular, plural, count)


def pgettext(context: str, message: str) -> str:
    """``message`` in the current language, for a short word whose translation depends on
    where it stands (``pgettext("padding side", "left")``)."""
    return catalogue(_current.get()).pgettext(context, message)


def N_(message: str) -> str:
    """Mark ``message`` for the catalogue without translating it: it is translated where shown."""
    return message


class Message(str):
    """A message kept in English in a result shared by every session (a cached model's notes),
    and shown in each session's language by :func:`localized`.

    As a ``str`` it is the English text, so code that only logs or compares it is unchanged.
    Mark the message with :func:`N_`: ``Message(N_("{name} was rebuilt."), name=name)``.
    """

    msgid: str
    values: dict[str, object]

    def __new__(cls, msgid: str, **values: object) -> Message:
        text = super().__new__(cls, msgid.format(**values))
        text.msgid = msgid
        text.values = values
        return text

    def localized(self) -> str:
        return _(self.msgid).format(**self.values)


def localized(text: str) -> str:
    """``text`` in the current language if it is a :class:`Message`, else unchanged."""
    return text.localized() if isinstance(text, Message) else text
