"""SignalVine: participants upserted as CSV inside JSON, an async command polled at its
`Location`; opt-outs pulled from the participant list.

- Every request is signed by `SignalVineAuth` (on the session): base64 HMAC-SHA256, keyed
  with the account secret, of `token\\nMETHOD\\npath\\nbody\\ntimestamp`, all lower-cased
  (path without the query, body empty for a GET); headers `Authorization: SignalVine
  <token>:<signature>` and `SignalVine-Date`. The server checks the signature against its
  own compact re-serialisation of the JSON it parsed (the vendor's Scala and `jq -c`
  samples; the Python SDK signs compact JSON and sends spaced), so a body is sent as
  compact JSON (`compact`) and exactly those bytes are signed. The body holds only strings
  and lists, so numbers cannot re-serialise differently. A 401 means the signature was
  refused: an `AuthError` that says so and names the vendor.
- Non-ASCII (accented names): no single text signs right under both forms the server
  may use (`\\u00e9` escapes or raw UTF-8: they differ even once lower-cased, which only
  makes the case of escapes' hex digits irrelevant). ASCII-only bodies are the same in
  both. So `non_ascii` names the form tried first (raw, as the vendor's own samples sign);
  when a body with non-ASCII is refused, it is re-sent once in the other form, and a form
  that is accepted is kept for the rest of the run (a warning names the setting to change).
- Push: `POST /v2/programs/{program}/participants` with the batch as one CSV (csv module:
  quoted commas, quotes and newlines), header = the mapping's program variables, rows in
  CRM-key order so a resumed command reads the same row numbers. Bodies stay under 10 MB
  (`max_bytes`, `encoded_size`, measured escaped: an upper bound for either form).
  `options`: `new` and `mode` from config, `existing` from config ("all" = every mapped
  variable but customer_id and signalvine_id, the ids a row is matched on), `absent`
  always "ignore" — never configurable: a partial upload must not deactivate anyone.
- Only a 202 with a `Location` accepts an upload ("If your API POST is accepted, you will
  receive a 202 response back", signalvine.md; the SDK raises on any other status): any
  other 2xx, or no Location, is an unknown outcome that acknowledges no row — they stay
  pending and go again (an upsert). The Location is reported through `on_job`, then
  polled (signed GET) 2 s after, every 2 s for 30 s, then at intervals growing by 2 s up
  to `poll_cap`; a command not complete after `poll_timeout` is held (its rows in flight
  with the Location recorded, polled first by the next run, no newer change of them
  uploaded before it completes: SignalVine may run it after a newer upload; `syncd retry
  --forget-jobs` gives it up); the contacts stay pending when the Location answers 404 (a
  command SignalVine no longer knows). `resume` polls a recorded
  Location, never re-sends. A poll is read only from a 200, whether the command is running
  or complete (the SDK's `get_location_status` takes no other status); another 2xx is
  asked again, then leaves the rows pending. So is every read (schema, participant pages):
  the SDK reads each only from a 200, and a status only with a boolean `complete` (see
  the assumptions below).
- A completed command with `error: true`, or `error: false` whose report still lists
  errors (never taken for every row sent; an `error` neither true nor false acknowledges
  nothing, the rows go again): each error placed on its contact by `customer_id` → FAILED
  with its message; never by `row` alone (how it counts is documented nowhere: placed by
  a guess, a wrong one put every error on the next contact, the refused row marked sent).
  "Unrecognized variable: x" (SignalVine's words for a header naming a variable the
  program lacks, as the SDK's tests read them from a real command) is the mapping's fault,
  no contact's: an EndpointError that stops SignalVine for the run with every contact
  pending (read only where x is a column of the header, the error names no customer_id
  of the upload and no row of the upload holds those words: a row's own value may quote
  them, in a report or a text). Errors that name no `customer_id` of the upload (a row
  alone, or a `message` that is no import report: the SDK's tests find SignalVine's words
  in it with `in`, as in a text) refuse the upload as a whole, a FatalError: the delivery
  loop splits it down to the rows refused (those holding a value the words quote first),
  each failed alone with the vendor's words (and the same words five times in a row stop
  SignalVine); failing every row instead failed those row mode added and those tx mode
  held back, run after run until dead. The other rows are SENT, except in `tx` mode
  (nothing was added: they stay pending) and in `row` mode past 1,000 errors: the vendor
  then added nothing, so the rows without an error are uploaded again at once (at most
  `MAX_REUPLOADS` times; past that they stay pending). One bad stretch of an export (a
  phone shared by thousands of CRM contacts) must not hold back a whole batch of good
  ones for a run. The job of a re-upload is every command's Location so far, oldest
  first, separated by spaces: `resume` re-reads each, so it knows which rows the last one
  carried (the same rows in the same order, less those the earlier ones refused).
- Pull "unsubscribes": `GET /v1/programs/{id}/participants?type=full&count=500&offset=..
  &active=all&updated-after=..`, paged by `nextOffset` (an empty page with one is not the
  last). The last page's `nextOffset` is no offset after its own (docbox's one-page lists
  answer `"nextOffset": 0, "lastOffset": 0`): a page is the last when `nextOffset` is null
  or absent, or is not after the page's offset while the list ends there (`lastOffset`,
  `total`, or a short page); one not after it anywhere else stops the stream, its cursor
  kept, and so do a page holding the participants of the page before again, in the same
  order (a server that ignores `offset`), and `EMPTY_RUN` empty pages in a row: each
  request is a sign of life to the service's watchdog, so a list that never moves on
  would be read for ever. Participants with `active: false` are opt-outs. An item's time is its `updatedAt`,
  else the newest `profile[].updated`, else `created` (the SDK's own fixture has no
  `updatedAt`). The opt-out's time is when its `active` variable was last written
  (`profile[].updated`), else the item's last change (`updatedAt` or the newest
  `profile[].updated`), else unknown (None: never the pull's time, nor `created`); the
  opt-out is keyed by participant id + that time. The
  cursor is an `updated-after` timestamp (inclusive, so re-reading the boundary duplicates
  nothing), stored after the last page: the newest item time seen less `pull_lookback`
  seconds, that time no later than the pull's `until` (a time ahead of it, a participant
  dated in the future, would set a cursor past which nothing is read, and every later
  pull refused as a clock gone wrong); when items came back but none has a time, the
  pull's `until` less `pull_lookback`; when none came back, it stays. When a participant read on one page is
  read again on a later one, it changed while the list was read and went to its end, those
  after it moved one place back under the offsets, and one of them may have been on no
  page: the cursor then goes no further than the newest time read by the end of the first
  page it was on (less `pull_lookback`), all of which was read, so the next pull reads on
  from there. Under constant change every pull still moves on by at least that page.
  `total` is not taken for the list's length (docbox's own example answers three items
  with `"total": 10` and `"pages": 1`); it only helps tell the last page, and bounds
  `nextOffset`.

Assumptions (unknown in the vendor's documents): whether the server's re-serialisation
escapes non-ASCII (`non_ascii`, with the fallback above); the command `message` is a JSON
object (or a string holding one) `{"added", "updated", "ignored", "errors": [{"row",
"customer_id", "message"}]}`, or else text whose errors name no row (the SDK's tests
read SignalVine's words in it as in a text); whether `row` counts the header as row 1 is
not known (signalvine.md, docbox and the SDK show no report), so an error is placed by its
`customer_id` only (one that two rows of the upload share, or an empty one, names no
row): one naming only a row, or text, refuses the upload whole, split down
to the rows refused; rows SignalVine ignores (`new` or `existing` = "ignore": docbox's
"will be ignored") are counted by the report's `ignored` and named by none: under either
option a row is sent only when `ignored` is 0, all of them are skipped when it counts
every row the command refused none of; under `new = "ignore"` an upload ignoring some is
refused whole and split down until each part is one or the other, under `existing =
"ignore"` (the rows it added are participants once it ran: no re-upload tells them from
those ignored) its rows are all skipped, none recorded sent; a report without the count marks nothing
sent (an EndpointError stops SignalVine: set new = "add" and existing to variables); a
row of a customer_id no participant has, whose phone one has, is refused (the SDK's tests
against the real API: "the phone # already exists => error") or taken as that participant
and updates it (docbox: new means "customer_id & phone don't exist"), its report counting
it `updated`: so after a command whose report counts rows updated (or no count), the
participants it changed are read (`updated-after` the command's `created`, `check_phones`)
and a row whose phone one of them holds under another customer_id is FAILED, naming it (an
update that changed nothing may list no one, and is not caught); the `updated-after` bound is inclusive and compares the
participant's last change; a `profile[].updated` of `active` is when it last changed;
the list is not known to be ordered, so the cursor only advances after the last page;
a participant that changes moves in the list, if at all, to its end, and none leaves the
list while it is read (a removal would move those after it back unseen); the last page's
`nextOffset` is its own offset, 0, null or absent; 10 MB is taken as 10,000,000 bytes; a request carries at most
`max_batch` = 100,000 participants (no count limit is documented); a dedicated opt-out
endpoint and rate limits are unknown (none used); the Location may be a path or a full
URL; an upload answered with another 2xx than 202 (the only one documented) may or may not
have been taken: its rows stay pending. A command status is read only from a 200 with a
boolean `complete` (signalvine.md shows `"complete": false` while the command runs and
`true` once done; the SDK reads `status_json["complete"]`): any other answer is no
status, and its rows stay pending at once rather than being polled until `poll_timeout`.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import hashlib
import hmac
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from syncd.clock import Clock
from syncd.errors import (
    AuthError,
    ConfigError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    RetriableError,
)
from syncd.http import loads
from syncd.settings import Option
from syncd.vendors.base import HELD, Connector, Contact, OnJob, Page, Result, Status

POLL_FIRST = 2.0  # the doc: "status 2 seconds after your initial POST,
POLL_EVERY = 2.0  # then every 2 seconds for the next 30 seconds
POLL_STEADY = 30.0  # and an incremental back-off policy after that"
POLL_STEP = 2.0
# the header names a variable the program lacks, in SignalVine's own words as the SDK's
# tests read them from a real command (CUBoulder-OIT/signalvine-sdk, tests/test_sdk_upsert.py:
# "Unrecognized variable: can_ride_tyrannosaurus")
UNRECOGNIZED = re.compile(r"Unrecognized variable: *([^\s,;:'\"\\]+)", re.IGNORECASE)
ROW_ERROR_LIMIT = 1000  # row mode: nothing is added past this many errors
MAX_REUPLOADS = 3  # row mode past the limit: the rows without an error sent again, at most
PAGE = 500
# empty pages in a row, each with a nextOffset after its own, that stop a pull: no list has
# so many holes (one page a hole in the tests), and a vendor answering nothing but empty
# pages with ever larger offsets, and no total to bound them, kept the pull going for ever
EMPTY_RUN = 100
KEYS = ("customer_id", "signalvine_id")  # what a row is matched on, never updated
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# a participant time this far after the pull's is said (the cursor never goes past the pull's)
AHEAD = timedelta(minutes=1)


def timestamp(when: datetime) -> str:
    """ISO 8601 UTC with milliseconds, as `SignalVine-Date` wants: 2014-03-11T05:03:08.619Z."""
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def signature(token: str, secret: str, method: str, path: str, body: str, stamp: str) -> str:
    """base64(HMAC-SHA256(secret, lower("token\\nMETHOD\\npath\\nbody\\ntimestamp")))."""
    text = f"{token}\n{method}\n{path}\n{body}\n{stamp}".lower()
    digest = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class SignalVineAuth(AuthBase):
    """Signs each prepared request (so every retry gets a fresh date) over its body bytes."""

    def __init__(self, token: str, secret: str, clock: Clock) -> None:
        self.token = token
        self.secret = secret
        self.clock = clock

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        stamp = timestamp(self.clock.now())
        path = urlsplit(r.url or "").path or "/"
        sig = signature(self.token, self.secret, r.method or "GET", path, text, stamp)
        r.headers["Authorization"] = f"SignalVine {self.token}:{sig}"
        r.headers["SignalVine-Date"] = stamp
        r.headers["Content-Type"] = "application/json"
        return r


def compact(payload: Any, non_ascii: str) -> bytes:
    """`payload` as the server re-serialises it to check a signature: compact JSON, its
    non-ASCII as UTF-8 (`non_ascii="raw"`) or as `\\u` escapes ("escape")."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=non_ascii == "escape")
    return text.encode("utf-8")


def poll_delays(cap: float, first: float = POLL_FIRST) -> Iterator[float]:
    """`first` (2 s), then 2 s for 30 s, then 4, 6, 8 ... s, never more than `cap`."""
    yield first
    waited = 0.0
    while waited < POLL_STEADY:
        yield POLL_EVERY
        waited += POLL_EVERY
    delay = POLL_EVERY
    while True:
        delay = min(delay + POLL_STEP, max(cap, POLL_EVERY))
        yield delay


def csv_text(rows: Sequence[Sequence[str]]) -> str:
    """Rows as CSV text: `\\n` line ends, quoting where a value needs it."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


class SignalVine(Connector):
    name = "signalvine"
    title = "SignalVine"
    kind = "upsert"
    max_batch = 100_000
    max_bytes = 10_000_000
    url_options = ("program",)
    options: ClassVar[dict[str, Option]] = {
        "token": Option(str, required=True, secret=True, issued=True, help="the API token"),
        "secret": Option(
            str, required=True, secret=True, issued=True, help="the API secret (signs requests)"
        ),
        "program": Option(str, required=True, help="the program id (Program Settings)"),
        "mode": Option(
            str,
            default="row",
            choices=("row", "tx"),
            help="row: each row stands alone; tx: one bad row rolls the upload back, the "
            "good rows stay pending until the bad one is fixed or dead",
        ),
        "new": Option(str, default="add", choices=("add", "ignore"), help="add new participants"),
        "existing": Option(
            (str, list),
            default="all",
            help='"all" mapped variables, "ignore", or a list of variables to update',
        ),
        "non_ascii": Option(
            str,
            default="raw",
            choices=("raw", "escape"),
            help="how a body's non-ASCII text is sent and signed, tried first: raw UTF-8 "
            "(SignalVine's samples) or \\u escapes (the Python SDK); a refused signature "
            "on such a body is retried once in the other form",
        ),
        "check_phones": Option(
            bool,
            default=True,
            help="after an upload that updated participants, read those it changed: a row "
            "whose phone a participant with another customer_id now holds was matched by "
            "its phone and updated that one (docbox: a participant is new when "
            '"customer_id & phone don\'t exist"), and is failed, naming it',
        ),
        "poll_first": Option(
            float, default=POLL_FIRST, help="seconds before the first command poll (the doc: 2)"
        ),
        "poll_cap": Option(float, default=60.0, help="longest wait between command polls"),
        "poll_timeout": Option(
            float,
            default=900.0,
            help="seconds a command is polled in a run; one not complete then is held (its "
            "rows in flight, no newer change of theirs sent) and polled by the next run "
            "(`syncd retry --forget-jobs` gives it up)",
        ),
        "pull_lookback": Option(float, default=300.0, help="seconds re-read before the cursor"),
    }
    required_fields = ("customer_id", "phone")
    refused_fields: ClassVar[dict[str, str]] = {
        # the article's `existing` example updates it; a CRM column holding `true` would
        "active": "it is how SignalVine records that a participant texted STOP: the CRM's "
        "value would re-activate them (opt-outs are SignalVine's to record; syncd pulls "
        "them back as unsubscribes)",
    }
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {"phone": "phone"}
    needs = ("customer_id", "phone")
    streams = ("unsubscribes",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        table = f"vendors.{self.name}"
        if self.config.mapping.metadata:
            raise ConfigError(
                "SignalVine has no metadata: map every program variable in [fields]",
                file=str(self.config.mapping.path),
                table="metadata",
            )
        self.program: str = self.opts["program"]
        self.columns = list(self.config.mapping.fields)
        existing = self.opts["existing"]
        if existing == "all":
            # the ids a row is matched on, never among what it updates: signalvine.md's own
            # example has signalvine_id in the header, not in `existing`, and the SDK, whose
            # `existing` is every column, warns that "including the signalvine_id at all
            # introduces mayhem"
            self.existing: str | list[str] = [c for c in self.columns if c not in KEYS]
        elif existing == "ignore":
            self.existing = "ignore"
        elif (
            isinstance(existing, list)
            and existing  # docbox: "one or more values in the header row"
            and len(set(existing)) == len(existing)
            and set(existing) <= set(self.columns)
            and "signalvine_id" not in existing
        ):
            self.existing = [str(e) for e in existing]
        else:
            raise ConfigError(
                f"must be 'all', 'ignore' or a list of mapped variables, each once and "
                f"never signalvine_id (the participant's id), not {existing!r}",
                table=table,
                key="existing",
                hint=f"mapped variables: {', '.join(self.columns)} (none to update: 'ignore')",
            )
        if self.opts["new"] == "ignore" and self.existing == "ignore":
            raise ConfigError(
                'new and existing are both "ignore": SignalVine would ignore every row',
                table=table,
                key="existing",
                hint='set new = "add", or existing = "all" or a list of variables to update',
            )
        self.non_ascii: str = self.opts["non_ascii"]
        self.http.session.auth = SignalVineAuth(self.opts["token"], self.opts["secret"], self.clock)

    # --- requests ----------------------------------------------------------------------
    def call(self, method: str, path: str, payload: Any, **kwargs: Any) -> requests.Response:
        """A signed request, `payload` sent as compact JSON; a refused signature becomes an
        AuthError that says so."""
        with self._signed():
            return self._send(method, path, payload, **kwargs)

    def read(self, path: str, **kwargs: Any) -> dict[str, Any]:
        """A signed GET's JSON object, from a 200 only (the SDK's every read, sdk.py:
        `if r.status_code == 200` else APIError); another 2xx, an answer cut short or half
        there is asked again (`HttpClient.read`)."""
        with self._signed():
            return self.http.read("GET", path, dict, status=200, **kwargs)

    @contextlib.contextmanager
    def _signed(self) -> Iterator[None]:
        """A refused signature as an AuthError that says so."""
        try:
            yield
        except AuthError as exc:
            raise AuthError(
                f"SignalVine refused the request signature ({exc.reason}): the token or the "
                "secret is wrong, or this host's clock is off",
                vendor=self.name,
                status=exc.status,
                hint="check token and secret in [vendors.signalvine]; "
                "the secret signs every request and is never sent",
            ) from None

    def _send(self, method: str, path: str, payload: Any, **kwargs: Any) -> requests.Response:
        """Send in the current non-ASCII form; if refused, and the other form is another
        text, once in that one, which is then kept."""
        body = compact(payload, self.non_ascii)
        try:
            return self.http.request(method, path, data=body, **kwargs)
        except AuthError:
            other = "escape" if self.non_ascii == "raw" else "raw"
            retry = compact(payload, other)
            if retry == body:
                raise
            resp = self.http.request(method, path, data=retry, **kwargs)
            self.log.warning(
                "signature_form",
                refused=self.non_ascii,
                accepted=other,
                hint=f'set non_ascii = "{other}" in [vendors.signalvine]',
            )
            self.non_ascii = other
            return resp

    def check(self) -> str:
        """Read the program's schema: proves the signature, and that every field exists."""
        schema = self.read(f"/v1/programs/{self.program}", params={"type": "schema"})
        fields = schema.get("fields") or []
        names = {str(f.get("name")) for f in fields if isinstance(f, dict)}
        missing = [c for c in self.columns if c not in names and c != "signalvine_id"]
        if missing:
            raise FatalError(
                f"program {self.program} has no variable {', '.join(missing)}",
                vendor=self.name,
                hint="map only the program's variables (Programs -> Program Settings)",
            )
        return f"signature accepted; program {self.program} has every mapped variable"

    # --- push --------------------------------------------------------------------------
    def encoded_size(self, contact: Contact) -> int:
        """The contact's CSV line as it appears JSON-escaped in the body."""
        return len(json.dumps(csv_text([self._values(contact)]))) - 2

    def _values(self, contact: Contact) -> list[str]:
        return [contact.fields.get(c, "") for c in self.columns]

    def payload(self, rows: Sequence[Contact]) -> dict[str, Any]:
        """The upload's JSON body."""
        return {
            "program": self.program,
            "options": {
                "new": self.opts["new"],
                "mode": self.opts["mode"],
                "existing": self.existing,
                "absent": "ignore",
            },
            "participants": csv_text([self.columns, *(self._values(c) for c in rows)]),
        }

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        return self._follow([], _ordered(batch), on_job)

    def resume(self, job: str, batch: Sequence[Contact]) -> list[Result]:
        """Poll the command(s) recorded before a crash (the same rows, in the same order);
        never re-sends."""
        return self._follow(job.split(), _ordered(batch), None)

    def _upload(self, rows: Sequence[Contact]) -> str:
        """POST the rows as one CSV; the command's Location."""
        path = f"/v2/programs/{self.program}/participants"
        resp = self.call("POST", path, self.payload(rows))
        location = resp.headers.get("Location")
        if resp.status_code != 202 or not location:
            # signalvine.md: "If your API POST is accepted, you will receive a 202 response
            # back", the command's Location in its headers; the SDK takes nothing else
            came = f"HTTP {resp.status_code}" + ("" if location else " without a Location")
            raise OutcomeUnknownError(
                f"the upload answered {came}, not SignalVine's 202 with the command's "
                "Location: whether its rows were taken cannot be followed, so none is "
                "marked sent (they stay pending and go again: an upsert)",
                vendor=self.name,
                status=resp.status_code,
                hint="SignalVine's API (https://theseus-api.signalvine.com) answers 202 here: "
                "check base_url if it points elsewhere",
            )
        return location

    def _follow(
        self, recorded: list[str], rows: Sequence[Contact], on_job: OnJob | None
    ) -> list[Result]:
        """Upload the rows (or re-read the `recorded` commands, in order) and settle them;
        in row mode past 1,000 errors the rows without an error go again (`push` only)."""
        refused: list[Result] = []
        chain: list[str] = []
        while True:
            if len(chain) < len(recorded):
                location = recorded[len(chain)]
                chain.append(location)
                last = on_job is None and len(chain) == len(recorded)
            else:
                assert on_job is not None  # resume stops at its last recorded command
                if chain:
                    self.log.warning(
                        "re-uploading the rows without an error",
                        vendor=self.name,
                        refused=len(refused),
                        rows=len(rows),
                        hint="SignalVine adds nothing from an upload with over 1,000 errors",
                    )
                location = self._upload(rows)
                chain.append(location)
                on_job(" ".join(chain))
                last = len(chain) > MAX_REUPLOADS
            results, again = self._settle(location, rows)
            if not again or last:
                return refused + results
            refused += [r for r in results if r.status is Status.FAILED]
            rows = [c for c, r in zip(rows, results, strict=True) if r.status is not Status.FAILED]
            if not rows:
                return refused

    def _settle(self, location: str, rows: Sequence[Contact]) -> tuple[list[Result], bool]:
        """The rows' results (in their order), and whether the vendor added nothing for
        too many errors (row mode: the rest may go again)."""
        status = self._poll(location)
        if status is None:
            # still queued at SignalVine, which may run it after a newer upload of its rows
            # (no document orders commands): held with its Location recorded, as an
            # eSputnik session is; the next run polls it before anything newer of theirs goes
            reason = (
                f"command {location} not complete after {self.opts['poll_timeout']:g} s: {HELD}"
            )
            return [Result(c.key, Status.IN_FLIGHT, reason) for c in rows], False
        error, message = status.get("error"), status.get("message")
        if type(error) is not bool:
            raise RetriableError(
                f"command {location} completed with error {json.dumps(error)[:50]}, neither "
                "true nor false: nothing acknowledges its rows, which go again",
                vendor=self.name,
            )
        report = _report(message)
        listed = report.get("errors") if report is not None else None
        # signalvine.md: row mode "respond[s] with all errors", a completed command's
        # `message` "a JSON object describing the results": a report listing row errors
        # under `error: false` still refuses those rows
        if not error and not (isinstance(listed, list) and listed):
            results, over = self._taken(report, rows), False
        else:
            results, over = self._errors(message, rows)
        return self._elsewhere(status.get("created"), report, rows, results), over

    def _elsewhere(
        self,
        created: Any,
        report: dict[str, Any] | None,
        rows: Sequence[Contact],
        results: list[Result],
    ) -> list[Result]:
        """`results` with each row SENT that SignalVine applied to another participant
        FAILED. docbox (Upsert Participants): "`new = add`: any participants in the CSV that
        don't exist in Signal Vine will be added (i.e. customer_id & phone don't exist in
        the given Signal Vine program)": a row of a new customer_id whose phone a
        participant has may be taken as that participant, and update it, the report only
        counting it `updated`. The participants the command changed (`updated-after` its
        `created`) are read: one holding a row's phone under another customer_id holds it
        instead of the row's contact (a phone is one participant's), so the row's data is
        not the contact's at SignalVine. Read only when the report counts rows updated (or
        counts none)."""
        updated = report.get("updated") if report is not None else None
        sent = {r.key for r in results if r.status is Status.SENT}
        if not self.opts["check_phones"] or not sent or not isinstance(created, str):
            return results
        if type(updated) is int and updated <= 0:
            return results
        phones = {c.fields.get("phone"): c for c in rows if c.key in sent and c.fields.get("phone")}
        path = f"/v1/programs/{self.program}/participants"
        params: dict[str, str | int] = {
            "type": "full",
            "count": PAGE,
            "active": "all",
            "updated-after": created,
        }
        wrong: dict[str, str] = {}
        offset = 0
        before: list[Any] = []
        while True:
            page = self.read(path, params={**params, "offset": offset})
            items = page.get("items")
            items = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
            ids = [i.get("id") for i in items]
            if ids and ids == before:  # the same page again (an offset ignored)
                self.log.warning(
                    "the participants an upload changed could not be read to their end: "
                    "rows it applied to another participant's phone may be recorded sent",
                    vendor=self.name,
                    offset=offset,
                    hint="check_phones reads them after each upload that updated participants",
                )
                break
            before = ids
            for item in items:
                c = phones.get(item.get("phone"))
                other = item.get("customerId")
                if c is not None and isinstance(other, str) and other != c.fields["customer_id"]:
                    wrong[c.key] = (
                        f"SignalVine took the row for participant {item.get('id')} (customer_id "
                        f"{other!r}), which has its phone {item.get('phone')}, and updated that "
                        "one (docbox: a participant is new when \"customer_id & phone don't "
                        'exist"): give the contact a phone of its own in the CRM'
                    )
            following, total = page.get("nextOffset"), page.get("total")
            if not items or type(following) is not int or following <= offset:
                break
            if type(total) is int and following >= total:
                break
            offset = following
        return [
            Result(r.key, Status.FAILED, wrong[r.key]) if r.key in wrong else r for r in results
        ]

    def _poll(self, location: str) -> dict[str, Any] | None:
        """The completed command, or None if it is still running at `poll_timeout`."""
        started = self.clock.monotonic()
        delays = poll_delays(self.opts["poll_cap"], self.opts["poll_first"])
        while True:
            self.clock.sleep(next(delays))
            with self.polling(location, "command", "its command Locations"):
                # the SDK's get_location_status reads a command, running or complete, only
                # from a 200 and raises on any other status: another 2xx is no status
                status = self.read(location)
            complete = status.get("complete")
            if type(complete) is not bool:
                # signalvine.md shows every status with `"complete": false` while the command
                # runs and `true` once done; the SDK reads `status_json["complete"]`: an answer
                # without one is no command's status, never polled on as a running command
                raise RetriableError(
                    f"command {location} answered complete {json.dumps(complete)[:50]}, "
                    "neither true nor false: no command status, nothing acknowledges its "
                    "rows, which go again",
                    vendor=self.name,
                )
            if complete:
                return status
            if self.clock.monotonic() - started >= self.opts["poll_timeout"]:
                return None

    def _errors(self, message: Any, rows: Sequence[Contact]) -> tuple[list[Result], bool]:
        """Results of a command that completed with errors (in the rows' order), and
        whether it added nothing for being over 1,000 errors in row mode."""
        report = _report(message)
        errors = report.get("errors") if report is not None else None
        if unknown := _unknown_variables(message, errors, rows, self.columns):
            raise EndpointError(
                f"SignalVine does not know the variable(s) {', '.join(unknown)} in the upload's "
                f"header (Unrecognized variable): program {self.program} has no such variable, "
                "so no row of any batch can go; every contact stays pending",
                vendor=self.name,
                hint=f"map only the program's variables in [fields] of "
                f"{self.config.mapping.path} (`syncd check --online` names the missing ones)",
            )
        if not isinstance(errors, list) or not errors:
            raise self._unplaced([_text(message)], rows)
        # a customer_id that two rows share (mapped from a column that is not the CRM key)
        # or none names no row: put on one of them, the other's refusal was marked sent
        ids = Counter(c.fields.get("customer_id", "") for c in rows)
        by_customer = {i: c for c in rows if ids[i := c.fields.get("customer_id", "")] == 1 and i}
        reasons: dict[str, list[str]] = {}
        unplaced: list[str] = []
        for error in errors:
            item = error if isinstance(error, dict) else {"message": error}
            text = _text(item.get("message") or item.get("error") or item)
            # placed by customer_id only: whether `row` counts the header as row 1 is
            # documented nowhere, and a count guessed wrong put every such error on the
            # neighbouring contact, the refused row marked sent (row mode) and a good one
            # failed. A row alone names no contact: the upload is split down to it
            contact = by_customer.get(str(item.get("customer_id") or ""))
            row = item.get("row")
            if contact is not None:
                reasons.setdefault(contact.key, []).append(text)
            else:
                unplaced.append(f"row {row}: {text}" if row is not None else text)
        if unplaced:
            raise self._unplaced([t for c in rows for t in reasons.get(c.key, [])] + unplaced, rows)
        held_back = None
        over = False
        if self.opts["mode"] == "tx":
            held_back = f"not added: mode is tx and {len(errors)} row(s) of the upload failed"
        elif len(errors) > ROW_ERROR_LIMIT:
            over = True
            held_back = f"not added: {len(errors)} rows failed (over 1,000, nothing is added)"
        if held_back:
            taken = {c.key: Result(c.key, Status.PENDING, held_back) for c in rows}
        else:
            taken = {
                r.key: r for r in self._taken(report, [c for c in rows if c.key not in reasons])
            }
        results = [
            Result(c.key, Status.FAILED, "; ".join(reasons[c.key]))
            if c.key in reasons
            else taken[c.key]
            for c in rows
        ]
        return results, over

    def _taken(self, report: dict[str, Any] | None, rows: Sequence[Contact]) -> list[Result]:
        """The outcomes of the rows a completed command refused none of: SENT, unless
        `new` or `existing` is "ignore" and the report does not count 0 rows ignored.
        docbox: "`new = ignore`: any participants in the CSV that don't exist in Signal
        Vine will be ignored", "`existing = ignore`: any participants in the CSV that exist
        in Signal Vine will be ignored"; its report counts them and names none. Every row
        ignored: all SKIPPED (SignalVine did not take their data). Some: the upload is
        refused whole (a FatalError), which the delivery loop splits until each part is
        taken or ignored whole (the rows go again: an upsert). Under `existing = "ignore"`
        the rows the upload added are participants once it ran, so no upload tells them
        from those ignored: some ignored skip them all, none recorded sent that SignalVine
        may not hold. No count: nothing can be told."""
        if (self.opts["new"] == "add" and self.existing != "ignore") or not rows:
            return [Result(c.key, Status.SENT) for c in rows]  # every row added or updated
        ignored = report.get("ignored") if report is not None else None
        if type(ignored) is not int or ignored < 0:
            raise EndpointError(
                f"SignalVine's command report counts no rows ignored (ignored "
                f'{json.dumps(ignored)[:50]}): with new or existing = "ignore" nothing tells '
                "which rows it took, so none is marked sent; every contact stays pending",
                vendor=self.name,
                hint='set new = "add" and existing = "all" (or a list of variables) in '
                "[vendors.signalvine]",
            )
        if ignored == 0:
            return [Result(c.key, Status.SENT) for c in rows]
        if ignored < len(rows) and self.existing == "ignore":
            # the rows it added are participants now: uploaded again, every one is ignored,
            # and which were added is told by nothing (splitting only spends uploads)
            reason = (
                "SignalVine added it, or ignored it as a participant already (existing = "
                f'"ignore"): it ignored {ignored} of the {len(rows)} rows of the upload and '
                "names none; not recorded sent"
            )
            return [Result(c.key, Status.SKIPPED, reason) for c in rows]
        if ignored < len(rows):
            raise FatalError(
                f"SignalVine ignored {ignored} of the {len(rows)} rows of the upload "
                f"({self._ignoring()}) and its report names none: none is marked sent",
                vendor=self.name,
            )
        reason = f"SignalVine ignored it: {self._ignoring()}; not sent"
        return [Result(c.key, Status.SKIPPED, reason) for c in rows]

    def _ignoring(self) -> str:
        """What the options make SignalVine ignore, in the words of a skip reason."""
        said = []
        if self.opts["new"] == "ignore":
            said.append(
                f'new = "ignore" and program {self.program} has no participant with '
                "its customer_id or phone"
            )
        if self.existing == "ignore":
            said.append(
                f'existing = "ignore" and it is a participant of program {self.program} already'
            )
        return ", or ".join(said)

    def _unplaced(self, texts: list[str], rows: Sequence[Contact]) -> FatalError:
        """A command's errors that name no customer_id of it (a message that is no import
        report, an error naming a row alone): the upload refused as a whole, which the
        delivery loop splits down to the rows it refuses (one row alone is failed with them,
        and the same refusal five times in a row stops SignalVine). Failing every row would
        fail the rows row mode added and the good rows tx mode held back, run after run
        until they are dead."""
        return FatalError(
            f"SignalVine refused the upload of {len(rows)} row(s) with errors that name no "
            f"customer_id of it: {'; '.join(texts)}"[:500],
            vendor=self.name,
        )

    # --- pull --------------------------------------------------------------------------
    def pull(self, stream: str, since: str | None, until: datetime) -> Iterator[Page]:
        if stream != "unsubscribes":
            yield from super().pull(stream, since, until)
            return
        try:
            start = _instant(since) if since else EPOCH
        except ValueError:
            raise FatalError(
                f"cursor {since!r} is not an ISO date or timestamp", vendor=self.name
            ) from None
        after = timestamp(start)
        newest: datetime | None = None
        read = False
        # each participant read, by id: `newest` once the page it was first on was read
        first: dict[Any, datetime | None] = {}
        moved: list[datetime | None] = []  # `first` of each participant read again
        offset = 0
        path = f"/v1/programs/{self.program}/participants"
        before: tuple[list[Any], int] = ([], 0)  # the ids of the page before, its offset
        empty: list[int] = []  # the offsets of the empty pages in a row up to this one
        while True:
            params: dict[str, str | int] = {
                "type": "full",
                "count": PAGE,
                "offset": offset,
                "active": "all",
                "updated-after": after,
            }
            page = self.read(path, params=params)
            listed = page.get("items")
            if listed is not None and not isinstance(listed, list):
                # an object or a text read as an empty page (the cursor then went past its
                # participants), and a number stopped the whole pull: the page is unreadable
                raise RetriableError(
                    f"GET {path} at offset {offset} answered items {json.dumps(listed)[:60]}, "
                    f"not a list: the unsubscribes stream stays at {after}",
                    vendor=self.name,
                )
            items = [i for i in listed or [] if isinstance(i, dict)]
            read = read or bool(items)
            ids = [pid for i in items if (pid := _id(i)) is not None]
            # a page that reads nothing new, for ever, looks alive to the watchdog (every
            # request is a sign of life): the same page again at the next offset (a server
            # that ignores `offset`), or empty pages without end
            empty = [] if items else [*empty, offset]
            stuck = (
                f"answered the {len(ids)} participants it answered at offset {before[1]} "
                "again, in the same order"
                if ids and ids == before[0]
                else f"answered {len(empty)} empty pages in a row from offset {empty[0]}"
                if len(empty) >= EMPTY_RUN
                else None
            )
            if stuck:
                raise RetriableError(
                    f"GET {path} at offset {offset} {stuck}: the participant list does not "
                    f"move on; the unsubscribes stream stays at {after}",
                    vendor=self.name,
                )
            before = (ids, offset)
            moved += [first[pid] for pid in ids if pid in first]
            for when in filter(None, (_changed(i) or _time(i.get("created")) for i in items)):
                newest = when if newest is None else max(newest, when)
            for pid in ids:
                first.setdefault(pid, newest)
            records = [_unsubscribe(i) for i in items if _opted_out(i)]
            unread = [i.get("id") for i in items if _opted_out(i) is None]
            if unread:  # not taken for an opt-out, nor silently passed over
                self.log.warning(
                    "participants whose active is neither true nor false: not read as opt-outs",
                    vendor=self.name,
                    count=len(unread),
                    ids=unread[:5],
                    hint="SignalVine documents active as a boolean; ask them what these mean",
                )
            following, total = page.get("nextOffset"), page.get("total")
            if following is not None and not _last_page(page, offset, len(items)):
                # more follow, even after an empty page
                yield Page(records, after)  # the list's order is unknown: no cursor yet
                beyond = type(total) is int and type(following) is int and following >= total
                if type(following) is not int or following <= offset or beyond:
                    raise RetriableError(
                        f"GET {path} at offset {offset} answered nextOffset "
                        f"{json.dumps(following)}, not an offset after it"
                        + (f" below the list's total {total}" if beyond else "")
                        + ": the participant list cannot be read on; the unsubscribes stream "
                        f"stays at {after}",
                        vendor=self.name,
                    )
                offset = following
                continue
            lookback = timedelta(seconds=self.opts["pull_lookback"])
            if newest is not None and newest > until:
                # a time past the pull's own (a participant edited by hand, a clock far
                # ahead) is no place to read on from: past it nothing would be read again
                if newest - until > AHEAD:  # not two clocks a few seconds apart
                    self.log.warning(
                        "a participant's time is after this pull's: the cursor goes no "
                        "further than the pull's time",
                        vendor=self.name,
                        newest=timestamp(newest),
                        until=timestamp(until),
                    )
                newest = until
            cursor = start
            if moved:
                # a participant read on an earlier page was read again: it changed while the
                # list was paged and went to its end, and those after it moved one place back
                # under the offsets, so one at a later page's offset may have been on no page.
                # All up to the end of the first page it was on was read: the cursor goes no
                # further (the next pull reads on from there)
                bound = None if None in moved else min(m for m in moved if m is not None)
                if bound is not None:
                    cursor = max(start, min(bound, until) - lookback)
                self.log.warning(
                    "participants changed while the list was read: the cursor goes no further "
                    "than the first page one of them was on",
                    vendor=self.name,
                    read_again=len(moved),
                    cursor=timestamp(cursor),
                )
            elif read:  # past what was read; if no item had a time, nothing read is after `until`
                last = until if newest is None else newest
                cursor = max(start, last - lookback)
            yield Page(records, timestamp(cursor))
            return


def _ordered(batch: Sequence[Contact]) -> list[Contact]:
    """Rows in CRM-key order: the same batch always gives the same row numbers."""
    return sorted(batch, key=lambda c: c.key)


def _last_page(page: dict[str, Any], offset: int, read: int) -> bool:
    """Whether a page whose `nextOffset` is set is the list's last all the same: its
    `nextOffset` is no offset after the page's and the list ends here (by `lastOffset`,
    `total`, or a short page). Docbox (`content/api.md`) shows every one-page list as
    `"total": 2, ..., "nextOffset": 0, "prevOffset": 0, "lastOffset": 0, "pages": 1`."""
    following, total, final = page.get("nextOffset"), page.get("total"), page.get("lastOffset")
    if type(following) is not int or following > offset:
        return False
    return (
        (type(final) is int and offset >= final)
        or (type(total) is int and offset + read >= total)
        or read < PAGE
    )


def _opted_out(item: dict[str, Any]) -> bool | None:
    """Whether a participant opted out (`active: false`; the text "false" too); None when
    its `active` reads as neither true nor false."""
    active = item.get("active")
    if isinstance(active, str) and active.strip().lower() in ("true", "false"):
        active = active.strip().lower() == "true"
    return not active if isinstance(active, bool) else None


def _unsubscribe(item: dict[str, Any]) -> dict[str, Any]:
    """An opted-out participant as an unsubscribe; `at` None when its time is unknown."""
    profile = {str(p.get("name")): p for p in _profile(item)}
    when = _time(profile.get("active", {}).get("updated")) or _changed(item)
    at = timestamp(when) if when else None
    email = profile.get("email", {}).get("value")
    pid = _id(item)
    return {
        # no id: None, which `syncd.pull.clean` refuses (a "None" would merge them all)
        "vendor_id": None if pid is None else f"{pid}@{at}" if at else str(pid),
        "external_key": item.get("customerId") or None,
        "email": email or None,
        "phone": item.get("phone") or None,
        "channel": "sms",
        "at": at,
    }


def _id(item: dict[str, Any]) -> str | int | None:
    """The participant's id: a text or a number; None for none, or for an object or a list
    (which, unhashable, stopped the whole pull as the pages were compared)."""
    pid = item.get("id")
    return pid if isinstance(pid, str | int) and not isinstance(pid, bool) and pid != "" else None


def _instant(text: str) -> datetime:
    """An ISO date or timestamp (a bare date is its midnight UTC)."""
    when = datetime.fromisoformat(text)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _time(value: Any) -> datetime | None:
    """A vendor timestamp, or None if absent or unreadable."""
    try:
        return _instant(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):  # OverflowError: a time UTC cannot hold (year 1 at +01:00)
        return None


def _profile(item: dict[str, Any]) -> list[dict[str, Any]]:
    """The objects of the item's `profile`; none from one that is no list (a number in it
    stopped the whole pull)."""
    profile = item.get("profile")
    return [p for p in profile if isinstance(p, dict)] if isinstance(profile, list) else []


def _changed(item: dict[str, Any]) -> datetime | None:
    """The participant's last change: `updatedAt`, else its newest `profile[].updated`."""
    updated = _time(item.get("updatedAt"))
    if updated is None:
        stamps = [t for t in (_time(p.get("updated")) for p in _profile(item)) if t]
        updated = max(stamps, default=None)
    return updated


def _unknown_variables(
    message: Any, errors: Any, rows: Sequence[Contact], header: list[str]
) -> list[str]:
    """The header's variables a command says SignalVine does not know ("Unrecognized
    variable: x"): only from its report's `errors` (the whole message where it has none)
    naming no customer_id of the upload, only words no row of the upload holds, and only
    names of the header's columns. A row's own refused value quoting those words ("Could
    not parse 'Unrecognized variable: first_name' as Boolean") stopped SignalVine at every
    run, every contact pending: read from the whole message, or from an error naming only
    its row, it is that row's refusal (`_errors` splits the upload down to it)."""
    if isinstance(errors, list):
        ids = {str(c.fields.get("customer_id") or "") for c in rows} - {""}
        texts = [
            _text(e)
            for e in errors
            if not (isinstance(e, dict) and str(e.get("customer_id") or "") in ids)
        ]
    else:
        texts = [_text(message)]
    found = list(UNRECOGNIZED.finditer(" ".join(texts)))
    if found:  # rare: the values are looked at only then
        values = [v.lower() for c in rows for v in c.fields.values() if isinstance(v, str)]
        found = [m for m in found if not any(m[0].lower() in v for v in values)]
    return [name for name in dict.fromkeys(m[1] for m in found) if name in header]


def _report(message: Any) -> dict[str, Any] | None:
    """The command's `message` as an import report (an object, or a string holding one)."""
    if isinstance(message, str):
        try:
            message = loads(message)
        except ValueError:
            return None
    return message if isinstance(message, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
