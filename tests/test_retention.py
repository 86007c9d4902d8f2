"""Retention (`Store.prune`, `syncd prune`, the daemon after a reconcile) and `syncd backup`."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlite_utils import Database

import syncd.state
from syncd import log as logmod
from syncd.cli import cli
from syncd.clock import SystemClock
from syncd.daemon import Daemon
from syncd.errors import SyncdError
from syncd.pipeline import RunReport
from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store, iso
from syncd.state.schema import migrations
from tests.helpers import World, esputnik_table

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD = iso(NOW - timedelta(days=100))
RECENT = iso(NOW - timedelta(days=1))


def add_run(store: Store, kind: str, at: str, status: str = "ok") -> int:
    with store.write() as c:
        cur = c.execute(
            "INSERT INTO runs (kind, started_at, status) VALUES (?, ?, ?)", (kind, at, status)
        )
    return int(cur.lastrowid or 0)


def add_delivery(store: Store, run_id: int, status: str, at: str, key: str = "k") -> int:
    with store.write() as c:
        cur = c.execute(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
            "created_at, updated_at) VALUES (?, 'esputnik', ?, 'new', ?, 'h', '{}', ?, ?)",
            (run_id, key, status, at, at),
        )
    return int(cur.lastrowid or 0)


def quarantine(store: Store, run_id: int, n: int = 1) -> None:
    with store.write() as c:
        c.executemany(
            "INSERT INTO quarantine (run_id, file, line, reason, created_at) "
            "VALUES (?, 'x.csv', ?, 'bad', '')",
            [(run_id, line) for line in range(n)],
        )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "syncd.db")
    try:
        yield store
    finally:
        store.close()


def dump(store: Store) -> list[str]:
    return list(store.conn.iterdump())


def test_prune_keeps_open_work_what_is_referenced_and_the_last_quarantine(store: Store) -> None:
    history = add_run(store, "reconcile", OLD)
    quarantine(store, history)
    closed = {s: add_delivery(store, history, s, OLD) for s in ("sent", "superseded", "skipped")}
    opened = {
        s: add_delivery(store, history, s, OLD)
        for s in ("pending", "in_flight", "failed", "unknown", "dead")
    }
    add_run(store, "pull", OLD)  # names nothing: it goes
    cursor_pull = add_run(store, "pull", OLD)
    with store.write() as c:
        c.execute(
            "INSERT INTO cursors (vendor, stream, cursor, updated_at, run_id) "
            "VALUES ('hellocustomer', 'responses', 'x', ?, ?)",
            (OLD, cursor_pull),
        )
    quiet = add_run(store, "reconcile", OLD)
    quarantine(store, quiet, 2)
    last = add_run(store, "reconcile", OLD)  # the last finished reconcile: status shows it
    quarantine(store, last)
    current = add_run(store, "reconcile", RECENT, status="running")
    fresh = add_delivery(store, current, "sent", RECENT)

    before = dump(store)
    expected = {"payloads": 3, "quarantine": 3, "runs": 2}
    assert store.prune(NOW, runs_days=90, payload_days=30, dry_run=True) == expected
    assert dump(store) == before
    assert store.prune(NOW, runs_days=90, payload_days=30) == expected

    payloads = {r["id"]: r for r in store.query("SELECT id, status, hash, payload FROM deliveries")}
    assert all(payloads[i]["payload"] is None for i in closed.values())
    assert [payloads[i]["status"] for i in closed.values()] == list(closed)
    assert all(payloads[i]["hash"] == "h" for i in closed.values())
    assert all(payloads[i]["payload"] == "{}" for i in [*opened.values(), fresh])
    kept = {r[0] for r in store.query("SELECT id FROM runs")}
    assert kept == {history, cursor_pull, last, current}
    by_run = store.query("SELECT run_id, count(*) FROM quarantine GROUP BY run_id")
    assert [tuple(r) for r in by_run] == [(last, 1)]
    assert store.prune(NOW, runs_days=90, payload_days=30) == dict.fromkeys(expected, 0)


def test_zero_days_keeps_everything(store: Store) -> None:
    run = add_run(store, "pull", OLD)
    quarantine(store, run)
    add_delivery(store, add_run(store, "reconcile", OLD), "sent", OLD)
    before = dump(store)
    gone = store.prune(NOW, runs_days=0, payload_days=0)
    assert gone == {"payloads": 0, "quarantine": 0, "runs": 0}
    assert dump(store) == before


def test_prune_changes_a_bounded_number_of_rows_per_transaction(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(syncd.state, "PRUNE_BATCH", 2)
    reconcile = add_run(store, "reconcile", OLD)
    for i in range(5):
        add_delivery(store, reconcile, "sent", OLD, key=str(i))
        add_run(store, "pull", OLD)
    add_run(store, "reconcile", RECENT)
    changes: list[int] = []  # rows changed by each transaction, read as it commits
    store.conn.set_trace_callback(
        lambda sql: changes.append(store.conn.total_changes) if sql == "COMMIT" else None
    )
    start = store.conn.total_changes
    assert store.prune(NOW, runs_days=90, payload_days=30) == {
        "payloads": 5,
        "quarantine": 0,
        "runs": 5,
    }
    store.conn.set_trace_callback(None)
    per_commit = [b - a for a, b in zip([start, *changes], changes, strict=False)]
    assert sum(per_commit) == 10
    assert max(per_commit) == 2


def old_payloads(store: Store, n: int) -> None:
    """`n` sent deliveries whose payloads retention lets go (100 days old, now)."""
    long_ago = iso(datetime.now(UTC) - timedelta(days=100))
    run = add_run(store, "reconcile", long_ago)
    for i in range(n):
        add_delivery(store, run, "sent", long_ago, key=str(i))
    add_run(store, "reconcile", iso(datetime.now(UTC)))


def payloads_left(store: Store) -> int:
    return int(store.scalar("SELECT count(*) FROM deliveries WHERE payload IS NOT NULL"))


def test_a_stop_request_ends_a_prune_between_batches_keeping_what_was_committed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stop (the daemon's SIGTERM, `syncd prune`'s) is looked at before each batch, as
    the diff looks at it between blocks: the batches committed stay, nothing more is
    changed, and the counts say what went; the next prune does the rest."""
    monkeypatch.setattr(syncd.state, "PRUNE_BATCH", 2)
    old_payloads(store, 5)
    stop = threading.Event()
    store.conn.set_trace_callback(lambda sql: stop.set() if sql == "COMMIT" else None)
    gone = store.prune(datetime.now(UTC), runs_days=90, payload_days=30, stop=stop)
    store.conn.set_trace_callback(None)
    assert gone == {"payloads": 2, "quarantine": 0, "runs": 0}
    assert payloads_left(store) == 3
    assert store.prune(datetime.now(UTC), runs_days=90, payload_days=30)["payloads"] == 3


def retention_config(folder: Path) -> Path:
    (folder / "m.toml").write_text('[fields]\nemail = "Email"\n')
    config = folder / "syncd.toml"
    config.write_text(
        '[source]\npath = "x.csv"\nkey = "id"\n[store]\npath = "syncd.db"\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\nmapping = "m.toml"\n'
    )
    return config


# `syncd …` (argv after the signal's name) whose first prune batch of 2 rows signals it
PRUNE_SIGNALLED = """
import contextlib, os, signal, sys
import syncd.state as state
state.PRUNE_BATCH = 2
signum, real, commits = getattr(signal, sys.argv.pop(1)), state.Store.write, []
@contextlib.contextmanager
def write(self, **kw):
    with real(self, **kw) as c:
        yield c
    commits.append(1)
    if len(commits) == 1:
        os.kill(os.getpid(), signum)
state.Store.write = write
from syncd.cli import main
main()
"""


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_syncd_prune_stopped_between_batches_says_what_it_removed(
    tmp_path: Path, store: Store, signum: str
) -> None:
    """SIGTERM (`systemd-run`'s stop, a timer's timeout) killed `syncd prune` with nothing
    said, and Ctrl-C ended it with a bare exit 130: how much of a long prune of a large
    store went, nobody knew. It now stops between batches, keeps what was committed, says
    how much that was, and exits 130 as an interrupted sync does."""
    config = retention_config(tmp_path)
    old_payloads(store, 5)
    proc = subprocess.run(
        [sys.executable, "-c", PRUNE_SIGNALLED, signum, "--config", str(config), "prune"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout.startswith(
        "stopped: pruned 0 runs, 0 quarantined rows, 2 delivery payloads before the stop; "
        "the next prune removes the rest (keep_runs_days = 90"
    ), proc.stdout
    assert "Traceback" not in proc.stderr
    assert payloads_left(store) == 3


def test_systemctl_stop_during_the_daemons_prune_ends_it_after_the_batch_in_progress(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service prunes after a reconcile; `systemctl stop` then waited for the whole
    prune (a first prune of a year-old store: millions of payloads) and could outlast
    TimeoutStopSec. The daemon's stop ends it after the batch in progress."""
    config = retention_config(tmp_path)
    old_payloads(store, 5)
    monkeypatch.setattr(syncd.state, "PRUNE_BATCH", 2)
    daemon = Daemon(config, clock=SystemClock())  # its own stop event, not the process's
    real_write = Store.write

    @contextmanager
    def write(self: Store, **kw: bool) -> Iterator[sqlite3.Connection]:
        with real_write(self, **kw) as c:
            yield c
        daemon.stop.set()  # SIGTERM comes while the first batch commits

    monkeypatch.setattr(Store, "write", write)
    out = io.StringIO()
    logmod.configure(level="INFO", json=True, stream=out)
    daemon.prune(daemon.cfg)
    assert payloads_left(store) == 3
    (line,) = [json.loads(x) for x in out.getvalue().splitlines() if "prune" in x]
    assert line["event"].startswith("prune stopped") and line["payloads"] == 2, line


def test_the_retention_migration_keeps_an_old_store_and_is_instant(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = Database(path)
    migrations.apply(old, stop_before="m009_retention")
    old.execute("INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', '', 'ok')")
    old.execute(
        "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, created_at, "
        "updated_at) VALUES (1, 'esputnik', 'k', 'new', 'sent', 'h', '{}', '', '')"
    )
    old.conn.commit()
    old.close()
    store = Store.open(path)
    try:
        payload = store.query(
            "SELECT \"notnull\" FROM pragma_table_info('deliveries') WHERE name = 'payload'"
        )
        assert payload[0][0] == 0
        assert store.scalar("SELECT count(*) FROM contact_status") == 0  # the views still work
        with store.write() as c:
            c.execute("UPDATE deliveries SET payload = NULL")
        plan = store.query("EXPLAIN QUERY PLAN SELECT 1 FROM deliveries WHERE run_id = 1")
        assert "deliveries_run" in plan[0]["detail"]
    finally:
        store.close()


@pytest.fixture
def sim() -> Iterator[tuple[ESputnikSim, Server]]:
    app = ESputnikSim()
    with Server(app) as server:
        yield app, server


def test_the_daemon_prunes_after_a_reconcile(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    world = World(tmp_path, {"esputnik": esputnik_table(sim[1].url)})
    world.write(list(rows(10)))
    assert world.sync().exit_code == 0
    long_ago = iso(datetime.now(UTC) - timedelta(days=400))
    store = world.store()
    try:
        pull = add_run(store, "pull", long_ago)
        sent = add_delivery(store, add_run(store, "reconcile", long_ago), "sent", long_ago)
    finally:
        store.close()
    world.write(list(rows(12)))
    Daemon(tmp_path / "syncd.toml").reconcile_job()
    left = {d["id"]: d for d in world.deliveries()}
    assert left[sent]["payload"] is None
    assert sum(d["payload"] is not None for d in left.values()) == 12  # this year's sends
    store = world.store()
    try:
        assert store.scalar("SELECT count(*) FROM runs WHERE id = ?", (pull,)) == 0
    finally:
        store.close()


def test_syncd_prune_says_what_it_removes(tmp_path: Path, store: Store) -> None:
    (tmp_path / "syncd.toml").write_text(
        '[source]\npath = "x.csv"\nkey = "id"\n[store]\npath = "syncd.db"\nkeep_runs_days = 30\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\nmapping = "m.toml"\n'
    )
    (tmp_path / "m.toml").write_text('[fields]\nemail = "Email"\n')
    add_run(store, "pull", iso(datetime.now(UTC) - timedelta(days=31)))
    add_run(store, "pull", iso(datetime.now(UTC)))
    args = ["--config", str(tmp_path / "syncd.toml"), "prune"]

    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would prune: 1 runs, 0 quarantined rows, 0 delivery payloads")
    assert "keep_runs_days = 30, keep_payload_days = 30" in dry.output
    assert store.scalar("SELECT count(*) FROM runs") == 2
    done = CliRunner().invoke(cli, args)
    assert done.output.startswith("pruned: 1 runs"), done.output
    assert store.scalar("SELECT count(*) FROM runs") == 1


def test_retention_keys_are_held_to_their_range(tmp_path: Path) -> None:
    (tmp_path / "m.toml").write_text('[fields]\nemail = "Email"\n')
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[source]\npath = "x.csv"\nkey = "id"\n[store]\npath = "s.db"\nkeep_payload_days = -1\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\nmapping = "m.toml"\n'
    )
    result = CliRunner().invoke(cli, ["--config", str(config), "prune"])
    assert isinstance(result.exception, SyncdError)
    assert "keep_payload_days: must be between 0 and 36500" in str(result.exception)


def test_a_backup_taken_during_a_sync_is_a_whole_store(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    app, server = sim
    world = World(tmp_path, {"esputnik": esputnik_table(server.url, batch_size=100)})
    world.write(list(rows(600)))
    # each batch's answer comes late: the sync commits batch by batch for a second or more
    app.faults.add("delay", seconds=0.2, count=6, path="/api/v1/contacts", method="POST")
    store = world.store()
    reports: list[RunReport] = []
    writer = threading.Thread(target=lambda: reports.append(world.sync()))
    copies: list[Path] = []
    try:
        writer.start()
        while writer.is_alive():
            copies.append(tmp_path / f"copy-{len(copies)}.db")
            store.backup(copies[-1])
            writer.join(0.05)
    finally:
        writer.join()
        store.close()
    assert reports[0].exit_code == 0
    sent = []
    for copy in copies:
        conn = sqlite3.connect(copy)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        finally:
            conn.close()
        assert oct(copy.stat().st_mode & 0o777) == "0o600"
        opened = Store.open(copy, create=False)
        try:
            sent.append(opened.scalar("SELECT count(*) FROM deliveries WHERE status = 'sent'"))
        finally:
            opened.close()
    assert any(0 < n < 600 for n in sent), sent  # copies of the store mid-sync
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_a_backup_never_replaces_a_file(tmp_path: Path, store: Store) -> None:
    taken = tmp_path / "taken.db"
    taken.write_text("keep me")
    with pytest.raises(SyncdError, match="exists"):
        store.backup(taken)
    assert taken.read_text() == "keep me"
    with pytest.raises(SyncdError, match=r"backup to .* failed"):
        store.backup(tmp_path / "missing" / "copy.db")
    assert not (tmp_path / "missing").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries


def test_syncd_backup_from_the_command_line(tmp_path: Path, store: Store) -> None:
    (tmp_path / "m.toml").write_text('[fields]\nemail = "Email"\n')
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[source]\npath = "x.csv"\nkey = "id"\n[store]\npath = "syncd.db"\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\nmapping = "m.toml"\n'
    )
    add_run(store, "pull", RECENT)
    command = [sys.executable, "-m", "syncd", "--config", str(config), "backup", "copy.db"]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "backed up" in first.stdout
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2
    assert "copy.db exists" in again.stderr
    copy = Store.open(tmp_path / "copy.db", create=False)
    try:
        assert copy.scalar("SELECT count(*) FROM runs") == 1
    finally:
        copy.close()


# `syncd …` (argv after the point) that gets SIGTERM in the backup's page copy, with pages
# still to copy (`copying`), as it ends (`copied`: the copy's first statement after it) or
# once its copy is linked to PATH
BACKUP_SIGNALLED = """
import os, signal, sqlite3, sys
point, real_connect, real_link = sys.argv.pop(1), sqlite3.connect, os.link
class Copy(sqlite3.Connection):
    def execute(self, sql, *args):
        if point == "copied" and sql.startswith("PRAGMA journal_mode"):
            os.kill(os.getpid(), signal.SIGTERM)
        return super().execute(sql, *args)
class Store(sqlite3.Connection):
    def backup(self, target, *, progress=None, **kw):
        def step(status, remaining, pages):
            if point == "copying" and remaining:
                os.kill(os.getpid(), signal.SIGTERM)
            if progress is not None:
                progress(status, remaining, pages)
        return super().backup(target, progress=step, **kw)
def connect(path, *args, **kw):
    return real_connect(path, *args, **kw, factory=Copy if str(path).endswith(".tmp") else Store)
def link(src, dst):
    real_link(src, dst)
    if point == "linked":
        os.kill(os.getpid(), signal.SIGTERM)
sqlite3.connect, os.link = connect, link
from syncd.cli import main
main()
"""


def ballast(store: Store, steps: int) -> None:
    """Make the store `steps` of the backup's copy steps big (a quarantine reason)."""
    size = steps * syncd.state.BACKUP_STEP * store.scalar("PRAGMA page_size")
    run = add_run(store, "pull", RECENT)
    with store.write() as c:
        c.execute(
            "INSERT INTO quarantine (run_id, file, line, reason, created_at) "
            "VALUES (?, 'x.csv', 1, ?, '')",
            (run, "x" * size),
        )


@pytest.mark.parametrize("point", ["copying", "copied", "linked"])
def test_a_backup_stopped_by_sigterm_leaves_nothing_behind_and_says_so(
    tmp_path: Path, store: Store, point: str
) -> None:
    """`systemd-run` (a backup timer's) stopping `syncd backup` killed it at once, leaving
    its hidden temporary copy, a whole store's size, in the backup folder every time; once
    linked, a PATH the command never said it made. SIGTERM takes the path a failed backup
    takes: nothing is left, and it says it was stopped (exit 130, as an interrupted sync).
    In the page copy it is acted on between two steps, with pages still to copy: a copy in
    one step would take minutes of a big store to hear it."""
    config = retention_config(tmp_path)
    ballast(store, 3)
    folder = tmp_path / "backups"
    folder.mkdir()
    dest = folder / "syncd-copy.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            BACKUP_SIGNALLED,
            point,
            "--config",
            str(config),
            "backup",
            str(dest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith(f"syncd: the backup to {dest} was stopped"), proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout
    assert sorted(os.listdir(folder)) == []


def test_a_backup_while_another_connection_commits_is_the_store_as_it_began(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page a step, with a writer committing all the while: the copy holds one snapshot
    throughout, so it neither starts over at each commit (and never ends under a busy
    daemon) nor mixes pages of two commits; it is the store as the backup began."""
    monkeypatch.setattr(syncd.state, "BACKUP_STEP", 1)
    ballast(store, 2000)  # 2,000 steps of a page
    before = store.scalar("SELECT count(*) FROM runs")
    other = Store.open(store.path)
    began, done, commits = threading.Event(), threading.Event(), []
    # the writer starts once the backup holds its snapshot (its first step is done): a
    # commit made before then is rightly in the copy, and would make `before` wrong
    monkeypatch.setattr(syncd.state, "_between_steps", lambda *_: began.set())

    def commit() -> None:  # until the backup ends, or 10 s
        began.wait(10)
        while not done.is_set() and len(commits) < 10_000:
            commits.append(add_run(other, "pull", RECENT))
            done.wait(0.001)

    writer = threading.Thread(target=commit)
    try:
        writer.start()
        store.backup(tmp_path / "copy.db")
        during = len(commits)
    finally:
        done.set()
        writer.join()
        other.close()
    assert 0 < during < 10_000  # commits went on during the copy, which ended anyway
    copy = Store.open(tmp_path / "copy.db", create=False)
    try:
        assert copy.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.scalar("SELECT count(*) FROM runs") == before
    finally:
        copy.close()
