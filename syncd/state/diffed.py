"""The diff's reads and writes: contacts, their fingerprint cache, planned deliveries,
acknowledgements without a send, digest definitions and quarantined rows.

Everything runs inside the caller's write transaction (`Store.write()`), which the
pipeline commits, or rolls back for a dry run or a refused export. The bulk writes (a
chunk's new deliveries and contacts) go through `Writer`, a second thread on the same
connection; the rest is written at once.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any, NamedTuple

import numpy as np
import orjson

from syncd.state import GENERATION_ASIDE, GENERATION_ON, OPEN_STATUSES, Store
from syncd.state.statuses import SPARING, Status

# `--baseline` acknowledges these open deliveries instead of sending them (`baseline_queued`)
QUEUED = tuple(s for s in OPEN_STATUSES if s != Status.IN_FLIGHT)
BASELINED = "recorded as acknowledged without sending (--baseline)"
# closed and not sent: held back (`deliveries_held`)
HELD = (Status.SKIPPED.value, Status.SUPERSEDED.value)


class Stored(NamedTuple):
    """A contact as the store holds it."""

    rowid: int
    rhash: int
    attributes: str
    email: str | None
    phone: str | None


@dataclass
class Chunk:
    """What the store holds of a chunk of keys."""

    stored: dict[str, Stored]  # key → its contact row
    acked: dict[tuple[str, str], Any]  # (vendor, key) → the digest the vendor acknowledged
    open: dict[tuple[str, str], tuple[int, str, Any]]  # → the newest open (id, status, digest)
    # → the digest of the newest delivery, when that is a skip of its data for good (for
    # min_days_between_surveys, or its profile launched for another contact: `SPARING`)
    spared: dict[tuple[str, str], Any] = field(default_factory=dict)


class DiffStore:
    """The diff's access to the store, for one run at one time (`ts`)."""

    def __init__(self, store: Store, run_id: int, ts: str, export: str) -> None:
        self.store = store
        self.conn = store.conn
        self.run_id = run_id
        self.ts = ts
        self.export = export
        self.writer: Writer | None = None
        self._looked = False  # for a current fingerprint cache (`_cache`)
        self._cache_row: int | None = None  # its row, if there is one
        self._rowids: sqlite3.Blob | None = None  # its rowids, open for reading
        self._unsubscribes: bool | None = None  # whether any opt-out is stored (`suppressions`)

    def session(self) -> AbstractContextManager[None]:
        """The diff's writes: the contacts' generation moves on once, at the end (m006)."""
        return self.store.generation_once()

    def pieces(self) -> bool:
        """Begin committing as the diff goes (`commit`) if this is a first sync: the store
        holds no contact, no acknowledgement and no open delivery, so the next run can undo
        a diff that does not finish exactly (`Store.undo_first_sync`; m014)."""
        fresh = self.conn.execute(
            # each an end of a B-tree: a search, not a scan, however big the tables
            "SELECT (SELECT max(rowid) FROM contacts) IS NULL "
            "AND (SELECT max(vendor) FROM vendor_state) IS NULL AND NOT EXISTS (SELECT 1 "
            f"FROM deliveries INDEXED BY deliveries_open WHERE status IN {OPEN_STATUSES!r})"
        ).fetchone()[0]
        if fresh:
            self.conn.execute("INSERT INTO unfinished_diff (run_id) VALUES (?)", (self.run_id,))
        return bool(fresh)

    def commit(self) -> None:
        """Commit what the diff wrote so far and go on in a new transaction (a first sync
        only, see `pieces`): the WAL holds one piece, not the whole store. The contacts'
        generation moves on at each commit, so a cache is never taken for this state."""
        if self.writer:
            self.writer.wait()
            self.writer.check()
        self._close_rowids()
        self._unsubscribes = None
        self.conn.execute(GENERATION_ON)  # `session`'s end, then its start again
        self.conn.execute("COMMIT")
        self.store.bound_wal()
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(GENERATION_ASIDE)

    def finished(self) -> None:
        """The diff is whole: nothing is left to undo (committed with its last piece)."""
        self.conn.execute("DELETE FROM unfinished_diff WHERE run_id = ?", (self.run_id,))

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The bulk writes (`deliveries`, `contacts`) run on the writer thread until the
        block ends, which waits for them. Nothing else may use the connection from another
        thread meanwhile but the reads that wait for the writer first (`live`, `key_at`):
        a statement of this thread that waits for the connection while holding the GIL,
        and one of the writer's that calls back into Python (a trace callback) would
        wait for each other for ever."""
        try:
            with Writer(self.conn) as self.writer:
                yield
        finally:
            self.writer = None

    # --- the fingerprint cache (fastpath.Rows) ----------------------------------------
    def _cache(self) -> int | None:
        """The row of the cache written since the last change to a contact, if any (checked
        once: the diff's own writes do not count, and the new cache is written beside it)."""
        if not self._looked:
            row = self.conn.execute(
                "SELECT fingerprint_cache.id FROM fingerprint_cache "
                "JOIN contacts_generation USING (generation)"
            ).fetchone()
            self._cache_row = None if row is None else int(row[0])
            self._looked = True
        return self._cache_row

    def cached(self) -> np.ndarray | None:
        """The cache's fingerprints, if it is current."""
        row = self._cache()
        return None if row is None else _read_blob(self.conn, "live", row)

    def cached_rowids(self, at: np.ndarray) -> np.ndarray | None:
        """The cache's rowids at the places `at` (ascending), if it is current: read a
        megabyte of the blob at most at a time, and only the stretches that hold one."""
        row = self._cache()
        if row is None:
            return None
        out = np.empty(len(at), dtype=np.int64)
        if not len(at):
            return out
        window = at // _BLOB_VALUES
        ends = [*np.flatnonzero(np.diff(window)) + 1, len(at)]
        # one handle for every read: a new one walks the blob's overflow pages from its
        # start to reach the place (a slice at a time, that was most of writing the cache)
        if self._rowids is None:
            self._rowids = self.conn.blobopen("fingerprint_cache", "rowids", row, readonly=True)
        blob, lo = self._rowids, 0
        for hi in ends:
            first, last = int(at[lo]), int(at[hi - 1])
            blob.seek(8 * first)
            read = np.frombuffer(blob.read(8 * (last - first + 1)), dtype="<i8")
            out[lo:hi] = read[at[lo:hi] - first]
            lo = hi
        return out

    def _close_rowids(self) -> None:
        if self._rowids is not None:
            self._rowids.close()
            self._rowids = None

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live contact's fingerprint, sorted, and its rowid: a table scan (after the
        writes submitted: rows written while a SELECT steps through their table may be
        seen twice or not at all)."""
        if self.writer:
            self.writer.wait()
        pairs = np.fromiter(
            chain.from_iterable(
                self.conn.execute("SELECT rhash, rowid FROM contacts WHERE gone_at IS NULL")
            ),
            dtype=np.int64,
        ).reshape(-1, 2)
        pairs = pairs[np.argsort(pairs[:, 0])]
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def live_fingerprints(self, keys: Sequence[str]) -> dict[str, int]:
        """The fingerprints of those of `keys` that are live contacts."""
        if not keys:
            return {}
        if self.writer:
            self.writer.wait()
        rows = self.conn.execute(
            "SELECT key, rhash FROM contacts WHERE key IN (SELECT value FROM json_each(?)) "
            "AND gone_at IS NULL",
            (orjson.dumps(list(keys)).decode(),),
        )
        return dict(rows.fetchall())

    def live_fingerprints_starting(self, start: str) -> dict[str, int]:
        """The fingerprints of the live contacts whose key begins with `start` (a range of
        the key's index: no key has U+10FFFF, a noncharacter, after `start`)."""
        if self.writer:
            self.writer.wait()
        rows = self.conn.execute(
            "SELECT key, rhash FROM contacts WHERE key >= ? AND key < ? AND gone_at IS NULL",
            (start, start + "\U0010ffff"),
        )
        return dict(rows.fetchall())

    def key_at(self, rowid: int, rhash: int) -> str | None:
        if self.writer:  # the row may be one this diff is writing
            self.writer.wait()
        key = self.store.scalar(
            "SELECT key FROM contacts WHERE rowid = ? AND rhash = ?", (rowid, rhash)
        )
        return None if key is None else str(key)

    def write_cache(self, count: int, slices: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """The `count` fingerprints live after this diff and their rowids, for the next one,
        as `slices` of both (little-endian int64) come: written into the cache's other row
        (m016), since they may be read from the current one as they come, which then goes."""
        old = self._cache()
        new = 2 if old == 1 else 1
        # the old blobs hold no contact data: their pages need not be zeroed as they are
        # freed (SQLite builds with SECURE_DELETE would write 16 MB of zeros per million)
        secure = self.store.scalar("PRAGMA secure_delete")
        self.conn.execute("PRAGMA secure_delete = FAST")
        try:
            self.conn.execute(
                "INSERT OR REPLACE INTO fingerprint_cache (id, generation, live, rowids) "
                "VALUES (?, (SELECT generation FROM contacts_generation), zeroblob(?), "
                "zeroblob(?))",
                (new, 8 * count, 8 * count),
            )
            written = 0
            with (
                self.conn.blobopen("fingerprint_cache", "live", new) as live,
                self.conn.blobopen("fingerprint_cache", "rowids", new) as rowids,
            ):
                for fps, rows in slices:
                    live.write(fps.data.cast("B"))
                    rowids.write(rows.data.cast("B"))
                    written += len(fps)
            assert written == count, (written, count)
            self._close_rowids()
            self.conn.execute("DELETE FROM fingerprint_cache WHERE id != ?", (new,))
        finally:
            self._close_rowids()
            self.conn.execute(f"PRAGMA secure_delete = {int(secure)}")
        self._cache_row = new

    # --- reads ------------------------------------------------------------------------
    def next_rowid(self) -> int:
        return int(self.store.scalar("SELECT coalesce(max(rowid), 0) FROM contacts")) + 1

    def header(self) -> tuple[list[str] | None, list[str] | None]:
        """The last diff's header: (the names `contacts.attributes` are keyed by, the names
        the fingerprints were salted with); (None, None) before the first (m015)."""
        row = self.conn.execute("SELECT named, salted FROM export_header").fetchone()
        return (orjson.loads(row[0]), orjson.loads(row[1])) if row else (None, None)

    def definitions(self) -> dict[str, str]:
        """Each vendor's recorded digest definition (JSON text)."""
        return dict(self.conn.execute("SELECT vendor, definition FROM digest_definitions"))

    def has_state(self, vendor: str) -> bool:
        """Whether the vendor acknowledged anything yet."""
        sql = "SELECT 1 FROM vendor_state WHERE vendor = ? LIMIT 1"
        return bool(self.store.scalar(sql, (vendor,)))

    def chunk(self, keys: Sequence[str], vendors: Sequence[str]) -> Chunk:
        marks = ",".join("?" * len(keys))
        stored = {
            row[0]: Stored(*row[1:])
            for row in self.conn.execute(
                "SELECT key, rowid, rhash, attributes, email, phone FROM contacts "
                f"WHERE key IN ({marks})",
                keys,
            )
        }
        acked: dict[tuple[str, str], Any] = {}
        for vendor in vendors:  # (vendor, key) is the primary key: one lookup each
            acked.update(
                ((vendor, k), h)
                for k, h in self.conn.execute(
                    f"SELECT key, hash FROM vendor_state WHERE vendor = ? AND key IN ({marks})",
                    [vendor, *keys],
                )
            )
        # each contact's open delivery to each vendor: its latest delivery but a skipped one
        # (the rule of `Store.pending`), when that is open. An open one older than a
        # delivery sent (or replaced) since carries nothing: the push supersedes it, so
        # data like its own must be sent again, not taken for carried already
        opened: dict[tuple[str, str], tuple[int, str, Any]] = {}
        spared: dict[tuple[str, str], Any] = {}
        for did, v, k, status, h, reason in self.conn.execute(
            # by key: without statistics the planner would rather scan a big table than
            # look thousands of keys up
            "SELECT id, vendor, key, status, hash, reason FROM deliveries INDEXED BY "
            f"deliveries_key WHERE key IN ({marks}) ORDER BY id",
            keys,
        ):
            if status == "skipped":
                if any(m in (reason or "") for m in SPARING):
                    spared[(v, k)] = h
                else:
                    spared.pop((v, k), None)
                continue
            spared.pop((v, k), None)
            if status in OPEN_STATUSES:
                opened[(v, k)] = (did, status, h)
            else:
                opened.pop((v, k), None)
        return Chunk(stored, acked, opened, spared)

    def surveyed(
        self, keys: Sequence[str], vendors: Sequence[str], since: str
    ) -> dict[str, tuple[str, str | None]]:
        """Keys surveyed by one of `vendors` since `since`, or planned to be: key → (vendor,
        when sent, None if not sent yet), the latest send. A planned survey (pending, in
        flight, or failed and retried by the next run) counts however long ago it was
        queued: it goes when its vendor is next delivered to, so a survey elsewhere now
        would come within min_days of it (and the diff does not withdraw it for that)."""
        if not keys or not vendors:
            return {}
        rows = self.conn.execute(  # the keys as JSON: one statement, see `suppressions`
            f"SELECT key, vendor, max(sent_at) FROM deliveries INDEXED BY deliveries_key "
            f"WHERE key IN (SELECT value FROM json_each(?)) "
            f"AND vendor IN ({','.join('?' * len(vendors))}) "
            "AND (status IN ('pending', 'in_flight', 'failed') "
            "OR status IN ('sent', 'unknown') AND coalesce(sent_at, updated_at) >= ?) "
            "GROUP BY key",
            (orjson.dumps(list(keys)).decode(), *vendors, since),
        )
        return {key: (vendor, when) for key, vendor, when in rows}

    def suppressions(
        self, channels: Collection[str], reach: Mapping[str, tuple[str | None, str | None]]
    ) -> dict[str, str]:
        """Keys unsubscribed at any vendor in one of `channels` (see `Store.suppressions`).
        None is looked for when the store holds no opt-out, which is checked once a
        transaction (the diff writes none; another process may between a first sync's pieces)."""
        if self._unsubscribes is None:
            # an end of the B-tree: a search, not a scan
            self._unsubscribes = bool(
                self.store.scalar("SELECT (SELECT max(rowid) FROM unsubscribes) IS NOT NULL")
            )
        return self.store.suppressions(channels, reach) if self._unsubscribes else {}

    def absent(self, vendor: str) -> list[tuple[str, Any, str]]:
        """(key, acknowledged digest, last attributes) of the vendor's contacts gone from
        the export."""
        return self.conn.execute(
            "SELECT vs.key, vs.hash, c.attributes FROM vendor_state vs JOIN contacts c "
            "ON c.key = vs.key WHERE vs.vendor = ? AND c.gone_at IS NOT NULL",
            (vendor,),
        ).fetchall()

    # --- writes -----------------------------------------------------------------------
    def define(self, vendor: str, definition: str) -> None:
        """Record the digest definition the vendor's hashes are made with from now on."""
        self.conn.execute(
            "INSERT INTO digest_definitions (vendor, definition, recorded_at, run_id) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (vendor) DO UPDATE SET "
            "definition = excluded.definition, recorded_at = excluded.recorded_at, "
            "run_id = excluded.run_id",
            (vendor, definition, self.ts, self.run_id),
        )

    def record_header(self, named: list[str], salted: list[str]) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO export_header (id, named, salted) VALUES (1, ?, ?)",
            (orjson.dumps(named).decode(), orjson.dumps(salted).decode()),
        )

    def rename(self, renames: Mapping[str, str]) -> int:
        """Rename columns (old name → new) in every contact's attributes at once, swaps
        included; how many contacts had one. Their fingerprints stay: nothing reads these
        columns but the analysts (`syncd.project.salted`)."""
        if any(orjson.dumps(n).decode() != f'"{n}"' for pair in renames.items() for n in pair):
            # a key stored escaped (`"`, `\`, control characters) is not what a JSON path
            # names (SQLite has no escapes in path labels): rebuild each object key by key,
            # three times slower
            sql = (
                "UPDATE contacts SET attributes = (SELECT json_group_object("
                "coalesce(r.value, e.key), e.value) FROM json_each(contacts.attributes) e "
                "LEFT JOIN json_each(?) r ON r.key = e.key) WHERE EXISTS (SELECT 1 FROM "
                "json_each(contacts.attributes) e WHERE e.key IN (SELECT key FROM json_each(?)))"
            )
            params = [orjson.dumps(renames).decode()] * 2
        else:  # every new key set from the old object, so a swap takes both values
            old = [f'$."{name}"' for name in renames]
            sets = ", ".join("?, attributes -> ?" for _ in old)
            sql = (
                f"UPDATE contacts SET attributes = json_set(json_remove(attributes, "
                f"{', '.join('?' * len(old))}), {sets}) WHERE "
                + " OR ".join("json_type(attributes, ?) IS NOT NULL" for _ in old)
            )
            pairs = [p for o, n in zip(old, renames.values(), strict=True) for p in (f'$."{n}"', o)]
            params = [*old, *pairs, *old]
        return int(self.conn.execute(sql, params).rowcount)

    def quarantine(self, line: int | None, key: str | None, vendor: str | None, why: str) -> None:
        self.conn.execute(
            "INSERT INTO quarantine (run_id, file, line, key, vendor, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.run_id, self.export, line, key, vendor, why, self.ts),
        )

    def ack(self, vendor: str, key: str, digest: Any) -> None:
        """The vendor is taken to have the contact as `digest` without a send."""
        self.conn.execute(
            "INSERT INTO vendor_state (vendor, key, hash, acked_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (vendor, key) DO UPDATE SET hash = excluded.hash, "
            "acked_at = excluded.acked_at",
            (vendor, key, digest, self.ts),
        )

    def baseline_queued(self, vendor: str, now: Callable[[str, str], Any]) -> int:
        """`--baseline`: the vendor has everyone already, as the export holds them, so its
        deliveries queued and never acknowledged (pending, failed, dead, unknown) are
        superseded instead of sent, and each of their contacts is acknowledged as its
        stored row is: `now(key, attributes)` is that row's digest for the vendor, None
        where the row cannot be sent to it (its acknowledgement is then left as it is).
        Not a queued delivery's digest: an old one may be of data the contact has left
        (a survey of data D2, its outcome unknown, of a contact surveyed for D and back at
        D), and acknowledging D2 would make a later change to D2 survey nobody. How many
        contacts were acknowledged.

        `in_flight` ones are left to the next delivery's resume (`syncd.push`): a request
        or a job may carry one still, and what became of it is the vendor's to tell (a
        polled job's outcome, with the vendor's id for the contact) or, for a trigger
        without a job, recorded `unknown`; an acknowledgement here would hide both."""
        # each contact once, with its newest queued delivery's id for the contact (the row
        # `max` picks); `deliveries_open`'s own `IN` term lets SQLite use it
        queued = self.conn.execute(
            "SELECT d.key, c.attributes, d.vendor_ref, max(d.id) FROM deliveries d "
            f"INDEXED BY deliveries_open JOIN contacts c ON c.key = d.key "
            f"WHERE d.vendor = ? AND d.status IN {QUEUED!r} "
            f"AND d.status IN {OPEN_STATUSES!r} GROUP BY d.key",
            (vendor,),
        )
        acks = (
            (vendor, self.ts, key, digest, ref)
            for key, attributes, ref, _ in queued
            if (digest := now(key, attributes)) is not None
        )
        acked = self.conn.executemany(  # one change a contact, summed
            "INSERT INTO vendor_state (vendor, key, hash, ref, acked_at) "
            "VALUES (?1, ?3, ?4, ?5, ?2) ON CONFLICT (vendor, key) DO UPDATE SET "
            "hash = excluded.hash, ref = coalesce(excluded.ref, vendor_state.ref), "
            "acked_at = excluded.acked_at",
            acks,
        ).rowcount
        self.conn.execute(
            "UPDATE deliveries SET status = 'superseded', reason = ?1, job = NULL, "
            f"updated_at = ?2 WHERE vendor = ?3 AND status IN {QUEUED!r} "
            f"AND status IN {OPEN_STATUSES!r}",
            (BASELINED, self.ts, vendor),
        )
        return int(acked)

    def baseline_unchanged(self, vendor: str, now: Callable[[str, str], Any]) -> int:
        """`--baseline`, after the rows: each live contact with no open delivery to the
        vendor whose acknowledgement is not of the export's data is acknowledged as its
        stored row is (`now`, as `baseline_queued`). The diff met the rows that changed and
        acknowledged them; the others are the export's row already. How many.

        Which acknowledgements may be of other data is the store's to say, without a digest
        of every contact: a row the diff met was acknowledged as it is, or a delivery was
        recorded with its digest (`syncd.decide`), and only a delivery's becoming `sent`
        acknowledges its data since. So only a contact whose newest delivery to the vendor
        was skipped (unsubscribed, surveyed lately) or superseded (withdrawn, a queued one
        of `baseline_queued`) may be stale, and only those are digested: found from the
        vendor's held deliveries (`deliveries_held`), however many contacts the store has."""
        maybe = self.conn.execute(
            "SELECT c.key, c.attributes, vs.hash FROM (SELECT DISTINCT key FROM deliveries "
            f"INDEXED BY deliveries_held WHERE vendor = ?1 AND status IN {HELD!r}) h "
            "JOIN contacts c ON c.key = h.key "
            "LEFT JOIN vendor_state vs ON vs.vendor = ?1 AND vs.key = h.key "
            "WHERE c.gone_at IS NULL AND (SELECT status FROM deliveries INDEXED BY "
            "deliveries_key WHERE key = h.key AND vendor = ?1 ORDER BY id DESC LIMIT 1) "
            f"IN {HELD!r} AND NOT EXISTS (SELECT 1 FROM deliveries INDEXED BY deliveries_key "
            # an older one in flight is left to its resume, as `baseline_queued` leaves it
            f"WHERE key = h.key AND vendor = ?1 AND status IN {OPEN_STATUSES!r})",
            (vendor,),
        )
        acks = (
            (vendor, key, digest, self.ts)
            for key, attributes, acked in maybe
            if (digest := now(key, attributes)) is not None and digest != acked
        )
        return int(
            self.conn.executemany(
                "INSERT INTO vendor_state (vendor, key, hash, acked_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (vendor, key) DO UPDATE SET hash = excluded.hash, "
                "acked_at = excluded.acked_at",
                acks,
            ).rowcount
        )

    def rehash(self, vendor: str, key: str, digest: Any) -> None:
        """Open deliveries of a re-baselined contact are acknowledged as its new digest."""
        self.conn.execute(
            f"UPDATE deliveries SET hash = ? WHERE vendor = ? AND key = ? "
            f"AND status IN {OPEN_STATUSES!r}",
            (digest, vendor, key),
        )

    def replace(self, did: int, kind: str, digest: Any, payload: str) -> None:
        """A newer change replaces a delivery not yet sent: one send, with the latest data."""
        self.conn.execute(
            "UPDATE deliveries SET run_id = ?, kind = ?, status = 'pending', hash = ?, "
            "payload = ?, attempts = 0, reason = NULL, updated_at = ? WHERE id = ?",
            (self.run_id, kind, digest, payload, self.ts, did),
        )

    def withdraw(self, did: int) -> None:
        """An open pending delivery whose data the vendor has already."""
        self.conn.execute(
            "UPDATE deliveries SET status = 'superseded', reason = ?, updated_at = ? WHERE id = ?",
            ("the vendor already has this data", self.ts, did),
        )

    def deliveries(self, rows: list[tuple[str, str, str, Any, str, str, str | None]]) -> None:
        """New deliveries (vendor, key, kind, digest, payload, status, reason), written in
        key order (each B-tree page is visited once, not once per row)."""
        assert self.writer is not None
        rows.sort(key=lambda r: r[1])
        self.writer.submit(
            "INSERT INTO deliveries (run_id, vendor, key, kind, hash, payload, status, reason, "
            "created_at, updated_at) SELECT ?2, value->>0, value->>1, value->>2, value->>3, "
            "value->>4, value->>5, value->>6, ?3, ?3 FROM json_each(?1)",
            rows,
            self.run_id,
            self.ts,
        )

    def contacts(
        self,
        inserts: list[tuple[int, str, str, str | None, str | None, int]],
        updates: list[tuple[int, str, int]],
        reached: list[tuple[int, str | None, str | None]],
    ) -> None:
        """New contacts (rowid, key, attributes, email, phone, rhash), changed ones (rowid,
        attributes, rhash; revived if gone) and new reach (rowid, email, phone)."""
        assert self.writer is not None
        self.writer.submit(
            "INSERT INTO contacts (rowid, key, attributes, email, phone, rhash, first_seen, "
            "updated_at) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
            "value->>5, ?2, ?2 FROM json_each(?1)",
            inserts,
            self.ts,
        )
        self.writer.submit(
            "UPDATE contacts SET attributes = u.value->>1, rhash = u.value->>2, "
            "updated_at = ?2, gone_at = NULL FROM json_each(?1) AS u "
            "WHERE contacts.rowid = u.value->>0",
            sorted(updates),
            self.ts,
        )
        self.writer.submit(
            "UPDATE contacts SET email = u.value->>1, phone = u.value->>2 "
            "FROM json_each(?1) AS u WHERE contacts.rowid = u.value->>0",
            reached,
        )

    def mark_gone(self, rowids: list[int], rhashes: list[int]) -> int:
        """Mark these contacts gone, each checked against its fingerprint; how many were."""
        return int(
            self.conn.executemany(
                "UPDATE contacts SET gone_at = ?, rhash = -rhash - 1 "
                "WHERE rowid = ? AND rhash = ? AND gone_at IS NULL",
                zip(repeat(self.ts), rowids, rhashes),
            ).rowcount
        )

    def withdraw_gone(self, rowids: list[int]) -> int:
        """The pending deliveries of these contacts, just found gone, are superseded:
        nothing is sent for a contact the CRM no longer lists (should it come back, it is
        compared with what its vendors acknowledged, as any row is). How many."""
        return int(
            self.conn.execute(
                "UPDATE deliveries SET status = 'superseded', reason = 'gone from the export', "
                "updated_at = ?1 WHERE status = 'pending' AND id IN (SELECT d.id FROM contacts c "
                "JOIN deliveries d INDEXED BY deliveries_key ON d.key = c.key "
                "WHERE c.rowid IN (SELECT value FROM json_each(?2)) AND c.gone_at = ?1 "
                "AND d.status = 'pending')",
                (self.ts, orjson.dumps(rowids).decode()),
            ).rowcount
        )


# the cache's blobs go through SQLite's blob I/O a megabyte at a time: no whole copy of an
# array ever sits in SQLite's or Python's memory beside the array itself
_BLOB_VALUES = 1 << 17


def _read_blob(conn: sqlite3.Connection, column: str, row: int) -> np.ndarray:
    with conn.blobopen("fingerprint_cache", column, row, readonly=True) as blob:
        values = np.empty(len(blob) // 8, dtype="<i8")
        view = values.data.cast("B")
        for start in range(0, len(view), 8 * _BLOB_VALUES):
            view[start : start + 8 * _BLOB_VALUES] = blob.read(8 * _BLOB_VALUES)
    return values


class Writer:
    """Bulk writes on a second thread of the same connection (and so the same
    transaction). Each is one statement over a JSON array (`json_each`): SQLite does the
    page work of a whole chunk without the GIL, while the diff reads on. One at a time per
    row (`executemany`) would need the GIL back after every row.

    Leaving the `with` block waits for the writes; a write that failed is raised then, or
    at the next `submit`. Leaving it on an exception drops the writes not yet begun (the
    caller rolls the transaction back) and lets that exception through.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # a chunk's writes may wait while the next chunk is read, no more
        self.jobs: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.dropped = False
        self.thread = threading.Thread(target=self._run, name="syncd-diff-writer", daemon=True)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None and not self.dropped:
                    self.conn.execute(*job)
            except BaseException as exc:  # raised in the diff's thread
                self.error = exc
            finally:
                self.jobs.task_done()

    def wait(self) -> None:
        """Until the writes submitted are done: before reading a table whole."""
        self.jobs.join()

    def submit(self, sql: str, rows: Sequence[Sequence[Any]], *params: Any) -> None:
        """Run `sql` with `rows` as its first parameter, a JSON array of arrays, and
        `params` as the next ones."""
        self.check()
        if rows:
            self.jobs.put((sql, (orjson.dumps(rows).decode(), *params)))

    def check(self) -> None:
        """Raise the error of a write that failed, if one did."""
        if self.error is not None:
            raise self.error

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.dropped = kind is not None
        self.jobs.put(None)
        self.thread.join()
        if kind is None:
            self.check()
