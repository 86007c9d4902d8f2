"""Faults of the store itself — disk full, no write permission, a damaged file, a store from
a newer syncd — are one clear StoreError naming the path and what to do, never a
traceback and never lost data; and the WAL stays bounded while analysts read.

What each simulates: disk full is SQLite's own SQLITE_FULL, raised by a `max_page_count`
just above the store's size (SQLite maps ENOSPC to the same code). No write permission is
real: the kernel refuses an unprivileged uid (nobody, when the tests run as root). A
read-only file system cannot be mounted here; it is the same SQLITE_READONLY, told apart
by `statvfs`. Damage is bytes written over the file, as a bad disk or a copy would.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing
from sqlite_utils import Database

import syncd.state as state
from syncd.cli import main
from syncd.daemon import Daemon
from syncd.errors import StoreError
from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.state.schema import KNOWN, migrations
from tests.helpers import World, esputnik_table, start_service, unprivileged

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SYNCD = [sys.executable, "-m", "syncd.cli"]


def add_runs(store: Store, n: int, size: int = 200) -> None:
    with store.write() as c:
        c.executemany(
            "INSERT INTO runs (kind, started_at, status, message) VALUES ('pull', 't', 'ok', ?)",
            [("m" * size,)] * n,
        )


def runs(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])
    finally:
        conn.close()


# --- disk full ---------------------------------------------------------------------------
def test_disk_full_names_the_store_rolls_back_and_leaves_the_store_usable(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "syncd.db")
    try:
        add_runs(store, 100)
        pages = store.scalar("PRAGMA page_count")
        store.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreError) as caught:
            add_runs(store, 5000)  # SQLite rolls the transaction back itself
        assert "disk full" in caught.value.message
        assert str(tmp_path / "syncd.db") in caught.value.message
        assert caught.value.hint and str(tmp_path) in caught.value.hint
        assert store.scalar("SELECT count(*) FROM runs") == 100
        store.conn.execute("PRAGMA max_page_count = 1073741823")  # space freed
        add_runs(store, 5000)
        assert store.scalar("SELECT count(*) FROM runs") == 5100
    finally:
        store.close()


def test_a_sync_that_fills_the_disk_stops_with_disk_full_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Server(ESputnikSim()) as server:
        world = World(tmp_path, {"esputnik": esputnik_table(server.url)})
        world.write(list(rows(100)))
        assert world.sync().exit_code == 0
        before = world.deliveries()
        opening = Store.open

        def full_disk(path: Path, **kw: bool) -> Store:
            store = opening(path, **kw)
            pages = store.scalar("PRAGMA page_count")
            store.conn.execute(f"PRAGMA max_page_count = {pages + 4}")
            return store

        monkeypatch.setattr(Store, "open", full_disk)
        world.write(list(rows(3000)))
        with pytest.raises(StoreError, match="disk full"):
            world.sync()
        monkeypatch.undo()
        assert world.deliveries() == before
        report = world.sync()  # space freed: the next run sends what the full one could not
        assert report.exit_code == 0, report.summary()
        assert report.delivered["esputnik"].counts["sent"] >= 2900 - len(before)


# --- locked -----------------------------------------------------------------------------
def test_a_store_another_connection_keeps_locked_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state, "BUSY_TIMEOUT_MS", 1000)  # rather than waiting 30 s
    store = Store.open(tmp_path / "syncd.db")
    analyst = sqlite3.connect(tmp_path / "syncd.db", isolation_level=None)
    analyst.execute("BEGIN IMMEDIATE")  # an analyst's write, never committed
    try:
        with pytest.raises(StoreError, match="stayed locked by another connection for 1 s"):
            store.start_run("reconcile", NOW)
    finally:
        analyst.execute("ROLLBACK")
        analyst.close()
    assert store.start_run("reconcile", NOW) == 1  # usable once the analyst lets go
    store.close()


# --- no write permission -----------------------------------------------------------------
@pytest.fixture
def reachable() -> Iterator[Path]:
    """A folder the unprivileged uid can reach (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="syncd-store-faults-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def stored(folder: Path) -> Path:
    path = folder / "syncd.db"
    store = Store.open(path)
    add_runs(store, 3)
    store.close()  # -wal and -shm go with the last connection
    return path


def test_a_read_only_store_file_is_read_but_a_write_says_the_file_is_not_writable(
    reachable: Path,
) -> None:
    path = stored(reachable)
    path.chmod(0o444)
    with unprivileged():
        store = Store.open(path)
        try:
            assert store.scalar("SELECT count(*) FROM runs") == 3  # `syncd status` works
            with pytest.raises(StoreError) as caught:
                store.start_run("reconcile", NOW)
        finally:
            store.close()
    assert caught.value.message.startswith(f"the store {path} cannot be written: ")
    assert "the file is not writable by uid" in caught.value.message
    assert caught.value.hint and "writable by the user syncd runs as" in caught.value.hint
    assert runs(path) == 3


def test_a_store_in_a_read_only_folder_says_the_folder_is_not_writable(reachable: Path) -> None:
    path = stored(reachable)
    path.chmod(0o666)
    reachable.chmod(0o555)
    with unprivileged(), pytest.raises(StoreError) as caught:
        Store.open(path)  # SQLite cannot create syncd.db-wal and -shm beside it
    reachable.chmod(0o777)
    assert caught.value.message.startswith(f"the store {path} cannot be written: its folder ")
    assert "-wal" in caught.value.message
    assert runs(path) == 3


def test_a_store_it_may_not_create_says_so(reachable: Path) -> None:
    reachable.chmod(0o755)
    with unprivileged():
        with pytest.raises(StoreError, match="not writable by uid") as created:
            Store.open(reachable / "syncd.db")
        with pytest.raises(StoreError, match="cannot create the folder") as folder:
            Store.open(reachable / "state" / "syncd.db")
    assert str(reachable / "syncd.db") in created.value.message
    assert str(reachable / "state" / "syncd.db") in folder.value.message


# --- damage ------------------------------------------------------------------------------
def damage(path: Path, how: str) -> None:
    if how == "not a database":
        path.write_text("Record ID,Email\n1,a@example.com\n" * 200, encoding="utf-8")
        return
    with open(path, "r+b") as f:
        if how == "truncated":
            f.truncate(path.stat().st_size // 2)
        else:  # garbage over page 2 (the schema's first pages) or over pages 30-37
            f.seek(4096 * (1 if how == "garbage over page 2" else 30))
            f.write(os.urandom(4096 * (1 if how == "garbage over page 2" else 8)))


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[Path]:
    """A store of a few hundred pages, closed (WAL folded in); gone before the teardown's
    integrity check, which would otherwise fail on the damage done on purpose."""
    path = tmp_path / "syncd.db"
    store = Store.open(path)
    add_runs(store, 2000)
    store.close()
    yield path
    path.unlink(missing_ok=True)


def assert_recovery_said(exc: StoreError, path: Path) -> None:
    assert exc.message.startswith(f"the store {path} is damaged: ")
    assert exc.hint and "backup" in exc.hint and f"sqlite3 {path} .recover" in exc.hint


@pytest.mark.parametrize("how", ["garbage over page 2", "truncated", "not a database"])
def test_opening_a_damaged_store_says_how_to_recover(store_path: Path, how: str) -> None:
    damage(store_path, how)
    with pytest.raises(StoreError) as caught:
        Store.open(store_path, create=False)
    assert_recovery_said(caught.value, store_path)


def test_quick_check_finds_damage_that_opening_does_not(store_path: Path) -> None:
    store = Store.open(store_path, create=False)
    try:
        assert store.quick_check() == "ok"
    finally:
        store.close()
    damage(store_path, "garbage over later pages")
    store = Store.open(store_path, create=False)  # the schema's pages are intact
    try:
        problems = store.quick_check()
    finally:
        store.close()
    assert problems.startswith("Page ") and "\n" not in problems  # one line, naming pages
    assert_recovery_said(state.damaged(store_path, problems), store_path)


def config_beside(store: Path) -> Path:
    """A minimal config for the store at `store` (a vendor nothing listens for)."""
    config = store.parent / "syncd.toml"
    config.write_text(
        '[source]\npath = "contacts.csv"\nkey = "Record ID"\n'
        f'[store]\npath = "{store.name}"\n[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\n'
        'api_key = "k"\nmapping = "esputnik.toml"\n',
        encoding="utf-8",
    )
    (store.parent / "esputnik.toml").write_text('[fields]\nemail = "Email"\n', encoding="utf-8")
    return config


def test_a_command_on_a_damaged_store_prints_one_error_not_a_traceback(store_path: Path) -> None:
    config = config_beside(store_path)
    damage(store_path, "garbage over page 2")  # damage a command meets (quick_check finds the rest)
    proc = subprocess.run(
        [*SYNCD, "--config", str(config), "status"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"syncd: the store {store_path} is damaged: "), proc.stderr


# --- a store that is not this version's --------------------------------------------------
def test_a_store_from_a_newer_syncd_is_refused_naming_its_migrations(store_path: Path) -> None:
    conn = sqlite3.connect(store_path)
    with conn:
        for name in ("m900_future", "m901_further"):
            conn.execute(
                "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                "VALUES ('syncd', ?, '2027-01-01')",
                (name,),
            )
    conn.close()
    for migrate in (True, False):
        with pytest.raises(StoreError) as caught:
            Store.open(store_path, migrate=migrate)
        assert "newer syncd" in caught.value.message
        assert "m900_future, m901_further" in caught.value.message
        assert caught.value.hint and caught.value.hint.startswith("upgrade syncd")


def applied(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY rowid")]
    except sqlite3.OperationalError:  # no such table: nothing applied
        return []
    finally:
        conn.close()


@pytest.mark.parametrize("age", ["older", "empty"])
def test_status_and_show_read_a_store_behind_this_syncd_as_it_is(tmp_path: Path, age: str) -> None:
    """`syncd status` (and `sync --dry-run`, which "writes nothing") migrated a store an older
    syncd wrote: run by the new version before the service was restarted, they left the old
    service a store "from a newer syncd", which it refused at its next run. `syncd show`
    failed on it with a traceback (no such table). A 0-byte file (a mistyped restore) was
    made a store, and reported as healthy."""
    path = tmp_path / "syncd.db"
    if age == "older":
        conn = sqlite3.connect(path)
        migrations.apply(Database(conn), stop_before=KNOWN[-1])
        conn.close()
        expected = (
            f"syncd: the store {path} was written by an older syncd: this one reads it once it "
            "is migrated (1 migration(s) to apply)\n"
            "  → restart the service (`systemctl restart syncd`) or run `syncd sync`: either "
            "migrates it first\n"
        )
    else:
        path.write_bytes(b"")
        expected = (
            f"syncd: the store {path} is empty: no sync has written it yet\n"
            "  → check [store] path; if it held syncd's data (truncated, or a restore gone "
            "wrong), restore it from its backup; else the first `syncd sync` sets it up\n"
        )
    before = applied(path)
    config = config_beside(path)
    for command in (["status"], ["status", "--json"], ["show", "CRM-1"], ["sync", "--dry-run"]):
        proc = subprocess.run(
            [*SYNCD, "--config", str(config), *command], capture_output=True, text=True, timeout=60
        )
        assert (proc.returncode, proc.stderr) == (2, expected), command
        assert proc.stdout == ""
    assert applied(path) == before
    Store.open(path).close()  # what a sync or the service does first
    assert applied(path) == KNOWN
    proc = subprocess.run(
        [*SYNCD, "--config", str(config), "status"], capture_output=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def in_process(monkeypatch: pytest.MonkeyPatch, config: Path, *args: str) -> tuple[int, str, str]:
    """`syncd --config CONFIG ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "argv", ["syncd", "--config", str(config), *args])
    code: object = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    return int(code or 0), out.getvalue(), err.getvalue()


@pytest.mark.parametrize("how", ["0 bytes", "an empty database"])
def test_a_command_that_needs_the_store_refuses_an_empty_file_and_leaves_it_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A store truncated by accident, a mistyped restore, a `touch syncd.db`: `prune` and
    `retry` migrated it into a new, empty store and said all was well (`withdraw` and
    `backup` likewise), and `check` called it ok; `status` refused it. Each says the store
    is empty (exit 2) and leaves the file as it was: no tables, no WAL, no lock file. A
    `sync` or the service's start sets it up, as they do a store that is not there."""
    path = tmp_path / "syncd.db"
    if how == "0 bytes":
        path.write_bytes(b"")
    else:  # what `status` made of a 0-byte file before: a database with nothing in it
        sqlite3.connect(path).execute("PRAGMA journal_mode = WAL").close()
    config, before = config_beside(path), path.read_bytes()
    said = (
        f"syncd: the store {path} is empty: no sync has written it yet\n"
        "  → check [store] path; if it held syncd's data (truncated, or a restore gone "
        "wrong), restore it from its backup; else the first `syncd sync` sets it up\n"
    )
    for command in (
        ["prune"],
        ["retry"],
        ["withdraw", "--vendor", "altcraft"],
        ["backup", str(tmp_path / "copy.db")],
        ["status"],
    ):
        code, out, err = in_process(monkeypatch, config, *command)
        assert (code, out, err) == (2, "", said), command
    if how == "0 bytes":  # nothing beside it; an empty database's lock is the same file
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "esputnik.toml",
            "syncd.db",
            "syncd.toml",
        ]
    assert path.read_bytes() == before and applied(path) == []
    out = in_process(monkeypatch, config, "check")[1]
    assert f"store {path}: empty, no sync has written it yet" in out, out
    assert path.read_bytes() == before
    Store.open(path).close()  # a sync, the service's start
    assert applied(path) == KNOWN
    assert in_process(monkeypatch, config, "prune")[0] == 0


def test_a_store_truncated_after_syncd_used_it_is_refused_but_an_analysts_empty_file_is_set_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store truncated to 0 bytes after syncd had used it (a disk's or a backup tool's
    accident) was taken by `syncd sync` and the service for a first run: every contact sent
    again, everyone surveyed again. An analyst's `sqlite3.connect` before the first sync
    leaves a 0-byte file too, which they must set up. What tells them apart is the lock
    file: SQLite's -wal and -shm go when the last connection closes, the lock file stays,
    and only a command that then sets the store up makes it. So a 0-byte store with its lock
    file beside it is refused, by `sync`, the service's start and its reconcile (exit 2,
    the job failed), with nothing sent and the file left as it is."""
    app = ESputnikSim()
    with Server(app) as server:
        world = World(tmp_path, {"esputnik": esputnik_table(server.url)})
        world.write(list(rows(5)))
        config, path = tmp_path / "syncd.toml", tmp_path / "syncd.db"
        sqlite3.connect(path).close()  # the analyst's, before the first sync
        assert path.stat().st_size == 0
        assert in_process(monkeypatch, config, "sync")[0] == 0
        sent = len(app.requests("/api/v1/contacts", "POST"))
        assert sent and (tmp_path / "syncd.db.lock").exists()
        os.truncate(path, 0)  # the accident
        said = (
            f"syncd: the store {path} is empty (0 bytes), but syncd has used it before (its "
            f"lock file {path}.lock is beside it): it was truncated, or a restore went wrong\n"
            f"  → with syncd stopped, restore {path} from its backup (README: Backups); or, to "
            "start over with a new store on purpose (every contact is sent again, and surveyed "
            f"again by trigger vendors), remove {path} and {path}.lock\n"
        )
        for command in (["sync"], ["sync", "--baseline"], ["pull"], ["prune"], ["status"]):
            assert in_process(monkeypatch, config, *command) == (2, "", said), command
        assert in_process(monkeypatch, config, "check")[::2] == (2, said)  # damage, not "empty"
        with pytest.raises(StoreError) as start:
            start_service(config)  # the service's start: exit 2, not restarted
        assert start.value.message == said.splitlines()[0].removeprefix("syncd: ")
        with structlog.testing.capture_logs() as logs:
            Daemon(config).reconcile_job()  # a reconcile of the service that runs on
        (failed,) = [e for e in logs if e["event"] == "job failed"]
        assert failed["job"] == "reconcile" and "used it before" in failed["error"], failed
        assert len(app.requests("/api/v1/contacts", "POST")) == sent
        assert path.stat().st_size == 0 and not Path(f"{path}-wal").exists()
        # removed with its lock file, as the hint says: a new store, on purpose
        path.unlink()
        (tmp_path / "syncd.db.lock").unlink()
        assert in_process(monkeypatch, config, "sync")[0] == 0
        assert len(app.requests("/api/v1/contacts", "POST")) > sent


def test_a_database_that_is_not_a_syncd_store_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.close()
    with pytest.raises(StoreError, match="not a syncd store"):
        Store.open(path)
    conn = sqlite3.connect(path)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    conn.close()
    assert tables == ["accounts"]


@pytest.mark.parametrize("what", ["foreign", "newer"])
def test_a_refused_database_in_rollback_mode_is_not_turned_to_wal(
    tmp_path: Path, what: str
) -> None:
    """A database syncd refuses — someone else's, or a store from a newer syncd in
    rollback-journal mode (as its `syncd backup` makes a copy) — was switched to WAL before
    it was refused: its header rewritten, and from then on every reader of it needs to
    write the `-shm` beside it (and WAL is unsafe on a network file system). Refused, it
    is left byte for byte as it was."""
    path = tmp_path / "syncd.db"
    if what == "newer":
        Store.open(path).close()
    conn = sqlite3.connect(path)
    with conn:
        if what == "newer":
            conn.execute(
                "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                "VALUES ('syncd', 'm900_future', '2027-01-01')"
            )
        else:
            conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(StoreError, match="newer syncd" if what == "newer" else "not a syncd"):
            Store.open(path, create=create)
    assert path.read_bytes() == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


# --- open without creating ---------------------------------------------------------------
def test_open_without_create_refuses_a_missing_store_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state" / "syncd.db"
    with pytest.raises(StoreError, match="there is no store at") as caught:
        Store.open(path, create=False)
    assert str(path) in caught.value.message
    assert not path.parent.exists()
    Store.open(path).close()
    Store.open(path, create=False, migrate=False).close()


# --- a bounded WAL -----------------------------------------------------------------------
def wal(path: Path) -> int:
    wal_path = Path(f"{path}-wal")
    return wal_path.stat().st_size if wal_path.exists() else 0


def reader(path: Path, hold: float, stop: threading.Event) -> None:
    """An analyst: read transactions held `hold` seconds each, one after another.

    The read that takes the snapshot costs next to nothing whatever the table's size: a
    scan of `runs` (15 MB growing to 45 MB here) took up to 0.3 s on a loaded machine, each
    transaction three times `hold`, and a reset waits for each older reader and then for
    those still reading the WAL (two or three transactions): past the 500 ms wait, again
    and again, and the WAL grew past the bound. Longer readers are the next test's."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    while not stop.is_set():
        conn.execute("BEGIN")
        conn.execute("SELECT max(id) FROM runs").fetchone()  # the b-tree's last page
        stop.wait(hold)
        conn.execute("COMMIT")
    conn.close()


@pytest.fixture
def small_wal(monkeypatch: pytest.MonkeyPatch) -> int:
    """The reset threshold at 2 MB rather than 64 MB, so a test need not write gigabytes."""
    monkeypatch.setattr(state, "WAL_RESET_AT", 2 * 1024 * 1024)
    monkeypatch.setattr(state, "WAL_RESET_WAIT_MS", 500)
    return 2 * 1024 * 1024


def test_the_wal_stays_bounded_with_and_without_readers(tmp_path: Path, small_wal: int) -> None:
    path = tmp_path / "syncd.db"
    store = Store.open(path)
    bound = state.JOURNAL_SIZE_LIMIT + small_wal  # one 256 KB transaction past the threshold
    try:
        sizes = []
        for _ in range(60):  # 15 MB, no reader
            add_runs(store, 256, size=1000)
            sizes.append(wal(path))
        assert max(sizes) < bound
        stop = threading.Event()
        # two analysts, overlapping: some snapshot is always held
        threads = [threading.Thread(target=reader, args=(path, 0.1, stop)) for _ in range(2)]
        threads[0].start()
        time.sleep(0.05)
        threads[1].start()
        sizes = []
        try:
            for _ in range(120):  # 30 MB under the readers
                add_runs(store, 256, size=1000)
                sizes.append(wal(path))
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert max(sizes) < bound, sizes
    finally:
        store.close()


def test_a_reader_holding_one_snapshot_costs_the_writer_one_wait_per_threshold(
    tmp_path: Path, small_wal: int
) -> None:
    path = tmp_path / "syncd.db"
    store = Store.open(path)
    waits: list[str] = []
    try:
        store.conn.set_trace_callback(
            lambda sql: waits.append(sql) if sql.endswith("= 500") else None
        )
        analyst = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        analyst.execute("BEGIN")
        analyst.execute("SELECT count(*) FROM runs").fetchone()  # holds this snapshot
        for _ in range(40):  # 10 MB that cannot be reset past the analyst's snapshot
            add_runs(store, 256, size=1000)
        grown = wal(path)
        assert grown > 4 * small_wal  # the cost: the WAL holds everything since the snapshot
        assert 0 < len(waits) <= grown // small_wal  # and a wait per threshold, not per commit
        analyst.execute("COMMIT")
        analyst.close()
        add_runs(store, 1)  # the first commit after the reader is gone resets the WAL
        assert wal(path) < small_wal
    finally:
        store.close()


def test_check_never_creates_the_store_and_says_when_it_is_damaged(store_path: Path) -> None:
    config = config_beside(store_path)
    check = [*SYNCD, "--config", str(config), "check"]
    store_path.unlink()
    proc = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"store {store_path}: not created yet" in proc.stdout
    assert not store_path.exists()
    store = Store.open(store_path)
    add_runs(store, 2000)
    store.close()
    damage(store_path, "garbage over later pages")
    proc = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"syncd: the store {store_path} is damaged: Page "), proc.stderr
    assert ".recover" in proc.stderr and "Traceback" not in proc.stderr


def test_a_store_killed_while_it_is_created_leaves_nothing_at_its_path(
    tmp_path: Path,
) -> None:
    """A first sync killed while it creates the store (its migrations under way) left an
    empty or half-made database at [store] path, which every command but sync refuses. A
    new store is made under a name of its own and linked into place whole: the kill leaves
    nothing at the path, and the next open starts over."""
    path = tmp_path / "syncd.db"
    code = (
        "import os, signal, sys\n"
        "from syncd.state import Store\n"
        "from syncd.state.schema import migrations\n"
        "apply = migrations.apply\n"
        "def killed(db, **kw):\n"
        "    apply(db, stop_before=sys.argv[2])\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "migrations.apply = killed\n"
        "Store.open(__import__('pathlib').Path(sys.argv[1]))\n"
    )
    for stop in (KNOWN[0], KNOWN[len(KNOWN) // 2]):
        proc = subprocess.run([sys.executable, "-c", code, str(path), stop], timeout=60)
        assert proc.returncode == -9
        assert not path.exists()
        assert any(p.name.startswith(".syncd.db.new") for p in tmp_path.iterdir())
    Store.open(path).close()
    assert applied(path) == KNOWN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syncd.db"]
