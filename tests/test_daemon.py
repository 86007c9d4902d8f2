"""`syncd run` as systemd runs it: a subprocess, a NOTIFY_SOCKET, signals, the lock."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog.testing
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

import syncd
from syncd import liveness
from syncd.daemon import Daemon
from syncd.errors import StoreError
from syncd.liveness import Liveness
from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.status import collect, render
from tests.helpers import AheadClock, World, esputnik_table, unprivileged
from tests.hostile import HostileProxy

SYNCD = [sys.executable, "-m", "syncd.cli"]


class Notify:
    """A NOTIFY_SOCKET that collects what the daemon says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.times: list[float] = []  # when each message was read (time.time)
        self._lock = threading.Lock()
        self._reading = False

    def read_on(self) -> Notify:
        """Read each message as it comes, on a thread of its own, and so when it came. The
        socket queues only `net.unix.max_dgram_qlen` datagrams (often 10: five seconds of
        pings here), and the daemon drops what finds it full (MSG_DONTWAIT)."""
        self._reading = True
        threading.Thread(target=self._read_on, daemon=True).start()
        return self

    def _read_on(self) -> None:
        while True:
            try:
                self._collect()
            except OSError:
                return  # closed with the test's folder

    def collect(self) -> None:
        if self._reading:
            time.sleep(0.05)
        else:
            self._collect()

    def _collect(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            with self._lock:
                self.messages.append(data.decode())
                self.times.append(time.time())

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.collect()
            if any(text in m for m in self.messages):
                return True
        return False

    def count(self, text: str) -> int:
        self.collect()
        return sum(text in m for m in self.messages)

    def when(self, text: str) -> list[float]:
        """When each message holding `text` came (`read_on` tells it to the millisecond)."""
        self.collect()
        with self._lock:
            return [t for t, m in zip(self.times, self.messages, strict=True) if text in m]

    def longest_silence(self, text: str, since: float) -> float:
        """The longest time from `since` (time.time) to now without a message holding `text`."""
        marks = [since, *(t for t in self.when(text) if t > since), time.time()]
        return max(b - a for a, b in itertools.pairwise(marks))


@pytest.fixture
def sim() -> Iterator[tuple[ESputnikSim, Server]]:
    app = ESputnikSim()
    with Server(app) as server:
        yield app, server


def daemon_world(tmp_path: Path, url: str, reconcile: str, pull: str, **schedule: float) -> World:
    world = World(tmp_path, {"esputnik": esputnik_table(url)})
    text = (tmp_path / "syncd.toml").read_text()
    more = "".join(f"{key} = {value}\n" for key, value in schedule.items())
    text = text.replace(
        "[store]",
        f'[schedule]\nreconcile = "{reconcile}"\npull = "{pull}"\n'
        f"misfire_grace_seconds = 600\n{more}[store]",
    )
    (tmp_path / "syncd.toml").write_text(text)
    world.write(list(rows(40)))
    return world


def start(world: World, notify: Notify, **env: str) -> subprocess.Popen[bytes]:
    environ = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1000000",
        "SYNCD_LOG_LEVEL": "INFO",
        **env,
    }
    environ.pop("WATCHDOG_PID", None)
    # logs go to a file: a pipe nobody reads would fill and block the daemon's writes
    with (world.folder / "daemon.log").open("ab") as log:
        return subprocess.Popen(
            [*SYNCD, "--config", str(world.folder / "syncd.toml"), "run"],
            env=environ,
            stdout=log,
            stderr=log,
        )


def logged(world: World) -> str:
    return (world.folder / "daemon.log").read_text(errors="replace")


def events(world: World, name: str) -> list[dict[str, Any]]:
    """The daemon's JSON log lines whose event is `name`."""
    found = []
    for line in logged(world).splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def runs(world: World, kind: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(world.folder / "syncd.db")
    try:
        return conn.execute(
            "SELECT started_at, status FROM runs WHERE kind = ? ORDER BY id", (kind,)
        ).fetchall()
    finally:
        conn.close()


def acknowledged(world: World) -> int:
    conn = sqlite3.connect(world.folder / "syncd.db")
    try:
        return int(conn.execute("SELECT count(*) FROM vendor_state").fetchone()[0])
    finally:
        conn.close()


def wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_the_service_lifecycle(tmp_path: Path, sim: tuple[ESputnikSim, Server]) -> None:
    app, server = sim
    world = daemon_world(tmp_path, server.url, "every 2s", "every 3s")
    # read as systemd does, as it comes: the socket queues ten datagrams (five seconds of
    # pings and STATUS= lines), the two commands below take longer than that on a loaded
    # machine, and the daemon drops what finds it full: STOPPING=1 was lost
    notify = Notify(tmp_path / "notify.sock").read_on()
    proc = start(world, notify)
    try:
        assert notify.wait_for("READY=1", 20), logged(world)
        assert wait(lambda: any(s == "ok" for _t, s in runs(world, "reconcile")), 20)
        assert wait(lambda: any(s == "ok" for _t, s in runs(world, "pull")), 20)
        assert len(app.contacts()) == acknowledged(world) > 30
        assert wait(lambda: notify.count("WATCHDOG=1") >= 3, 10)
        assert notify.count("STATUS=") >= 1

        second = subprocess.run(
            [*SYNCD, "--config", str(world.folder / "syncd.toml"), "sync"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 3
        assert f"pid {proc.pid}" in second.stderr
        twin = subprocess.run(
            [*SYNCD, "--config", str(world.folder / "syncd.toml"), "run"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert twin.returncode == 3

        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - stopped_at < 5
        assert notify.wait_for("STOPPING=1", 1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    conn = sqlite3.connect(world.folder / "syncd.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_sighup_keeps_the_old_config_when_the_new_one_is_bad(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    _app, server = sim
    world = daemon_world(tmp_path, server.url, "0 3 * * *", "0 4 * * *")
    notify = Notify(tmp_path / "notify.sock")
    proc = start(world, notify)
    try:
        assert notify.wait_for("READY=1", 20)
        config = world.folder / "syncd.toml"
        good = config.read_text()
        config.write_text(good.replace('key = "Record ID"', "key = 5"))
        proc.send_signal(signal.SIGHUP)
        assert notify.wait_for("config reload failed", 10)
        config.write_text(good)
        proc.send_signal(signal.SIGHUP)
        assert notify.wait_for("config reloaded", 10)
        # each reload is RELOADING=1 with MONOTONIC_USEC (systemd's own clock: Type=
        # notify-reload matches it to its reload), then READY=1 with the outcome, even a
        # failed one: without it systemd would show the service `reloading` for good
        reloads = [m for m in notify.messages if "RELOADING=1" in m or "config reload" in m]
        assert len(reloads) == 4, notify.messages
        for begun, ended in (reloads[:2], reloads[2:]):
            assert begun.startswith("RELOADING=1\nMONOTONIC_USEC="), begun
            assert abs(int(begun.split("=")[-1]) / 1e6 - time.monotonic()) < 30, begun
            assert ended.startswith("READY=1\nSTATUS=config reload"), ended
        assert "failed" in reloads[1] and "reloaded" in reloads[3], reloads
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "[source] key: must be str" in logged(world)


@pytest.mark.parametrize(
    "pause", [pytest.param(25, id="25s"), pytest.param(120, id="2min", marks=pytest.mark.slow)]
)
def test_a_long_pause_gives_exactly_one_coalesced_reconcile(
    tmp_path: Path, sim: tuple[ESputnikSim, Server], pause: int
) -> None:
    """The interval's runs fall on a grid, 8 s apart from the start: a pause that ended
    less than 4 s before a grid point saw that point's regular run beside the coalesced
    one (a first reconcile 3 s slower, on a loaded machine, was enough). The pause ends
    2 s past a grid point, and only the runs begun before the next one are counted."""
    _app, server = sim
    world = daemon_world(tmp_path, server.url, "every 8s", "0 4 * * *")
    notify = Notify(tmp_path / "notify.sock").read_on()
    proc = start(world, notify)
    try:
        assert notify.wait_for("READY=1", 20)
        # the trigger is made just before READY=1: its grid is READY=1 + 8 s + 8 k s,
        # give or take the milliseconds between them
        grid = notify.when("READY=1")[0] + 8
        assert wait(lambda: len(runs(world, "reconcile")) >= 1, 20)
        assert wait(lambda: all(s != "running" for _t, s in runs(world, "reconcile")), 20)
        before = len(runs(world, "reconcile"))
        stopped = time.time()
        proc.send_signal(signal.SIGSTOP)
        resume = grid + 8 * -(-(stopped + pause - grid) // 8) + 2  # >= pause, 2 s past a point
        time.sleep(resume - time.time())  # the pause itself
        proc.send_signal(signal.SIGCONT)
        # the next regular run is 6 s on; started_at is in whole seconds (floored)
        cutoff = resume + 4.5
        assert wait(lambda: len(runs(world, "reconcile")) > before, 20), logged(world)
        assert wait(lambda: all(s != "running" for _t, s in runs(world, "reconcile")), 20)
        wait(lambda: time.time() > cutoff, 6)  # a second, uncoalesced run would start by then
        begun = [
            t
            for t, _s in runs(world, "reconcile")[before:]
            if datetime.fromisoformat(t).timestamp() < cutoff
        ]
        assert len(begun) == 1, f"{len(begun)} reconciles after a {pause}s pause: {begun}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_slow_but_live_job_keeps_the_watchdog_pinging_and_sigterm_still_stops_it(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """With `stall_seconds = 1`, a vendor answers the import with a 429 and Retry-After: 2,
    then drips its next answer a byte every 0.2 s: more than twice the bound with no answer
    twice over, and neither is a stall (a sleep and a request are waits of their own length,
    the request's up to request_deadline): the pings (every 0.5 s here) go on throughout,
    and nothing says stalled. Held by the drip, which would take a minute (read_timeout is
    per read), the job is cut by the stop request, far inside the unit's TimeoutStopSec."""
    _app, server = sim
    with HostileProxy(server.url) as proxy:
        proxy.plan("429 for 2 s", acted=False, path="/api/v1/contacts", method="POST")
        proxy.plan("slow drip", acted=True, count=99, path="/api/v1/contacts", method="POST")
        world = daemon_world(tmp_path, proxy.url, "every 1s", "0 3 * * *", stall_seconds=1)
        notify = Notify(tmp_path / "notify.sock").read_on()
        proc = start(world, notify)
        try:
            assert notify.wait_for("READY=1", 20), logged(world)
            ready = notify.when("READY=1")[0]
            assert wait(lambda: any("POST /api/v1/contacts" in s for s in proxy.seen), 20)
            assert wait(lambda: sum("POST /api/v1/contacts" in s for s in proxy.seen) == 2, 5)
            assert [e["delay"] for e in events(world, "retrying")] == [2.0]  # the Retry-After
            time.sleep(2)  # well inside the dripping answer
            assert notify.longest_silence("WATCHDOG=1", ready) < 1.2, notify.messages
            assert "stalled" not in logged(world) + "".join(notify.messages)
            stopped_at = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0, logged(world)
            assert time.monotonic() - stopped_at < 5
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    conn = sqlite3.connect(world.folder / "syncd.db")
    statuses = dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status"))
    conn.close()
    assert "in_flight" not in statuses and statuses.get("pending", 0) > 0, statuses


@pytest.mark.slow
def test_a_retry_after_of_two_minutes_is_waited_out_pinging(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """A vendor's Retry-After of 120 s (retry_after_cap's default), with stall_seconds = 10:
    the job shows nothing for twelve times the bound, sleeping as told, and is never called
    stalled; the pings go on throughout and the contacts are sent after the wait."""
    app, server = sim
    app.faults.add("status", status=429, retry_after="120", path="/api/v1/contacts", method="POST")
    world = daemon_world(tmp_path, server.url, "every 1s", "0 3 * * *", stall_seconds=10)
    notify = Notify(tmp_path / "notify.sock").read_on()
    proc = start(world, notify, WATCHDOG_USEC="2000000")
    try:
        assert notify.wait_for("READY=1", 20), logged(world)
        ready = notify.when("READY=1")[0]
        assert wait(lambda: any(s == "ok" for _t, s in runs(world, "reconcile")), 180)
        assert [e["delay"] for e in events(world, "retrying")] == [120.0]
        assert notify.longest_silence("WATCHDOG=1", ready) < 2.5
        assert "stalled" not in logged(world) + "".join(notify.messages)
        assert len(app.contacts()) == acknowledged(world) == 40
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_hung_job_stops_the_watchdog_pings_within_stall_seconds(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """The watchdog pinged from its own executor whatever the job did: a job hung for good
    kept systemd content while no reconcile ran again. Here the reconcile's thread waits
    for good right after eSputnik took the import (`SYNCD_HANG_AT`: as a deadlock or a stuck
    SQLite call would, the rest of the process running on; no deadline can cut it). With
    `stall_seconds = 1`: not before a second with no progress, and within one ping (0.5 s)
    after it, the pings stop for good, the journal says which job and for how long, with
    where its thread is stuck, and so does `systemctl status`. systemd then ends it with
    SIGABRT (WatchdogSignal=): every thread's stack goes to the journal first."""
    app, server = sim
    world = daemon_world(tmp_path, server.url, "every 1s", "0 4 * * *", stall_seconds=1)
    notify = Notify(tmp_path / "notify.sock").read_on()
    proc = start(world, notify, SYNCD_HANG_AT="job_recorded")
    try:
        assert notify.wait_for("READY=1", 20), logged(world)
        assert notify.wait_for("stalled", 20), logged(world)
        said = notify.when("stalled")
        # the import was the job's last progress; the hang comes a few milliseconds after it
        imported = app.requests("/api/v1/contacts", "POST")[-1].at + time.time() - time.monotonic()
        assert 1.0 <= said[0] - imported < 1.0 + 0.5 + 1.0, (said[0] - imported, logged(world))
        pinged = notify.when("WATCHDOG=1")
        assert pinged and pinged[-1] < said[0], "a ping after the stall"
        time.sleep(1.0)  # two pings' worth
        assert notify.when("WATCHDOG=1") == pinged, "the pings resumed"
        assert len(said) == 1 and re.fullmatch(
            "STATUS=reconcile stalled: no progress for [12] s; the watchdog pings stop: "
            "systemd restarts syncd",
            notify.messages[-1],
        ), notify.messages[-3:]
        proc.send_signal(signal.SIGABRT)  # what systemd's watchdog does after WatchdogSec
        assert proc.wait(timeout=10) == -signal.SIGABRT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (stall,) = events(world, "job stalled: no progress for longer than stall_seconds")
    assert stall["level"] == "error" and stall["job"] == "reconcile", stall
    assert stall["seconds"] in (1, 2) and stall["stall_seconds"] == 1.0, stall
    assert "in crashpoint\n" in stall["stack"] and "in _send\n" in stall["stack"], stall
    assert 'crashpoints.py", line' in logged(world)  # faulthandler's, at the SIGABRT
    assert runs(world, "reconcile") == [(runs(world, "reconcile")[0][0], "running")]


def test_a_stall_not_under_systemds_watchdog_is_logged_once_and_pings_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without WATCHDOG_USEC (syncd run by hand, or a unit without WatchdogSec=) nothing is
    pinged, and a stall is still said: once, however often the watchdog job looks; progress
    again is said too, and the next stall again. The job began a minute ago (time as an
    argument: the watchdog job's own clock is the present)."""
    world = daemon_world(tmp_path, "http://127.0.0.1:9", "0 3 * * *", "0 4 * * *")
    notify = Notify(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    daemon = Daemon(world.folder / "syncd.toml")
    assert daemon.liveness.bound == 600  # the default
    daemon.liveness = live = Liveness(bound=5)
    live.begin("pull", liveness.now() - 60, threading.get_ident())
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            daemon.watchdog_job()
        live.beat(liveness.now())
        daemon.watchdog_job()
        live.end(liveness.now())  # and the next pull, quiet since it began 30 s ago
        live.begin("pull", liveness.now() - 30, threading.get_ident())
        daemon.watchdog_job()
    live.end(liveness.now())
    said = [(e["log_level"], e["event"]) for e in logs if e.get("job") == "pull"]
    stalled = ("error", "job stalled: no progress for longer than stall_seconds")
    assert said == [stalled, ("warning", "the stalled job shows progress again"), stalled]
    first = next(e for e in logs if e["event"] == stalled[1])
    assert first["seconds"] == 60 and first["stall_seconds"] == 5
    assert "test_daemon.py" in first["stack"]  # this thread's stack: the "job" is this test
    assert notify.count("WATCHDOG=1") == 0
    assert [m for m in notify.messages if "pull" in m] == [
        "STATUS=pull stalled: no progress for 60 s; not under systemd's watchdog: restart syncd",
        "STATUS=pull running again after a stall; see the journal",
        "STATUS=pull stalled: no progress for 30 s; not under systemd's watchdog: restart syncd",
    ]


def test_syncd_status_shows_a_stalled_job_while_the_service_that_runs_it_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stalled job was said in the journal and `systemctl status` only: `syncd status`
    showed its run `running`, as if all were well. The watchdog cannot say it in the store
    (the job may hold its write lock, or be stuck in SQLite), so it says it in the lock file
    beside it, which `syncd status`, another process, reads: the job, its run, since when it
    has shown no progress. Progress again clears it; so does the process's end, even a kill
    (a note whose process is gone is not shown)."""
    world = daemon_world(tmp_path, "http://127.0.0.1:9", "0 3 * * *", "0 4 * * *")
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    config = world.folder / "syncd.toml"
    daemon = Daemon(config)
    daemon.lock.acquire()
    store = Store.open(world.folder / "syncd.db")
    run_id = store.start_run("pull", datetime.now(UTC) - timedelta(seconds=90))
    store.close()
    daemon.liveness = live = Liveness(bound=5)
    live.begin("pull", liveness.now() - 60, threading.get_ident())
    schema = json.loads((Path(syncd.__file__).parent / "status.schema.json").read_text())
    try:
        assert collect(world.cfg, datetime.now(UTC))["stalled"] is None
        daemon.watchdog_job()
        started = time.monotonic()
        proc = subprocess.run(
            [*SYNCD, "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        late = 62 + time.monotonic() - started  # the child's start on a loaded machine
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        jsonschema.validate(data, schema)
        stalled = data["stalled"]
        since = datetime.fromisoformat(stalled.pop("since"))
        assert 59 <= (datetime.fromisoformat(data["now"]) - since).total_seconds() <= late
        assert 59 <= stalled.pop("seconds") <= late
        assert stalled == {"job": "pull", "run_id": run_id, "stall_seconds": 5, "pid": os.getpid()}
        text = render(collect(world.cfg, datetime.now(UTC)))
        assert f"STALLED: the service's pull (run #{run_id}) has shown no progress since " in text
        assert f"#{run_id} pull " in text and f", stalled since {since.isoformat()}" in text
        live.beat(liveness.now())  # progress again
        daemon.watchdog_job()
        assert collect(world.cfg, datetime.now(UTC))["stalled"] is None
        live.begin("pull", liveness.now() - 60, threading.get_ident())
        daemon.watchdog_job()
        assert collect(world.cfg, datetime.now(UTC))["stalled"] is not None
        # the process killed (systemd's SIGABRT): its note stays, with its pid, until the
        # next start takes the lock
        gone = subprocess.Popen(["true"])
        gone.wait()
        lock = world.folder / "syncd.db.lock"
        _pid, note = lock.read_bytes().split(b"\n", 1)
        lock.write_bytes(f"{gone.pid}\n".encode() + note)
        assert collect(world.cfg, datetime.now(UTC))["stalled"] is None
    finally:
        live.end(liveness.now())
        daemon.lock.release()


def test_a_lock_file_it_cannot_open_stops_the_start_with_one_line() -> None:
    """A `syncd sync` run as root leaves `syncd.db.lock` root's (0640): `syncd run`, as the
    service user, died of a PermissionError traceback (exit 1), and systemd restarted it
    every 10 s for good. Now one line naming the file and what to do, exit 2 (the unit's
    RestartPreventExitStatus)."""
    folder = Path(tempfile.mkdtemp(prefix="syncd-lock-"))  # one the uid nobody can reach
    try:
        folder.chmod(0o777)
        world = World(folder, {"esputnik": esputnik_table("http://127.0.0.1:9")})
        world.write(list(rows(3)))
        lock = folder / "syncd.db.lock"
        lock.write_text("1\n")
        lock.chmod(
            0o640 if os.geteuid() == 0 else 0o000
        )  # root's own, as `sudo syncd sync` left it
        daemon = Daemon(folder / "syncd.toml")
        with unprivileged(), pytest.raises(StoreError) as caught:
            daemon.run()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert message.startswith(f"the lock file {lock} cannot be opened by uid "), message
    assert "Permission denied" in message and "chown" in message, message


@pytest.mark.parametrize(
    ("status", "starts"),
    [
        pytest.param("interrupted", [2, 2], id="stopped-by-the-reboot"),
        pytest.param("running", [1], id="died-with-the-process"),
    ],
)
def test_a_nightly_reconcile_the_service_was_down_for_runs_once_at_its_start(
    tmp_path: Path, sim: tuple[ESputnikSim, Server], status: str, starts: list[int]
) -> None:
    """The scheduler keeps its jobs in memory: a service restarted across its nightly time
    (unattended-upgrades reboots at 02:00, syncd's own default time) waited for the next
    night, and the reconcile the reboot interrupted never ran that night, without a word.
    Started within misfire_grace_seconds (here 600) of it, it runs the reconcile once; a
    second start, after it ran, does not run it again. One that died with the process (left
    `running`) is not run again: it may be what kills it, and systemd restarts it at once."""
    _app, server = sim
    due = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=2)
    world = daemon_world(tmp_path, server.url, f"{due.minute} {due.hour} * * *", "0 4 * * *")
    store = Store.open(world.folder / "syncd.db")
    try:  # last night's reconcile, as the reboot (or the death) left it
        run_id = store.start_run("reconcile", due)
        if status != "running":
            store.finish_run(run_id, due, status=status, exit_code=0, counts={})
    finally:
        store.close()
    for number, expected in enumerate(starts):
        notify = Notify(tmp_path / f"notify{number}.sock")
        proc = start(world, notify)
        try:
            assert notify.wait_for("READY=1", 20), logged(world)
            if expected == 2 and number == 0:
                assert wait(lambda: [s for _t, s in runs(world, "reconcile")][1:] == ["ok"], 20)
            else:
                time.sleep(2)  # long enough for a reconcile of 40 contacts to be recorded
            assert len(runs(world, "reconcile")) == expected, runs(world, "reconcile")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    caught_up = logged(world).count("the reconcile due while syncd was not running runs now")
    assert caught_up == (status == "interrupted")


def test_a_resume_from_suspend_wakes_the_scheduler_at_once(
    tmp_path: Path, sim: tuple[ESputnikSim, Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    """APScheduler sleeps until its next run on the monotonic clock, which stands still
    while the machine is suspended: asleep at 22:00 until 02:00, suspended from 23:00 to
    08:00, it woke at 11:00, the nightly run nine hours late and past its grace (without a
    watchdog job waking it every WatchdogSec/2). A wall clock that moves away from the
    monotonic one (a resume, a step) wakes it within a second or two."""
    _app, server = sim
    world = daemon_world(tmp_path, server.url, "0 3 * * *", "0 4 * * *")
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)  # no watchdog job to wake it
    clock = AheadClock()
    daemon = Daemon(world.folder / "syncd.toml", clock)
    wakeups: list[float] = []
    wakeup = BackgroundScheduler.wakeup
    monkeypatch.setattr(
        BackgroundScheduler, "wakeup", lambda s: (wakeups.append(time.monotonic()), wakeup(s))
    )
    resumed: list[float] = []

    def resume_then_stop() -> None:
        time.sleep(1.5)
        resumed.append(time.monotonic())
        clock.ahead = timedelta(hours=9)  # as if back from nine hours suspended
        wait(lambda: wakeups[-1] > resumed[0], 5)
        daemon.stop.set()

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    threading.Thread(target=resume_then_stop, daemon=True).start()
    try:
        assert daemon.run() == 0
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert resumed and wakeups[-1] > resumed[0], "the scheduler was not woken by the resume"
    assert wakeups[-1] - resumed[0] < 3


def test_a_run_missed_beyond_its_grace_is_said_in_systemctl_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Suspended (or the clock stepped) past a nightly run by more than misfire_grace_seconds,
    the run is skipped: never silently, the journal has a warning and `systemctl status`
    says it, where it showed the last run's summary as if all were well."""
    world = daemon_world(tmp_path, "http://127.0.0.1:9", "0 3 * * *", "0 4 * * *")
    notify = Notify(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify.path))
    due = datetime(2026, 12, 2, 3, tzinfo=UTC)
    Daemon(world.folder / "syncd.toml")._missed(
        JobExecutionEvent(EVENT_JOB_MISSED, "reconcile", "default", due)
    )
    assert notify.wait_for("STATUS=reconcile due at 2026-12-02T03:00:00+00:00 missed", 2), (
        notify.messages
    )
