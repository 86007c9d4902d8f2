"""A trigger vendor that has acknowledged no contact of a store that knows some would
survey every one of them at its next reconcile: `syncd run` does not start with one, and
a reload does not take one (`syncd.daemon.unbaselined`), until it is baselined or surveyed
by hand. In process, with the in-memory vendors: the daemon is started up to its loop and
stopped there at once."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import syncd.diff
from syncd import log as logmod
from syncd.cli import cli, main
from syncd.clock import SYSTEM, SystemClock
from syncd.daemon import Daemon
from syncd.errors import ConfigError, RetriableError
from syncd.lock import InstanceLock
from syncd.sample import rows
from syncd.state import Store
from tests.helpers import start_service
from tests.memory import MemoryWorld, Remote, memory_vendors

N = 5


@pytest.fixture
def remotes() -> Iterator[dict[str, Remote]]:
    with memory_vendors(mem="upsert", shop="upsert", survey="trigger", poll="trigger") as found:
        yield found


def installed(folder: Path, remotes: dict[str, Remote], *names: str) -> MemoryWorld:
    """The installation with these vendors configured (the store, if any, as it is)."""
    world = MemoryWorld(folder, {name: remotes[name] for name in names})
    world.write(list(rows(N)))
    return world


def known(folder: Path, remotes: dict[str, Remote]) -> MemoryWorld:
    """A store that knows N contacts, all sent to the upsert vendor `mem`."""
    world = installed(folder, remotes, "mem")
    assert world.sync().exit_code == 0
    return world


def start(world: MemoryWorld) -> int:
    return start_service(world.folder / "syncd.toml")


def run_count(world: MemoryWorld) -> int:
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


def test_the_service_does_not_start_with_trigger_vendors_new_to_a_known_store(
    tmp_path: Path, remotes: dict[str, Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 2 (the unit's RestartPreventExitStatus: systemd does not start it over and
    over), one error naming the vendors and both ways on, before anything is scheduled:
    nothing is sent, no run is recorded, the lock is let go."""
    known(tmp_path, remotes)
    world = installed(tmp_path, remotes, "mem", "survey", "poll")
    config = world.folder / "syncd.toml"
    stderr = io.StringIO()  # never closed: the command points the logs at it
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(sys, "argv", ["syncd", "--config", str(config), "run"])
    SYSTEM.stop.set()  # should it start after all, it stops at once, exit 0
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        SYSTEM.stop.clear()
        monkeypatch.undo()
    assert exited.value.code == 2
    err = stderr.getvalue()
    assert err == (
        f"syncd: {config}: not started: trigger vendors survey, poll have acknowledged none "
        f"of the contacts the store {world.folder / 'syncd.db'} knows: the next reconcile "
        "would survey every one\n"
        "  → run `syncd sync --baseline --vendor survey --vendor poll` to record the current "
        "contacts as already surveyed, or `syncd sync --vendor survey --vendor poll` once by "
        "hand to survey every one of them on purpose (README: First run with a trigger "
        "vendor); then start the service\n"
    ), err
    assert remotes["survey"].batches == remotes["poll"].batches == []
    assert run_count(world) == 1  # the first sync's only
    InstanceLock(world.cfg.store.path).acquire().release()


def test_the_service_starts_once_the_trigger_vendor_is_baselined(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    known(tmp_path, remotes)
    world = installed(tmp_path, remotes, "mem", "survey")
    with pytest.raises(ConfigError, match="trigger vendor survey has acknowledged none"):
        start(world)
    assert world.sync(baseline=True, vendors=["survey"]).exit_code == 0
    assert start(world) == 0
    assert remotes["survey"].batches == []
    assert len(world.acknowledged("survey")) == N


def test_the_service_starts_once_the_trigger_vendor_was_synced_by_hand(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """`syncd sync --vendor survey`: everyone surveyed, on the operator's word."""
    known(tmp_path, remotes)
    world = installed(tmp_path, remotes, "mem", "survey")
    assert world.sync(vendors=["survey"]).exit_code == 0
    assert len(remotes["survey"].keys()) == N
    assert start(world) == 0


def test_the_service_starts_with_a_trigger_vendor_on_an_empty_store(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """A first sync: every contact is new to every vendor, whatever starts it."""
    world = installed(tmp_path, remotes, "mem", "survey")
    assert start(world) == 0
    assert (world.folder / "syncd.db").exists()


def down(remote: Remote) -> None:
    """The vendor answers no batch: its contacts stay pending (the vendor stopped)."""
    for key in (r[0] for r in rows(N)):
        remote.script[key] = RetriableError("connection refused", vendor="survey")


def test_a_first_sync_whose_trigger_vendor_was_down_lets_the_service_send_its_surveys(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """The sync delivered to survey on purpose (the first, of an empty store), which was
    down: every survey stayed queued, and the service refused to start until the same sync
    was run again by hand. The sends it queued are the operator's: the service starts and
    sends them once the vendor is back, each once."""
    world = installed(tmp_path, remotes, "mem", "survey")
    down(remotes["survey"])
    assert world.sync().exit_code == 1
    assert list(world.ledger("survey").values()) == ["pending"] * N
    assert start(world) == 0
    remotes["survey"].script.clear()
    remotes["survey"].batches.clear()  # the attempts it did not answer
    assert world.sync().exit_code == 0  # the service's next reconcile
    assert sorted(remotes["survey"].keys()) == sorted(r[0] for r in rows(N))


def test_surveys_no_sync_delivered_to_the_vendor_or_withdrawn_still_refuse_the_start(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """A vendor added to a known store: `syncd sync --vendor mem` queues its surveys but
    does not deliver to it, nor does a dry run; refused. A sync that delivers to it, down,
    asked for them; once they are withdrawn (the vendor removed), the vendor added back is
    refused again."""
    known(tmp_path, remotes)
    world = installed(tmp_path, remotes, "mem", "survey")
    assert world.sync(vendors=["mem"]).exit_code == 0
    assert world.sync(dry_run=True).exit_code == 0
    with pytest.raises(ConfigError, match="trigger vendor survey has acknowledged none"):
        start(world)
    down(remotes["survey"])
    assert world.sync(vendors=["survey"]).exit_code == 1
    assert start(world) == 0

    installed(tmp_path, remotes, "mem")
    config = str(world.folder / "syncd.toml")
    withdrawn = CliRunner().invoke(cli, ["--config", config, "withdraw", "--vendor", "survey"])
    assert withdrawn.exit_code == 0, withdrawn.output
    world = installed(tmp_path, remotes, "mem", "survey")
    with pytest.raises(ConfigError, match="trigger vendor survey has acknowledged none"):
        start(world)


class Killed(BaseException):
    """syncd killed at a crash point (SIGKILL: nothing of it runs after)."""


def test_the_service_starts_after_a_first_sync_killed_between_its_pieces(
    tmp_path: Path, remotes: dict[str, Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its contacts are in the store, and no vendor acknowledged any: the next run undoes
    them before anything else, so the store is empty as far as a survey goes. Refused, the
    service would not come back after a power cut during its first sync."""
    world = installed(tmp_path, remotes, "mem", "survey")

    def crashpoint(name: str) -> None:
        if name == "diff_piece_committed":
            raise Killed

    with monkeypatch.context() as patched:
        patched.setattr(syncd.diff, "PIECE", 2)
        patched.setattr(syncd.diff, "CHUNK", 2)
        patched.setattr(syncd.diff, "crashpoint", crashpoint)
        patched.setattr(Store, "undo_first_sync", lambda _store: {})  # a kill undoes nothing
        with pytest.raises(Killed):
            world.sync()
    store = world.store()
    try:
        assert store.unfinished_first_sync() and store.scalar("SELECT count(*) FROM contacts")
    finally:
        store.close()
    assert start(world) == 0
    assert world.sync().exit_code == 0  # the first sync again, whole: everyone is new
    assert len(remotes["survey"].keys()) == N


def test_the_start_checks_through_the_connection_it_keeps_opening_the_store_once(
    tmp_path: Path, remotes: dict[str, Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start opened the store a second time for the check, beside the connection it
    holds until exit; the reload's check reads through that one too."""
    known(tmp_path, remotes)
    world = installed(tmp_path, remotes, "mem", "survey")
    assert world.sync(baseline=True, vendors=["survey"]).exit_code == 0
    opened, real = [], Store.open

    def counted(path: Path, **kw: bool) -> Store:
        opened.append(path)
        return real(path, **kw)

    monkeypatch.setattr(Store, "open", counted)
    assert start(world) == 0
    assert opened == [world.cfg.store.path]


def test_the_service_starts_with_an_upsert_vendor_new_to_a_known_store(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """Sending an upsert vendor every contact is its first sync: nobody is surveyed."""
    known(tmp_path, remotes)
    assert start(installed(tmp_path, remotes, "mem", "shop")) == 0


def test_a_reload_adding_a_trigger_vendor_is_refused_with_the_same_two_ways_on(
    tmp_path: Path, remotes: dict[str, Remote], request: pytest.FixtureRequest
) -> None:
    """The reload keeps the running config, as before; its hint no longer says a restart
    surveys everyone (a restart is refused too). Once baselined, the same reload is taken."""
    world = known(tmp_path, remotes)
    daemon = Daemon(world.folder / "syncd.toml", SystemClock())
    daemon.keeper = world.store()  # as `Daemon.run` holds it, from start to exit
    request.addfinalizer(daemon.keeper.close)
    installed(tmp_path, remotes, "mem", "survey")
    stream = io.StringIO()
    logmod.configure(level="INFO", json=True, stream=stream)
    daemon.reload()
    assert list(daemon.cfg.vendors) == ["mem"]
    [refused] = [
        e for e in map(json.loads, stream.getvalue().splitlines()) if e["level"] == "error"
    ]
    assert refused["event"].startswith("config reload refused; keeping the running config")
    assert refused["vendors"] == "survey"
    assert refused["hint"] == (
        "stop the service; run `syncd sync --baseline --vendor survey` to record the current "
        "contacts as already surveyed, or `syncd sync --vendor survey` once by hand to survey "
        "every one of them on purpose (README: First run with a trigger vendor); then start it"
    )
    assert world.sync(baseline=True, vendors=["survey"]).exit_code == 0
    daemon.reload()
    assert list(daemon.cfg.vendors) == ["mem", "survey"]
    assert remotes["survey"].batches == []


def test_a_prune_keeps_the_run_that_asked_for_the_surveys_still_queued(
    tmp_path: Path, remotes: dict[str, Remote]
) -> None:
    """Surveys queued by `syncd sync --vendor mem` were asked for by the sync that later
    delivered to survey, down, queuing nothing itself. Retention (`keep_runs_days`) took
    that run: no delivery names it, and a later reconcile was the last. The service then
    refused to start. A prune keeps the newest run that delivered to a vendor while an
    open delivery of that vendor is at or before it, and only then."""
    known(tmp_path, remotes)
    world = installed(tmp_path, remotes, "mem", "survey")
    assert world.sync(vendors=["mem"]).exit_code == 0  # queues survey's sends
    down(remotes["survey"])
    assert world.sync(vendors=["survey"]).exit_code == 1  # asks for them: down
    assert world.sync(vendors=["mem"]).exit_code == 0  # the last reconcile
    later = SYSTEM.now() + timedelta(days=100)
    with closing(Store.open(world.folder / "syncd.db")) as store:
        asked = store.scalar("SELECT max(id) FROM runs WHERE delivered LIKE '%survey%'")
        store.prune(later, runs_days=90, payload_days=0)
    assert start(world) == 0
    with closing(Store.open(world.folder / "syncd.db")) as store:
        assert store.scalar("SELECT 1 FROM runs WHERE id = ?", (asked,))
    # once the surveys are sent, nothing holds that run back
    remotes["survey"].script.clear()
    assert world.sync(vendors=["survey"]).exit_code == 0
    assert world.sync(vendors=["mem"]).exit_code == 0  # the last reconcile again
    with closing(Store.open(world.folder / "syncd.db")) as store:
        store.prune(later, runs_days=90, payload_days=0)
        assert not store.scalar("SELECT 1 FROM runs WHERE id = ?", (asked,))
    assert start(world) == 0
