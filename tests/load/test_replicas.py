"""Two replicas behind HAProxy on this machine: the short classroom load through the load balancer,
then one replica killed in the middle of a lesson.

Both share one cluster (``scripts/serve_replicas.sh``, ``deploy/haproxy.cfg.in``, on free localhost
ports); the load test runs first, the kill last. The full run, with its figures, is
``python benchmarks/replicas.py`` (``make bench``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from replicas import (  # noqa: E402
    CHROMIUM,
    COOKIE,
    SCRIPT,
    free_port_range,
    replica_cluster,
    run_failover,
    run_load,
    stop_script,
    table,
)

REPLICAS = 2
SESSIONS = 10
FAILOVER_SESSIONS = 4
# Generous: measured about 1–2 s from the kill to a connected page (HAProxy's one-second pause
# before its first retry included), and 1–4 s for the first run on the other replica.
RECONNECT_LIMIT_S = 20.0


def require(path: str | None, message: str) -> None:
    """Fail in CI (``CI=true``) and skip elsewhere when a Debian program the test drives is missing."""
    if path and os.access(path, os.X_OK):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def require_programs() -> None:
    require(CHROMIUM, "Debian chromium is missing: apt-get install chromium (or make setup-dev as root)")
    require(
        shutil.which("haproxy") or "/usr/sbin/haproxy",
        "Debian haproxy is missing: apt-get install haproxy (or make setup-dev as root)",
    )


@pytest.fixture(scope="module")
def cluster():
    require_programs()
    with replica_cluster(REPLICAS) as running:
        yield running


@pytest.fixture(scope="module")
def load(cluster):
    # No warm-up: the first sessions load the model on each replica (benchmarks/replicas.py warms
    # them first, to measure idle memory).
    return run_load(cluster, SESSIONS, warm=False)


@pytest.fixture(scope="module")
def failover(cluster, load, tmp_path_factory):
    """Runs after the load test (it needs ``load``), on the same two warm replicas."""
    evidence = tmp_path_factory.mktemp("failover")
    result = run_failover(cluster, FAILOVER_SESSIONS, evidence)
    print(f"screenshots: {', '.join(map(str, result.screenshots))}")
    return result


def test_ten_sessions_through_the_load_balancer_keep_their_own_state_on_both_replicas(load):
    served = load.served
    print(f"sessions per replica: {served}; idle RSS {load.idle_rss_mb}; peak RSS {load.peak_rss_mb}")
    assert load.errors == []
    assert len(load.latencies) == 3 * SESSIONS
    # Sticky sessions spread over both replicas: every browser holds a SERVERID naming one.
    assert sorted(served) == ["r1", "r2"], served
    assert sum(served.values()) == SESSIONS
    assert min(served.values()) >= 1, served
    assert all(peak > 0 for peak in load.peak_rss_mb.values())
    # Busy replicas still answer their health checks: none was taken out of the rotation.
    assert load.downs == {"r1": 0, "r2": 0}


def test_a_killed_replicas_students_reconnect_to_the_other_with_their_view(load, failover):
    print(table(load, failover))
    for switch in [*failover.moved, *failover.stayed]:
        print(switch)
    assert failover.errors == []
    assert failover.moved, "no session was on the killed replica"
    for switch in failover.moved:
        assert switch.after != failover.killed
        # The page lost its server (controls greyed out), then found the other replica.
        assert switch.states[-1] == "CONNECTED", switch.states
        assert any(state.startswith("PINGING_SERVER") or "greyed" in state for state in switch.states)
        assert switch.reconnect_s < RECONNECT_LIMIT_S
    for switch in failover.stayed:
        assert switch.states == ["CONNECTED"], switch.states


@pytest.mark.xfail(
    strict=True,
    reason="ui/state.py: on a session's first run the URL's values win over the widget values the "
    "browser sends, so the first click after a switch to another replica is undone",
)
def test_the_first_click_after_the_switch_takes_effect(failover):
    assert failover.moved
    assert all(switch.first_click_kept for switch in failover.moved)


def test_stopping_the_replicas_leaves_no_process_and_no_port_behind():
    require_programs()
    with replica_cluster(1) as running:
        started = [psutil.Process(running.process.pid), *psutil.Process(running.process.pid).children(True)]
        ports = [int(running.url.rsplit(":", 1)[1]), *running.ports.values()]
        assert any("haproxy" in " ".join(p.cmdline()) for p in started)
    assert [p.pid for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))  # raises if anything still listens there


def test_a_balancer_alone_sends_students_to_replicas_started_on_another_host(tmp_path):
    """Several machines: app hosts run ``BALANCER=off``; the front host lists them in ``SERVERS``."""
    require_programs()
    front, app_port, first_replica = (port := free_port_range(4)), port + 1, port + 2
    app_host = {"BALANCER": "off", "REPLICAS": "2", "PORT": str(app_port), "REPLICA_ADDRESS": "0.0.0.0"}
    servers = f"127.0.0.1:{first_replica} localhost:{first_replica + 1}"
    front_host = {"REPLICAS": "0", "PORT": str(front), "SERVERS": servers, "ADDRESS": "127.0.0.1"}
    started = []
    try:
        for name, env in (("app", app_host), ("front", front_host)):
            log = tmp_path / f"{name}.log"
            with log.open("wb") as sink:
                started.append(
                    subprocess.Popen(
                        ["bash", str(SCRIPT)],
                        env={**os.environ, **env},
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            deadline = time.monotonic() + 60
            while "==> ready:" not in log.read_text():
                assert started[-1].poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        cookies = set()
        for _ in range(4):  # no cookie sent: each request is a new student, spread over both
            with urllib.request.urlopen(f"http://127.0.0.1:{front}/") as response:
                assert response.status == 200
                cookies.add(response.headers["Set-Cookie"].split(";")[0])
        assert cookies == {f"{COOKIE}=s1", f"{COOKIE}=s2"}
    finally:
        for process in reversed(started):
            stop_script(process)
