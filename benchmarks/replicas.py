"""Replicas behind HAProxy: the classroom load spread over several Streamlit processes, and one dying.

Starts ``scripts/serve_replicas.sh`` (N ``streamlit run app.py`` behind HAProxy with sticky
sessions, ``deploy/haproxy.cfg.in``) on free localhost ports, then:

1. **Load.** Opens the Model explorer once on every replica (straight to its port, so each
   loads its own copy of the model), then runs ``classroom_load``'s session (explorer, two
   toggles, a new text, a toggle) in SESSIONS browsers at once *through the load balancer*. Each
   session's ``SERVERID`` cookie names the replica that served it. Measures errors, sessions per
   replica, toggle latency, each replica's RSS idle (model loaded) and peak (sampled every 50 ms),
   and each replica's CPU time.
2. **Failover.** FAILOVER_SESSIONS students open a link (causal mask off, layer 2, the inspector
   on one cell) and type a text of their own; then the replica serving the most
   of them is killed with SIGKILL. For every session it served: when the page noticed, when it
   was connected again (and to which replica), whether its view (URL, text box, toggles, layer,
   cell, chart) is the one it had, what its first click there does and how long that run takes;
   the connection states the page showed meanwhile, with screenshots. The sessions on the other
   replica must notice nothing.

    .venv/bin/python benchmarks/replicas.py                  # 2 replicas, 30 sessions (make bench)
    .venv/bin/python benchmarks/replicas.py --sessions 10 --no-publish

Writes the table to ``benchmarks/out/replicas.md`` (and README.md's ``bench:replicas`` section
if README has its markers; this script never adds them). tests/load/test_replicas.py runs a
short version.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # classroom_load, common: beside this file
from classroom_load import (  # noqa: E402
    CHART,
    CHART_SIGNATURE_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    IDLE_JS,
    SHOWN_TOKENS_JS,
    MemorySampler,
    SessionReport,
    SessionResults,
    drive,
    run_in_own_loop,
    text_for,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "serve_replicas.sh"
OUT = ROOT / "benchmarks" / "out"
COOKIE = "SERVERID"  # the cookie deploy/haproxy.cfg.in inserts
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0
STEP_TIMEOUT_MS = 300_000
# A moved session must show its view again within this long after its replica died.
RECOVER_TIMEOUT_S = 120.0
# How often the page notes its connection state during a failover (ms).
WATCH_MS = 100
FAILOVER_LAYER = 2
FAILOVER_CELL = (3, 1)  # the inspector's query and key, held in the URL as ?query=3&key=1
MB = 2**20


# --- the cluster: scripts/serve_replicas.sh on free ports -----------------------------------------


def free_port_range(count: int, attempts: int = 200) -> int:
    """The first of ``count`` consecutive free localhost ports (load balancer, then replicas)."""
    for _ in range(attempts):
        first = random.randint(20_000, 60_000 - count)
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found on 127.0.0.1")


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Cluster:
    """A running ``scripts/serve_replicas.sh``: the load balancer's URL and the replicas' ports."""

    url: str
    process: subprocess.Popen
    run_dir: Path
    log: Path
    ports: dict[str, int]  # replica name (HAProxy's server name, the SERVERID value) -> port

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def replica(self, name: str) -> psutil.Process:
        """The ``streamlit run`` process of replica ``name`` (the script restarts a dead one)."""
        port = str(self.ports[name])
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if "run" in command and "--server.port" in command and port in command:
                if any(part.endswith("streamlit") for part in command):
                    return child
        raise LookupError(f"replica {name} (port {port}) is not running")

    def stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's ``show stat`` per server of the backend: status, current and total sessions..."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.run_dir / "haproxy.sock"))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {row["svname"]: row for row in rows if row["svname"] in self.ports}

    def all_up(self) -> bool:
        try:
            return all(row["status"] == "UP" for row in self.stats().values())
        except OSError:
            return False


@contextmanager
def replica_cluster(replicas: int = 2) -> Iterator[Cluster]:
    """Run ``scripts/serve_replicas.sh`` with ``replicas`` replicas on free ports until the block ends.

    Every process it started is gone afterwards, also when the block fails: the script stops
    HAProxy and the replicas on SIGTERM, and whatever is left of its process group is killed.
    """
    first = free_port_range(replicas + 1)
    run_dir = Path(tempfile.mkdtemp(prefix="attnviz-replicas-"))
    log = run_dir / "serve.log"
    env = {
        **os.environ,
        "REPLICAS": str(replicas),
        "PORT": str(first),
        "REPLICA_PORT": str(first + 1),
        "ADDRESS": "127.0.0.1",
        "RUN_DIR": str(run_dir),
    }
    ports = {f"r{i + 1}": first + 1 + i for i in range(replicas)}
    with log.open("wb") as sink:
        # Its own process group, so that nothing it started can outlive the block.
        process = subprocess.Popen(
            ["bash", str(SCRIPT)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster = Cluster(f"http://127.0.0.1:{first}", process, run_dir, log, ports)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ("==> ready:" in cluster.output() and cluster.all_up()):
            if process.poll() is not None:
                raise RuntimeError(
                    f"serve_replicas.sh exited with code {process.returncode}:\n{cluster.output()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the replicas were not up after {START_TIMEOUT_S:.0f} s:\n{cluster.output()}"
                )
            time.sleep(0.2)
        yield cluster
    except BaseException:
        sys.stderr.write(f"serve_replicas.sh output (end):\n{cluster.output()}\n")
        raise
    finally:
        stop_script(process)
        for path in sorted(run_dir.iterdir()):
            path.unlink()
        run_dir.rmdir()


def stop_script(process: subprocess.Popen) -> None:
    """SIGTERM the script (it stops HAProxy and the replicas), then SIGKILL its group's leftovers."""
    group = process.pid  # the script leads its own process group (start_new_session)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of a replica and its children (the script's output filter is about 1 MB)."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            continue
    return total


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


# --- 1. the classroom load through the load balancer ---------------------------------------------


@dataclass
class ReplicaLoad(SessionResults):
    replicas: int
    sessions: int
    reports: list[SessionReport]
    idle_rss_mb: dict[str, float]  # before the sessions (after the warm-up: model loaded)
    peak_rss_mb: dict[str, float]  # while the sessions ran
    cpu_s: dict[str, float]  # CPU time each replica used while the sessions ran
    seconds: float
    downs: dict[str, int]  # how often HAProxy marked each replica down (failed health checks)
    warmed: bool  # the model was loaded on every replica before the sessions

    @property
    def served(self) -> dict[str, int]:
        """Sessions per replica, by the SERVERID cookie each browser held at the end."""
        counts = dict.fromkeys(self.idle_rss_mb, 0)
        for report in self.reports:
            name = report.cookies.get(COOKIE, "none")
            counts[name] = counts.get(name, 0) + 1
        return counts


async def _warm(urls: list[str]) -> None:
    """Open the Model explorer at each URL until its chart is drawn (the model is then loaded)."""
    from playwright.async_api import async_playwright

    async def open_explorer(browser, url: str) -> None:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(f"{url}/model_explorer?model=smollm2", timeout=STEP_TIMEOUT_MS)
            await page.wait_for_selector(CHART, timeout=STEP_TIMEOUT_MS)
            await page.wait_for_function(IDLE_JS, timeout=STEP_TIMEOUT_MS, polling=100)
        finally:
            await context.close()

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            await asyncio.gather(*(open_explorer(browser, url) for url in urls))
        finally:
            await browser.close()


def run_load(cluster: Cluster, sessions: int, warm: bool = True) -> ReplicaLoad:
    """Warm every replica (unless ``warm`` is False: the sessions then load the model), then run
    ``sessions`` classroom sessions at once through the load balancer."""
    names = list(cluster.ports)
    if warm:  # each replica loads its own copy of the model: open the explorer on each, at its port
        run_in_own_loop(_warm([f"http://127.0.0.1:{cluster.ports[name]}" for name in names]))
    processes = {name: cluster.replica(name) for name in names}
    idle = {name: tree_rss(process) / MB for name, process in processes.items()}
    samplers = {name: MemorySampler(process.pid) for name, process in processes.items()}
    cpu_before = {name: cpu_seconds(process) for name, process in processes.items()}
    for sampler in samplers.values():
        sampler.start()
    start = time.perf_counter()
    reports = run_in_own_loop(drive(cluster.url, sessions))
    seconds = time.perf_counter() - start
    cpu = {name: cpu_seconds(process) - cpu_before[name] for name, process in processes.items()}
    for sampler in samplers.values():
        sampler.stopped.set()
        sampler.join()
    peak = {name: sampler.peak / MB for name, sampler in samplers.items()}
    downs = {name: int(row["chkdown"] or 0) for name, row in cluster.stats().items()}
    return ReplicaLoad(len(names), sessions, reports, idle, peak, cpu, seconds, downs, warm)


# --- 2. one replica dies --------------------------------------------------------------------------

# Runs in the page. Every WATCH_MS: what a student sees of the connection (the state Streamlit
# marks on the app root, whether the controls are greyed out, the status widget and any dialog).
# And every change of the script state, to tell when a run has finished.
WATCH_JS = """
(every) => {
    const seen = (window.__failover = []);
    const runs = (window.__runs = []);
    const text = (selector) => {
        const el = document.querySelector(selector);
        return el ? el.innerText.replace(/\\s+/g, " ").trim().slice(0, 160) : "";
    };
    setInterval(() => {
        const app = document.querySelector('[data-testid="stApp"]');
        const toggle = document.querySelector('.st-key-ex_causal input');
        seen.push({
            t: Date.now(),
            state: app ? app.dataset.testConnectionState : "no app",
            greyed: toggle ? toggle.disabled : null,
            status: text('[data-testid="stStatusWidget"]'),
            dialog: text('[role="dialog"]'),
        });
    }, every);
    new MutationObserver(() => {
        const app = document.querySelector('[data-testid="stApp"]');
        if (app) runs.push({t: Date.now(), script: app.dataset.testScriptState});
    }).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-test-script-state"]});
}
"""
VIEW_JS = f"""
() => {{
    const toggle = (key) => {{
        const box = document.querySelector(`.st-key-${{key}} input[type="checkbox"]`);
        return box ? box.checked : null;
    }};
    const number = (key) => {{
        const box = document.querySelector(`.st-key-${{key}} input`);
        return box ? box.value : null;
    }};
    const slider = document.querySelector('.st-key-ex_layer input[type="range"]');
    const text = document.querySelector('.st-key-ex_text textarea');
    return {{
        tokens: ({SHOWN_TOKENS_JS})(),
        causal: toggle("ex_causal"),
        padding: toggle("ex_padding"),
        layer: slider ? slider.getAttribute("aria-valuetext") : null,
        text: text ? text.value : null,
        ex_query: number("ex_query"),
        ex_key: number("ex_key"),
    }};
}}
"""
# Connected again, after the page had lost its connection since ``since`` (ms, Date.now()).
RECONNECTED_JS = """
(since) => {
    const seen = window.__failover.filter((e) => e.t >= since);
    const lost = seen.findIndex((e) => e.state !== "CONNECTED");
    return lost >= 0 && seen.slice(lost).some((e) => e.state === "CONNECTED");
}
"""
# A run started after ``since`` and has finished, and the page is connected.
RUN_FINISHED_JS = """
(since) => {
    const runs = window.__runs.filter((e) => e.t >= since);
    const started = runs.findIndex((e) => e.script === "running");
    const app = document.querySelector('[data-testid="stApp"]');
    return started >= 0 && app.dataset.testScriptState === "notRunning"
        && app.dataset.testConnectionState === "CONNECTED";
}
"""


@dataclass
class Student:
    """One failover session: its page, and the view it set before the replica died."""

    index: int
    context: object
    page: object
    replica: str = ""
    url: str = ""
    view: dict = field(default_factory=dict)
    console: list[str] = field(default_factory=list)


@dataclass
class Switch:
    """What one student saw when its replica died, and what its next clicks did."""

    index: int
    before: str  # the replica that served it
    after: str = ""  # the replica that served it after the switch
    lost_s: float = float("nan")  # from the kill until the page showed it had lost its connection
    reconnect_s: float = float("nan")  # from the kill until the page was connected again
    first_run_s: float = float("nan")  # its first click after the switch until that run finished
    first_click_kept: bool | None = None  # that click's change is on screen and in the URL
    states: list[str] = field(default_factory=list)  # what the page showed, in order, no repeats
    problems: list[str] = field(default_factory=list)  # differences from its view, errors


@dataclass
class Failover:
    killed: str
    moved: list[Switch]
    stayed: list[Switch]  # sessions on the surviving replica(s): nothing should happen to them
    screenshots: list[Path]
    setup_errors: list[str]
    console: list[str]  # browser console lines of the moved sessions during the switch

    @property
    def errors(self) -> list[str]:
        """Everything that must not happen (a lost first click is reported, not counted here)."""
        found = list(self.setup_errors)
        if not self.setup_errors and not self.moved:
            found.append("no session was served by the killed replica")
        for switch in self.moved:
            found += [f"moved session {switch.index}: {p}" for p in switch.problems]
            if switch.after in ("", self.killed):
                found.append(f"moved session {switch.index}: served by {switch.after or 'no replica'} after")
        for switch in self.stayed:
            found += [f"unaffected session {switch.index}: {p}" for p in switch.problems]
            if any(not state.startswith("CONNECTED") for state in switch.states):
                found.append(f"unaffected session {switch.index} lost its connection: {switch.states}")
        return found


async def _wait_run(page, since: float) -> None:
    await page.wait_for_function(RUN_FINISHED_JS, arg=since, timeout=STEP_TIMEOUT_MS, polling=50)


async def _set_view(student: Student, base_url: str) -> None:
    """Open the explorer with a view the URL holds (causal mask off, layer 2, the inspector on one
    cell), then, like a student, type a text of its own and send it with Ctrl+Enter."""
    page = student.page
    query, key = FAILOVER_CELL
    link = urllib.parse.urlencode(
        {
            "model": "smollm2",
            "text": text_for(student.index, final=False),
            "item": "1",
            "side": "left",
            "causal": "0",
            "layer": str(FAILOVER_LAYER),
            "query": str(query),
            "key": str(key),
        }
    )
    await page.goto(f"{base_url}/model_explorer?{link}", timeout=STEP_TIMEOUT_MS)
    await page.wait_for_selector(CHART, timeout=STEP_TIMEOUT_MS)
    await page.wait_for_function(IDLE_JS, timeout=STEP_TIMEOUT_MS, polling=100)
    box = page.locator(".st-key-ex_text textarea")
    await box.click()
    await box.press("Control+a")
    await box.fill(text_for(student.index, final=True))
    before = await page.evaluate(CHART_SIGNATURE_JS)
    await box.press("Control+Enter")
    # The URL is sent after the run: wait for it too, or the view noted below is older.
    await page.wait_for_function(
        f"([before, text]) => ({CHART_SIGNATURE_JS})() !== before && ({IDLE_JS})()"
        " && new URL(location).searchParams.get('text') === text",
        arg=[before, text_for(student.index, final=True)],
        timeout=STEP_TIMEOUT_MS,
        polling=50,
    )
    student.url = page.url
    student.view = await page.evaluate(VIEW_JS)
    student.replica = await _replica_of(student.context)
    expected = {"layer": str(FAILOVER_LAYER), "ex_query": str(query), "ex_key": str(key), "causal": False}
    wrong = {name: student.view[name] for name, value in expected.items() if student.view[name] != value}
    if wrong:
        raise AssertionError(f"the view is not the one set: {wrong}")


async def _replica_of(context) -> str:
    return next((c["value"] for c in await context.cookies() if c["name"] == COOKIE), "")


def _query(url: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlparse(url).query)


async def _compare(student: Student, ignore: tuple[str, ...] = ()) -> list[str]:
    """What differs between the student's view now and the view it set (but ``ignore``)."""
    problems = []
    now, then = _query(student.page.url), _query(student.url)
    for name in sorted(set(now) | set(then)):
        if name not in ignore and now.get(name) != then.get(name):
            problems.append(f"URL {name}={now.get(name)} (was {then.get(name)})")
    view = await student.page.evaluate(VIEW_JS)
    for name, value in student.view.items():
        if name not in ignore and view.get(name) != value:
            problems.append(f"{name} is {view.get(name)!r} (was {value!r})")
    if await student.page.locator('[data-testid="stException"]').count():
        problems.append("the app shows an exception")
    return problems


def _states(seen: list[dict]) -> list[str]:
    """What a page showed of its connection, in order, each change once."""
    shown: list[str] = []
    for entry in seen:
        parts = [entry["state"]]
        if entry["greyed"]:
            parts.append("controls greyed out")
        parts += [f"“{entry[name]}”" for name in ("status", "dialog") if entry[name]]
        words = ", ".join(parts)
        if not shown or shown[-1] != words:
            shown.append(words)
    return shown


async def _click_causal(page) -> float:
    """Click the Causal mask toggle and wait for the run it starts; returns its seconds."""
    since = await page.evaluate("Date.now()")
    await page.locator(".st-key-ex_causal").get_by_text("Causal mask", exact=True).click()
    await _wait_run(page, since)
    return (await page.evaluate("Date.now()") - since) / 1000


async def _after_switch(
    student: Student, switch: Switch, killed_ms: float, screenshot: Path | None = None
) -> None:
    """Wait for the moved student's page to reconnect; then check its view and its next clicks."""
    page = student.page
    await page.wait_for_function(RECONNECTED_JS, arg=killed_ms, timeout=RECOVER_TIMEOUT_S * 1000, polling=50)
    if screenshot is not None:
        await page.screenshot(path=str(screenshot))
    seen = await page.evaluate("() => window.__failover")
    after_kill = [e for e in seen if e["t"] >= killed_ms]
    lost = next(i for i, e in enumerate(after_kill) if e["state"] != "CONNECTED")
    back = next(e for e in after_kill[lost:] if e["state"] == "CONNECTED")
    switch.lost_s = (after_kill[lost]["t"] - killed_ms) / 1000
    switch.reconnect_s = (back["t"] - killed_ms) / 1000
    switch.after = await _replica_of(student.context)
    # Connected again, the page still shows the view it had: nothing has run yet.
    switch.problems += [f"on reconnecting: {p}" for p in await _compare(student)]
    # The first click runs the script on the new replica, in a new session that reads the URL.
    was = student.view["causal"]
    switch.first_run_s = await _click_causal(page)
    switch.first_click_kept = (await page.evaluate(VIEW_JS))["causal"] != was
    switch.problems += [
        f"after the first run there: {p}" for p in await _compare(student, ignore=("causal",))
    ]
    if not switch.first_click_kept:  # the URL's value won over the click: the next click must work
        await _click_causal(page)
    if (await page.evaluate(VIEW_JS))["causal"] == was or _query(page.url).get("causal") != [
        "1" if not was else "0"
    ]:
        switch.problems.append("clicking Causal mask after the switch does not change it")


async def _failover(cluster: Cluster, sessions: int, evidence: Path) -> Failover:
    from playwright.async_api import async_playwright

    evidence.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            students = []
            for i in range(sessions):
                context = await browser.new_context(viewport={"width": 1300, "height": 900})
                context.set_default_timeout(STEP_TIMEOUT_MS)
                student = Student(100 + i, context, await context.new_page())
                student.page.on(
                    "console",
                    lambda message, s=student: s.console.append(f"{message.type}: {message.text[:160]}"),
                )
                students.append(student)
            results = await asyncio.gather(
                *(_set_view(s, cluster.url) for s in students), return_exceptions=True
            )
            setup_errors = [
                f"session {s.index} setting its view: {type(r).__name__}: {str(r).splitlines()[0][:200]}"
                for s, r in zip(students, results, strict=True)
                if isinstance(r, BaseException)
            ]
            if setup_errors:
                return Failover("", [], [], [], setup_errors, [])
            for student in students:
                student.console.clear()
                await student.page.evaluate(WATCH_JS, WATCH_MS)
            await students[0].page.wait_for_timeout(1000)  # the watch sees the pages connected first
            counts = {name: sum(s.replica == name for s in students) for name in cluster.ports}
            killed = max(counts, key=lambda name: counts[name])
            moved = [s for s in students if s.replica == killed]
            stayed = [s for s in students if s.replica != killed]

            victim = cluster.replica(killed)
            killed_ms = time.time() * 1000  # the pages' Date.now() runs on this machine's clock
            victim.send_signal(signal.SIGKILL)
            switches = [Switch(s.index, killed) for s in moved]
            # What the first moved student sees while its page has no server.
            await moved[0].page.wait_for_function(
                "() => document.querySelector('[data-testid=\"stApp\"]').dataset.testConnectionState"
                " !== 'CONNECTED'",
                timeout=RECOVER_TIMEOUT_S * 1000,
                polling=20,
            )
            await moved[0].page.wait_for_timeout(300)
            screenshots = [
                evidence / "replicas-failover-during.png",
                evidence / "replicas-failover-after.png",
            ]
            await moved[0].page.screenshot(path=str(screenshots[0]))
            # ... and once connected again, before its next click.
            results = await asyncio.gather(
                *(
                    _after_switch(s, w, killed_ms, screenshots[1] if s is moved[0] else None)
                    for s, w in zip(moved, switches, strict=True)
                ),
                return_exceptions=True,
            )
            for switch, student, result in zip(switches, moved, results, strict=True):
                if isinstance(result, BaseException):
                    switch.problems.append(f"{type(result).__name__}: {str(result).splitlines()[0][:200]}")
                seen = await student.page.evaluate("() => window.__failover")
                switch.states = _states([e for e in seen if e["t"] >= killed_ms - 1000])
            unaffected = []
            for student in stayed:
                seen = await student.page.evaluate("() => window.__failover")
                switch = Switch(student.index, student.replica, await _replica_of(student.context), 0.0, 0.0)
                switch.states = _states(seen)
                switch.problems = await _compare(student)
                unaffected.append(switch)
            console = [line for s in moved for line in s.console]
            return Failover(killed, switches, unaffected, screenshots, [], console)
        finally:
            await browser.close()


def run_failover(cluster: Cluster, sessions: int, evidence: Path = OUT) -> Failover:
    """``sessions`` students set their views, then the replica serving most of them is killed."""
    return run_in_own_loop(_failover(cluster, sessions, evidence))


# --- the report -----------------------------------------------------------------------------------


def _spread(values: list[float]) -> str:
    """``median / max`` in seconds, or n/a."""
    values = [value for value in values if value == value]  # NaN: not measured
    return f"{statistics.median(values):.1f} s / {max(values):.1f} s" if values else "n/a"


def table(load: ReplicaLoad, failover: Failover) -> str:
    names = list(load.idle_rss_mb)
    served = load.served
    moved = failover.moved
    latency = (
        f"{load.percentile(0.5):.2f} s / {load.percentile(0.95):.2f} s / "
        f"{max(load.latencies, default=float('nan')):.2f} s"
    )
    rows = [
        ("replicas", f"{load.replicas} (`streamlit run app.py` each, behind HAProxy)"),
        ("sessions at once, through the load balancer", f"{load.sessions}"),
        ("errors", f"{len(load.errors)}"),
        ("sessions ending in their own state", f"{sum(not r.errors for r in load.reports)}/{load.sessions}"),
        ("sessions per replica", ", ".join(f"{name}: {served.get(name, 0)}" for name in names)),
        ("toggle latency p50 / p95 / max", latency),
        (f"RSS per replica, idle{' with the model loaded' if load.warmed else ', no model loaded yet'}",
         ", ".join(f"{n}: {load.idle_rss_mb[n]:,.0f} MB" for n in names)),
        ("RSS per replica, peak under the load", ", ".join(f"{n}: {load.peak_rss_mb[n]:,.0f} MB" for n in names)),
        ("CPU time per replica during the load", ", ".join(f"{n}: {load.cpu_s[n]:.0f} s" for n in names)),
        ("wall time of the load", f"{load.seconds:.0f} s"),
        ("times HAProxy marked a replica down during the load", f"{sum(load.downs.values())}"),
        ("failover: sessions on the killed replica / on the other", f"{len(moved)} / {len(failover.stayed)}"),
        ("failover: kill → the page greys its controls (median / max)", _spread([s.lost_s for s in moved])),
        ("failover: kill → connected again, to the other replica (median / max)",
         _spread([s.reconnect_s for s in moved])),
        ("failover: the first click there → its run finished (median / max)",
         _spread([s.first_run_s for s in moved])),
        ("failover: moved sessions whose view (URL, text, toggles, layer, cell, chart) came back whole",
         f"{sum(not s.problems for s in moved)}/{len(moved)}"),
        ("failover: first clicks after the switch that took effect",
         f"{sum(bool(s.first_click_kept) for s in moved)}/{len(moved)}"),
        ("failover: sessions on the other replica that noticed anything",
         f"{sum(bool(s.problems) or len(s.states) > 1 for s in failover.stayed)}/{len(failover.stayed)}"),
        ("failover: errors", f"{len(failover.errors)}"),
    ]  # fmt: skip
    return "\n".join(["| measure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])


def describe(load: ReplicaLoad, failover: Failover, started: float) -> str:
    states = failover.moved[0].states if failover.moved else []
    lost = sum(s.first_click_kept is False for s in failover.moved)
    body = (
        f"{load.sessions} headless Chromium sessions at once against {load.replicas} replicas of "
        "`streamlit run app.py` behind HAProxy (`make serve-replicas`, `deploy/haproxy.cfg.in`: "
        "sticky `SERVERID` cookie, health checks on `/_stcore/health`, `option redispatch`), each "
        "running `benchmarks/classroom_load.py`'s session (explorer, two toggles, a new text, a "
        f"toggle). Then {len(failover.moved) + len(failover.stayed)} more students opened a link "
        f"(causal mask off, layer {FAILOVER_LAYER}, inspector cell {FAILOVER_CELL}) and typed a text "
        "of their own, and the replica serving most of them "
        f"({failover.killed}) was killed with SIGKILL. Made by `benchmarks/replicas.py`.\n\n"
        f"{table(load, failover)}\n\n"
        "- Which replica served a session: the `SERVERID` cookie its browser held. RSS: the "
        "replica's process tree (`streamlit` and its 1 MB output filter); idle = after the explorer "
        "was opened once on each replica (model loaded); peak = sampled every 50 ms during the load.\n"
        f"- What a moved student's page showed, in order (sampled every {WATCH_MS} ms): "
        f"{' → '.join(states) or 'n/a'}. The charts and text stay on screen throughout; nothing "
        "runs until the student's next click, which runs the page on the other replica in a new "
        "session that reads the URL (its caches recompute the capture there).\n"
        f"- {lost} of {len(failover.moved)} first clicks after the switch were undone: on a "
        "session's first run `ui/state.py` takes the URL's values over the widget values the "
        "browser sends, so the click reverts to what the URL held; the next click works.\n"
        f"- All browsers run on this machine's {os.cpu_count()} cores with the replicas, as in "
        "the classroom-load table: on one machine replicas add no cores, so they spread memory "
        "and risk, not CPU.\n"
        f"- Load average when the run ended: {os.getloadavg()[0]:.2f}. The whole benchmark took "
        f"{time.perf_counter() - started:.0f} s."
    )
    errors = [*load.errors, *failover.errors]
    if errors:
        shown = "; ".join(f"`{error[:160]}`" for error in errors[:5])
        body += f"\n- Errors ({len(errors)}{', the first 5' if len(errors) > 5 else ''}): {shown}."
    return body


def publish(body: str, raw: dict) -> None:
    """Write ``benchmarks/out/replicas.md`` (and .json); update README only where it has our markers."""
    from common import README, replace_section

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "replicas.md").write_text(body.strip() + "\n")
    (OUT / "replicas.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    print(f"wrote {OUT / 'replicas.md'}")
    if README.exists() and "<!-- bench:replicas:start -->" in README.read_text():
        README.write_text(replace_section(README.read_text(), "replicas", body))
        print(f"wrote {README}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=30)
    parser.add_argument("--failover-sessions", type=int, default=4)
    parser.add_argument("--no-publish", action="store_true", help="print only")
    args = parser.parse_args()
    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"{CHROMIUM} is missing: install it with `make setup-dev` (as root).")
    started = time.perf_counter()
    with replica_cluster(args.replicas) as cluster:
        load = run_load(cluster, args.sessions)
        failover = run_failover(cluster, args.failover_sessions)
    body = describe(load, failover, started)
    if args.no_publish:
        print(body)
    else:
        raw = {"load": dataclasses.asdict(load), "failover": dataclasses.asdict(failover)}
        publish(body, raw)
        print(body)
    for error in [*load.errors, *failover.errors][:20]:
        print("error:", error)
    sys.exit(1 if load.errors or failover.errors else 0)


if __name__ == "__main__":
    main()
