"""Dropthought: one participant per call, which triggers the program's survey.

- `POST /dtapp/api/authenticate/login {"email", "password"}` gives an access token (1 hour)
  and a refresh token (24 hours), JWTs with `exp`. The access token is reused until
  `renew_margin` seconds before it expires, then renewed with `POST /dtapp/api/token/renew`
  (`{"refreshToken"}`, and the raw refresh token as `Authorization`, as Dropthought's SDK
  sends it); when the refresh token has expired too, or renewal is refused, we log in again.
  One thread renews at a time: the others wait and use its token.
- `POST /dtapp/api/participant/?participantgroupuuid=<uuid>` with `Authorization: Bearer`,
  body `{"header": [...], "data": [...]}`: the header names are the participant list's
  metadata names — `email_header`, `phone_header` and `name_header` for the mapping's
  `[fields]` email, phone and name, then the `[metadata]` names as written. A 401 renews
  the token once and retries; a second 401 logs in again and retries; a third is an
  AuthError. Any other 4xx refuses that one participant (FAILED with Dropthought's words).
  The call is never repeated on a read timeout (a trigger: the outcome is unknown).
- The answer's `data`, `header` and `meta_data` are JSON-encoded strings: they are parsed,
  and a value Dropthought stored differently from what was sent is logged (names only);
  `participant_uuid` becomes the delivery's ref.

Assumptions (unknown in Dropthought's documents): there is no documented export of
responses, unsubscribes or NPS, so this connector pulls nothing. Rate limits are unknown:
429 and 5xx are retried with backoff like everywhere else. A refused participant is
answered with a 4xx whose JSON `message` says why (a 2xx with `"success": false` is read
the same way). Renewal answers like login; a renewal without a new refresh token keeps the
old one. A token whose lifetime cannot be read from its `exp` is given the documented one.
Values are sent as exported: Dropthought's example writes dates as `YYYY-MM-DD HH:MM:SS`.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import requests

from syncd.config import Option
from syncd.crashpoints import crashpoint
from syncd.errors import AuthError, ConfigError, FatalError
from syncd.vendors.base import Connector, Contact, OnJob, Result, Status

API = "/dtapp/api"
ACCESS_LIFETIME = 3600.0  # documented: 1 hour
REFRESH_LIFETIME = 86400.0  # documented: 24 hours
FIELDS = ("email", "phone", "name")


class Dropthought(Connector):
    name = "dropthought"
    kind = "trigger"
    max_batch = 1
    options: ClassVar[dict[str, Option]] = {
        "email": Option(str, required=True, help="the registered admin user's email"),
        "password": Option(str, required=True, secret=True, help="that user's password"),
        "participant_group": Option(
            str, required=True, help="the participant group uuid (from Dropthought's CS team)"
        ),
        "email_header": Option(str, default="Email", help="the list's EMAIL metadata name"),
        "phone_header": Option(str, default="Phone", help="the list's PHONE metadata name"),
        "name_header": Option(str, default="Name", help="the list's NAME metadata name"),
        "renew_margin": Option(
            float, default=300.0, help="renew the access token this many seconds before expiry"
        ),
    }
    field_names = frozenset(FIELDS)
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {
        "email": "email",
        "phone": "phone",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        mapping = self.config.mapping
        if "email" not in mapping.fields and "phone" not in mapping.fields:
            raise ConfigError(
                "maps neither email nor phone", file=str(mapping.path), table="fields"
            )
        self.columns = [(f, self.opts[f"{f}_header"]) for f in FIELDS if f in mapping.fields]
        self.header = [h for _f, h in self.columns] + list(mapping.metadata)
        twice = {h for h in self.header if self.header.count(h) > 1}
        if twice:
            raise ConfigError(
                f"header {sorted(twice)[0]!r} is sent twice (a [metadata] name equals a "
                "*_header option)",
                file=str(mapping.path),
                table="metadata",
            )
        self.tokens = Tokens(self)
        self._prepared: str | None = None

    def validate(self, contact: Contact) -> str | None:
        if not contact.fields.get("email") and not contact.fields.get("phone"):
            return "no email and no phone: Dropthought cannot reach the participant"
        return None

    def check(self) -> str:
        """Log in: proves the email and password (it changes nothing)."""
        self.tokens.login()
        return "logged in"

    # --- push --------------------------------------------------------------------------
    def prepare(self) -> None:
        """Log in or renew now, before the contact is marked in flight; `_add` uses it."""
        self._prepared = self.tokens.current()

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        return [self._add(contact) for contact in batch]

    def row(self, contact: Contact) -> list[str]:
        """The contact's `data` array, in `self.header` order."""
        values = [contact.fields.get(f, "") for f, _h in self.columns]
        return values + [contact.metadata.get(name, "") for name in self.config.mapping.metadata]

    def _add(self, contact: Contact) -> Result:
        body = {"header": self.header, "data": self.row(contact)}
        token, self._prepared = self._prepared or self.tokens.current(), None
        steps = iter(("renew", "login"))
        while True:
            try:
                resp = self.http.request(
                    "POST",
                    f"{API}/participant/",
                    idempotent=False,
                    params={"participantgroupuuid": self.opts["participant_group"]},
                    json=body,
                    headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                )
            except AuthError as exc:
                step = next(steps, None)
                if exc.status != 401 or step is None:
                    raise
                self.log.info("access token refused", next=step)
                token = self.tokens.refused(token, step)
                continue
            except FatalError as exc:  # a 4xx about this participant
                return Result(contact.key, Status.FAILED, exc.reason)
            return self._read(contact, resp, body)

    def _read(self, contact: Contact, resp: requests.Response, body: dict[str, Any]) -> Result:
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            return Result(
                contact.key,
                Status.UNKNOWN,
                f"unreadable answer ({resp.text[:80]!r}): the participant may have been added",
            )
        if answer.get("success") is False:
            reason = answer.get("message") or "refused without a message"
            return Result(contact.key, Status.FAILED, f"HTTP {resp.status_code}: {reason}")
        results = answer.get("result")
        record = results[0] if isinstance(results, list) and results else {}
        if not isinstance(record, dict):
            record = {}
        stored = echoed(record)
        sent = zip(body["header"], body["data"], strict=True)
        changed = [h for h, v in sent if stored.get(h) != v] if stored else []
        if changed:
            self.log.warning(
                "Dropthought stored other values than sent", key=contact.key, headers=changed
            )
        uuid = record.get("participant_uuid")
        if not uuid:
            self.log.warning("the answer names no participant_uuid", key=contact.key)
        return Result(contact.key, Status.SENT, ref=str(uuid) if uuid else None)


def echoed(record: dict[str, Any]) -> dict[str, str]:
    """header name → value from an answer whose `header` and `data` are JSON-encoded strings
    (plain arrays are read too); {} when they cannot be read."""
    header, data = decoded(record.get("header")), decoded(record.get("data"))
    if header is None or data is None:
        return {}
    return {str(h): "" if v is None else str(v) for h, v in zip(header, data, strict=False)}


def decoded(value: Any) -> list[Any] | None:
    """A JSON array, whether sent as an array or as a string holding one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, list) else None


class Tokens:
    """The access and refresh tokens of one connector; renewed or re-obtained under a lock.

    Lifetimes are read from the JWTs (`exp` - `iat`) and counted on the connector's
    monotonic clock from the moment they arrive, so a skewed host clock does not matter.
    """

    def __init__(self, connector: Dropthought) -> None:
        self.http = connector.http
        self.clock = connector.clock
        self.log = connector.log
        self.opts = connector.opts
        self.margin = float(connector.opts["renew_margin"])
        self._lock = threading.Lock()
        self._access: str | None = None
        self._refresh: str | None = None
        self._access_until = 0.0
        self._refresh_until = 0.0

    def current(self) -> str:
        """A usable access token: the one held, renewed if it is about to expire."""
        with self._lock:
            if self._access is None:
                return self._login()
            if self.clock.monotonic() >= self._access_until - self.margin:
                return self._renew()
            return self._access

    def refused(self, token: str, step: str) -> str:
        """Dropthought refused `token` (401): renew it, or log in again (`step`)."""
        with self._lock:
            if self._access is not None and self._access != token:
                return self._access  # another call already replaced it
            return self._renew() if step == "renew" else self._login()

    def login(self) -> str:
        with self._lock:
            return self._login()

    def _login(self) -> str:
        resp = self.http.request(
            "POST",
            f"{API}/authenticate/login",
            json={"email": self.opts["email"], "password": self.opts["password"]},
        )
        access = self._keep(resp, "login")
        self.log.info("logged in", expires_in=round(self._access_until - self.clock.monotonic()))
        return access

    def _renew(self) -> str:
        if self._refresh is None or self.clock.monotonic() >= self._refresh_until - self.margin:
            self.log.info("refresh token expired; logging in again")
            return self._login()
        try:
            resp = self.http.request(
                "POST",
                f"{API}/token/renew",
                json={"refreshToken": self._refresh},
                headers={"Authorization": self._refresh},
            )
            access = self._keep(resp, "renewal")
        except FatalError as exc:
            self.log.info("renewal refused; logging in again", error=exc.reason)
            return self._login()
        self.log.info("access token renewed")
        crashpoint("token_renewed")
        return access

    def _keep(self, resp: requests.Response, what: str) -> str:
        try:
            answer = resp.json()
        except ValueError:
            answer = None
        result = answer.get("result") if isinstance(answer, dict) else None
        access = result.get("accessToken") if isinstance(result, dict) else None
        if not isinstance(result, dict) or not isinstance(access, str) or not access:
            message = answer.get("message") if isinstance(answer, dict) else None
            raise AuthError(
                f"{what} answered without an access token: {message or resp.text[:120]!r}",
                vendor="dropthought",
                hint="check the email and password",
            )
        now = self.clock.monotonic()
        self._access = access
        self._access_until = now + self._lifetime(access, ACCESS_LIFETIME)
        refresh = result.get("refreshToken")
        if isinstance(refresh, str) and refresh:
            self._refresh = refresh
            self._refresh_until = now + self._lifetime(refresh, REFRESH_LIFETIME)
        return access

    def _lifetime(self, token: str, documented: float) -> float:
        """Seconds the token lives: `exp` - `iat` (or `exp` - now), else the documented."""
        claims = _claims(token)
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float):
            return documented
        if isinstance(iat, int | float):
            return float(exp - iat)
        return float(exp) - self.clock.now().timestamp()


def _claims(token: str) -> dict[str, Any]:
    """A JWT's payload, unverified (we only read its times); {} if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}
