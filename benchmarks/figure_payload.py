"""Figure payload: what the explorer's head grid costs on the websocket and in the browser.

All 9 heads of one SmolLM2 layer, as the Model explorer's grid draws them
(``attention_viz.figures.head_grid(..., columns=3, panel_px=230, max_side=512)``), on real
weights from ``capture(load_model("smollm2"), text, layers=[L], policy=MaskPolicy(max_length=N))``, at N = 64, 512
and 2048, against a naive baseline: nine ``go.Heatmap`` small multiples whose ``z`` are plain
Python lists of floats, which plotly writes as decimal JSON numbers.

Budget: all 9 heads of one layer at N = 512 cost at most 3 MB (3,000,000 bytes) on the websocket.

How it is measured:

* **Figures.** Built in this process from one capture per N (one long English text, cut to
  exactly N tokens). The build time covers ``head_grid`` (or the naive figure) and
  ``plotly.io.to_json``, the call ``st.plotly_chart`` makes.
* **Bytes.** A tiny Streamlit script (written to a temporary folder, served by ``streamlit run``
  from the repo root so .streamlit/config.toml applies) draws one small warm-up chart, then the
  measured figure once its "Draw" button is clicked. Playwright counts the websocket frames the
  page receives (``page.on("websocket")`` then ``framereceived``) from the click until the run
  has finished: the figure's message plus the few small messages of any rerun (measured alone,
  with no figure, and listed under the table). Streamlit sends websocket frames uncompressed
  (``server.enableWebsocketCompression`` is off by default), so these are the bytes on the wire,
  less a few bytes of frame headers.
* **Render time.** In headless Chromium, in the page's own clock: from the arrival of the
  websocket message that carries the figure (the largest one after the click) to plotly's
  ``plotly_afterplot`` event on the chart, which plotly emits once the plot, its images
  included, is drawn. The warm-up chart has already loaded plotly.js, so its download is not
  counted. Median of ``--repeats`` page loads, each a fresh browser context and session.
* **Naive N = 2048** would be a JSON text of hundreds of MB, beyond Streamlit's 200 MB
  message limit (``server.maxMessageSize``) and a browser's string limit, so it is only sized:
  the JSON length is computed exactly without building the figure (the same method is checked
  against the built figure at the smaller N).
* **Every layer.** At N = 512 the grid of every layer is built and its JSON sized, with the
  causal mask on and off, because the PNG images compress some patterns less than others.

Usage::

    .venv/bin/python benchmarks/figure_payload.py              # about 4 minutes
    .venv/bin/python benchmarks/figure_payload.py --sizes 64 512 --repeats 1 --no-layer-scan --no-publish
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/figure_payload.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

from attention_viz.capture import Capture, capture
from attention_viz.figures import HOVER_CELL_LIMIT, FigureStyle, head_grid, stage_range
from attention_viz.loading import LoadedModel, load_model
from attention_viz.policy import MaskPolicy
from benchmarks.common import describe_machine, finish, markdown_table
from benchmarks.live_app import (
    TreeLoad,
    chromium,
    english_text,
    load_average,
    open_page,
    streamlit_server,
    wait_for_redraw,
    wait_idle,
)

SECTION = "figure-payload"  # README section and benchmarks/out/ file name
MODEL = "smollm2"
SIZES = (64, 512, 2048)
BUDGET_BYTES = 3_000_000  # decimal MB: the stricter reading of "3 MB"
BUDGET_LENGTH = 512
# As pages/2_model_explorer.py draws its grid (not in presentation mode).
GRID_MAX_SIDE = 512
GRID_COLUMNS = 3
GRID_PANEL_PX = 230
CHARS_PER_TOKEN = 7  # more than SmolLM2 needs for English (about 5.2), so every text is cut to N
# Streamlit refuses larger messages (server.maxMessageSize, in MB).
MAX_MESSAGE_BYTES = 200 * 10**6
FIGURE_KEY = "bench_fig"
RENDER_TIMEOUT_S = 300.0
MB = 1e6

PAYLOAD_APP = '''\
"""Benchmark page: a warm-up chart, then the pickled figure named by ?case= when "Draw" is clicked."""

import os
import pickle
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

st.set_page_config(page_title="figure payload", layout="wide")
case = st.query_params.get("case", "")
# plotly.js is a lazily loaded chunk: draw something small first, so its load is never timed.
st.plotly_chart(go.Figure(go.Heatmap(z=[[0.0, 1.0], [1.0, 0.0]]), layout={"height": 200}), key="warmup")
left, right = st.columns([3, 2])  # the explorer's grid column
with left:
    if st.button("Draw", key="draw") and case != "none":
        figure = pickle.loads((Path(os.environ["BENCH_FIGURES"]) / f"{case}.pickle").read_bytes())
        st.plotly_chart(figure, key="bench_fig")
'''


@dataclass
class Case:
    """One figure at one N, and what it cost."""

    length: int
    kind: str  # "app" or "naive"
    json_bytes: int
    build_s: float  # figure + plotly.io.to_json, in this process; nan when only sized
    sendable: bool = True
    ws_bytes: list[int] = field(default_factory=list)
    page_bytes: list[int] = field(default_factory=list)  # the same, as the page itself counted them
    render_ms: list[float] = field(default_factory=list)
    click_to_drawn_ms: list[float] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.length}"


def grid_figure(result: Capture, layer: int, model: LoadedModel) -> go.Figure:
    """All heads of ``layer`` exactly as the Model explorer draws its grid (default style)."""
    captured = result.layer(layer)
    matrices = captured.stage("weights")[0]  # (H, T, T)
    style = FigureStyle()
    grouped = model.num_kv_heads != model.num_heads
    return head_grid(
        matrices,
        result.tokens[0],
        result.tokens[0],
        stage_range("weights", matrices, style.palette),
        allowed=result.mask[0, 0],
        titles=[
            f"head {h}" + (f" (kv {captured.kv_head[h]})" if grouped else "") for h in range(model.num_heads)
        ],
        columns=GRID_COLUMNS,
        style=style,
        panel_px=GRID_PANEL_PX,
        max_side=GRID_MAX_SIDE,
    )


def naive_figure(weights: torch.Tensor, placeholder: bool = False) -> go.Figure:
    """The straightforward way: a 3 × 3 grid of ``go.Heatmap`` with ``z`` as nested float lists.

    ``placeholder`` puts ``[[0.0]]`` in place of every matrix (to size the JSON without it).

    Shape: ``weights`` is ``(H, T, T)``.
    """
    heads = weights.shape[0]
    rows = -(-heads // GRID_COLUMNS)
    figure = make_subplots(rows=rows, cols=GRID_COLUMNS, subplot_titles=[f"head {h}" for h in range(heads)])
    for head in range(heads):
        z = [[0.0]] if placeholder else weights[head].tolist()  # Python floats: JSON decimals
        figure.add_trace(
            go.Heatmap(z=z, zmin=0, zmax=1, colorscale="Viridis", showscale=head == 0),
            row=head // GRID_COLUMNS + 1,
            col=head % GRID_COLUMNS + 1,
        )
    figure.update_yaxes(autorange="reversed")
    figure.update_layout(height=rows * GRID_PANEL_PX + 60)
    return figure


def naive_json_bytes(weights: torch.Tensor) -> int:
    """The exact length of ``plotly.io.to_json(naive_figure(weights))``, without building it.

    plotly writes floats with Python's ``repr`` and separators ``(",", ":")``, as ``json.dumps``
    does here, one head at a time.
    """
    skeleton = len(pio.to_json(naive_figure(weights, placeholder=True), validate=False))
    placeholder = len(json.dumps([[0.0]], separators=(",", ":")))
    return skeleton + sum(
        len(json.dumps(weights[head].tolist(), separators=(",", ":"))) - placeholder
        for head in range(weights.shape[0])
    )


def build(kind: str, result: Capture, layer: int, model: LoadedModel, folder: Path) -> Case:
    """Build one figure, time it with its JSON, and pickle it for the payload page."""
    length = result.input_ids.shape[1]
    weights = result.layer(layer).weights[0]  # (H, T, T)
    estimate = naive_json_bytes(weights) if kind == "naive" else None
    if estimate is not None and estimate >= MAX_MESSAGE_BYTES:
        return Case(length, kind, estimate, float("nan"), sendable=False)
    start = time.perf_counter()
    figure = grid_figure(result, layer, model) if kind == "app" else naive_figure(weights)
    text = pio.to_json(figure, validate=False)
    seconds = time.perf_counter() - start
    if estimate is not None and estimate != len(text):
        raise AssertionError(f"naive JSON sized {estimate} bytes without building, {len(text)} built")
    case = Case(length, kind, len(text), seconds)
    (folder / f"{case.name}.pickle").write_bytes(pickle.dumps(figure))
    return case


def layer_scan(model: LoadedModel, text: str, length: int) -> list[tuple[str, int, int]]:
    """(mask, layer, JSON bytes of the explorer's grid) for every layer, causal mask on and off.

    Without the causal mask there is no grey triangle, so the images hold more detail.
    """
    sizes = []
    for causal in (True, False):
        for layer in range(model.num_layers):
            result = capture(
                model, text, layers=[layer], policy=MaskPolicy(causal=causal, max_length=length), effect=False
            )
            size = len(pio.to_json(grid_figure(result, layer, model), validate=False))
            sizes.append(("causal on" if causal else "causal off", layer, size))
    return sizes


def measure_once(browser, url: str, case_name: str) -> dict:
    """Open the payload page, click "Draw", and time the figure; ``case_name`` "none" draws nothing."""
    watched = open_page(browser)
    try:
        watched.page.goto(f"{url}/?case={case_name}")
        wait_idle(watched.page, plots=1)
        keys = [] if case_name == "none" else [FIGURE_KEY]
        with TreeLoad() as load:
            mark = time.monotonic()
            watched.page.get_by_role("button", name="Draw").click()
            timings = wait_for_redraw(watched, keys, {FIGURE_KEY: None}, RENDER_TIMEOUT_S)
            watched.page.wait_for_timeout(300)  # let Playwright deliver the last frame events
        received = watched.bytes_since(mark)
        record = watched.record()
        if watched.external:
            raise RuntimeError(f"the page contacted other hosts: {watched.external}")
    finally:
        watched.close()
    click = record["clicks"][-1]
    after = [frame for frame in record["frames"] if frame["t"] >= click]
    result = {
        "ws_bytes": received,
        "page_bytes": sum(frame["size"] for frame in after),
        "other_cores": load.cores,
        "finished_ms": timings["finished"],
    }
    if keys:
        carrier = max(after, key=lambda frame: frame["size"])
        drawn = timings["charts"][FIGURE_KEY]
        result.update(render_ms=drawn - (carrier["t"] - click), click_to_drawn_ms=drawn)
    return result


def run_browser(cases: list[Case], folder: Path, repeats: int) -> dict:
    """Measure every sendable case ``repeats`` times, in rotating order; returns the empty rerun's bytes."""
    script = folder / "payload_app.py"
    script.write_text(PAYLOAD_APP)
    sendable = [case for case in cases if case.sendable]
    empty: list[int] = []
    with streamlit_server(script, env={"BENCH_FIGURES": str(folder)}) as server, chromium() as browser:
        measure_once(browser, server.url, "none")  # warm-up: browser cache, server imports
        for round_index in range(repeats):
            empty.append(measure_once(browser, server.url, "none")["ws_bytes"])
            shift = round_index % len(sendable)
            for case in sendable[shift:] + sendable[:shift]:
                sample = measure_once(browser, server.url, case.name)
                case.ws_bytes.append(sample["ws_bytes"])
                case.page_bytes.append(sample["page_bytes"])
                case.render_ms.append(sample["render_ms"])
                case.click_to_drawn_ms.append(sample["click_to_drawn_ms"])
                if sample["other_cores"] is not None:
                    case.other_cores.append(sample["other_cores"])
                print(
                    f"  round {round_index + 1}/{repeats} {case.name}: {sample['ws_bytes'] / MB:.3f} MB, "
                    f"render {sample['render_ms']:.0f} ms, others {sample['other_cores'] or 0:.1f} cores, "
                    f"load {load_average()}",
                    flush=True,
                )
    return {"empty_rerun_bytes": empty}


def ratio(value: float) -> str:
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def megabytes(count: float) -> str:
    return f"{count / MB:.3f}" if count < 10 * MB else f"{count / MB:.1f}"


def report(
    cases: list[Case],
    extra: dict,
    scan: list[tuple[str, int, int]],
    layer: int,
    heads: int,
    options: argparse.Namespace,
    machine: dict[str, str],
    load_end: str,
    elapsed: float,
) -> str:
    headers = [
        "N",
        "figure",
        "JSON (MB)",
        "websocket (MB)",
        "naive ÷ explorer",
        "render in browser (ms)",
        "build + to_json (ms)",
    ]
    naive = {case.length: case for case in cases if case.kind == "naive"}
    rows = []
    for case in sorted(cases, key=lambda c: (c.length, c.kind)):
        label = (
            f"explorer grid ({'heatmaps' if case.length**2 <= HOVER_CELL_LIMIT else 'PNG images'})"
            if case.kind == "app"
            else "naive float JSON"
        )
        if case.sendable:
            ws = statistics.median(case.ws_bytes)
            ws_cell = megabytes(ws)
            render = f"{statistics.median(case.render_ms):.0f}"
        else:
            ws, ws_cell, render = None, f"not sendable (> {MAX_MESSAGE_BYTES / MB:.0f} MB limit)", "–"
        versus = "–"
        base = naive.get(case.length) if case.kind == "app" else None
        if base is not None and base.sendable and ws:
            versus = ratio(statistics.median(base.ws_bytes) / ws)
        elif base is not None:
            versus = ratio(base.json_bytes / case.json_bytes) + " (JSON)"
        build_cell = "–" if math.isnan(case.build_s) else f"{case.build_s * 1000:.0f}"
        rows.append([case.length, label, megabytes(case.json_bytes), ws_cell, versus, render, build_cell])

    budget_case = next((c for c in cases if c.kind == "app" and c.length == BUDGET_LENGTH), None)
    if budget_case is None:
        verdict = f"not measured (N = {BUDGET_LENGTH} was not run)"
    else:
        worst = max(budget_case.ws_bytes)
        verdict = (
            f"**{'met' if worst <= BUDGET_BYTES else 'missed'}**: {worst / MB:.3f} MB "
            f"(largest of {len(budget_case.ws_bytes)} page loads)"
        )
    empty = extra["empty_rerun_bytes"]
    loads = [core for case in cases for core in case.other_cores]
    lines = [
        f"All {heads} heads of layer {layer} of {MODEL}, as the Model explorer's grid "
        f"draws them (`head_grid(..., max_side={GRID_MAX_SIDE})`: a heatmap per head up to 96 × 96 "
        "tokens, PNG images beyond, max-pooled to 512 × 512 from N = 513), against a naive "
        "baseline of nine `go.Heatmap` whose `z` are Python float lists. Websocket = bytes the page "
        "received from the click that draws the figure until the run finished (median of "
        f"{options.repeats} page loads); render = from the figure's message arriving to plotly's "
        "`plotly_afterplot`, in headless Chromium (median). Made by `benchmarks/figure_payload.py`.",
        "",
        markdown_table(headers, rows),
        "",
        f"Budget, all 9 heads of one layer at N = {BUDGET_LENGTH} ≤ {BUDGET_BYTES / MB:.0f} MB on the websocket: "
        f"{verdict}.",
        "",
    ]
    if scan:
        ordered = sorted(scan, key=lambda item: item[2])
        smallest, largest = ordered[0], ordered[-1]
        overhead = max(budget_case.ws_bytes) - budget_case.json_bytes if budget_case else 0
        worst = largest[2] + overhead
        lines.append(
            f"- Every layer at N = {BUDGET_LENGTH}, causal mask on and off ({len(scan)} grids, JSON): "
            f"smallest {smallest[2] / MB:.3f} MB (layer {smallest[1]}, {smallest[0]}), median "
            f"{statistics.median(size for *_, size in scan) / MB:.3f} MB, largest {largest[2] / MB:.3f} MB "
            f"(layer {largest[1]}, {largest[0]}); with the measured protocol overhead ({overhead / 1000:.0f} kB) "
            f"the largest is {worst / MB:.3f} MB on the websocket: the budget is "
            f"{'met in every layer' if worst <= BUDGET_BYTES else '**missed** in some layers'}."
        )
    lines += [
        f"- A rerun that draws no figure receives {statistics.median(empty) / 1000:.1f} kB (included above).",
        "- Websocket bytes counted by Playwright (`framereceived`) and by the page itself agree: "
        + (
            "yes."
            if all(c.ws_bytes == c.page_bytes for c in cases if c.sendable)
            else "**no**, see benchmarks/out/."
        )
        + " Streamlit does not compress websocket frames by default.",
        "- Naive N = 2048 is sized, not sent: its JSON is larger than Streamlit's message limit.",
        "- Render time includes Streamlit decoding the message, React, JSON parsing and plotly drawing "
        "(with `--disable-gpu`, as in the browser tests).",
        f"- Text: plain English cut to exactly N tokens; viewport {1400}×{1000}; default palette.",
        f"- Other processes kept {statistics.mean(loads) if loads else 0:.2f} cores busy on average while "
        f"a figure was drawn ({max(loads) if loads else 0:.2f} at most); load average (1, 5, 15 min) at start "
        f"{machine['load average (1, 5, 15 min) at start']}, at the end {load_end}.",
        "- Chromium runs on the same 2 cores as the server here; in a classroom each browser runs on "
        "its own machine, so server and browser would not compete for the CPU.",
        "- Machine: "
        + "; ".join(f"{key} {value}" for key, value in machine.items() if "load" not in key)
        + ".",
        f"- The whole benchmark took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="sequence lengths N")
    parser.add_argument(
        "--layer", type=int, default=0, help="layer drawn (default 0, the explorer's default)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="page loads per figure")
    parser.add_argument(
        "--no-layer-scan", action="store_true", help=f"skip sizing every layer at N = {BUDGET_LENGTH}"
    )
    parser.add_argument("--no-publish", action="store_true", help="print only; write no files")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1.")
    return args


def main(argv: list[str] | None = None) -> list[Case]:
    args = parse_args(argv)
    started = time.perf_counter()
    machine = describe_machine()
    model = load_model(MODEL, progress=lambda message: print(message, flush=True))
    layer = model.check_layers([args.layer])[0]
    text = english_text(max(args.sizes) * CHARS_PER_TOKEN)
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="attnviz-payload-") as tmp:
        folder = Path(tmp)
        for length in sorted(args.sizes):
            result = capture(model, text, layers=[layer], policy=MaskPolicy(max_length=length), effect=False)
            if int(result.attention_mask.sum()) != length:
                raise AssertionError(f"expected {length} real tokens, got {int(result.attention_mask.sum())}")
            for kind in ("app", "naive"):
                cases.append(build(kind, result, layer, model, folder))
                print(f"N = {length} {kind}: JSON {cases[-1].json_bytes / MB:.3f} MB", flush=True)
            del result
        scan = [] if args.no_layer_scan else layer_scan(model, text, BUDGET_LENGTH)
        heads = model.num_heads
        del model
        print(f"browser: {args.repeats} page loads per figure, load {load_average()}", flush=True)
        extra = run_browser(cases, folder, args.repeats)
    body = report(
        cases, extra, scan, layer, heads, args, machine, load_average(), time.perf_counter() - started
    )
    raw = {"cases": [case.__dict__ for case in cases], "layer_scan": scan, **extra}
    finish(SECTION, body, args.no_publish, raw)
    return cases


if __name__ == "__main__":
    main()
