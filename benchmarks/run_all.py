"""Run every benchmark in one go on this machine, and describe the machine in README.md.

Runs, each as its own process and in this order: capture_cost.py, figure_payload.py,
toggle_latency.py, cold_start.py, classroom_load.py (30 sessions), replicas.py (30 sessions
through HAProxy to 2 replicas, then one replica killed; needs Debian's haproxy) and
peer_bertviz.py (bertviz's head_view beside the Model explorer, in its own environment). Each prints its
table and rewrites its README section (replicas.py writes benchmarks/out/replicas.md, and README
only where it has the markers); this script fills the ``bench:machine`` section with the CPU, cores,
memory, library versions and the date.

The machine may be shared: before each script, this one waits (up to ``--max-wait`` seconds)
until the 1-minute load average is below ``--max-load``, and says so when it gave up waiting.

Usage::

    make bench                                   # = .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py --only figure_payload cold_start
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/run_all.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import describe_machine, publish

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
SCRIPTS = (
    "capture_cost",
    "figure_payload",
    "toggle_latency",
    "cold_start",
    "classroom_load",
    "replicas",
    "peer_bertviz",
)
ARGUMENTS = {"classroom_load": ["--sessions", "30", "--readme"]}
SECTION = "machine"
LOAD_POLL_S = 10


def _memory() -> str:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    return "unknown"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _chromium() -> str:
    try:
        found = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return found.stdout.strip() or "unknown"


def machine_section() -> str:
    """The machine every table below was measured on."""
    machine = describe_machine()
    details = {
        "CPU": machine["CPU"],
        "cores": machine["cores"],
        "memory": _memory(),
        "OS": os.uname().sysname + " " + os.uname().release,
        "python": machine["python"],
        "torch": f"{machine['torch']} ({machine['torch threads']} threads)",
        "transformers": machine["transformers"],
        "streamlit": _version("streamlit"),
        "plotly": _version("plotly"),
        "playwright": _version("playwright"),
        "browser": _chromium(),
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "load average (1, 5, 15 min) before the run": machine["load average (1, 5, 15 min) at start"],
    }
    lines = [
        "Every table below comes from one run of `make bench` (`benchmarks/run_all.py`) on this machine:",
        "",
        *(f"- **{key}**: {value}" for key, value in details.items()),
    ]
    return "\n".join(lines)


def wait_for_quiet(max_load: float, max_wait: float) -> str:
    """Wait until the 1-minute load average is below ``max_load``; returns what happened."""
    deadline = time.monotonic() + max_wait
    waited = 0.0
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(LOAD_POLL_S)
        waited += LOAD_POLL_S
    load = os.getloadavg()[0]
    state = "quiet" if load < max_load else f"still busy after {max_wait:.0f} s"
    return f"load average {load:.2f} ({state}, waited {waited:.0f} s)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SCRIPTS, help="run only these benchmarks")
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a 1-minute load below this")
    parser.add_argument("--max-wait", type=float, default=300.0, help="wait at most this long per script (s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(wait_for_quiet(args.max_load, args.max_wait), flush=True)
    publish(SECTION, machine_section())
    failed = []
    for name in args.only or SCRIPTS:
        script = BENCHMARKS / f"{name}.py"
        if not script.exists():
            failed.append(name)
            print(f"== {name}: {script} is missing", flush=True)
            continue
        print(f"== {name}: {wait_for_quiet(args.max_load, args.max_wait)}", flush=True)
        started = time.perf_counter()
        code = subprocess.run(
            [sys.executable, str(script), *ARGUMENTS.get(name, [])], cwd=REPO_ROOT
        ).returncode
        print(f"== {name}: exit code {code} after {time.perf_counter() - started:.0f} s", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
