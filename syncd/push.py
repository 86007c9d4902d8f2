"""The delivery loop: pending deliveries → batches → vendor → recorded outcomes.

A delivery is `in_flight` (attempt counted) only while a request carrying it may be out:
it is marked by the HTTP client's write hook right before the first byte goes (after any
pacing or backoff sleep), and put back to `pending` when an attempt ends in a way that
proves the vendor did not act. An async job id is recorded the moment the connector
learns it; the outcome is recorded after. So a crash at any point leaves the ledger saying
what may have happened, and `resume` settles it: a recorded job is polled (those of a
connector with a window above 1 together, in rounds, before anything new goes), an upsert
without one is re-sent (unless a newer delivery of the same contact supersedes it), a
trigger without one becomes `unknown` (never re-sent on our own).

Only the newest open delivery of a contact is ever sent to a vendor: older pending or
in-flight ones (left by a crash, then a newer export) are `superseded`, so a stale payload
is never sent after a fresh one. A trigger whose outcome is unknown stops its vendor for
the run (a vendor answering like that would make every later contact unknown too); a
configuration error (a 3xx, 404, 405) stops it with every contact left pending.

A job still open when its connector stops polling it (a Result IN_FLIGHT: the vendor may
apply it later, after newer data of its contacts) keeps its batch in flight with the job
recorded, as a stop leaves it, and no newer delivery of those contacts is sent this run:
the next run's `resume` polls the job first.

A connector whose batches are async jobs that may overlap (`Connector.start`, `poll`) has
up to `window()` of them open at once: the next batch goes while earlier jobs run, every
open job is polled in one round (one sleep between rounds, as long as the shortest
`Job.every`), and each is settled when it ends. An open job's batch is in flight with its
job recorded, so when the loop stops early (a stop request, the vendor stopped, an
exception) the jobs still open stay so, and the next run's `resume` polls them. An ended
job's outcomes are written behind the next batch's request, on a second thread
(`_Behind`); any other use of the store waits for them.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from threading import Event, Thread

import orjson
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
from syncd.vendors.base import Connector, Contact, Job, Result, Status

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
    payload = orjson.loads(row["payload"])  # a quarter of the json module's time
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
        hold: Collection[str] | None = None,
    ) -> None:
        self._store = store
        self._behind = _Behind(store)
        self.connector = connector
        self.vendor = connector.name
        self.now = now
        self.max_attempts = max_attempts
        self.stop = stop or Event()
        self.progress = progress
        # the unsubscribe channels that hold this vendor's pending deliveries back ([suppression]):
        # an opt-out pulled after a delivery was queued stops it here, as the diff would have
        self.hold = hold
        self.out = Delivered()
        self._refusals: tuple[str, int] = ("", 0)  # (reason, how many singles in a row)
        self._open: list[_Open] = []  # started async jobs not yet ended, oldest first
        self._round_at = -math.inf  # the connector clock's time of the next poll round
        # contacts whose job was left open (a Result IN_FLIGHT: the vendor may still apply
        # it), with why: no newer delivery of theirs is sent this run
        self._held: dict[str, str] = {}

    @property
    def store(self) -> Store:
        """The store, once the settles written behind a request are done (`_Behind`)."""
        self._behind.wait()
        return self._store

    def run(self) -> Delivered:
        try:
            with self._store.checkpoints_aside():  # copying the WAL overlaps the vendor's time
                try:
                    self.resume()
                    if self.out.stopped is None:
                        # what resume put back to pending, deliver reads again and counts
                        self.out.counts.pop("pending", None)
                        self.deliver()
                finally:
                    self._behind.wait()
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
            if job is not None and self.connector.window() > 1:
                flight = _Flight(self, ids)
                flight.marked = True  # in flight since the crash
                self._open.append(_Open(self.connector.reopen(job, contacts), flight))
                continue
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
        self._drain()  # the reopened jobs, in poll rounds, all ended before anything new goes

    # --- the normal path -------------------------------------------------------------
    def deliver(self) -> None:
        """Send the pending deliveries a page at a time, in id order: what is in memory is
        one page, whatever the backlog. A page is a whole number of batches of at least
        `PAGE_ROWS` rows; the id cursor moves past each page, so nothing it settled (or
        left pending) is read again this run. A delivery that a newer one of the same
        contact replaces (`Store.pending`'s `stale`) is superseded when its page is read,
        wherever that newer one is: it has a higher id, so it is sent with this page or a
        later one, or went already, and a page boundary between a contact's deliveries
        changes nothing. One queued before its contact's opt-out was pulled is held back
        (`hold`, `Store.held_back`)."""
        size = self.connector.batch_size
        page = size * -(-PAGE_ROWS // size)
        after = sent = 0
        opted_out = self.store.last_unsubscribe() if self.hold is not None else None
        while rows := self._page(after, page):
            after = rows[-1]["id"]
            self._supersede([r for r in rows if r["stale"]], "a newer delivery replaces it")
            fresh = [r for r in rows if not r["stale"]]
            # queued no later than the last opt-out was pulled (the same second counts too)
            queued_before = [r for r in fresh if opted_out and r["created_at"] <= opted_out]
            if self.hold is not None and queued_before:
                held = self.store.held_back(self.vendor, queued_before, self.hold, self.now())
                self.out.counts["skipped"] += sum(r["key"] in held for r in queued_before)
                fresh = [r for r in fresh if r["key"] not in held]
            if waiting := [r for r in fresh if r["key"] in self._held]:
                self._settle(
                    {r["key"]: r["id"] for r in waiting},
                    [
                        Result(r["key"], Status.PENDING, f"held back: {self._held[r['key']]}")
                        for r in waiting
                    ],
                )
                fresh = [r for r in fresh if r["key"] not in self._held]
            ids = {r["key"]: r["id"] for r in fresh}
            contacts = [_contact(r) for r in fresh]
            if settled := self.connector.unsendable(contacts):
                self._settle({r.key: ids[r.key] for r in settled}, settled)
                done = {r.key for r in settled}
                contacts = [c for c in contacts if c.key not in done]
            for batch in self.connector.batches(contacts):
                if self.stop.is_set():
                    log.info("stopping: leaving the rest pending", vendor=self.vendor)
                    self._leave()
                    return
                if not self._send(batch, ids):
                    self._leave()
                    return
                sent += len(batch)
                if self.progress:
                    self.progress(self.vendor, sent)
            if len(rows) < page:
                break
        self._drain()  # the last jobs

    def _page(self, after: int, size: int) -> list[sqlite3.Row]:
        """The next page of pending deliveries, read with the settles queued behind a
        request still queued (the next request takes them): they are of rows at or below
        `after` and never make a row `skipped`, so nothing this reads depends on them."""
        self._behind.join()
        return self._store.pending(self.vendor, after, size)

    def _send(self, batch: Sequence[Contact], ids: dict[str, int]) -> bool:
        """Send one batch (splitting it if the vendor refuses it whole); False = stop vendor.

        The parts of a refused batch go in order from a stack of their own, not by
        recursion: a batch of a thousand peeled a part at a time stays one frame deep. The
        parts its words quote go first (`_quoted`); if the vendor then took every one of
        them (nothing failed), its words were no guide to what it objects to, and the rest
        is halved from then on, so words that name a contact it takes (the body's first
        row, say) cost about two requests a halving, not one request a contact."""
        # (part, split it by the words it is refused with?, the failed count before the
        # quoted part went: whether to, decided once that part is done)
        todo: list[tuple[Sequence[Contact], bool, int | None]] = [(batch, True, None)]
        while todo:
            part, guess, failed = todo.pop()
            if failed is not None:
                guess = self.out.counts["failed"] > failed
            refused = self._attempt(part, ids)
            if refused is True:
                continue
            if refused is False:
                return False
            quoted = _quoted(part, refused) if guess else None
            if quoted is not None:
                first, rest = quoted
                todo.append((rest, True, self.out.counts["failed"]))
            else:
                first, rest = _halves(part)
                todo.append((rest, guess, None))
            todo.append((first, guess, None))
        return True

    def _attempt(self, batch: Sequence[Contact], ids: dict[str, int]) -> bool | str:
        """Send one batch: True = go on, False = stop vendor, else the words the vendor
        refused it whole with (to split it by)."""
        batch_ids = {c.key: ids[c.key] for c in batch}
        while len(self._open) >= self.connector.window():  # wait for room in the window
            if self.stop.is_set() or not self._round(wait=True):
                return False
        try:
            self.connector.prepare()
        except VendorError as exc:
            self._stopped(exc)  # nothing about these contacts went: they stay pending
            return False
        flight = _Flight(self, batch_ids)
        jobs: list[str] = []

        def on_job(job: str, refused: Sequence[Result] = ()) -> None:
            if refused:  # first: the job's poll must never answer for them (see `OnJob`)
                done = {r.key for r in refused}
                self._settle({k: i for k, i in flight.ids.items() if k in done}, refused)
                flight.ids = {k: i for k, i in flight.ids.items() if k not in done}
            self.store.record_job(flight.ids.values(), job, self.now())
            jobs.append(job)
            crashpoint("job_recorded")

        http = self.connector.http
        http.on_write, http.on_unsent = flight.write, flight.unsent
        try:
            started = self.connector.start(batch, on_job)
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
            # refused whole: split to find the contacts it objects to (below, once this
            # batch's hooks are off: the halves may wait for room, polling open jobs)
            log.info(
                "batch refused, splitting", vendor=self.vendor, size=len(batch), error=exc.reason
            )
            flight.pending(None, count=False)
            started, reason = None, exc.reason
        finally:
            http.on_write = http.on_unsent = None
        if started is None:
            return reason
        if isinstance(started, Job):
            self._refusals = ("", 0)
            flight.write()
            if not self._open:  # the only job open: polled at once, as `push` would
                self._round_at = -math.inf
            self._open.append(_Open(started, flight))
            return self._round(wait=False)  # poll now if a round is due
        crashpoint("before_ack_recorded")
        return self._acknowledged(flight, started)

    def _acknowledged(
        self, flight: _Flight, results: Sequence[Result], *, behind: bool = False
    ) -> bool:
        """Record what the vendor answered for one batch (or job); False = stop vendor.
        `behind`: an ended job's, written behind the next batch's request (`_Behind`)."""
        self._refusals = ("", 0)
        flight.write()  # a connector that answered without a request still spent an attempt
        self._settle(flight.ids, results, behind=behind)
        unknown = [r for r in results if r.status is Status.UNKNOWN]
        if unknown and self.connector.kind == "trigger":
            self._stop_unknown(len(unknown), unknown[0].reason or "no acknowledgement")
            return False
        return True

    # --- open async jobs -------------------------------------------------------------
    def _round(self, *, wait: bool) -> bool:
        """Poll every open job once, settling those that ended: when the next round is due,
        or (`wait`) after sleeping until it is. False = the vendor is stopped; the jobs
        still open stay in flight with their job recorded."""
        clock = self.connector.clock
        if not self._open:
            return True
        delay = self._round_at - clock.monotonic()
        if delay > 0:
            if not wait:
                return True
            clock.sleep(delay)
        self._round_at = clock.monotonic() + min(o.job.every for o in self._open)
        for job in list(self._open):
            ended = self._poll(job)
            if ended is False:
                return False
            if isinstance(ended, list):
                self._open.remove(job)
                crashpoint("before_ack_recorded")
                if not self._acknowledged(job.flight, ended, behind=True):
                    return False
        return True

    def _drain(self) -> None:
        """Poll the open jobs in rounds to their end, unless the vendor is stopped or a stop
        is requested (then those still open stay in flight, recorded, for `resume`)."""
        while self._open:
            if self.stop.is_set() or not self._round(wait=True):
                self._leave()
                return

    def _poll(self, job: _Open) -> list[Result] | bool | None:
        """One poll of an open job: its results once it ended (those it knew at once are
        settled already), None while it runs, True when a failed poll put its batch back
        to pending, False when that stops the vendor."""
        http = self.connector.http
        try:
            results = self.connector.poll(job.job)
        except StopRequested:
            raise  # the job is recorded: its batch stays in flight, resumed on restart
        except (AuthError, QuotaError, EndpointError) as exc:
            self._drop(job, exc.reason)
            self._stopped(exc)
            return False
        except (RetriableError, FatalError) as exc:
            # no answer about the job: its batch goes again (an upsert: harmless)
            self._drop(job, exc.reason)
            if isinstance(exc, VendorDownError) or http.breaker.open:
                self._stopped(exc)
                return False
            return True
        except OutcomeUnknownError as exc:
            self._open.remove(job)
            if self.connector.kind == "upsert":
                job.flight.pending(exc.reason)
                if http.breaker.open:
                    self._stopped(exc)
                    return False
                return True
            self._settle(
                job.flight.ids, [Result(k, Status.UNKNOWN, exc.reason) for k in job.flight.ids]
            )
            self._stop_unknown(len(job.flight.ids), exc.reason)
            return False
        return results

    def _drop(self, job: _Open, reason: str) -> None:
        self._open.remove(job)
        job.flight.pending(reason)

    def _leave(self) -> None:
        """The loop stops with jobs open: they stay in flight, recorded, for `resume`."""
        if self._open:
            log.warning(
                "leaving open jobs in flight: the next run polls them",
                vendor=self.vendor,
                jobs=len(self._open),
                rows=sum(len(o.flight.ids) for o in self._open),
            )
            self._open.clear()

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
        self,
        ids: dict[str, int],
        results: Sequence[Result],
        *,
        count: bool = True,
        behind: bool = False,
    ) -> None:
        by_key = {r.key: r for r in results}
        outcomes: list[Outcome] = []
        for key, did in ids.items():
            result = by_key.get(key)
            if result is None:  # the vendor may have it: a trigger is not sent again unasked
                log.error("connector returned no result for a contact", vendor=self.vendor, key=key)
                result = (
                    Result(key, Status.PENDING, "no answer for this contact; retried")
                    if self.connector.kind == "upsert"
                    else Result(
                        key,
                        Status.UNKNOWN,
                        "the vendor's answer said nothing of this contact: it may have it; "
                        "`syncd retry --unknown` sends it again",
                    )
                )
            reason = scrub(result.reason) if result.reason else None  # a vendor's own words
            if result.status is Status.IN_FLIGHT:  # its job left open, recorded: `_held`
                self._held[key] = reason or "its job is still open at the vendor"
            outcomes.append((did, key, result.status.value, reason, result.ref))
            if count:
                self.out.counts[result.status.value] += 1
        if behind:
            self._behind.queue(self.vendor, outcomes, self.now(), self.max_attempts)
        else:
            self.store.settle(self.vendor, outcomes, self.now(), self.max_attempts)

    def _stopped(self, exc: Exception) -> None:
        self.out.stopped = str(exc)
        log.error("vendor stopped for this run", vendor=self.vendor, error=str(exc))


def _quoted(batch: Sequence[Contact], reason: str) -> tuple[list[Contact], list[Contact]] | None:
    """A batch the vendor refused whole in two, to find the contacts it objects to: those
    holding a value its words quote, and the rest (vendors quote the value they refuse:
    "The respondent email x@ is invalid", "Could not parse 'sure why not' as Boolean"), so
    one refused contact costs two requests, not two per halving; None when the words quote
    every contact or none. Only a guess of what goes together: each part is the vendor's
    to take or refuse, and a wrong one costs a request (`Deliverer._send`)."""
    text = reason.casefold()
    quoted = [
        c
        for c in batch
        if any(_quotes(text, v) for v in (*c.fields.values(), *c.metadata.values()))
    ]
    if 0 < len(quoted) < len(batch):
        keys = {c.key for c in quoted}
        return quoted, [c for c in batch if c.key not in keys]
    return None


def _halves(batch: Sequence[Contact]) -> tuple[list[Contact], list[Contact]]:
    half = len(batch) // 2
    return list(batch[:half]), list(batch[half:])


def _quotes(text: str, value: object) -> bool:
    """`text` holds `value` (3 characters or more) as a whole: not inside a longer word."""
    if not isinstance(value, str) or len(value := value.strip().casefold()) < 3:
        return False
    at = text.find(value)
    while at >= 0:
        end = at + len(value)
        if not (at and text[at - 1].isalnum()) and not (end < len(text) and text[end].isalnum()):
            return True
        at = text.find(value, at + 1)
    return False


@dataclass
class _Open:
    """A batch whose async job is open: in flight, its job recorded."""

    job: Job
    flight: _Flight


class _Flight:
    """Whether one batch is `in_flight`: marked by the HTTP client's write hook, unmarked
    when an attempt proves the vendor did not act."""

    def __init__(self, deliverer: Deliverer, ids: dict[str, int]) -> None:
        self.d = deliverer
        self.ids = ids
        self.marked = False

    def write(self) -> None:
        if not self.marked:
            behind = self.d._behind
            behind.join()
            self.d._store.mark_in_flight(self.ids.values(), self.d.now())
            self.marked = True
            behind.start()  # the ended jobs' settles are written while this request is out

    def unsent(self, reason: str | None = None) -> None:
        if self.marked:
            self.pending(reason, count=False)

    def pending(self, reason: str | None, *, count: bool = True) -> None:
        """Back to pending, the attempt unspent (nothing is written if never marked)."""
        if self.marked:
            results = [Result(key, Status.PENDING, reason) for key in self.ids]
            self.d._settle(self.ids, results, count=count)
            self.marked = False
        elif count:
            self.d.out.counts["pending"] += len(self.ids)


# what Store.settle records of one delivery: (id, key, status, reason, ref)
Outcome = tuple[int, str, str, str | None, str | None]


class _Behind:
    """The settles of ended async jobs, written on a second thread of the store's
    connection (as the diff's `Writer` does) while the next batch's request is out: its
    in-flight mark starts them, and SQLite's page work runs without the GIL while the
    vendor reads the request. Every other use of the store waits for them and writes those
    no request took (`Deliverer.store`), so the ledger's order is the one a settle in place
    would give, but for these outcomes coming after the next batch's mark. A kill before
    they are written leaves their batches in flight, their jobs recorded, for `resume` to
    poll again (the `settle_behind` crash point)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queued: list[tuple[str, list[Outcome], datetime, int]] = []
        self.thread: Thread | None = None
        self.error: BaseException | None = None

    def queue(self, vendor: str, outcomes: list[Outcome], now: datetime, attempts: int) -> None:
        self.queued.append((vendor, outcomes, now, attempts))

    def start(self) -> None:
        """Write the queued settles on a thread of their own (after `join`)."""
        if not self.queued:
            return
        work, self.queued = self.queued, []

        def settle() -> None:
            try:
                crashpoint("settle_behind")
                for args in work:
                    self.store.settle(*args)
            except BaseException as exc:  # raised in the delivery's thread, at `join`
                self.error = exc

        self.thread = Thread(target=settle, name="syncd-settle", daemon=True)
        self.thread.start()

    def join(self) -> None:
        """Until the settles started are written; the error of one that failed is raised."""
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def wait(self) -> None:
        """Until every settle queued is written, here if no request took it."""
        self.join()
        while self.queued:
            self.store.settle(*self.queued.pop(0))
