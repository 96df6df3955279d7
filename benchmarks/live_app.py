"""The real app in a real browser, for the benchmarks that time it: a server, Chromium, page clocks.

* :func:`streamlit_server` runs ``streamlit run`` on a free localhost port and stops it afterwards.
* :func:`chromium` drives Debian's ``/usr/bin/chromium`` through Playwright, headless.
* :func:`open_page` opens a page whose websocket bytes are counted (Playwright's
  ``framereceived``) and that records, in the page's own clock (``performance.now()``, ms):
  every websocket message received, every click, every change of Streamlit's script state, and
  every time plotly finishes drawing a chart (its ``plotly_afterplot`` event) with a signature of
  the chart's data. Timing inside the page leaves out Playwright's own round trips.
* :class:`TreeLoad` measures how many cores processes *outside* this benchmark (this process,
  the server and the browser) kept busy: on a shared machine that is what makes a run slow.

The shared texts (:data:`PARAGRAPHS`) are plain English, so tokenisers see ordinary words.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

__all__ = [
    "CHROMIUM",
    "PARAGRAPHS",
    "REPO_ROOT",
    "Server",
    "TreeLoad",
    "WatchedPage",
    "chromium",
    "click_toggle",
    "english_text",
    "load_average",
    "open_page",
    "streamlit_server",
    "wait_for_redraw",
    "wait_idle",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# The same flags as the browser tests: no calls to Google's services from a machine without them.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
VIEWPORT = {"width": 1400, "height": 1000}  # as in tests/e2e
SERVER_START_TIMEOUT_S = 120.0
HEALTH_POLL_S = 0.05
LOCAL_PREFIXES = ("http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "about:")

PARAGRAPHS = (
    "Attention lets every token of a sentence look at the other tokens and decide which of them "
    "matter for its own meaning. A query asks a question, every key offers an answer, and the "
    "dot product of the two says how well they fit. After scaling and a softmax, each query row "
    "becomes a set of weights that sum to one, and the output of the head is the weighted "
    "average of the values.",
    "A causal language model may only look back, never ahead, so the mask it applies is a lower "
    "triangle. Without that mask the model would read the very word it is asked to predict, and "
    "training would teach it nothing useful. Switching the mask off at inference time shows how "
    "much the model has come to rely on it: predictions change, sometimes a little, sometimes "
    "completely.",
    "Padding adds another rule. When sentences of different lengths share a batch, the short "
    "ones are filled with pad tokens, and nobody may attend to a pad. A forgotten attention mask "
    "lets real words spread their weight over padding, and the outputs drift for no visible "
    "reason. Whether the pads go on the left or on the right matters as well, because positions "
    "are counted from the first real token.",
    "Many heads run side by side, each with its own projections. Some look at the previous "
    "token, some at the first token of the text, some at the same word seen earlier, and many "
    "spread their attention thinly over everything. Looking at all of them at once, layer by "
    "layer, is the quickest way to build an intuition for what a trained transformer does with "
    "its context.",
    "Long inputs make the picture larger but not different in kind. The weight matrix of one "
    "head grows with the square of the length, so two thousand tokens give four million numbers "
    "per head. Drawing them as an image keeps the browser responsive, and pooling blocks of "
    "cells keeps the strongest weights visible when the screen has fewer pixels than the matrix "
    "has rows.",
    "A sliding window is a third kind of mask. Each token then sees only its nearest neighbours, "
    "which keeps the cost linear in the length and still lets information travel far across "
    "several layers. Combining the window with the causal mask gives a band below the diagonal; "
    "combining it with padding removes the pad columns from that band as well.",
)


def english_text(min_chars: int, prefix: str = "", max_chars: int | None = None) -> str:
    """At least ``min_chars`` of plain English (the paragraphs, repeated), cut at a word boundary.

    ``prefix`` starts the text, so that one benchmark run does not hit the app's result cache of
    another. ``max_chars`` caps the length (e.g. to fit the app's URL limit).
    """
    text = prefix
    index = 0
    while len(text) < min_chars:
        text += (" " if text else "") + PARAGRAPHS[index % len(PARAGRAPHS)]
        index += 1
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars].rsplit(" ", 1)[0]
    return text


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"0.52, 0.80, 1.10"``."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200 and response.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Server:
    """A running ``streamlit run``: its URL, process, and when it was spawned and became healthy."""

    url: str
    process: subprocess.Popen
    log: Path
    spawned: float  # time.time() just before the process was spawned
    healthy: float  # time.time() of the first successful health check

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]


@contextmanager
def streamlit_server(
    script: str | Path = "app.py", env: dict[str, str] | None = None, cwd: Path = REPO_ROOT
) -> Iterator[Server]:
    """Run ``streamlit run SCRIPT`` on a free port of 127.0.0.1 until the block ends.

    The server starts in ``cwd`` (the repo root by default, so .streamlit/config.toml applies)
    with the flags the browser tests use. ``env`` is added to this process's environment.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="attnviz-bench-server-", suffix=".log")[1])
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    # The same allocator setting as `make app` (see attention_viz/settings.py): freed tensors go
    # back to the system, so measured memory is what a served class really costs.
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MALLOC_MMAP_THRESHOLD_": "1048576",
        **(env or {}),
    }
    with log.open("wb") as sink:
        spawned = time.time()
        # stdout goes to a file: a pipe nobody reads would fill up and stall the server.
        process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit not healthy after {SERVER_START_TIMEOUT_S:.0f} s")
            time.sleep(HEALTH_POLL_S)
        yield Server(url, process, log, spawned, time.time())
    except BaseException:
        sys.stderr.write(f"streamlit server output (end):\n{log.read_text(errors='replace')[-5000:]}\n")
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink(missing_ok=True)


@contextmanager
def chromium():
    """Headless Debian Chromium through Playwright's driver (never a downloaded browser)."""
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: install it with `make setup-dev` (as root).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# Runs in every page before the app's own scripts. Everything it records is in the page's clock.
INSTRUMENT_JS = r"""
(() => {
    const bench = (window.__bench = {frames: [], sent: [], clicks: [], states: [], afterplot: []});
    const now = () => performance.now();

    // Plotly data can be megabytes of base64; a strided FNV-1a hash tells old data from new.
    const hashString = (text) => {
        let hash = 2166136261;
        const step = Math.max(1, Math.floor(text.length / 65536));
        for (let i = 0; i < text.length; i += step) {
            hash = Math.imul(hash ^ text.charCodeAt(i), 16777619);
        }
        return `${text.length}:${(hash >>> 0).toString(16)}`;
    };
    const traceSignature = (trace) => {
        if (!trace) return "";
        if (typeof trace.source === "string") return "s" + hashString(trace.source);
        const z = trace.z;
        if (z && typeof z.bdata === "string") return "b" + hashString(z.bdata);
        if (z && typeof z.length === "number") {
            return "z" + hashString(Array.from(z, (row) => Array.from(row ?? [], String).join(",")).join(";"));
        }
        return "";
    };
    const signature = (el) => (Array.isArray(el.data) ? el.data.map(traceSignature).join("|") : "");
    const keyOf = (el) => {
        const holder = el.closest('[class*="st-key-"]');
        if (!holder) return "";
        const name = Array.from(holder.classList).find((c) => c.startsWith("st-key-"));
        return name ? name.slice("st-key-".length) : "";
    };
    bench.signatures = (keys) => Object.fromEntries(keys.map((key) => {
        const el = document.querySelector(`.st-key-${key} .js-plotly-plot`);
        return [key, el ? signature(el) : null];
    }));

    // The top-level fields of a protobuf message, as [number, varint value or length] pairs.
    const topFields = (buffer) => {
        const bytes = new Uint8Array(buffer);
        const found = [];
        let i = 0;
        const varint = () => {
            let value = 0;
            let scale = 1;
            let byte;
            do {
                byte = bytes[i++];
                value += (byte & 0x7f) * scale;
                scale *= 128;
            } while (byte & 0x80 && i < bytes.length);
            return value;
        };
        while (i < bytes.length) {
            const tag = varint();
            const wire = tag % 8;
            if (wire === 0) found.push([Math.floor(tag / 8), varint()]);
            else if (wire === 2) {
                const length = varint();
                found.push([Math.floor(tag / 8), length]);
                i += length;
            } else if (wire === 1) i += 8;
            else if (wire === 5) i += 4;
            else break;
        }
        return found;
    };
    // ForwardMsg field 6 is script_finished: 0 = finished successfully, 1 = compile error,
    // 2 = stopped early for a rerun, 3 = fragment run finished.
    const SCRIPT_FINISHED = 6;

    // Websocket messages: arrival time, size and whether a run finished, before the app sees them.
    const NativeWebSocket = window.WebSocket;
    const sizeOf = (data) => (typeof data === "string" ? data.length : (data.byteLength ?? data.size ?? 0));
    class RecordedWebSocket extends NativeWebSocket {
        constructor(...args) {
            super(...args);
            this.addEventListener("message", (event) => {
                const frame = {t: now(), size: sizeOf(event.data), finished: null};
                if (event.data instanceof ArrayBuffer) {
                    const field = topFields(event.data).find(([number]) => number === SCRIPT_FINISHED);
                    if (field) frame.finished = field[1];
                }
                bench.frames.push(frame);
            });
        }
        send(data) {
            bench.sent.push({t: now(), size: sizeOf(data)});
            return super.send(data);
        }
    }
    window.WebSocket = RecordedWebSocket;

    document.addEventListener("click", () => bench.clicks.push(now()), true);

    // Streamlit marks its script state on the app root: running, notRunning, rerunRequested...
    new MutationObserver((records) => {
        for (const record of records) {
            bench.states.push({t: now(), state: record.target.getAttribute("data-test-script-state")});
        }
    }).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-test-script-state"]});

    // plotly.js gives each chart div its events by assigning `gd.emit = function...`; a setter
    // on the prototype wraps that function, so "plotly_afterplot" (emitted once the plot and
    // its images are drawn) is seen for every chart, however early it fires.
    Object.defineProperty(HTMLElement.prototype, "emit", {
        configurable: true,
        get() { return undefined; },
        set(emit) {
            const el = this;
            Object.defineProperty(el, "emit", {
                configurable: true,
                writable: true,
                value(name, data) {
                    const result = emit.call(this, name, data);
                    if (name === "plotly_afterplot") {
                        bench.afterplot.push({t: now(), key: keyOf(el), sig: signature(el)});
                    }
                    return result;
                },
            });
        },
    });
})();
"""

# True once the app is connected, its script has finished, and nothing is stale or loading.
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


@dataclass
class WatchedPage:
    """A page in its own browser context, with the websocket bytes Playwright saw it receive."""

    page: object  # playwright.sync_api.Page
    context: object  # playwright.sync_api.BrowserContext
    received: list[tuple[float, int]] = field(default_factory=list)  # (time.monotonic(), bytes)
    external: list[str] = field(default_factory=list)  # requests to other hosts: must stay empty

    def bytes_since(self, since: float) -> int:
        return sum(size for at, size in self.received if at >= since)

    def record(self) -> dict:
        """What the page recorded so far (see INSTRUMENT_JS)."""
        return self.page.evaluate(
            "() => JSON.parse(JSON.stringify({frames: __bench.frames, sent: __bench.sent, "
            "clicks: __bench.clicks, states: __bench.states, afterplot: __bench.afterplot, "
            "timeOrigin: performance.timeOrigin}))"
        )

    def signatures(self, keys: list[str]) -> dict[str, str | None]:
        return self.page.evaluate("(keys) => __bench.signatures(keys)", keys)

    def close(self) -> None:
        self.context.close()


def open_page(browser) -> WatchedPage:
    """A fresh context and page: instrumented, websocket bytes counted, requests to other hosts listed."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(INSTRUMENT_JS)
    page = context.new_page()
    watched = WatchedPage(page, context)
    # Requests are only watched, not routed: interception would slow every request we time.
    context.on(
        "request",
        lambda request: (
            None if request.url.startswith(LOCAL_PREFIXES) else watched.external.append(request.url)
        ),
    )

    def on_websocket(websocket) -> None:
        def on_frame(payload) -> None:
            size = len(payload.encode() if isinstance(payload, str) else payload)
            watched.received.append((time.monotonic(), size))

        websocket.on("framereceived", on_frame)

    page.on("websocket", on_websocket)
    return watched


def wait_idle(page, plots: int = 0, timeout_s: float = 120.0) -> None:
    """Wait until the app is connected and idle with at least ``plots`` charts drawn."""
    page.wait_for_timeout(200)  # a click returns before React shows "rerunRequested"
    page.wait_for_function(_APP_IDLE_JS, arg=plots, timeout=timeout_s * 1000, polling=50)
    errors = page.locator('[data-testid="stException"], [data-testid="stAlertContentError"]')
    if errors.count():
        raise RuntimeError("the app shows an error:\n" + "\n---\n".join(errors.all_inner_texts()))


def click_toggle(page, label: str) -> None:
    """Click the visible track of the toggle labelled ``label``, as a person would."""
    switch = page.get_by_role("switch", name=label, exact=True)
    page.get_by_test_id("stCheckbox").filter(has=switch).locator("label > div").first.click()


def wait_for_redraw(
    watched: WatchedPage, keys: list[str], before: dict[str, str | None], timeout_s: float
) -> dict:
    """After a click: wait until every chart in ``keys`` is drawn with new data and the run is over.

    "Over" means the server's ``script_finished`` message has arrived (a run stopped early for
    another rerun does not count) and the app root shows the script state ``notRunning``. The
    state attribute alone cannot time a run: a fast rerun may never show "running" at all.

    Returns milliseconds from the click (page clock): ``charts`` per key (plotly_afterplot with
    data other than ``before``), ``finished`` (the script_finished message arrived), and ``sent``
    (the rerun request left the page).
    """
    handle = watched.page.wait_for_function(
        """([keys, before]) => {
            const b = window.__bench;
            const click = b.clicks.at(-1);
            if (click === undefined) return false;
            const charts = {};
            for (const key of keys) {
                const hit = b.afterplot.find((e) => e.t > click && e.key === key && e.sig !== before[key]);
                if (!hit) return false;
                charts[key] = hit.t - click;
            }
            const done = b.frames.find((f) => f.t > click && f.finished !== null && f.finished !== 2);
            if (!done) return false;
            const app = document.querySelector('[data-testid="stApp"]');
            if (!app || app.dataset.testScriptState !== "notRunning") return false;
            const sent = b.sent.find((s) => s.t >= click);
            return {charts, finished: done.t - click, sent: sent ? sent.t - click : null, status: done.finished};
        }""",
        arg=[keys, before],
        timeout=timeout_s * 1000,
        polling=50,
    )
    return handle.json_value()


def _tree_cpu_seconds(root: psutil.Process) -> dict[int, float]:
    """CPU seconds of ``root`` and every descendant, by pid (processes that vanish are skipped)."""
    seconds = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            seconds[process.pid] = times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return seconds


def _busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + getattr(times, "steal", 0.0)


class TreeLoad:
    """Cores kept busy, on average during a ``with`` block, by processes outside this one's tree.

    All busy CPU time of the machine minus that of this process and its descendants (the
    server and the browser). Approximate: a child that exits during the block takes its CPU
    time along, which then counts as other processes' load.
    """

    def __init__(self) -> None:
        self.cores: float | None = None
        self._root = psutil.Process()

    def __enter__(self) -> TreeLoad:
        self._start = (_busy_cpu_seconds(), _tree_cpu_seconds(self._root), time.perf_counter())
        return self

    def __exit__(self, *exc_info: object) -> None:
        busy_start, tree_start, wall_start = self._start
        tree_end = _tree_cpu_seconds(self._root)
        own = sum(seconds - tree_start.get(pid, 0.0) for pid, seconds in tree_end.items())
        wall = time.perf_counter() - wall_start
        if wall > 0:
            self.cores = max(0.0, _busy_cpu_seconds() - busy_start - own) / wall
