"""The delivery loop: pending deliveries → batches → vendor → recorded outcomes.

A delivery is `in_flight` (attempt counted) only while a request carrying it may be out:
it is marked by the HTTP client's write hook right before the first byte goes (after any
pacing or backoff sleep), and put back to `pending` when an attempt ends in a way that
proves the vendor did not act. An async job id is recorded the moment the connector
learns it; the outcome is recorded after. So a crash at any point leaves the ledger saying
what may have happened, and `resume` settles it: a recorded job is polled, an upsert
without one is re-sent (unless a newer delivery of the same contact supersedes it), a
trigger without one becomes `unknown` (never re-sent on our own).

Only the newest open delivery of a contact is ever sent to a vendor: older pending or
in-flight ones (left by a crash, then a newer export) are `superseded`, so a stale payload
is never sent after a fresh one. A trigger whose outcome is unknown stops its vendor for
the run (a vendor answering like that would make every later contact unknown too); a
configuration error (a 3xx, 404, 405) stops it with every contact left pending.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from threading import Event

import structlog

from syncd.crashpoints import crashpoint
from syncd.errors import (
    AuthError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    QuotaError,
    RetriableError,
    StopRequested,
    VendorDownError,
    VendorError,
)
from syncd.log import scrub
from syncd.state import Store
from syncd.vendors.base import Connector, Contact, Result, Status

log = structlog.get_logger("syncd.push")

Progress = Callable[[str, int], None]
# a vendor that refuses this many single contacts in a row with the same reason refuses
# everything (a closed campaign, a bad list id): stop instead of trying every contact
SAME_REFUSALS = 5
# pending deliveries read from the store at a time, at least: rounded up to whole batches
PAGE_ROWS = 5_000


@dataclass
class Delivered:
    """What one vendor's delivery loop did."""

    counts: Counter[str] = field(default_factory=Counter)
    stopped: str | None = None  # why the vendor was stopped for the run


def _contact(row: sqlite3.Row) -> Contact:
    payload = json.loads(row["payload"])
    return Contact(
        key=row["key"], fields=payload["fields"], metadata=payload["metadata"], ref=row["ref"]
    )


class Deliverer:
    """Delivers one vendor's pending deliveries."""

    def __init__(
        self,
        store: Store,
        connector: Connector,
        now: Callable[[], datetime],
        *,
        max_attempts: int,
        stop: Event | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.connector = connector
        self.vendor = connector.name
        self.now = now
        self.max_attempts = max_attempts
        self.stop = stop or Event()
        self.progress = progress
        self.out = Delivered()
        self._refusals: tuple[str, int] = ("", 0)  # (reason, how many singles in a row)

    def run(self) -> Delivered:
        try:
            self.resume()
            if self.out.stopped is None:
                self.deliver()
        except VendorDownError as exc:
            self._stopped(exc)
        return self.out

    # --- after a crash ---------------------------------------------------------------
    def resume(self) -> None:
        rows = self.store.in_flight(self.vendor)
        if not rows:
            return
        log.warning("resuming in-flight deliveries", vendor=self.vendor, rows=len(rows))
        jobs: dict[str | None, list[sqlite3.Row]] = {}
        for row in rows:
            jobs.setdefault(row["job"], []).append(row)
        newer = self.store.newer_open(self.vendor, [r["id"] for r in rows])
        for job, group in jobs.items():
            if job is None and self.connector.kind == "upsert":
                stale = [r for r in group if r["id"] in newer]
                self._supersede(stale, "in flight when syncd stopped; a newer delivery replaces it")
                group = [r for r in group if r["id"] not in newer]
                if not group:
                    continue
            ids = {r["key"]: r["id"] for r in group}
            contacts = [_contact(r) for r in group]
            if job is not None:
                try:
                    results = self.connector.resume(job, contacts)
                except (RetriableError, FatalError) as exc:
                    results = [Result(c.key, Status.PENDING, exc.reason) for c in contacts]
            elif self.connector.kind == "trigger":
                results = [
                    Result(
                        c.key,
                        Status.UNKNOWN,
                        "in flight when syncd stopped: the vendor may have it; "
                        "`syncd retry --unknown` sends it again",
                    )
                    for c in contacts
                ]
            else:
                results = [
                    Result(c.key, Status.PENDING, "in flight when syncd stopped; re-sent")
                    for c in contacts
                ]
            self._settle(ids, results)

    # --- the normal path -------------------------------------------------------------
    def deliver(self) -> None:
        """Send the pending deliveries a page at a time, in id order: what is in memory is
        one page, whatever the backlog. A page is a whole number of batches of at least
        `PAGE_ROWS` rows; the id cursor moves past each page, so nothing it settled (or
        left pending) is read again this run. A delivery that a newer pending one of the
        same contact replaces is superseded when its page is read, wherever that newer one
        is: it has a higher id, so it is sent with this page or a later one, and a page
        boundary between a contact's deliveries changes nothing."""
        size = self.connector.batch_size
        page = size * -(-PAGE_ROWS // size)
        after = sent = 0
        while rows := self.store.pending(self.vendor, after, page):
            after = rows[-1]["id"]
            self._supersede([r for r in rows if r["stale"]], "a newer delivery replaces it")
            fresh = [r for r in rows if not r["stale"]]
            ids = {r["key"]: r["id"] for r in fresh}
            for batch in self.connector.batches([_contact(r) for r in fresh]):
                if self.stop.is_set():
                    log.info("stopping: leaving the rest pending", vendor=self.vendor)
                    return
                if not self._send(batch, ids):
                    return
                sent += len(batch)
                if self.progress:
                    self.progress(self.vendor, sent)
            if len(rows) < page:
                return

    def _send(self, batch: Sequence[Contact], ids: dict[str, int]) -> bool:
        """Send one batch (splitting it if the vendor refuses it whole); False = stop vendor."""
        batch_ids = {c.key: ids[c.key] for c in batch}
        try:
            self.connector.prepare()
        except VendorError as exc:
            self._stopped(exc)  # nothing about these contacts went: they stay pending
            return False
        flight = _Flight(self, batch_ids)
        jobs: list[str] = []

        def on_job(job: str) -> None:
            self.store.record_job(batch_ids.values(), job, self.now())
            jobs.append(job)
            crashpoint("job_recorded")

        http = self.connector.http
        http.on_write, http.on_unsent = flight.write, flight.unsent
        try:
            results = self.connector.push(batch, on_job)
        except StopRequested:
            if not jobs:  # nothing reached the vendor that a restart could not redo
                flight.pending(None)
            raise  # with a job recorded, the batch stays in flight and is resumed on restart
        except (AuthError, QuotaError, EndpointError) as exc:
            flight.pending(exc.reason)
            self._stopped(exc)
            return False
        except RetriableError as exc:
            flight.pending(exc.reason)
            if isinstance(exc, VendorDownError) or http.breaker.open:
                self._stopped(exc)
                return False
            return True
        except OutcomeUnknownError as exc:
            if self.connector.kind == "upsert" or not flight.marked:
                flight.pending(exc.reason)  # re-sending an upsert is harmless
                return not http.breaker.open
            self._settle(batch_ids, [Result(c.key, Status.UNKNOWN, exc.reason) for c in batch])
            self._stop_unknown(len(batch), exc.reason)
            return False
        except FatalError as exc:
            if len(batch) == 1:
                flight.write()  # a refusal counts as an attempt, sent or not
                self._settle(batch_ids, [Result(batch[0].key, Status.FAILED, exc.reason)])
                reason, n = self._refusals
                self._refusals = (exc.reason, n + 1 if reason == exc.reason else 1)
                if self._refusals[1] >= SAME_REFUSALS:
                    self._stopped(
                        FatalError(
                            f"{SAME_REFUSALS} contacts in a row refused with the same reason, "
                            f"so the vendor refuses everything: {exc.reason}",
                            vendor=self.vendor,
                        )
                    )
                    return False
                return True
            # refused whole: split to find the contacts it objects to
            log.info(
                "batch refused, splitting", vendor=self.vendor, size=len(batch), error=exc.reason
            )
            flight.pending(None, count=False)
            half = len(batch) // 2
            return self._send(batch[:half], ids) and self._send(batch[half:], ids)
        finally:
            http.on_write = http.on_unsent = None
        crashpoint("before_ack_recorded")
        self._refusals = ("", 0)
        flight.write()  # a connector that answered without a request still spent an attempt
        self._settle(batch_ids, results)
        unknown = [r for r in results if r.status is Status.UNKNOWN]
        if unknown and self.connector.kind == "trigger":
            self._stop_unknown(len(unknown), unknown[0].reason or "no acknowledgement")
            return False
        return True

    def _stop_unknown(self, n: int, reason: str) -> None:
        """A trigger vendor that left contacts unknown is stopped: it would do it again."""
        self._stopped(
            OutcomeUnknownError(
                f"stopped after an answer that leaves {n} contact(s) unknown ({reason}); "
                "the rest stay pending for the next run",
                vendor=self.vendor,
            )
        )

    def _supersede(self, rows: Sequence[sqlite3.Row], reason: str) -> None:
        if rows:
            self.store.supersede([r["id"] for r in rows], reason, self.now())
            self.out.counts["superseded"] += len(rows)

    def _settle(
        self, ids: dict[str, int], results: Sequence[Result], *, count: bool = True
    ) -> None:
        by_key = {r.key: r for r in results}
        outcomes = []
        for key, did in ids.items():
            result = by_key.get(key)
            if result is None:
                log.error("connector returned no result for a contact", vendor=self.vendor, key=key)
                result = Result(key, Status.PENDING, "no answer for this contact; retried")
            reason = scrub(result.reason) if result.reason else None  # a vendor's own words
            outcomes.append((did, key, result.status.value, reason, result.ref))
            if count:
                self.out.counts[result.status.value] += 1
        self.store.settle(self.vendor, outcomes, self.now(), self.max_attempts)

    def _stopped(self, exc: Exception) -> None:
        self.out.stopped = str(exc)
        log.error("vendor stopped for this run", vendor=self.vendor, error=str(exc))


class _Flight:
    """Whether one batch is `in_flight`: marked by the HTTP client's write hook, unmarked
    when an attempt proves the vendor did not act."""

    def __init__(self, deliverer: Deliverer, ids: dict[str, int]) -> None:
        self.d = deliverer
        self.ids = ids
        self.marked = False

    def write(self) -> None:
        if not self.marked:
            self.d.store.mark_in_flight(self.ids.values(), self.d.now())
            self.marked = True

    def unsent(self) -> None:
        if self.marked:
            self.pending(None, count=False)

    def pending(self, reason: str | None, *, count: bool = True) -> None:
        """Back to pending, the attempt unspent (nothing is written if never marked)."""
        if self.marked:
            results = [Result(key, Status.PENDING, reason) for key in self.ids]
            self.d._settle(self.ids, results, count=count)
            self.marked = False
        elif count:
            self.d.out.counts["pending"] += len(self.ids)
