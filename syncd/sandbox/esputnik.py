"""eSputnik (Yespo) simulator: bulk contact import, import sessions, activity.

Written from `esputnik.md` and the vendor's OpenAPI 3 document (`esputnik-openapi.json`,
shipped beside this module; every request body is validated against its schemas):
- HTTP Basic auth, any user name, the API key as password (default "sandbox-key"); else 401.
- `POST /api/v1/contacts`: a body not sent as `application/json` (the spec's only
  request content type) is a 415 "Unsupported media type", as the spec lists; a body the
  `ContactsBulkUpdate` schema refuses is a 400 with the validator's message and where it
  points; so is a custom field id past the spec's int32, and so are more than 3000
  contacts (or none) and an `eventKeyForNewContacts` that is not latin letters and digits
  (the article's rule, stricter than the schema's). Contacts
  that cannot be imported (no channel, two channels of one type, a bad email, one the
  sandbox was told to reject) come back in `failedContacts` — an object when one failed,
  an array when several did — each the contact as the `FailedContact` schema has it (no
  `externalCustomerId`) plus `"error"`. The rest are imported asynchronously: the answer's
  `asyncSessionId` reads STARTED, then IMPORTING, and FINISHED after `polls_to_finish`
  polls of `/api/v1/importstatus/{id}`; only then do the contacts exist, and the status
  carries `mapping` (dedupe value → contact id; the dedupe value is the externalCustomerId
  a contact carries, else its `dedupeOn` field's value: the email, the sms, the custom
  field's; `mapping_names="dedupe"`: the `dedupeOn` field's value even for a contact
  carrying an externalCustomerId -- the spec says only "a value of the field used to
  determine the contact uniqueness", which reads either way). A session holding a channel value told
  to `fail_import(value, description)` reads ERROR with that description instead (and
  imports nothing); one holding a value told to `stall_import(value)` stays IMPORTING
  until `release_import(value)`, which applies it at once, polled or not: after any
  session posted later and already applied, as the spec allows ("Asynchronous processing
  is used; requests may be handled in a different order or concurrently").
- Update semantics, the spec's words on `contactFields`: the standard fields it lists are
  updated, a listed field the contact does not carry becomes null, the others keep their
  value; without `contactFields` every standard field is updated, so each one not sent
  becomes null. Custom fields of an existing contact change only when their id is in
  `customFieldsIDs`, which is "required when a contact is updated": a contact that would
  update one held, in a body without it, comes back in `failedContacts` (and one that
  became an update while its session waited is skipped). The field named by `dedupeOn` is
  never updated (under "fieldId", the custom field it names). A custom field made a Date
  or Date with time field (`define_field`) saves only a value in the formats the guide
  ("Contact Fields in the System") gives for the API (yyyy-MM-dd, dd/MM/yyyy, dd.MM.yy,
  dd.MM.yyyy; YYYY-MM-DDTHH:MM), a date as yyyy-MM-dd; another is "not saved" and the
  field keeps what it held.
- A contact is matched by the article's "logic for using dedupeOn and externalCustomerId":
  on `externalCustomerId` first, then on `dedupeOn`, where of several contacts sharing the
  value the one written last is used, and a request carrying an externalCustomerId never
  takes a contact holding another (one holding none takes it; else a new contact is
  created). A contact `delete`d in eSputnik is skipped by an import that finds it (no
  `mapping` entry, no `failedContacts`), or restored and updated with `restoreDeleted`.
- `GET /api/v2/contacts/activity`: query parameters checked against the spec (dateFrom and
  dateTo required, activityStatus one of its values, maxrows a number); the unsubscribes
  recorded with `unsubscribe()` (or by `unsubscribe_every`: every n-th imported contact
  opts out, for the demo), ordered, with an opaque `offset` cursor; `offset=` returns what
  follows.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, ClassVar

import fastjsonschema
from jsonschema import Draft4Validator
from jsonschema.exceptions import best_match
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response

SPEC: dict[str, Any] = json.loads(
    resources.files("syncd.sandbox").joinpath("esputnik-openapi.json").read_text("utf-8")
)


def validator(schema: str) -> Callable[[Any], str | None]:
    """Why one of the spec's component schemas refuses a body (its message and where it
    points), or None (OpenAPI 3.0 is draft-4-like).

    The body is checked first by the schema compiled to Python (fastjsonschema): a valid
    3000-contact import costs a fifteenth of jsonschema's walk. jsonschema has the last
    word: only what it refuses is refused (fastjsonschema also checks `format`, which
    jsonschema leaves alone), and it words the refusal. tests/sandbox holds the two to
    the same verdicts."""
    document = {"$ref": f"#/components/schemas/{schema}", "components": SPEC["components"]}
    walk = Draft4Validator(document)
    fast = fastjsonschema.compile(
        {**document, "$schema": "http://json-schema.org/draft-04/schema#"}
    )

    def refusal(body: Any) -> str | None:
        try:
            fast(body)
            return None
        except fastjsonschema.JsonSchemaException:
            error = best_match(walk.iter_errors(body))
            return None if error is None else f"{error.message} (at {error.json_path})"

    return refusal


BULK_UPDATE = validator("ContactsBulkUpdate")
# the standard fields `contactFields` may name: what an update without it overwrites
STANDARD: tuple[str, ...] = tuple(
    SPEC["components"]["schemas"]["ContactsBulkUpdate"]["properties"]["contactFields"]["items"][
        "enum"
    ]
)
ACTIVITY_PARAMS: list[dict[str, Any]] = SPEC["paths"]["/api/v2/contacts/activity"]["get"][
    "parameters"
]
# what a `failedContacts` entry echoes of the contact: the spec's FailedContact lists
# channels, names, address, fields, id, contactKey, languageCode, timeZone -- no
# externalCustomerId
ECHOED = frozenset(SPEC["components"]["schemas"]["FailedContact"]["properties"]) - {"error"}
# the media type of each 200 answer, as the spec's `content` names it: contacts and import
# status answer `application/json; charset=UTF-8`, the activity list `application/json`
MEDIA: dict[tuple[str, str], str] = {
    (method.upper(), path): next(iter(op["responses"]["200"]["content"]))
    for path, ops in SPEC["paths"].items()
    for method, op in ops.items()
    if op.get("responses", {}).get("200", {}).get("content")
}
ADDRESS = ("region", "town", "address", "postcode")
EVENT_KEY = re.compile(r"[A-Za-z0-9]{1,100}")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Session:
    contacts: list[dict[str, Any]]
    body: dict[str, Any]
    polls: int = 0
    mapping: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    values: frozenset[str] = frozenset()  # its contacts' channel values (fixed at the POST)
    said: tuple[str, str] = ("", "")  # its status and when it was set (the `timestamp`)

    def __post_init__(self) -> None:
        self.values = frozenset(str(ch.get("value")) for c in self.contacts for ch in c["channels"])


class ESputnikSim(Simulator):
    name = "esputnik"
    rules: ClassVar[list[Rule]] = [
        Rule("/api/v1/contacts", methods=["POST"], endpoint="contacts_post"),
        Rule("/api/v1/importstatus/<session>", methods=["GET"], endpoint="importstatus"),
        Rule("/api/v2/contacts/activity", methods=["GET"], endpoint="activity"),
    ]

    def __init__(
        self,
        *,
        api_key: str = "sandbox-key",
        polls_to_finish: int = 2,
        unsubscribe_every: int = 0,
        mapping_names: str = "key",
    ) -> None:
        super().__init__()
        if mapping_names not in ("key", "dedupe"):
            raise ValueError(f"mapping_names is key or dedupe, not {mapping_names!r}")
        self.mapping_names = mapping_names
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.unsubscribe_every = unsubscribe_every
        self.reset_state()

    def reset_state(self) -> None:
        self._contacts: dict[int, dict[str, Any]] = {}
        # (field, value) -> the ids of the contacts holding it (several may share an email)
        self._index: dict[tuple[str, Any], set[int]] = {}
        self._updated: dict[int, int] = {}  # contact id -> when it was last written (a count)
        self._writes = 0
        self._deleted: set[int] = set()  # contacts deleted in eSputnik (kept, not listed)
        self._kinds: dict[str, str] = {}  # custom field id -> "date" or "datetime"
        self._sessions: dict[str, Session] = {}
        self._fail: dict[str, str] = {}  # channel value -> the ERROR description
        self._stall: set[str] = set()  # channel values whose sessions never finish
        self._activity: list[dict[str, Any]] = []
        self._next_id = 1000

    # --- what tests and the demo read -------------------------------------------------
    def contacts(self) -> list[dict[str, Any]]:
        """Every contact held, flattened: id, the standard fields by their `contactFields`
        names (email, sms, firstName, town, ...), `fields` (custom id → value), groups.
        A deleted contact is not listed."""
        with self.lock:
            return [dict(c) for i, c in self._contacts.items() if i not in self._deleted]

    def seed(self, **values: Any) -> int:
        """Hold a contact as another system made it (standard fields by their
        `contactFields` names, `fields` as custom id → value); return its id."""
        with self.lock:
            self._next_id += 1
            held: dict[str, Any] = {name: None for name in STANDARD}
            held.update(id=self._next_id, groups=[], fields={})
            held.update(values)
            self._contacts[self._next_id] = held
            self._reindex(held)
            return self._next_id

    def define_field(self, field_id: int, kind: str) -> None:
        """Make a custom field a Date (`kind` "date") or Date with time ("datetime") field:
        a value in none of the formats the guide gives for the API is not saved (the field
        keeps what it held), and a date is held as yyyy-MM-dd, as read."""
        assert kind in ("date", "datetime"), kind
        with self.lock:
            self._kinds[str(field_id)] = kind

    def delete(self, contact_id: int) -> None:
        """Delete a contact as a user does in eSputnik: no longer listed, but an import
        that finds it skips it, or restores and updates it with `restoreDeleted`."""
        with self.lock:
            self._deleted.add(contact_id)

    def unsubscribes(self) -> list[dict[str, Any]]:
        """Every UNSUBSCRIBED activity recorded, in order (as the activity list answers it)."""
        with self.lock:
            return [dict(a) for a in self._activity]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "contacts": len(self._contacts),
                "sessions": {
                    k: ("FINISHED" if s.done else "open") for k, s in self._sessions.items()
                },
                "unsubscribed": len(self._activity),
            }

    def fail_import(self, value: str, description: str) -> None:
        """Make every session holding this channel value end in ERROR with `description`."""
        with self.lock:
            self._fail[value] = description

    def stall_import(self, value: str) -> None:
        """Make every session holding this channel value stay IMPORTING for ever."""
        with self.lock:
            self._stall.add(value)

    def release_import(self, value: str) -> None:
        """End `stall_import(value)`: the sessions it held that nothing else holds are
        imported now, as eSputnik does on its own time (whether anyone polls them or not),
        over whatever sessions posted after them imported meanwhile."""
        with self.lock:
            self._stall.discard(value)
            for s in self._sessions.values():
                held = s.values & self._stall or s.values & self._fail.keys()
                if value in s.values and not s.done and not held:
                    s.mapping = [e for c in s.contacts if (e := self._import(c, s.body))]
                    s.done = True

    def unsubscribe(self, email: str, at: datetime | None = None) -> None:
        """Record that the contact with this email opted out (an UNSUBSCRIBED activity)."""
        with self.lock:
            held = self._latest(self._index.get(("email", email.lower()), ())) or {}
            when = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S")
            activity = {
                "contactId": held.get("id"),
                "externalCustomerId": held.get("externalCustomerId"),
                "email": email.lower(),
                "sms": held.get("sms"),
                "mediaType": "email",
                "activityStatus": "UNSUBSCRIBED",
                "activityDateTime": when,
                "offset": f"{len(self._activity) + 1:09d}-{uuid.uuid4()}",
            }
            self._activity.append({k: v for k, v in activity.items() if v is not None})

    # --- the API ----------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        auth = request.authorization
        return auth is not None and auth.type == "basic" and auth.password == self.api_key

    def contacts_post(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("Unauthorized", 401)
        if request.mimetype != "application/json":  # the spec's requestBody, and its 415
            return Response("Unsupported media type: the body is sent as application/json", 415)
        body: Any = request.get_json(silent=True)
        if body is None:
            return Response("the body must be JSON", 400)
        refused = BULK_UPDATE(body) or _past_int32(body)
        if refused is not None:
            return Response(refused, 400)
        contacts: list[dict[str, Any]] = body["contacts"]
        if not 1 <= len(contacts) <= 3000:
            return Response(f"from 1 to 3000 contacts a request, got {len(contacts)}", 400)
        key = body.get("eventKeyForNewContacts")
        if key is not None and not EVENT_KEY.fullmatch(key):
            return Response("eventKeyForNewContacts: latin letters and digits, at most 100", 400)
        if body["dedupeOn"] == "fieldId" and "fieldId" not in body:
            return Response("fieldId is required when dedupeOn is fieldId", 400)
        failed: list[dict[str, Any]] = []
        accepted: list[dict[str, Any]] = []
        for contact in contacts:
            reason = self._invalid(contact)
            if reason is None and "customFieldsIDs" not in body and self._updates(contact, body):
                reason = "customFieldsIDs is required when a contact is updated"
            if reason:
                echoed = {k: v for k, v in contact.items() if k in ECHOED}
                failed.append({**echoed, "error": reason})
            else:
                accepted.append(contact)
        answer: dict[str, Any] = {}
        if failed:
            answer["failedContacts"] = failed[0] if len(failed) == 1 else failed
        if accepted:
            session = str(uuid.uuid4())
            with self.lock:
                self._sessions[session] = Session(accepted, body)
            answer["asyncSessionId"] = session
        return _answer(answer, "POST", "/api/v1/contacts")

    def _invalid(self, contact: dict[str, Any]) -> str | None:
        channels: list[dict[str, Any]] = contact["channels"]
        if not channels:
            return "the contact has no channels"
        types = [ch.get("type") for ch in channels]
        if any(types.count(t) > 2 for t in types):
            return "at most two channels of the same type"
        for ch in channels:
            if not ch.get("type") or not ch.get("value"):
                return f"invalid channel {ch!r}"
            if ch["type"] == "email" and not EMAIL.match(ch["value"]):
                return f"invalid email address {ch['value']!r}"
        values = [str(ch["value"]) for ch in channels]
        return self.faults.rejection(*values, contact.get("externalCustomerId"))

    def _updates(self, contact: dict[str, Any], body: dict[str, Any]) -> bool:
        """Whether importing this contact now would update one eSputnik holds."""
        sent, custom = _sent(contact)
        with self.lock:
            return self._match(sent, custom, body["dedupeOn"], body.get("fieldId")) is not None

    def importstatus(self, request: Request, session: str) -> Response:
        if not self._authorized(request):
            return Response("Unauthorized", 401)
        with self.lock:
            s = self._sessions.get(session)
            if s is None:
                return Response(f"import session {session} not found", 404)
            s.polls += 1
            failed = next((self._fail[v] for v in sorted(s.values & self._fail.keys())), None)
            ready = s.polls >= self.polls_to_finish and not s.values & self._stall
            if not s.done and ready and failed is None:
                imported = (self._import(c, s.body) for c in s.contacts)
                s.mapping = [entry for entry in imported if entry is not None]
                s.done = True
            status = "FINISHED" if s.done else ("IMPORTING" if s.polls > 1 else "STARTED")
            if ready and failed is not None:
                status = "ERROR"
            if s.said[0] != status:  # the spec's timestamp: "The status setting time"
                s.said = (status, datetime.now(UTC).isoformat(timespec="seconds"))
            answer: dict[str, Any] = {"status": status, "timestamp": s.said[1]}
            if status == "ERROR":
                answer["description"] = failed
            if s.done:
                answer["mapping"] = s.mapping
        return _answer(answer, "GET", "/api/v1/importstatus/{sessionId}")

    def _import(self, contact: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
        """Create or update one contact (externalCustomerId first, then dedupeOn); its
        `mapping` entry, or None when it is skipped: a deleted contact without
        `restoreDeleted`, or an update without `customFieldsIDs` (created while the request
        waited)."""
        sent, custom = _sent(contact)
        dedupe = body["dedupeOn"]
        held = self._match(sent, custom, dedupe, body.get("fieldId"))
        # "If the contact fields have errors or the wrong format, this data will not be
        # saved in the system" (the guide, "Contact Fields in the System")
        custom = {k: _typed(v, self._kinds.get(k)) for k, v in custom.items()}
        custom = {k: v for k, v in custom.items() if v is not None}
        if held is not None and "customFieldsIDs" not in body:
            return None  # "required when a contact is updated"
        if held is not None and held["id"] in self._deleted:
            if not body.get("restoreDeleted"):
                return None  # the article: "this contact is skipped"
            self._deleted.discard(held["id"])
        if held is None:
            self._next_id += 1
            held = {name: sent.get(name) for name in STANDARD}
            held.update(id=self._next_id, groups=[], fields=custom)
            self._contacts[self._next_id] = held
            if self.unsubscribe_every and self._next_id % self.unsubscribe_every == 0:
                self._reindex(held)
                if held.get("email"):
                    self.unsubscribe(str(held["email"]))
        else:
            self._unindex(held)
            # "Important the field set as dedupeOn will not be updated" (ContactsBulkUpdate),
            # the custom field `fieldId` names too ("The field for determining the contact
            # uniqueness"); which of the two "email_or_sms" sets the spec does not say
            for name in body.get("contactFields", STANDARD):
                if name != dedupe:
                    held[name] = sent.get(name)
            listed = {str(i) for i in body.get("customFieldsIDs") or []}
            if dedupe == "fieldId":
                listed.discard(str(body.get("fieldId")))
            held["fields"].update({k: v for k, v in custom.items() if k in listed})
        self._reindex(held)
        held["groups"] = sorted(
            (set(held["groups"]) | set(body.get("groupNames") or []))
            - set(body.get("groupNamesExclude") or [])
        )
        keyed = self.mapping_names == "key" or dedupe == "externalCustomerId"
        value = _dedupe_value(
            sent, custom, dedupe, body.get("fieldId"), contact["channels"], keyed=keyed
        )
        return {"dedupeValue": value, "contactId": held["id"]}

    def _match(
        self, sent: dict[str, Any], custom: dict[str, Any], dedupe: str, field_id: int | None
    ) -> dict[str, Any] | None:
        """The contact an import of `sent` updates, or None (it creates one), by the
        article's rules ("The logic for using dedupeOn and externalCustomerId"): the one
        holding its externalCustomerId; else, by `dedupeOn`, of the contacts sharing the
        value the one updated last; but a request carrying an externalCustomerId never takes
        a contact holding another ("both have externalCustomerIds that don't match the one
        in the request, a new contact is created"; one without is "updated with the
        externalCustomerId")."""
        ext = sent.get("externalCustomerId")
        if ext:
            found = self._latest(self._index.get(("externalCustomerId", ext), ()))
            if found is not None:
                return found

        def free(i: int) -> bool:
            return not ext or not self._contacts[i].get("externalCustomerId")

        kinds = {"email_or_sms": ("email", "sms")}.get(dedupe, (dedupe,))
        for kind in kinds:
            if kind in ("email", "sms") and sent.get(kind):
                found = self._latest(i for i in self._index.get((kind, sent[kind]), ()) if free(i))
                if found is not None:
                    return found
        value = custom.get(str(field_id))
        if dedupe == "fieldId" and value:
            return self._latest(
                i
                for i, c in self._contacts.items()
                if c["fields"].get(str(field_id)) == value and free(i)
            )
        return None

    def _latest(self, ids: Iterable[int]) -> dict[str, Any] | None:
        """Of these contacts, the one written last ("If multiple contacts have the same
        email (or phone number), the contact that was updated later than the others is
        used"), or None."""
        found = max(ids, key=lambda i: self._updated.get(i, 0), default=None)
        return None if found is None else self._contacts[found]

    def _unindex(self, held: dict[str, Any]) -> None:
        for name in ("externalCustomerId", "email", "sms"):
            self._index.get((name, held.get(name)), set()).discard(held["id"])

    def _reindex(self, held: dict[str, Any]) -> None:
        self._writes += 1
        self._updated[held["id"]] = self._writes
        for name in ("externalCustomerId", "email", "sms"):
            if held.get(name):
                self._index.setdefault((name, held[name]), set()).add(held["id"])

    def activity(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("Unauthorized", 401)
        args = request.args
        for param in ACTIVITY_PARAMS:
            name, schema = param["name"], param["schema"]
            value = args.get(name)
            if value is None:
                if param.get("required"):
                    return Response(f"query parameter {name} is required", 400)
            elif "enum" in schema and value not in schema["enum"]:
                return Response(f"{name}: {value!r} is not one of {schema['enum']}", 400)
            elif schema["type"] == "integer" and _count(value) is None:
                return Response(f"{name}: {value!r} is not an integer (int32)", 400)
        status = args.get("activityStatus")
        maxrows = int(args.get("maxrows") or 25000)
        offset = args.get("offset", "")
        date_from, date_to = args["dateFrom"][:10], args["dateTo"][:10]
        with self.lock:
            items = [
                a
                for a in self._activity
                if (status is None or a["activityStatus"] == status)
                and date_from <= a["activityDateTime"][:10] <= date_to
                and a["offset"] > offset
            ]
        return _answer(items[:maxrows], "GET", "/api/v2/contacts/activity")


def _count(value: str) -> int | None:
    """A query parameter of the spec's `"type": "integer", "format": "int32"` (maxrows) as a
    count, or None: `"²".isdigit()` is true and `int("²")` fails."""
    try:
        number = int(value) if value.isdigit() else None
    except ValueError:
        return None
    return number if number is not None and number < 2**31 else None


def _sent(contact: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A request's contact as the fields it sets, by their `contactFields` names (an email
    lower-cased), and its custom fields by id."""
    sent: dict[str, Any] = {
        name: contact[name]
        for name in ("firstName", "lastName", "languageCode", "timeZone", "contactKey")
        if name in contact
    }
    sent.update({a: v for a, v in (contact.get("address") or {}).items() if a in ADDRESS})
    if contact.get("externalCustomerId"):
        sent["externalCustomerId"] = contact["externalCustomerId"]
    for ch in contact["channels"]:
        sent[ch["type"]] = ch["value"].lower() if ch["type"] == "email" else ch["value"]
    custom = {str(f["id"]): f.get("value") for f in contact.get("fields") or []}
    return sent, custom


# the formats the guide gives a Date field "when manually importing or transferring a
# contact via the API": yyyy-MM-dd, dd/MM/yyyy, dd.MM.yy, dd.MM.yyyy; a Date with time field:
# YYYY-MM-DDTHH:MM
TYPED_FORMATS = {
    "date": ("%Y-%m-%d", "%d/%m/%Y", "%d.%m.%y", "%d.%m.%Y"),
    "datetime": ("%Y-%m-%dT%H:%M",),
}
TYPED_SHAPES = {
    "%Y-%m-%d": r"\d{4}-\d{2}-\d{2}",
    "%d/%m/%Y": r"\d{2}/\d{2}/\d{4}",
    "%d.%m.%y": r"\d{2}\.\d{2}\.\d{2}",
    "%d.%m.%Y": r"\d{2}\.\d{2}\.\d{4}",
    "%Y-%m-%dT%H:%M": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}",
}


def _typed(value: Any, kind: str | None) -> Any:
    """A custom field's value as a field of `kind` saves it: a date as yyyy-MM-dd, a date
    and time as sent, None when it is in none of the kind's formats (not saved); an empty
    value clears the field; an untyped field takes any value."""
    if kind is None or value in (None, ""):
        return value
    for form in TYPED_FORMATS[kind]:
        if not re.fullmatch(TYPED_SHAPES[form], str(value)):
            continue
        try:
            when = datetime.strptime(str(value), form)
        except ValueError:
            continue
        return when.strftime("%Y-%m-%d") if kind == "date" else str(value)
    return None


def _dedupe_value(
    sent: dict[str, Any],
    custom: dict[str, Any],
    dedupe: str,
    field_id: int | None,
    channels: list[dict[str, Any]],
    *,
    keyed: bool = True,
) -> str:
    """A mapping entry's `dedupeValue`, in the spec's words (DedupeMapping) "a value of the
    field used to determine the contact uniqueness": the externalCustomerId a contact
    carrying one is matched on first (`keyed`; else, `mapping_names="dedupe"`, only under
    dedupeOn = externalCustomerId), else the value of the `dedupeOn` field (the custom
    field's for "fieldId", the email or else the sms for "email_or_sms"). Always a string,
    as the schema has it: for a contact without that field (a viber-only one under
    "email_or_sms"), its first channel's value."""
    kinds = {"email_or_sms": ("email", "sms")}.get(dedupe, (dedupe,))
    values = [sent.get("externalCustomerId") if keyed else None]
    values += [custom.get(str(field_id)) if k == "fieldId" else sent.get(k) for k in kinds]
    values.append(channels[0]["value"])
    return next(str(v) for v in values if v)


def _answer(data: Any, method: str, path: str) -> Response:
    """A 200 answer to the spec's `method` `path`, with the media type the spec gives it."""
    response = json_response(data)
    response.headers["Content-Type"] = MEDIA[(method, path)]
    return response


def _past_int32(body: dict[str, Any]) -> str | None:
    """A custom field id outside the spec's `"format": "int32"` (ContactField.id,
    customFieldsIDs), which the schema check lets through (jsonschema does not check
    `format`) and the real API cannot read into its 32-bit ids."""
    ids = [("customFieldsIDs", i) for i in body.get("customFieldsIDs") or []] + [
        ("contacts[].fields[].id", f.get("id"))
        for c in body["contacts"]
        for f in c.get("fields") or []
        if isinstance(f, dict)
    ]
    for where, value in ids:
        if isinstance(value, int) and not -(2**31) <= value < 2**31:
            return f"{value} is not an int32 (at {where})"
    return None
