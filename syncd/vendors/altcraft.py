"""Altcraft: launch an API-call trigger campaign for new or changed contacts.

- Every call is `POST <base_url>/api/v1.1/<method>` with a JSON body carrying `"token"`.
- A batch goes in one `campaigns/triggers/start_batch` request (`trigger_id`, `format`
  "json", `matching`, `data[]`, body at most 10 MB: `batches()` splits on size); a batch of
  one goes through `campaigns/triggers/start` (`id`, the matching value at the root).
- `matching` (option): email, phone, profile_id, or custom (`field_name` option, the value
  from the mapping's `field_value`). Only the matching field is sent: Altcraft already
  holds the profile.
- `[metadata]` names say where a value goes: `content.<name>` → `content` (template
  variables `{apicontent.<name>}`), `custom_data.<name>` → `custom_data` (action hooks).
  `content` is one object per request, so contacts are batched by equal content values;
  `custom_data` goes in each `data[]` item.
- The answer's envelope decides, whatever the HTTP status: `error` 0 is success; 401/403 →
  AuthError; 402 (tariff limit reached) → QuotaError, which stops Altcraft for the run
  and leaves the rest pending; 429/5xx → RetriableError; anything else → FatalError with
  Altcraft's `error_text` (the delivery loop splits a refused batch down to single `start`
  calls, so one bad profile fails alone with Altcraft's words).
- A trigger is never re-sent on our own: every launch is `idempotent=False`, so a timeout
  or a garbled answer after the request went out is OutcomeUnknownError.
- `check()` reads the campaign with `campaigns/triggers/get` (token and campaign id) and
  requires it to be active.

Assumptions (unknown in Altcraft's documents): `start_batch` launches its profiles all or
none — an `error` 0 answer means every `data[]` item was launched (if `result` lists fewer
profile ids than we sent, that is logged: Altcraft does not say which ones it skipped);
`data[]` items carry no `content` of their own; `start` answers the profile's
`profile_id` (kept as the delivery's ref); at most `max_batch` = 10,000 profiles a request
(Altcraft's advice for its other bulk calls); 10 MB means 10,000,000 bytes; no documented
rate limit: 429 and Retry-After are honoured, and `min_interval` (default 0) paces calls
per token; there is no endpoint to list unsubscribes, so Altcraft offers no pull streams.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import requests

from syncd.clock import SYSTEM, Clock
from syncd.config import Option, VendorConfig
from syncd.errors import (
    AuthError,
    ConfigError,
    FatalError,
    OutcomeUnknownError,
    QuotaError,
    RetriableError,
)
from syncd.http import Pacer, pacer_for
from syncd.vendors.base import Connector, Contact, OnJob, Result, Status

API = "/api/v1.1/campaigns/triggers"
# the [fields] name that holds the matching value, per matching mode
MATCHING = {"email": "email", "phone": "phone", "profile_id": "profile_id", "custom": "field_value"}
PREFIXES = ("content", "custom_data")


class Altcraft(Connector):
    name = "altcraft"
    kind = "trigger"
    max_batch = 10_000
    max_bytes = 10_000_000
    options: ClassVar[dict[str, Option]] = {
        "token": Option(str, required=True, secret=True, help="the API token (sent in the body)"),
        "trigger_id": Option(int, required=True, help="the trigger campaign's number"),
        "matching": Option(str, default="email", choices=tuple(MATCHING)),
        "field_name": Option(str, help="the Altcraft profile field, when matching = 'custom'"),
        "min_interval": Option(float, default=0.0, help="seconds between calls per token"),
    }
    field_names = frozenset(MATCHING.values())
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {
        "email": "email",
        "phone": "phone",
    }

    def __init__(self, config: VendorConfig, *, clock: Clock = SYSTEM) -> None:
        mapping = config.mapping
        self.matching: str = config.options["matching"]
        self.match_field = MATCHING[self.matching]
        if self.matching == "custom" and not config.options["field_name"]:
            raise ConfigError(
                "matching = 'custom' needs field_name (the Altcraft profile field to match on)",
                table=f"vendors.{self.name}",
                key="field_name",
            )
        if self.match_field not in mapping.fields:
            raise ConfigError(
                f"matching = {self.matching!r} needs {self.match_field!r} mapped to a CRM column",
                file=str(mapping.path),
                table="fields",
            )
        for name in mapping.metadata:
            prefix, _, rest = name.partition(".")
            if prefix not in PREFIXES or not rest:
                raise ConfigError(
                    "name it content.<name> (a template variable) or custom_data.<name>",
                    file=str(mapping.path),
                    table="metadata",
                    key=name,
                )
        super().__init__(config, clock=clock)

    def pacer(self) -> Pacer | None:
        interval = self.opts["min_interval"]
        return pacer_for(self.name, self.opts["token"], interval, self.clock) if interval else None

    def validate(self, contact: Contact) -> str | None:
        if not contact.fields.get(self.match_field):
            return f"no {self.match_field} (Altcraft matches profiles on it)"
        return None

    # --- request bodies ----------------------------------------------------------------
    @staticmethod
    def _part(contact: Contact, prefix: str) -> dict[str, str]:
        start = prefix + "."
        return {k[len(start) :]: v for k, v in contact.metadata.items() if k.startswith(start)}

    def _content_key(self, contact: Contact) -> str:
        return json.dumps(self._part(contact, "content"), sort_keys=True)

    def _item(self, contact: Contact) -> dict[str, Any]:
        """The contact's `data[]` item: its matching value and its custom_data."""
        item: dict[str, Any] = {self.match_field: contact.fields[self.match_field]}
        custom = self._part(contact, "custom_data")
        if custom:
            item["custom_data"] = custom
        return item

    def _common(self) -> dict[str, Any]:
        body: dict[str, Any] = {"token": self.opts["token"], "matching": self.matching}
        if self.matching == "custom":
            body["field_name"] = self.opts["field_name"]
        return body

    def start_body(self, contact: Contact) -> dict[str, Any]:
        """`campaigns/triggers/start` for one contact."""
        body = self._common() | {"id": self.opts["trigger_id"]} | self._item(contact)
        content = self._part(contact, "content")
        if content:
            body["content"] = content
        return body

    def batch_body(self, batch: Sequence[Contact]) -> dict[str, Any]:
        """`campaigns/triggers/start_batch` for contacts that share their content."""
        body = self._common() | {"trigger_id": self.opts["trigger_id"], "format": "json"}
        content = self._part(batch[0], "content")
        if content:
            body["content"] = content
        body["data"] = [self._item(c) for c in batch]
        return body

    def encoded_size(self, contact: Contact) -> int:
        """The bytes of its `data[]` item and the ", " before it."""
        return len(json.dumps(self._item(contact)).encode()) + 2

    def batches(self, contacts: Sequence[Contact]) -> Iterator[Sequence[Contact]]:
        """Group contacts by their content (one object per request), then split on limits."""
        groups: dict[str, list[Contact]] = {}
        for contact in contacts:
            groups.setdefault(self._content_key(contact), []).append(contact)
        for group in groups.values():
            yield from super().batches(group)

    # --- push ----------------------------------------------------------------------------
    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        if len(batch) == 1:
            answer = self._call("start", self.start_body(batch[0]))
            ref = answer.get("profile_id")
            return [Result(batch[0].key, Status.SENT, ref=ref if isinstance(ref, str) else None)]
        if len({self._content_key(c) for c in batch}) > 1:
            raise FatalError(
                "contacts with different content cannot share one start_batch request",
                vendor=self.name,
            )
        answer = self._call("start_batch", self.batch_body(batch))
        launched = answer.get("result")
        if isinstance(launched, list) and len(launched) != len(batch):
            self.log.warning(
                "Altcraft launched fewer profiles than sent and does not say which",
                sent=len(batch),
                launched=len(launched),
            )
        return [Result(c.key, Status.SENT) for c in batch]

    def check(self) -> str:
        """Read the trigger campaign: proves the token, and that the campaign is active."""
        body = {"token": self.opts["token"], "id": self.opts["trigger_id"]}
        resp = self.http.request("POST", f"{API}/get", json=body, ok=_envelope)
        answer = _parsed(resp)
        if answer is None:
            raise RetriableError(f"not an Altcraft answer: {resp.text[:120]!r}", vendor=self.name)
        campaign = self._decide(answer).get("data")
        if not isinstance(campaign, dict) or not campaign.get("is_active"):
            raise FatalError(
                f"trigger campaign {self.opts['trigger_id']} is not active",
                vendor=self.name,
                hint="activate it in Altcraft, with the 'API call' trigger event",
            )
        return f"token accepted; trigger campaign {self.opts['trigger_id']} is active"

    def _call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """Launch: one POST, never repeated once it may have reached Altcraft."""
        resp = self.http.request(
            "POST", f"{API}/{method}", idempotent=False, json=body, ok=_envelope
        )
        answer = _parsed(resp)
        if answer is None:  # a 2xx we cannot read: the launch may have happened
            raise OutcomeUnknownError(
                f"not an Altcraft answer: {resp.text[:120]!r}", vendor=self.name
            )
        return self._decide(answer)

    def _decide(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The envelope when `error` is 0, else the error its code means."""
        code: int = answer["error"]
        if code == 0:
            return answer
        text = f"error {code}: {answer.get('error_text') or 'no error_text'}"
        if code in (401, 403):
            raise AuthError(text, vendor=self.name, status=code, hint="check the Altcraft token")
        if code == 402:
            raise QuotaError(
                text,
                vendor=self.name,
                status=code,
                hint="the Altcraft tariff limit is reached; the rest stays pending",
            )
        if code == 429 or code >= 500:
            raise RetriableError(text, vendor=self.name, status=code)
        raise FatalError(text, vendor=self.name, status=code)


def _parsed(resp: requests.Response) -> dict[str, Any] | None:
    """The answer's envelope, or None when it is not one."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if isinstance(body, dict) and type(body.get("error")) is int:
        return body
    return None


def _envelope(resp: requests.Response) -> bool:
    """Let a 4xx answer through when it carries Altcraft's envelope (its code decides)."""
    return resp.status_code != 429 and resp.status_code < 500 and _parsed(resp) is not None
