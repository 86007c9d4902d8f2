"""The connector interface: a vendor's facts as class attributes, and two methods.

    push(batch, on_job) -> one Result per contact
    pull(stream, since, until) -> pages of records, each with the cursor that follows it

Plumbing (timeouts, retries, pacing, breaker, error mapping) lives in `syncd.http`; a
connector says what to send and how to read the answer. Connectors never write the store:
they return results, and report an async job id through `on_job` the moment they learn it,
so the delivery loop can record it before polling starts.

One optional capability, for a vendor whose batches are async jobs that may overlap
(eSputnik's import sessions): `start(batch, on_job)` sends a batch and returns its `Job`
without waiting for it, and `poll(job)` looks at it once. The delivery loop then keeps up
to `window()` jobs open, sending the next batch while earlier ones run and polling every
open job in one round per wait. Such a connector's `push` is `start` then `follow` (poll
until done), and its `resume` is `follow` of the recorded job: one reading of the vendor's
answers, whichever way it is driven.
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

import structlog

from syncd.clock import SYSTEM, Clock
from syncd.errors import EndpointError, RetriableError
from syncd.http import HttpClient, Pacer, pacer_for
from syncd.log import add_secrets
from syncd.settings import Option, VendorConfig
from syncd.state.statuses import Status as Status  # connectors name it from here


@dataclass(frozen=True)
class Contact:
    """One contact as a vendor sees it: mapped fields, already normalised."""

    key: str
    fields: Mapping[str, str]
    metadata: Mapping[str, str] = field(default_factory=dict)
    ref: str | None = None  # the vendor's own id, from an earlier acknowledgement


# the reason of a job a connector stops polling while the vendor may still apply it (a
# Result IN_FLIGHT): the delivery loop keeps it recorded and sends nothing newer of its
# contacts (`syncd.push`)
HELD = (
    "held, polled again by the next run, no newer change of its contacts sent before it "
    "ends (`syncd retry --forget-jobs` gives it up)"
)


@dataclass(frozen=True)
class Result:
    key: str
    status: Status
    reason: str | None = None
    ref: str | None = None  # the vendor's own id for this contact, when it says


@dataclass(frozen=True)
class Page:
    """A page of pulled records and the cursor to store with them, in one transaction."""

    records: list[dict[str, Any]]
    cursor: str


class OnJob(Protocol):
    """How a connector reports an async job the moment it learns the job's id. `refused`
    are contacts of the batch that the vendor refused at once and that the job does not
    carry: they are recorded before the job is, so a crash between the two can never let
    a poll of the job (which answers for the whole batch it is resumed with) settle them
    as sent."""

    def __call__(self, job: str, refused: Sequence[Result] = ()) -> None: ...


@dataclass
class Job:
    """An async job the vendor is still working on: what `start` returns, `poll` reads."""

    id: str  # what `on_job` reported (and the store recorded)
    contacts: Sequence[Contact]  # whose outcome the job decides
    every: float  # seconds between two polls of it
    deadline: float  # the clock's monotonic time past which it is polled no more this run
    # outcomes known at once (refused), already reported through `on_job`: for `follow`
    done: list[Result] = field(default_factory=list)
    # recorded before a restart (`reopen`), not given by the vendor in this process: a 404
    # may be the vendor forgetting it while syncd was stopped (`polling`)
    reopened: bool = False


class Connector(ABC):
    """Base class of every vendor connector."""

    name: ClassVar[str]  # the `[vendors.<name>]` table, the store's `vendor` column
    title: ClassVar[str]  # how people write it: "Hello Customer"
    kind: ClassVar[Literal["upsert", "trigger"]]
    max_batch: ClassVar[int]
    max_bytes: ClassVar[int | None] = None
    # vendor-specific config keys (besides base_url, mapping, batch_size, delivery keys)
    options: ClassVar[dict[str, Option]] = {}
    # the vendor field names a mapping may use; None = any name
    field_names: ClassVar[frozenset[str] | None] = None
    # fields the mapping must map
    required_fields: ClassVar[tuple[str, ...]] = ()
    # fields a mapping may not map, and why (the vendor's own to keep: SignalVine's `active`)
    refused_fields: ClassVar[dict[str, str]] = {}
    # how to normalise a field: "email" (trim, lower-case, validated) or "phone" (E.164)
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {}
    # the types a mapping's `[types]` table may give a field or metadata name (none: no table)
    value_types: ClassVar[tuple[str, ...]] = ()
    # fields without which a contact cannot be sent to this vendor (quarantined for it)
    needs: ClassVar[tuple[str, ...]] = ()
    # pull streams this vendor offers: "responses", "nps", "unsubscribes"
    streams: ClassVar[tuple[str, ...]] = ()
    # seconds between calls with the same credentials (Hello Customer: 1.0)
    min_interval: ClassVar[float] = 0.0
    # the options that go into a request's URL (a program, a campaign, a path), which a
    # 3xx, 404 or 405 tells to check with base_url
    url_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_options(cls, base_url: str, options: Mapping[str, Any]) -> None:
        """Refuse, at load, option values the vendor would refuse at night: raise
        `OptionError(key, message, hint=...)` (the loader adds file and table). Runs for
        every load, so `syncd check` and a SIGHUP reload catch them too."""
        return None

    def __init__(self, config: VendorConfig, *, clock: Clock = SYSTEM) -> None:
        self.config = config
        self.opts = config.options
        add_secrets(config.secrets)  # whoever built the connector, its secrets never show
        self.clock = clock
        self.log = structlog.get_logger(f"syncd.vendors.{self.name}").bind(vendor=self.name)
        self._unknown_jobs = 0  # polls of jobs answered 404 in a row (`polling`)

    @functools.cached_property
    def http(self) -> HttpClient:
        """The vendor's HTTP client (session, pacing, watchdog), made at its first use:
        what the diff reads of a connector (its facts, `value_kinds`, `shape`) needs none,
        so a dry run, or a vendor with nothing to send, opens no connection."""
        return HttpClient(
            self.name,
            self.config.base_url,
            self.config.delivery,
            clock=self.clock,
            pacer=self.pacer(),
            endpoint_hint=self.endpoint_hint(),
            auth_hint=self.auth_hint(),
        )

    def auth_hint(self) -> str:
        """What a 401 or 403 tells to check: the vendor's secret options."""
        keys = " and ".join(k for k, o in self.options.items() if o.secret) or "the credentials"
        return f"check {keys} in [vendors.{self.name}]"

    def endpoint_hint(self) -> str:
        """What a 3xx, 404 or 405 tells to check: base_url, and the options in the URL."""
        where = "check base_url (scheme://host[:port] only)"
        if not self.url_options:
            return f"{where}: syncd adds {self.title}'s documented paths, no option goes in them"
        keys = " and ".join(self.url_options)
        return f"{where} and {keys} in [vendors.{self.name}]"

    def pacer(self) -> Pacer | None:
        """The shared Pacer for this vendor's credentials, if it is rate limited."""
        return None

    def paced(self, key: str) -> Pacer | None:
        """The shared Pacer for `key` (the credentials) at the `min_interval` option
        (`pacing`), for a vendor whose rate limits are not documented; None at 0."""
        interval = self.opts["min_interval"]
        return pacer_for(self.name, key, interval, self.clock) if interval else None

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or self.max_batch

    def value_kinds(self) -> Mapping[str, Literal["email", "phone"]]:
        """How the diff normalises each field or metadata name before `shape` sees it:
        `field_types`, plus whatever a connector's typed metadata add."""
        return self.field_types

    def validate(self, contact: Contact) -> str | None:
        """Why this contact cannot be sent to this vendor (it is quarantined), or None."""
        missing = [f for f in self.needs if not contact.fields.get(f)]
        if missing:
            return f"no {' or '.join(missing)} (needed by {self.name})"
        return None

    def shape(self, contact: Contact) -> Contact | str:
        """The contact in the form this vendor takes (values converted to the types its
        mapping gives them), or why it cannot be sent to this vendor (it is quarantined for
        this vendor only). What this returns is what is hashed, stored and sent."""
        return self.validate(contact) or contact

    def unsendable(self, contacts: Sequence[Contact]) -> list[Result]:
        """The outcomes of those of `contacts` this connector settles without a request,
        decided before they are batched (`syncd.push`), so that no request carries them and
        no other contact's outcome becomes theirs. None by default."""
        return []

    def batches(self, contacts: Sequence[Contact]) -> Iterator[Sequence[Contact]]:
        """Split into requests: at most `batch_size` contacts, and `max_bytes` if set."""
        size = self.batch_size
        if self.max_bytes is None:
            for i in range(0, len(contacts), size):
                yield contacts[i : i + size]
            return
        chunk: list[Contact] = []
        used = 0
        for contact in contacts:
            cost = self.encoded_size(contact)
            if chunk and (len(chunk) >= size or used + cost > self.max_bytes * 0.95):
                yield chunk
                chunk, used = [], 0
            chunk.append(contact)
            used += cost
        if chunk:
            yield chunk

    def encoded_size(self, contact: Contact) -> int:
        """Bytes this contact adds to a request body (for `max_bytes` splitting)."""
        return len(json.dumps(dict(contact.fields) | dict(contact.metadata))) + 8

    def prepare(self) -> None:
        """Get ready to push (log in, renew a token) before the next batch is marked in
        flight: a failure or a crash here leaves its contacts pending, not `unknown`."""
        return None  # most vendors authenticate each request with a fixed key

    @abstractmethod
    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        """Send one batch; return one Result per contact, in any order.

        Raise `RetriableError` / `OutcomeUnknownError` / `FatalError` (from `self.http`) when
        the whole request failed; report an async job id through `on_job` as soon as known.
        """

    def resume(self, job: str, batch: Sequence[Contact]) -> list[Result]:
        """Settle a batch whose async job was recorded before a crash (poll, never re-send):
        by default, `follow` its `reopen`."""
        return self.follow(self.reopen(job, batch))

    # --- overlapping async jobs (optional) -------------------------------------------
    def window(self) -> int:
        """How many jobs of `start` the delivery loop may keep open at once; 1: each batch
        is followed to its end before the next one goes."""
        return 1

    def start(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
        """Send one batch without waiting for the async job it starts: its results, or its
        `Job` (reported through `on_job` first) for `poll`. Raises as `push` does. The
        default is `push`, which waits."""
        return self.push(batch, on_job)

    def reopen(self, job: str, batch: Sequence[Contact]) -> Job:
        """The `Job` of a batch whose job id was recorded before a crash, as `start` would
        have returned it: the delivery loop polls such jobs together, in rounds, when the
        window is above 1."""
        raise NotImplementedError(f"{self.name} has no async jobs to resume")

    def poll(self, job: Job) -> list[Result] | None:
        """Look at a started job once: a Result per contact of `job.contacts` once it has
        ended (or its deadline has passed: pending), else None. Raises as `push` does."""
        raise NotImplementedError(f"{self.name} has no async jobs to poll")

    @contextmanager
    def polling(self, job: str, noun: str, call: str, *, reopened: bool = False) -> Iterator[None]:
        """Around a poll of `job` (a `noun`: "import session"), which the vendor had just
        given. A 404 is a job the vendor no longer knows (expired, lost): nothing
        acknowledges its contacts, which go again (RetriableError). Two in a row, it is
        the poll call that no longer finds any (a moved endpoint, a proxy): the vendor is
        stopped (EndpointError) rather than posted every batch for nothing, and the hint
        names `call` to check. Any other answer ends the row. A `reopened` job (recorded
        before a restart) is not in the row: its vendor may have forgotten it while syncd
        was stopped (how long a job is kept is documented nowhere), and several such, every
        one a 404, stopped the vendor as if base_url were wrong, run after run."""
        try:
            yield
        except EndpointError as exc:
            if exc.status != 404:
                raise
            self._unknown_jobs += not reopened
            if self._unknown_jobs >= 2 and not reopened:
                raise EndpointError(
                    f"{self.title} answered 404 for {self._unknown_jobs} {noun}s in a row that "
                    f"it had just given (the last {job})",
                    vendor=self.name,
                    status=404,
                    hint=f"their contacts stay pending; check base_url, and whether "
                    f"{self.title} moved {call}, before the next run",
                ) from None
            again = (
                "which go again (it may have expired while syncd was stopped)"
                if reopened
                else "which go again in the next run"
            )
            raise RetriableError(
                f"{self.title} does not know {noun} {job} (HTTP 404): nothing acknowledges "
                f"its contacts, {again}",
                vendor=self.name,
                status=404,
            ) from None
        self._unknown_jobs = 0

    def follow(self, job: Job) -> list[Result]:
        """Poll a job until it ends, `job.every` seconds apart: every contact's Result."""
        while (results := self.poll(job)) is None:
            self.clock.sleep(job.every)
        return job.done + results

    def pull(self, stream: str, since: str | None, until: datetime) -> Iterator[Page]:
        """Yield pages of `stream` records after cursor `since`, up to `until`."""
        raise NotImplementedError(f"{self.name} offers no {stream!r} stream")

    def check(self) -> str | None:
        """Prove the credentials work with one cheap call that changes nothing.

        Return what was proven (for `syncd check --online`), or None when the vendor has no
        such call; raise the call's error when the vendor refused it."""
        return None

    def close(self) -> None:
        if "http" in self.__dict__:  # else it was never made
            self.http.close()


def pacing(per: str) -> Option:
    """The `min_interval` option of a vendor whose rate limits are not documented: calls
    with the same credentials `per` (token, user) are paced that far apart (`paced`)."""
    return Option(float, default=0.0, help=f"seconds between calls per {per}")


def lowered(value: Any) -> Any:
    """A pulled text trimmed and lower-cased (None when empty); a value of another type as it
    came, for `syncd.pull.clean` to convert or refuse: a field of the wrong type skips its
    record, never stops the pull."""
    if isinstance(value, str):
        return value.strip().lower() or None
    return value or None
