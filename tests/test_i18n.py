"""The app in English or Chinese: the catalogue is complete, every visible string of every page is
translated, and the language follows the person from page to page and in the link.

Pages are checked as a person reads them: each page runs in ``AppTest`` with ``lang=zh`` in its
link, and every text it shows (titles, markdown, captions, messages, widget labels, help texts and
options, table headers, metrics, figure titles, axis titles, tick labels and hover text) is read
back and searched for English words. To check another page, add it to :data:`SCENARIOS`.
"""

from __future__ import annotations

import gettext
import json
import re
import string
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from streamlit.testing.v1 import AppTest
from tests_support import ROOT

from attention_viz import i18n
from attention_viz.i18n import _, get_language, language, ngettext, set_language

LOCALE = ROOT / "attention_viz" / "locale"
PO = LOCALE / "zh_CN" / "LC_MESSAGES" / "attention_viz.po"
MO = PO.with_suffix(".mo")
TIMEOUT = 300

# Words that stay in Latin letters in the Chinese app, as a Chinese class writes them: technical
# terms, library and model names, palettes, units, and the language switch's own "English".
# Acronyms (PAD, KV, KL, BERT), single letters (Q, K, V, d, i) and identifiers with a digit or
# an underscore (top-1, float32, attention_mask, SmolLM2-135M) are allowed by rule, as is every
# word of the text the person typed (its tokens label the axes). Text in `code spans` is code.
ALLOWED_WORDS = {
    "english",  # the language switch names each language in itself
    "softmax",
    "token",
    "logits",
    "eager",  # transformers' name for its plain attention implementation
    "transformers",
    "torch",
    "flexattention",
    "rope",
    "paligemma",
    "streamingllm",
    "llama",
    "minilm",
    "viridis",
    "cividis",
    "plasma",
    "greys",
    "log",  # log₁₀ on a colour bar
    "px",
}
CJK = re.compile(r"[\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
PLOTLY_FIELD = re.compile(r"%\{[^}]*\}")
TAG = re.compile(r"<[^>]*>")
STYLE = re.compile(r"<style>.*?</style>", re.DOTALL)
WORD = re.compile(r"[A-Za-z0-9_]+(?:['’\-][A-Za-z0-9_]+)*")
# A message whose placeholders were never filled: "{count} lines" shown as is.
PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_]*(?:[:!][^{}]*)?\}")

# (page file, link parameters, buttons to press) for each view that is checked. Between them they
# reach every message a page can show with a working model: other models, presentation mode,
# masks switched off, an example pressed, a link with a bad value, too few texts.
SCENARIOS = [
    ("1_playground.py", {}, ()),
    ("1_playground.py", {"present": "1", "stage": "output"}, ()),
    ("1_playground.py", {"stepping": "1", "stage": "scores", "query": "0", "key": "3"}, ("pg_next",)),
    ("1_playground.py", {"pack": "1", "length": "4", "causal": "0", "heads": "2"}, ()),
    ("2_model_explorer.py", {}, ()),
    ("2_model_explorer.py", {"present": "1", "stage": "masked_scores", "query": "0", "key": "5"}, ()),
    ("2_model_explorer.py", {"model": "minilm"}, ()),
    ("8_generation.py", {}, ()),
    ("8_generation.py", {"new": "3"}, ("gen_start",)),
    ("8_generation.py", {"new": "3", "step": "1", "causal": "0", "present": "1"}, ("gen_next",)),
    ("8_generation.py", {"model": "minilm"}, ()),
    ("3_padding_lab.py", {}, ()),
    ("3_padding_lab.py", {"padding": "0", "present": "1"}, ()),
    ("3_padding_lab.py", {"padding": "0", "side": "right"}, ()),
    ("3_padding_lab.py", {"model": "minilm", "padding": "0", "side": "left"}, ()),
    ("3_padding_lab.py", {"text": "The cat sat.", "causal": "maybe", "colour": "red"}, ()),
    ("4_head_gallery.py", {"kind": "sink"}, ()),
    ("4_head_gallery.py", {"kind": "previous", "present": "1"}, ()),
    ("5_compare.py", {}, ("cmp_preset_padding",)),
    ("5_compare.py", {"model": "minilm", "pack": "1", "present": "1"}, ("cmp_preset_packing",)),
    ("6_packing_check.py", {}, ()),
    ("6_packing_check.py", {"model": "minilm", "present": "1"}, ()),
    ("6_packing_check.py", {"text": "One text only."}, ()),
    ("7_mask_check.py", {}, ()),
    (
        "7_mask_check.py",
        {"pack": "1", "window": "4", "sinks": "1", "prefix": "2", "chunk": "8", "block": "16"},
        (),
    ),
    ("7_mask_check.py", {"model": "minilm", "padding": "0", "present": "1"}, ()),
]
PAGES = sorted({page for page, _query, _clicks in SCENARIOS})


def scenario_id(scenario) -> str:
    page, query, clicks = scenario
    return "-".join([page.removesuffix(".py"), *(f"{k}={v}" for k, v in query.items()), *clicks])


# --- reading a page as a person sees it ------------------------------------------------------


def open_page(page: str, query: dict[str, str], clicks: tuple[str, ...] = ()) -> AppTest:
    """Open ``page`` with a link's ``query``, then press the buttons of ``clicks`` one by one."""
    app = AppTest.from_file(str(ROOT / "pages" / page), default_timeout=TIMEOUT)
    app.query_params.update(query)
    app.run()
    for key in clicks:
        # AppTest words the widgets' current options in the test's own thread, as the browser
        # sends them back: in the language the page was drawn in.
        with language(query.get("lang", "en")):
            app.button(key=key).click().run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _nodes(node) -> Iterator:
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


def _figure_texts(spec: str) -> Iterator[str]:
    """Titles, axis titles, tick labels, annotations, colour bar titles and hover text of a figure."""

    def walk(value, key: str = "") -> Iterator[str]:
        if isinstance(value, dict):
            for name, inner in value.items():
                yield from walk(inner, name)
        elif isinstance(value, list):
            if key in ("text", "ticktext", "hovertemplate"):
                for inner in value:
                    yield from walk(inner, key)
            else:
                for inner in value:
                    yield from walk(inner, "")
        elif isinstance(value, str) and key in ("text", "ticktext", "hovertemplate", "title"):
            yield value

    yield from walk(json.loads(spec))


def _table_texts(node) -> Iterator[str]:
    """A table's header: its column names (as ``column_config`` labels them) and index names."""
    frame = node.value
    labels = {}
    columns = getattr(node.proto, "columns", "")
    if columns:
        labels = {
            name: config.get("label")
            for name, config in json.loads(columns).items()
            if isinstance(config, dict)
        }
    for column in frame.columns:
        yield str(labels.get(str(column)) or column)
    for name in frame.index.names:
        if name is not None:
            yield str(name)
    for config in labels.values():
        if config:
            yield config
    if columns:
        for config in json.loads(columns).values():
            if isinstance(config, dict) and config.get("help"):
                yield config["help"]


def visible_texts(app: AppTest) -> list[str]:
    """Every text the page shows, in both the main area and the sidebar."""
    texts: list[str] = []
    for root in (app.main, app.sidebar):
        for node in _nodes(root):
            proto = getattr(node, "proto", None)
            kind = getattr(node, "type", "")
            if proto is None or kind in ("bidi_component",):
                continue
            if kind == "plotly_chart":
                texts += _figure_texts(proto.spec)
                continue
            if kind in ("dataframe", "table", "arrow_data_frame", "arrow_table"):
                texts += _table_texts(node)
                continue
            if kind == "code":
                if not proto.language:  # plain text (a drawing); source code is code
                    texts.append(proto.code_text)
                continue
            if kind == "latex":
                continue  # a formula
            if kind in ("text_area", "text_input"):
                texts += [proto.label, proto.help, proto.placeholder]
                continue
            for name in ("body", "label", "help", "placeholder"):
                value = getattr(proto, name, None)
                if isinstance(value, str):
                    texts.append(value)
            options = getattr(proto, "options", None)
            if options is not None and not isinstance(options, str):
                texts += [option for option in options if isinstance(option, str)]
            block_label = getattr(getattr(proto, "expandable", None), "label", "")
            if block_label:
                texts.append(block_label)
    texts += [toast.value for toast in app.toast]
    return [STYLE.sub("", text) for text in texts if text and text.strip()]


def typed_words(app: AppTest) -> set[str]:
    """The words of the texts the person typed and of the text the model wrote (the Generation
    page shows it verbatim, as code): they and their tokens show as they are."""
    words = set()
    for box in app.text_area:
        words |= {word.lower() for word in WORD.findall(box.value or "")}
    for block in app.markdown:
        for _ticks, code in CODE_SPAN.findall(block.value or ""):
            words |= {word.lower() for word in WORD.findall(code)}
    return words


def english_words(text: str, allowed: set[str]) -> list[str]:
    """The words of ``text`` that read as untranslated English."""
    text = CODE_SPAN.sub(" ", text)
    text = PLOTLY_FIELD.sub(" ", text)
    text = TAG.sub(" ", text)
    found = []
    for word in WORD.findall(text):
        if any(char.isdigit() or char == "_" for char in word):
            continue  # identifiers, numbers, model names
        parts = re.split(r"['’\-]", word)
        if all(len(part) == 1 or part.isupper() or part.lower() in allowed for part in parts):
            continue
        if word.lower() in allowed or any(word.lower() in typed for typed in allowed if len(word) > 1):
            continue  # a piece of a typed word: a token of the person's text
        found.append(word)
    return found


# --- the catalogue -----------------------------------------------------------------------------


def code_messages() -> dict[str | tuple[str, str], list[str]]:
    """Every message the code marks for translation, with where it is used."""
    with (LOCALE / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    found: dict[str | tuple[str, str], list[str]] = {}
    for filename, line, message, _comments, context in extract_from_dir(ROOT, method_map, options_map):
        key = message if context is None else (context, message)
        if isinstance(message, tuple):
            key = message[0]
        found.setdefault(key, []).append(f"{filename}:{line}")
    return found


def po_catalogue():
    with PO.open("rb") as handle:
        return read_po(handle)


def fields(text: str) -> set[str]:
    return {name for _literal, name, _spec, _conversion in string.Formatter().parse(text) if name is not None}


def test_every_message_of_the_code_is_in_the_catalogue_and_nothing_else():
    catalogue = po_catalogue()
    listed = {
        message.id if not isinstance(message.id, tuple) else message.id[0]
        for message in catalogue
        if message.id
    }
    marked = code_messages()
    missing = {message: places[:2] for message, places in marked.items() if message not in listed}
    assert not missing, f"messages without a catalogue entry (add them to {PO.name}): {missing}"
    assert not listed - set(marked), (
        f"catalogue entries the code no longer uses: {sorted(listed - set(marked))}"
    )


def test_every_catalogue_entry_has_a_chinese_translation_with_the_same_placeholders():
    for message in po_catalogue():
        if not message.id:
            continue
        assert not message.fuzzy, f"fuzzy (unchecked) translation: {message.id!r}"
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        for text in strings:
            assert text.strip(), f"no translation for {ids[0]!r}"
            assert CJK.search(text) or not english_words(PLACEHOLDER.sub(" ", text), ALLOWED_WORDS), (
                f"the translation of {ids[0]!r} is not Chinese: {text!r}"
            )
            assert fields(text) == fields(ids[0]), f"placeholders differ: {ids[0]!r} → {text!r}"


def test_the_compiled_catalogue_matches_its_source():
    with MO.open("rb") as handle:
        compiled = gettext.GNUTranslations(handle)
    entries = [message for message in po_catalogue() if message.id]
    for message in entries:
        if isinstance(message.id, tuple):
            for count, text in ((1, message.string[0]), (2, message.string[-1])):
                assert compiled.ngettext(*message.id, count) == text, f"{PO.name} is newer than {MO.name}"
        else:
            assert compiled.gettext(message.id) == message.string, (
                f"{MO.name} is out of date for {message.id!r}: run pybabel compile (see attention_viz/i18n.py)"
            )
    assert len(compiled._catalog) - 1 == sum(  # the header is one entry more
        len(message.string) if isinstance(message.id, tuple) else 1 for message in entries
    ), f"{MO.name} holds entries {PO.name} no longer has: run pybabel compile"


# --- the mechanism -----------------------------------------------------------------------------


def test_messages_follow_the_language_of_their_own_context_only():
    assert get_language() == "en"
    assert _("Causal mask") == "Causal mask"
    with language("zh"):
        assert _("Causal mask") == "因果掩码"
        assert ngettext("{n} layer", "{n} layers", 2) == "{n} layers", "unknown messages stay as written"
    assert _("Causal mask") == "Causal mask", "the block's language ends with the block"

    seen = {}

    def other_thread():
        seen["start"] = get_language()
        set_language("zh")
        seen["set"] = _("Padding mask")

    with language("zh"):
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        assert _("Padding mask") == "填充掩码"
    assert seen == {"start": "en", "set": "填充掩码"}, "each thread (each session's run) has its own language"
    assert get_language() == "en", "another thread's choice does not leak into this one"
    with pytest.raises(ValueError, match="Unknown language"):
        set_language("fr")


def test_core_messages_translate_policy_descriptions_errors_and_tables():
    from attention_viz.errors import UserFacingError
    from attention_viz.leak import leak_frame
    from attention_viz.policy import MaskPolicy

    policy = MaskPolicy(causal=True, window=4, sinks=2, chunk=8, pack=True)
    english = policy.describe()
    assert english == "causal + padding, window 4 + 2 sinks, chunks of 8, packed"
    assert (
        policy.with_changes(document_mask=False, reset_positions=False).describe()
        == "causal + padding, window 4 + 2 sinks, chunks of 8, packed, no document mask, no position reset"
    )
    with language("zh"):
        chinese = policy.describe()
        assert not english_words(chinese, ALLOWED_WORDS), chinese
        assert "因果" in chinese and "窗口 4" in chinese
        with pytest.raises(UserFacingError, match="文本是空的"):
            from attention_viz.capture import encode

            encode(None, [""], MaskPolicy())  # refused before the model is used
        import torch

        frame = leak_frame(torch.zeros(2, 3))
        assert list(frame.columns) == ["头 0", "头 1", "头 2", "平均"]
    assert policy.describe() == english


def test_a_shared_message_is_shown_in_each_sessions_language():
    note = i18n.Message(
        i18n.N_("The cached conversion of {name} was damaged ({problem}), so it was converted again."),
        name="smollm2",
        problem="a file is missing",
    )
    assert (
        note == "The cached conversion of smollm2 was damaged (a file is missing), so it was converted again."
    )
    assert i18n.localized(note) == note
    with language("zh"):
        assert i18n.localized(note).startswith("smollm2 的缓存转换文件已损坏")
        assert i18n.localized("plain text") == "plain text"


# --- every page, as a person reads it ----------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario_id(s) for s in SCENARIOS])
def test_every_visible_string_is_chinese_in_chinese(scenario):
    page, query, clicks = scenario
    app = open_page(page, {**query, "lang": "zh"}, clicks)
    assert app.radio(key="lang").value == "zh"
    allowed = ALLOWED_WORDS | typed_words(app)
    texts = visible_texts(app)
    assert any(CJK.search(text) for text in texts), "the page shows no Chinese at all"
    untranslated = {
        text[:120]: english_words(text, allowed) for text in texts if english_words(text, allowed)
    }
    assert not untranslated, (
        f"English words in the Chinese page (wrap the text with _() and translate it): {untranslated}"
    )
    unfilled = [text[:120] for text in texts if PLACEHOLDER.search(PLOTLY_FIELD.sub("", text))]
    assert not unfilled, f"placeholders shown unfilled: {unfilled}"


@pytest.mark.parametrize("page", PAGES)
def test_every_visible_string_is_english_in_english(page):
    app = open_page(page, {})
    assert app.radio(key="lang").value == "en"
    texts = visible_texts(app)
    chinese = [text[:120] for text in texts if CJK.search(text) and text != i18n.LANGUAGES["zh"]]
    assert not chinese, f"Chinese in the English page: {chinese}"
    unfilled = [text[:120] for text in texts if PLACEHOLDER.search(PLOTLY_FIELD.sub("", text))]
    assert not unfilled, f"placeholders shown unfilled: {unfilled}"


# --- the switch --------------------------------------------------------------------------------


def test_the_language_switch_persists_across_pages_and_in_the_link():
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=TIMEOUT)
    app.run()
    assert "lang" not in app.query_params, "English, the default, stays out of the link"
    app.radio(key="lang").set_value("zh").run()
    assert app.query_params["lang"] == "zh"

    with language("zh"):  # the widgets are drawn in Chinese from here on (see open_page)
        app.switch_page(str(ROOT / "pages" / "3_padding_lab.py")).run()
        assert not app.exception, [e.value for e in app.exception]
        assert app.radio(key="lang").value == "zh", "the language was lost on a page change"
        assert app.title[0].value == "填充实验室"
        assert app.query_params["lang"] == "zh", "the new page's link carries the language"

        app.switch_page(str(ROOT / "pages" / "6_packing_check.py")).run()
        assert app.title[0].value == "打包检查"
        app.radio(key="lang").set_value("en").run()
    assert app.title[0].value == "Packing check"
    assert "lang" not in app.query_params


def test_switching_the_language_keeps_every_setting_of_the_page():
    """The browser sends each choice back worded as it was shown; after a switch the page must
    still read it (a padding side of "左侧" is "left"), not fall back or fail."""
    query = {"lang": "zh", "side": "left", "model": "minilm", "scale": "log", "padding": "0"}
    app = open_page("3_padding_lab.py", query)
    assert app.radio(key="pl_side").options == ["右侧", "左侧"]
    with language("zh"):
        app.radio(key="lang").set_value("en").run()
    assert not app.exception and not app.error, [e.value for e in [*app.exception, *app.error]]
    assert app.title[0].value == "Padding lab"
    assert app.radio(key="pl_side").options == ["right", "left"]
    settings = (
        app.radio(key="pl_side").value,
        app.selectbox(key="pl_model").value,
        app.radio(key="pl_scale").value,
    )
    assert settings == ("left", "minilm", "log")
    assert app.toggle(key="pl_padding").value is False
    with language("en"):
        app.radio(key="lang").set_value("zh").run()
    assert app.radio(key="pl_side").value == "left" and app.title[0].value == "填充实验室"


def test_a_link_with_lang_opens_in_that_language_and_a_bad_one_says_so_in_english():
    app = open_page("7_mask_check.py", {"lang": "zh"})
    assert app.title[0].value == "掩码检查"
    assert app.query_params["lang"] == "zh"

    bad = open_page("7_mask_check.py", {"lang": "fr"})
    assert bad.radio(key="lang").value == "en"
    assert bad.title[0].value == "Mask check"
    assert any("lang" in info.value and "ignored" in info.value for info in bad.info), [
        i.value for i in bad.info
    ]


def test_a_chinese_link_words_its_own_notes_in_chinese():
    app = open_page("7_mask_check.py", {"lang": "zh", "block": "7"})
    notes = [info.value for info in app.info if info.value.startswith("链接：")]
    assert notes and "已被忽略" in notes[0], [info.value for info in app.info]


def test_the_chinese_png_export_draws_chinese_text(tmp_path: Path):
    """kaleido drives Chromium, which needs a CJK font (scripts/setup.sh installs one)."""
    pytest.importorskip("kaleido")
    import shutil

    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("chromium is not installed (scripts/setup.sh --dev installs it)")
    import numpy as np
    import plotly.graph_objects as go
    from PIL import Image

    def draw(text: str) -> np.ndarray:
        figure = go.Figure()
        figure.update_layout(
            width=300,
            height=120,
            margin={"l": 0, "r": 0, "t": 0, "b": 0},
            plot_bgcolor="white",
            xaxis={"visible": False},
            yaxis={"visible": False},
        )
        figure.add_annotation(
            text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 40}
        )
        path = tmp_path / "figure.png"
        figure.write_image(path)
        return np.asarray(Image.open(path).convert("L"), dtype=float)

    # Without a CJK font every character is the same "missing glyph" box.
    first, second = draw("注意力"), draw("掩码词")
    assert (first < 128).any(), "nothing was drawn"
    assert np.abs(first - second).mean() > 1.0, "different Chinese texts draw the same boxes: no CJK font"
