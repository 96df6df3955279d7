"""The short classroom load test: 10 browser sessions at once against the real server.

The full 30-session run is `python benchmarks/classroom_load.py --sessions 30` (figures in README).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from classroom_load import CHROMIUM, run_load_test  # noqa: E402

SESSIONS = 10


def test_ten_sessions_at_once_all_succeed_in_their_own_state():
    if not Path(CHROMIUM).exists():
        message = "Debian chromium is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    result = run_load_test(SESSIONS)
    print(result.table())
    assert result.errors == []
    assert len(result.latencies) == 3 * SESSIONS
    assert all(not report.errors for report in result.reports)
    assert result.peak_rss_mb > 0
