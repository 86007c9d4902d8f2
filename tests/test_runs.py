"""Run history is true: a run that raises (Ctrl-C, the store failing, a stop) is recorded
failed or interrupted, and a vendor whose delivery raised a bug is recorded stopped in a
`partial` run, with no delivery left in flight that no request carries; SIGTERM on `syncd sync` records it
interrupted; a run in progress shows its elapsed time."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from syncd.demo import SANDBOX_TABLES, mapping_text
from syncd.errors import StopRequested, StoreError
from syncd.lock import InstanceLock
from syncd.sample import rows
from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.status import collect, render
from syncd.vendors.altcraft import Altcraft
from syncd.vendors.base import Contact, OnJob, Result
from syncd.vendors.esputnik import ESputnik
from tests.helpers import World, esputnik_table


@pytest.fixture
def esputnik() -> ESputnikSim:
    return ESputnikSim()


@pytest.fixture
def world(tmp_path: Path, esputnik: ESputnikSim) -> Iterator[World]:
    with Server(esputnik) as server, Server(AltcraftSim()) as altcraft:
        yield World(
            tmp_path,
            {
                "esputnik": esputnik_table(server.url),
                "altcraft": (
                    f'base_url = "{altcraft.url}"\n' + SANDBOX_TABLES["altcraft"],
                    mapping_text("altcraft"),
                ),
            },
        )


def runs(world: World) -> list[tuple[str, int | None]]:
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        return conn.execute("SELECT status, exit_code FROM runs ORDER BY id").fetchall()


def statuses(world: World) -> Counter[tuple[str, str]]:
    return Counter((d["vendor"], d["status"]) for d in world.deliveries())


def hostile(exc: BaseException) -> Any:
    """A push that lets its request go (the write hook marks the batch in flight), then
    raises `exc`, as a bug parsing a hostile vendor answer would."""

    def push(self: Any, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        assert self.http.on_write is not None
        self.http.on_write()
        raise exc

    return push


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (KeyboardInterrupt(), "interrupted", 130),
        (StoreError("the store's disk is full"), "failed", 2),
        (StopRequested("SIGTERM"), "interrupted", 0),
    ],
    ids=["ctrl-c", "store", "stop"],
)
def test_a_run_that_raises_is_recorded_and_leaves_nothing_in_flight(
    world: World, monkeypatch: pytest.MonkeyPatch, exc: BaseException, status: str, code: int
) -> None:
    world.write(list(rows(30)))
    monkeypatch.setattr(ESputnik, "start", hostile(exc))  # what the delivery loop calls
    with pytest.raises(type(exc)):
        world.sync()
    assert runs(world) == [(status, code)]
    found = statuses(world)
    assert not [k for k in found if k[1] == "in_flight"], found
    assert found[("esputnik", "pending")] == 30 - found[("esputnik", "quarantined")]
    assert not found[("altcraft", "sent")]  # never reached: esputnik comes first

    monkeypatch.undo()
    report = world.sync()  # the upserts are simply sent again
    assert report.exit_code == 0, report.summary()
    assert runs(world)[-1] == ("ok", 0)


def test_a_bug_in_one_vendors_delivery_fails_it_alone_and_leaves_nothing_in_flight(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug reading eSputnik's answer used to end the run before Altcraft was sent a thing;
    now eSputnik is stopped for the run (exit 1, `partial`), its batch back to pending, and
    Altcraft is delivered."""
    world.write(list(rows(30)))
    monkeypatch.setattr(
        ESputnik, "start", hostile(TypeError("'NoneType' object is not subscriptable"))
    )
    report = world.sync()
    assert report.exit_code == 1, report.summary()
    assert runs(world) == [("partial", 1)]
    assert "TypeError: 'NoneType' object is not subscriptable" in report.stops()["esputnik"]
    found = statuses(world)
    assert not [k for k in found if k[1] == "in_flight"], found
    assert found[("esputnik", "pending")] == 30 - found[("esputnik", "quarantined")]
    assert found[("altcraft", "sent")] == 30 - found[("altcraft", "quarantined")]

    monkeypatch.undo()
    report = world.sync()  # the upserts are simply sent again
    assert report.exit_code == 0, report.summary()
    assert runs(world)[-1] == ("ok", 0)
    assert statuses(world)[("esputnik", "sent")] == 30 - found[("esputnik", "quarantined")]


def test_a_trigger_in_flight_when_its_delivery_fails_becomes_unknown(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.write(list(rows(10)))
    monkeypatch.setattr(Altcraft, "push", hostile(ValueError("no JSON")))
    report = world.sync()
    assert report.exit_code == 1, report.summary()
    assert runs(world) == [("partial", 1)]
    found = statuses(world)
    assert found[("altcraft", "unknown")] > 0 and not found[("altcraft", "in_flight")], found
    assert found[("esputnik", "sent")] > 0
    unknown = [d for d in world.deliveries() if d["status"] == "unknown"]
    assert all("syncd retry --unknown" in d["reason"] for d in unknown)


def test_sigterm_records_the_run_interrupted(world: World, esputnik: ESputnikSim) -> None:
    world.write(list(rows(40)))
    # every eSputnik answer waits: the run is in its delivery loop when the signal comes
    esputnik.faults.add("delay", seconds=3, count=100)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "--config", str(world.folder / "syncd.toml"), "sync"],
        cwd=world.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SYNCD_LOG_LEVEL": "WARNING"},
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _running(world):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 130, proc.stderr.read() if proc.stderr else ""
    assert runs(world) == [("interrupted", 130)]
    assert not statuses(world)[("esputnik", "in_flight")]


def _running(world: World) -> bool:
    try:
        return bool(runs(world))
    except sqlite3.OperationalError:
        return False


def test_status_shows_a_running_run_with_its_elapsed_time(world: World) -> None:
    store = world.store()
    try:
        started = world.clock.now()
        store.start_run("reconcile", started)
    finally:
        store.close()
    with InstanceLock(world.cfg.store.path):  # the syncd running it holds the lock
        text = render(collect(world.cfg, started + timedelta(seconds=75)))
    assert "reconcile" in text and "running for 75s" in text
    assert "exit None" not in text


def test_status_shows_a_run_left_running_by_a_kill_as_crashed(world: World) -> None:
    """A killed run stays `running` in the store until the next run closes it: status
    showed `running for 259200s` three days on, as if all were well. No syncd holds the
    store's lock, so none runs it: it is shown crashed, in the text and the JSON."""
    store = world.store()
    try:
        started = world.clock.now()
        run_id = store.start_run("reconcile", started)
    finally:
        store.close()
    data = collect(world.cfg, started + timedelta(days=3))
    (run,) = [r for r in data["runs"] if r["id"] == run_id]
    assert run["status"] == "crashed" and run["message"].startswith("killed: left running")
    assert "running for" not in render(data)
