"""Small helpers shared by the benchmark scripts: the machine, peak memory, tables, publishing.

* :func:`describe_machine` names the CPU, cores, library versions and torch threads, so a
  number is never read without the machine it came from.
* :class:`PeakMemory` measures how far this process's resident memory rose during a block.
* :class:`OtherLoad` measures how many cores other processes kept busy meanwhile: on a shared
  machine that is what makes one run of the same call several times slower than the next.
* :func:`markdown_table` formats rows; :func:`publish` writes a result to ``benchmarks/out/``
  and into README.md between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import platform
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "OUT_DIR",
    "README",
    "OtherLoad",
    "PeakMemory",
    "describe_machine",
    "wait_for_quiet",
    "markdown_table",
    "publish",
    "replace_section",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
MB = 2**20
_NUMBER = re.compile(r"^[-+]?[\d.,]+(e[-+]?\d+)?\s*[×%]?[†*]?$")  # a number, maybe with a unit or mark


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def describe_machine() -> dict[str, str]:
    """What a reader needs to judge the timings: CPU, cores, versions, threads, current load."""
    import torch  # imported here so that table helpers stay usable without torch
    import transformers

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    # Other jobs on a shared machine slow every case; the load average says how busy it was.
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    return {
        "CPU": _cpu_model(),
        "cores": f"{os.cpu_count()} ({usable} usable by this process)",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch threads": str(torch.get_num_threads()),
        "load average (1, 5, 15 min) at start": load,
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; columns of numbers (``1.25``, ``4.1×``, ``12%``) are right-aligned."""
    if any(len(row) != len(headers) for row in rows):
        raise ValueError(f"Every row needs {len(headers)} cells, one per header: {list(headers)}.")
    cells = [[str(cell) for cell in row] for row in rows]
    numeric = [
        bool(cells) and all(_NUMBER.match(row[column]) for row in cells) for column in range(len(headers))
    ]
    rule = ["---:" if right else ":---" for right in numeric]
    lines = [headers, rule, *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between the ``bench:NAME`` start and end markers of ``text`` with ``body``.

    The markers stay. Raises ``ValueError`` if they are missing, repeated or out of order.
    """
    start, end = _markers(name)
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"Expected one {start!r} followed by one {end!r}.")
    head, rest = text.split(start)
    _, tail = rest.split(end)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def publish(name: str, body: str, readme: Path = README, out_dir: Path = OUT_DIR) -> list[Path]:
    """Print ``body``, write it to ``out_dir/NAME.md``, and put it into ``readme`` if that exists.

    A README without this benchmark's markers gets a new section at its end, markers included;
    a missing README is left missing (it is not ours to create).

    Returns the files written.
    """
    print(body)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / f"{name}.md"]
    written[0].write_text(body.strip() + "\n")
    if readme.exists():
        text = readme.read_text()
        start, end = _markers(name)
        if start not in text and end not in text:
            text = f"{text.rstrip()}\n\n## Benchmark: {name}\n\n{start}\n{end}\n"
        readme.write_text(replace_section(text, name, body))
        written.append(readme)
    return written


def finish(name: str, body: str, no_publish: bool, raw: object | None = None) -> None:
    """The end of every benchmark: print only (``--no-publish``), or publish the table and
    write the raw measurements to ``OUT_DIR/NAME.json``."""
    if no_publish:
        print(body)
        return
    if raw is not None:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUT_DIR / f"{name}.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    for path in publish(name, body):
        print(f"wrote {path}")


def _status_kb(field: str) -> int:
    """A ``kB`` field (``VmRSS``, ``VmHWM``) of this process's ``/proc/self/status``."""
    found = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if found is None:
        raise OSError(f"/proc/self/status has no {field} line.")
    return int(found.group(1))


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (``VmHWM``) of this process; False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the peak RSS (Linux 4.0+)
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand freed memory back to the OS, so the next measurement starts from a true baseline."""
    gc.collect()
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    libc = ctypes.CDLL(libc_name)
    if hasattr(libc, "malloc_trim"):  # glibc only
        libc.malloc_trim(0)


class PeakMemory:
    """Peak resident-memory increase of this process during a ``with`` block, in MB.

    On Linux the kernel tracks the peak itself: ``/proc/self/clear_refs`` resets it and
    ``VmHWM`` reads it afterwards, so the peak is exact and nothing competes with the measured
    code for the CPU. Elsewhere a thread samples ``psutil``'s RSS every ``interval`` seconds,
    which can miss a peak shorter than the interval.

    Before the block, garbage is collected and free heap is returned to the OS, so memory left
    over from earlier work does not hide new allocations.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self.method = ""
        self._start = 0
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        _release_free_heap()
        if _reset_high_water_mark():
            self.method = "kernel VmHWM"
            self._start = _status_kb("VmRSS") * 1024
            return self
        import psutil

        process = psutil.Process()
        self.method = f"psutil sampling every {self.interval * 1000:g} ms"
        self._start = self._sampled = process.memory_info().rss

        def sample() -> None:
            while not self._stop.is_set():
                self._sampled = max(self._sampled, process.memory_info().rss)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is None:
            peak = _status_kb("VmHWM") * 1024
        else:
            self._stop.set()
            self._thread.join()
            peak = self._sampled
        self.peak_mb = max(0, peak - self._start) / MB


def _busy_cpu_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot (``/proc/stat``), or None elsewhere."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Cores kept busy by *other* processes during a ``with`` block, on average (Linux).

    All busy CPU time from ``/proc/stat`` minus this process's own (every thread), divided by
    the wall time. ``cores`` stays None where ``/proc/stat`` is missing. Its resolution is one
    clock tick (10 ms), so it means little for blocks much shorter than a second.
    """

    def __init__(self) -> None:
        self.cores: float | None = None
        self._start: tuple[float | None, float, float] = (None, 0.0, 0.0)

    def __enter__(self) -> OtherLoad:
        own = os.times()
        self._start = (_busy_cpu_seconds(), own.user + own.system, time.perf_counter())
        return self

    def __exit__(self, *exc_info: object) -> None:
        busy_start, own_start, wall_start = self._start
        busy = _busy_cpu_seconds()
        own = os.times()
        wall = time.perf_counter() - wall_start
        if busy is None or busy_start is None or wall <= 0:
            return
        others = (busy - busy_start) - (own.user + own.system - own_start)
        self.cores = max(0.0, others) / wall


def wait_for_quiet(max_other_cores: float, timeout: float, window: float = 0.25) -> float:
    """Wait until other processes use at most ``max_other_cores`` cores over ``window`` seconds.

    Gives up after ``timeout`` seconds. Returns the seconds waited (0 where ``/proc/stat`` is
    missing, as there is nothing to wait for).
    """
    started = time.perf_counter()
    while True:
        with OtherLoad() as load:
            time.sleep(window)
        waited = time.perf_counter() - started
        if load.cores is None or load.cores <= max_other_cores or waited >= timeout:
            return waited
