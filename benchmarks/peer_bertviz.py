"""Peer benchmark: bertviz's ``head_view`` against our Model explorer, on the same model, text and N.

bertviz is the usual notebook tool for drawing attention. Both tools run here on the same model
(all-MiniLM-L6-v2 and SmolLM2, the bundled ones), the same English text cut to N tokens (64, 128,
256, 512), in headless Chromium (Debian's, 1400 × 900), median of ``--repeats`` runs. Each run has
its own texts (no cache helps) and measures, for each tool, what a user comparing the two on one
laptop sees per text, and then the cold start once:

* **new text** (the first view of a text, the tool already open): bertviz = what a notebook user
  waits for after running the cell: its Python side (the model's forward with
  ``output_attentions=True``, then ``head_view(..., html_action="return")``) + its page, opened
  as a new page in one browser context per model, made at the model's warm-up and kept for its
  runs (so require.js, d3 and jQuery come from the HTTP cache, as a notebook has them loaded),
  from navigation start until the SVG lines of layer 0 are painted. Ours = one explorer tab per
  model, opened at the warm-up and, before the runs of each N, navigated (untimed, same context,
  so Streamlit's and plotly's JavaScript come from the HTTP cache) to a link with that N and a
  warm-up text; per run the run's text is pasted into the text box (``locator.fill``, untimed)
  and Ctrl+Enter pressed (a Streamlit text_area commits on Ctrl+Enter or blur): from that
  keydown until the grid of all heads and the focused head are painted with new data. The
  model's forward runs inside for both. Checked: bertviz drew heads × N² lines of layer 0; ours
  says the text was cut to N, and its URL holds ``length=N`` and a text beginning with the
  run's prefix (e.g. "Run 2.").
* **layer switch**: in that same page or tab, from the key press that moves to layer 1
  (ArrowDown on bertviz's Layer dropdown, ArrowRight on our Layer slider) until the new layer is
  painted. Ours reruns the part of its page the slider belongs to (a Streamlit fragment: not the
  text box and mask controls above it; up to 64 tokens the new layer comes from its capture of
  every layer, made for rollout; longer texts run the model again up to that layer); bertviz already
  holds every layer in the page. Ours then goes back to layer 0 (ArrowLeft, untimed), so every run switches 0 -> 1.
* **opened in a new browser** (the cold start, secondary): each tool on another text of the run
  in a brand-new browser context (empty HTTP cache), the whole page load. bertviz = Python side
  + its page, from navigation start until layer 0 is painted; ours = from navigation start (a
  link with model, text and N) until the grid and the focused head are painted. This includes,
  for ours, fetching and booting Streamlit's JavaScript and plotly.js (about 8.6 MB, parsed and
  run on the browser's main thread), which a user pays once per browser or tab, not per text:
  Streamlit serves its static files with ``cache-control: public, immutable``, so later visits
  take them from the cache. At small N this makes ours slower here than bertviz.
* **bytes, new text**: bertviz: every HTTP response of its page (headers and body as sent, from
  Playwright's ``request.sizes()``; its cached libraries add nothing); ours: the websocket
  messages received from the Ctrl+Enter until the run finished (plus any HTTP response, normally
  none). **bytes, new browser**: everything the cold page received, every HTTP response and, for
  ours, the websocket messages until the first run finished: static files included.
* **painted** is the same rule for both: the first animation frame that starts after the frame
  in which the new drawing was done (bertviz: its new ``<g id="attention">`` exists; ours:
  plotly's ``plotly_afterplot`` on both charts), so style, layout and paint are included.

bertviz runs in its own virtual environment (made here, idempotently, in
``~/.cache/attention-viz-peer``: ``pip install -r benchmarks/peer/requirements.txt``, the same
torch and transformers pins as ours), as a worker (``benchmarks/peer/worker.py``) that keeps the
models loaded, like a notebook kernel. Its page loads require.js, d3 and jQuery from a CDN; they
come from npm instead (``npm ci`` of ``benchmarks/peer/package-lock.json``; Debian's ``npm`` is
installed first if missing and this runs as root), the CDN addresses are rewritten to them, and
the page is served from a local HTTP server. Any request to another host fails the run.

A bertviz case that fails (a blank page, a crash, a timeout) is not repeated, and larger N of
the same model are not tried; ours is still measured at every N.

Usage::

    make bench                                              # with the others, into README.md
    .venv/bin/python benchmarks/peer_bertviz.py             # roughly 25 minutes
    .venv/bin/python benchmarks/peer_bertviz.py --models minilm --sizes 64 --repeats 1 --no-publish
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import http.server
import itertools
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

if __package__ in (None, ""):  # run as `python benchmarks/peer_bertviz.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import OUT_DIR, describe_machine, markdown_table, publish
from benchmarks.live_app import (
    TreeLoad,
    chromium,
    english_text,
    load_average,
    open_page,
    streamlit_server,
    wait_idle,
)

SECTION = "peer-bertviz"  # README section and benchmarks/out/ file name
MODELS = ("minilm", "smollm2")
SIZES = (64, 128, 256, 512)
PEER_FILES = Path(__file__).resolve().parent / "peer"
REQUIREMENTS = PEER_FILES / "requirements.txt"
NPM_FILES = (PEER_FILES / "package.json", PEER_FILES / "package-lock.json")
# bertviz 1.4.1's head_view loads these from a CDN; each is served from node_modules instead
# (require.js appends ".js" to the d3 and jQuery paths). jQuery 2.0.0 is not on npm: 2.1.0 is.
CDN_TO_NPM = {
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js": "requirejs/require.js",
    "https://cdnjs.cloudflare.com/ajax/libs/d3/5.7.0/d3.min": "d3/dist/d3.min",
    "https://cdnjs.cloudflare.com/ajax/libs/jquery/2.0.0/jquery.min": "jquery/dist/jquery.min",
}
VIEWPORT = {"width": 1400, "height": 900}
CHARS_PER_TOKEN = 7  # more than either tokenizer needs for English: every text is cut to N
URL_TEXT_LIMIT = 4000  # ui/state.py MAX_PARAM_CHARS: ours takes the text from the URL
EXPLORER_CHARTS = ("ex_grid_chart", "ex_head_chart")  # all heads of the layer, the focused head
EXPLORER_PLOTS = 3  # charts the explorer draws at least (grid, focused head, mean over heads)
SWITCH_TO_LAYER = 1
GENERATE_TIMEOUT_S = 600.0  # bertviz's Python side at the largest N
VIEW_TIMEOUT_S = 240.0  # a bertviz page that draws nothing within this is a failure
BLANK_AFTER_S = 15.0  # loaded, libraries in, and still no layer options: its script never ran
OURS_TIMEOUT_S = 300.0
QUIET_CORES = 0.5  # start once other processes keep at most this many cores busy
RUN_WAIT_S = 30.0  # before each run, wait at most this long for that
MB = 1e6
# V8's longest string (2**29 - 24 characters on 64-bit): a longer inline script cannot run.
V8_MAX_STRING = 2**29 - 24

# Added to every page before its own scripts; every time is in the page's clock (navigation = 0).
PAGE_JS = r"""
(() => {
    const peer = (window.__peer = {frames: [], inputs: [], views: []});
    const now = () => performance.now();
    document.addEventListener("keydown", () => peer.inputs.push(now()), true);
    let shown = null;
    const frame = () => {
        const t = now();
        peer.frames.push(t);
        // bertviz builds a new <g id="attention"> with every line of the layer on each render.
        const lines = document.querySelector("#vis > svg > g#attention");
        if (lines !== null && lines !== shown) {
            shown = lines;
            const layer = document.querySelector("select#layer");
            peer.views.push({t, layer: layer ? layer.value : null});
        }
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
})();
"""

# bertviz's view number ``index``: when its lines existed, and the next frame (painted).
BERTVIZ_VIEW_JS = """
(index) => {
    const view = window.__peer.views[index];
    if (view === undefined) return false;
    const painted = window.__peer.frames.find((t) => t > view.t);
    return painted === undefined ? false : {seen: view.t, painted, layer: view.layer};
}
"""

# Ours: after ``since`` (ms), both charts drawn with data other than ``before``, then painted.
OURS_VIEW_JS = """
([keys, before, since]) => {
    let drawn = 0;
    for (const key of keys) {
        const hit = window.__bench.afterplot.find((e) => e.t > since && e.key === key && e.sig !== before[key]);
        if (hit === undefined) return false;
        drawn = Math.max(drawn, hit.t);
    }
    const after = window.__peer.frames.filter((t) => t >= drawn);
    return after.length < 2 ? false : {drawn, painted: after[1]};
}
"""

BLANK_JS = """
() => document.readyState === "complete"
    && typeof window.requirejs === "function"
    && document.querySelectorAll("select#layer option").length === 0
"""


class PeerSetupError(RuntimeError):
    """The peer environment could not be made; the message says what failed and what to do."""


# --- the peer environment ----------------------------------------------------------------------


def default_peer_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "attention-viz-peer"


def _run(command: list[str], what: str, cwd: Path | None = None, env: dict | None = None) -> None:
    print(f"peer set-up: {what}", flush=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise PeerSetupError(
            f"{what} failed (exit code {done.returncode}): {' '.join(map(str, command))}\n"
            f"{(done.stdout + done.stderr)[-3000:]}"
        )


def _stamp(*files: Path) -> str:
    """What an installation was made from: the files' contents and this Python."""
    digest = hashlib.sha256(sys.version.encode())
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def peer_python(folder: Path) -> Path:
    """The peer venv's python, with bertviz installed; made or updated only when needed.

    Separate from .venv (no ``--system-site-packages``), so bertviz's dependencies never touch
    ours; pip's cache and this machine's find-links are shared, so torch is not fetched again.
    """
    venv = folder / "venv"
    python = venv / "bin" / "python"
    stamp = venv / ".attnviz-installed"
    wanted = _stamp(REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv)], f"creating {venv}")
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)],
        f"pip install -r {REQUIREMENTS.relative_to(PEER_FILES.parents[1])} (about 2 minutes the first time)",
    )
    stamp.write_text(wanted)
    return python


def _npm() -> str:
    """Debian's npm, installed with apt-get if missing (root only)."""
    found = shutil.which("npm")
    if found:
        return found
    if os.geteuid() != 0:
        raise PeerSetupError(
            "npm is missing. Install it (Debian: `sudo apt-get install nodejs npm`) or run this as root."
        )
    quiet = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update"], "apt-get update", env=quiet)
    _run(
        ["apt-get", "install", "-y", "--no-install-recommends", "nodejs", "npm"],
        "apt-get install npm",
        env=quiet,
    )
    found = shutil.which("npm")
    if not found:
        raise PeerSetupError("apt-get installed npm, but it is not on PATH.")
    return found


def node_modules(folder: Path) -> Path:
    """bertviz's JavaScript from npm (``npm ci`` of the committed lock), installed only when needed."""
    js = folder / "js"
    stamp = js / ".attnviz-installed"
    wanted = _stamp(*NPM_FILES)
    modules = js / "node_modules"
    complete = all((modules / path).with_suffix(".js").exists() for path in CDN_TO_NPM.values())
    if complete and stamp.exists() and stamp.read_text() == wanted:
        return modules
    js.mkdir(parents=True, exist_ok=True)
    for path in NPM_FILES:
        shutil.copy2(path, js / path.name)
    _run([_npm(), "ci", "--no-audit", "--no-fund"], "npm ci (require.js, d3, jQuery)", cwd=js)
    missing = [path for path in CDN_TO_NPM.values() if not (modules / path).with_suffix(".js").exists()]
    if missing:
        raise PeerSetupError(f"npm ci left out {missing}: check {NPM_FILES[0]}.")
    stamp.write_text(wanted)
    return modules


class Peer:
    """The worker in the peer venv (benchmarks/peer/worker.py): one JSON request, one answer."""

    def __init__(self, python: Path, log: Path, threads: int) -> None:
        self.python, self.log, self.threads = python, log, threads
        self.process: subprocess.Popen | None = None
        self.versions: dict = {}

    def start(self) -> None:
        environment = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MALLOC_MMAP_THRESHOLD_": "1048576",  # as our server: freed pages go back to the system
        }
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(
                [str(self.python), str(PEER_FILES / "worker.py"), str(self.threads)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=sink,
                text=True,
                env=environment,
            )
        self.versions = self._answer(120.0)

    def _answer(self, timeout_s: float) -> dict:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.stop()
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the bertviz worker {'gave no answer' if not ready else 'died'}:\n{tail}")
        return json.loads(line)

    def ask(self, request: dict, timeout_s: float = GENERATE_TIMEOUT_S) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer(timeout_s)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


@contextmanager
def page_server(folder: Path) -> Iterator[str]:
    """A local HTTP server for ``folder`` (``python -m http.server``, in a thread); yields its URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # one line per request would flood the output
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- measuring ---------------------------------------------------------------------------------


@dataclass
class Sample:
    """One tool's run at one N (seconds and bytes): a new text, a layer switch, a new browser."""

    bytes: int  # new text: what the browser received for it
    first_s: float  # new text, until painted; bertviz: python_s + browser_s
    switch_s: float
    cold_bytes: int = 0  # opened in a new browser: everything received, static files included
    cold_s: float = 0.0  # opened in a new browser; bertviz: cold_python_s + cold_browser_s
    python_s: float = 0.0  # bertviz, new text: forward + head_view
    forward_s: float = 0.0
    browser_s: float = 0.0  # bertviz, new text: its page, libraries from the HTTP cache
    cold_python_s: float = 0.0  # bertviz, new browser: forward + head_view (its own text)
    cold_browser_s: float = 0.0  # bertviz, new browser: its page in a brand-new browser context
    websocket_bytes: int = 0  # ours: the part of ``bytes`` that came over the websocket
    cold_websocket_bytes: int = 0  # ours: the part of ``cold_bytes`` that came over the websocket
    others: float | None = None  # cores kept busy by other processes during new text and switch
    cold_others: float | None = None  # the same, while the page opened in a new browser


@dataclass
class Case:
    """Both tools at one model and N."""

    model: str
    length: int
    bertviz: list[Sample] = field(default_factory=list)
    ours: list[Sample] = field(default_factory=list)
    failure: str = ""  # why bertviz drew nothing, if it did not
    failed_bytes: int = 0  # what bertviz's page sent before failing
    page_chars: int = 0  # the length of bertviz's HTML
    lines: int = 0  # SVG lines bertviz drew for one layer
    waited_s: float = 0.0  # waited for other processes to quieten down before its runs


LOCAL = ("http://127.0.0.1:", "ws://127.0.0.1:")
IN_PAGE = ("blob:", "data:", "about:")  # made by the page itself: nothing crosses the network
PAGE_NUMBERS = itertools.count(1)  # every bertviz page gets its own address: never a cached page


def _received(requests: list) -> int:
    """Bytes the browser received over the network for these finished requests: headers and body, as sent.

    A response from the HTTP cache crossed no network: Chromium reports it with no body bytes.
    """
    total = 0
    for request in requests:
        if request.url.startswith(IN_PAGE):
            continue
        sizes = request.sizes()
        total += max(0, sizes["responseHeadersSize"]) + max(0, sizes["responseBodySize"])
    return total


def _external(requests: list) -> list[str]:
    return [r.url for r in requests if not r.url.startswith(LOCAL + IN_PAGE)]


def _wait(page, script: str, arg: object, timeout_s: float, errors: list[str], blank_check: bool = False):
    """Poll ``script`` until it returns a value; fail early on a crash, a script error or a blank page."""
    deadline = time.monotonic() + timeout_s
    blank_since = None
    while True:
        try:
            return page.wait_for_function(script, arg=arg, timeout=5000, polling=100).json_value()
        except Exception as error:  # noqa: BLE001 (Playwright's timeout, or the page has gone)
            if "Timeout" not in str(error):
                raise RuntimeError(f"the page failed: {str(error).splitlines()[0]}") from error
        if errors:
            raise RuntimeError(f"the page reported: {errors[0]}")
        if blank_check and page.evaluate(BLANK_JS):
            blank_since = blank_since or time.monotonic()
            if time.monotonic() - blank_since > BLANK_AFTER_S:
                raise RuntimeError(
                    "blank page: loaded, require.js in, but bertviz's script never ran and reported no error"
                )
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing drawn after {timeout_s:.0f} s")


def wait_for_quiet(timeout_s: float, window_s: float = 0.25) -> float:
    """Wait until processes outside this benchmark (its server, browser and worker excluded) keep
    at most ``QUIET_CORES`` busy over ``window_s``; gives up after ``timeout_s``. Returns the wait."""
    started = time.perf_counter()
    while True:
        with TreeLoad() as load:
            time.sleep(window_s)
        waited = time.perf_counter() - started
        if load.cores is None or load.cores <= QUIET_CORES or waited >= timeout_s:
            return waited


def bertviz_context(browser):
    """A browser context for bertviz's pages, instrumented with PAGE_JS; its HTTP cache starts empty."""
    context = browser.new_context(viewport=VIEWPORT)
    context.add_init_script(PAGE_JS)
    return context


def bertviz_run(
    context,
    url: str,
    peer: Peer,
    pages: Path,
    folder: str,
    decoder: bool,
    text: str,
    case: Case,
    switch: bool = True,
) -> dict:
    """Generate bertviz's page in the peer worker (a notebook cell), open it as a new page of
    ``context`` and time it until layer 0 is painted; with ``switch``, then move to layer 1.

    Returns ``python_s``, ``forward_s``, ``browser_s``, ``first_s`` (python + browser), ``bytes``
    (every HTTP response of the page), ``switch_s`` (None without ``switch``) and ``others``.
    """
    page_file = pages / f"head_view-{next(PAGE_NUMBERS)}.html"
    answer = peer.ask(
        {
            "folder": folder,
            "decoder": decoder,
            "text": text,
            "length": case.length,
            "out": str(page_file),
            "replace": {cdn: f"/node_modules/{path}" for cdn, path in CDN_TO_NPM.items()},
        }
    )
    if "error" in answer:
        raise RuntimeError(f"bertviz failed in Python: {answer['error']}")
    if answer["tokens"] != case.length:
        raise AssertionError(f"bertviz got {answer['tokens']} tokens, expected {case.length}")
    case.page_chars = answer["chars"]
    requests: list = []
    errors: list[str] = []
    page = context.new_page()
    page.on("requestfinished", lambda request: requests.append(request))
    page.on("pageerror", lambda error: errors.append(str(error).splitlines()[0][:200]))
    page.on("crash", lambda _page: errors.append("the page crashed"))
    switched = pressed = None
    try:
        with TreeLoad() as load:
            try:
                page.goto(f"{url}/{page_file.name}", wait_until="commit", timeout=VIEW_TIMEOUT_S * 1000)
                first = _wait(page, BERTVIZ_VIEW_JS, 0, VIEW_TIMEOUT_S, errors, blank_check=True)
            except RuntimeError:
                case.failed_bytes = _received(requests)
                raise
            heads = answer["heads"]
            case.lines = page.evaluate(
                "() => document.querySelectorAll('#vis > svg > g#attention line').length"
            )
            if case.lines != heads * case.length**2 or first["layer"] != "0":
                raise AssertionError(f"bertviz drew {case.lines} lines of layer {first['layer']}")
            received = _received(requests)
            if switch:
                page.locator("select#layer").focus()
                page.keyboard.press("ArrowDown")
                switched = _wait(page, BERTVIZ_VIEW_JS, 1, VIEW_TIMEOUT_S, errors)
                pressed = page.evaluate("() => window.__peer.inputs.at(-1)")
        if switched is not None and switched["layer"] != str(SWITCH_TO_LAYER):
            raise AssertionError(f"bertviz switched to layer {switched['layer']}, not {SWITCH_TO_LAYER}")
        if _external(requests):
            raise RuntimeError(f"bertviz's page contacted other hosts: {_external(requests)}")
    finally:
        page.close()
        page_file.unlink(missing_ok=True)
    python_s = answer["forward_s"] + answer["html_s"]
    browser_s = first["painted"] / 1000
    return {
        "bytes": received,
        "first_s": python_s + browser_s,
        "switch_s": None if switched is None else (switched["painted"] - pressed) / 1000,
        "python_s": python_s,
        "forward_s": answer["forward_s"],
        "browser_s": browser_s,
        "others": load.cores,
    }


def _explorer_url(url: str, model: str, text: str, length: int) -> str:
    return f"{url}/model_explorer?{urlencode({'model': model, 'text': text, 'length': length})}"


def _check_explorer(page, length: int, prefix: str) -> None:
    """The explorer shows ``length`` tokens of a longer text that begins with ``prefix``."""
    if not page.get_by_text("were cut by the sequence length").count():
        raise AssertionError(f"ours: the text should be longer than {length} tokens")
    query = parse_qs(urlparse(page.url).query)
    if query.get("length") != [str(length)]:
        raise AssertionError(f"ours: expected length={length} in the URL, got {page.url[:200]}")
    if not query.get("text", [""])[0].startswith(prefix):
        raise AssertionError(f"ours: the URL's text should begin with {prefix!r}, got {page.url[:200]}")


def _check_layer(page, layer: int) -> None:
    shown = page.get_by_role("slider", name="Layer").get_attribute("aria-valuetext")
    if shown != str(layer) or not page.get_by_text(f"Layer {layer}: all").count():
        raise AssertionError(f"ours: the Layer slider shows {shown}, not {layer}")


def _new_tab(browser):
    """A page in a brand-new browser context at the benchmark's viewport, recording frames."""
    watched = open_page(browser)
    watched.page.set_viewport_size(VIEWPORT)
    watched.page.add_init_script(PAGE_JS)
    return watched


def _first_view(page, charts: list[str]) -> dict:
    """Wait until ``charts`` are drawn for the first time and painted (``OURS_VIEW_JS``)."""
    return page.wait_for_function(
        OURS_VIEW_JS, arg=[charts, {}, 0], timeout=OURS_TIMEOUT_S * 1000, polling=50
    ).json_value()


def _prefix(text: str) -> str:
    """A run's text prefix, up to its first full stop, e.g. ``"Run 2."``."""
    return text.split(".", 1)[0] + "."


class OursTab:
    """One Model explorer tab, kept open across a model's runs, as a user keeps the app open.

    Opened at the model's warm-up; before each N it is navigated (untimed) to that N, in the same
    browser context, so Streamlit's JavaScript and plotly.js come from the HTTP cache.
    """

    def __init__(self, browser, url: str, model: str) -> None:
        self.url, self.model, self.length = url, model, None
        self.watched = _new_tab(browser)
        self.page = self.watched.page
        self.requests: list = []
        self.watched.context.on("requestfinished", lambda request: self.requests.append(request))

    def open(self, text: str, length: int) -> None:
        """Navigate to the explorer on ``text`` cut to ``length`` tokens and wait until it is drawn."""
        self.page.goto(_explorer_url(self.url, self.model, text, length))
        _first_view(self.page, list(EXPLORER_CHARTS))
        wait_idle(self.page, plots=EXPLORER_PLOTS, timeout_s=OURS_TIMEOUT_S)
        _check_explorer(self.page, length, _prefix(text))
        _check_layer(self.page, 0)
        self.length = length

    def new_text(self, text: str, length: int) -> dict:
        """Paste ``text`` (untimed), press Ctrl+Enter and time until it is painted; then the layer switch.

        Returns ``first_s``, ``bytes`` (received from the key press until the run finished),
        ``websocket_bytes``, ``switch_s`` and ``others``. Leaves the tab on layer 0.
        """
        page, keys = self.page, list(EXPLORER_CHARTS)
        box = page.locator(".st-key-ex_text textarea")
        box.fill(text)
        if box.input_value() != text:
            raise AssertionError("ours: the text box did not take the run's text")
        before = self.watched.signatures(keys)
        asked = len(self.requests)
        with TreeLoad() as load:
            started = time.monotonic()
            box.press("Control+Enter")  # a Streamlit text_area commits on Ctrl+Enter (or on blur)
            pressed = page.evaluate("() => window.__peer.inputs.at(-1)")
            drawn = page.wait_for_function(
                OURS_VIEW_JS, arg=[keys, before, pressed], timeout=OURS_TIMEOUT_S * 1000, polling=50
            ).json_value()
            wait_idle(page, plots=EXPLORER_PLOTS, timeout_s=OURS_TIMEOUT_S)
            websocket = self.watched.bytes_since(started)
            received = websocket + _received(self.requests[asked:])
            _check_explorer(page, length, _prefix(text))
            _check_layer(page, 0)
            before = self.watched.signatures(keys)
            slider = page.get_by_role("slider", name="Layer")
            slider.focus()
            page.keyboard.press("ArrowRight")
            switch_pressed = page.evaluate("() => window.__peer.inputs.at(-1)")
            switched = page.wait_for_function(
                OURS_VIEW_JS, arg=[keys, before, switch_pressed], timeout=OURS_TIMEOUT_S * 1000, polling=50
            ).json_value()
        wait_idle(page, plots=EXPLORER_PLOTS, timeout_s=OURS_TIMEOUT_S)
        _check_layer(page, SWITCH_TO_LAYER)
        slider.focus()
        page.keyboard.press("ArrowLeft")  # back to layer 0 (untimed): every run switches 0 -> 1
        wait_idle(page, plots=EXPLORER_PLOTS, timeout_s=OURS_TIMEOUT_S)
        _check_layer(page, 0)
        outside = self.watched.external + _external(self.requests)
        if outside:
            raise RuntimeError(f"our page contacted other hosts: {outside}")
        return {
            "first_s": (drawn["painted"] - pressed) / 1000,
            "bytes": received,
            "websocket_bytes": websocket,
            "switch_s": (switched["painted"] - switch_pressed) / 1000,
            "others": load.cores,
        }

    def close(self) -> None:
        self.watched.close()


def ours_cold(browser, url: str, model: str, text: str, length: int) -> dict:
    """Open the Model explorer on ``text`` cut to ``length`` tokens in a brand-new browser context.

    Returns ``cold_s`` (navigation start until the grid and focused head are painted),
    ``cold_bytes`` (every HTTP response and websocket message until the first run finished),
    ``cold_websocket_bytes`` and ``cold_others``.
    """
    watched = _new_tab(browser)
    page = watched.page
    requests: list = []
    watched.context.on("requestfinished", lambda request: requests.append(request))
    try:
        with TreeLoad() as load:
            page.goto(_explorer_url(url, model, text, length))
            first = _first_view(page, list(EXPLORER_CHARTS))
            wait_idle(page, plots=EXPLORER_PLOTS, timeout_s=OURS_TIMEOUT_S)
            websocket = sum(size for _, size in watched.received)
            received = _received(requests) + websocket
        _check_explorer(page, length, _prefix(text))
        if watched.external or _external(requests):
            raise RuntimeError(f"our page contacted other hosts: {watched.external + _external(requests)}")
    finally:
        watched.close()
    return {
        "cold_s": first["painted"] / 1000,
        "cold_bytes": received,
        "cold_websocket_bytes": websocket,
        "cold_others": load.cores,
    }


FLOOR_APP = PEER_FILES / "streamlit_floor.py"
FLOOR_CHART = "floor_chart"


def streamlit_floor(browser, repeats: int) -> list[float]:
    """Seconds from navigation start until the chart of ``FLOOR_APP`` is painted, each time in a
    brand-new browser context, as :func:`ours_cold` opens the explorer: the stack's own share of
    our cold start (its server started in the repo root, so the app's Streamlit settings apply)."""
    seconds = []
    with streamlit_server(FLOOR_APP) as server:
        for run in range(repeats + 1):  # the first, untimed, warms the server up
            watched = _new_tab(browser)
            try:
                watched.page.goto(server.url)
                painted = _first_view(watched.page, [FLOOR_CHART])["painted"]
            finally:
                watched.close()
            if run:
                seconds.append(painted / 1000)
    return seconds


def _text(length: int, prefix: str) -> str:
    return english_text(length * CHARS_PER_TOKEN, prefix=prefix, max_chars=URL_TEXT_LIMIT)


def measure(args: argparse.Namespace, peer: Peer, modules: Path) -> list[Case]:
    from attention_viz.loading import load_model

    models = {}
    for name in args.models:  # converts SmolLM2's GGUF once, if not cached; the folder is plain transformers
        loaded = load_model(name)
        models[name] = (loaded.model.name_or_path, loaded.decoder)
        del loaded
    cases = []
    with (
        tempfile.TemporaryDirectory(prefix="attnviz-peer-") as tmp,
        page_server(Path(tmp)) as pages_url,
        streamlit_server("app.py") as server,
        chromium() as browser,
    ):
        pages = Path(tmp)
        (pages / "node_modules").symlink_to(modules)
        for name in args.models:
            folder, decoder = models[name]
            smallest = min(args.sizes)
            print(f"{name}: warm-up (loads the model in both), load {load_average()}", flush=True)
            # One browser context per tool, kept for this model's runs: a notebook with bertviz's
            # libraries loaded, and our explorer open in a tab.
            context = bertviz_context(browser)
            tab = OursTab(browser, server.url, name)
            try:
                warm = Case(name, smallest)
                bertviz_run(
                    context, pages_url, peer, pages, folder, decoder, _text(smallest, "Warm-up."), warm
                )
                tab.open(_text(smallest, "Warm-up."), smallest)
                failed_at = None
                for length in sorted(args.sizes):
                    case = Case(name, length)
                    cases.append(case)
                    if failed_at is not None:  # a longer page fails too: ours is still measured
                        case.failure = f"not tried: bertviz failed at N = {failed_at}"
                    if tab.length != length:  # untimed: the explorer at this N, in the same tab
                        tab.open(_text(length, f"Warm-up at {length}."), length)
                    for run in range(1, args.repeats + 1):
                        text = _text(length, f"Run {run}.")
                        cold_text = _text(length, f"Browser {run}.")  # its own text: no cache helps
                        note = f"bertviz: {case.failure}; " if case.failure else ""
                        b = None
                        if not case.failure:
                            try:
                                case.waited_s += wait_for_quiet(RUN_WAIT_S)
                                warm_run = bertviz_run(
                                    context, pages_url, peer, pages, folder, decoder, text, case
                                )
                                case.waited_s += wait_for_quiet(RUN_WAIT_S)
                                cold_context = bertviz_context(browser)
                                try:
                                    cold = bertviz_run(
                                        cold_context, pages_url, peer, pages, folder, decoder,
                                        cold_text, case, switch=False,
                                    )  # fmt: skip
                                finally:
                                    cold_context.close()
                                b = Sample(
                                    bytes=warm_run["bytes"],
                                    first_s=warm_run["first_s"],
                                    switch_s=warm_run["switch_s"],
                                    cold_bytes=cold["bytes"],
                                    cold_s=cold["first_s"],
                                    python_s=warm_run["python_s"],
                                    forward_s=warm_run["forward_s"],
                                    browser_s=warm_run["browser_s"],
                                    cold_python_s=cold["python_s"],
                                    cold_browser_s=cold["browser_s"],
                                    others=warm_run["others"],
                                    cold_others=cold["others"],
                                )
                                case.bertviz.append(b)
                            except RuntimeError as error:
                                case.failure = str(error).splitlines()[0]
                                note = f"bertviz failed (not repeated): {case.failure}; "
                                failed_at = length
                                peer.stop()  # free the failed page's memory; the next request restarts it
                        case.waited_s += wait_for_quiet(RUN_WAIT_S)
                        warm_ours = tab.new_text(text, length)
                        case.waited_s += wait_for_quiet(RUN_WAIT_S)
                        cold_ours = ours_cold(browser, server.url, name, cold_text, length)
                        o = Sample(**warm_ours, **cold_ours)
                        case.ours.append(o)
                        if b is not None:
                            note = (
                                f"bertviz new text {b.first_s:.2f} s (python {b.python_s:.2f}), "
                                f"{b.bytes / MB:.2f} MB, switch {b.switch_s:.2f} s, new browser "
                                f"{b.cold_s:.2f} s, {b.cold_bytes / MB:.1f} MB; "
                            )
                        print(
                            f"  {name} N={length} run {run}/{args.repeats}: {note}ours new text "
                            f"{o.first_s:.2f} s, {o.bytes / MB:.2f} MB, switch {o.switch_s:.2f} s, new "
                            f"browser {o.cold_s:.2f} s, {o.cold_bytes / MB:.1f} MB; load {load_average()}",
                            flush=True,
                        )
            finally:
                tab.close()
                context.close()
    return cases


# --- the report --------------------------------------------------------------------------------


def _median(samples: list[Sample], name: str) -> float:
    return statistics.median(getattr(sample, name) for sample in samples)


def _mb(count: float) -> str:
    if count < 1 * MB:
        return f"{count / MB:.2f}"
    return f"{count / MB:.1f}" if count < 100 * MB else f"{count / MB:,.0f}"


def _pair(peer: float | None, ours: float, unit: str) -> str:
    """``"peer / ours (peer ÷ ours×)"``; a missing peer value is ``None``."""
    show = _mb if unit == "MB" else (lambda seconds: f"{seconds:.2f}")
    if peer is None:
        return f"– / {show(ours)}"
    ratio = peer / ours
    return (
        f"{show(peer)} / {show(ours)} ({ratio:.1f}×)"
        if ratio < 10
        else f"{show(peer)} / {show(ours)} ({ratio:,.0f}×)"
    )


LABELS = {"minilm": "all-MiniLM-L6-v2", "smollm2": "SmolLM2-135M"}
# The table's measures: (Sample field, unit), in column order.
MEASURES = (("first_s", "s"), ("switch_s", "s"), ("cold_s", "s"), ("bytes", "MB"), ("cold_bytes", "MB"))


def _floor_note(cases: list[Case], floor: list[float] | None) -> list[str]:
    """The note on Streamlit's floor (``streamlit_floor``), against bertviz's fastest cold open."""
    if not floor:
        return []
    colds = [(_median(case.bertviz, "cold_s"), case) for case in cases if case.bertviz and not case.failure]
    note = (
        "- **Streamlit's floor**: a Streamlit page with nothing but a title and one 2 × 2 plotly "
        "heatmap (`benchmarks/peer/streamlit_floor.py`), opened the same way in a new browser, is "
        f"painted after {statistics.median(floor):.2f} s (median of {len(floor)}; "
        f"{min(floor):.2f}–{max(floor):.2f} s)."
    )
    if colds:
        fastest, case = min(colds, key=lambda pair: pair[0])
        verdict = "less than" if fastest < statistics.median(floor) else "more than"
        note += (
            f" bertviz's whole cold open of {LABELS[case.model]} at N = {case.length}, model and page, "
            f"took {fastest:.2f} s, {verdict} this floor"
            + (
                ": at that N, no page built on Streamlit and plotly opens cold as fast as bertviz."
                if verdict == "less than"
                else "."
            )
        )
    return [note]


def report(
    cases: list[Case],
    args: argparse.Namespace,
    machine: dict,
    peer: dict,
    elapsed: float,
    floor: list[float] | None = None,
) -> str:
    headers = [
        "model",
        "N",
        "new text (s): bertviz / ours (ratio)",
        "layer switch (s): bertviz / ours (ratio)",
        "opened in a new browser (s): bertviz / ours (ratio)",
        "bytes, new text (MB): bertviz / ours (ratio)",
        "bytes, new browser (MB): bertviz / ours (ratio)",
        "others' load (cores)",
    ]
    rows, parts = [], []
    for case in cases:
        ours = {key: _median(case.ours, key) for key, _unit in MEASURES}
        if case.bertviz and not case.failure:
            forward = _median(case.bertviz, "forward_s")
            parts.append(
                [
                    LABELS[case.model],
                    case.length,
                    f"{forward:.2f}",
                    f"{_median(case.bertviz, 'python_s') - forward:.2f}",
                    f"{_median(case.bertviz, 'browser_s'):.2f}",
                    f"{_median(case.bertviz, 'cold_python_s'):.2f}",
                    f"{_median(case.bertviz, 'cold_browser_s'):.2f}",
                    _mb(case.page_chars),
                    f"{case.lines:,}",
                ]
            )
            cells = [_pair(_median(case.bertviz, key), ours[key], unit) for key, unit in MEASURES]
        else:
            if case.failure.startswith("not tried"):
                what = "not tried"
            elif case.failure.startswith("blank page"):
                what = "**blank page**"
            else:
                what = "**fails**"
            cells = [f"{what} / {ours[key]:.2f}" for key, _unit in MEASURES[:3]] + [
                _pair(case.failed_bytes or None, ours["bytes"], "MB"),
                _pair(None, ours["cold_bytes"], "MB"),
            ]
        busy = [
            value
            for s in case.bertviz + case.ours
            for value in (s.others, s.cold_others)
            if value is not None
        ]
        rows.append(
            [LABELS[case.model], case.length, *cells, f"{statistics.mean(busy):.2f}" if busy else "n/a"]
        )
    others = [
        value
        for case in cases
        for s in case.bertviz + case.ours
        for value in (s.others, s.cold_others)
        if value is not None
    ]
    static = [s.cold_bytes - s.cold_websocket_bytes for case in cases for s in case.ours]
    static_mb = f"{_mb(statistics.median(static))} MB" if static else "several MB"
    runs = f"{args.repeats} runs" if args.repeats > 1 else "1 run"
    lines = [
        "bertviz's `head_view` against the Model explorer (`streamlit run app.py`): the same model, the "
        "same English text cut to N tokens, headless Chromium at 1400 × 900; median of "
        f"{runs} after a warm-up, each run with its own texts. Ratio = bertviz ÷ ours (above 1: ours "
        "is smaller or faster). Made by `benchmarks/peer_bertviz.py`.",
        "",
        markdown_table(headers, rows),
        "",
        "- **New text**: what each user waits for to see a text they have not seen before, with the "
        "tool already open. bertviz = what a notebook user waits for after running the cell: its "
        "Python side (the model's forward with `output_attentions=True`, then `head_view(...)`) plus "
        "its page, opened as a new page in a browser context kept for the model's runs (so require.js, "
        "d3 and jQuery come from the HTTP cache, as a notebook has them loaded), from navigation start "
        "until the SVG lines of layer 0 are painted. Ours = in an explorer tab kept open for the "
        "model's runs (opened at the warm-up, and before each N moved, untimed, to that N in the same "
        "tab), the text is pasted into the text box (untimed) and Ctrl+Enter pressed: from that key "
        "press until the grid of all heads and the focused head are painted with the new text's "
        "attention. The model's forward runs inside for both; no cache helps (each run has its own "
        "text). Checked: bertviz drew heads × N² lines of layer 0; ours shows N tokens of a longer "
        "text and its URL holds the run's text and length N.",
        "- **Layer switch**: in the same page, from the key press (ArrowDown on bertviz's Layer "
        "dropdown, ArrowRight on our Layer slider) until layer 1 is painted. Ours reruns the part of "
        "its page the slider belongs to (a Streamlit fragment, not the text box and mask controls "
        "above it): up to 64 tokens it draws the new layer from its capture of every layer (made for rollout "
        "with the text), longer texts run the model again up to that layer; bertviz holds every "
        "layer in the page and redraws its lines.",
        "- **Opened in a new browser**: the tool opened cold, in a brand-new browser context (empty "
        "cache), on another text of the same run. bertviz = its Python side plus its page, fetching "
        "require.js, d3 and jQuery; ours = from navigation start (a link with the model, text and N) "
        "until the grid and the focused head are painted. This costs ours more at small N: the "
        f"browser first fetches and boots Streamlit's JavaScript and CSS and plotly.js ({static_mb}), "
        "which a user pays once per browser or tab, not per text; afterwards they come from the "
        "cache (Streamlit serves its static files with `cache-control: public, immutable`).",
        *_floor_note(cases, floor),
        "- **Painted** is the same rule everywhere: the first animation frame after the one that drew "
        'the view (bertviz: its new `<g id="attention">` exists; ours: plotly\'s `plotly_afterplot` '
        "on both charts), so style, layout and paint count for both.",
        "- **Bytes, new text**: what the browser received over the network for it. bertviz: every "
        "HTTP response of its page (headers and body as sent; its libraries come from the cache); "
        "the page carries every weight of every layer and head as decimal JSON. Ours: the websocket "
        "messages from the key press until the run finished (and HTTP responses, normally none); "
        "they carry the shown layer only (images beyond 96 tokens).",
        "- **Bytes, new browser**: everything received for the cold page: every HTTP response and, "
        f"for ours, the websocket messages until the first run finished. Ours includes {static_mb} "
        "of Streamlit's and plotly's static files at every N; bertviz's includes 0.4 MB of "
        "require.js, d3 and jQuery.",
    ]
    if parts:
        lines += [
            "",
            "bertviz's new text in parts (medians, s: forward, head_view, browser), its parts when "
            "opened in a new browser (python = forward + head_view on that run's other text), its "
            "page and the SVG lines it draws for one layer (heads × N²):",
            "",
            markdown_table(
                [
                    "model",
                    "N",
                    "forward",
                    "head_view",
                    "browser",
                    "new browser: python",
                    "new browser: browser",
                    "page (MB)",
                    "SVG lines",
                ],
                parts,
            ),
            "",
        ]
    for case in cases:
        if not case.failure or case.failure.startswith("not tried"):
            continue
        detail = case.failure
        if case.page_chars > V8_MAX_STRING:
            detail += (
                f". Its page is {case.page_chars / MB:,.0f} M characters in one inline script; V8, "
                f"Chromium's JavaScript engine, holds at most {V8_MAX_STRING / MB:.0f} M characters in "
                "a string"
            )
        longer = any(other.model == case.model and other.length > case.length for other in cases)
        lines.append(
            f"- bertviz, {LABELS[case.model]}, N = {case.length}: {detail}"
            + ("; longer N not tried." if longer else ".")
        )
    lines += [
        f"- bertviz {peer.get('bertviz', '?')} in its own virtual environment (torch "
        f"{peer.get('torch', '?')}, transformers {peer.get('transformers', '?')}, the same pins as "
        "ours), the model loaded once in a worker as in a notebook kernel; its page served by a local "
        "HTTP server with require.js, d3 and jQuery from npm in place of its CDN addresses (jQuery "
        "2.1.0 for the 2.0.0 it names, which npm does not have).",
        f"- Others' load = cores kept busy by processes outside this benchmark (its server, browser "
        f"and bertviz worker excluded) during a run, averaged over the row's runs; "
        f"{statistics.mean(others) if others else 0:.2f} over all runs ({max(others) if others else 0:.2f} "
        f"at most). Each run first waited up to {RUN_WAIT_S:.0f} s for it to fall to {QUIET_CORES} "
        f"({sum(case.waited_s for case in cases):.0f} s in all). Load average (1, 5, 15 min) at start "
        f"{machine['load average (1, 5, 15 min) at start']}, at the end {load_average()}. Both tools slow "
        "down several times when others take a core: torch's two threads and Chromium share 2 cores.",
        "- Machine: "
        + "; ".join(f"{key} {value}" for key, value in machine.items() if "load" not in key)
        + ".",
        f"- The whole benchmark took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="sequence lengths N")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs per model and N")
    parser.add_argument("--peer-dir", type=Path, default=default_peer_dir(), help="where the peer venv lives")
    parser.add_argument(
        "--max-wait", type=float, default=120.0, help="wait at most this long for a quiet machine (s)"
    )
    parser.add_argument("--setup-only", action="store_true", help="make the peer environment, then stop")
    parser.add_argument("--no-publish", action="store_true", help="print only; write no files")
    parser.add_argument("--no-readme", action="store_true", help="write benchmarks/out/ but not README.md")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1.")
    if any(not 2 <= n <= 512 for n in args.sizes):
        parser.error("--sizes must lie in 2..512 (MiniLM takes at most 512 tokens).")
    return args


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the with-blocks: server, browser and worker stop too


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.perf_counter()
    try:
        args.peer_dir.mkdir(parents=True, exist_ok=True)
        python = peer_python(args.peer_dir)
        modules = node_modules(args.peer_dir)
        peer = Peer(python, args.peer_dir / "worker.log", threads=int(describe_machine()["torch threads"]))
        peer.start()
    except (PeerSetupError, RuntimeError, OSError) as error:
        sys.stderr.write(
            f"peer_bertviz: the bertviz environment could not be set up:\n{error}\n"
            f"Delete {args.peer_dir} to start it afresh.\n"
        )
        return 2
    print(f"peer ready: {peer.versions} in {time.perf_counter() - started:.0f} s", flush=True)
    if args.setup_only:
        peer.stop()
        return 0
    waited = wait_for_quiet(args.max_wait)
    print(f"waited {waited:.0f} s for a quiet machine, load {load_average()}", flush=True)
    machine = describe_machine()
    try:
        cases = measure(args, peer, modules)
    finally:
        peer.stop()
    with chromium() as browser:
        floor = streamlit_floor(browser, args.repeats)
    print(f"Streamlit's floor: {', '.join(f'{value:.2f}' for value in floor)} s", flush=True)
    body = report(cases, args, machine, peer.versions, time.perf_counter() - started, floor)
    if args.no_publish:
        print(body)
        return 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    raw = [
        {
            **case.__dict__,
            "bertviz": [s.__dict__ for s in case.bertviz],
            "ours": [s.__dict__ for s in case.ours],
        }
        for case in cases
    ]
    (OUT_DIR / f"{SECTION}.json").write_text(json.dumps(raw, indent=1) + "\n")
    if args.no_readme:
        print(body)
        (OUT_DIR / f"{SECTION}.md").write_text(body.strip() + "\n")
    else:
        publish(SECTION, body)
    print(f"wrote {OUT_DIR / SECTION}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
