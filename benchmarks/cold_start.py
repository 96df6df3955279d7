"""Cold start: from ``streamlit run app.py`` to the first heatmap in the browser.

Measured for the Model explorer (SmolLM2, the default model) with the converted model already
in the cache, and without it (``ATTNVIZ_CACHE_DIR`` pointing to an empty temporary folder, so
the bundled GGUF file is dequantised again), and for the Playground, which loads no model.

How it is measured:

* The clock starts just before ``streamlit run`` is spawned (the same command as the browser
  tests, from the repo root). The server's health endpoint is polled every 50 ms; as soon as it
  answers, a fresh browser context (empty HTTP cache, new session) opens the page. Chromium
  itself is started beforehand, as a person's browser would already be running.
* The clock stops at the first ``plotly_afterplot`` on the page: plotly has drawn the first
  chart (the explorer's grid of all heads; the Playground's head grid), read in the page's own
  clock and converted to wall time with ``performance.timeOrigin``.
* "server up" is spawn → first healthy answer; "page" is the rest, up to the first heatmap:
  Python imports (torch, transformers), the model load or conversion, the first capture and
  the page's own start-up.
* The operating system's file cache is warm (the benchmark machine has read the GGUF file and
  the converted weights before), as for any second start of a machine; the very first start
  after a reboot reads them from disk.

Usage::

    .venv/bin/python benchmarks/cold_start.py               # about 4 minutes
    .venv/bin/python benchmarks/cold_start.py --repeats 1 --no-publish
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/cold_start.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import describe_machine, finish, markdown_table
from benchmarks.live_app import (
    REPO_ROOT,
    TreeLoad,
    chromium,
    load_average,
    open_page,
    streamlit_server,
)

SECTION = "cold-start"  # README section and benchmarks/out/ file name
FIRST_CHART_TIMEOUT_S = 600.0  # a conversion on a busy machine can take minutes


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    cached: bool


SCENARIOS = (
    Scenario("Model explorer (smollm2), conversion cached", "/model_explorer", cached=True),
    Scenario("Model explorer (smollm2), no cache: converts the GGUF", "/model_explorer", cached=False),
    Scenario("Playground (no model)", "/", cached=True),
)


@dataclass
class Start:
    """One cold start, in seconds from the spawn of ``streamlit run``."""

    server_up: float
    first_chart: float
    other_cores: float | None
    load: str


@dataclass
class Results:
    scenario: Scenario
    starts: list[Start] = field(default_factory=list)


def _first_chart_wall_time(watched) -> float:
    """Wall time (``time.time()``) of the first plotly_afterplot on the page."""
    handle = watched.page.wait_for_function(
        "() => window.__bench && window.__bench.afterplot.length > 0"
        " && performance.timeOrigin + window.__bench.afterplot[0].t",
        timeout=FIRST_CHART_TIMEOUT_S * 1000,
        polling=50,
    )
    return handle.json_value() / 1000


def cold_start(browser, scenario: Scenario) -> Start:
    """Start a server, open the page at once, and time the first heatmap."""
    empty_cache = None if scenario.cached else Path(tempfile.mkdtemp(prefix="attnviz-cold-cache-"))
    env = {} if empty_cache is None else {"ATTNVIZ_CACHE_DIR": str(empty_cache)}
    try:
        with TreeLoad() as load, streamlit_server("app.py", env=env) as server:
            watched = open_page(browser)
            try:
                watched.page.goto(server.url + scenario.path)
                first_chart = _first_chart_wall_time(watched)
                if watched.external:
                    raise RuntimeError(f"the page contacted other hosts: {watched.external}")
            finally:
                watched.close()
        if empty_cache is not None and not any(empty_cache.iterdir()):
            raise AssertionError("the uncached start wrote no converted model: was the cache really empty?")
    finally:
        if empty_cache is not None:
            shutil.rmtree(empty_cache, ignore_errors=True)
    return Start(
        server_up=server.healthy - server.spawned,
        first_chart=first_chart - server.spawned,
        other_cores=load.cores,
        load=load_average(),
    )


# What the first session imports before it can draw anything: (label, Python statement).
IMPORTS = (
    ("`import torch`", "import torch"),
    ("`import torch, transformers`", "import torch, transformers"),
    ("`import attention_viz.toy` (the Playground's model)", "import attention_viz.toy"),
    ("`import ui.cache` (every page's caches)", "import ui.cache"),
)


def import_seconds(statement: str, repeats: int) -> float:
    """Median wall time of a fresh ``python -c STATEMENT`` minus that of an empty one."""

    def once(code: str) -> float:
        start = time.perf_counter()
        # Output is dropped: ui.cache warns that no Streamlit runtime is running, which is expected.
        subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True)
        return time.perf_counter() - start

    empty = statistics.median(once("pass") for _ in range(repeats))
    return statistics.median(once(statement) for _ in range(repeats)) - empty


def report(
    results: list[Results],
    imports: dict[str, float],
    options: argparse.Namespace,
    machine: dict[str, str],
    elapsed: float,
) -> str:
    headers = [
        "page and model cache",
        "server up (s)",
        "then page → first heatmap (s)",
        "`streamlit run` → first heatmap, median (s)",
        "max (s)",
        "others' load (cores)",
    ]
    rows = []
    for result in results:
        starts = result.starts
        cores = [start.other_cores for start in starts if start.other_cores is not None]
        rows.append(
            [
                result.scenario.name,
                f"{statistics.median(s.server_up for s in starts):.1f}",
                f"{statistics.median(s.first_chart - s.server_up for s in starts):.1f}",
                f"{statistics.median(s.first_chart for s in starts):.1f}",
                f"{max(s.first_chart for s in starts):.1f}",
                f"{statistics.mean(cores):.2f}" if cores else "n/a",
            ]
        )
    loads = [start.load for result in results for start in result.starts]
    return "\n".join(
        [
            f"From spawning `streamlit run app.py` to plotly's first `plotly_afterplot` in headless Chromium "
            f"(a fresh browser context opened as soon as the server answers its health check); median and max "
            f"of {options.repeats} starts. Made by `benchmarks/cold_start.py`.",
            "",
            markdown_table(headers, rows),
            "",
            "- Imports in a fresh Python (median of "
            f"{options.repeats}, interpreter start-up subtracted): "
            + "; ".join(f"{label} {seconds:.1f} s" for label, seconds in imports.items())
            + ". The server imports these when the first session runs a page.",
            "- No cache: `ATTNVIZ_CACHE_DIR` is an empty temporary folder, so the first session dequantises "
            "the bundled GGUF and writes the safetensors cache (removed again afterwards).",
            "- The OS file cache was warm (the model files had been read before), as on any but the first "
            "start after a reboot.",
            f"- Load average (1, 5, 15 min) at start {machine['load average (1, 5, 15 min) at start']}; after "
            f"the last starts: {', '.join(f'[{load}]' for load in loads[-3:])}. Others' load = cores kept busy "
            "by processes other than this benchmark, its server and its browser.",
            "- Chromium runs on the same 2 cores as the server here; in a classroom each browser runs on "
            "its own machine, so server and browser would not compete for the CPU.",
            "- Machine: "
            + "; ".join(f"{key} {value}" for key, value in machine.items() if "load" not in key)
            + ".",
            f"- The whole benchmark took {elapsed:.0f} s.",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold starts per scenario")
    parser.add_argument("--no-publish", action="store_true", help="print only; write no files")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1.")
    return args


def main(argv: list[str] | None = None) -> list[Results]:
    args = parse_args(argv)
    started = time.perf_counter()
    machine = describe_machine()
    results = [Results(scenario) for scenario in SCENARIOS]
    with chromium() as browser:
        for round_index in range(args.repeats):
            for result in results:  # interleaved, so slow phases of the machine hit every scenario
                start = cold_start(browser, result.scenario)
                result.starts.append(start)
                print(
                    f"  {round_index + 1}/{args.repeats} {result.scenario.name}: server up {start.server_up:.1f} s, "
                    f"first heatmap {start.first_chart:.1f} s, others {start.other_cores or 0:.1f} cores, "
                    f"load {start.load}",
                    flush=True,
                )
    imports = {label: import_seconds(statement, args.repeats) for label, statement in IMPORTS}
    body = report(results, imports, args, machine, time.perf_counter() - started)
    raw = {
        "starts": [{"scenario": r.scenario.name, "starts": [s.__dict__ for s in r.starts]} for r in results],
        "imports_s": imports,
    }
    finish(SECTION, body, args.no_publish, raw)
    return results


if __name__ == "__main__":
    main()
