"""What an open tab costs a classroom server, and whether memory comes back when tabs close.

Starts one server (`streamlit run app.py`, with the allocator setting of `make app`), warms the
model, then opens TABS idle Model-explorer tabs one after another on the same long text (one
shared cache entry, like a class following the teacher's link) and on the default text,
measuring the server's resident memory (RSS) after each; closes every tab and measures again
after Streamlit has dropped the disconnected sessions (server.disconnectedSessionTTL, 120 s).

Usage::

    .venv/bin/python benchmarks/tab_memory.py --tabs 6 [--readme]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import publish
from benchmarks.live_app import chromium, english_text, load_average, open_page, streamlit_server, wait_idle

SETTLE_S = 150  # > server.disconnectedSessionTTL (120 s)
CASES = {
    "default text (11 tokens)": {},
    # As long as a link may carry (ui/state.py's MAX_PARAM_CHARS is 4,000 characters).
    "a long text (about 800 tokens)": {"text": english_text(3_800, max_chars=3_900)},
}


def rss_mb(pid: int) -> float:
    process = psutil.Process(pid)
    return (
        process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
    ) / 2**20


def measure(tabs: int) -> list[tuple[str, float, float, float, float]]:
    """Per case: (case, RSS before, RSS with every tab open, MB per tab, RSS after closing)."""
    rows = []
    with streamlit_server() as server, chromium() as browser:
        warm = open_page(browser)
        warm.page.goto(server.url + "/model_explorer")
        wait_idle(warm.page, plots=3, timeout_s=300)
        warm.close()
        time.sleep(SETTLE_S)
        for case, query in CASES.items():
            url = server.url + "/model_explorer" + ("?" + urlencode(query) if query else "")
            before = rss_mb(server.process.pid)
            pages = []
            for _ in range(tabs):
                watched = open_page(browser)
                watched.page.goto(url)
                wait_idle(watched.page, plots=3, timeout_s=300)
                pages.append(watched)
            time.sleep(5)
            opened = rss_mb(server.process.pid)
            for watched in pages:
                watched.close()
            time.sleep(SETTLE_S)
            after = rss_mb(server.process.pid)
            rows.append((case, before, opened, (opened - before) / tabs, after))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tabs", type=int, default=6)
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    rows = measure(args.tabs)
    table = "\n".join(
        [
            f"| explorer tabs on | RSS before | {args.tabs} tabs open | per open tab | {SETTLE_S} s after closing |",
            "| --- | ---: | ---: | ---: | ---: |",
            *(
                f"| {case} | {before:,.0f} MB | {opened:,.0f} MB | {per:,.0f} MB | {after:,.0f} MB |"
                for case, before, opened, per, after in rows
            ),
        ]
    )
    body = (
        f"{args.tabs} idle Model-explorer tabs opened one after another on the same link, then closed "
        f"(`python benchmarks/tab_memory.py --tabs {args.tabs} --readme`). The first tab of a text "
        "computes its capture (cached for everyone), the others reuse it; a tab holds its widgets and "
        "figures, never a capture.\n\n"
        f"{table}\n\n- Load average when the run ended: {load_average()}."
    )
    if args.readme:
        publish("tab-memory", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
