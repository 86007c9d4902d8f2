"""Dropthought simulator: login, token renewal, one participant per call.

Written from `dropthought.md` and the Dropthought notes in NOTES.md:
- `POST /dtapp/api/authenticate/login {"email", "password"}` →
  `{"success": true, "result": {"accessToken", "refreshToken"}}`; wrong credentials → 401;
  an email or password missing, empty or not a string (the document: String, Optional
  false) → 400.
  Tokens are HS256 JWTs with `typ`, `iat` and `exp`; the access token lives `access_ttl`
  seconds (1 hour), the refresh token `refresh_ttl` (24 hours), measured on `now`, an
  injectable wall clock (epoch seconds) so a test can expire tokens mid-run.
- `POST /dtapp/api/token/renew` with `{"refreshToken"}` (the SDK also sends the raw refresh
  token as `Authorization`, which alone is no renewal: 400) → new tokens, in login's shape,
  or with `renew_shape = "top"` at the top level `{"accessToken", "refreshToken"}` (where
  Dropthought's React Native SDK reads them); an expired or unknown refresh token → 401.
  Earlier tokens stay valid until their own `exp` (stateless JWTs).
- `POST /dtapp/api/participant/?participantgroupuuid=<uuid>` with `Authorization: Bearer
  <access>` (else 401): `{"header": [...], "data": [...]}`, one participant. Every header
  name must be one of the list's metadata names (`metadata`, name → Dropthought type:
  NAME, EMAIL, PHONE, DATE, String), at most once, with one string per header; an EMAIL
  value must look like an address, a PHONE value must be `+` and its digits (the country
  code first), a DATE value `YYYY-MM-DD HH:MM:SS` (the document's format, which advanced
  scheduling reads); an empty value is stored empty. A bad body, or a contact the sandbox
  was told to reject (matched on its email or phone), → 400 `{"success": false, "message"}`
  (the document's `success` flag; the `message` is assumed). An unknown participant group
  → 404. The answer is the documented one: `result[0]` with `data`, `header`, `meta_data`
  and `phi_data` as JSON-encoded strings (a "Primary Key" column appended) and
  `participant_uuid` — unless `answer` is set: then the participant is added and that JSON
  is the answer (to play answers that are not the acknowledgement).
- Participants are keyed by their primary key (name + email, as in the documented
  answer): adding one again keeps its uuid, takes the new values and counts a trigger.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response

API = "/dtapp/api"
# the participant list's metadata, name → type, matching syncd/mappings/dropthought.toml
DEFAULT_METADATA: dict[str, str] = {
    "Name": "NAME",
    "Email": "EMAIL",
    "Phone": "PHONE",
    "CRM ID": "String",
    "Closed Date": "DATE",
    "Ticket Type": "String",
    "Store": "String",
}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+[0-9]{6,15}$")
DATE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@dataclass
class Participant:
    uuid: str
    id: int
    primary_key: str
    record: dict[str, str]
    created_time: str
    triggers: int = 0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _is_date(value: str) -> bool:
    if not DATE.match(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return False
    return True


def _error(message: str, status: int) -> Response:
    return json_response({"success": False, "message": message}, status)


class DropthoughtSim(Simulator):
    name = "dropthought"
    rules: ClassVar[list[Rule]] = [
        Rule(f"{API}/authenticate/login", methods=["POST"], endpoint="login"),
        Rule(f"{API}/token/renew", methods=["POST"], endpoint="renew"),
        Rule(f"{API}/participant/", methods=["POST"], endpoint="participant"),
    ]

    def __init__(
        self,
        *,
        email: str = "ops@example.com",
        password: str = "sandbox-password",
        participant_group: str = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa",
        metadata: Mapping[str, str] | None = None,
        access_ttl: int = 3600,
        refresh_ttl: int = 86400,
        renew_shape: Literal["result", "top"] = "result",
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.email = email
        self.password = password
        self.participant_group = participant_group
        self.metadata = dict(DEFAULT_METADATA if metadata is None else metadata)
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.renew_shape = renew_shape
        self.answer: Any = None  # when set, the participant call's answer (after adding)
        self.now = now
        self._key = uuid.uuid4().bytes  # signs this simulator's tokens
        self.reset_state()

    def reset_state(self) -> None:
        self._participants: dict[str, Participant] = {}  # primary key → participant
        self._next_id = 1
        self.logins = 0
        self.renewals = 0

    # --- what tests and the demo read -------------------------------------------------
    def participants(self) -> list[dict[str, Any]]:
        """Every participant held: uuid, primary key, its latest record and trigger count."""
        with self.lock:
            return [
                {
                    "participant_uuid": p.uuid,
                    "primary_key": p.primary_key,
                    "record": dict(p.record),
                    "triggers": p.triggers,
                    "created_time": p.created_time,
                }
                for p in self._participants.values()
            ]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "participants": len(self._participants),
                "triggers": sum(p.triggers for p in self._participants.values()),
                "logins": self.logins,
                "renewals": self.renewals,
            }

    # --- tokens -----------------------------------------------------------------------
    def _issue(self) -> dict[str, Any]:
        now = int(self.now())
        tokens = {}
        for name, kind, ttl in (
            ("accessToken", "access", self.access_ttl),
            ("refreshToken", "refresh", self.refresh_ttl),
        ):
            head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
            claims = {"sub": self.email, "typ": kind, "iat": now, "exp": now + ttl}
            body = _b64(json.dumps({**claims, "jti": uuid.uuid4().hex}).encode())
            sig = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
            tokens[name] = f"{head}.{body}.{sig}"
        return {"result": tokens, "success": True}

    def _valid(self, token: str, kind: str) -> bool:
        """A token this simulator signed, of this kind, not yet expired."""
        parts = token.split(".")
        if len(parts) != 3:
            return False
        head, body, sig = parts
        want = _b64(hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(want, sig):
            return False
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            return False
        return bool(claims.get("typ") == kind and self.now() < claims.get("exp", 0))

    # --- the API ----------------------------------------------------------------------
    def login(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        # Step #1, Request fields: email and password, String, Optional false
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) and body[k] for k in ("email", "password")
        ):
            return _error("email and password are required strings", 400)
        if body["email"] != self.email or body["password"] != self.password:
            return _error("Invalid email or password", 401)
        with self.lock:
            self.logins += 1
        return json_response(self._issue())

    def renew(self, request: Request) -> Response:
        body = request.get_json(silent=True)
        token = body.get("refreshToken") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:  # the SDK's Authorization alone is not it
            return _error("refreshToken is required", 400)
        if not self._valid(token, "refresh"):
            return _error("Refresh token is invalid or expired", 401)
        with self.lock:
            self.renewals += 1
        issued = self._issue()
        return json_response(issued if self.renew_shape == "result" else issued["result"])

    def participant(self, request: Request) -> Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not self._valid(auth[7:].strip(), "access"):
            return _error("Access token is invalid or expired", 401)
        if request.args.get("participantgroupuuid") != self.participant_group:
            return _error("participant group not found", 404)
        body = request.get_json(silent=True)
        problem = self._invalid(body)
        if problem:
            return _error(problem, 400)
        assert isinstance(body, dict)
        header: list[str] = body["header"]
        record = dict(zip(header, body["data"], strict=True))
        types = [self.metadata[h] for h in header]
        email = next((record[h] for h, t in zip(header, types, strict=True) if t == "EMAIL"), "")
        phone = next((record[h] for h, t in zip(header, types, strict=True) if t == "PHONE"), "")
        refused = self.faults.rejection(email, phone)
        if refused:
            return _error(refused, 400)
        name = next((record[h] for h, t in zip(header, types, strict=True) if t == "NAME"), "")
        participant = self._add(name + email, record)
        if self.answer is not None:
            return json_response(self.answer)
        answer = {
            "created_time": participant.created_time,
            "data": json.dumps([*body["data"], ""]),
            "meta_data": json.dumps([*types, "STRING"]),
            "header": json.dumps([*header, "Primary Key"]),
            "phi_data": json.dumps([False] * (len(header) + 1)),
            "id": participant.id,
            "primary_key": participant.primary_key,
            "created_by": 718,
            "participant_uuid": participant.uuid,
        }
        return json_response({"result": [answer], "success": True})

    def _invalid(self, body: Any) -> str | None:
        if not isinstance(body, dict):
            return "request body must be a JSON object with header and data"
        header, data = body.get("header"), body.get("data")
        if not isinstance(header, list) or not isinstance(data, list) or not header:
            return "header and data must be non-empty arrays"
        if len(header) != len(data):
            return f"header has {len(header)} names but data has {len(data)} values"
        if not all(isinstance(v, str) for v in [*header, *data]):
            return "header names and data values must be strings"
        unknown = [h for h in header if h not in self.metadata]
        if unknown:
            return f"header {unknown[0]!r} is not a metadata of the list"
        if len(set(header)) != len(header):
            return "a header name appears twice"
        for name, value in zip(header, data, strict=True):
            kind = self.metadata[name]
            if value and kind == "EMAIL" and not EMAIL.match(value):
                return f"{name}: invalid email {value!r}"
            if value and kind == "PHONE" and not PHONE.match(value):
                return f"{name}: phone number must start with its country code (+...)"
            if value and kind == "DATE" and not _is_date(value):
                return f"{name}: date must be YYYY-MM-DD HH:MM:SS, not {value!r}"
        return None

    def _add(self, primary_key: str, record: dict[str, str]) -> Participant:
        with self.lock:
            participant = self._participants.get(primary_key)
            if participant is None:
                participant = Participant(
                    uuid=str(uuid.uuid4()),
                    id=self._next_id,
                    primary_key=primary_key,
                    record=record,
                    created_time=datetime.fromtimestamp(self.now(), UTC).strftime(
                        "%Y-%m-%d %H:%M:%S.0"
                    ),
                )
                self._next_id += 1
                self._participants[primary_key] = participant
            participant.record = record
            participant.triggers += 1
            return participant
