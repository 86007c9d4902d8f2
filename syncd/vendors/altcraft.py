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
  `custom_data` goes in each `data[]` item (the developer guide's "Bulk trigger launch":
  custom_data "can be passed either at the root of the request or separately in each data
  object"), so contacts with different custom_data still share a request.
- What an answer to a launch means (every Altcraft answer is HTTP 200 with the envelope
  `{"error": 0, "error_text": "Successful operation", ...}`; a non-zero `error` is a failure
  whatever the HTTP status):
  acknowledged: HTTP 200, `error` 0 and, for `start_batch`, `result` a list of one profile id
  per `data[]` item → every contact `sent`, its profile id its ref (`start`'s `profile_id`,
  if any, is its ref); an entry that is no profile id (null, "") leaves its contact
  `unknown`, the others sent;
  refused: `error` 401/403 → AuthError, 402 (tariff limit reached) → QuotaError (both stop
  Altcraft for the run; the rest stays pending); another 400-class `error` (400 bad
  request, 404 not found, ...) → FatalError with Altcraft's `error_text`, which the
  delivery loop may split down to single `start` calls so one bad profile fails alone —
  except an `error_text` saying the trigger campaign is not found or not active
  (`CAMPAIGN_REFUSED`), which is about the `trigger_id` option, not a profile ("Only active
  trigger campaigns set to the 'When using a special API call' event can be run via the
  API") when `campaigns/triggers/get`, read then, does not show the campaign active and of
  the "api_call" event: EndpointError, Altcraft is stopped for the run with every contact
  pending, none split off and failed, no attempt spent (if it does, the words were about a
  profile: FatalError, split like any refusal);
  HTTP 413 (Altcraft or its front proxy refused the body's size, unread) is decided by
  `syncd.http` for every vendor: FatalError, the batch split and re-sent;
  retried: `error` 429 (Altcraft refused the request: nothing launched), with backoff and
  under the breaker as an HTTP 429 is, and what `syncd.http` retries for a trigger;
  unknown: anything else once the request went out — a 2xx that is not an envelope, `error`
  0 at another HTTP status than 200 or with a missing or short `result`, a 5xx-class or
  unlisted `error` code, a 4xx without an envelope, a timeout — is OutcomeUnknownError: the
  batch is `unknown`, never split or re-sent in this run.
- `check()` reads the campaign with `campaigns/triggers/get` (token and campaign id; the
  developer guide's "Get trigger campaign information", `data.is_active` a bool and
  `data.trigger_type` "api_call" for an API-call campaign): an `error` 0 answer proves the
  token; a `trigger_type` other than "api_call" is a campaign the API cannot run (a
  FatalError naming it: check said all was well, and every launch was refused); the
  campaign is called active or not active only when the answer's `data.is_active` says
  so (true/false, 1/0), and otherwise "could not tell";
  a refused token (HTTP 200, `error` 401/403) is an AuthError naming altcraft. A 404 says
  what it can mean: Altcraft's own `error` 404 (its envelope, at any HTTP status) names
  the one thing the request carries, the campaign: check `trigger_id`; an HTTP 404 without
  the envelope is no answer of Altcraft's API: check base_url (the platform's address,
  Altcraft Cloud https://ru.altkraft.com), unless the release lacks the call.

Assumptions (unknown in Altcraft's documents): `start_batch` launches its profiles all or
none — an `error` 0 answer with one `result` id per `data[]` item means every item was
launched, and an error answer means none was (if `result` lists fewer ids than we sent,
Altcraft does not say which it skipped: the batch is unknown); `data[]` items carry no
`content` of their own, and a profile's `custom_data` in its `data[]` item reaches that
profile's launch (an earlier text of the guide's page names custom_data at the root only:
a release that ignored it per item would launch without it); `start` answers the
profile's `profile_id` (kept as the delivery's ref); at most `max_batch` = 10,000
profiles a request (Altcraft's advice for its other bulk calls); 10 MB means 10,000,000
bytes; no documented rate limit: 429 and Retry-After are honoured, and `min_interval`
(default 0) paces calls per token; an `error` 404 to `campaigns/triggers/get` is about
the campaign or the call (the guide gives no error answer for it); the code and text of
the answer to a missing or inactive campaign are not documented (altcraft.md only says
"the response message will indicate the code of error and its description"; the guide's
"API interaction" lists only general codes: 400 incorrect request, 401 API token
required, 402 tariff limit reached, ...; no public client was found that matches a text),
so the rule is a guess, and narrow: a 400-class `error` whose `error_text` names the
campaign ("campaign" or "trigger") and says "not found", "does not exist", "not active",
"inactive" or "disabled", confirmed by reading the campaign — any other text, e.g. a
profile's "not found", or those words while the campaign reads active for API calls, still
fails contacts one by one, and five refused in a row for the same reason stop Altcraft with
the rest pending; CRM contacts with the same matching value (a household's email, a shared
field_value) are one Altcraft profile (altcraft.md: the matching field "is unique for the
profile"), and whether Altcraft launches a profile named twice in one `start_batch` once or
twice is not said: in a run only the first of them (in delivery order) is launched, and the
others are `skipped`, their reason naming its key, never in a request — a person is not
surveyed twice by our doing: like a survey skipped for min_days_between_surveys, a skipped
contact's change is not launched later when its row is looked at again (another column
changed, it left the export and came back); only a new change of its trigger columns is,
decided as any change (min_days_between_surveys counts per contact, its own surveys);
there is no endpoint to list unsubscribes, so Altcraft offers no pull streams.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Literal

import requests

from syncd.clock import SYSTEM, Clock
from syncd.errors import (
    AuthError,
    ConfigError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    QuotaError,
    RetriableError,
    VendorError,
)
from syncd.http import Pacer, read_json, snippet
from syncd.settings import Option, VendorConfig
from syncd.state.statuses import ONE_PROFILE
from syncd.vendors.base import Connector, Contact, OnJob, Result, Status, pacing

API = "/api/v1.1/campaigns/triggers"
# the [fields] name that holds the matching value, per matching mode
MATCHING = {"email": "email", "phone": "phone", "profile_id": "profile_id", "custom": "field_value"}
PREFIXES = ("content", "custom_data")
# an `error_text` about the configured campaign, not a profile (see the assumptions above)
CAMPAIGN_REFUSED = re.compile(
    r"\b(?:campaign|trigger)\b.*\b(?:not found|does not exist|not active|inactive|disabled)\b",
    re.IGNORECASE,
)


class Altcraft(Connector):
    name = "altcraft"
    title = "Altcraft"
    kind = "trigger"
    max_batch = 10_000
    max_bytes = 10_000_000
    options: ClassVar[dict[str, Option]] = {
        "token": Option(
            str, required=True, secret=True, issued=True, help="the API token (sent in the body)"
        ),
        # 0 is no campaign: `syncd init` writes it as the placeholder, and Altcraft answers
        # it as a campaign not found (`check --online` names trigger_id)
        "trigger_id": Option(
            int, required=True, help="the trigger campaign's number", bounds=(0, 2**31 - 1)
        ),
        "matching": Option(str, default="email", choices=tuple(MATCHING)),
        "field_name": Option(str, help="the Altcraft profile field, when matching = 'custom'"),
        "min_interval": pacing("token"),
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
        # matching value → the contact launched for it this run (a connector lives one run)
        self._profiles: dict[str, str] = {}

    def pacer(self) -> Pacer | None:
        return self.paced(self.opts["token"])

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

    def unsendable(self, contacts: Sequence[Contact]) -> list[Result]:
        """Contacts whose profile another contact of this run has (`_first`) are skipped,
        naming it: Altcraft launches one profile for them all, and not twice."""
        return [
            Result(
                c.key,
                Status.SKIPPED,
                f"{first} has the same {self.match_field} (one Altcraft profile) and "
                f"is delivered for it in this run: {ONE_PROFILE}",
            )
            for c in contacts
            if (first := self._first(c)) != c.key
        ]

    def batches(self, contacts: Sequence[Contact]) -> Iterator[Sequence[Contact]]:
        """Group contacts by their content (one object per request), then split on limits."""
        groups: dict[str, list[Contact]] = {}
        for contact in contacts:
            groups.setdefault(self._content_key(contact), []).append(contact)
        for group in groups.values():
            yield from super().batches(group)

    def _first(self, contact: Contact) -> str:
        """The key of this run's first contact with this contact's matching value: Altcraft
        launches one profile for them all (see the assumptions)."""
        return self._profiles.setdefault(contact.fields[self.match_field], contact.key)

    # --- push ----------------------------------------------------------------------------
    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        if len(batch) == 1:
            answer = self._launch("start", self.start_body(batch[0]))
            ref = answer.get("profile_id")
            return [Result(batch[0].key, Status.SENT, ref=ref if isinstance(ref, str) else None)]
        if len({self._content_key(c) for c in batch}) > 1:
            raise FatalError(
                "contacts with different content cannot share one start_batch request",
                vendor=self.name,
            )
        answer = self._launch("start_batch", self.batch_body(batch))
        launched = answer.get("result")
        if not isinstance(launched, list) or len(launched) != len(batch):
            count = len(launched) if isinstance(launched, list) else "no"
            raise OutcomeUnknownError(
                f"start_batch answered error 0 with {count} profile ids for {len(batch)} "
                "profiles, and does not say which were launched",
                vendor=self.name,
                hint="check the campaign's launches in Altcraft before `syncd retry --unknown`",
            )
        return [
            _launched(c, pid, i) for i, (c, pid) in enumerate(zip(batch, launched, strict=True))
        ]

    def check(self) -> str:
        """Read the trigger campaign: proves the token; says the campaign is active, or not,
        only as far as the answer's `data.is_active` says (absent, it could not tell); a 404
        says what it can mean (see the module docstring)."""
        trigger = self.opts["trigger_id"]
        campaign = self._campaign()
        event = campaign.get("trigger_type")
        if isinstance(event, str) and event != "api_call":
            # altcraft.md: "Only active trigger campaigns set to the 'When using a special
            # API call' event can be run via the API"; the guide shows it as "api_call"
            raise FatalError(
                f"trigger campaign {trigger} is set off by the event {event!r}, not the API "
                "call ('api_call'): Altcraft runs only API-call campaigns from the API, so "
                "every launch would be refused",
                vendor=self.name,
                hint=f"set trigger_id in [vendors.altcraft] to a campaign whose event is "
                "'When using a special API call', or change campaign "
                f"{trigger}'s event to it",
            )
        flag = campaign.get("is_active")
        if flag in (False, 0):
            raise FatalError(
                f"trigger campaign {trigger} is not active (is_active: {json.dumps(flag)})",
                vendor=self.name,
                hint="activate it in Altcraft, with the 'API call' trigger event",
            )
        if flag in (True, 1):
            return f"token accepted; trigger campaign {trigger} is active"
        return (
            f"token accepted; could not tell whether trigger campaign {trigger} is active "
            "(the answer has no is_active flag)"
        )

    def _campaign(self) -> dict[str, Any]:
        """`campaigns/triggers/get`: the campaign's `data` ({} if it is no object), or the
        error its answer means (see `check`)."""
        trigger = self.opts["trigger_id"]
        body = {"token": self.opts["token"], "id": trigger}
        try:
            resp = self.http.request(
                "POST", f"{API}/get", json=body, ok=_envelope, busy=_busy, carries=False
            )
        except EndpointError as exc:
            if exc.status != 404:
                raise
            # no envelope: not an answer of Altcraft's API, which says "not found" in one
            raise EndpointError(
                f"{exc.reason} (no Altcraft error envelope): base_url does not reach the "
                "Altcraft API (another server, or a proxy that knows no such path), or this "
                "Altcraft release has no campaigns/triggers/get",
                vendor=self.name,
                status=404,
                hint="set base_url to the address the platform opens at, scheme://host[:port] "
                "as in the browser's address bar (Altcraft Cloud: https://ru.altkraft.com)",
            ) from None
        try:
            campaign = self._refused(resp, launch=False).get("data")
        except FatalError as exc:
            if exc.status != 404 or isinstance(exc, AuthError):
                raise
            # Altcraft's own `error` 404: the request names nothing but the campaign
            raise EndpointError(
                f"{exc.reason}: Altcraft (base_url reaches it) found no trigger campaign "
                f"{trigger}, or this release has no campaigns/triggers/get",
                vendor=self.name,
                status=404,
                hint=f"check trigger_id = {trigger} in [vendors.altcraft]: the number shown "
                "after # next to the trigger campaign's name (a number, not the name)",
            ) from None
        return campaign if isinstance(campaign, dict) else {}

    def _launchable(self) -> bool:
        """The campaign reads active and of the API-call event (unread, it does not)."""
        try:
            campaign = self._campaign()
        except VendorError:
            return False
        return campaign.get("is_active") in (True, 1) and campaign.get("trigger_type") == "api_call"

    def _launch(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """One launch POST, never repeated once it may have reached Altcraft: the envelope
        when it acknowledges, else the error the answer means (see the module docstring)."""
        resp = self.http.request(
            "POST", f"{API}/{method}", idempotent=False, json=body, ok=_answered, busy=_busy
        )
        answer = self._refused(resp, launch=True)
        if resp.status_code != 200:
            raise OutcomeUnknownError(
                f"HTTP {resp.status_code} with error 0: not Altcraft's acknowledgement",
                vendor=self.name,
                status=resp.status_code,
            )
        return answer

    def _refused(self, resp: requests.Response, *, launch: bool) -> dict[str, Any]:
        """The envelope when `error` is 0, else the error its code means; an answer that is
        no envelope, or a code that does not say Altcraft refused, is for a launch an unknown
        outcome (and for a read a retriable error)."""
        answer = read_json(resp, dict, vendor=self.name, idempotent=not launch)
        code = answer.get("error")
        if type(code) is not int:
            error = OutcomeUnknownError if launch else RetriableError
            raise error(
                f"HTTP {resp.status_code}, not an Altcraft answer (no integer error): "
                f"{snippet(resp)!r}",
                vendor=self.name,
                status=resp.status_code,
            )
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
        if code >= 500 and not launch:
            raise RetriableError(text, vendor=self.name, status=code)
        worded = 400 <= code < 500 and CAMPAIGN_REFUSED.search(str(answer.get("error_text")))
        # the words are a guess: a launch refused in them stops Altcraft only if the campaign,
        # read again, is not active for API calls (else they were about a profile)
        if worded and not (launch and self._launchable()):
            raise EndpointError(
                text,
                vendor=self.name,
                status=code,
                hint=f"check trigger_id = {self.opts['trigger_id']} in [vendors.altcraft]: the "
                "campaign must exist, be active and use the 'API call' event; every contact "
                "stays pending",
            )
        if 400 <= code < 500 or not launch:
            raise FatalError(text, vendor=self.name, status=code)
        raise OutcomeUnknownError(
            f"{text} (not a refusal: the profiles may have been launched)",
            vendor=self.name,
            status=code,
            hint="check the campaign's launches in Altcraft before `syncd retry --unknown`",
        )


def _launched(contact: Contact, profile_id: Any, index: int) -> Result:
    """A `start_batch` contact by the `result` entry in its place: a profile id (text, or a
    number) launched it and is its ref; anything else (null, "", an object) says neither
    that its profile was launched nor that it was not."""
    if isinstance(profile_id, int) and not isinstance(profile_id, bool):
        profile_id = str(profile_id)
    if isinstance(profile_id, str) and profile_id:
        return Result(contact.key, Status.SENT, ref=profile_id)
    return Result(
        contact.key,
        Status.UNKNOWN,
        f"start_batch answered error 0 with {json.dumps(profile_id)} as result[{index}], not "
        "a profile id: the profile may not have been launched; check the campaign's launches "
        "in Altcraft before `syncd retry --unknown`",
    )


def _envelope(resp: requests.Response) -> bool:
    """Let a 4xx answer through when it carries Altcraft's envelope (its code decides)."""
    if resp.status_code == 429 or resp.status_code >= 500:
        return False
    try:
        return type(read_json(resp, dict, vendor=Altcraft.name).get("error")) is int
    except VendorError:
        return False


def _busy(resp: requests.Response) -> bool:
    """Altcraft's `error` 429 (too many requests) in an answer handed to the connector: the
    request was refused, so `syncd.http` retries it as it does an HTTP 429."""
    try:
        code = read_json(resp, dict, vendor=Altcraft.name).get("error")
    except VendorError:
        return False
    return type(code) is int and code == 429


def _answered(resp: requests.Response) -> bool:
    """For a launch, also hand a 4xx without an envelope to the connector, which calls it an
    unknown outcome. 401/403, 404/405, 413 and 429 keep their meaning from syncd.http."""
    status = resp.status_code
    return _envelope(resp) or (400 <= status < 500 and status not in (401, 403, 404, 405, 429))
