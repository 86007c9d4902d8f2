"""Altcraft simulator: API-call trigger campaigns, one profile or many per request.

Written from `altcraft.md` and the developer guide ("API interaction", "Trigger launch (API
call)", "Bulk trigger launch", "Data array", "Get trigger campaign information"):
- Every call is `POST /api/v1.1/<method>` with a JSON body (Content-Type application/json),
  the token in the body as `"token"` (or `Authorization: Bearer <token>`). Every answer is an
  envelope `{"error": 0, "error_text": "Successful operation", ...}`; a failure has a non-zero
  `error` (400 bad request, 401 token required, 402 tariff limit reached, 403 forbidden,
  404 not found) and, by default, HTTP 200 — set `http_errors = True` to answer it with that
  HTTP status instead.
- `campaigns/triggers/start`: `id` (a JSON number: "always a number, do not confuse it
  with the name"; a string is refused), `matching` (email, phone, profile_id or custom;
  email when absent) and the matching value (`email` / `phone` / `profile_id` /
  `field_name` + `field_value`), optional `content{}`, `custom_data{}`, `resource_id` (a
  number). Answers the profile's `profile_id`.
- `campaigns/triggers/start_batch`: `trigger_id` (a number, not `id`), `format` "json" and
  `matching`, both required (NOTES.md marks only `content` and `custom_data` optional and
  gives matching a default for `start` alone), root `field_name` for custom matching,
  `data[]` of objects holding the matching value (`email` / `phone` / `profile_id` /
  `field_value`) and optionally `custom_data{}` ("can be passed either at the root of the
  request or separately in each data object", the guide's "Bulk trigger launch"; how both
  combine is not said: here the item's keys win over the root's); root `content{}` and
  `custom_data{}`. Answers `result`: the profile ids launched, in order.
  The sandbox launches a batch whole or not at all: a profile it cannot launch (an invalid
  value, or one rejected with `faults.reject(value)`) fails the request with
  `data[i]: <reason>`.
- Only an existing, active campaign of the API-call event launches ("Only active trigger
  campaigns set to the 'When using a special API call' event can be run via the API";
  the guide's "Get trigger campaign information" shows such a campaign's `trigger_type`
  as "api_call"). The documents give no code or text for the refusal ("the response
  message will indicate the code of error and its description"): the sandbox answers
  error 404 "Trigger campaign <id> not found", error 400 "Trigger campaign <id> is not
  active" and error 400 "Trigger campaign <id> is not active for API calls (its
  trigger_type is ...)", before looking at any profile.
- `campaigns/triggers/get`: `id` → `data`, the campaign (`is_active` a bool, `trigger_type`
  "api_call"), as the guide's "Get trigger campaign information" shows; it gives no error
  answer, so a campaign the sandbox does not hold is error 404 "Trigger campaign <id> not
  found", like a launch.
- The request body is at most 10 MB (10,000,000 bytes here): a larger one gets HTTP 413
  from the front proxy, as plain text.
- A tariff limit: after `limit` launched triggers (None = unlimited) every launch that would
  exceed it answers error 402.
Every profile the sandbox is asked about exists (its id derived from the matching value),
but a custom field value that several profiles hold (`shared`: the (field_name, value)
pairs a test adds) finds no one profile: altcraft.md, "Launching a campaign for subscriber
with custom field": "The field value must be unique, otherwise the request will not work"
(no code or text is given: the sandbox answers error 400, the guide's "incorrect request").
Rate limits are not simulated (undocumented).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any, ClassVar

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response

MATCHING = {"email": "email", "phone": "phone", "profile_id": "profile_id", "custom": "field_value"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
PROFILE_ID = re.compile(r"^[0-9a-f]{24}$")
MAX_BODY = 10_000_000


class EnvelopeError(Exception):
    """An Altcraft error answer: a non-zero code and its text."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


class AltcraftSim(Simulator):
    name = "altcraft"
    rules: ClassVar[list[Rule]] = [
        Rule(f"/api/v1.1/campaigns/triggers/{method}{slash}", methods=["POST"], endpoint=method)
        for method in ("start", "start_batch", "get")
        for slash in ("", "/")
    ]

    def __init__(
        self,
        *,
        token: str = "sandbox-token",
        trigger_ids: tuple[int, ...] = (7,),
        limit: int | None = None,
        http_errors: bool = False,
    ) -> None:
        super().__init__()
        self.token = token
        self.trigger_ids = trigger_ids
        self.limit = limit
        self.http_errors = http_errors
        self.reset_state()

    def reset_state(self) -> None:
        self.campaigns: dict[int, dict[str, Any]] = {
            i: {"id": i, "name": f"API trigger {i}", "is_active": True, "trigger_type": "api_call"}
            for i in self.trigger_ids
        }
        self._counts: dict[str, int] = {}  # matching value → triggers launched
        self._last: dict[str, dict[str, Any]] = {}  # matching value → the last launch
        self.shared: set[tuple[str, str]] = set()  # (field_name, value) several profiles hold
        self.launched = 0

    # --- what tests and the demo read -------------------------------------------------
    def triggers(self) -> dict[str, int]:
        """Matching value (emails lower-cased) → how many triggers it received."""
        with self.lock:
            return dict(self._counts)

    def last(self) -> dict[str, dict[str, Any]]:
        """Matching value → the last launch it received (campaign, profile id, content...)."""
        with self.lock:
            return {k: dict(v) for k, v in self._last.items()}

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "launched": self.launched,
                "profiles": len(self._counts),
                "limit": self.limit,
                "campaigns": {str(k): v["is_active"] for k, v in self.campaigns.items()},
            }

    # --- the API ----------------------------------------------------------------------
    def start(self, request: Request) -> Response:
        return self._answer(request, self._start)

    def start_batch(self, request: Request) -> Response:
        return self._answer(request, self._start_batch)

    def get(self, request: Request) -> Response:
        return self._answer(request, self._get)

    def _answer(
        self, request: Request, handler: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Response:
        if len(request.get_data()) > MAX_BODY:
            return Response("413 Request Entity Too Large", 413, mimetype="text/plain")
        try:
            body = self._body(request)
            extra: dict[str, Any] = handler(body)
        except EnvelopeError as exc:
            status = exc.code if self.http_errors and 400 <= exc.code < 600 else 200
            return json_response({"error": exc.code, "error_text": exc.text}, status)
        return json_response({"error": 0, "error_text": "Successful operation", **extra})

    def _body(self, request: Request) -> dict[str, Any]:
        if request.mimetype != "application/json":
            raise EnvelopeError(400, "Content-Type must be application/json")
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise EnvelopeError(400, "Invalid JSON in the request body") from None
        if not isinstance(body, dict):
            raise EnvelopeError(400, "The request body must be a JSON object")
        token = body.get("token")
        if token is None and request.headers.get("Authorization", "").startswith("Bearer "):
            token = request.headers["Authorization"].removeprefix("Bearer ")
        if not token:
            raise EnvelopeError(401, "API token required")
        if not isinstance(token, str):
            raise EnvelopeError(400, "Parameter 'token' must be a string")
        if token != self.token:
            raise EnvelopeError(403, "Access denied: invalid API token")
        return body

    def _campaign(self, body: dict[str, Any], key: str) -> int:
        raw = body.get(key)
        if raw is None:
            raise EnvelopeError(400, f"Parameter '{key}' is required")
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise EnvelopeError(
                400, f"Parameter '{key}' must be the trigger campaign's number, not {raw!r}"
            )
        campaign = self.campaigns.get(raw)
        if campaign is None:
            raise EnvelopeError(404, f"Trigger campaign {raw} not found")
        if not campaign["is_active"]:
            raise EnvelopeError(400, f"Trigger campaign {raw} is not active")
        if campaign.get("trigger_type") != "api_call":
            raise EnvelopeError(
                400,
                f"Trigger campaign {raw} is not active for API calls (its trigger_type is "
                f"{campaign.get('trigger_type')!r}, not 'api_call')",
            )
        resource = body.get("resource_id")
        if resource is not None and (isinstance(resource, bool) or not isinstance(resource, int)):
            raise EnvelopeError(400, "Parameter 'resource_id' must be a number")
        return raw

    @staticmethod
    def _matching(body: dict[str, Any]) -> str:
        matching = body.get("matching", "email")
        if matching not in MATCHING:
            raise EnvelopeError(400, f"Unsupported matching mode {matching!r}")
        return str(matching)

    @staticmethod
    def _object(body: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
        value = body.get(key, {})
        if not isinstance(value, dict):
            raise EnvelopeError(400, f"{where}Parameter '{key}' must be a JSON object")
        return value

    def _value(self, item: dict[str, Any], matching: str, where: str = "") -> str:
        """The profile's matching value from `item`, checked; or an error."""
        key = MATCHING[matching]
        value = item.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and matching == "custom":
            value = str(value)
        if not isinstance(value, str) or not value:
            raise EnvelopeError(
                400, f"{where}Parameter '{key}' is required for matching {matching}"
            )
        if matching == "email" and not EMAIL.match(value):
            raise EnvelopeError(400, f"{where}Invalid email {value!r}")
        if matching == "phone" and not PHONE.match(value):
            raise EnvelopeError(400, f"{where}Invalid phone {value!r}")
        if matching == "profile_id" and not PROFILE_ID.match(value):
            raise EnvelopeError(404, f"{where}Profile {value!r} not found")
        rejected = self.faults.rejection(value)
        if rejected:
            raise EnvelopeError(404, f"{where}{rejected}")
        return value.lower() if matching == "email" else value

    def _unique(self, field_name: str | None, value: str, where: str = "") -> None:
        """A custom field value must be one profile's (see the module docstring)."""
        if (field_name, value) in self.shared:
            raise EnvelopeError(
                400, f"{where}Value {value!r} of field {field_name!r} is held by several profiles"
            )

    def _field_name(self, body: dict[str, Any], matching: str) -> str | None:
        if matching != "custom":
            return None
        name = body.get("field_name")
        if not isinstance(name, str) or not name:
            raise EnvelopeError(400, "Parameter 'field_name' is required for matching custom")
        return name

    def _start(self, body: dict[str, Any]) -> dict[str, Any]:
        if "trigger_id" in body and "id" not in body:
            raise EnvelopeError(400, "Parameter 'id' is required (trigger_id is for start_batch)")
        campaign = self._campaign(body, "id")
        matching = self._matching(body)
        field_name = self._field_name(body, matching)
        content = self._object(body, "content")
        custom_data = self._object(body, "custom_data")
        value = self._value(body, matching)
        self._unique(field_name, value)
        with self.lock:
            self._check_limit(1)
            pid = self._launch(campaign, matching, field_name, value, content, custom_data)
        return {"profile_id": pid}

    def _start_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        if "id" in body and "trigger_id" not in body:
            raise EnvelopeError(400, "Parameter 'trigger_id' is required (id is for start)")
        campaign = self._campaign(body, "trigger_id")
        for key in ("format", "matching"):  # NOTES.md marks only content, custom_data optional
            if key not in body:
                raise EnvelopeError(400, f"Parameter '{key}' is required")
        if body["format"] != "json":
            raise EnvelopeError(400, "Parameter 'format': only json is supported by the sandbox")
        matching = self._matching(body)
        field_name = self._field_name(body, matching)
        content = self._object(body, "content")
        root_custom = self._object(body, "custom_data")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise EnvelopeError(400, "Parameter 'data' must be a non-empty array")
        launches = []
        for i, item in enumerate(data):
            where = f"data[{i}]: "
            if not isinstance(item, dict):
                raise EnvelopeError(400, f"{where}must be a JSON object")
            value = self._value(item, matching, where)
            self._unique(field_name, value, where)
            custom = root_custom | self._object(item, "custom_data", where)
            launches.append((value, custom))
        with self.lock:
            self._check_limit(len(launches))
            ids = [
                self._launch(campaign, matching, field_name, value, content, custom)
                for value, custom in launches
            ]
        return {"result": ids}

    def _get(self, body: dict[str, Any]) -> dict[str, Any]:
        raw = body.get("id")
        campaign = self.campaigns.get(int(raw)) if isinstance(raw, int) else None
        if campaign is None:
            raise EnvelopeError(404, f"Trigger campaign {raw} not found")
        return {"data": dict(campaign)}

    def _check_limit(self, n: int) -> None:
        if self.limit is not None and self.launched + n > self.limit:
            raise EnvelopeError(402, "Tariff limit reached")

    def _launch(
        self,
        campaign: int,
        matching: str,
        field_name: str | None,
        value: str,
        content: dict[str, Any],
        custom_data: dict[str, Any],
    ) -> str:
        """Record one launch (under self.lock) and return the profile's id."""
        pid = value if matching == "profile_id" else _profile_id(f"{field_name}:{value}")
        self.launched += 1
        self._counts[value] = self._counts.get(value, 0) + 1
        self._last[value] = {
            "trigger_id": campaign,
            "matching": matching,
            "field_name": field_name,
            "value": value,
            "profile_id": pid,
            "content": content,
            "custom_data": custom_data,
            "at": time.time(),
        }
        return pid


def _profile_id(seed: str) -> str:
    """A stable 24-hex profile id (Altcraft ids are MongoDB ObjectIds)."""
    return hashlib.sha1(seed.encode()).hexdigest()[:24]
