"""The store-writing commands besides `sync` and `pull` (tests/test_kill_loop.py,
tests/test_pull_kill_loop.py), killed: `syncd prune`, `withdraw`, `retry`, `backup`, `init`,
a store migration on open, and `syncd run` in its start-up catch-up and in a SIGHUP reload.

Each is SIGKILLed (a real subprocess) at random moments of its work: its writes are slowed
(`SLOWED`: a pause inside and after every transaction, so a kill lands in one as often as
between two) and the delay is drawn from the moment it first writes. After every kill the
next command must accept the store and find no half-applied state:
- prune removed each run's rows (the run and its quarantined rows) whole or not at all;
- withdraw closed deliveries or left them open, never anything else; the next converges;
- retry: nothing `sent` that the vendor did not acknowledge, nothing the vendor
  acknowledged lost (every trigger it received `sent` or `unknown`);
- backup left a whole checked copy or nothing: no temporary file once the next backup ran;
- init left a whole config or none a re-run cannot complete;
- a migration killed is applied whole at the next open.

The default suite kills each a few times; `-m slow` runs the long loops.
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import syncd.state
from syncd.sandbox import Stack
from syncd.state import Store, iso
from syncd.state.schema import KNOWN
from tests.test_crash import SYNCD

NOW = datetime.now(UTC)
OLD = iso(NOW - timedelta(days=100))

# `syncd …` whose every store transaction pauses `TEST_PAUSE` seconds before its COMMIT and
# after it, as does every step of a backup's page copy, and which says `writing` on stdout
# when it begins the first of either (or its first fsync: `init`'s files, each one; or a
# migration, each of which pauses before its commit); `TEST_BATCH` shrinks the prune's and the withdraw's
# batches, `TEST_STEP` the backup's steps (pages)
SLOWED = """
import contextlib, os, sys, time
import syncd.state as state
if os.environ.get("TEST_BATCH"):
    state.PRUNE_BATCH = int(os.environ["TEST_BATCH"])
if os.environ.get("TEST_STEP"):
    state.BACKUP_STEP = int(os.environ["TEST_STEP"])
pause, real, began = float(os.environ.get("TEST_PAUSE", "0")), state.Store.write, []
def writing():
    if not began:
        began.append(1)
        os.write(1, b"writing\\n")
@contextlib.contextmanager
def write(self, **kw):
    writing()
    with real(self, **kw) as c:
        yield c
        time.sleep(pause)
    time.sleep(pause)
def step(*_):
    writing()
    time.sleep(pause)
state.Store.write, state._between_steps = write, step
real_fsync = os.fsync
def fsync(fd):
    writing()
    time.sleep(pause)
    real_fsync(fd)
os.fsync = fsync
from syncd.state.schema import migrations
def slow(fn):
    def migration(db):
        writing()
        fn(db)
        time.sleep(pause)
    return migration
for entry in migrations._migrations:
    entry.fn = slow(entry.fn)
sys.argv[0] = "syncd"
from syncd.cli import main
main()
"""


def slowed(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", SLOWED, "--config", str(config), *args]


def kill_at_random(
    cmd: list[str], rng: random.Random, spread: float, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str] | None:
    """Run `cmd`; SIGKILL it a random 0..`spread` seconds after it says `writing` (or, if it
    never does, once it has run `spread` seconds). None if killed, else how it ended."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "SYNCD_LOG_LEVEL": "WARNING", **env},
        cwd=cwd,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    line = b""
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                break
            line += chunk
    try:
        proc.wait(timeout=rng.uniform(0, spread))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return None
    out, err = proc.communicate()
    return subprocess.CompletedProcess(
        cmd, proc.returncode, line.decode() + out.decode(), err.decode()
    )


def finish(cmd: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`cmd` left to run to its end (writes not slowed)."""
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "SYNCD_LOG_LEVEL": "WARNING", "TEST_PAUSE": "0"},
    )


def config(folder: Path) -> Path:
    (folder / "m.toml").write_text('[fields]\nemail = "Email"\n')
    path = folder / "syncd.toml"
    path.write_text(
        '[source]\npath = "x.csv"\nkey = "id"\n[store]\npath = "syncd.db"\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\nmapping = "m.toml"\n'
    )
    return path


@contextmanager
def opened(path: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(path)) as conn:
        yield conn


# --- prune ---------------------------------------------------------------------------


def history(path: Path, rng: random.Random, runs: int = 24) -> dict[int, int]:
    """Old runs with quarantined rows (1 to 7 each), a third of them named by a delivery
    (kept, without their rows), and the last reconcile (kept whole); run id → rows."""
    store = Store.open(path)
    rows: dict[int, int] = {}
    try:
        with store.write() as c:
            for i in range(runs):
                run = c.execute(
                    "INSERT INTO runs (kind, started_at, status) VALUES (?, ?, 'ok')",
                    ("reconcile" if i % 2 else "pull", OLD),
                ).lastrowid
                assert run is not None
                rows[run] = rng.randint(1, 7)
                c.executemany(
                    "INSERT INTO quarantine (run_id, file, line, reason, created_at) "
                    "VALUES (?, 'x.csv', ?, 'bad', ?)",
                    [(run, line, OLD) for line in range(rows[run])],
                )
                if i % 3 == 0:
                    c.execute(
                        "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, "
                        "payload, created_at, updated_at) "
                        "VALUES (?, 'esputnik', ?, 'new', 'sent', 'h', '{}', ?, ?)",
                        (run, f"k{i}", OLD, OLD),
                    )
    finally:
        store.close()
    return rows


def runs_whole(path: Path, rows: dict[int, int]) -> dict[str, int]:
    """Each run untouched, gone with its rows, or kept (a delivery names it) without its
    rows: never a part of its rows gone, nor a run prune would delete left without them."""
    with opened(path) as conn:
        present = {r for (r,) in conn.execute("SELECT id FROM runs")}
        named = {r for (r,) in conn.execute("SELECT DISTINCT run_id FROM deliveries")}
        left = dict(conn.execute("SELECT run_id, count(*) FROM quarantine GROUP BY run_id"))
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    last = max(r for r in rows if r % 2 == 0)  # the last reconcile (even ids: see history)
    seen = {"untouched": 0, "gone": 0, "kept": 0}
    for run, n in rows.items():
        if run in present and left.get(run) == n:
            seen["untouched"] += 1
        elif run not in present and run not in left:
            seen["gone"] += 1
        elif run in present and run in named and run not in left and run != last:
            seen["kept"] += 1
        else:
            raise AssertionError(
                f"run {run}: {left.get(run, 0)} of its {n} quarantined rows left, the run "
                f"{'still there' if run in present else 'gone'}"
                + (", named by a delivery" if run in named else "")
            )
    return seen


class Killed(BaseException):
    """What a SIGKILL leaves: nothing after it runs (no `except Exception` catches it)."""


def test_a_prune_stopped_after_any_commit_removed_whole_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune killed after any of its transactions: each run it touched went whole — the
    run and its quarantined rows in one transaction — never its rows cut at a batch's
    boundary (rows of one run in two transactions) nor its rows gone and the run left."""
    monkeypatch.setattr(syncd.state, "PRUNE_BATCH", 6)  # a run's rows: 1 to 7
    rng = random.Random(6)
    seed = tmp_path / "seed.db"
    rows = history(seed, rng)
    real = Store.write
    for k in range(1, 100):
        path = tmp_path / f"k{k}.db"
        with opened(seed) as src, closing(sqlite3.connect(path)) as dst:
            src.backup(dst)
        commits = 0

        @contextmanager
        def write(self: Store, k: int = k, **kw: bool) -> Iterator[sqlite3.Connection]:
            nonlocal commits
            with real(self, **kw) as c:
                yield c
            commits += 1
            if commits == k:
                raise Killed

        monkeypatch.setattr(Store, "write", write)
        store = Store.open(path)
        try:
            store.prune(NOW, runs_days=90, payload_days=0)
            done = True
        except Killed:
            done = False
        finally:
            store.close()
        monkeypatch.setattr(Store, "write", real)
        runs_whole(path, rows)
        store = Store.open(path)
        try:
            store.prune(NOW, runs_days=90, payload_days=0)
        finally:
            store.close()
        assert runs_whole(path, rows) == {"untouched": 1, "gone": 15, "kept": 8}
        if done:
            break
    else:
        raise AssertionError("the prune never finished")


def prune_killed(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    cfg = config(tmp_path)
    rows = history(tmp_path / "syncd.db", rng, runs=40)
    env = {"TEST_BATCH": "5", "TEST_PAUSE": "0.004"}
    landed = 0
    for _ in range(kills * 3):
        proc = kill_at_random(slowed(cfg, "prune"), rng, 0.3, env)
        runs_whole(tmp_path / "syncd.db", rows)
        if proc is None:
            landed += 1
            if landed == kills:
                break
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            history_left = runs_whole(tmp_path / "syncd.db", rows)
            if history_left["untouched"] == 1:  # all pruned: start over
                (tmp_path / "syncd.db").unlink()
                rows = history(tmp_path / "syncd.db", rng, runs=40)
    done = finish(slowed(cfg, "prune"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "database is locked" not in done.stderr
    assert runs_whole(tmp_path / "syncd.db", rows)["untouched"] == 1
    assert landed == kills


@pytest.mark.slow
def test_syncd_prune_killed_at_random_moments_removes_whole_runs(tmp_path: Path) -> None:
    prune_killed(tmp_path, kills=60, seed=2)


# --- backup --------------------------------------------------------------------------


def backups_whole(folder: Path, store: Path) -> list[str]:
    """Each file in `folder` is a whole checked copy of `store` (or the hidden temporary
    file of a killed backup); the temporary files' names."""
    with opened(store) as conn:
        want = conn.execute("SELECT count(*), sum(length(reason)) FROM quarantine").fetchone()
    hidden = []
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            hidden.append(name)
            continue
        with closing(sqlite3.connect(f"file:{folder / name}?mode=ro", uri=True)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",), name
            got = conn.execute("SELECT count(*), sum(length(reason)) FROM quarantine").fetchone()
            assert got == want, name
    return hidden


def backup_killed(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    cfg = config(tmp_path)
    store = Store.open(tmp_path / "syncd.db")
    try:
        with store.write() as c:
            run = c.execute(
                "INSERT INTO runs (kind, started_at, status) VALUES ('pull', ?, 'ok')", (OLD,)
            ).lastrowid
            c.executemany(  # 2 MB: 8 steps of 64 pages
                "INSERT INTO quarantine (run_id, file, line, reason, created_at) "
                "VALUES (?, 'x.csv', ?, ?, '')",
                [(run, i, "x" * 1000) for i in range(2000)],
            )
    finally:
        store.close()
    folder = tmp_path / "backups"
    folder.mkdir()
    env = {"TEST_STEP": "64", "TEST_PAUSE": "0.02"}
    landed = 0
    for i in range(kills * 3):
        proc = kill_at_random(slowed(cfg, "backup", str(folder / f"b{i}.db")), rng, 0.2, env)
        backups_whole(folder, tmp_path / "syncd.db")
        if proc is None:
            landed += 1
            if landed == kills:
                break
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
    assert landed == kills
    # the next backup into the folder takes what a killed one left with it
    done = finish(slowed(cfg, "backup", str(folder / "last.db")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert backups_whole(folder, tmp_path / "syncd.db") == []
    assert "last.db" in os.listdir(folder)


@pytest.mark.slow
def test_syncd_backup_killed_leaves_a_whole_copy_or_nothing(tmp_path: Path) -> None:
    backup_killed(tmp_path, kills=40, seed=4)


def test_the_next_backup_removes_what_a_killed_one_left(tmp_path: Path) -> None:
    """A SIGKILLed backup leaves its hidden temporary copy (a whole store's size) and its
    journal: nothing of it runs after the kill. They name its pid; the next backup into
    the folder removes those whose backup is not running, and none of a running one."""
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    folder = tmp_path / "backups"
    folder.mkdir()
    left = [
        f".syncd-old.db.syncd-backup-{dead.pid}-k3x_9q.tmp",
        f".syncd-old.db.syncd-backup-{dead.pid}-k3x_9q.tmp-journal",
        f".other.db.syncd-backup-{os.getpid()}-zz.tmp",  # a reused pid: ours has none yet
    ]
    running = f".syncd-now.db.syncd-backup-{os.getppid()}-a1.tmp"
    mine = ".notes.tmp"
    for name in [*left, running, mine]:
        (folder / name).write_bytes(b"x" * 100)
    store = Store.open(tmp_path / "syncd.db")
    try:
        store.backup(folder / "syncd-new.db")
    finally:
        store.close()
    assert sorted(os.listdir(folder)) == sorted([mine, running, "syncd-new.db"])


# --- init ----------------------------------------------------------------------------

INIT = ("contacts.csv", "--vendors", "esputnik,signalvine,hellocustomer,dropthought,altcraft")


def init_export(folder: Path) -> None:
    from tests.test_init import HUBSPOT, export

    export(folder / "contacts.csv", HUBSPOT)


def whole_config_or_none(folder: Path, clean: dict[str, bytes]) -> bool:
    """No file init writes is there but whole, as a clean init writes it; syncd.toml is
    there only with every mapping. Whether syncd.toml is."""
    for name in clean:
        path = folder / name
        assert not path.exists() or path.read_bytes() == clean[name], name
    if (folder / "syncd.toml").exists():
        assert all((folder / name).exists() for name in clean), sorted(clean)
        return True
    return False


def init_written(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in [folder / "syncd.toml", *sorted((folder / "mappings").glob("*.toml"))]
        if p.exists()
    }


def run_init() -> None:
    """`syncd init INIT` in this process, in the working folder."""
    from syncd.init import init

    init(Path(INIT[0]), INIT[2].split(","), Path("."), echo=lambda _line: None)


@pytest.fixture
def clean_init(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """What `syncd init INIT` writes, left alone."""
    folder = tmp_path / "clean"
    folder.mkdir()
    init_export(folder)
    monkeypatch.chdir(folder)
    run_init()
    return init_written(folder)


def test_an_init_killed_after_any_file_leaves_a_config_whole_or_none_and_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_init: dict[str, bytes]
) -> None:
    """`syncd init` killed part-way wrote syncd.toml and some of the mappings (or half of
    one), and the same init again refused: "syncd.toml already exists … nothing was
    written". Each file is now written whole before it has its name, syncd.toml last, and
    a file already holding what init writes is not in the way: run again, it finishes."""
    import syncd.init

    real = os.link
    for k in range(1, 20):
        folder = tmp_path / f"k{k}"
        folder.mkdir()
        init_export(folder)
        made = 0

        def link(*args: Any, k: int = k, **kw: Any) -> None:
            nonlocal made
            made += 1
            if made == k:
                raise Killed
            real(*args, **kw)

        monkeypatch.setattr(syncd.init.os, "link", link)
        monkeypatch.chdir(folder)
        try:
            run_init()
            done = True
        except Killed:
            done = False
        monkeypatch.setattr(syncd.init.os, "link", real)
        assert whole_config_or_none(folder, clean_init) is done
        assert [p.name for p in folder.rglob(".*")] == []  # no temporary file either
        run_init()
        assert init_written(folder) == clean_init
        if done:
            break
    else:
        raise AssertionError("init never finished")


def init_killed(tmp_path: Path, kills: int, seed: int, clean: dict[str, bytes]) -> None:
    rng = random.Random(seed)
    landed = 0
    for i in range(kills * 3):
        folder = tmp_path / f"i{i}"
        folder.mkdir()
        init_export(folder)
        cmd = [sys.executable, "-c", SLOWED, "init", *INIT]
        proc = kill_at_random(cmd, rng, 0.12, {"TEST_PAUSE": "0.01"}, cwd=folder)
        whole_config_or_none(folder, clean)
        again = finish([sys.executable, "-m", "syncd", "init", *INIT], cwd=folder)
        if proc is None:
            landed += 1
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        assert again.returncode == 0, again.stdout + again.stderr
        assert init_written(folder) == clean
        assert [p.name for p in folder.rglob(".*")] == []
        if landed == kills:
            break
    assert landed == kills


@pytest.mark.slow
def test_syncd_init_killed_at_random_moments_leaves_a_config_whole_or_none(
    tmp_path: Path, clean_init: dict[str, bytes]
) -> None:
    init_killed(tmp_path, kills=30, seed=6, clean=clean_init)


# --- a migration on open ---------------------------------------------------------------

UPGRADES = Path(__file__).parent / "fixtures" / "upgrade"


def contents(db: Path) -> list[str]:
    """The store, schema and rows, but for when each migration was applied."""
    with opened(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("UPDATE _sqlite_migrations SET applied_at = ''")
        return list(conn.iterdump())


def upgrade_killed(tmp_path: Path, release: str, kills: int, seed: int) -> None:
    """An old release's store opened by `syncd prune` (which migrates it first; retention
    off, so it changes nothing else), SIGKILLed in its migrations: the next command takes
    the store up where the last whole migration left it, and ends with the store a clean
    upgrade makes."""
    rng = random.Random(seed)
    clean = tmp_path / "clean.db"
    shutil.copy(UPGRADES / release / "syncd.db", clean)
    Store.open(clean).close()
    want = contents(clean)
    folder = tmp_path / "installed"
    shutil.copytree(UPGRADES / release, folder)
    cfg = folder / "syncd.toml"
    text = cfg.read_text()
    cfg.write_text(
        text.replace(
            'path = "syncd.db"\n', 'path = "syncd.db"\nkeep_runs_days = 0\nkeep_payload_days = 0\n'
        )
    )
    with opened(UPGRADES / release / "syncd.db") as conn:
        before = [r for (r,) in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    spread = 0.02 * (len(KNOWN) - len(before))  # the migrations' pauses (a kill in each)
    landed = 0
    for _ in range(kills * 3):
        proc = kill_at_random(slowed(cfg, "prune"), rng, spread, {"TEST_PAUSE": "0.02"})
        with opened(folder / "syncd.db") as conn:
            applied = [
                r for (r,) in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")
            ]
        assert applied == KNOWN[: len(applied)] and len(applied) >= len(before)
        if proc is None:
            landed += 1
            status = finish([sys.executable, "-m", "syncd", "--config", str(cfg), "status"])
            assert "database is locked" not in status.stderr
            assert status.returncode in (0, 2), status.stdout + status.stderr
            if landed == kills:
                break
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            shutil.copy(UPGRADES / release / "syncd.db", folder / "syncd.db")  # again
    assert landed == kills
    done = finish(slowed(cfg, "prune"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert contents(folder / "syncd.db") == want


@pytest.mark.slow
@pytest.mark.parametrize("release", sorted(db.parent.name for db in UPGRADES.glob("*/syncd.db")))
def test_an_upgrade_killed_in_its_migrations_is_taken_up_again(
    tmp_path: Path, release: str
) -> None:
    upgrade_killed(tmp_path, release, kills=12, seed=8)


# --- withdraw ------------------------------------------------------------------------

WITHDRAWABLE = ("pending", "failed", "dead")


def removed_vendor_backlog(path: Path, n: int) -> dict[int, str]:
    """`n` deliveries in each open status to dropthought, which the config no longer
    names, and what it acknowledged; delivery id → status."""
    store = Store.open(path)
    try:
        with store.write() as c:
            run = c.execute(
                "INSERT INTO runs (kind, started_at, status) VALUES ('reconcile', ?, 'ok')", (OLD,)
            ).lastrowid
            for status in (*WITHDRAWABLE, "unknown", "in_flight"):
                c.executemany(
                    "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                    "created_at, updated_at) VALUES (?, 'dropthought', ?, 'new', ?, 'h', '{}', ?, ?)",
                    [(run, f"{status}-{i}", status, OLD, OLD) for i in range(n)],
                )
            c.executemany(
                "INSERT INTO vendor_state (vendor, key, hash, acked_at) "
                "VALUES ('dropthought', ?, 'old', ?)",
                [(f"pending-{i}", OLD) for i in range(n)],
            )
        return dict(store.conn.execute("SELECT id, status FROM deliveries"))
    finally:
        store.close()


def withdrawn_or_open(path: Path, before: dict[int, str]) -> int:
    """Each delivery as it was, or closed by withdraw (what was asked only); how many closed.
    What the vendor acknowledged stays."""
    from syncd.state import WITHDRAWN

    with opened(path) as conn:
        now = {i: (s, r) for i, s, r in conn.execute("SELECT id, status, reason FROM deliveries")}
        acked = conn.execute("SELECT count(*) FROM vendor_state WHERE hash = 'old'").fetchone()
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert acked == (len(before) // 5,)
    closed = 0
    for did, status in before.items():
        if now[did] == ("superseded", WITHDRAWN) and status in WITHDRAWABLE:
            closed += 1
        else:
            assert now[did] == (status, None), (did, status, now[did])
    return closed


def withdraw_killed(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    cfg = config(tmp_path)
    db = tmp_path / "syncd.db"
    before = removed_vendor_backlog(db, 30)
    env = {"TEST_BATCH": "4", "TEST_PAUSE": "0.005"}
    landed = 0
    for _ in range(kills * 3):
        proc = kill_at_random(slowed(cfg, "withdraw", "--vendor", "dropthought"), rng, 0.3, env)
        closed = withdrawn_or_open(db, before)
        if proc is None:
            landed += 1
            if landed == kills:
                break
        else:
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert closed == 90
            db.unlink()
            before = removed_vendor_backlog(db, 30)
    assert landed == kills
    status = finish([sys.executable, "-m", "syncd", "--config", str(cfg), "status"])
    assert status.returncode == 0, status.stdout + status.stderr
    done = finish(slowed(cfg, "withdraw", "--vendor", "dropthought"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "left open 30 in_flight, 30 unknown" in done.stdout, done.stdout
    assert withdrawn_or_open(db, before) == 90


@pytest.mark.slow
def test_syncd_withdraw_killed_at_random_moments_closes_or_leaves_open(tmp_path: Path) -> None:
    withdraw_killed(tmp_path, kills=40, seed=10)


# --- syncd run: its start-up catch-up, a SIGHUP reload --------------------------------


def service_killed(tmp_path: Path, kills: int, seed: int) -> None:
    """`syncd run` against all five simulators, started after a reconcile fell due (its
    runs moved back two minutes each time: the start catches it up), SIGKILLed at random in
    that catch-up, half the time after a SIGHUP reload sent at random before the kill. After
    each kill the store is intact and no trigger went out twice; clean syncs then leave
    every vendor holding the export, no run `running`."""
    from tests.test_crash import Loop

    with Stack() as stack:
        loop = Loop(tmp_path, stack, seed)
        text = loop.config.read_text()
        loop.config.write_text(
            text.replace(
                "[schedule]\n",
                '[schedule]\nreconcile = "* * * * *"\npull = "0 0 1 1 *"\n'
                "misfire_grace_seconds = 600\n",
            )
        )
        assert loop.run("sync", None) in (0, 1)
        log = tmp_path / "daemon.log"

        def start() -> subprocess.Popen[bytes]:
            with opened(tmp_path / "syncd.db") as conn:  # a reconcile fell due since
                conn.execute(
                    "UPDATE runs SET started_at = strftime('%Y-%m-%dT%H:%M:%S+00:00', "
                    "'now', '-2 minutes')"
                )
                conn.commit()
            with log.open("ab") as out:
                return subprocess.Popen(
                    [*SYNCD, "--config", str(loop.config), "run"],
                    stdout=out,
                    stderr=out,
                    env={**os.environ, "SYNCD_LOG_LEVEL": "INFO", "NOTIFY_SOCKET": ""},
                )

        def reconciles() -> list[tuple[str, str]]:
            with opened(tmp_path / "syncd.db") as conn:
                return conn.execute("SELECT kind, status FROM runs ORDER BY id").fetchall()

        # one catch-up left to finish: how long a start and its catch-up take
        loop.edit()
        begun, before = time.monotonic(), len(reconciles())
        proc = start()
        while len(reconciles()) == before or reconciles()[-1][1] == "running":
            assert time.monotonic() - begun < 60 and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        spread = time.monotonic() - begun
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        landed = 0
        while landed < kills:
            loop.edit()
            proc = start()
            delay = loop.rng.uniform(0.2, spread)
            if loop.rng.random() < 0.5:
                # from a quarter of a second on: the interpreter's own start-up (~0.1 s,
                # before `syncd.cli` runs) is the one moment a SIGHUP still ends it
                hup = loop.rng.uniform(min(0.25, delay), delay)
                time.sleep(hup)
                loop.config.write_text(loop.config.read_text() + "\n")  # reloaded as it is
                proc.send_signal(signal.SIGHUP)
                delay -= hup
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL, log.read_text()[-3000:]
            landed += 1
            loop.kills += 1
            loop.check_invariants()
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
        loop.settle()
        assert all(status != "running" for _kind, status in reconciles()[:-1])


@pytest.mark.slow
def test_syncd_run_killed_in_its_catch_up_and_reloads(tmp_path: Path) -> None:
    service_killed(tmp_path, kills=25, seed=11)


def test_a_reload_asked_for_while_the_service_starts_neither_kills_it_nor_is_lost(
    tmp_path: Path,
) -> None:
    """SIGHUP (`kill -HUP`, a logrotate script's `systemctl kill -s HUP`) while `syncd run`
    was still starting — its migrations, its store's checks, before its handlers were
    installed — killed it (the default action), and systemd counts a death by SIGHUP as
    clean: Restart=on-failure left the service down. It is now taken from the start, and
    the reload done once the service is up."""
    from syncd.sandbox.base import Server
    from syncd.sandbox.esputnik import ESputnikSim
    from tests.test_daemon import daemon_world

    with Server(ESputnikSim()) as server:
        world = daemon_world(tmp_path, server.url, "0 4 * * *", "0 5 * * *")
        log = tmp_path / "daemon.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                slowed(tmp_path / "syncd.toml", "run"),
                stdout=subprocess.PIPE,
                stderr=out,
                env={**os.environ, "SYNCD_LOG_LEVEL": "INFO", "TEST_PAUSE": "0.005"},
            )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"writing\n"  # in its first migration
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while "config reloaded" not in log.read_text():
                assert proc.poll() is None, (proc.returncode, log.read_text()[-2000:])
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert log.read_text().count('"config reloaded"') == 1
        assert world.cfg.store.path.exists()


# --- retry ---------------------------------------------------------------------------


def retry_killed(tmp_path: Path, kills: int, seed: int) -> None:
    """`syncd retry --unknown` SIGKILLed at the crash points (after a push is answered but
    before the answer is recorded, with an async job recorded, after a Dropthought token
    renewal) against all five simulators, its unknown triggers made by syncs killed at the
    same points. After each kill: nothing `sent` that the vendor did not receive, every
    trigger a vendor received `sent` or `unknown` (or put back to pending by a retry
    asked to re-send it), and no trigger received more often than syncd made deliveries of
    it plus the re-sends the retries were asked for; clean runs then leave every vendor
    holding the export and no run `running`."""
    from tests.test_crash import Loop, held, triggers

    points = ("before_ack_recorded", "job_recorded", "token_renewed")
    with Stack() as stack:
        loop = Loop(tmp_path, stack, seed)
        resent: dict[tuple[str, str], int] = {}  # re-sends the retries were asked for

        def command(*args: str, crash_at: str | None) -> int:
            env = {**os.environ, "SYNCD_LOG_LEVEL": "WARNING", "SYNCD_CRASH_AT": crash_at or ""}
            proc = subprocess.run(
                [*SYNCD, "--config", str(loop.config), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode in (0, 1, -9), proc.stderr[-2000:]
            assert "Traceback" not in proc.stderr and "locked" not in proc.stderr, proc.stderr
            return proc.returncode

        def check() -> None:
            with opened(tmp_path / "syncd.db") as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                for name, kit in loop.kits.items():
                    rows = conn.execute(
                        "SELECT key, status FROM deliveries WHERE vendor = ?", (name,)
                    ).fetchall()
                    sent = {k for k, s in rows if s == "sent"}
                    holds = held(kit, loop.sims[name])
                    assert sent <= holds, (name, sorted(sent - holds)[:5])
                    if kit.kind != "trigger" or kit.triggers is None:
                        continue
                    made: dict[str, int] = {}
                    for key, status in rows:
                        if status in ("sent", "unknown", "in_flight", "pending"):
                            made[key] = made.get(key, 0) + 1
                    for key, n in triggers(kit, loop.sims[name]).items():
                        assert key in made, (name, key, [s for k, s in rows if k == key])
                        allowed = made[key] + resent.get((name, key), 0)
                        assert n <= allowed, (name, key, n, allowed)

        def retry(crash_at: str | None) -> int:
            with opened(tmp_path / "syncd.db") as conn:
                for vendor, key in conn.execute(
                    "SELECT vendor, key FROM deliveries WHERE status = 'unknown'"
                ):
                    resent[(vendor, key)] = resent.get((vendor, key), 0) + 1
            return command("retry", "--unknown", crash_at=crash_at)

        landed = 0
        while landed < kills:
            loop.edit()
            point = points[landed % len(points)]
            command("sync", crash_at=f"{point}:{loop.rng.randint(1, 2)}")
            check()
            if retry(f"{point}:{loop.rng.randint(1, 2)}") == -9:
                landed += 1
            check()
        assert retry(None) in (0, 1)
        check()
        for _ in range(3):
            if command("sync", crash_at=None) == 0:
                break
        check()
        with opened(tmp_path / "syncd.db") as conn:
            open_work = conn.execute(
                "SELECT vendor, status, count(*) FROM deliveries "
                "WHERE status IN ('pending', 'in_flight', 'failed') GROUP BY 1, 2"
            ).fetchall()
            assert open_work == []
            assert conn.execute(
                "SELECT count(*) FROM runs WHERE status = 'running'"
            ).fetchone() == (0,)
            present = {k for (k,) in conn.execute("SELECT key FROM contacts WHERE gone_at IS NULL")}
            quarantined = {
                k
                for (k,) in conn.execute(
                    "SELECT key FROM quarantine WHERE run_id = (SELECT max(run_id) FROM "
                    "quarantine) AND key IS NOT NULL"
                )
            }
        for name, kit in loop.kits.items():
            missing = present - quarantined - held(kit, loop.sims[name])
            assert not missing, (name, sorted(missing)[:5])


@pytest.mark.slow
def test_syncd_retry_killed_at_the_crash_points(tmp_path: Path) -> None:
    retry_killed(tmp_path, kills=45, seed=14)
