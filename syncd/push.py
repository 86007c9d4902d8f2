"""The delivery loop: pending deliveries → batches → vendor → recorded outcomes.

A delivery is `in_flight` (attempt counted) before its request goes; an async job id is
recorded the moment the connector learns it; the outcome is recorded after. So a crash at
any point leaves the ledger saying what may have happened, and `resume` settles it:
a recorded job is polled, an upsert without one is re-sent, a trigger without one becomes
`unknown` (never re-sent on our own).
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
    FatalError,
    OutcomeUnknownError,
    QuotaError,
    RetriableError,
    StopRequested,
    VendorDownError,
    VendorError,
)
from syncd.state import Store
from syncd.vendors.base import Connector, Contact, Result, Status

log = structlog.get_logger("syncd.push")

Progress = Callable[[str, int], None]
# a vendor that refuses this many single contacts in a row with the same reason refuses
# everything (a closed campaign, a bad list id): stop instead of trying every contact
SAME_REFUSALS = 5


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
        for job, group in jobs.items():
            ids = {r["key"]: r["id"] for r in group}
            contacts = [_contact(r) for r in group]
            if job is not None:
                try:
                    results = self.connector.resume(job, contacts)
                except RetriableError as exc:
                    results = [Result(c.key, Status.PENDING, exc.reason) for c in contacts]
                except FatalError as exc:
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
        rows = self.store.pending(self.vendor)
        if not rows:
            return
        ids = {r["key"]: r["id"] for r in rows}
        contacts = [_contact(r) for r in rows]
        sent = 0
        for batch in self.connector.batches(contacts):
            if self.stop.is_set():
                log.info("stopping: leaving the rest pending", vendor=self.vendor)
                break
            if not self._send(batch, ids):
                break
            sent += len(batch)
            if self.progress:
                self.progress(self.vendor, sent)

    def _send(self, batch: Sequence[Contact], ids: dict[str, int]) -> bool:
        """Send one batch (splitting it if the vendor refuses it whole); False = stop vendor."""
        batch_ids = {c.key: ids[c.key] for c in batch}
        try:
            self.connector.prepare()
        except VendorError as exc:
            self._stopped(exc)  # nothing about these contacts went: they stay pending
            return False
        self.store.mark_in_flight(batch_ids.values(), self.now())

        jobs: list[str] = []

        def on_job(job: str) -> None:
            self.store.record_job(batch_ids.values(), job, self.now())
            jobs.append(job)
            crashpoint("job_recorded")

        try:
            results = self.connector.push(batch, on_job)
        except StopRequested:
            if not jobs:  # nothing reached the vendor that a restart could not redo
                self._settle(
                    batch_ids, [Result(c.key, Status.PENDING, None) for c in batch], count=False
                )
            raise  # with a job recorded, the batch stays in flight and is resumed on restart
        except (AuthError, QuotaError) as exc:
            self._settle(batch_ids, [Result(c.key, Status.PENDING, exc.reason) for c in batch])
            self._stopped(exc)
            return False
        except RetriableError as exc:
            self._settle(batch_ids, [Result(c.key, Status.PENDING, exc.reason) for c in batch])
            if isinstance(exc, VendorDownError) or self.connector.http.breaker.open:
                self._stopped(exc)
                return False
            return True
        except OutcomeUnknownError as exc:
            status = Status.UNKNOWN if self.connector.kind == "trigger" else Status.PENDING
            self._settle(batch_ids, [Result(c.key, status, exc.reason) for c in batch])
            return not self.connector.http.breaker.open
        except FatalError as exc:
            if len(batch) == 1:
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
            self._settle(
                batch_ids, [Result(c.key, Status.PENDING, None) for c in batch], count=False
            )
            half = len(batch) // 2
            return self._send(batch[:half], ids) and self._send(batch[half:], ids)
        crashpoint("before_ack_recorded")
        self._refusals = ("", 0)
        self._settle(batch_ids, results)
        return True

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
            outcomes.append((did, key, result.status.value, result.reason, result.ref))
            if count:
                self.out.counts[result.status.value] += 1
        self.store.settle(self.vendor, outcomes, self.now(), self.max_attempts)

    def _stopped(self, exc: Exception) -> None:
        self.out.stopped = str(exc)
        log.error("vendor stopped for this run", vendor=self.vendor, error=str(exc))
