"""Dropthought: one participant per call, which triggers the program's survey.

- `POST /dtapp/api/authenticate/login {"email", "password"}` gives an access token (1 hour)
  and a refresh token (24 hours), JWTs with `exp`. The access token is reused until
  `renew_margin` seconds before it expires, then renewed with `POST /dtapp/api/token/renew`
  (`{"refreshToken"}`, and the raw refresh token as `Authorization`, as Dropthought's SDK
  sends it); when the refresh token has expired too, or renewal is refused, we log in again.
  One thread renews at a time: the others wait and use its token. `syncd check --online`
  logs in: that proves the email and password and changes nothing.
- `POST /dtapp/api/participant/?participantgroupuuid=<uuid>` with `Authorization: Bearer`,
  body `{"header": [...], "data": [...]}`: the header names are the participant list's
  metadata names — `email_header`, `phone_header` and `name_header` for the mapping's
  `[fields]` email, phone and name, then the `[metadata]` names as written. A 401 renews
  the token once and retries; a second 401 logs in again and retries; a third is an
  AuthError. Any other 4xx refuses that one participant: a FatalError with Dropthought's
  words, which the delivery loop records as FAILED, stopping Dropthought for the run when
  five participants in a row are refused alike (a list or program problem, not theirs).
  The call is never repeated on a read timeout (a trigger: the outcome is unknown).
- What a 404 or 401 tells to check, per call: on login (and renewal) a 404 is base_url
  (their URLs hold no option: "Path Parameters: No Parameters", "Query Parameters: No
  Parameters") and a 401 the email and password; on the participant call a 404 is
  participant_group or base_url, and a 401 that outlives a renewal and a fresh login (or a
  403) is the user's rights (dropthought.md, Pre-requisites: "the user should have Admin
  access") or a group of another account, never the password the login just proved. A 200
  to the login (or renewal) that is no JSON object (half a document, an empty body) is
  asked again, as every read is (README, "Reliability"); one still so after the last retry
  (a proxy's or a website's page) names base_url too.
- Acknowledgement, as documented: `"success": true` and `result[0].participant_uuid`, which
  becomes the delivery's ref. Any other 2xx answer — `{}`, `"success": "false"`, no uuid,
  not JSON — is `unknown`, never `sent` and never re-sent on our own. The answer's
  `data`, `header` and `meta_data` are JSON-encoded strings: they are parsed, and a value
  Dropthought stored differently from what was sent is logged (names only).
- A list's metadata have types (`NAME`, `EMAIL`, `PHONE`, `DATE`, `String`); the mapping's
  `[types]` table types its `[metadata]` names `DATE` or `PHONE` (the `[fields]` are EMAIL,
  PHONE and NAME already). A DATE value is sent as `YYYY-MM-DD HH:MM:SS` (the document's
  format, which advanced scheduling reads), a PHONE value as E.164. A value that cannot be
  converted quarantines the contact for Dropthought only, saying which metadata, column and
  value, and why. The answer's `meta_data` gives the list's own types: a header it calls
  DATE or PHONE that went in another form (untyped in the mapping) is warned about once,
  naming the `[types]` line to add; when it types none of the headers sent DATE (the list
  needs "at least one metadata of date-time type", Step #2, which advanced scheduling
  triggers by), that is warned about once too. So is a participant sent without email:
  Dropthought's primary key is name + email (the Sample Response's `primary_key`), so
  contacts without email who share a name are one participant to it.

Assumptions (unknown in Dropthought's documents): there is no documented export of
responses, unsubscribes or NPS, so this connector pulls nothing. Rate limits are unknown:
a 429 (or a 503 with Retry-After) is retried with backoff, the participant call's too
(Dropthought refused it); a 500, 502, 504 or 503 without Retry-After is retried on login
and renewal, but to the participant call it leaves the participant `unknown` and stops
Dropthought for the run (the survey may have been triggered: it is never re-sent on our
own), as for every trigger; `min_interval` (default 0) paces calls per user. A refused
participant is answered with a 4xx, or a 2xx with `"success": false`, whose JSON `message`
says why. Token renewal answers like login, `result.{accessToken, refreshToken}`, or with
both at the top level (as Dropthought's React Native SDK reads them); a renewal without a
new refresh token keeps the old one. A token whose lifetime cannot be read from its `exp`
is given the documented one.
DATE conversion, shown here with `date_order = "DMY"`: `2026-01-10 14:05:30`
→ `2026-01-10 14:05:30`; `2026-01-10 14:05` → `2026-01-10 14:05:00`; `2026-01-10T14:05:30`
→ `2026-01-10 14:05:30`; `2026-01-10T14:05:30.250` → `2026-01-10 14:05:30` (fractions are
dropped); `2026-01-10T14:05:30Z` → `2026-01-10 14:05:30`; `2026-01-10T14:05:30+01:00` →
`2026-01-10 13:05:30`; `2026-01-10` → `2026-01-10 00:00:00` (a date alone is midnight);
`10/01/2026` → `2026-01-10 00:00:00`; `10/01/2026 14:05` → `2026-01-10 14:05:00`;
`1/2/2026 9:05:30` → `2026-02-01 09:05:30`; with `date_order = "MDY"` the two first numbers
swap. A time with `Z` or an offset is converted to `date_timezone` (default UTC: the list's
zone is not documented); a time without one is taken to be in it already. Slashed dates are
read by `date_order` only, never guessed: unset, they are quarantined; so is a day > 12
where `date_order` puts the month (`01/13/2026` under DMY: the column is in the other order).
Refused too: impossible dates (`31/02/2026`), two-digit years (`10/01/26`), other
separators (`10.01.2026`), month names. An empty DATE is sent empty, as a metadata left out
would be stored: one header for every participant, and a cleared date reaches Dropthought.
A PHONE value is sent as E.164 with its country code (`+32 470 12 34 56`,
`0032 470 12 34 56` → `+32470123456`), normalised like a phone field: a national number
(`0470 12 34 56`) with `[source] phone_region`, and quarantined for Dropthought without it.
An empty PHONE is sent empty.
"""

from __future__ import annotations

import base64
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal
from zoneinfo import ZoneInfo

import phonenumbers
import requests

from syncd.crashpoints import crashpoint
from syncd.dates import read_date
from syncd.errors import (
    AuthError,
    ConfigError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    RetriableError,
)
from syncd.http import Hints, Pacer, loads, read_json, snippet
from syncd.log import scrub
from syncd.settings import Option, time_zone
from syncd.vendors.base import Connector, Contact, OnJob, Result, Status, pacing

API = "/dtapp/api"
ACCESS_LIFETIME = 3600.0  # documented: 1 hour
REFRESH_LIFETIME = 86400.0  # documented: 24 hours
FIELDS = ("email", "phone", "name")
LIST_DATE = "%Y-%m-%d %H:%M:%S"  # the document's DATE format
# the login's and renewal's 404 and 401: their URLs hold no option (dropthought.md, Step #1:
# "Path Parameters: No Parameters", "Query Parameters: No Parameters")
TOKEN_HINTS = Hints(
    endpoint="check base_url in [vendors.dropthought]: scheme://host[:port] only (e.g. "
    "https://api.dropthought.com), syncd adds /dtapp/api/authenticate/login",
    auth="check email and password in [vendors.dropthought]",
)


class Dropthought(Connector):
    name = "dropthought"
    title = "Dropthought"
    kind = "trigger"
    max_batch = 1
    url_options = ("participant_group",)
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
        "date_order": Option(
            str,
            choices=("DMY", "MDY"),
            help="how the export writes slashed dates (DD/MM/YYYY or MM/DD/YYYY); unset, "
            "a slashed DATE value is quarantined",
        ),
        "date_timezone": Option(
            str,
            default="UTC",
            help="the time zone of the list's DATE values: a time with Z or an offset is "
            "converted to it",
        ),
        "min_interval": pacing("user (email)"),
    }
    field_names = frozenset(FIELDS)
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {
        "email": "email",
        "phone": "phone",
    }
    value_types = ("DATE", "PHONE", "String")

    @classmethod
    def check_options(cls, base_url: str, options: Mapping[str, Any]) -> None:
        time_zone(options["date_timezone"], "date_timezone")

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
        typed_fields = sorted(set(mapping.types) & set(mapping.fields))
        if typed_fields:
            raise ConfigError(
                "the [fields] are typed already (email EMAIL, phone PHONE, name NAME); "
                "give types to [metadata] names only",
                file=str(mapping.path),
                table="types",
                key=typed_fields[0],
            )
        # the metadata to convert, with the CRM column each comes from (for the reason)
        self.typed = [
            (name, kind, mapping.metadata[name])
            for name, kind in mapping.types.items()
            if kind != "String"
        ]
        self.zone = ZoneInfo(self.opts["date_timezone"])
        self.tokens = Tokens(self)
        group = repr(self.opts["participant_group"])
        # each call's 404 and 401 name what is likely wrong in it (`Hints`): the login's and
        # renewal's URLs hold no option, the participant call's holds the group; by a third
        # 401 there, a login has just proved the email and password
        self.participant_hints = Hints(
            endpoint="check base_url (scheme://host[:port] only) and participant_group in "
            f"[vendors.dropthought]: the participant group uuid from Dropthought's CS team, "
            f"now {group}",
            auth="the login works (a 401 here renews and logs in again first), but its token "
            f"may not add participants to group {group}: the user needs Admin access "
            "(dropthought.md, Pre-requisites) and the group must be this account's; check "
            "participant_group in [vendors.dropthought] and the user's role in Dropthought",
        )
        self._prepared: str | None = None
        self._warned: set[str] = set()  # headers `_untyped` warned about

    def pacer(self) -> Pacer | None:
        return self.paced(self.opts["email"])  # tokens change; the user they are for does not

    def value_kinds(self) -> Mapping[str, Literal["email", "phone"]]:
        """PHONE metadata are normalised like phone fields (E.164, with [source] phone_region
        for national numbers) before `shape` checks them."""
        kinds: dict[str, Literal["email", "phone"]] = dict(self.field_types)
        kinds.update({n: "phone" for n, t in self.config.mapping.types.items() if t == "PHONE"})
        return kinds

    def validate(self, contact: Contact) -> str | None:
        if not contact.fields.get("email") and not contact.fields.get("phone"):
            return "no email and no phone: Dropthought cannot reach the participant"
        return None

    def shape(self, contact: Contact) -> Contact | str:
        """The contact with its DATE and PHONE metadata in the list's formats, or why not."""
        reason = self.validate(contact)
        if reason or not self.typed:
            return reason or contact
        metadata = dict(contact.metadata)
        for name, kind, column in self.typed:
            value = metadata.get(name, "")
            if not value:
                continue  # sent empty, as a metadata left out is stored
            try:
                if kind == "DATE":
                    metadata[name] = list_date(value, self.opts["date_order"], self.zone)
                else:
                    metadata[name] = international_phone(value)
            except ValueError as exc:
                return f"{kind} metadata {name!r} (column {column!r}): {exc}"
        return dataclasses.replace(contact, metadata=metadata)

    def check(self) -> str:
        """Log in: proves the email and password (it changes nothing)."""
        self.tokens.login()
        return f"logged in as {self.opts['email']}"

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
                    hints=self.participant_hints,
                )
            except AuthError as exc:
                step = next(steps, None)
                if exc.status != 401 or step is None:
                    raise
                self.log.info("access token refused", next=step)
                token = self.tokens.refused(token, step)
                continue
            # a 4xx refusing this participant is a FatalError for the delivery loop, which
            # fails it and stops Dropthought once SAME_REFUSALS contacts in a row are refused
            # alike (a list or program problem refuses every participant)
            return self._read(contact, resp, body)

    def _read(self, contact: Contact, resp: requests.Response, body: dict[str, Any]) -> Result:
        try:
            answer = read_json(resp, dict, vendor=self.name, idempotent=False)
        except OutcomeUnknownError as exc:
            return Result(contact.key, Status.UNKNOWN, unacknowledged(exc.reason))
        if answer.get("success") is False:
            reason = answer.get("message") or "refused without a message"
            raise FatalError(f"HTTP {resp.status_code}: {reason}", vendor=self.name)
        results = answer.get("result")
        record = results[0] if isinstance(results, list) and results else {}
        if not isinstance(record, dict):
            record = {}
        uuid = record.get("participant_uuid")
        if answer.get("success") is not True or not isinstance(uuid, str) or not uuid:
            text = f"HTTP {resp.status_code}: {snippet(resp, 80)!r}"
            return Result(contact.key, Status.UNKNOWN, unacknowledged(text))
        stored = echoed(record)
        sent = dict(zip(body["header"], body["data"], strict=True))
        changed = [h for h, v in sent.items() if stored.get(h) != v] if stored else []
        if changed:
            self.log.warning(
                "Dropthought stored other values than sent", key=contact.key, headers=changed
            )
        listed = echoed(record, "meta_data")
        self._untyped(contact, sent, listed)
        self._undated(contact, sent, listed)
        self._keyed_by_name(contact, record)
        return Result(contact.key, Status.SENT, ref=uuid)

    def _keyed_by_name(self, contact: Contact, record: dict[str, Any]) -> None:
        """Warn, once, when a participant went without email: dropthought.md, Step #3, the
        Sample Response's "primary_key": "Sudhakarsudhakar1@dropthought.com" is the NAME
        and the EMAIL, so contacts without email who share a name (or have none) are one
        participant to Dropthought -- the later one takes the earlier one's uuid and values."""
        if contact.fields.get("email") or "@" in self._warned:
            return
        if isinstance(record.get("primary_key"), str):
            self._warned.add("@")  # `_warned` holds headers; "@" is no header
            self.log.warning(
                "no email: Dropthought keys this participant by its name alone",
                key=contact.key,
                fix="contacts without email who share a name are one participant to "
                "Dropthought (its primary key is name + email): map email, or check the "
                "participants in Dropthought",
            )

    def _undated(self, contact: Contact, sent: dict[str, str], listed: dict[str, str]) -> None:
        """Warn, once, when the answer's `meta_data` types none of the headers sent DATE:
        dropthought.md, Step #2, the list needs "at least one metadata of date-time type",
        which advanced scheduling triggers the program by; a participant sent without one
        is acknowledged but has no date to be scheduled by."""
        if not listed or "" in self._warned:
            return
        if not any(listed.get(header, "").upper() == "DATE" for header in sent):
            self._warned.add("")  # `_warned` holds headers; "" is no header
            self.log.warning(
                "no DATE metadata is sent: advanced scheduling has no date to trigger by",
                key=contact.key,
                fix="map the list's date-time metadata in [metadata] and give it "
                '"DATE" in the mapping\'s [types]',
            )

    def _untyped(self, contact: Contact, sent: dict[str, str], listed: dict[str, str]) -> None:
        """Warn, once a header, when the answer's `meta_data` says the list types a header
        DATE or PHONE that was sent in another form: NOTES.md, "A value sent into a DATE
        metadata in another format is at best stored as text the scheduler cannot use" -- a
        participant who may never be surveyed, though Dropthought acknowledged him."""
        for header, value in sent.items():
            kind = listed.get(header, "").upper()
            wrong = (kind == "DATE" and not _is_list_date(value)) or (
                kind == "PHONE" and not value.startswith("+")
            )
            if value and wrong and header not in self._warned:
                self._warned.add(header)
                self.log.warning(
                    "the list types a metadata that was sent untyped",
                    key=contact.key,
                    header=header,
                    type=kind,
                    fix=f'add "{header}" = "{kind}" to the mapping\'s [types]',
                )


def unacknowledged(answer: str) -> str:
    return (
        f"answered without Dropthought's acknowledgement (success: true and a "
        f"participant_uuid): {answer}; the participant may have been added and surveyed: "
        "check in Dropthought, then `syncd retry --unknown` if it was not"
    )


def list_date(value: str, order: str | None, zone: ZoneInfo) -> str:
    """An export date as the list's `YYYY-MM-DD HH:MM:SS` (see the module docstring), or
    ValueError saying why it cannot be read."""
    return read_date(value, order, zone, "dropthought").strftime(LIST_DATE)


def international_phone(value: str) -> str:
    """E.164 for a number written with its country code (`+` or `00`), or ValueError."""
    compact = value.strip()
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    try:
        number = phonenumbers.parse(compact, None)
    except phonenumbers.NumberParseException:
        number = None
    if number is None or not phonenumbers.is_possible_number(number):
        raise ValueError(
            f"{value!r} has no country code: Dropthought needs it (+32 470 12 34 56); fix the "
            "export, or map the column as [fields] phone, normalised with [source] phone_region"
        )
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def _is_list_date(value: str) -> bool:
    try:
        datetime.strptime(value, LIST_DATE)
    except ValueError:
        return False
    return True


def echoed(record: dict[str, Any], values: str = "data") -> dict[str, str]:
    """header name → value (`data`) or type (`meta_data`) from an answer whose `header` and
    `values` are JSON-encoded strings (plain arrays are read too); {} when they cannot be
    read."""
    header, data = decoded(record.get("header")), decoded(record.get(values))
    if header is None or data is None:
        return {}
    return {str(h): "" if v is None else str(v) for h, v in zip(header, data, strict=False)}


def decoded(value: Any) -> list[Any] | None:
    """A JSON array, whether sent as an array or as a string holding one."""
    if isinstance(value, str):
        try:
            value = loads(value)
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
        answer = self._ask(
            "login",
            "authenticate/login",
            json={"email": self.opts["email"], "password": self.opts["password"]},
        )
        access = self._keep(answer, "login")
        self.log.info("logged in", expires_in=round(self._access_until - self.clock.monotonic()))
        return access

    def _renew(self) -> str:
        if self._refresh is None or self.clock.monotonic() >= self._refresh_until - self.margin:
            self.log.info("refresh token expired; logging in again")
            return self._login()
        try:
            answer = self._ask(
                "renewal",
                "token/renew",
                json={"refreshToken": self._refresh},
                headers={"Authorization": self._refresh},
            )
            access = self._keep(answer, "renewal")
        except FatalError as exc:
            self.log.info("renewal refused; logging in again", error=exc.reason)
            return self._login()
        self.log.info("access token renewed")
        crashpoint("token_renewed")
        return access

    def _ask(self, what: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The login's or renewal's JSON object, read as `HttpClient.read` reads (half a
        document or an empty 200 is asked again, under the retries and the breaker). One
        that is still no JSON object after the last retry (a proxy's or a website's page)
        is no Dropthought API: an EndpointError naming base_url, not the password."""
        try:
            # carries=False: a participant refused with 401 is not in flight while we do this
            return self.http.read(
                "POST", f"{API}/{path}", dict, carries=False, hints=TOKEN_HINTS, **kwargs
            )
        except RetriableError as exc:
            if exc.status is None or not 200 <= exc.status < 300:
                raise
            raise EndpointError(
                f"{what}: {exc.reason}",
                vendor="dropthought",
                status=exc.status,
                hint=f"no Dropthought JSON came back: {TOKEN_HINTS.endpoint}",
            ) from None

    def _keep(self, answer: dict[str, Any], what: str) -> str:
        # `result.{accessToken, refreshToken}` as documented, or both at the top level
        result = answer.get("result")
        if not isinstance(result, dict):
            result = answer
        access = result.get("accessToken")
        if not isinstance(access, str) or not access:
            message = answer.get("message")
            raise AuthError(
                f"{what} answered without an access token: "
                f"{message or scrub(repr(answer))[:120]!r}",
                vendor="dropthought",
                hint=TOKEN_HINTS.auth,
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
        claims = loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}
