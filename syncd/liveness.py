"""Whether the running job makes progress: `syncd run`'s watchdog asks before each ping.

systemd's watchdog proves only what pings it. A ping from the scheduler's own thread proves
the scheduler alive, not the job: a job hung for good (a deadlock, a stuck SQLite call, a
loop that never ends) kept `systemctl status` green while no reconcile or pull ever ran
again. So the daemon pings only while the worker is idle or its job shows progress.

A job shows progress by *beats*, and announces the waits it may legitimately spend without
one (a request, a sleep). The signals come from four places only, the choke points every
long stretch of a job goes through (nothing else reports here, and only the daemon asks):

- `syncd.http`: every request is a wait of `request_deadline + connect_timeout` (the
  deadline cuts it; connecting is bounded by the connect timeout), and its outcome, any
  outcome, is a beat;
- `syncd.clock.SystemClock.sleep`: every sleep (pacing, backoff, a vendor's Retry-After,
  a poll's interval) is a wait of exactly its length;
- `syncd.state.Store.write`: every commit is a beat (a delivery batch's outcome, a pull
  page, a first sync's piece, a prune batch);
- `syncd.diff`: every block of the export the diff reads is a beat (a nightly diff is one
  transaction: no commit for the whole export).

A job is *stalled* when `bound` seconds (`[schedule] stall_seconds`) passed since its last
sign of life and since the end of every wait it has open: the bound is for local work
between two signals (reading, hashing, SQLite), which takes well under a second a block;
the waits are the vendors' and the config's own (a first sync to a vendor at 1 call/s
beats every second for hours; a Retry-After of 120 s is a wait of 120 s). A wait that
outlives its own end by `bound` (a request the deadline failed to cut) is a stall too.
A beat says the job is alive, not that it gets anywhere: a loop that asked a vendor the
same thing for ever would look alive (retries, the breaker and `max_attempts` bound those;
a pull's paging stops a list that does not move on: eSputnik's offset read again,
SignalVine's page answered again or its empty pages without end).

Time is an argument (`now`, monotonic seconds) on `Liveness`; the module's functions,
which the choke points and the daemon call, read `now()`: `time.monotonic()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count

STALL_SECONDS = 600.0  # `[schedule] stall_seconds`' default


@dataclass(frozen=True)
class Stall:
    """A job that has shown no progress for too long."""

    job: str
    quiet: float  # seconds since its last sign of life
    bound: float  # the bound it passed (`stall_seconds`)
    overdue_wait: float | None  # an open wait's announced length, if one is past its end
    thread: int | None  # the job's thread (`threading.get_ident()`), for its stack


class Liveness:
    """The running job (if any), its last sign of life and its open waits. Thread-safe:
    the job's threads report, the watchdog's thread asks."""

    def __init__(self, bound: float = STALL_SECONDS) -> None:
        self.bound = bound
        self._lock = threading.Lock()
        self._jobs: list[str] = []  # nested: the watch job's reconcile runs inside it
        self._thread: int | None = None
        self._last = 0.0
        self._waits: dict[int, tuple[float, float]] = {}  # token → (its end, its length)
        self._tokens = count(1)

    @property
    def running(self) -> str | None:
        with self._lock:
            return self._jobs[-1] if self._jobs else None

    def begin(self, job: str, now: float, thread: int | None = None) -> None:
        with self._lock:
            if not self._jobs:
                self._waits.clear()  # left by work outside any job: not this job's
                self._thread = thread
            self._jobs.append(job)
            self._last = now

    def end(self, now: float) -> None:
        with self._lock:
            if self._jobs:
                self._jobs.pop()
            if not self._jobs:
                self._waits.clear()
                self._thread = None
            self._last = now

    def beat(self, now: float) -> None:
        """Progress: a request answered (or failed), a batch committed, a block read."""
        with self._lock:
            self._last = max(self._last, now)

    def open_wait(self, seconds: float, now: float) -> int:
        """A wait of up to `seconds` starts (a request, a sleep); close it with its token."""
        with self._lock:
            token = next(self._tokens)
            self._waits[token] = (now + seconds, seconds)
            self._last = max(self._last, now)
            return token

    def close_wait(self, token: int, now: float) -> None:
        """The wait ended, however it ended: a beat."""
        with self._lock:
            self._waits.pop(token, None)
            self._last = max(self._last, now)

    def stalled(self, now: float) -> Stall | None:
        """The running job, if it has shown no progress within the bound; None if idle."""
        with self._lock:
            if not self._jobs:
                return None
            ends = [end for end, _length in self._waits.values()]
            if now <= max([self._last, *ends]) + self.bound:
                return None
            overdue = [length for end, length in self._waits.values() if now > end]
            return Stall(
                job=self._jobs[-1],
                quiet=now - self._last,
                bound=self.bound,
                overdue_wait=max(overdue) if overdue else None,
                thread=self._thread,
            )


LIVE = Liveness()
"""The process's: the choke points report to it, `syncd run`'s watchdog asks it."""


def now() -> float:
    """The clock of every beat and wait, and of the watchdog's look at them."""
    return time.monotonic()


def beat() -> None:
    """Progress, now."""
    LIVE.beat(now())


@contextmanager
def waiting(seconds: float) -> Iterator[None]:
    """A legitimate wait of up to `seconds` (a request under its deadline, a sleep)."""
    token = LIVE.open_wait(max(seconds, 0.0), now())
    try:
        yield
    finally:
        LIVE.close_wait(token, now())
