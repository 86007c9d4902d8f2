"""eSputnik (Yespo) simulator: bulk contact import, import sessions, activity.

Written from `esputnik.md` and the OpenAPI spec's schemas:
- HTTP Basic auth, any user name, the API key as password (default "sandbox-key"); else 401.
- `POST /api/v1/contacts`: 1 to 3000 contacts, a known `dedupeOn`, `eventKeyForNewContacts`
  of latin letters and digits (<= 100). Contacts that cannot be imported (no channel, a bad
  email, one the sandbox was told to reject) come back in `failedContacts` — an object
  when one failed, an array when several did — each the contact plus `"error"`.
  The rest are imported asynchronously: the answer's `asyncSessionId` reads STARTED, then
  IMPORTING, and FINISHED after `polls_to_finish` polls of `/api/v1/importstatus/{id}`;
  only then do the contacts exist, and the status carries `mapping` (dedupe value →
  contact id).
- `GET /api/v2/contacts/activity?activityStatus=UNSUBSCRIBED`: the unsubscribes recorded
  with `unsubscribe()` (or by `unsubscribe_every`: every n-th imported contact opts out,
  for the demo), ordered, with an opaque `offset` cursor; `offset=` returns what follows.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response

CHANNELS = {"email", "sms", "viber", "mobilepush", "webpush", "appinbox", "widget", "inapp"}
DEDUPE = {"email", "sms", "email_or_sms", "id", "externalCustomerId", "fieldId"}
EVENT_KEY = re.compile(r"^[A-Za-z0-9]{1,100}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class Session:
    contacts: list[dict[str, Any]]
    dedupe: str
    groups: list[str]
    polls: int = 0
    mapping: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False


class ESputnikSim(Simulator):
    name = "esputnik"
    rules: ClassVar[list[Rule]] = [
        Rule("/api/v1/contacts", methods=["POST"], endpoint="contacts_post"),
        Rule("/api/v1/importstatus/<session>", methods=["GET"], endpoint="importstatus"),
        Rule("/api/v2/contacts/activity", methods=["GET"], endpoint="activity"),
    ]

    def __init__(
        self, *, api_key: str = "sandbox-key", polls_to_finish: int = 2, unsubscribe_every: int = 0
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.unsubscribe_every = unsubscribe_every
        self.reset_state()

    def reset_state(self) -> None:
        self._contacts: dict[int, dict[str, Any]] = {}
        self._index: dict[tuple[str, Any], int] = {}  # (field, value) -> contact id
        self._sessions: dict[str, Session] = {}
        self._activity: list[dict[str, Any]] = []
        self._next_id = 1000

    # --- what tests and the demo read -------------------------------------------------
    def contacts(self) -> list[dict[str, Any]]:
        """Every contact held, flattened: id, email, sms, names, externalCustomerId, fields."""
        with self.lock:
            return [dict(c) for c in self._contacts.values()]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "contacts": len(self._contacts),
                "sessions": {
                    k: ("FINISHED" if s.done else "open") for k, s in self._sessions.items()
                },
                "unsubscribed": len(self._activity),
            }

    def unsubscribe(self, email: str, at: datetime | None = None) -> None:
        """Record that the contact with this email opted out (an UNSUBSCRIBED activity)."""
        with self.lock:
            held = self._find("email", email.lower()) or {}
            when = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S")
            self._activity.append(
                {
                    "contactId": held.get("id"),
                    "externalCustomerId": held.get("externalCustomerId"),
                    "email": email.lower(),
                    "sms": held.get("sms"),
                    "mediaType": "email",
                    "activityStatus": "UNSUBSCRIBED",
                    "activityDateTime": when,
                    "offset": f"{len(self._activity) + 1:09d}-{uuid.uuid4()}",
                }
            )

    # --- the API ----------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        auth = request.authorization
        return auth is not None and auth.type == "basic" and auth.password == self.api_key

    def contacts_post(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("Unauthorized", 401)
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("contacts"), list):
            return Response("request body must be a JSON object with a contacts array", 400)
        contacts: list[Any] = body["contacts"]
        if not 1 <= len(contacts) <= 3000:
            return Response(f"from 1 to 3000 contacts a request, got {len(contacts)}", 400)
        dedupe = body.get("dedupeOn")
        if dedupe not in DEDUPE:
            return Response(f"dedupeOn must be one of {sorted(DEDUPE)}", 400)
        key = body.get("eventKeyForNewContacts")
        if key is not None and not (isinstance(key, str) and EVENT_KEY.match(key)):
            return Response("eventKeyForNewContacts: latin letters and digits, at most 100", 400)
        failed: list[dict[str, Any]] = []
        accepted: list[dict[str, Any]] = []
        for contact in contacts:
            error = self._invalid(contact)
            if error:
                failed.append({**(contact if isinstance(contact, dict) else {}), "error": error})
            else:
                accepted.append(contact)
        answer: dict[str, Any] = {}
        if failed:
            answer["failedContacts"] = failed[0] if len(failed) == 1 else failed
        if accepted:
            session = str(uuid.uuid4())
            with self.lock:
                self._sessions[session] = Session(
                    accepted, dedupe, list(body.get("groupNames") or [])
                )
            answer["asyncSessionId"] = session
        return json_response(answer)

    def _invalid(self, contact: Any) -> str | None:
        if not isinstance(contact, dict):
            return "a contact must be an object"
        channels = contact.get("channels")
        if not isinstance(channels, list) or not channels:
            return "the contact has no channels"
        values = []
        for ch in channels:
            if not isinstance(ch, dict) or ch.get("type") not in CHANNELS or not ch.get("value"):
                return f"invalid channel {ch!r}"
            if ch["type"] == "email" and not EMAIL.match(str(ch["value"])):
                return f"invalid email address {ch['value']!r}"
            values.append(str(ch["value"]))
        return self.faults.rejection(*values, contact.get("externalCustomerId"))

    def importstatus(self, request: Request, session: str) -> Response:
        if not self._authorized(request):
            return Response("Unauthorized", 401)
        with self.lock:
            s = self._sessions.get(session)
            if s is None:
                return Response(f"import session {session} not found", 404)
            s.polls += 1
            if not s.done and s.polls >= self.polls_to_finish:
                s.mapping = [self._import(c, s) for c in s.contacts]
                s.done = True
            status = "FINISHED" if s.done else ("IMPORTING" if s.polls > 1 else "STARTED")
            answer: dict[str, Any] = {
                "status": status,
                "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            if s.done:
                answer["mapping"] = s.mapping
        return json_response(answer)

    def _import(self, contact: dict[str, Any], s: Session) -> dict[str, Any]:
        """Create or update one contact (externalCustomerId first, then dedupeOn)."""
        flat = {
            "externalCustomerId": contact.get("externalCustomerId"),
            "firstName": contact.get("firstName"),
            "lastName": contact.get("lastName"),
            "languageCode": contact.get("languageCode"),
            "timeZone": contact.get("timeZone"),
            "address": contact.get("address"),
            "fields": {str(f["id"]): f.get("value") for f in contact.get("fields") or []},
        }
        for ch in contact["channels"]:
            flat[ch["type"]] = (
                str(ch["value"]).lower() if ch["type"] == "email" else str(ch["value"])
            )
        existing = None
        if flat["externalCustomerId"]:
            existing = self._find("externalCustomerId", flat["externalCustomerId"])
        if existing is None and s.dedupe in ("email", "sms", "email_or_sms"):
            for kind in ("email", "sms") if s.dedupe == "email_or_sms" else (s.dedupe,):
                if flat.get(kind):
                    existing = existing or self._find(kind, flat[kind])
        if existing is None:
            self._next_id += 1
            existing = {"id": self._next_id, "groups": []}
            self._contacts[self._next_id] = existing
            if (
                self.unsubscribe_every
                and self._next_id % self.unsubscribe_every == 0
                and flat.get("email")
            ):
                existing.update({k: v for k, v in flat.items() if v is not None})
                self.unsubscribe(str(flat["email"]))
        existing.update({k: v for k, v in flat.items() if v is not None})
        for name in ("externalCustomerId", "email", "sms"):
            if existing.get(name):
                self._index[(name, existing[name])] = existing["id"]
        existing["groups"] = sorted(set(existing["groups"]) | set(s.groups))
        dedupe_value = flat["externalCustomerId"] or flat.get("email") or flat.get("sms")
        return {"dedupeValue": dedupe_value, "contactId": existing["id"]}

    def _find(self, field_name: str, value: Any) -> dict[str, Any] | None:
        found = self._index.get((field_name, value))
        return None if found is None else self._contacts[found]

    def activity(self, request: Request) -> Response:
        if not self._authorized(request):
            return Response("Unauthorized", 401)
        args = request.args
        if not args.get("dateFrom") or not args.get("dateTo"):
            return Response("dateFrom and dateTo are required", 400)
        status = args.get("activityStatus")
        maxrows = args.get("maxrows", 25000, type=int) or 25000
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
        return json_response(items[:maxrows])
