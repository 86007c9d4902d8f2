"""SignalVine simulator: signed requests, CSV participant uploads as async commands, reads.

Written from `signalvine.md` and the SignalVine section of NOTES.md:
- Every request must carry `Authorization: SignalVine <token>:<signature>` and
  `SignalVine-Date: <ISO 8601 with an offset>`, its seconds with at least 3 decimals
  (docbox's notes: "The timestamp parameter must include milliseconds to 3 digits"); the signature is base64(HMAC-SHA256(secret,
  lower("token\\nMETHOD\\npath\\nbody\\ntimestamp"))) where `body` is not the bytes
  received but the compact re-serialisation of the JSON parsed from them (no spaces after
  `,` and `:`, keys in their order), and empty for a GET: the server's own way, which the
  vendor's Scala and `jq -c` samples reproduce and the Python SDK relies on (it sends
  spaced JSON and signs it compact). Whether that form escapes non-ASCII is unknown, so it
  is a switch: `non_ascii="raw"` (UTF-8 as is: Scala's `Json.stringify`, `jq -c`) or
  `"escape"` (`\\u00e9`: Python's `json.dumps`, as the SDK signs). A wrong token or secret,
  a bad signature, or a date more than `max_skew` seconds from the simulator's clock
  answers 401 "Unauthorized" (like the real API, it says no more); a body sent as
  `application/json` that is not JSON cannot be checked and answers 400. Only a JSON body
  is re-serialised: docbox's `sign_request` compacts the body with `jq -c` only for JSON,
  and with `--text` ("Post data as text instead of json", `Content-Type: text/plain`)
  signs it as sent, so the simulator signs any other body as received. The upload takes
  only `application/json` (docbox's request shows it; the API is a Play application, by
  its Scala sample, whose JSON parser answers 415 to another type): another is 415.
- `POST /v2/programs/{program}/participants`: `{"program", "options": {"new": "add|ignore",
  "mode": "tx|row", "existing": "ignore" | [variables], "absent": "ignore"}, "participants":
  "<CSV text>"}`; every option is required, `existing` "ignore" or one or more names,
  `absent` must be "ignore", the CSV at most
  10,000,000 bytes (else 413). Answers 202 with a `Location` of the command ("If your API
  POST is accepted, you will receive a 202 response back", signalvine.md; docbox names no
  status for it), never another 2xx, and no body (the article shows none; the command's
  status is read from the Location).
- `GET {Location}`: 200 `{"commandId", "name", "from", "created", "complete", "error"}`,
  whether the command is running or complete (the SDK's `get_location_status` reads both
  from a 200 and raises on any other status; signalvine.md names none); the
  command completes at the `polls_to_complete`-th poll (0: never), and only then is the
  CSV applied. A completed command carries `message`: `{"added", "updated", "ignored",
  "errors": [{"row", "customer_id", "message"}]}` where `row` counts CSV records (a header
  problem such as "Unrecognized variable: x" is row 1), and `trace` / `processor` when
  `error` is true. How `row` counts is documented nowhere (not in signalvine.md, docbox or
  the SDK): a switch, `first_row`, the number of the first data row (2, the header being
  row 1; 1 if data rows are counted alone); and `errors_name_customer=False` answers a
  row's error with its `row` alone (`customer_id` null). What the `message` holds is not
  documented beyond "a JSON object describing the errors" (signalvine.md), and the SDK's
  tests, run against the real API, find SignalVine's words in it with `in`, as in a text:
  so it is a switch, `message_form="report"` (that object) or `"text"` (each error's
  message, one a line, naming no row).
- Rows: matched on `signalvine_id`, else `customer_id`, else `phone`. A new participant
  needs a valid E.164 phone no one else has. A row whose `customer_id` no participant has
  but whose phone one has is read two ways, a switch (`phone_taken`): docbox (content/api.md,
  Upsert Participants) says "`new = add`: any participants in the CSV that don't exist in
  Signal Vine will be added (i.e. customer_id & phone don't exist in the given Signal Vine
  program)", so such a row may "exist" by its phone and be that participant: `"update"`
  writes the row's `existing` variables to the participant holding the phone (ignored
  under `existing = "ignore"`, counted `updated`), whose customer_id stays unless
  `existing` names it; the SDK's tests, run against the real API, say "if the customer_id
  is not included, but the phone # already exists => error" and its docstring "It's
  mayhem in SV if a phone already exists": `"refuse"` (the default) fails the row, "phone
  ... is already used by participant <id>". Nothing more is documented. Boolean variables
  must parse, and only a `Maybe (Boolean)` may be empty (the SDK's `convert_sv_types`: a type without "Maybe" is
  required; its tests, against the real API: "Could not parse 'sure why not' as Maybe
  (Boolean)"); the refusal names the variable's type. `tx` mode adds
  nothing if any row failed; `row` mode adds the good rows unless there were more than
  1,000 errors. `faults.reject(customer_id or phone, reason)` makes that row fail.
- `GET /v1/programs/{id}?type=schema` → `{"fields": [{"name", "type"}]}`.
- `GET /v1/programs/{id}/participants?type=full&count=..&offset=..&active=all&updated-after=..`:
  items updated at or after `updated-after` (inclusive), ordered by (last update, id), in
  the docbox envelope `items, links, total, offset, count` (the page size: 25 unless
  asked), `nextOffset, prevOffset, lastOffset, pages` (`links`: `{rel, uri}` for self,
  first, prev, next and last, each the list's path, as docbox's one-page example has
  them); on the last page `nextOffset` is no offset
  after the page's (docbox's one-page examples: 0, as `lastOffset`), never null; `count`
  at most 500; without `active=all` only active participants. An item holds docbox's
  `id, customerId, programId, phone` (`customerId` "" when the participant has none, as
  docbox shows it, never null), and that is all unless `type=full` asks for the full
  representation (docbox: "either the simple or full representation"), which adds, as the
  SDK's own fixture has it, `active, groups, created`, and `profile[{name,
  type, updated, value}]` listing every program variable with the time it was last
  written; there is no `updatedAt`. `opt_out()` (or `opt_out_every`: every n-th new
  participant, for the demo) makes a participant inactive and stamps its `active` variable.
  `seed()` holds a participant as if an earlier upload had made it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import io
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response

PROGRAM = "ed1b9efb-0ccf-4ea0-9585-0d7e57f28869"
MAX_CSV_BYTES = 10_000_000
ROW_ERROR_LIMIT = 1000
MAX_PAGE = 500
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
# seconds with a fraction of at least 3 digits (the Python SDK's isoformat() sends 6)
MILLIS = re.compile(r"T\d{2}:\d{2}:\d{2}\.\d{3,}")
# docbox (content/api.md): "you can append the type parameter to any route to select either
# the simple or full representation"; its participant lists show the simple one
SIMPLE = ("id", "customerId", "programId", "phone")
# the schema's type of a phone: the SDK's fixture of a real participant says "Phone"
PHONES = ("Phone", "PhoneNumber")
BOOLEAN_TYPES = ("Boolean", "Maybe (Boolean)")
BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}
VARIABLES: dict[str, str] = {
    "customer_id": "String",
    "phone": "PhoneNumber",
    "first_name": "String",
    "last_name": "String",
    "email": "String",
    "city": "String",
    "country": "String",
    "language": "String",
    "segment": "String",
    "store": "String",
    "notes": "String",
    "vip": "Boolean",  # a program's own Boolean variable
    "active": "Boolean",
}


def _stamp(when: datetime) -> str:
    utc = when.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass
class Command:
    id: str
    options: dict[str, Any]
    csv: str
    created: str
    polls: int = 0
    result: dict[str, Any] | None = None


@dataclass
class Participant:
    id: str
    customer_id: str
    phone: str
    active: bool
    created: datetime
    profile: dict[str, str] = field(default_factory=dict)
    written: dict[str, datetime] = field(default_factory=dict)  # variable -> last write

    @property
    def updated(self) -> datetime:
        return max([self.created, *self.written.values()])

    def write(self, values: dict[str, str], at: datetime) -> None:
        self.profile.update(values)
        self.written.update(dict.fromkeys(values, at))

    def item(self, variables: dict[str, str], program: str) -> dict[str, Any]:
        profile = [
            {
                "name": name,
                "type": kind,
                "updated": _stamp(self.written.get(name, self.created)),
                "value": self.profile.get(name, ""),
            }
            for name, kind in variables.items()
        ]
        # docbox's items (content/api.md, "Participants Response"): `"customerId": ""` for
        # a participant without one (never null), and the `programId` it belongs to
        return {
            "id": self.id,
            "customerId": self.customer_id,
            "programId": program,
            "phone": self.phone,
            "active": self.active,
            "groups": [],
            "created": _stamp(self.created),
            "profile": profile,
        }


class SignalVineSim(Simulator):
    name = "signalvine"
    rules: ClassVar[list[Rule]] = [
        Rule("/v2/programs/<program>/participants", methods=["POST"], endpoint="upload"),
        Rule("/v2/commands/<command>", methods=["GET"], endpoint="command"),
        Rule("/v1/programs/<program>/participants", methods=["GET"], endpoint="participants"),
        Rule("/v1/programs/<program>", methods=["GET"], endpoint="program_info"),
    ]

    def __init__(
        self,
        *,
        token: str = "sandbox-token",
        secret: str = "sandbox-secret",
        program: str = PROGRAM,
        variables: dict[str, str] | None = None,
        polls_to_complete: int = 1,
        max_skew: float = 300.0,
        non_ascii: str = "raw",
        message_form: str = "report",
        first_row: int = 2,
        errors_name_customer: bool = True,
        phone_taken: str = "refuse",
        opt_out_every: int = 0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.token = token
        self.secret = secret
        self.program = program
        self.variables = dict(variables or VARIABLES)
        self.polls_to_complete = polls_to_complete
        self.max_skew = max_skew
        if non_ascii not in ("raw", "escape"):
            raise ValueError(f"non_ascii is raw or escape, not {non_ascii!r}")
        self.non_ascii = non_ascii
        if message_form not in ("report", "text"):
            raise ValueError(f"message_form is report or text, not {message_form!r}")
        self.message_form = message_form
        self.first_row = first_row
        self.errors_name_customer = errors_name_customer
        if phone_taken not in ("refuse", "update"):
            raise ValueError(f"phone_taken is refuse or update, not {phone_taken!r}")
        self.phone_taken = phone_taken
        self.opt_out_every = opt_out_every
        self.now: Callable[[], datetime] = now or (lambda: datetime.now(UTC))
        self.reset_state()

    def reset_state(self) -> None:
        self._participants: dict[str, Participant] = {}
        self._by_customer: dict[str, str] = {}
        self._by_phone: dict[str, str] = {}
        self._commands: dict[str, Command] = {}
        self._added = 0

    # --- what tests and the demo read or do -------------------------------------------
    def participants_by_customer(self) -> dict[str, dict[str, Any]]:
        """customer_id → the participant flattened: id, customerId, phone, active, variables."""
        with self.lock:
            return {
                p.customer_id: {
                    **p.profile,
                    "id": p.id,
                    "customerId": p.customer_id,
                    "phone": p.phone,
                    "active": p.active,
                }
                for p in self._participants.values()
                if p.customer_id
            }

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "participants": len(self._participants),
                "inactive": sum(1 for p in self._participants.values() if not p.active),
                "commands": {
                    c.id: ("complete" if c.result else "running") for c in self._commands.values()
                },
            }

    def seed(self, customer_id: str, phone: str, **variables: str) -> str:
        """Hold a participant as an earlier upload made it (now); its id."""
        with self.lock:
            pid = str(uuid.uuid4())
            self._apply(("add", pid, {"customer_id": customer_id, "phone": phone, **variables}))
            return pid

    def opt_out(self, phone_or_customer_id: str, at: datetime | None = None) -> None:
        """The participant texted STOP: inactive from `at` (default now)."""
        with self.lock:
            pid = self._by_customer.get(phone_or_customer_id) or self._by_phone.get(
                phone_or_customer_id
            )
            if pid is None:
                raise KeyError(f"no participant {phone_or_customer_id!r}")
            participant = self._participants[pid]
            participant.active = False
            participant.write({"active": "false"}, at or self.now())

    # --- signatures -------------------------------------------------------------------
    def _refused(self, request: Request) -> Response | None:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        token, _, signature = credentials.partition(":")
        date = request.headers.get("SignalVine-Date", "")
        if scheme != "SignalVine" or token != self.token or not signature or not date:
            return Response("Unauthorized", 401)
        if not MILLIS.search(date):  # docbox: "must include milliseconds to 3 digits"
            return Response("Unauthorized", 401)
        try:
            when = datetime.fromisoformat(date)
        except ValueError:
            return Response("Unauthorized", 401)
        if when.tzinfo is None or abs((self.now() - when).total_seconds()) > self.max_skew:
            return Response("Unauthorized", 401)
        if request.method == "GET":
            body: str | None = ""
        elif request.mimetype == "application/json":
            body = self._signed_body(request.get_data())
            if body is None:
                return json_response({"error": "the body is not JSON"}, 400)
        else:  # docbox's sign_request --text: a body that is no JSON is signed as sent
            body = request.get_data().decode("utf-8", "replace")
        text = f"{token}\n{request.method}\n{request.path}\n{body}\n{date}".lower()
        digest = hmac.new(self.secret.encode(), text.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), signature):
            return Response("Unauthorized", 401)
        return None

    def _signed_body(self, data: bytes) -> str | None:
        """The body as the server signs it: the parsed JSON re-serialised compactly."""
        try:
            parsed = json.loads(data)
        except ValueError:
            return None
        ensure_ascii = self.non_ascii == "escape"
        return json.dumps(parsed, separators=(",", ":"), ensure_ascii=ensure_ascii)

    def _not_found(self, program: str) -> Response:
        return json_response({"error": f"program {program} not found"}, 404)

    # --- upload -----------------------------------------------------------------------
    def upload(self, request: Request, program: str) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if program != self.program:
            return self._not_found(program)
        if request.mimetype != "application/json":  # a JSON body, as the article's
            return json_response({"error": "Content-Type must be application/json"}, 415)
        try:
            body = json.loads(request.get_data())
        except ValueError:
            return json_response({"error": "the body is not JSON"}, 400)
        if not isinstance(body, dict):
            return json_response({"error": "the body must be a JSON object"}, 400)
        if body.get("program") != program:
            return json_response({"error": "program must be the program id of the path"}, 400)
        problem = _bad_options(body.get("options"))
        if problem:
            return json_response({"error": problem}, 400)
        text = body.get("participants")
        if not isinstance(text, str) or not text.strip():
            return json_response({"error": "participants must be the CSV file as a string"}, 400)
        if len(text.encode("utf-8")) > MAX_CSV_BYTES:
            return json_response({"error": "the CSV file is larger than 10 MB"}, 413)
        command = Command(str(uuid.uuid4()), body["options"], text, _stamp(self.now()))
        with self.lock:
            self._commands[command.id] = command
        # the article shows the 202 and its Location header, no body: none is given, so
        # no client can come to read one
        return Response(b"", 202, {"Location": f"/v2/commands/{command.id}"})

    def command(self, request: Request, command: str) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        with self.lock:
            found = self._commands.get(command)
            if found is None:
                return json_response({"error": f"command {command} not found"}, 404)
            found.polls += 1
            if found.result is None and 0 < self.polls_to_complete <= found.polls:
                found.result = self._run(found)
            return json_response(self._status(found))

    def _status(self, command: Command) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "commandId": command.id,
            "name": "import-participants",
            "from": self.token,
            "created": command.created,
            "complete": command.result is not None,
            "error": False,
        }
        answer.update(command.result or {})
        if self.message_form == "text" and command.result is not None:
            # the errors' words, one a line, naming no row (as the SDK's tests read them)
            answer["message"] = "\n".join(e["message"] for e in answer["message"]["errors"])
        return answer

    def _run(self, command: Command) -> dict[str, Any]:
        """Apply one uploaded CSV (called with the lock held); the command's outcome."""
        options = command.options
        try:
            rows = list(csv.reader(io.StringIO(command.csv, newline="")))
        except csv.Error as exc:
            return _outcome([{"row": None, "customer_id": None, "message": f"bad CSV: {exc}"}])
        header = [h.strip() for h in rows[0]]
        existing = options["existing"]
        named = header + (existing if isinstance(existing, list) else [])
        known = {*self.variables, "signalvine_id"}
        unknown = [n for n in dict.fromkeys(named) if n not in known]
        if unknown:
            return _outcome(
                [
                    {"row": 1, "customer_id": None, "message": f"Unrecognized variable: {n}"}
                    for n in unknown
                ]
            )
        if len(set(header)) != len(header):
            return _outcome([{"row": 1, "customer_id": None, "message": "duplicate column"}])
        if not {"signalvine_id", "customer_id", "phone"} & set(header):
            message = "the CSV needs a signalvine_id, customer_id or phone column"
            return _outcome([{"row": 1, "customer_id": None, "message": message}])
        plan = _Plan(self)
        errors: list[dict[str, Any]] = []
        for number, values in enumerate(rows[1:], start=self.first_row):
            if not values:
                continue
            record = dict(zip(header, values, strict=False))
            error = (
                f"the row has {len(values)} values, the header {len(header)}"
                if len(values) != len(header)
                else plan.row(record, options)
            )
            if error:
                customer = record.get("customer_id") if self.errors_name_customer else None
                errors.append({"row": number, "customer_id": customer or None, "message": error})
        if (options["mode"] == "tx" and errors) or len(errors) > ROW_ERROR_LIMIT:
            return _outcome(errors, ignored=plan.ignored)
        for op in plan.ops:
            self._apply(op)
        return _outcome(errors, added=plan.added, updated=plan.updated, ignored=plan.ignored)

    def _apply(self, op: tuple[str, str, dict[str, str]]) -> None:
        kind, pid, values = op
        now = self.now()
        if kind == "add":
            active = BOOLEANS.get(values.get("active", "true").lower() or "true", True)
            participant = Participant(
                pid, values.get("customer_id", ""), values["phone"], active, now
            )
            self._participants[pid] = participant
            self._added += 1
        else:
            participant = self._participants[pid]
            self._by_customer.pop(participant.customer_id, None)
            self._by_phone.pop(participant.phone, None)
            participant.customer_id = values.get("customer_id", participant.customer_id)
            participant.phone = values.get("phone", participant.phone)
            if "active" in values:
                participant.active = BOOLEANS.get(values["active"].lower(), participant.active)
        participant.write({k: v for k, v in values.items() if k != "signalvine_id"}, now)
        if participant.customer_id:
            self._by_customer[participant.customer_id] = pid
        self._by_phone[participant.phone] = pid
        if kind == "add" and self.opt_out_every and self._added % self.opt_out_every == 0:
            participant.active = False
            participant.write({"active": "false"}, now)

    # --- reads ------------------------------------------------------------------------
    def program_info(self, request: Request, program: str) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if program != self.program:
            return self._not_found(program)
        if request.args.get("type") == "schema":
            fields = [{"name": n, "type": t} for n, t in self.variables.items()]
            return json_response({"fields": fields})
        return json_response({"id": program, "name": "Sandbox program", "active": True})

    def participants(self, request: Request, program: str) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        if program != self.program:
            return self._not_found(program)
        args = request.args
        try:
            count = int(args.get("count", "25"))
            offset = int(args.get("offset", "0"))
            after = datetime.fromisoformat(args.get("updated-after", "1970-01-01T00:00:00Z"))
        except ValueError as exc:
            return json_response({"error": f"bad query parameter: {exc}"}, 400)
        if not 1 <= count <= MAX_PAGE or offset < 0:
            return json_response({"error": f"count 1 to {MAX_PAGE}, offset >= 0"}, 400)
        if after.tzinfo is None:
            after = after.replace(tzinfo=UTC)
        everyone = args.get("active") == "all"
        with self.lock:
            chosen = sorted(
                (
                    p
                    for p in self._participants.values()
                    if p.updated >= after and (everyone or p.active)
                ),
                key=lambda p: (p.updated, p.id),
            )
            items = [p.item(self.variables, program) for p in chosen[offset : offset + count]]
        if args.get("type") != "full":  # docbox: the simple representation unless asked
            items = [{k: i[k] for k in SIMPLE} for i in items]
        # docbox (content/api.md), every list's example: `"total": 2, "offset": 0, "count":
        # 25, "nextOffset": 0, "prevOffset": 0, "lastOffset": 0, "pages": 1` -- `count` is
        # the page size, and the last page's `nextOffset` is no offset after it (never null)
        total = len(chosen)
        last = (total - 1) // count * count if total else 0
        # docbox's `links`, one per rel, each `uri` the list's path (its one-page example
        # gives no query string; what a later page's links say is not shown)
        links = [
            {"rel": rel, "uri": request.path} for rel in ("self", "first", "prev", "next", "last")
        ]
        return json_response(
            {
                "items": items,
                "links": links,
                "total": total,
                "offset": offset,
                "count": count,
                "nextOffset": min(offset + count, last) if offset < last else offset,
                "prevOffset": max(offset - count, 0),
                "lastOffset": last,
                "pages": -(-total // count),
            }
        )


class _Plan:
    """What an upload would do, row by row, before anything is applied (for `tx`)."""

    def __init__(self, sim: SignalVineSim) -> None:
        self.sim = sim
        self.ops: list[tuple[str, str, dict[str, str]]] = []
        self.customers: dict[str, str] = {}  # staged by earlier rows of this CSV
        self.phones: dict[str, str] = {}
        self.staged: dict[str, str] = {}  # a new participant's id -> its row's customer_id
        self.added = self.updated = self.ignored = 0

    def find(self, record: dict[str, str]) -> str | None:
        sim = self.sim
        if record.get("signalvine_id"):
            pid = record["signalvine_id"]
            return pid if pid in sim._participants else None
        cid = record.get("customer_id", "")
        if cid:
            known = self.customers.get(cid) or sim._by_customer.get(cid)
            # docbox: new only when "customer_id & phone don't exist" (`phone_taken`)
            if known is not None or sim.phone_taken == "refuse":
                return known
        phone = record.get("phone", "")
        if not phone:
            return None
        return self.phones.get(phone) or sim._by_phone.get(phone)

    def row(self, record: dict[str, str], options: dict[str, Any]) -> str | None:
        """Plan one row; the error message if it cannot be applied."""
        reason = self.sim.faults.rejection(record.get("customer_id"), record.get("phone"))
        if reason:
            return reason
        pid = self.find(record)
        if pid is None:
            if options["new"] == "ignore":
                self.ignored += 1
                return None
            if not record.get("phone"):
                return "phone is required for a new participant"
            values = record
        else:
            if options["existing"] == "ignore":
                self.ignored += 1
                return None
            values = {k: v for k, v in record.items() if k in options["existing"]}
        error = self.check(values, pid)
        if error:
            return error
        if pid is None:
            pid = str(uuid.uuid4())
            self.staged[pid] = values.get("customer_id", "")
            self.ops.append(("add", pid, dict(values)))
            self.added += 1
        else:
            self.ops.append(("update", pid, dict(values)))
            self.updated += 1
        if values.get("customer_id"):
            self.customers[values["customer_id"]] = pid
        if values.get("phone"):
            self.phones[values["phone"]] = pid
        return None

    def check(self, values: dict[str, str], pid: str | None) -> str | None:
        for name, value in values.items():
            kind = self.sim.variables.get(name, "String")
            if kind in PHONES:
                if not PHONE.match(value):
                    return f"Could not parse {value!r} as {kind}"
                owner = self.phones.get(value) or self.sim._by_phone.get(value)
                if owner is not None and owner != pid:
                    if owner in self.staged:  # not a participant yet: name the row's customer
                        who = self.staged[owner] or "no customer_id"
                        return f"phone {value} is already used by an earlier row ({who})"
                    return f"phone {value} is already used by participant {owner}"
            elif (
                kind in BOOLEAN_TYPES
                and value.lower() not in BOOLEANS
                and (value or kind == "Boolean")
            ):
                return f"Could not parse {value!r} as {kind}"  # only a Maybe may be empty
        return None


def _bad_options(options: Any) -> str | None:
    if not isinstance(options, dict):
        return "options is required: new, mode, existing, absent"
    if options.get("new") not in ("add", "ignore"):
        return "options.new must be add or ignore"
    if options.get("mode") not in ("row", "tx"):
        return "options.mode must be row or tx"
    existing = options.get("existing")
    # docbox (content/api.md, Upsert Participants): "an array containing the profile field
    # names you wish to update (i.e. one or more values in the header row of the CSV file)"
    if existing != "ignore" and not (
        isinstance(existing, list) and existing and all(isinstance(x, str) for x in existing)
    ):
        return "options.existing must be ignore or an array of field names"
    if options.get("absent") != "ignore":
        return "options.absent must be ignore"
    return None


def _outcome(
    errors: list[dict[str, Any]], *, added: int = 0, updated: int = 0, ignored: int = 0
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "error": bool(errors),
        "message": {"added": added, "updated": updated, "ignored": ignored, "errors": errors},
    }
    if errors:
        result["trace"] = "ImportError: see message.errors\n  at sandbox.import"
        result["processor"] = "sandbox-importer-1"
    return result
