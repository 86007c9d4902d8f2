"""The SQLite store: one writer connection, WAL, migrations, the queries the pipeline needs.

The store knows no vendor and no CLI. Writes happen inside `store.write()`, which opens
`BEGIN IMMEDIATE` (so a writer never fails half-way on a lock upgrade) and commits or rolls
back as a whole; analysts read at any time (WAL).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from syncd.errors import StoreError
from syncd.state.schema import migrations

BUSY_TIMEOUT_MS = 30_000
# the WAL is cut back to this after a checkpoint; readers holding old snapshots can make it
# grow past it meanwhile (see `close`)
JOURNAL_SIZE_LIMIT = 8 * 1024 * 1024
OPEN_STATUSES = ("pending", "in_flight", "failed", "unknown", "dead")


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


def chunked(items: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Store:
    """The syncd database. Create with `Store.open(path)`; close when done."""

    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path
        self.conn: sqlite3.Connection = db.conn

    @classmethod
    def open(cls, path: Path, *, migrate: bool = True) -> Store:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(path),
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,  # the diff's writer thread (diff._Writer)
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
            # sqlite-utils wants the default (non-autocommit) transaction handling
            conn.isolation_level = "DEFERRED"
            db = Database(conn)
            if migrate:
                migrations.apply(db)
            conn.isolation_level = None
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the store {path}: {exc}",
                hint="check [store] path, its folder's permissions and free disk space",
            ) from None
        return cls(db, path)

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
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        cur = self.conn.execute(sql, params)
        cur.row_factory = sqlite3.Row
        return list(cur)

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None

    def integrity_check(self) -> str:
        return str(self.scalar("PRAGMA integrity_check"))

    # --- runs -------------------------------------------------------------------------
    def start_run(self, kind: str, now: datetime, export_path: str | None = None) -> int:
        with self.write():
            return self.insert_run(kind, now, export_path)

    def insert_run(self, kind: str, now: datetime, export_path: str | None = None) -> int:
        """Insert a run row inside the caller's transaction."""
        cur = self.conn.execute(
            "INSERT INTO runs (kind, started_at, status, export_path) VALUES (?, ?, 'running', ?)",
            (kind, iso(now), export_path),
        )
        return int(cur.lastrowid or 0)

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
        """Failed deliveries go back to pending for this run; after N tries they are dead."""
        with self.write() as c:
            c.execute(
                "UPDATE deliveries SET status = 'dead', updated_at = ? "
                "WHERE vendor = ? AND status = 'failed' AND attempts >= ?",
                (iso(now), vendor, max_attempts),
            )
            cur = c.execute(
                "UPDATE deliveries SET status = 'pending', updated_at = ? "
                "WHERE vendor = ? AND status = 'failed'",
                (iso(now), vendor),
            )
            return cur.rowcount

    def pending(self, vendor: str, limit: int | None = None) -> list[sqlite3.Row]:
        sql = (
            "SELECT d.id, d.key, d.payload, d.attempts, d.kind, d.hash, vs.ref "
            "FROM deliveries d LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key "
            "WHERE d.vendor = ? AND d.status = 'pending' ORDER BY d.id"
        )
        if limit:
            sql += f" LIMIT {int(limit)}"
        return self.query(sql, (vendor,))

    def in_flight(self, vendor: str) -> list[sqlite3.Row]:
        return self.query(
            "SELECT d.id, d.key, d.payload, d.attempts, d.kind, d.hash, d.job, vs.ref "
            "FROM deliveries d LEFT JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key "
            "WHERE d.vendor = ? AND d.status = 'in_flight' ORDER BY d.job, d.id",
            (vendor,),
        )

    def mark_in_flight(self, ids: Iterable[int], now: datetime) -> None:
        with self.write() as c:
            c.executemany(
                "UPDATE deliveries SET status = 'in_flight', attempts = attempts + 1, "
                "updated_at = ? WHERE id = ?",
                [(iso(now), i) for i in ids],
            )

    def record_job(self, ids: Iterable[int], job: str, now: datetime) -> None:
        with self.write() as c:
            c.executemany(
                "UPDATE deliveries SET job = ?, updated_at = ? WHERE id = ?",
                [(job, iso(now), i) for i in ids],
            )

    def settle(
        self,
        vendor: str,
        outcomes: Sequence[tuple[int, str, str, str | None, str | None]],
        now: datetime,
        max_attempts: int,
    ) -> None:
        """Record outcomes (id, key, status, reason, ref); advance vendor_state for sent ones.

        A `failed` delivery that has used its attempts becomes `dead` at once.
        """
        ts = iso(now)
        with self.write() as c:
            for did, _key, status, reason, ref in outcomes:
                if status == "sent":
                    c.execute(
                        "UPDATE deliveries SET status = 'sent', reason = NULL, job = NULL, "
                        "vendor_ref = coalesce(?, vendor_ref), sent_at = ?, updated_at = ? "
                        "WHERE id = ?",
                        (ref, ts, ts, did),
                    )
                    c.execute(
                        "INSERT INTO vendor_state (vendor, key, hash, ref, acked_at) "
                        "SELECT vendor, key, hash, ?, ? FROM deliveries WHERE id = ? "
                        "ON CONFLICT (vendor, key) DO UPDATE SET hash = excluded.hash, "
                        "ref = coalesce(excluded.ref, vendor_state.ref), acked_at = excluded.acked_at",
                        (ref, ts, did),
                    )
                elif status == "failed":
                    c.execute(
                        "UPDATE deliveries SET status = CASE WHEN attempts >= ? THEN 'dead' "
                        "ELSE 'failed' END, reason = ?, job = NULL, updated_at = ? WHERE id = ?",
                        (max_attempts, reason, ts, did),
                    )
                elif status == "pending":
                    # retriable: the attempt does not count against the row
                    c.execute(
                        "UPDATE deliveries SET status = 'pending', attempts = max(attempts - 1, 0), "
                        "reason = ?, job = NULL, updated_at = ? WHERE id = ?",
                        (reason, ts, did),
                    )
                else:  # unknown
                    c.execute(
                        "UPDATE deliveries SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
                        (status, reason, ts, did),
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

    def backlog(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for row in self.query("SELECT vendor, status, n FROM delivery_backlog"):
            out.setdefault(row["vendor"], {})[row["status"]] = row["n"]
        return out
