"""Fixtures for end-to-end tests that drive the real app in headless Chromium.

Every test in tests/e2e is marked ``e2e``; ``pytest -m "not e2e"`` leaves them out.

Fixtures:
    streamlit_server  (session) ``streamlit run`` on a free port on 127.0.0.1; yields the base URL.
                      The script is ``$ATTNVIZ_E2E_APP`` (default ``app.py``), relative to the repo
                      root, where the server always starts so that .streamlit/config.toml applies.
    browser           (session) Debian's /usr/bin/chromium driven by Playwright. If it is missing,
                      the tests are skipped, or fail when CI=true.
    browser_page      (function) a ``BrowserPage``: a fresh 1400x1000 page, plus the lists
                      ``external_requests`` (requests to any host but 127.0.0.1/localhost) and
                      ``console_errors`` (console errors and uncaught page errors). At teardown
                      both lists must be empty, or the test errors. A test that provokes an error
                      on purpose checks it and then clears the list.
    page              (function) ``browser_page.page``, for tests that only need the page.

Helper:
    wait_for_app(page, plots=0)  waits until Streamlit has connected and finished running the
                      script, and until at least ``plots`` Plotly charts are drawn. Call it after
                      ``page.goto`` and after every interaction that reruns the script.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
APT_COMMAND = (
    "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
    "--no-install-recommends chromium fonts-liberation fonts-dejavu-core fonts-noto-color-emoji libatomic1"
)
# The browser flags keep Chromium from calling Google's services at start-up: on a
# machine with no outside network those calls fail noisily instead.
CHROMIUM_ARGS = [
    "--no-sandbox",  # we run as root in CI, where the sandbox refuses to start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
LOCAL_SCHEMES = {"data", "blob", "about"}
SERVER_START_TIMEOUT_S = 60.0
APP_TIMEOUT_MS = 60_000


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


# --- the server ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def streamlit_server() -> Iterator[str]:
    """Start the app with ``streamlit run`` and yield its base URL, e.g. ``http://127.0.0.1:53421``."""
    app = Path(os.environ.get("ATTNVIZ_E2E_APP", "app.py"))
    app_path = app if app.is_absolute() else REPO_ROOT / app
    if not app_path.is_file():
        pytest.fail(f"e2e: app script {app_path} not found (set ATTNVIZ_E2E_APP to choose another)")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # stdout and stderr go to a file: a pipe nobody reads would fill up and stall the server.
    log = tempfile.NamedTemporaryFile(prefix="attnviz-e2e-server-", suffix=".log", delete=False)
    command = [
        sys.executable, "-m", "streamlit", "run", str(app_path),
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)

    def server_output() -> str:
        return Path(log.name).read_text(errors="replace")[-5000:]

    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not _healthy(url):
        if process.poll() is not None:
            pytest.fail(f"e2e: streamlit exited with code {process.returncode}:\n{server_output()}")
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            waited = f"{SERVER_START_TIMEOUT_S:.0f} s"
            pytest.fail(f"e2e: streamlit not healthy after {waited}:\n{server_output()}")
        time.sleep(0.2)

    yield url

    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()
    os.unlink(log.name)


# --- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium, driven through Playwright's driver (no downloaded browser)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"{CHROMIUM} is missing; install it with: {APT_COMMAND} (or run `make setup-dev` as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class BrowserPage:
    """A page plus what it did that a test must not allow by accident."""

    page: object  # playwright.sync_api.Page; imported lazily so collection works without it
    external_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return False
    return parts.hostname not in LOCAL_HOSTS


@pytest.fixture
def browser_page(browser) -> Iterator[BrowserPage]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    seen = BrowserPage(page=page)

    def on_request(request) -> None:
        if _is_external(request.url):
            seen.external_requests.append(f"{request.method} {request.url}")

    def on_websocket(websocket) -> None:
        if _is_external(websocket.url):
            seen.external_requests.append(f"WEBSOCKET {websocket.url}")

    def on_console(message) -> None:
        if message.type == "error":
            location = message.location or {}
            where = f" ({location.get('url')}:{location.get('lineNumber')})" if location.get("url") else ""
            seen.console_errors.append(f"console: {message.text}{where}")

    def on_page_error(error) -> None:
        seen.console_errors.append(f"page error: {error}")

    page.on("request", on_request)
    page.on("websocket", on_websocket)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)

    yield seen

    # Snapshot before closing: closing the page drops the websocket, which is not the test's fault.
    external, errors = list(seen.external_requests), list(seen.console_errors)
    context.close()
    problems = []
    if external:
        problems.append("requests to hosts other than the app's own server:\n  " + "\n  ".join(external))
    if errors:
        problems.append("browser console errors:\n  " + "\n  ".join(errors))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def page(browser_page: BrowserPage):
    return browser_page.page


# --- helpers -------------------------------------------------------------------------------------

_APP_IDLE_JS = """
(plots) => {
    const app = document.querySelector('[data-testid="stApp"]');
    return app !== null
        && app.dataset.testConnectionState === "CONNECTED"
        && app.dataset.testScriptState === "notRunning"
        && document.querySelector('[data-stale="true"]') === null
        && document.querySelector('[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]') === null
        && document.querySelectorAll(".js-plotly-plot").length >= plots;
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


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot to tests/e2e/artifacts/NAME.png and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
