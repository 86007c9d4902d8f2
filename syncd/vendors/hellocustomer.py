"""Hello Customer: survey invitations through `respondent/addmultipletocache`; answers, NPS and
unsubscribes pulled back.

- HTTPS only (the vendor allows TLS 1.2 calls only): an `http://` base_url is refused at
  load unless its host is loopback (127.0.0.0/8, ::1, localhost: a local sandbox).
- `Authorization: basic <token>`, at most one call per second per token. Push, pull and
  `check` share one `Pacer` per token (`pacer()`), so syncd keeps the limit by construction;
  a 429 anyway (with or without Retry-After) is retried by `syncd.http`.
- Push: `POST /V1.0/EN/campaign/{campaign}/respondent/addmultipletocache`, `batch_size`
  respondents a call (default 100). Each carries `email`, `language_UniqueID` (the mapped
  `language` column as a name, ISO code or GUID, else `default_language`), the mapped names
  and phone, `custom_UniqueID` = the CRM key, `campaign_UniqueID` and `keyValues` = the
  mapping's [metadata]. A contact without email or a usable language is quarantined for
  Hello Customer by `validate`; one queued before that became so (default_language taken
  out) goes in a batch of its own and fails without a request, never beside others whose
  request may end unknown. Invitations are triggers: sent with `idempotent=False`.
- What an answer to that call means (the document: "If you get a response 200 from our
  server, the respondent was successfully added", and for every call, "Validation
  messages": "200/201: Success"; `Respondent/Add`, which syncd does not use, acknowledges
  with 201 and the body echoed):
  acknowledged: HTTP 200 or 201 with an empty body or a JSON body that does not say it
  failed (`success`/`isSuccess` false, a non-empty `error`/`errors`) → every respondent
  `sent`;
  refused: a 4xx (400, 409, 422, ...; not a 413 or 415, `syncd.http`'s for every vendor) carrying a validation message (a JSON text,
  or an object with a `message`) → FatalError, which the delivery loop may split to find
  the bad respondent — except the documented "Touchpoint with ID: {campaignUniqueID} not
  found", which is about the `campaign` option: EndpointError, Hello Customer is stopped for
  the run with every respondent pending, none split off and failed; 401/403 (AuthError)
  and 404/405 (a wrong URL) keep the meaning `syncd.http` gives them: Hello Customer is
  stopped for the run, all stays pending; a 413, with or without a message, keeps the
  meaning `syncd.http` gives it for every vendor: the body was refused unread (by Hello
  Customer or a proxy in front of it), FatalError, so the batch is split and re-sent;
  retried: 429 and what `syncd.http` retries for a trigger;
  unknown: anything else once the request went out — 204 or another 2xx, a 200 or 201 that
  is HTML or says it failed, a 4xx without a validation message, a timeout — is
  OutcomeUnknownError: the batch is `unknown`, never split or re-sent in this run.
- Pull "responses": `GET .../answers/getall/{start}/{end}` in windows of `window_days`
  (default 7; the document allows at most 31: "the start date and end date cannot be more
  than 31 days apart") (yyyyMMddHHmmss, UTC, both ends inclusive) from `first_date`
  (default: 90 days back) to now: the call has no paging, so a window's answers must fit
  syncd's answer cap (some 3 KB a response in the document's example; see the assumptions
  below; a 90-day backfill is 13 paced calls). Each pull re-reads the last
  `lookback_days` for late or edited answers. The cursor is the end of the last window
  read (`2026-03-31T23:59:59Z`). A window starts on the second the one before ended on,
  and a pull on its cursor's second (minus the lookback, and at least `SLACK`, an hour: a
  clock ahead by less leaves the cursor in the vendor's future): Hello Customer keeps times
  finer than the whole-second parameters, so windows that met at 12:00:00 and 12:00:01
  would never read an answer given at 12:00:00.5.
- Pull "nps": `POST .../analysis/nps/getnpsscore/{start}/{end}` per calendar month (UTC), for
  all respondents (`[]`) and for each of `nps_filters`; stored with `period_start` = the 1st
  and `period_end` = the last day of the month. A month is asked from its 1st 00:00:00 to
  the next month's 1st 00:00:00, the second the next month's call starts on: an end of
  23:59:59 on the last day left an answer at 23:59:59.5 in neither month's score. The
  current month is "to date" and updated on every pull; the previous month is re-read
  while it is within `lookback_days`. The cursor is the first day of the last month read
  (`2026-03-01`).
- Pull "unsubscribes": `GET {unsubscribes_path}` in the same windows and cursor as responses;
  a 3xx, 404 or 405 there names `unsubscribes_path` to check (elsewhere: `campaign`).
  `streams = ["responses", "nps"]` never calls it (an account without that call).
- `check()` reads the last minute with a call a configured stream makes (answers, else
  unsubscribes, else NPS: a token holds each call's permission or not, "5. Validation
  messages", 401): proves the token and that it may read the campaign; a refused token
  is an AuthError naming hellocustomer. With no streams it reads nothing (no read-only
  call proves the push's permission): the first push tells.
- "Touchpoint with ID: {campaignUniqueID} not found" (a 400, "5. Validation messages")
  answering `check`, a pull or the push is an EndpointError naming `campaign`, whichever
  call it answers (a pull's stream fails with that hint; the push stops Hello Customer).

Assumptions (unknown in the vendor's documents): the largest `addmultipletocache` call is
1000 respondents (`batch_size` may not exceed it); the call is all or nothing (one bad
respondent makes it 400 with a validation message and nothing is added, so the delivery
loop splits the batch to find it; each extra call costs a second of pacing, which is why
the default batch is 100, not 1000); its 200 answer carries nothing we need (the sandbox
answers an empty body). A validation message comes as a JSON text or an object with a
`message`; a 4xx without one may come from something in front of Hello Customer and does
not prove the respondents were refused. A 429 may or may not carry Retry-After. The token's
throttle counts every call, so calls are spaced `1 s + pace_margin` (default 50 ms) to
absorb network jitter. Date parameters and answer dates are UTC; `getall` selects by answer
date. Boolean and multiple-choice answers come as `answer_Boolean` and `answer_Options`.
The NPS call takes a calendar month (no window limit is documented; a month is at most 31
days anyway) and answers zeros for a period without NPS answers; it compares its answers'
finer times with the whole-second dates as `getall` does (both ends inclusive, 23:59:59.5
after an end of 23:59:59), so the one instant two months' calls share, midnight on the 1st
to the ten-millionth of a second, counts in both. "Request unsubscribed
emails" is `GET /V1.0/EN/campaign/{campaign}/respondent/unsubscribed/{start}/{end}`
answering a JSON array of `{"uniqueID", "email", "custom_UniqueID", "respondent_UniqueID",
"date"}` (date ISO 8601 UTC, e.g. `2026-03-01T10:00:00Z`) for the unsubscribes dated in
[start, end]; the path is configurable (`unsubscribes_path`, starting with `/`), and its
only placeholders are `{campaign}`, `{start}` and `{end}` (yyyyMMddHHmmss), checked at load.
`getall` has no paging and no documented size limit: its whole answer is read under
syncd's 32 MiB cap (some 10,000 responses), so answers and unsubscribes are read in windows
of `window_days` (default 7, at most 31: 31-day windows of a touchpoint answered 400 times a
day would never be read); set `window_days = 1` for a touchpoint answered more than about
1,500 times a day, and a fraction of a day (down to an hour, 0.0417) for one answered more
than about 10,000 times a day. A pull reads whole seconds up to its cursor: an answer given in the
second the pull starts is read by the next pull.
"""

from __future__ import annotations

import ipaddress
import json
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import requests

from syncd.errors import (
    ConfigError,
    EndpointError,
    FatalError,
    OptionError,
    OutcomeUnknownError,
)
from syncd.http import Hints, Pacer, loads, pacer_for, snippet
from syncd.settings import Option
from syncd.vendors.base import Connector, Contact, OnJob, Page, Result, Status, lowered

# the documented language ids, with their ISO 639-1 code and the names a CRM may use
LANGUAGES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("1B5C1275-4F92-422F-B1FC-799BF8E30598", "nl", ("dutch", "nederlands", "flemish")),
    ("901AF5BC-06CB-4DE0-B523-135ECFDC882A", "fr", ("french", "français", "francais")),
    ("DF88D743-1B99-44EF-B47F-260C78030EE7", "en", ("english",)),
    ("B913ECA5-638C-4B5C-80FD-4BC9E3B29587", "de", ("german", "deutsch")),
    ("3D74560A-9AED-420C-99B8-B6BA8BB92202", "it", ("italian", "italiano")),
    ("EB89AF5E-C996-47DB-AB22-60AA13A2DBF8", "es", ("spanish", "español", "espanol")),
    ("D9E0CFDF-034A-4D43-92F9-6AB246A9AA37", "cs", ("czech", "čeština")),
    ("EFCA8E5D-9394-4A19-B805-F6E41AF76921", "da", ("danish", "dansk")),
    ("90B0555C-F6B0-47F3-A68D-D3A1498D9C09", "et", ("estonian", "eesti")),
    ("5D82F48C-A6CE-400D-971D-85C2C8677665", "ga", ("irish", "gaeilge")),
    ("0B086FBC-CFD5-4284-8800-1959D2ECB5EA", "hr", ("croatian", "hrvatski")),
    ("98CF0FB8-234B-49B2-8A6C-23B99B154D52", "lv", ("latvian", "latviešu")),
    ("E5366029-C68F-4F8D-93DF-33B9439F9216", "lt", ("lithuanian", "lietuvių")),
    ("CABFA802-7BB1-46C0-8ACD-2EE75C11C249", "hu", ("hungarian", "magyar")),
    ("D917F99B-D6B7-418C-BC35-77FBA939BBD7", "mt", ("malti", "maltese")),
    ("3AF8680C-3F2B-40F7-8ED3-2783B993CD86", "no", ("norsk", "norwegian", "nb", "nn")),
    ("0C801A28-7504-4B54-AA8E-3B327A5191B0", "pl", ("polish", "polski")),
    ("D949E8C8-5E9E-421D-8103-6AA45083578D", "pt", ("portuguese", "português")),
    ("73EE0C78-C21E-4C0E-97FB-3039B0D0877A", "ro", ("romanian", "română")),
    ("55C30D14-3ACF-4828-8F95-30B0DC2318B6", "sk", ("slovac", "slovak", "slovenčina")),
    ("FB5A68D1-23EB-46D3-B266-F364D2BA56ED", "sl", ("slovenian", "slovenščina")),
    ("A6F3B85B-817D-484F-88CC-2F5249293525", "fi", ("finnish", "suomi")),
    ("F7818F3A-7481-4B3D-BB53-2C4EFF8B5B66", "sv", ("swedish", "svenska")),
    ("B2C03D11-701B-486C-88C0-E019A8461823", "tr", ("turkish", "türkçe")),
    ("80CEBA7C-77AE-4A08-ABE9-B9C5CD3F9084", "el", ("greek", "ελληνικά")),
    ("28526D05-EAF5-4869-9E46-1423921A7CCF", "bg", ("bulgarian", "български")),
    ("9B576FE6-BA6D-40F4-B779-0101D8B79F7D", "ru", ("russian", "русский")),
    ("C11106F9-E9B0-4AF3-BFE8-EF1497A9FFD0", "zh", ("chinese", "中文")),
    ("C9B76975-23A0-4277-BD0F-EBE02FA3A314", "ar", ("arabic", "العربية")),
)
_BY_NAME = {alias: guid for guid, iso, names in LANGUAGES for alias in (iso, *names, guid.lower())}
_ISO = {guid.lower(): iso for guid, iso, _names in LANGUAGES}
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STAMP = "%Y%m%d%H%M%S"
MAX_WINDOW_DAYS = 31  # "the start date and end date cannot be more than 31 days apart"
# the shortest window: an hour holds some 10,000 answers (the 32 MiB cap) only for a
# touchpoint answered 240,000 times a day
MIN_WINDOW_DAYS = 1 / 24
SECOND = timedelta(seconds=1)
DEFAULT_BATCH = 100
BACKFILL_DAYS = 90
# how far a cursor may be ahead of Hello Customer's clock without a pull refusing it
# (`syncd.pull.AHEAD`): a window ends at this machine's now, so a clock that far ahead left
# each cursor in the vendor's future, and with `lookback_days = 0` an answer taken there
# after the pull was before the next one's start, never read. Each pull re-reads at least it.
SLACK = timedelta(hours=1)
UNSUBSCRIBES_PATH = "/V1.0/EN/campaign/{campaign}/respondent/unsubscribed/{start}/{end}"
PLACEHOLDERS = ("campaign", "start", "end")
# "5. Validation messages": "a. 200/201: Success" (addmultipletocache itself says 200)
ACKNOWLEDGED = (200, 201)
# hellocustomer.md, "5. Validation messages", 400 for the Add respondents API: "Touchpoint
# with ID: {campaignUniqueID} not found" -- the configured campaign, not a respondent
TOUCHPOINT_MISSING = re.compile(r"touchpoint with id\b.*\bnot found", re.IGNORECASE)


def resolve_language(value: str) -> str | None:
    """A language as a name ("French"), ISO code ("fr", "FR", "fr-BE") or GUID → its
    lower-case GUID from the documented table; None if unknown."""
    text = value.strip().casefold()
    if not text:
        return None
    found = _BY_NAME.get(text) or _BY_NAME.get(re.split(r"[-_]", text)[0])
    return found.lower() if found else None


class HelloCustomer(Connector):
    name = "hellocustomer"
    title = "Hello Customer"
    kind = "trigger"
    max_batch = 1000
    min_interval = 1.0
    url_options = ("campaign",)
    options: ClassVar[dict[str, Option]] = {
        "token": Option(
            str, required=True, secret=True, issued=True, help="the API token (basic <token>)"
        ),
        "campaign": Option(str, required=True, help="the touchpoint's CampaignUniqueID"),
        "default_language": Option(
            str, help="name, ISO code or GUID used when a contact's language is empty/unknown"
        ),
        "first_date": Option(str, help="pull backfill start (YYYY-MM-DD); default 90 days back"),
        "lookback_days": Option(
            int,
            default=7,
            help="days re-read on every pull; the last hour always is (a cursor may be up to "
            "an hour ahead of the vendor's clock), so 0 loses nothing to a clock minutes fast",
            bounds=(0, 3650),
        ),
        "window_days": Option(
            float,
            default=7,
            help="days of answers (and unsubscribes) per call, an hour (0.0417) to 31: the "
            "call has no paging, so its answer grows with the window (0.25: six hours)",
        ),
        "nps_filters": Option(
            list, default=[], help='NPS filters, e.g. [{key = "Store", filterValues = ["Gent"]}]'
        ),
        "unsubscribes_path": Option(
            str,
            default=UNSUBSCRIBES_PATH,
            help="path of the unsubscribed-emails call; placeholders {campaign} {start} {end}",
        ),
        "pace_margin": Option(float, default=0.05, help="seconds added to the 1 s spacing"),
    }
    field_names = frozenset({"email", "firstName", "lastName", "phoneNumber", "language"})
    required_fields = ("email",)
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {
        "email": "email",
        "phoneNumber": "phone",
    }
    needs = ("email",)
    streams = ("responses", "nps", "unsubscribes")

    @classmethod
    def check_options(cls, base_url: str, options: Mapping[str, Any]) -> None:
        """HTTPS unless on loopback; a GUID campaign; an unsubscribes path we can fill in."""
        url = urlsplit(base_url)
        if url.scheme == "http" and not _loopback(url.hostname or ""):
            raise OptionError(
                "base_url",
                f"{base_url} is plain http: Hello Customer takes HTTPS (TLS 1.2) calls only",
                hint="use https://api.hellocustomer.com; http:// is only for a sandbox on "
                "127.0.0.1, ::1 or localhost",
            )
        if not GUID.match(str(options["campaign"]).strip().lower()):
            raise OptionError(
                "campaign",
                "must be the touchpoint's GUID",
                hint="copy CampaignUniqueID from the touchpoint's General Settings",
            )
        if not MIN_WINDOW_DAYS <= options["window_days"] <= MAX_WINDOW_DAYS:
            raise OptionError(
                "window_days",
                f"{options['window_days']:g} is not an hour ({MIN_WINDOW_DAYS:.4f}) to "
                f"{MAX_WINDOW_DAYS} days",
                hint="Hello Customer refuses start and end dates more than 31 days apart; "
                "a busier touchpoint needs a shorter window, not one under an hour",
            )
        problem = _path_problem(options["unsubscribes_path"])
        if problem:
            raise OptionError(
                "unsubscribes_path",
                problem,
                hint=f"e.g. {UNSUBSCRIBES_PATH!r}; placeholders are "
                + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS),
            )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http.session.headers["Authorization"] = f"basic {self.opts['token']}"
        self.campaign = str(self.opts["campaign"]).strip().lower()
        self.default_language: str | None = None
        if self.opts["default_language"]:
            self.default_language = resolve_language(self.opts["default_language"])
            if self.default_language is None:
                raise self._config_error(
                    f"unknown language {self.opts['default_language']!r}",
                    "default_language",
                    "use a name (French), an ISO code (fr) or a GUID from the Hello Customer list",
                )
        elif "language" not in self.config.mapping.fields:
            raise self._config_error(
                "Hello Customer needs a language for every respondent",
                "default_language",
                "map a CRM column to `language` in the mapping, or set default_language",
            )
        self.first_date: date | None = None
        if self.opts["first_date"]:
            try:
                self.first_date = date.fromisoformat(self.opts["first_date"])
            except ValueError:
                raise self._config_error("must be a date, YYYY-MM-DD", "first_date") from None
        if self.opts["lookback_days"] < 0:
            raise self._config_error("must be 0 or more", "lookback_days")
        self.lookback = timedelta(days=self.opts["lookback_days"])
        # end - start, in whole seconds as the call's parameters are
        self.span = timedelta(seconds=round(self.opts["window_days"] * 86400)) - SECOND
        self.nps_filters = [self._filter(f) for f in self.opts["nps_filters"]]
        self.unsubscribes_hints = Hints(
            endpoint="check unsubscribes_path (the path Hello Customer gave you; not "
            f"documented), campaign and base_url in [vendors.{self.name}]"
        )

    def _config_error(self, message: str, key: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, table=f"vendors.{self.name}", key=key, hint=hint)

    def _filter(self, item: Any) -> list[dict[str, Any]]:
        """One configured NPS filter: an object {key, filterValues}, or a list of them (AND)."""
        parts = item if isinstance(item, list) else [item]
        for part in parts:
            if not (
                isinstance(part, dict)
                and set(part) == {"key", "filterValues"}
                and isinstance(part["key"], str)
                and isinstance(part["filterValues"], list)
                and all(isinstance(v, str) for v in part["filterValues"])
            ):
                raise self._config_error(
                    f"{item!r} is not a filter",
                    "nps_filters",
                    'each is {key = "Store", filterValues = ["Gent"]} or a list of those',
                )
        return [dict(p) for p in parts]

    def pacer(self) -> Pacer:
        """One pacer per token, shared by push, pull and check in this process."""
        interval = self.min_interval + self.opts["pace_margin"]
        return pacer_for(self.name, self.opts["token"], interval, self.clock)

    @property
    def batch_size(self) -> int:
        return self.config.batch_size or DEFAULT_BATCH

    def _base(self) -> str:
        return f"/V1.0/EN/campaign/{self.campaign}"

    # --- push --------------------------------------------------------------------------
    def language(self, contact: Contact) -> str | None:
        """The contact's language GUID: its own if known, else the default, else None."""
        return resolve_language(contact.fields.get("language", "")) or self.default_language

    def validate(self, contact: Contact) -> str | None:
        reason = super().validate(contact)
        if reason or self.language(contact):
            return reason
        raw = contact.fields.get("language", "")
        if raw:
            return f"unknown language {raw!r} and no default_language (needed by hellocustomer)"
        return "no language and no default_language (needed by hellocustomer)"

    def respondent(self, contact: Contact, language: str) -> dict[str, Any]:
        """The respondent object `addmultipletocache` takes for this contact."""
        out: dict[str, Any] = {}
        for name in ("firstName", "lastName", "phoneNumber"):
            if contact.fields.get(name):
                out[name] = contact.fields[name]
        out.update(
            {
                "email": contact.fields["email"],
                "custom_UniqueID": contact.key,
                "language_UniqueID": language,
                "campaign_UniqueID": self.campaign,
                "keyValues": {k: v for k, v in contact.metadata.items() if v},
            }
        )
        return out

    def unsendable(self, contacts: Sequence[Contact]) -> list[Result]:
        """Those `validate` refuses (a language that no longer resolves: queued before
        default_language went) fail without a request. Beside the others they shared their
        request's fate, and a 5xx or a lost answer left them `unknown`, never sent."""
        return [
            Result(c.key, Status.FAILED, reason) for c in contacts if (reason := self.validate(c))
        ]

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        results: list[Result] = []
        body = []
        sending = []
        for contact in batch:
            language = self.language(contact)
            reason = self.validate(contact)
            if reason or language is None:
                results.append(Result(contact.key, Status.FAILED, reason))
                continue
            body.append(self.respondent(contact, language))
            sending.append(contact)
        if body:
            resp = self.http.request(
                "POST",
                f"{self._base()}/respondent/addmultipletocache",
                idempotent=False,
                json=body,
                ok=_answered,
            )
            self._acknowledged(resp)
        return results + [Result(c.key, Status.SENT) for c in sending]

    def _acknowledged(self, resp: requests.Response) -> None:
        """Return if `addmultipletocache` acknowledged the batch; else raise what it means
        (see the module docstring: acknowledged, refused, unknown)."""
        status = resp.status_code
        body = _body(resp.text)
        if status >= 300:  # a 4xx `_answered` passed: a refusal only with a validation message
            message = _validation_message(body)
            if message is not None and TOUCHPOINT_MISSING.match(message):
                # about the `campaign` option, not a respondent: splitting would fail each one
                raise self._no_touchpoint(
                    f"HTTP {status}: {message}", status, "; every respondent stays pending"
                )
            if message is not None:
                raise FatalError(f"HTTP {status}: {message}", vendor=self.name, status=status)
            raise OutcomeUnknownError(
                f"HTTP {status} without a validation message, so not a refusal: {snippet(resp)!r}",
                vendor=self.name,
                status=status,
                hint="the respondents may have been added; check the touchpoint before "
                "`syncd retry --unknown`",
            )
        failed = _failure(body)
        if status not in ACKNOWLEDGED or failed:
            why = failed or "only a 200 or 201 acknowledges addmultipletocache"
            raise OutcomeUnknownError(
                f"HTTP {status} is no acknowledgement ({why}): {snippet(resp)!r}",
                vendor=self.name,
                status=status,
                hint="the respondents may have been added; check the touchpoint before "
                "`syncd retry --unknown`",
            )

    def _no_touchpoint(self, text: str, status: int | None, then: str = "") -> EndpointError:
        """The documented "Touchpoint with ID: {campaignUniqueID} not found": the campaign
        option is wrong, whichever call it answers."""
        return EndpointError(
            text,
            vendor=self.name,
            status=status,
            hint=f"check campaign (the touchpoint's CampaignUniqueID) in [vendors.{self.name}]"
            + then,
        )

    def _read(self, method: str, path: str, kind: type[Any], **kwargs: Any) -> Any:
        """`http.read`, with a touchpoint not found made the EndpointError it is."""
        try:
            return self.http.read(method, path, kind, **kwargs)
        except FatalError as exc:
            if type(exc) is FatalError and TOUCHPOINT_MISSING.search(exc.reason):
                raise self._no_touchpoint(exc.reason, exc.status) from None
            raise

    def auth_hint(self) -> str:
        # hellocustomer.md, "5. Validation messages": a 401 is also a token that "does not
        # contain this touchpoint/CampaignUniqueID" or "the right API call permissions"
        return (
            f"{super().auth_hint()}; Hello Customer also answers 401 for a token that does "
            f"not hold touchpoint {self.opts['campaign']} (campaign) or this call's permission"
        )

    def check(self) -> str | None:
        """Read the last minute with a call a configured stream makes (a token holds each
        call's permission or not: "5. Validation messages", 401): proves the token and the
        campaign, changes nothing. Without streams no read-only call proves the push: None."""
        end = self.clock.now().astimezone(UTC)
        start, stop = _stamp(end - 60 * SECOND), _stamp(end)
        streams = self.config.streams
        if "responses" in streams:
            self._get_list(f"{self._base()}/answers/getall/{start}/{stop}", empty_ok=True)
            read = "answers"
        elif "unsubscribes" in streams:
            self._unsubscribed(start, stop, empty_ok=True)
            read = "unsubscribes"
        elif "nps" in streams:
            self._read(
                "POST", f"{self._base()}/analysis/nps/getnpsscore/{start}/{stop}", dict, json=[]
            )
            read = "NPS"
        else:
            return None
        return f"token accepted; read campaign {self.opts['campaign']}'s {read}"  # any 200

    # --- pull --------------------------------------------------------------------------
    def pull(self, stream: str, since: str | None, until: datetime) -> Iterator[Page]:
        if stream == "responses":
            for start, end in self._windows(since, until):
                items = self._get_list(
                    f"{self._base()}/answers/getall/{_stamp(start)}/{_stamp(end)}"
                )
                records = [self._response(r) if isinstance(r, dict) else r for r in items]
                yield Page(records, _cursor(end))  # not an object: `clean` counts it skipped
        elif stream == "unsubscribes":
            for start, end in self._windows(since, until):
                items = self._unsubscribed(_stamp(start), _stamp(end))
                records = [_unsubscribe(u) if isinstance(u, dict) else u for u in items]
                yield Page(records, _cursor(end))
        elif stream == "nps":
            yield from self._nps(since, until)
        else:
            yield from super().pull(stream, since, until)

    def _start(self, since: str | None, until: datetime) -> datetime:
        """Where a pull starts: a bare date as given; after a cursor, minus the lookback."""
        if not since:
            first = self.first_date or (until - timedelta(days=BACKFILL_DAYS)).date()
            return datetime.combine(first, datetime.min.time(), UTC)
        if len(since) == 10:
            return datetime.combine(date.fromisoformat(since), datetime.min.time(), UTC)
        cursor = datetime.fromisoformat(since.replace("Z", "+00:00")).astimezone(UTC)
        # the cursor's own second again (see `_windows`), and the slack a clock ahead leaves
        return cursor - max(self.lookback, SLACK)

    def _windows(self, since: str | None, until: datetime) -> Iterator[tuple[datetime, datetime]]:
        """[start, end] windows (inclusive, whole seconds) of `window_days`, up to until.

        Each window starts on the second the one before ended on, and a pull after a cursor
        on the cursor's second: the parameters are whole seconds but Hello Customer keeps
        times finer (its NPS `date` has seven decimals), so an answer at 12:00:00.4 is
        after a window ending 12:00:00 and before one starting 12:00:01. Read twice, the
        boundary second's records are merged by id."""
        last = until.astimezone(UTC).replace(microsecond=0)
        start = self._start(since, last)
        while start <= last:
            end = min(start + self.span, last)
            yield start, end
            if end == last:
                return
            start = end

    def _nps(self, since: str | None, until: datetime) -> Iterator[Page]:
        last = until.astimezone(UTC).replace(microsecond=0)
        start = self._start(since, last)
        if since and len(since) == 10:  # a cursor (the month last read) or --since
            start = min(start, last - self.lookback)
        month = start.replace(day=1, hour=0, minute=0, second=0)
        filters: list[list[dict[str, Any]]] = [[], *self.nps_filters]
        while month <= last:
            following = (month + timedelta(days=32)).replace(day=1)
            end = min(following, last)  # the month's every instant, to the next one's start
            records = []
            for flt in filters:
                score = self._read(
                    "POST",
                    f"{self._base()}/analysis/nps/getnpsscore/{_stamp(month)}/{_stamp(end)}",
                    dict,
                    json=flt,
                )
                records.append(
                    {
                        "filter": json.dumps(flt, sort_keys=True, ensure_ascii=False),
                        "period_start": month.date().isoformat(),
                        "period_end": (following - SECOND).date().isoformat(),
                        "nps": score.get("nps"),
                        "detractors": score.get("detractors"),
                        "passives": score.get("passive", score.get("passives")),
                        "promoters": score.get("promoters"),
                        "vendor_id": score.get("uniqueID"),
                        "computed_at": score.get("date"),
                    }
                )
            yield Page(records, month.date().isoformat())
            month = following

    def _get_list(
        self, path: str, *, empty_ok: bool = False, hints: Hints | None = None
    ) -> list[Any]:
        """A list read; an empty body is no answer (not an empty list), so a stream's
        cursor stays where it is."""
        items: list[Any] = self._read("GET", path, list, empty_ok=empty_ok, hints=hints)
        return items

    def _unsubscribed(self, start: str, end: str, *, empty_ok: bool = False) -> list[Any]:
        """The unsubscribed-emails call, the one whose path is configured (not documented):
        its 3xx, 404 or 405 names unsubscribes_path."""
        path = self.opts["unsubscribes_path"].format(campaign=self.campaign, start=start, end=end)
        return self._get_list(path, empty_ok=empty_ok, hints=self.unsubscribes_hints)

    def _response(self, r: dict[str, Any]) -> dict[str, Any]:
        response_id = str(r.get("uniqueID") or r.get("respondent_UniqueID") or "")
        language = str(r.get("language_UniqueID") or "").lower()
        questions = r.get("answerQuestions") or []
        return {
            "response_id": response_id,
            "external_key": r.get("custom_UniqueID") or None,
            "email": lowered(r.get("email")),
            "campaign": r.get("campaign_UniqueID"),
            "language": _ISO.get(language, language or None),
            "surveyed_at": r.get("dateSurveyed"),
            "answered_at": r.get("dateAnswer"),
            "raw": r,
            # not a list: `clean` skips the response, saying so
            "answers": [_answer(a, response_id) for a in questions if isinstance(a, dict)]
            if isinstance(questions, list)
            else questions,
        }


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a list; nothing from a value that is no list."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _paths(prediction: Any) -> list[str] | None:
    """The text analytics paths of an answer's `prediction`, in their order; None without
    one (or with one that is no object: the response's raw record keeps it)."""
    if not prediction or not isinstance(prediction, dict):
        return None

    def order(p: dict[str, Any]) -> float:
        n = p.get("order")
        return n if isinstance(n, int | float) and not isinstance(n, bool) else 0

    return [
        str(p.get("path"))
        for item in _dicts(prediction.get("items"))
        for p in sorted(_dicts(item.get("paths")), key=order)
        if p.get("path")
    ]


def _answer(a: dict[str, Any], response_id: str) -> dict[str, Any]:
    value = a.get("answer_Value")
    boolean = a.get("answer_Boolean")
    is_boolean = bool(a.get("question_HasBooleanAnswer"))
    if boolean is None and is_boolean and value is not None:
        boolean = bool(value)
    return {
        "answer_id": str(a.get("uniqueID") or f"{response_id}:{a.get('question_UniqueID')}"),
        "question_id": a.get("question_UniqueID"),
        "question_text": a.get("question_Text"),
        "sort_order": a.get("question_SortOrder"),
        "score": value if isinstance(value, int | float) and not is_boolean else None,
        "text": a.get("answer_Text"),
        "boolean": boolean,
        "options": a.get("answer_Options"),
        "is_nps": bool(a.get("question_HasNpsValueAnswer")),
        "is_ces": bool(a.get("question_HasCesScoreAnswer")),
        "is_csat": bool(a.get("question_HasCsatScoreAnswer")),
        "is_score": bool(a.get("question_HasScoreAnswer")),
        "paths": _paths(a.get("prediction")),
    }


def _unsubscribe(u: dict[str, Any]) -> dict[str, Any]:
    email = lowered(u.get("email"))
    ident = u.get("uniqueID") or (f"{email}|{u.get('date')}" if email else None)
    return {
        "vendor_id": None if ident is None else str(ident),  # None: `clean` refuses it
        "external_key": u.get("custom_UniqueID") or None,
        "email": email,
        "phone": None,
        "channel": "email",
        "at": u.get("date"),
    }


def _loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _path_problem(path: str) -> str | None:
    """Why `unsubscribes_path` cannot be filled in, or None."""
    if not path.startswith("/"):
        return f"{path!r} must be a path starting with / (base_url gives scheme and host)"
    try:
        fields = [(name, spec, conv) for _t, name, spec, conv in string.Formatter().parse(path)]
    except ValueError as exc:
        return f"{path!r} is not a path template ({exc}); write a literal brace as {{{{ or }}}}"
    for name, spec, conv in fields:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            return f"{path!r} has the placeholder {shown}, which syncd cannot fill in"
    return None


def _answered(resp: requests.Response) -> bool:
    """Hand a 4xx that syncd.http would call a refusal to the connector, which holds it to
    Hello Customer's validation messages; 401/403 (auth), 404/405 (wrong URL), 413 (refused
    unread), 429 and 5xx keep their meaning from syncd.http."""
    return 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 404, 405, 429)


_NOT_JSON = object()


def _body(text: str) -> Any:
    """The answer's JSON, None for an empty body, `_NOT_JSON` for anything else."""
    if not text.strip():
        return None
    try:
        return loads(text)
    except ValueError:
        return _NOT_JSON


def _validation_message(body: Any) -> str | None:
    """Hello Customer's validation message: a JSON text, or an object's `message`."""
    if isinstance(body, str) and body.strip():
        return body.strip()
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() == "message" and isinstance(value, str) and value.strip():
                return value.strip()
    return None


def _failure(body: Any) -> str | None:
    """Why a 200's body says the call did not succeed, or None."""
    if body is _NOT_JSON:
        return "the body is not JSON"
    if isinstance(body, dict):
        for key, value in body.items():
            if key.lower() in ("success", "issuccess") and value is not True:
                return f"{key} is {json.dumps(value)}"
            if key.lower() in ("error", "errors") and value:
                return f"{key}: {json.dumps(value)[:80]}"
    return None


def _stamp(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime(STAMP)


def _cursor(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
