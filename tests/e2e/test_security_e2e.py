"""Hostile input stays text, and the app stays offline.

Every test here (and in every other e2e file) also runs under the ``browser_page`` watch: no
request, failed request or websocket to a host but the app's own server, no console error, and
no JavaScript dialog. Here we feed the app what an attacker would: script in the text boxes,
and garbled, hostile or huge values in a shared link.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

import pytest

from .conftest import read_plot, type_into_text_area, wait_for_app, wait_for_plot, wait_for_plot_change

PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>"
# A host that can never resolve (RFC 2606); the watch aborts requests to it anyway.
TRAP = "http://attnviz-e2e.invalid"
RUN_MS = 180_000  # the explorer may have to load (or convert) its model first

PAGES = {
    # path, text box label, focused chart, charts drawn at least
    "playground": (
        "/",
        "Sentences (one per line; two of different lengths show padding)",
        "pg_heads_chart",
        2,
    ),
    "model_explorer": (
        "/model_explorer",
        "Text (one per line; several lines make a padded batch)",
        "ex_head_chart",
        3,
    ),
}

_INJECTED_JS = """
() => ({
    images: document.querySelectorAll('img[src="x"], [onerror]').length,
    scripts: Array.from(document.scripts).filter((s) => s.textContent.includes("alert(")).length,
})
"""


def assert_nothing_injected(page) -> None:
    assert page.evaluate(_INJECTED_JS) == {"images": 0, "scripts": 0}, "the payload became HTML"


def link_notes(page) -> list[str]:
    """The visible "Link: ..." notes a page shows about link parameters it did not use."""
    notes = page.get_by_test_id("stAlert").filter(has_text="Link:")
    return [notes.nth(i).inner_text() for i in range(notes.count()) if notes.nth(i).is_visible()]


@pytest.mark.parametrize("name", PAGES)
def test_typed_script_shows_as_literal_text(streamlit_server, browser_page, name):
    page = browser_page.page
    path, label, chart, plots = PAGES[name]
    page.goto(streamlit_server + path)
    wait_for_app(page, plots=plots, timeout_ms=RUN_MS)
    before = read_plot(page, chart)

    type_into_text_area(page, label, PAYLOAD)
    wait_for_app(page, plots=plots, timeout_ms=RUN_MS)
    after = wait_for_plot_change(page, chart, before, timeout_ms=RUN_MS)
    # Plotly draws the SVG a moment after it takes the new data: wait for the labels on screen.
    drawn = "plot.drawn && JSON.stringify(plot.ticktext) === JSON.stringify(arg)"
    after = wait_for_plot(page, chart, drawn, after.ticktext)

    assert page.get_by_role("textbox", name=label).input_value() == PAYLOAD
    # Both tokenizers split "<script>" into "<", "script", ">": the cells' labels, joined, spell
    # it. Plotly labels are pseudo-HTML, so the figure carries "&lt;", and the SVG shows "<"
    # (tick labels may be thinned to fit; every cell keeps its label for hover).
    categories = page.evaluate(
        "(key) => document.querySelector(`.st-key-${key} .js-plotly-plot`).data[0].x.join('')", chart
    )
    assert "&lt;script&gt;" in re.sub(r"\d+: ", "", categories)
    assert any("&lt;" in text for text in after.ticktext)
    assert any("<" in text for text in after.rendered_ticks)
    assert_nothing_injected(page)
    assert browser_page.dialogs == [], "an alert() ran"
    assert browser_page.problems() == []


HOSTILE_LINKS = {
    "garbled": (
        urlencode({"causal": "maybe", "length": "-1", "text": "<script>alert(1)</script>", "heads": "999"}),
        ("causal", "length", "heads"),
    ),
    "100kB": ("text=" + "x" * 100_000, ("text", "too long")),
}


@pytest.mark.parametrize("link", HOSTILE_LINKS)
@pytest.mark.parametrize("name", PAGES)
def test_hostile_link_loads_with_a_note(streamlit_server, browser_page, name, link):
    page = browser_page.page
    path, label, _chart, plots = PAGES[name]
    query, mentioned = HOSTILE_LINKS[link]
    page.goto(f"{streamlit_server}{path}?{query}")
    wait_for_app(page, plots=plots, allow_exception=True, timeout_ms=RUN_MS)

    assert page.locator('[data-testid="stException"]').count() == 0, "the app crashed on a hostile link"
    notes = link_notes(page)
    assert notes, "no visible 'Link:' note about the ignored parameters"
    for word in mentioned:
        assert any(word in note for note in notes), f"no note mentions {word!r}: {notes}"
    if link == "garbled":  # a text is any text: it is used, as text
        assert page.get_by_role("textbox", name=label).input_value() == "<script>alert(1)</script>"
    else:  # the address bar becomes a short, shareable link again
        assert "x" * 1000 not in page.url
    assert_nothing_injected(page)
    assert browser_page.problems() == []


# The notes and messages a page builds from a link or a text are Markdown. A value that is
# Markdown itself must show as typed: an image there would make every visitor's browser fetch
# a URL of the link author's choosing (a tracking pixel), and leave the machine.


def test_link_note_shows_markdown_in_values_as_text(streamlit_server, browser_page):
    page = browser_page.page
    bad_value = f"![x]({TRAP}/value.png)"
    bad_name = f"x`![y]({TRAP}/name.png)`z"
    page.goto(f"{streamlit_server}/?length={quote(bad_value)}&{quote(bad_name)}=1")
    wait_for_app(page, plots=2)

    notes = link_notes(page)
    assert any("length" in note for note in notes), notes
    images = page.get_by_test_id("stAlert").locator("img")
    assert images.count() == 0, f"a link note drew an image: {images.evaluate_all('e => e.map(i => i.src)')}"
    assert browser_page.external_requests == []
    assert any(bad_value in note for note in notes), f"the value is not shown as typed: {notes}"


def test_explorer_cut_note_shows_markdown_in_text_as_text(streamlit_server, browser_page):
    page = browser_page.page
    text = f"![x]({TRAP}/cut.png) and then a few more words"
    page.goto(f"{streamlit_server}/model_explorer?{urlencode({'text': text, 'length': '2'})}")
    wait_for_app(page, plots=3, timeout_ms=RUN_MS)

    cut = page.get_by_test_id("stAlert").filter(has_text="were cut by the sequence length")
    assert cut.count() == 1 and cut.is_visible(), "no note that the text was cut"
    images = cut.locator("img")
    assert images.count() == 0, f"the cut note drew an image: {images.evaluate_all('e => e.map(i => i.src)')}"
    assert browser_page.external_requests == []
    assert "![x]" in cut.inner_text(), f"the text is not shown as typed: {cut.inner_text()!r}"


def test_the_watch_sees_leaks_errors_and_dialogs(streamlit_server, browser_page):
    """The harness itself: a watch that sees nothing would let every test above pass."""
    page = browser_page.page
    page.goto(streamlit_server)
    wait_for_app(page, plots=2)
    assert browser_page.problems() == []

    with page.expect_event("requestfailed"):
        page.evaluate(f"() => fetch('{TRAP}/fetch.json').catch(() => null)")
    page.evaluate(
        """(url) => new Promise((done) => {
            const socket = new WebSocket(url);
            socket.onclose = socket.onerror = () => done();
        })""",
        f"{TRAP.replace('http', 'ws')}/socket",
    )
    # Streamlit answers most unknown paths with its index page; a missing media file is a 404.
    missing = "/media/attnviz-e2e-missing.png"
    with page.expect_event("console", lambda message: missing in (message.location or {}).get("url", "")):
        page.evaluate(f"() => fetch('{missing}').then(() => null)")
    page.evaluate("() => alert('watched')")

    external = "\n".join(browser_page.external_requests)
    assert f"GET {TRAP}/fetch.json" in external
    assert "WEBSOCKET ws://attnviz-e2e.invalid/socket" in external
    assert any(missing in error and "404" in error for error in browser_page.console_errors)
    assert browser_page.dialogs == ["alert: 'watched' on " + page.url]
    # Provoked on purpose, checked above: clear them so teardown passes.
    for found in (browser_page.external_requests, browser_page.dialogs, browser_page.console):
        found.clear()


_NOTE_LINKS_JS = """
() => Array.from(document.querySelectorAll('[data-testid="stAlert"] a, [data-testid="stAlert"] img'))
    .map((element) => element.outerHTML)
"""


@pytest.mark.parametrize(
    "query",
    [
        # A link parameter's name that is markdown for an image with a link.
        "?" + quote("![x](http://attnviz-e2e.invalid/y.png)", safe="!") + "=3",
        # Text that autolinks in markdown even when escaped, quoted by the "tokens were cut" note.
        "?"
        + urlencode(
            {"text": "see www.attnviz-e2e.invalid or ask a@attnviz-e2e.invalid now please", "length": 3}
        ),
    ],
)
def test_notes_that_quote_user_input_carry_no_links(streamlit_server, browser_page, query):
    """Every note that quotes what a user typed or linked shows it as literal text: no link,
    autolink, e-mail link or image, so nothing in a note sends a class to another host."""
    page = browser_page.page
    page.goto(streamlit_server + "/model_explorer" + query)
    wait_for_app(page, plots=3, timeout_ms=RUN_MS)
    notes = page.get_by_test_id("stAlert")
    assert notes.count() >= 1, "the note quoting the input is missing"
    assert page.evaluate(_NOTE_LINKS_JS) == [], "a note renders user input as a link or image"
    text = " ".join(notes.all_inner_texts())
    assert "attnviz-e2e.invalid" in text, "the note no longer quotes the input as typed"
