"""The SQLite store: one writer connection, WAL, migrations, the queries the pipeline needs.

The store knows no vendor and no CLI. Writes happen inside `store.write()`, which opens
`BEGIN IMMEDIATE` (so a writer never fails half-way on a lock upgrade) and commits or rolls
back as a whole; analysts read at any time (WAL).

Faults of the store itself (disk full, read-only file or folder, a damaged file, a store
from a newer syncd) become a `StoreError` naming the path and what to do, here: in `open`,
`write`, `query` and `scalar`. Other sqlite3 errors are bugs and keep their traceback.

The WAL: SQLite copies it back into the database after each commit past 1000 pages and
starts it over once no reader needs its frames, so with no reader it stays near
`JOURNAL_SIZE_LIMIT`. A reader in a transaction pins the snapshot it began with: nothing
written after that can be copied back past it, and the WAL grows by everything written
until the reader ends. So once the WAL passes `WAL_RESET_AT` after a commit, the writer
waits up to `WAL_RESET_WAIT_MS` for the readers of older snapshots to finish and resets
it. A reader that holds its transaction longer costs the writer that wait again each time
the WAL grows by another `WAL_RESET_AT`, and disk space for the whole WAL until it ends;
the first commit after it ends resets the WAL, and `close` does at the end of every run.

While the delivery loop runs (`checkpoints_aside`), that copying is done by a thread of its
own on a second connection, after each commit, instead of inside the commit: it overlaps
the loop's waits for the vendor rather than lengthening each settle. What is committed,
and when, is the same either way: a checkpoint only copies committed pages.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import orjson
import structlog
from sqlite_utils import Database

from syncd import liveness
from syncd.errors import EmptyStoreError, StoreError, SyncdError
from syncd.lock import lock_path
from syncd.log import scrub
from syncd.state.schema import KNOWN, migrations
from syncd.state.statuses import OPEN_STATUSES as OPEN_STATUSES
from syncd.state.statuses import Status

log = structlog.get_logger("syncd.state")

BUSY_TIMEOUT_MS = 30_000
# the WAL is cut back to this when SQLite starts it over
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
# past this after a commit, wait for readers of old snapshots and reset the WAL (see above)
WAL_RESET_AT = 64 * 1024 * 1024
WAL_RESET_WAIT_MS = 1_000
# m006's triggers stand aside; the generation moves on once and they are back
GENERATION_ASIDE = "UPDATE contacts_generation SET in_diff = 1"
GENERATION_ON = "UPDATE contacts_generation SET generation = generation + 1, in_diff = 0"
# the reason of a delivery `syncd withdraw` closed (`Store.withdraw_vendor`)
WITHDRAWN = "vendor removed from the config"
# rows a prune transaction changes at most: analysts' reads and the WAL are never held long
PRUNE_BATCH = 10_000
# pages `Store.backup` copies a step (4 MiB of 4 KiB pages, a few milliseconds): a SIGTERM
# waits for one step at most
BACKUP_STEP = 1024


def damaged(path: Path, problems: str) -> StoreError:
    """The error for a store whose file is damaged or not a SQLite database."""
    return StoreError(
        f"the store {path} is damaged: {problems}",
        hint=f"stop syncd and restore {path} from its backup, or salvage it into a new file "
        f"with `sqlite3 {path} .recover | sqlite3 {path}.recovered` (or .dump: README, "
        "'A damaged store') and move that into its place",
    )


def missing(path: Path) -> StoreError:
    """The error for a command that needs the store at `path`, which does not exist."""
    return StoreError(
        f"there is no store at {path}",
        hint="check [store] path; the first `syncd sync` creates it",
    )


def empty(path: Path) -> EmptyStoreError:
    """The error for a command that needs the store at `path`, a file no sync has written:
    0 bytes (`touch`ed, truncated by accident, a restore gone wrong), or a database with
    nothing in it. SQLite opens either as a new database: a command that does not create
    stores would make it one and report an empty installation as healthy."""
    return EmptyStoreError(
        f"the store {path} is empty: no sync has written it yet",
        hint="check [store] path; if it held syncd's data (truncated, or a restore gone "
        "wrong), restore it from its backup; else the first `syncd sync` sets it up",
    )


def truncated(path: Path) -> StoreError:
    """The error for a store file of 0 bytes that syncd used before: its lock file is beside
    it (`syncd.lock.lock_path`; SQLite's -wal and -shm go when the last connection closes,
    the lock file stays). A disk's or a backup tool's accident, or a restore gone wrong:
    taken for a first run, it would send everything again and survey everyone."""
    return StoreError(
        f"the store {path} is empty (0 bytes), but syncd has used it before (its lock file "
        f"{lock_path(path)} is beside it): it was truncated, or a restore went wrong",
        hint=f"with syncd stopped, restore {path} from its backup (README: Backups); or, to "
        "start over with a new store on purpose (every contact is sent again, and surveyed "
        f"again by trigger vendors), remove {path} and {lock_path(path)}",
    )


def refuse_truncated(path: Path) -> None:
    """Raise `truncated` for a 0-byte store file that syncd used before. `sync`, `pull` and
    the service's start call it before they take the lock (whose file is the sign), and then
    set up a 0-byte file (an analyst's `sqlite3.connect` before the first sync leaves one)."""
    if unwritten(path) and lock_path(path).exists():
        raise truncated(path)  # left as it is


def unwritten_error(path: Path) -> StoreError:
    """The error for a command that needs the store at `path`, a file of 0 bytes
    (`unwritten`): `truncated` when syncd used it before, else `empty`."""
    return truncated(path) if lock_path(path).exists() else empty(path)


def unwritten(path: Path) -> bool:
    """Whether `path` is a file of 0 bytes with no WAL beside it holding anything (what a
    WAL holds is the database too), told without opening it: opening writes a header."""
    try:
        if os.stat(path).st_size:
            return False
        return os.stat(f"{path}-wal").st_size == 0
    except FileNotFoundError:
        return path.is_file()  # (no WAL: the file alone says)
    except OSError:
        return False  # (SQLite will say what is wrong)


def store_error(exc: sqlite3.Error, path: Path) -> StoreError | None:
    """The StoreError for a fault of the store at `path`; None when `exc` is a bug (SQL,
    constraint, misuse)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary code of an extended one
    if str(exc).startswith("Could not decode to UTF-8"):  # Python's own, with no code
        return StoreError(
            f"the store {path} holds text that is not UTF-8, which syncd never writes: {exc}",
            hint="something else wrote it (a tool, a restore gone wrong): restore the store "
            "from its backup, or correct that value with sqlite3",
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(
            f"disk full: the store {path} could not be written (the change being "
            "written was rolled back; nothing recorded before it is lost)",
            hint=f"free space on the file system holding {path.parent}, then run again",
        )
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM, sqlite3.SQLITE_CANTOPEN):
        return _unwritable(exc, path)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return damaged(path, str(exc))
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreError(
            f"the store {path} stayed locked by another connection for {BUSY_TIMEOUT_MS // 1000} s",
            hint="an analyst's write transaction holds it: read with `sqlite3 -readonly`, "
            "commit or close that session, then run again",
        )
    if code == sqlite3.SQLITE_IOERR:
        return StoreError(
            f"I/O error on the store {path}: {exc}",
            hint="check the disk (dmesg, SMART), then `syncd check`",
        )
    return None


def _unwritable(exc: sqlite3.Error, path: Path) -> StoreError:
    """Why the store cannot be opened or written, as far as the file system tells."""
    folder, uid = path.parent, os.geteuid()
    if path.is_dir():
        return StoreError(f"the store {path} is a folder", hint="[store] path names a file")
    if not folder.is_dir():
        return StoreError(
            f"the folder of the store {path} does not exist", hint="check [store] path"
        )
    try:
        read_only_fs = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    if read_only_fs:
        why = f"{folder} is on a read-only file system"
    elif path.exists() and not os.access(path, os.W_OK, effective_ids=True):
        why = f"the file is not writable by uid {uid}"
    elif not os.access(folder, os.W_OK | os.X_OK, effective_ids=True):
        why = (
            f"its folder {folder} is not writable by uid {uid} "
            f"(SQLite keeps {path.name}-wal and {path.name}-shm beside it)"
        )
    else:
        why = str(exc)
    return StoreError(
        f"the store {path} cannot be written: {why}",
        hint="make the file and its folder writable by the user syncd runs as, "
        "or mount its file system read-write",
    )


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


def parse_iso(text: object) -> datetime | None:
    """An ISO 8601 date or time (naive: UTC) as an aware datetime, as `iso` writes one;
    None for anything else (eSputnik's `date|offset` cursor is no time)."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def _open_error(exc: sqlite3.Error, path: Path) -> StoreError:
    return store_error(exc, path) or StoreError(
        f"cannot open the store {path}: {exc}",
        hint="check [store] path; `syncd check` tells whether the file is damaged",
    )


def _refuse_foreign(db: Database, path: Path) -> list[str]:
    """Refuse a store from a newer syncd, or a SQLite database that is not a syncd store;
    the migrations this version knows that the store has not applied."""
    applied = [m.name for m in migrations.applied(db)]
    unknown = [name for name in applied if name not in KNOWN]
    tables = [t for t in db.table_names() if not t.startswith("sqlite_")]
    if unknown:
        raise StoreError(
            f"the store {path} was written by a newer syncd: it has applied migrations "
            f"this version does not know ({', '.join(unknown)})",
            hint="upgrade syncd to the version that wrote it, or newer; this one would misread it",
        )
    if not applied and set(tables) - {migrations.migrations_table}:
        raise StoreError(
            f"{path} is a SQLite database but not a syncd store",
            hint="check [store] path: syncd adds its tables only to a new file or its own store",
        )
    return [name for name in KNOWN if name not in applied]


def _migrate(db: Database, path: Path) -> None:
    """Apply the pending migrations. Each is one transaction with its record, so one that
    fails leaves the store as the migrations before it left it; a failure that is no fault
    of the store (`store_error`) is most likely something in it that syncd did not make,
    in the migration's way (an analyst's index under the name of one it makes, a trigger
    whose table is gone): the error names the migration and what SQLite said."""
    try:
        migrations.apply(db)
    except sqlite3.Error as exc:
        if store_error(exc, path) is not None:
            raise
        failed = migrations.pending(db)[0].name  # (the first not recorded is the one)
        raise StoreError(
            f"the store {path} could not be migrated: {failed} failed ({exc}); the "
            "migrations before it are applied, nothing of it is",
            hint=f"something in the store that syncd did not make may be in its way (an "
            f"analyst's index, view, trigger or table: `sqlite3 {path} .schema`); with syncd "
            "stopped, rename or drop it, then run again",
        ) from exc


# in the name of `Store.backup`'s temporary file, before its pid: `.NAME.syncd-backup-PID-….tmp`
BACKUP_TMP = "syncd-backup"
_BACKUP_LEFT = re.compile(rf"^\..+\.{BACKUP_TMP}-(\d+)-\w+\.tmp(-journal)?$")


def _sweep_backups(folder: Path) -> None:
    """Remove the temporary files (and journals) of killed backups in `folder`: those whose
    pid runs no process, or is ours (an earlier process's pid, reused: ours has none yet).
    One of a backup still running, or of another user's (EPERM), stays."""
    with suppress(OSError):
        for name in os.listdir(folder):
            if not (left := _BACKUP_LEFT.match(name)):
                continue
            pid = int(left[1])
            if pid != os.getpid():
                try:
                    os.kill(pid, 0)
                    continue  # running
                except ProcessLookupError:
                    pass
                except OSError:
                    continue  # someone else's
            with suppress(FileNotFoundError):
                os.unlink(folder / name)
            log.info("removed a killed backup's temporary file", file=str(folder / name))


def _named_on_disk(path: Path) -> None:
    """Sync `path`'s folder, so that a name just given to a whole file survives a crash."""
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _between_steps(status: int, remaining: int, pages: int) -> None:
    """`Store.backup`'s progress callback: doing nothing, it is where a signal's handler
    runs between two steps of the copy."""


class Store:
    """The syncd database. Create with `Store.open(path)`; close when done."""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path
        self.conn: sqlite3.Connection = db.conn
        self.wal_wait_past = 0  # the WAL size from which a reset may wait for readers
        self._checkpointer: threading.Event | None = None  # wakes `checkpoints_aside`'s thread
        # migrations this version knows that the store has not applied (opened unmigrated)
        self.behind: list[str] = []

    @classmethod
    def open(cls, path: Path, *, migrate: bool = True, create: bool = True) -> Store:
        """Open the store at `path`, applying pending migrations unless `migrate=False`.

        With `create=False` a missing store is an error rather than a new empty one, and so
        is an empty file (`empty`: 0 bytes, left as it is, or a database with nothing in
        it), for every command but `sync` and the service (an analyst's `sqlite3.connect`
        before the first sync leaves a 0-byte file too: they call `refuse_truncated` before
        they take the lock). A new store is made whole
        (`_create`): a kill while it is made leaves no half-made one. A store that applied
        migrations this version does not know, or a SQLite database that is not a syncd
        store, is refused before anything is written.
        """
        if create:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder of the store {path}: {exc.strerror}",
                    hint="check [store] path and its parent folder's permissions",
                ) from exc
            if not os.path.lexists(path):
                cls._create(path)
        elif not path.is_file():
            raise missing(path)
        elif unwritten(path):
            raise unwritten_error(path)
        return cls._connect(path, migrate=migrate, create=create)

    @classmethod
    def _create(cls, path: Path) -> None:
        """A new store, made whole under a name of its own (every migration applied) and
        linked into place: a kill while it is made leaves nothing at `path` that the next
        run could take for an empty store. The name is fixed, so the next creation removes
        a killed one's leftovers (stores are made under the instance lock, or in a folder
        of their own)."""
        tmp = path.with_name(f".{path.name}.new")
        try:
            for end in ("", "-wal", "-shm", "-journal"):
                Path(f"{tmp}{end}").unlink(missing_ok=True)
            cls._connect(tmp, migrate=True, create=True, made_for=path).close()
            try:
                os.link(tmp, path)  # never replaces a store that appeared meanwhile
            except FileExistsError:
                pass
            except OSError:  # a file system without hard links (FAT, some network shares)
                if not os.path.lexists(path):
                    os.rename(tmp, path)
            tmp.unlink(missing_ok=True)
            _named_on_disk(path)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store {path}: {exc.strerror}",
                hint="check [store] path and its folder's permissions and free space",
            ) from exc

    @classmethod
    def _connect(
        cls, path: Path, *, migrate: bool, create: bool, made_for: Path | None = None
    ) -> Store:
        """The store at `path`, an existing file; or the new one `_create` makes there for
        `made_for`, which its errors name."""
        named = made_for or path
        try:
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode={'rwc' if create else 'rw'}",
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,  # the diff's writer thread (diff._Writer)
            )
        except sqlite3.Error as exc:
            raise _open_error(exc, named) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # sqlite-utils wants the default (non-autocommit) transaction handling
            conn.isolation_level = "DEFERRED"
            db = Database(conn)
            behind = _refuse_foreign(db, named)
            if len(behind) == len(KNOWN) and not create:
                raise empty(path)
            # only now, as turning WAL on rewrites the header of a database in rollback mode
            # (someone else's, a newer syncd's): a refused one is left as it was
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
            if migrate:
                _migrate(db, named)
                behind = []
            conn.isolation_level = None
        except sqlite3.Error as exc:
            conn.close()
            raise _open_error(exc, named) from exc
        except StoreError:
            conn.close()
            raise
        store = cls(db, path)
        store.behind = behind
        return store

    @classmethod
    def read(cls, path: Path) -> Store:
        """The store as it is, for a command that only reads it (`status`, `show`): never
        created or migrated (a migration under a running service of the version before
        would stop it: that store is from a newer syncd, to it). One whose schema is behind
        this syncd's is refused: its queries would fail on what is not there yet."""
        store = cls.open(path, create=False, migrate=False)  # (an empty one is refused)
        if store.behind:
            store.close()
            raise StoreError(
                f"the store {path} was written by an older syncd: this one reads it once it "
                f"is migrated ({len(store.behind)} migration(s) to apply)",
                hint="restart the service (`systemctl restart syncd`) or run `syncd sync`: "
                "either migrates it first",
            )
        return store

    def close(self) -> None:
        """Close, first folding the WAL back into the database and truncating it when no
        reader still needs it (analysts' long queries keep it; the next close cuts it)."""
        try:
            self.conn.execute("PRAGMA busy_timeout = 0")  # never wait for readers here
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # busy: a reader holds an old snapshot; nothing is lost
        self.conn.close()

    @contextmanager
    def write(self, *, copy_back: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception.

        A fault of the store, in the body or at COMMIT, leaves as a `StoreError`.
        `copy_back=False`: the COMMIT copies nothing of the WAL back into the database (nor
        resets it), however big it is; the next commit or `checkpoints_aside` does (the
        diff's, so that the copy overlaps the delivery that follows it)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
                if not copy_back:
                    self.conn.execute("PRAGMA wal_autocheckpoint = 0")
                try:
                    self.conn.execute("COMMIT")
                finally:
                    if not copy_back and self._checkpointer is None:
                        self.conn.execute("PRAGMA wal_autocheckpoint = 1000")  # the default
            finally:
                # SQLite has rolled back already after disk full and some I/O errors; and a
                # failed ROLLBACK must not hide the error that caused it (uncommitted WAL
                # frames are never read, so nothing of this transaction survives either way)
                if self.conn.in_transaction:
                    with suppress(sqlite3.Error):
                        self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            self._raise(exc)
        liveness.beat()  # committed: the daemon's watchdog counts it as progress
        if not copy_back:
            return
        if self._checkpointer is not None:
            self._checkpointer.set()
        self.bound_wal()

    @contextmanager
    def checkpoints_aside(self) -> Iterator[None]:
        """For the block, copy the WAL back into the database from a thread of its own (a
        passive checkpoint after each commit, on its own connection) instead of inside the
        commit that passes 1000 pages. Without a second connection (the store cannot be
        opened twice), the block runs with SQLite's own checkpoints."""
        try:
            aside = sqlite3.connect(
                f"{self.path.absolute().as_uri()}?mode=rw",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
            aside.execute("PRAGMA busy_timeout = 0")  # never wait: the next commit retries
        except sqlite3.Error:
            yield
            return
        wake, done = threading.Event(), threading.Event()

        def checkpoint() -> None:
            while True:
                wake.wait()
                wake.clear()
                if done.is_set():
                    return
                with suppress(sqlite3.Error):  # busy, or a fault: the next one, or close, copies
                    aside.execute("PRAGMA wal_checkpoint(PASSIVE)")

        thread = threading.Thread(target=checkpoint, name="syncd-checkpoint", daemon=True)
        try:
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
            thread.start()
            self._checkpointer = wake
            wake.set()  # what a commit left in the WAL (the diff's) is copied from the start
            yield
        finally:
            self._checkpointer = None
            done.set()
            wake.set()
            if thread.is_alive():
                thread.join()
            aside.close()
            with suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_autocheckpoint = 1000")  # SQLite's default

    def _raise(self, exc: sqlite3.Error) -> NoReturn:
        """Raise `exc` as its StoreError, or as it is when it is a bug."""
        fault = store_error(exc, self.path)
        if fault is None:
            raise exc
        raise fault from exc

    def bound_wal(self) -> None:
        """Reset a WAL grown past `WAL_RESET_AT` (see the module's docstring). The reset
        waits for old readers only once per `WAL_RESET_AT` of growth; at other commits it
        is tried without waiting, so it happens at the first commit after they are gone."""
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size < WAL_RESET_AT:
            return
        wait = WAL_RESET_WAIT_MS if size >= self.wal_wait_past else 0
        self.conn.execute(f"PRAGMA busy_timeout = {wait}")
        try:
            busy = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error:
            busy = 1  # the commit stands; the next commit or close tries again
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not busy:
            self.wal_wait_past = 0
        elif wait:
            self.wal_wait_past = size + WAL_RESET_AT

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        try:
            cur = self.conn.execute(sql, params)
            cur.row_factory = sqlite3.Row
            return list(cur)
        except sqlite3.Error as exc:
            self._raise(exc)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            row = self.conn.execute(sql, params).fetchone()
        except sqlite3.Error as exc:
            self._raise(exc)
        return row[0] if row else None

    def quick_check(self) -> str:
        """Return "ok", or the damage `PRAGMA quick_check` finds (the first five problems).

        It reads every page, so it takes seconds on a large store; `damaged(path, problems)`
        is the error to report."""
        try:
            found = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                self._raise(exc)
            return str(exc)
        # one line: a problem may span lines, under a "*** in database main ***" heading
        lines = (line.strip() for problem in found for line in problem.splitlines())
        return "; ".join(line for line in lines if line and not line.startswith("***"))

    # --- runs -------------------------------------------------------------------------
    def start_run(self, kind: str, now: datetime, export_path: str | None = None) -> int:
        """Record a new run, first closing as `crashed` any run a dead process left
        `running`. The caller holds the instance lock, so no other run is in progress."""
        with self.write():
            run_id = self.insert_run(kind, now, export_path)
            self.close_crashed(run_id)
        self.undo_first_sync()
        return run_id

    @contextmanager
    def generation_once(self) -> Iterator[None]:
        """Writes to `contacts`, inside the caller's transaction, that move the contacts'
        generation on once, at the end, instead of once a row (m006: the triggers stand
        aside while `in_diff` is set). The diff's writes are such."""
        self.conn.execute(GENERATION_ASIDE)
        try:
            yield
        finally:
            self.conn.execute(GENERATION_ON)

    def unfinished_first_sync(self) -> int | None:
        """The run whose first sync committed pieces and did not finish, if any (m014)."""
        run = self.scalar("SELECT run_id FROM unfinished_diff")
        return None if run is None else int(run)

    def undo_first_sync(self) -> dict[str, int]:
        """Undo the committed pieces of a first sync that did not finish (m014), if any:
        how many rows of each kind went. Such a diff began on a store with no contact, no
        acknowledgement and no open delivery (`DiffStore.pieces`), so undoing it is
        emptying `contacts` and `vendor_state` and deleting its run's deliveries and
        quarantined rows; its digest definitions stay (they describe no stored digest).
        In `PRUNE_BATCH`-row transactions, so the WAL stays bounded here too; the marker
        goes last, so a kill half-way leaves the rest to the next run. Only the holder of
        the instance lock may call this (as `start_run` does)."""
        run = self.unfinished_first_sync()
        if run is None:
            return {}
        steps = {  # table → (what names a row, the rows to delete)
            "deliveries": ("id", "SELECT id FROM deliveries WHERE run_id = :run"),
            "quarantine": ("id", "SELECT id FROM quarantine WHERE run_id = :run"),
            "contacts": ("rowid", "SELECT rowid FROM contacts"),
            "vendor_state": ("(vendor, key)", "SELECT vendor, key FROM vendor_state"),
        }
        gone = dict.fromkeys(steps, 0)
        for table, (row, select) in steps.items():
            while True:
                with self.write() as c, self.generation_once():  # the diff's kind of write
                    n = c.execute(
                        f"DELETE FROM {table} WHERE {row} IN ({select} LIMIT {PRUNE_BATCH})",
                        {"run": run},
                    ).rowcount
                gone[table] += n
                if n < PRUNE_BATCH:
                    break
        with self.write() as c:
            c.execute("DELETE FROM unfinished_diff")
        log.warning("undid an unfinished first sync", run=run, **gone)
        return gone

    def close_crashed(self, by: int) -> int:
        """Close every run but `by` still marked `running` as `crashed`: syncd was killed
        (SIGKILL, power loss, OOM) before it could record the end. Only the holder of the
        instance lock may call this, inside its transaction. When it ended is not known:
        `finished_at` and `seconds` stay NULL."""
        cur = self.conn.execute(
            "UPDATE runs SET status = 'crashed', message = 'syncd stopped without recording "
            "the end of this run (killed, or the host went down); closed by run #' || ? "
            "WHERE status = 'running' AND id != ?",
            (by, by),
        )
        return cur.rowcount

    def insert_run(self, kind: str, now: datetime, export_path: str | None = None) -> int:
        """Insert a run row inside the caller's transaction."""
        cur = self.conn.execute(
            "INSERT INTO runs (kind, started_at, status, export_path) VALUES (?, ?, 'running', ?)",
            (kind, iso(now), export_path),
        )
        return int(cur.lastrowid or 0)

    def delivering(self, run_id: int, vendors: Sequence[str]) -> None:
        """The reconcile `run_id` sends what is queued for `vendors` (`runs.delivered`).

        Its COMMIT copies nothing back (`copy_back=False`): it comes between the diff's
        commit and the delivery, and would otherwise copy the diff's whole WAL back in the
        main thread, which the delivery's `checkpoints_aside` thread does meanwhile."""
        with self.write(copy_back=False) as c:
            c.execute(
                "UPDATE runs SET delivered = ? WHERE id = ?", (json.dumps(list(vendors)), run_id)
            )

    def finish_run(
        self,
        run_id: int,
        now: datetime,
        *,
        status: str,
        exit_code: int,
        counts: dict[str, Any],
        message: str = "",
        rows_read: int | None = None,
        quarantined: int | None = None,
        export_path: str | None = None,
    ) -> None:
        # a vendor's words reach a run's message and its `stopped` counts: scrubbed here,
        # before json.dumps (scrubbing JSON text could cut through an escape)
        message = scrub(message)
        counts = {
            v: {k: scrub(x) if isinstance(x, str) else x for k, x in c.items()}
            if isinstance(c, dict)
            else c
            for v, c in counts.items()
        }
        with self.write() as c:
            c.execute(
                """UPDATE runs SET finished_at = ?, status = ?, exit_code = ?, counts = ?,
                   message = ?, rows_read = coalesce(?, rows_read),
                   quarantined = coalesce(?, quarantined),
                   export_path = coalesce(?, export_path),
                   seconds = round((julianday(?) - julianday(started_at)) * 86400, 3)
                   WHERE id = ?""",
                (
                    iso(now),
                    status,
                    exit_code,
                    json.dumps(counts, sort_keys=True),
                    message,
                    rows_read,
                    quarantined,
                    export_path,
                    iso(now),
                    run_id,
                ),
            )

    # --- deliveries -------------------------------------------------------------------
    def requeue_failed(self, vendor: str, max_attempts: int, now: datetime) -> int:
        """Failed deliveries go back to pending for this run; after N tries they are dead.
        (Through `deliveries_open`: its own `IN` term lets SQLite use it, where `status =
        'failed'` alone made both statements walk every delivery of every vendor.)"""
        failed = f"vendor = ? AND status = 'failed' AND status IN {OPEN_STATUSES!r}"
        with self.write() as c:
            c.execute(
                f"UPDATE deliveries SET status = 'dead', updated_at = ? "
                f"WHERE {failed} AND attempts >= ?",
                (iso(now), vendor, max_attempts),
            )
            cur = c.execute(
                f"UPDATE deliveries SET status = 'pending', updated_at = ? WHERE {failed}",
                (iso(now), vendor),
            )
            return cur.rowcount

    def pending(self, vendor: str, after: int, limit: int) -> list[sqlite3.Row]:
        """The next `limit` pending deliveries to `vendor` with an id above `after`, in id
        order: a range of the partial index `deliveries_open` (vendor, status, id), so a
        page costs its own rows, not a walk of the ledger (the `IN` term is the index's
        own, which lets SQLite use it). `stale` is 1 for one that a newer delivery of the
        same contact replaces, wherever that one is (found by `deliveries_key`): a newer
        pending one, and also one sent (or unknown, failed, ...) since, which `syncd retry`
        or a failed one's requeue must not send old data after. Only a newer `skipped`
        one (held back by the diff's suppression rules) leaves it be. The diff holds the
        same rule (`DiffStore.chunk`): an export back to such a delivery's data (A, then B
        sent, then A again) is a change that sends A anew, not one A carries already."""
        return self.query(
            "SELECT d.id, d.key, d.payload, d.attempts, d.kind, d.hash, d.created_at, vs.ref, "
            "EXISTS (SELECT 1 FROM deliveries n WHERE n.key = d.key AND n.vendor = d.vendor "
            "AND n.id > d.id AND n.status != 'skipped') AS stale "
            "FROM deliveries d INDEXED BY deliveries_open "
            "LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key "
            f"WHERE d.vendor = ? AND d.status = 'pending' AND d.status IN {OPEN_STATUSES!r} "
            "AND d.id > ? ORDER BY d.id LIMIT ?",
            (vendor, after, limit),
        )

    def suppressions(
        self, channels: Collection[str], reach: Mapping[str, tuple[str | None, str | None]]
    ) -> dict[str, str]:
        """Keys unsubscribed at any vendor in one of `channels` (or `any`) → the skip
        reason. An unsubscribe matches a contact by CRM key, normalised email or E.164 phone.
        """
        if not reach:
            return {}
        # every contact with the email (or phone): a household's shared address
        # unsubscribed holds back each of them, not the last one a dict kept
        by_email: dict[str, list[str]] = {}
        by_phone: dict[str, list[str]] = {}
        for k, (e, p) in reach.items():
            if e:
                by_email.setdefault(e, []).append(k)
            if p:
                by_phone.setdefault(p, []).append(k)
        keys, emails, phones = list(reach), list(by_email), list(by_phone)
        # the lists as JSON arrays, not a `?` each: one statement text whatever their
        # lengths. Each length was a statement of its own, and SQLite's statement cache
        # (128 of them) kept one compiled program of ~100-200 KB per chunk of the diff,
        # 18 MB at 3 million contacts
        sql = (
            "SELECT key, email, phone, vendor, channel, at FROM unsubscribes "
            "WHERE key IN (SELECT value FROM json_each(?1)) "
            "OR email IN (SELECT value FROM json_each(?2)) "
            # the earliest known time names the reason; an untimed opt-out suppresses all
            "OR phone IN (SELECT value FROM json_each(?3)) ORDER BY at IS NULL, at"
        )
        out: dict[str, str] = {}
        channels = set(channels)
        lists = [orjson.dumps(values).decode() for values in (keys, emails, phones)]
        for key, email, phone, vendor, channel, at in self.conn.execute(sql, lists):
            if "any" not in channels and channel not in channels:
                continue
            by_key = [key] if key in reach else []
            for match in (*by_key, *by_email.get(email, ()), *by_phone.get(phone, ())):
                when = f"on {at}" if at else "(date unknown)"
                out.setdefault(match, f"unsubscribed at {vendor} ({channel or 'any'}) {when}")
        return out

    def held_back(
        self, vendor: str, rows: Sequence[sqlite3.Row], channels: Collection[str], now: datetime
    ) -> dict[str, str]:
        """Those of these pending deliveries whose contact is unsubscribed (by key, or by the
        reach the diff stored: normalised email, E.164 phone) are `skipped` now, with the
        reason: an opt-out pulled after they were queued (the diff held back the contacts
        unsubscribed before). key → the reason."""
        keys = [r["key"] for r in rows]
        reach = {
            k: (e, p)
            for k, e, p in self.conn.execute(
                "SELECT key, email, phone FROM contacts WHERE key IN (SELECT value FROM json_each(?))",
                (json.dumps(keys),),
            )
        }
        reasons = self.suppressions(channels, {k: reach.get(k, (None, None)) for k in keys})
        held = [(r["id"], reasons[r["key"]]) for r in rows if r["key"] in reasons]
        if held:
            with self.write() as c:
                c.executemany(
                    "UPDATE deliveries SET status = 'skipped', reason = ?, updated_at = ? "
                    "WHERE id = ? AND status = 'pending'",
                    [(f"{why}, after it was queued", iso(now), did) for did, why in held],
                )
            log.info("held back: unsubscribed since queued", vendor=vendor, rows=len(held))
        return reasons

    def last_unsubscribe(self) -> str | None:
        """When the latest unsubscribe was first pulled: a delivery queued since was held
        to every opt-out there is by the diff that queued it."""
        return self.scalar("SELECT max(pulled_at) FROM unsubscribes")  # type: ignore[no-any-return]

    def in_flight(self, vendor: str) -> list[sqlite3.Row]:
        """What may be out at `vendor` (at most the batch a crash or a stop left), found
        through `deliveries_open` (its own `IN` term lets SQLite use it)."""
        return self.query(
            "SELECT d.id, d.key, d.payload, d.attempts, d.kind, d.hash, d.job, vs.ref "
            "FROM deliveries d LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key "
            f"WHERE d.vendor = ? AND d.status = 'in_flight' AND d.status IN {OPEN_STATUSES!r} "
            "ORDER BY d.job, d.id",
            (vendor,),
        )

    def mark_in_flight(self, ids: Iterable[int], now: datetime) -> None:
        """A request is about to carry them: an earlier attempt's reason no longer holds
        (an in-flight delivery with a reason is a job held open: `syncd.status.PROBLEMS`)."""
        self._update_ids(
            "status = 'in_flight', reason = NULL, attempts = attempts + 1, updated_at = ?",
            (iso(now),),
            ids,
        )

    def newer_open(self, vendor: str, ids: Sequence[int]) -> set[int]:
        """Those of `ids` that a newer open delivery (pending, in flight) of the same
        contact and vendor replaces."""
        if not ids:
            return set()
        rows = self.query(
            "SELECT d.id FROM deliveries d JOIN json_each(?) j ON d.id = j.value "
            "WHERE EXISTS (SELECT 1 FROM deliveries n WHERE n.vendor = d.vendor AND n.key = d.key "
            "AND n.id > d.id AND n.status IN ('pending', 'in_flight')) AND d.vendor = ?",
            (json.dumps(list(ids)), vendor),
        )
        return {r["id"] for r in rows}

    def supersede(self, ids: Iterable[int], reason: str, now: datetime) -> None:
        """These open deliveries will never be sent: a newer one of the contact replaces them."""
        self._update_ids(
            "status = 'superseded', reason = ?, job = NULL, updated_at = ?",
            (reason, iso(now)),
            ids,
        )

    def record_job(self, ids: Iterable[int], job: str, now: datetime) -> None:
        self._update_ids("job = ?, updated_at = ?", (job, iso(now)), ids)

    def _update_ids(self, assignments: str, params: Sequence[Any], ids: Iterable[int]) -> None:
        """One UPDATE of these deliveries, in one transaction."""
        with self.write() as c:
            c.execute(
                f"UPDATE deliveries SET {assignments} WHERE id IN (SELECT value FROM json_each(?))",
                (*params, json.dumps(list(ids))),
            )

    def settle(
        self,
        vendor: str,
        outcomes: Sequence[tuple[int, str, str, str | None, str | None]],
        now: datetime,
        max_attempts: int,
    ) -> None:
        """Record outcomes (id, key, status, reason, ref); advance vendor_state for sent ones.

        A `failed` delivery that has used its attempts becomes `dead` at once; a `pending`
        one gives its attempt back (retriable: it does not count against the row). One
        transaction, one statement per status over the outcomes as a JSON array.
        """
        ts = iso(now)
        by_status: dict[str, list[tuple[int, str | None, str | None]]] = {}
        for did, _key, status, reason, ref in outcomes:
            # SQLite's JSON functions end a text at a NUL: a vendor's words after one were lost
            reason = reason.replace("\x00", "\\x00") if reason else reason
            by_status.setdefault(status, []).append((did, reason, ref))
        # the outcomes of one status: o.id, o.reason, o.ref
        rows = (
            "(SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS reason, "
            "json_extract(value, '$[2]') AS ref FROM json_each(?)) AS o"
        )
        with self.write() as c:
            for status, group in by_status.items():
                array = json.dumps(group)
                if status == Status.SENT:
                    c.execute(
                        "UPDATE deliveries SET status = 'sent', reason = NULL, job = NULL, "
                        "vendor_ref = coalesce(o.ref, deliveries.vendor_ref), sent_at = ?, "
                        f"updated_at = ? FROM {rows} WHERE deliveries.id = o.id",
                        (ts, ts, array),
                    )
                    c.execute(
                        "INSERT INTO vendor_state (vendor, key, hash, ref, acked_at) "
                        f"SELECT d.vendor, d.key, d.hash, o.ref, ? FROM {rows} "
                        "JOIN deliveries d ON d.id = o.id WHERE true "
                        "ON CONFLICT (vendor, key) DO UPDATE SET hash = excluded.hash, "
                        "ref = coalesce(excluded.ref, vendor_state.ref), acked_at = excluded.acked_at",
                        (ts, array),
                    )
                elif status == Status.FAILED:
                    c.execute(
                        "UPDATE deliveries SET status = CASE WHEN attempts >= ? THEN 'dead' "
                        f"ELSE 'failed' END, reason = o.reason, job = NULL, updated_at = ? "
                        f"FROM {rows} WHERE deliveries.id = o.id",
                        (max_attempts, ts, array),
                    )
                elif status == Status.PENDING:
                    c.execute(
                        "UPDATE deliveries SET status = 'pending', attempts = max(attempts - 1, 0), "
                        f"reason = o.reason, job = NULL, updated_at = ? FROM {rows} "
                        "WHERE deliveries.id = o.id",
                        (ts, array),
                    )
                else:  # unknown
                    c.execute(
                        f"UPDATE deliveries SET status = ?, reason = o.reason, updated_at = ? "
                        f"FROM {rows} WHERE deliveries.id = o.id",
                        (status, ts, array),
                    )

    def requeue(self, statuses: Sequence[str], vendor: str | None, now: datetime) -> int:
        """`syncd retry`: put deliveries in these statuses back to pending, attempts reset."""
        marks = ",".join("?" * len(statuses))
        sql = (
            f"UPDATE deliveries SET status = 'pending', attempts = 0, updated_at = ? "
            f"WHERE status IN ({marks})"
        )
        params: list[Any] = [iso(now), *statuses]
        if vendor:
            sql += " AND vendor = ?"
            params.append(vendor)
        with self.write() as c:
            return c.execute(sql, params).rowcount

    def forget_jobs(self, vendor: str, now: datetime) -> int:
        """`syncd retry --forget-jobs`: an upsert vendor's deliveries in flight in a job
        still open there (one a connector stopped polling, held) go back to pending, the
        job forgotten, to be sent again: the operator accepts that the vendor may still
        apply the job after them."""
        with self.write() as c:
            return c.execute(
                "UPDATE deliveries SET status = 'pending', job = NULL, attempts = "
                "max(attempts - 1, 0), reason = 'its job ' || job || ' forgotten (syncd retry "
                "--forget-jobs)', updated_at = ? WHERE vendor = ? AND status = 'in_flight' "
                "AND job IS NOT NULL",
                (iso(now), vendor),
            ).rowcount

    def withdraw_vendor(
        self,
        vendor: str,
        statuses: Sequence[str],
        now: datetime,
        stop: threading.Event | None = None,
    ) -> dict[str, int]:
        """`syncd withdraw`: the open deliveries in `statuses` of a vendor no longer in the
        config are superseded ("vendor removed from the config"): nothing sends them again.
        Their rows stay, and so does what the vendor acknowledged (`vendor_state`), which a
        vendor added back is compared with as ever. In batches, as a prune (`_prune`): the
        write lock is held a batch at a time, and `stop` (SIGTERM) is looked at before each.
        How many of each status went (through `deliveries_open`, a status at a time: a
        batch is the next ids of the index, however big the backlog)."""
        return {
            status: self._prune(
                "SELECT id FROM deliveries INDEXED BY deliveries_open WHERE vendor = :vendor "
                f"AND status = :status AND status IN {OPEN_STATUSES!r} AND id > :after",
                "UPDATE deliveries SET status = 'superseded', reason = :reason, job = NULL, "
                "updated_at = :now",
                {"vendor": vendor, "status": status, "reason": WITHDRAWN, "now": iso(now)},
                False,
                stop,
            )
            for status in statuses
        }

    def backlog(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in self.query("SELECT vendor, status, n FROM delivery_backlog"):
            out.setdefault(row["vendor"], {})[row["status"]] = row["n"]
        return out

    # --- retention and backup ---------------------------------------------------------
    def prune(
        self,
        now: datetime,
        *,
        runs_days: int,
        payload_days: int,
        dry_run: bool = False,
        stop: threading.Event | None = None,
    ) -> dict[str, int]:
        """Let go of what retention allows (0 days keeps everything); return how many rows
        of each kind went, or would go with `dry_run`. `stop` (SIGTERM) is looked at before
        each transaction, as the diff looks at it between blocks: once it is set nothing
        more changes, and the counts are those of the batches committed.

        - `payloads`: a closed delivery (sent, superseded, skipped) last changed more than
          `payload_days` ago keeps its row, status and hash; its payload becomes NULL. An
          open one keeps its payload whatever its age: it may still be sent.
        - `quarantine`, then `runs`: the quarantined rows of runs started more than
          `runs_days` ago, and those runs, except a run that a delivery or a cursor names
          (delivery rows are kept, and `deliveries.run_id` is a foreign key) and the last
          finished reconcile, whose quarantine `syncd status` shows, and the newest run that
          delivered to a vendor (`runs.delivered`) while an open delivery of that vendor is
          at or before it: `syncd run` reads it to tell that those sends were asked for
          (`syncd.daemon.unbaselined`), a trigger vendor's surveys queued by a run that did
          not deliver to it (`syncd sync --vendor another`) and sent later by one that did.
          A run goes whole: its quarantined rows, and the run unless it stays, in one
          transaction (`_prune_runs`), so a kill between two never leaves part of them.
        """
        gone = {"payloads": 0, "quarantine": 0, "runs": 0}
        if payload_days:
            gone["payloads"] = self._prune(
                "SELECT id FROM deliveries WHERE id > :after AND updated_at < :cutoff "
                f"AND status NOT IN {OPEN_STATUSES!r} AND payload IS NOT NULL",
                "UPDATE deliveries SET payload = NULL",
                {"cutoff": iso(now - timedelta(days=payload_days))},
                dry_run,
                stop,
            )
        if runs_days:
            old = {
                "cutoff": iso(now - timedelta(days=runs_days)),
                "last": self.scalar(
                    "SELECT max(id) FROM runs WHERE kind = 'reconcile' AND status != 'running'"
                ),
            }
            # whole runs a transaction: a run's quarantined rows and, unless something
            # names it, the run itself, together (rows cut at a batch's boundary, or gone
            # with the run left, were what a kill between two transactions left)
            gone["quarantine"], gone["runs"] = self._prune_runs(old, dry_run, stop)
        return gone

    # a run prune may delete: old (`:cutoff`), not the last finished reconcile (`:last`),
    # and named by nothing that keeps it
    _RUN_GOES = (
        "NOT EXISTS (SELECT 1 FROM deliveries WHERE run_id = r.id) "
        "AND r.id NOT IN (SELECT run_id FROM cursors WHERE run_id IS NOT NULL) "
        # the newest run that delivered to a vendor, while an open delivery of that
        # vendor is at or before it: it asked for those (`daemon.unbaselined`)
        "AND r.id NOT IN (SELECT max(a.id) AS asked FROM runs a, json_each(a.delivered) v "
        "GROUP BY v.value HAVING EXISTS (SELECT 1 FROM deliveries INDEXED BY "
        f"deliveries_open WHERE vendor = v.value AND status IN {OPEN_STATUSES!r} "
        "AND run_id <= asked))"
    )

    def _prune_runs(
        self, params: dict[str, Any], dry_run: bool, stop: threading.Event | None
    ) -> tuple[int, int]:
        """The old runs' quarantined rows, and the runs `_RUN_GOES` lets go, a run whole in
        one transaction: each transaction takes the next runs (by id) whose rows and own row
        come to at most `PRUNE_BATCH` (one run at least, however many rows it has: a run
        is never cut in two). How many quarantined rows and runs went; `stop` as `_prune`."""
        old = "r.started_at < :cutoff AND r.id IS NOT :last"
        if stop is not None and stop.is_set():
            return 0, 0
        if dry_run:
            count = "SELECT count(*) FROM {} WHERE " + old
            rows = self.query(count.format("quarantine q JOIN runs r ON r.id = q.run_id"), params)
            whole = self.query(count.format("runs r") + f" AND {self._RUN_GOES}", params)
            return int(rows[0][0]), int(whole[0][0])
        candidates = (
            "SELECT r.id, (SELECT count(*) FROM quarantine q WHERE q.run_id = r.id) AS n, "
            f"{self._RUN_GOES} AS goes FROM runs r WHERE r.id > :after AND {old} "
            f"ORDER BY r.id LIMIT {PRUNE_BATCH}"
        )
        quarantined, runs, after = 0, 0, 0
        while stop is None or not stop.is_set():
            with self.write() as c:
                found = c.execute(candidates, {**params, "after": after}).fetchall()
                take: list[int] = []
                gone: list[int] = []
                size = 0
                for run, n, goes in found:
                    size += n + bool(goes)
                    if take and size > PRUNE_BATCH:
                        break
                    after = run
                    if n or goes:
                        take.append(run)
                    if goes:
                        gone.append(run)
                if take:
                    quarantined += c.execute(
                        "DELETE FROM quarantine WHERE run_id IN (SELECT value FROM json_each(?))",
                        (json.dumps(take),),
                    ).rowcount
                if gone:
                    runs += c.execute(
                        "DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?))",
                        (json.dumps(gone),),
                    ).rowcount
            if len(found) < PRUNE_BATCH and (not found or after == found[-1][0]):
                break  # every old run looked at
        return quarantined, runs

    def _prune(
        self,
        select: str,
        change: str,
        params: dict[str, Any],
        dry_run: bool,
        stop: threading.Event | None,
    ) -> int:
        """Apply `change` to the rows `select` finds (by id, from `:after` on), at most
        `PRUNE_BATCH` of them a transaction, until `stop` is set; or only count them. Both
        statements are given `params`."""
        if stop is not None and stop.is_set():
            return 0
        if dry_run:
            return int(self.query(f"SELECT count(*) FROM ({select})", {**params, "after": 0})[0][0])
        done, after = 0, 0
        while stop is None or not stop.is_set():
            with self.write() as c:
                batch = f"{select} ORDER BY id LIMIT {PRUNE_BATCH}"
                ids = [r[0] for r in c.execute(batch, {**params, "after": after})]
                if ids:
                    c.execute(
                        f"{change} WHERE id IN (SELECT value FROM json_each(:ids))",
                        {**params, "ids": json.dumps(ids)},
                    )
            done += len(ids)
            if len(ids) < PRUNE_BATCH:
                break
            after = ids[-1]
        return done

    def backup(self, dest: Path) -> None:
        """Copy the store to `dest`, a new file, consistently while others write.

        SQLite's online backup API, `BACKUP_STEP` pages a step, inside one read transaction
        of this connection: every page comes from that one snapshot, so writers go on (WAL)
        and the copy is the store as of one commit. (Without it, each step opens its own
        snapshot and the copy starts over at every commit of another connection: under a
        busy daemon it may never finish. `VACUUM INTO` would rebuild every table and index,
        holding the snapshot, and so the WAL, several times longer.) The copy is written
        under a temporary name beside `dest`, checked, and linked into place, which fails
        rather than replace a file that appeared meanwhile. It is one self-contained file
        (rollback journal: no -wal or -shm to carry along; syncd turns WAL on again when it
        opens it), readable by its owner only.

        Whatever ends it before it is done — a fault, or KeyboardInterrupt (Ctrl-C, the
        CLI's SIGTERM) — leaves neither the temporary file nor `dest`. A signal during the
        page copy is acted on between two steps (Python runs its handler in the progress
        callback), not once the whole store is copied. A SIGKILL leaves the temporary file
        (and its journal): it names its backup's pid, and the next backup into that folder
        removes those of backups no longer running (`_sweep_backups`).
        """
        exists = SyncdError(f"{dest} exists", hint="name a new file: a backup never replaces one")
        if os.path.lexists(dest):
            raise exists
        tmp, done = None, False
        try:
            _sweep_backups(dest.parent)
            fd, tmp = tempfile.mkstemp(
                dir=dest.parent, prefix=f".{dest.name}.{BACKUP_TMP}-{os.getpid()}-", suffix=".tmp"
            )
            os.close(fd)
            copy = sqlite3.connect(tmp, isolation_level=None)
            try:
                self.conn.execute("BEGIN")
                try:
                    self.conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
                    self.conn.backup(copy, pages=BACKUP_STEP, progress=_between_steps)
                finally:
                    self.conn.execute("ROLLBACK")  # the snapshot let go
                copy.execute("PRAGMA journal_mode = DELETE")
                problems = copy.execute("PRAGMA quick_check(1)").fetchone()[0]
            finally:
                copy.close()
            if problems != "ok":
                raise damaged(self.path, problems)
            os.link(tmp, dest)  # a rename that never replaces: EEXIST if dest appeared
            _named_on_disk(dest)
            done = True
        except FileExistsError:
            raise exists from None
        except (OSError, sqlite3.Error) as exc:
            raise SyncdError(
                f"the backup to {dest} failed: {getattr(exc, 'strerror', None) or exc}",
                hint="check that its folder exists, is writable and has room for the store",
            ) from exc
        finally:
            # the copy's rollback journal too: a backup that failed mid-write (a full disk)
            # leaves it beside the temporary file; and `dest`, if it is the copy's other name
            leftovers = [tmp, f"{tmp}-journal"] if tmp else []
            with suppress(OSError):
                if tmp and not done and os.path.samefile(tmp, dest):
                    leftovers.append(str(dest))
            for leftover in leftovers:
                with suppress(FileNotFoundError):
                    os.unlink(leftover)
