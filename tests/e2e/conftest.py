"""Fixtures for end-to-end tests that drive the real app in headless Chromium.

Every test in tests/e2e is marked ``e2e``; ``pytest -m "not e2e"`` leaves them out.

Fixtures:
    streamlit_server  (session) ``streamlit run`` on a free port on 127.0.0.1; yields the base URL.
                      The script is ``$ATTNVIZ_E2E_APP`` (default ``app.py``), relative to the repo
                      root, where the server always starts so that .streamlit/config.toml applies.
    browser           (session) Debian's /usr/bin/chromium driven by Playwright. If it is missing,
                      the tests are skipped, or fail when CI=true.
    open_browser_page (function) a factory: each call opens a fresh, watched browser context
                      (a new "person": no cookies, no session) and returns its ``BrowserPage``.
    browser_page      (function) the first ``BrowserPage`` of the test (1400x1000).
    page              (function) ``browser_page.page``, for tests that only need the page.

What a ``BrowserPage`` watches, in every page of its context (see ``BrowserPage.problems``):
    * requests, failed requests and websockets to any host but 127.0.0.1/localhost/::1
      (such requests are also aborted, so nothing ever leaves the machine);
    * failed requests to the app's own server;
    * browser-console errors and uncaught page errors;
    * JavaScript dialogs (alert/confirm/prompt): the app never opens one, so one means
      injected script ran.
    At teardown every watched page must be free of these, or the test errors. A test that
    provokes one on purpose checks it and then clears the list. On a failure a screenshot of
    every page goes to tests/e2e/artifacts/.

Helpers:
    wait_for_app(page, plots=0)  waits until Streamlit has connected and finished running the
                      script, and until at least ``plots`` Plotly charts are drawn. Call it after
                      ``page.goto`` and after every interaction that reruns the script.
    read_plot, wait_for_plot, wait_for_plot_change   a chart's figure data, as the browser holds it.
    click_toggle / type_into_text_area  drive widgets the way a person does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from benchmarks import live_app
from benchmarks.live_app import CHROMIUM, REPO_ROOT, VIEWPORT

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
APT_COMMAND = (
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
    "--no-install-recommends chromium fonts-liberation fonts-dejavu-core fonts-noto-color-emoji libatomic1"
)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about"}
# Any http(s) URL whose host is not local: such requests are recorded, then aborted.
EXTERNAL_HTTP = re.compile(r"^https?://(?!(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?(?:[/?#]|$))", re.I)
EXTERNAL_WS = re.compile(r"^wss?://(?!(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?(?:[/?#]|$))", re.I)
APP_TIMEOUT_MS = 60_000

# Streamlit's frontend, opened at a deep link such as /model_explorer, first looks for its
# server under the page's path (GET /model_explorer/_stcore/health and .../host-config), gets
# 404s, which Chromium logs as console errors "Failed to load resource: ... 404", and then
# falls back to the root. That is Streamlit's own start-up, not the app's. We forgive exactly
# those two probes: a 404 *response* (seen via the "response" event) on one of these two
# paths below a page path, and the console line Chromium logs for that very URL. The root's
# own /_stcore/health or /_stcore/host-config failing, or any other 404, stays an error.
STREAMLIT_PROBE_PATH = re.compile(r"^/[^?#]+/_stcore/(?:health|host-config)$")
FAILED_RESOURCE_404 = "Failed to load resource: the server responded with a status of 404"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"e2e_report_{report.when}", report)
    return report


# --- the server and the browser: the same helpers the benchmarks use ------------------------------


@pytest.fixture(scope="session")
def streamlit_server() -> Iterator[str]:
    """Start the app with ``streamlit run`` and yield its base URL, e.g. ``http://127.0.0.1:53421``."""
    app = Path(os.environ.get("ATTNVIZ_E2E_APP", "app.py"))
    app_path = app if app.is_absolute() else REPO_ROOT / app
    if not app_path.is_file():
        pytest.fail(f"e2e: app script {app_path} not found (set ATTNVIZ_E2E_APP to choose another)")
    with live_app.streamlit_server(app_path) as server:
        yield server.url


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium, driven through Playwright's driver (no downloaded browser)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"{CHROMIUM} is missing; install it with: {APT_COMMAND} (or run `make setup-dev` as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with live_app.chromium() as chromium:
        yield chromium


@dataclass
class ConsoleError:
    """A console error or uncaught page error; ``url`` is the resource a load error is about."""

    kind: str  # "console" or "page error"
    text: str
    url: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = f" ({self.url}:{self.line})" if self.url else ""
        return f"{self.kind}: {self.text}{where}"


@dataclass
class BrowserPage:
    """A page (in its own browser context) plus what it did that a test must not allow by accident."""

    page: object  # playwright.sync_api.Page; imported lazily so collection works without it
    context: object  # playwright.sync_api.BrowserContext
    external_requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    console: list[ConsoleError] = field(default_factory=list)
    # URLs of Streamlit's deep-link probes that the server answered with 404 (see STREAMLIT_PROBE_PATH).
    probe_404s: set[str] = field(default_factory=set)

    @property
    def console_errors(self) -> list[str]:
        """Console and page errors, without the console lines of Streamlit's deep-link probes."""
        return [str(error) for error in self.console if not self._is_probe_404(error)]

    def _is_probe_404(self, error: ConsoleError) -> bool:
        # Both must hold: the line is Chromium's 404 message, and its URL got a probe's 404 response.
        return (
            error.kind == "console"
            and error.text.startswith(FAILED_RESOURCE_404)
            and error.url in self.probe_404s
        )

    def problems(self) -> list[str]:
        """Everything this page did that no test allows, one message per kind; empty if clean."""
        found = []
        if self.external_requests:
            found.append(
                "requests to hosts other than the app's own server:\n  " + "\n  ".join(self.external_requests)
            )
        if self.failed_requests:
            found.append("failed requests to the app's server:\n  " + "\n  ".join(self.failed_requests))
        if self.dialogs:
            found.append("JavaScript dialogs opened (injected script ran?):\n  " + "\n  ".join(self.dialogs))
        if self.console_errors:
            found.append("browser console errors:\n  " + "\n  ".join(self.console_errors))
        return found


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return parts.hostname not in LOCAL_HOSTS


def _watch(page, seen: BrowserPage) -> None:
    """Record what one page of a watched context does (events that exist per page only)."""

    def on_websocket(websocket) -> None:
        if _is_external(websocket.url):
            seen.external_requests.append(f"WEBSOCKET {websocket.url}")

    def on_console(message) -> None:
        if message.type == "error":
            location = message.location or {}
            seen.console.append(
                ConsoleError("console", message.text, location.get("url") or "", location.get("lineNumber"))
            )

    def on_page_error(error) -> None:
        seen.console.append(ConsoleError("page error", str(error)))

    def on_dialog(dialog) -> None:
        seen.dialogs.append(f"{dialog.type}: {dialog.message!r} on {page.url}")
        dialog.dismiss()  # a handled dialog must be closed, or the page would hang on it

    page.on("websocket", on_websocket)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("dialog", on_dialog)


def _open_context(browser) -> BrowserPage:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    seen = BrowserPage(page=None, context=context)

    def on_request(request) -> None:
        if _is_external(request.url):
            seen.external_requests.append(f"{request.method} {request.url}")

    def on_request_failed(request) -> None:
        failure = f"{request.method} {request.url}: {request.failure}"
        if _is_external(request.url):
            # Usually already recorded as a request; a failure is listed too, so none slips by.
            if not any(request.url in line for line in seen.external_requests):
                seen.external_requests.append(f"FAILED {failure}")
        else:
            seen.failed_requests.append(failure)

    def on_response(response) -> None:
        parts = urlsplit(response.url)
        if (
            response.status == 404
            and parts.hostname in LOCAL_HOSTS
            and STREAMLIT_PROBE_PATH.match(parts.path)
        ):
            seen.probe_404s.add(response.url)

    # Context events cover every page of the context (popups too) and its workers.
    context.on("request", on_request)
    context.on("requestfailed", on_request_failed)
    context.on("response", on_response)
    context.on("page", lambda page: _watch(page, seen))
    # Nothing may leave the machine, even when a test provokes a leak: record it, then abort it.
    context.route(EXTERNAL_HTTP, lambda route: route.abort("blockedbyclient"))

    # A routed websocket fires no "websocket" event on the page, so it is recorded here.
    def refuse_websocket(socket) -> None:
        seen.external_requests.append(f"WEBSOCKET {socket.url}")
        socket.close()

    context.route_web_socket(EXTERNAL_WS, refuse_websocket)
    seen.page = context.new_page()
    return seen


@pytest.fixture
def open_browser_page(browser, request: pytest.FixtureRequest) -> Iterator[Callable[[], BrowserPage]]:
    """A factory for watched pages, each in a new browser context; all are checked at teardown."""
    opened: list[BrowserPage] = []

    def open_page() -> BrowserPage:
        opened.append(_open_context(browser))
        return opened[-1]

    yield open_page

    # Snapshot before closing: closing the page drops the websocket, which is not the test's fault.
    problems = [problem for seen in opened for problem in seen.problems()]
    call = getattr(request.node, "e2e_report_call", None)
    if call is None or call.failed or problems:
        for index, seen in enumerate(opened):
            try:
                screenshot(seen.page, f"{request.node.name}-{index}")
            except Exception as error:  # a screenshot is a courtesy; never hide the real failure
                print(f"e2e: no screenshot of page {index}: {error}")
    for seen in opened:
        seen.context.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def browser_page(open_browser_page) -> BrowserPage:
    return open_browser_page()


@pytest.fixture
def page(browser_page: BrowserPage):
    return browser_page.page


# --- helpers -------------------------------------------------------------------------------------

_APP_IDLE_JS = """
(plots) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const idle = app !== null
        && app.dataset.testConnectionState === "CONNECTED"
        && app.dataset.testScriptState === "notRunning"
        && document.querySelector('[data-stale="true"]') === null
        && document.querySelector('[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]') === null;
    // A run that ended in an exception draws no more charts: stop waiting and report it.
    return idle && (document.querySelectorAll(".js-plotly-plot").length >= plots
                    || document.querySelector('[data-testid="stException"]') !== null);
}
"""


def wait_for_app(page, plots: int = 0, *, allow_exception: bool = False, timeout_ms: int = APP_TIMEOUT_MS):
    """Wait until the app is connected, its script has finished, and ``plots`` Plotly charts exist.

    Streamlit marks its state on the root element: ``data-test-connection-state`` is
    "CONNECTED" once the websocket is up, and ``data-test-script-state`` goes
    "initial" -> "running" -> "notRunning" ("rerunRequested" right after a widget changes).
    Elements left from the previous run carry ``data-stale="true"`` until the run replaces them.
    "notRunning" does not mean painted: an element whose JavaScript chunk is still loading
    (charts, most widgets) shows a ``stSkeleton`` placeholder, so we also wait for those to go.

    Args:
        page: a Playwright page that has loaded the app.
        plots: how many ``.js-plotly-plot`` charts must be drawn at least.
        allow_exception: if False, an uncaught exception shown by the app fails the test.
        timeout_ms: how long to wait in all.
    """
    # A click returns before React renders the "rerunRequested" state; give that a moment to
    # show, or the previous run's "notRunning" would pass the check at once.
    page.wait_for_timeout(200)
    page.wait_for_function(_APP_IDLE_JS, arg=plots, timeout=timeout_ms, polling=100)
    if not allow_exception:
        exceptions = page.locator('[data-testid="stException"]')
        if exceptions.count():
            pytest.fail("the app shows an exception:\n" + "\n---\n".join(exceptions.all_inner_texts()))


# Reads the chart drawn for the Streamlit element with key KEY (its container has the class
# st-key-KEY). Plotly keeps the figure on the div: el.data (traces) and el.layout. Streamlit
# sends numpy arrays in plotly's binary form, {dtype: "f4", bdata: <base64>, shape: "6, 6"},
# which we decode here ourselves, so the numbers are exactly what the server sent; plain
# nested arrays and typed-array rows are read as they are. NaN (a blank cell) becomes null.
# Shared by the figure readers below: ``matrix(z)`` turns a trace's z (or customdata) into rows,
# decoding plotly's binary form {dtype, bdata, shape}; NaN (a blank cell) becomes null.
_DECODE_MATRIX_JS = """
    const types = {f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array,
                   i2: Int16Array, u2: Uint16Array, i4: Int32Array, u4: Uint32Array};
    const clean = (v) => (typeof v === "number" && !Number.isNaN(v) ? v : null);
    const matrix = (z) => {
        if (z === undefined || z === null) return null;
        if (typeof z.bdata === "string") {
            const bytes = Uint8Array.from(atob(z.bdata), (c) => c.charCodeAt(0));
            const flat = Array.from(new types[z.dtype](bytes.buffer), clean);
            const shape = String(z.shape).split(",").map(Number);
            const width = shape.length > 1 ? shape[1] : flat.length;
            const rows = [];
            for (let i = 0; i < flat.length; i += width) rows.push(flat.slice(i, i + width));
            return rows;
        }
        return Array.from(z, (row) => Array.from(row, clean));
    };
"""


_READ_PLOT_JS = (
    """
(key) => {
    const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (el === null || !Array.isArray(el.data) || el.data.length === 0) return null;
"""
    + _DECODE_MATRIX_JS
    + """    // Subplots draw their x tick labels in groups classed xtick, x2tick, x3tick...: take the
    // first x axis that shows any (in a grid of heads only the bottom row has them).
    const drawn = {};
    for (const t of el.querySelectorAll("g[class] > text")) {
        const match = /^x(\\d*)tick$/.exec(t.parentNode.getAttribute("class"));
        if (match) (drawn[Number(match[1] || 1)] ??= []).push(t.textContent);
    }
    const firstDrawn = Object.keys(drawn).map(Number).sort((a, b) => a - b)[0];
    const rendered = firstDrawn === undefined ? [] : drawn[firstDrawn];
    const axis = el.layout.xaxis || {};
    const ticktext = Array.isArray(axis.ticktext) ? axis.ticktext.map(String) : [];
    // Plotly labels are pseudo-HTML: what a label shows is its text with entities decoded.
    const entities = {"&lt;": "<", "&gt;": ">", "&amp;": "&", "&quot;": '"', "&#39;": "'"};
    const shows = (label) => label.replace(/&(?:lt|gt|amp|quot|#39);/g, (e) => entities[e]);
    return {
        z: el.data.map((trace) => matrix(trace.z)),
        names: el.data.map((trace) => trace.name || ""),
        ticktext: ticktext,
        rendered_ticks: rendered,
        drawn: JSON.stringify(rendered) === JSON.stringify(ticktext.map(shows)),
    };
}
"""
)


@dataclass(frozen=True)
class Plot:
    """One chart's figure data as the browser holds it.

    Attributes:
        z: per trace, the rows of its ``z`` matrix (``None`` for NaN, i.e. a blank cell).
        names: per trace, its name ("masked" for the grey overlay of masked cells).
        ticktext: the first x axis's tick labels, as sent (plotly pseudo-HTML, e.g. ``&lt;``).
        rendered_ticks: the x tick labels drawn in the SVG, as a person reads them (first x axis
            that shows labels).
        drawn: the SVG already shows ``ticktext`` (Plotly draws a moment after taking new data).
    """

    z: list
    names: list
    ticktext: list
    rendered_ticks: list
    drawn: bool

    @property
    def rows(self) -> int:
        return len(self.z[0])

    @property
    def matrix(self) -> list[list[float | None]]:
        """The first panel's cells as a person reads them: the value of every allowed cell, 0 for a
        masked (grey) cell (its weight is exactly 0), None for a blank (not yet revealed) cell.

        A heatmap splits its cells over traces named "values", "padding query", "masked" and
        "padding row" (see attention_viz.figures); the first panel's traces come first.
        """
        cells = None
        for index, (name, z) in enumerate(zip(self.names, self.z, strict=True)):
            if index and name == "values":
                break  # the next panel
            if cells is None:
                cells = [[None] * len(row) for row in z]
            for r, row in enumerate(z):
                for c, value in enumerate(row):
                    if value is not None:
                        cells[r][c] = 0.0 if name in ("masked", "padding row") else value
        return cells


def read_plot(page, key: str) -> Plot | None:
    """The figure data of the Plotly chart of the Streamlit element with ``key``, or None."""
    data = page.evaluate(_READ_PLOT_JS, key)
    return Plot(**data) if data else None


def wait_for_plot(page, key: str, condition: str, arg=None, timeout_ms: int = APP_TIMEOUT_MS) -> Plot:
    """Wait until chart ``key`` exists and the JavaScript ``condition`` holds, then until the
    script run has finished; return the chart's data.

    ``condition`` is an expression over ``plot`` (the object ``read_plot`` returns, snake_case
    fields) and ``arg``, e.g. ``"plot.ticktext.length === arg"``.
    """
    handle = page.wait_for_function(
        f"""([key, arg]) => {{
            const plot = ({_READ_PLOT_JS})(key);
            return plot !== null && ({condition}) && plot;
        }}""",
        arg=[key, arg],
        timeout=timeout_ms,
        polling=100,
    )
    plot = Plot(**handle.json_value())
    # The chart can change mid-run; wait for the run to end, so every other chart is fresh too.
    page.wait_for_function(_APP_IDLE_JS, arg=0, timeout=timeout_ms, polling=100)
    return plot


def wait_for_plot_change(page, key: str, before: Plot | None, timeout_ms: int = APP_TIMEOUT_MS) -> Plot:
    """Wait until chart ``key`` holds other values or tick labels than ``before``; return the new data."""
    old = None if before is None else [before.z, before.ticktext]
    same = "JSON.stringify([plot.z, plot.ticktext]) !== JSON.stringify(arg)"
    return wait_for_plot(page, key, same, old, timeout_ms)


def upper_triangle(matrix: list[list[float | None]]) -> list[float | None]:
    """The cells above the diagonal (key after query): what a causal mask hides."""
    return [value for row, values in enumerate(matrix) for value in values[row + 1 :]]


def switch(page, label: str):
    """The toggle with this exact label (its input has role "switch")."""
    return page.get_by_role("switch", name=label, exact=True)


def click_toggle(page, label: str) -> None:
    """Click the visible switch track of the toggle labelled ``label``, as a person would.

    The real ``<input role="switch">`` is visually hidden; the track is the first ``div`` in the
    toggle's ``<label>``, left of the label text.
    """
    toggle = page.get_by_test_id("stCheckbox").filter(has=switch(page, label))
    track = toggle.locator("label > div").first
    track.click()


def type_into_text_area(page, label: str, text: str) -> None:
    """Replace a text area's content by typing, then apply it with Ctrl+Enter like a person."""
    box = page.get_by_role("textbox", name=label)
    box.click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(text)
    page.keyboard.press("ControlOrMeta+Enter")


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot to tests/e2e/artifacts/NAME.png and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:120]}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# --- pictures: hovering a cell, reading a cell's true value, tick labels that overlap --------------

# Centre of cell (query, key) of subplot PANEL, in viewport pixels, after scrolling it into view.
# Heatmap axes are category axes: category i sits at linear coordinate i, so the axis's own
# l2p() gives the pixel inside the plot area and _offset places the plot area in the SVG. A
# reversed y axis (queries top to bottom) is handled by l2p itself.
_CELL_CENTRE_JS = """
([key, panel, query, keyIndex]) => {
    const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (el === null || !el._fullLayout) return null;
    const suffix = panel === 1 ? "" : String(panel);
    const xa = el._fullLayout[`xaxis${suffix}`], ya = el._fullLayout[`yaxis${suffix}`];
    if (!xa || !ya) return null;
    const drag = el.querySelector(`.nsewdrag[data-subplot="x${suffix}y${suffix}"]`);
    (drag || el).scrollIntoView({block: "center", inline: "nearest"});
    const svg = el.querySelector(".main-svg").getBoundingClientRect();
    return {x: svg.left + xa._offset + xa.l2p(keyIndex), y: svg.top + ya._offset + ya.l2p(query)};
}
"""

# The lines of the hover label now shown in chart KEY (plotly writes one tspan.line per line).
_HOVER_LINES_JS = """
(key) => {
    const labels = document.querySelectorAll(`.st-key-${key} .js-plotly-plot .hoverlayer .hovertext`);
    if (labels.length !== 1) return null;
    const lines = Array.from(labels[0].querySelectorAll("text tspan.line"), (t) => t.textContent);
    return lines.length ? lines : [labels[0].querySelector("text").textContent];
}
"""


def hover_cell(page, key: str, query: int, key_index: int, panel: int = 1) -> str:
    """Move the mouse over the centre of cell (query row, key column) of chart ``key`` and return
    the tooltip, its lines joined with newlines.

    ``panel`` is the one-based subplot (axes ``x{panel}``/``y{panel}``). The mouse first leaves
    the chart and the old label must go, so the text returned is this cell's own.
    """
    page.mouse.move(1, 1)
    page.wait_for_function(
        "(key) => document.querySelector(`.st-key-${key} .hoverlayer .hovertext`) === null", arg=key
    )
    centre = page.evaluate(_CELL_CENTRE_JS, [key, panel, query, key_index])
    assert centre is not None, f"chart {key} has no subplot {panel}"
    viewport = page.viewport_size
    assert 0 <= centre["x"] < viewport["width"] and 0 <= centre["y"] < viewport["height"], (
        f"cell ({query}, {key_index}) of {key} panel {panel} is off screen at {centre}"
    )
    # Two steps: plotly hovers on mousemove over its drag layer, not on a jump alone.
    page.mouse.move(centre["x"] - 1, centre["y"] - 1)
    page.mouse.move(centre["x"], centre["y"], steps=2)
    handle = page.wait_for_function(_HOVER_LINES_JS, arg=key, timeout=10_000, polling=50)
    return "\n".join(handle.json_value())


# Per trace of chart KEY: its name, its subplot number and the matrix that holds its true values
# (customdata when a per-row or log colour scale is used, else z), decoded like _READ_PLOT_JS.
_TRACE_VALUES_JS = (
    """
(key) => {
    const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (el === null || !Array.isArray(el.data)) return null;
"""
    + _DECODE_MATRIX_JS
    + """    return el.data.map((trace) => ({
        name: trace.name || "",
        panel: Number(String(trace.xaxis || "x").slice(1) || 1),
        values: matrix(trace.customdata !== undefined ? trace.customdata : trace.z),
    }));
}
"""
)


def trace_values(page, key: str, name: str, panel: int = 1) -> list[list[float | None]] | None:
    """The true values of the trace called ``name`` in subplot ``panel`` of chart ``key``
    (None for a cell the trace does not hold), or None if there is no such trace."""
    traces = page.evaluate(_TRACE_VALUES_JS, key) or []
    found = [t["values"] for t in traces if t["name"] == name and t["panel"] == panel]
    assert len(found) <= 1, f"chart {key} panel {panel} has {len(found)} traces called {name!r}"
    return found[0] if found else None


def cell_value(page, key: str, name: str, query: int, key_index: int, panel: int = 1) -> float | None:
    """The true value the browser holds for one cell in trace ``name`` (None: not in that trace)."""
    values = trace_values(page, key, name, panel)
    return None if values is None else values[query][key_index]


def fixed4(value: float) -> str:
    """``value`` as plotly's ``%{z:.4f}`` shows it: JavaScript's toFixed(4), i.e. the exact binary
    value rounded half away from zero, and no "-0.0000"."""
    from decimal import ROUND_HALF_UP, Decimal

    text = str(Decimal(value).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP))
    return "0.0000" if text == "-0.0000" else text


# Bounding boxes (viewport px) of every visible tick label, per axis (xtick, x2tick, ytick...).
_TICK_BOXES_JS = """
(key) => {
    const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (el === null) return null;
    const axes = {};
    for (const text of el.querySelectorAll("g[class] > text")) {
        const group = text.parentNode.getAttribute("class");
        if (!/^[xy]\\d*tick$/.test(group)) continue;  // colour bars have their own "y<id>tick"
        const style = getComputedStyle(text);
        if (style.display === "none" || style.visibility === "hidden" || Number(style.opacity) === 0) continue;
        if (text.textContent.trim() === "") continue;
        const box = text.getBoundingClientRect();
        if (box.width === 0 || box.height === 0) continue;
        (axes[group] ??= []).push({text: text.textContent, left: box.left, right: box.right,
                                   top: box.top, bottom: box.bottom});
    }
    return axes;
}
"""


def overlapping_tick_labels(page, key: str, allowance_px: float = 0.5) -> list[str]:
    """Pairs of tick labels of the same axis of chart ``key`` whose boxes intersect by more
    than ``allowance_px`` in both directions; empty if none do."""
    axes = page.evaluate(_TICK_BOXES_JS, key)
    assert axes is not None, f"no chart {key}"
    found = []
    for axis, boxes in sorted(axes.items()):
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                across = min(a["right"], b["right"]) - max(a["left"], b["left"])
                down = min(a["bottom"], b["bottom"]) - max(a["top"], b["top"])
                if across > allowance_px and down > allowance_px:
                    found.append(
                        f"{key} {axis}: {a['text']!r} and {b['text']!r} overlap by {across:.1f}×{down:.1f} px"
                    )
    return found


_CLIPPED_LABELS_JS = """
([key, allowance]) => {
    const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
    if (el === null) return null;
    const frame = el.querySelector("svg.main-svg").getBoundingClientRect();
    const clipped = [];
    for (const text of el.querySelectorAll("g[class] > text")) {
        const group = text.parentNode.getAttribute("class");
        // Tick labels ("x2tick") and axis titles ("g-x3title"); colour bars have their own ticks.
        if (!/^[xy]\\d*tick$|^g-[xy]\\d*title$/.test(group)) continue;
        if (text.textContent.trim() === "") continue;
        const box = text.getBoundingClientRect();
        if (box.width === 0 || box.height === 0) continue;
        const out = Math.max(frame.left - box.left, box.right - frame.right, frame.top - box.top,
                             box.bottom - frame.bottom);
        if (out > allowance) clipped.push(`${group} ${JSON.stringify(text.textContent)} by ${out.toFixed(1)} px`);
    }
    return clipped;
}
"""


def clipped_labels(page, key: str, allowance_px: float = 4.0) -> list[str]:
    """Tick labels and axis titles of chart ``key`` that reach past the edge of its figure by more
    than ``allowance_px`` (the figures size their own margins: nothing may be cut off; a text's box
    holds its line's leading, a few px of blank below the letters); empty if none do."""
    clipped = page.evaluate(_CLIPPED_LABELS_JS, [key, allowance_px])
    assert clipped is not None, f"no chart {key}"
    return [f"{key}: {label} is cut off" for label in clipped]


def chart_keys(page) -> list[str]:
    """The keys of every drawn Plotly chart on the page (its Streamlit element's ``st-key-``)."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('[class*="st-key-"] .js-plotly-plot'), (el) => {
            const holder = el.closest('[class*="st-key-"]');
            const name = Array.from(holder.classList).find((c) => c.startsWith("st-key-"));
            return name.slice("st-key-".length);
        })"""
    )


def resize(page, width: int, height: int, plots: int = 0, timeout_ms: int = APP_TIMEOUT_MS) -> None:
    """Resize the viewport and wait for the rerun the page's width probe asks for."""
    page.set_viewport_size({"width": width, "height": height})
    # The probe measures 200 ms after the resize settles, then the script reruns.
    page.wait_for_timeout(1500)
    wait_for_app(page, plots=plots, timeout_ms=timeout_ms)
