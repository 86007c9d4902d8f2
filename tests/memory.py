"""An in-memory vendor for fast engine tests: no HTTP, no simulator, no socket.

`memory_vendors(esputnik_like="upsert", surveys="trigger")` registers one `MemoryConnector`
subclass per name, for as long as the block runs. Every connector of a name, whoever built
it (the pipeline, a pull, the daemon), answers from that name's `Remote`: the script of what
becomes of each contact (acknowledged unless it says otherwise), every batch it was sent,
what `pull` reads, and how many of its connectors were built and closed. With `polls` set,
its batches are async jobs (`start`, `poll`) that end after that many polls, up to `window`
of them open at once, as eSputnik's import sessions.

`MemoryWorld` is a syncd installation in a temp folder (`tests.helpers.World`) whose
vendors are memory vendors, so `world.sync()` is `syncd.pipeline.reconcile` end to end.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from syncd.settings import VendorConfig
from syncd.vendors import REGISTRY, register
from syncd.vendors.base import Connector, Contact, Job, OnJob, Page, Result, Status
from tests.helpers import World

# what the memory vendor reads from the export; `City` is what `row(i, rng, version)` changes
MAPPING = '[fields]\nemail = "Email"\nfirst_name = "First Name"\ncity = "City"\n'
Answer = Status | BaseException


@dataclass
class Remote:
    """The vendor's side of the wire, shared by every connector of one name."""

    # key → what becomes of it: Status.FAILED (refused), Status.UNKNOWN (no acknowledgement)
    # or an exception, raised from `push` once the batch holding it has gone out
    script: dict[str, Answer] = field(default_factory=dict)
    batches: list[list[Contact]] = field(default_factory=list)
    # stream → the pages `pull` yields, or the exception it raises
    pages: dict[str, list[Page] | BaseException] = field(default_factory=dict)
    built: int = 0
    closed: int = 0
    # async jobs: each batch's outcome comes after `polls` polls of its job (0: at once)
    polls: int = 0
    window: int = 1
    every: float = 0.2  # seconds between polls of a job
    jobs: dict[str, int] = field(default_factory=dict)  # job id → polls so far
    outcomes: dict[str, list[Result]] = field(default_factory=dict)  # job id → its results
    most_open: int = 0  # the most jobs open at once

    @property
    def open_jobs(self) -> int:
        return sum(1 for job in self.jobs if job in self.outcomes)

    def keys(self) -> list[str]:
        """Every key sent, in the order sent (a key twice if it was sent twice)."""
        return [c.key for batch in self.batches for c in batch]

    @property
    def open(self) -> int:
        """Connectors built and not closed."""
        return self.built - self.closed


class MemoryConnector(Connector):
    """Answers from `remote` as a vendor would; the delivery loop cannot tell the difference."""

    title = "In memory"
    max_batch = 1000
    streams = ("responses", "unsubscribes")
    remote: ClassVar[Remote]

    def __init__(self, config: VendorConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.remote.built += 1

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        if self.http.on_write is not None:
            self.http.on_write()  # the request's first byte: the batch is in flight
        self.remote.batches.append(list(batch))
        answers = [self.remote.script.get(c.key, Status.SENT) for c in batch]
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        return [
            Result(c.key, a, None if a is Status.SENT else f"scripted {a.value}", ref=f"m-{c.key}")
            for c, a in zip(batch, answers, strict=True)
            if isinstance(a, Status)
        ]

    def window(self) -> int:
        return self.remote.window

    def start(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
        results = self.push(batch, on_job)
        if not self.remote.polls:
            return results
        job = f"job-{len(self.remote.jobs) + 1}"
        self.remote.jobs[job] = 0
        self.remote.outcomes[job] = results
        on_job(job)
        self.remote.most_open = max(self.remote.most_open, self.remote.open_jobs)
        return Job(job, batch, every=self.remote.every, deadline=math.inf)

    def poll(self, job: Job) -> list[Result] | None:
        self.remote.jobs[job.id] += 1
        if self.remote.jobs[job.id] < self.remote.polls:
            return None
        return self.remote.outcomes.pop(job.id)

    def reopen(self, job: str, batch: Sequence[Contact]) -> Job:
        return Job(job, batch, every=self.remote.every, deadline=math.inf)

    def pull(self, stream: str, since: str | None, until: datetime) -> Iterator[Page]:
        pages = self.remote.pages.get(stream, [])
        if isinstance(pages, BaseException):
            raise pages
        yield from pages

    def close(self) -> None:
        self.remote.closed += 1
        super().close()


@contextmanager
def memory_vendors(**kinds: Literal["upsert", "trigger"]) -> Iterator[dict[str, Remote]]:
    """Register a memory vendor per name (its kind the value) for the block: name → Remote."""
    remotes: dict[str, Remote] = {}
    try:
        for name, kind in kinds.items():
            remote = remotes[name] = Remote()
            attrs = {"name": name, "kind": kind, "remote": remote}
            register(type(f"Memory_{name}", (MemoryConnector,), attrs))
        yield remotes
    finally:
        for name in remotes:
            REGISTRY.pop(name, None)


class MemoryWorld(World):
    """A World whose vendors are the registered memory vendors (`memory_vendors`)."""

    def __init__(self, folder: Path, remotes: dict[str, Remote], **table: Any) -> None:
        """`table`: keys every vendor table gets (`max_attempts = 2`, `batch_size = 3`)."""
        body = 'base_url = "http://memory.invalid"\n'
        body += "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in table.items())
        super().__init__(folder, {name: (body, MAPPING) for name in remotes})
        self.remotes = remotes

    def ledger(self, vendor: str) -> dict[str, str]:
        """key → the status of its newest delivery to `vendor`."""
        return {d["key"]: d["status"] for d in self.deliveries() if d["vendor"] == vendor}

    def acknowledged(self, vendor: str) -> dict[str, str]:
        """key → the hash `vendor_state` holds as acknowledged by `vendor`."""
        store = self.store()
        try:
            rows = store.query("SELECT key, hash FROM vendor_state WHERE vendor = ?", (vendor,))
            return {r["key"]: r["hash"] for r in rows}
        finally:
            store.close()
