"""eSputnik (Yespo): contact upsert through `POST /api/v1/contacts` and its import sessions.

- HTTP Basic auth: any user name, the API key as password. `syncd check --online` reads
  one day of contact activity (`GET /api/v2/contacts/activity`, one row), which changes
  nothing and proves the key.
- At most 3000 contacts a request; `dedupeOn`, `groupNames`, `groupNamesExclude`,
  `eventKeyForNewContacts`, `restoreDeleted`, and custom fields by id from `[metadata]`.
  A `[metadata]` id past the spec's int32 (`ContactField.id`, `customFieldsIDs`) is refused
  before a request. `groups` and `groups_exclude` are refused at load when a name is not text, empty or
  blank, has spaces around it, is listed twice, or is in both lists (the spec's
  `groupNames` is any array of strings; no length limit is documented, so none is set).
- Updates touch only what the mapping maps. Without `contactFields` eSputnik updates every
  standard field and sets those not sent to null (the spec's words), wiping what another
  system keeps there (a `languageCode`, a `timeZone`). So every request lists the mapped
  standard fields in `contactFields`, by the names it takes (`email`, `sms`, `firstName`,
  `lastName`, `externalCustomerId`, `languageCode`, `timeZone`, and `region`, `town`,
  `address`, `postcode` for the `address.*` fields). A mapped field that is empty in the
  export is not sent, so eSputnik clears it: the CRM is the truth for what it maps. Custom
  fields change only when their id is in `customFieldsIDs`: the `[metadata]` ids, sent on
  every request, `[]` when there are none (the spec: "required when a contact is updated").
- A mapping's `[types]` may type a custom field `date`, `datetime` or `text` (the default).
  eSputnik's guide ("Contact Fields in the System") gives the formats the API takes: a
  Date field `yyyy-MM-dd`, `dd/MM/yyyy`, `dd.MM.yy` or `dd.MM.yyyy`, a Date with time field
  `YYYY-MM-DDTHH:MM`, and a value in another format "will not be saved". So a `date` is sent
  `yyyy-MM-dd` and a `datetime` `yyyy-MM-ddTHH:mm`, read from the export as Dropthought's
  DATE metadata are (ISO 8601, or slashed by `date_order` only, never guessed: an
  untyped US `03/04/2026` reaches eSputnik as 3 April); a time with `Z` or an offset is
  converted to `date_timezone`, seconds are dropped, a `date`'s time of day too. A value
  that cannot be read quarantines the contact for eSputnik only, saying why.
- A contact is matched on `externalCustomerId` first, then on `dedupe_on`; the spec says
  the `dedupeOn` field itself is never updated, so with the CRM key mapped to
  `externalCustomerId`, `dedupe_on = "externalCustomerId"` lets an email change through;
  the first push warns, once, when the field `dedupe_on` names (the email, the sms, the
  `field_id` custom field for `fieldId`) is mapped beside `externalCustomerId`.
  `dedupe_on = "fieldId"` needs `field_id`, the custom field matched on (map it in
  `[metadata]`). `"id"` (eSputnik's own contact id) is not offered: the export does not
  carry it and a new contact has none, so no contact could be created.
- Every answer is checked before anyone is marked sent. The 200 answer carries
  `failedContacts` — an object when one contact failed, an array when several did — and an
  `asyncSessionId`, polled through `/api/v1/importstatus/{id}` until FINISHED (sent) or
  ERROR (failed with the session's description). A FINISHED session's `mapping` is "the
  list of contact IDs created/updated" and gives each its contact id (the delivery's
  ref); the import skips some contacts without a word (the article: one deleted in
  eSputnik, its externalCustomerId sent, while `restoreDeleted` is false), so when every
  entry of the mapping names a contact of the session, one none names fails saying so
  (`restore_deleted = true` restores it). Values are compared trimmed and lower-cased, an
  sms by its digits. An entry is placed by what it echoes
  (the spec's FailedContact has no externalCustomerId): the contact sharing a channel with
  it, or of several, the one it echoes exactly; several it cannot tell apart all fail, so
  none is marked sent for a refusal of another. A 404 from the import status (a session
  eSputnik no longer knows) acknowledges nothing: its contacts stay pending, to go again. An answer
  of another shape (not an object, no session id, a `failedContacts` that is neither, an
  entry naming no contact of the batch) acknowledges nothing: the batch stays pending and
  is sent again (harmless for an upsert). An `errorMessage` without a session is eSputnik
  refusing the request.
- Up to `open_sessions` import sessions are open at once: the next batch is posted while
  earlier sessions import, and every open session is polled in one round each
  `poll_every` (`start` and `poll`; the delivery loop keeps the window). Each session's id
  is recorded before it is first polled, so a restart polls it and never re-sends it.
- Unsubscribes are read from `GET /api/v2/contacts/activity?activityStatus=UNSUBSCRIBED`
  with its opaque `offset` cursor; an item whose `activityStatus` is another (a filter
  not applied) is passed over, never stored as an unsubscribe.

Assumptions (unknown in the vendor's documents): Retry-After on 429 may be absent (we back
off on our own); an import session that neither finishes nor fails within
`poll_timeout` seconds is still open at eSputnik, and may be applied after a newer session
of the same contacts (the spec: "requests may be handled in a different order or
concurrently"), so it is not given up: its contacts stay in flight with the session
recorded, the next run polls it first, for up to `poll_timeout` again before anything new
goes to eSputnik (FINISHED: sent, ERROR: failed), and no newer change
of those contacts is posted while it is open (the run's summary counts them, its reasons
name the session). A session eSputnik never ends is given up only by an operator:
`syncd retry --vendor esputnik --forget-jobs` sends its contacts again, accepting that it
may still be applied over them;
`eventKeyForNewContacts` follows the article (latin letters and digits, at most 100), which
is stricter than the schema's description; a FINISHED mapping with an entry that names no
contact of the session (a value eSputnik normalised otherwise), an entry without a value,
or no `mapping` at all tells nothing, and every contact not in `failedContacts` is sent
(`trust_mapping = false`: always so, for an account whose mappings prove incomplete); an
empty `[]` customFieldsIDs updates no custom field; `date_timezone` is UTC unless set (the
guide gives no zone for a Date with time); an `activityDateTime` without an offset is in
`activity_timezone` (default UTC; the spec gives no zone); the activity list's `offset` is
a place in the whole list from `dateFrom` on, so the unsubscribes stream asks from its
first date every time and goes on from the offset it stored (the date itself never moves
on).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

from syncd.dates import read_date
from syncd.errors import ConfigError, FatalError, OptionError, RetriableError
from syncd.http import read_json, snippet
from syncd.log import scrub
from syncd.settings import Option, time_zone
from syncd.vendors.base import (
    HELD,
    Connector,
    Contact,
    Job,
    OnJob,
    Page,
    Result,
    Status,
    lowered,
)

ADDRESS_FIELDS = ("region", "town", "address", "postcode")
# mapping field name -> the name `contactFields` takes for it
CONTACT_FIELDS = {
    "email": "email",
    "sms": "sms",
    "firstName": "firstName",
    "lastName": "lastName",
    "externalCustomerId": "externalCustomerId",
    "languageCode": "languageCode",
    "timeZone": "timeZone",
} | {f"address.{a}": a for a in ADDRESS_FIELDS}
DEDUPE = ("email", "sms", "email_or_sms", "externalCustomerId", "fieldId")
EVENT_KEY = re.compile(r"[A-Za-z0-9]{1,100}")
INT32 = 2**31 - 1  # the spec's ContactField.id and customFieldsIDs: "format": "int32"
PHONE = re.compile(r"\+?\d[\d ()./-]*")
NOT_DIGIT = re.compile(r"\D")
SESSION_STATES = ("STARTED", "IMPORTING", "FINISHED", "ERROR")
SAID = 300  # characters of eSputnik's words kept in a reason, as `syncd.http.error_text`
UNSUBSCRIBED = "UNSUBSCRIBED"
# how a typed custom field's value is sent: the formats eSputnik's guide ("Contact Fields in
# the System", Additional Fields) gives for the API -- a Date field `yyyy-MM-dd` (among
# dd/MM/yyyy, dd.MM.yy, dd.MM.yyyy: the one no export's order can be taken for another), a
# Date with time field `YYYY-MM-DDTHH:MM`
SENT_AS = {"date": "%Y-%m-%d", "datetime": "%Y-%m-%dT%H:%M"}


class ESputnik(Connector):
    name = "esputnik"
    title = "eSputnik"
    kind = "upsert"
    max_batch = 3000
    options: ClassVar[dict[str, Option]] = {
        "api_key": Option(
            str, required=True, secret=True, issued=True, help="the API key (Basic password)"
        ),
        "dedupe_on": Option(
            str,
            default="email",
            choices=DEDUPE,
            help="how eSputnik finds an existing contact without an externalCustomerId match",
        ),
        "field_id": Option(
            int, help="the custom field id, required when dedupe_on = 'fieldId'", bounds=(0, INT32)
        ),
        "groups": Option(list, default=[], help="segments to add the contacts to"),
        "groups_exclude": Option(list, default=[], help="segments to take them out of"),
        "event_key_new": Option(
            str, help="eventKeyForNewContacts: an event for new contacts (A-Z, a-z, 0-9)"
        ),
        "restore_deleted": Option(
            bool,
            default=False,
            help="restoreDeleted: restore a contact deleted in eSputnik (else it is skipped)",
        ),
        "trust_mapping": Option(
            bool,
            default=True,
            help="a FINISHED import's mapping names every contact it created or updated (the "
            "spec's words), so one it leaves out fails; false: every contact not refused is sent",
        ),
        "poll_every": Option(float, default=5.0, help="seconds between import-status polls"),
        "open_sessions": Option(
            int,
            default=4,
            bounds=(1, 16),
            help="import sessions open at once: the next batch is sent while earlier ones "
            "import (1: each session is polled to its end before the next batch goes)",
        ),
        "poll_timeout": Option(
            float,
            default=900.0,
            help="seconds an import session is polled in a run; one still open then is held "
            "(its contacts in flight, no newer change of theirs sent) and polled by the next "
            "run (`syncd retry --forget-jobs` gives it up)",
        ),
        "first_date": Option(str, help="unsubscribes: pull from this date (YYYY-MM-DD)"),
        "date_order": Option(
            str,
            choices=("DMY", "MDY"),
            help="how the export writes slashed dates (DD/MM/YYYY or MM/DD/YYYY) in the "
            "[types] date and datetime custom fields; unset, a slashed one is quarantined",
        ),
        "date_timezone": Option(
            str,
            default="UTC",
            help="the zone of [types] date and datetime custom fields: a time with Z or an "
            "offset is converted to it (the guide does not say which eSputnik reads)",
        ),
        "activity_timezone": Option(
            str,
            default="UTC",
            help="the time zone of an activityDateTime without an offset (the spec does "
            "not say which)",
        ),
    }
    field_names = frozenset(CONTACT_FIELDS)
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {
        "email": "email",
        "sms": "phone",
    }
    streams = ("unsubscribes",)
    value_types = ("date", "datetime", "text")

    @classmethod
    def check_options(cls, base_url: str, options: Mapping[str, Any]) -> None:
        if options["dedupe_on"] == "fieldId" and options["field_id"] is None:
            raise OptionError(
                "field_id",
                "is required when dedupe_on = 'fieldId'",
                hint="the numeric id of the custom field eSputnik matches contacts on",
            )
        if options["dedupe_on"] != "fieldId" and options["field_id"] is not None:
            raise OptionError(
                "field_id", "is used only with dedupe_on = 'fieldId'", hint="remove it"
            )
        first = options["first_date"]
        if first is not None and not _is_date(first):
            raise OptionError("first_date", f"{first!r} is not a date", hint="write it YYYY-MM-DD")
        time_zone(options["activity_timezone"], "activity_timezone", "Europe/Kyiv")
        time_zone(options["date_timezone"], "date_timezone", "Europe/Kyiv")
        for key in ("groups", "groups_exclude"):
            _check_segments(key, options[key])
        both = set(options["groups"]) & set(options["groups_exclude"])
        if both:
            raise OptionError(
                "groups_exclude",
                f"{sorted(both)[0]!r} is in groups too: each contact would be added to the "
                "segment and taken out of it in the same request",
                hint="keep the segment in one of the two lists",
            )
        key = options["event_key_new"]
        if key is not None and not EVENT_KEY.fullmatch(key):
            raise OptionError(
                "event_key_new",
                f"{key!r} is not 1 to 100 latin letters and digits",
                hint="eSputnik takes an event type key of A-Z, a-z and 0-9 only, no spaces",
            )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http.session.auth = ("syncd", self.opts["api_key"])
        for name in self.config.mapping.metadata:
            # "²".isdigit(), int("²") fails; the spec's ContactField.id and customFieldsIDs
            # are int32: a larger id makes every request of the batch a 400
            if not (name.isascii() and name.isdigit() and int(name) <= INT32):
                raise FatalError(
                    f"[metadata] {name!r} in {self.config.mapping.path}: eSputnik custom fields "
                    f"are named by their numeric id (an int32: at most {INT32})",
                    vendor=self.name,
                )
        mapping = self.config.mapping
        typed_fields = sorted(set(mapping.types) & set(mapping.fields))
        if typed_fields:
            raise ConfigError(
                "only custom fields take a type (date, datetime, text): give types to "
                "[metadata] ids only",
                file=str(mapping.path),
                table="types",
                key=typed_fields[0],
            )
        # the custom fields to convert, with the CRM column each comes from (for the reason)
        self.typed = [
            (name, kind, mapping.metadata[name])
            for name, kind in mapping.types.items()
            if kind in SENT_AS
        ]
        self.zone = ZoneInfo(self.opts["date_timezone"])
        self._warned = False  # `_frozen` said its warning

    def _frozen(self) -> None:
        """Warn, once, when a field eSputnik deduplicates on is mapped beside the CRM key:
        the spec's dedupeOn, "the field set as dedupeOn will not be updated", so a contact
        found by its externalCustomerId keeps its old email or sms, or the custom field of
        "fieldId", while syncd records the change sent."""
        dedupe = self.opts["dedupe_on"]
        mapping = self.config.mapping
        frozen = {
            "email": ("email",),
            "sms": ("sms",),
            "fieldId": (str(self.opts["field_id"]),),
        }.get(dedupe, ())
        mapped = [f for f in frozen if f in mapping.fields or f in mapping.metadata]
        if self._warned or not mapped or "externalCustomerId" not in mapping.fields:
            return
        self._warned = True
        what = f"custom field {mapped[0]}" if dedupe == "fieldId" else mapped[0]
        self.log.warning(
            f"eSputnik never updates the dedupe_on field: a changed {what} is not "
            "applied to a contact found by its externalCustomerId",
            field=mapped[0],
            fix='dedupe_on = "externalCustomerId" lets it through (a contact eSputnik '
            f"holds without an externalCustomerId is then no longer found by its {what})",
        )

    def shape(self, contact: Contact) -> Contact | str:
        """The contact with its date and datetime custom fields in the formats eSputnik
        reads (`SENT_AS`), or why not (it is quarantined for eSputnik only)."""
        reason = self.validate(contact)
        if reason or not self.typed:
            return reason or contact
        metadata = dict(contact.metadata)
        for name, kind, column in self.typed:
            value = metadata.get(name, "")
            if not value:
                continue  # sent empty: the field is cleared, as any mapped empty value
            try:
                when = read_date(value, self.opts["date_order"], self.zone, self.name)
            except ValueError as exc:
                return f"{kind} custom field {name} (column {column!r}): {exc}"
            metadata[name] = when.strftime(SENT_AS[kind])
        return dataclasses.replace(contact, metadata=metadata)

    def validate(self, contact: Contact) -> str | None:
        f = contact.fields
        if not f.get("email") and not f.get("sms"):
            return "no email and no sms: eSputnik needs at least one channel"
        dedupe = self.opts["dedupe_on"]
        if dedupe == "fieldId":
            if not contact.metadata.get(str(self.opts["field_id"])):
                return (
                    f"no value for custom field {self.opts['field_id']}, which eSputnik "
                    "deduplicates on (dedupe_on = 'fieldId'; map it in [metadata])"
                )
        elif dedupe != "email_or_sms" and not f.get(dedupe) and not f.get("externalCustomerId"):
            return f"no {dedupe}, which eSputnik deduplicates on (dedupe_on)"
        return None

    # --- push --------------------------------------------------------------------------
    def body(self, batch: Sequence[Contact]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "contacts": [self._contact(c) for c in batch],
            "dedupeOn": self.opts["dedupe_on"],
            "contactFields": [CONTACT_FIELDS[name] for name in self.config.mapping.fields],
        }
        if self.opts["dedupe_on"] == "fieldId":
            body["fieldId"] = self.opts["field_id"]
        # always sent, empty when nothing is mapped: the spec's customFieldsIDs is
        # "required when a contact is updated", and only the fields it lists change
        body["customFieldsIDs"] = [int(n) for n in self.config.mapping.metadata]
        if self.opts["groups"]:
            body["groupNames"] = list(self.opts["groups"])
        if self.opts["groups_exclude"]:
            body["groupNamesExclude"] = list(self.opts["groups_exclude"])
        if self.opts["event_key_new"]:
            body["eventKeyForNewContacts"] = self.opts["event_key_new"]
        if self.opts["restore_deleted"]:
            body["restoreDeleted"] = True
        return body

    @staticmethod
    def _contact(c: Contact) -> dict[str, Any]:
        """One contact as `POST /api/v1/contacts` takes it; empty values are not sent."""
        f = {k: v for k, v in c.fields.items() if v}
        out: dict[str, Any] = {
            "channels": [{"type": t, "value": f[t]} for t in ("email", "sms") if t in f]
        }
        for name in ("firstName", "lastName", "externalCustomerId", "languageCode", "timeZone"):
            if name in f:
                out[name] = f[name]
        address = {a: f[f"address.{a}"] for a in ADDRESS_FIELDS if f"address.{a}" in f}
        if address:
            out["address"] = address
        if c.metadata:
            out["fields"] = [{"id": int(k), "value": v} for k, v in c.metadata.items()]
        return out

    def window(self) -> int:
        return int(self.opts["open_sessions"])

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        started = self.start(batch, on_job)
        return started if isinstance(started, list) else self.follow(started)

    def start(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result] | Job:
        """Post the batch: the contacts refused at once, and the import session of the rest
        (reported through `on_job`, with those refused, before anything else happens)."""
        self._frozen()
        headers = {"Content-Type": "application/json"}
        resp = self.http.request(
            "POST", "/api/v1/contacts", data=_json(self.body(batch)), headers=headers
        )
        answer = read_json(resp, dict, vendor=self.name)
        results: dict[str, Result] = {}
        for item in self._failed(answer):
            owners = self._owners(item, batch)
            if not owners:
                raise RetriableError(
                    f"failedContacts names no contact of the batch: {json.dumps(item)[:200]}",
                    vendor=self.name,
                    hint="nobody in the batch is marked sent; it is sent again",
                )
            error = item.get("error")
            reason = _said(error) if isinstance(error, str) and error else "rejected by eSputnik"
            if len(owners) > 1:  # none of them is marked sent for a refusal of one
                keys = ", ".join(c.key for c in owners[:5])
                reason += (
                    f" (eSputnik refused one of {len(owners)} contacts of the batch that its "
                    f"answer does not tell apart: {keys})"
                )
            for contact in owners:
                results[contact.key] = Result(contact.key, Status.FAILED, reason)
        rest = [c for c in batch if c.key not in results]
        if not rest:
            return list(results.values())
        session = answer.get("asyncSessionId")
        if not isinstance(session, str) or not session:
            message = answer.get("errorMessage")
            if isinstance(message, str) and message:
                raise FatalError(message, vendor=self.name)
            raise RetriableError(
                f"the answer has no asyncSessionId, so nothing was acknowledged: "
                f"{snippet(resp, 200)!r}",
                vendor=self.name,
            )
        refused = list(results.values())
        on_job(session, refused)
        return self._session(session, rest, refused)

    def _session(
        self, job: str, contacts: Sequence[Contact], done: list[Result] | None = None
    ) -> Job:
        deadline = self.clock.monotonic() + self.opts["poll_timeout"]
        return Job(job, contacts, self.opts["poll_every"], deadline, done or [])

    def _failed(self, answer: dict[str, Any]) -> list[dict[str, Any]]:
        """`failedContacts`: absent, one object, or an array of them (the spec's quirk)."""
        failed = answer.get("failedContacts")
        if failed is None:
            return []
        items = [failed] if isinstance(failed, dict) else failed
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise RetriableError(
                f"failedContacts is neither a contact nor an array of contacts: "
                f"{json.dumps(failed)[:200]}",
                vendor=self.name,
                hint="nobody in the batch is marked sent; it is sent again",
            )
        return items

    def reopen(self, job: str, batch: Sequence[Contact]) -> Job:
        """The recorded import session, polled until it is FINISHED or ERROR (or given up)."""
        return dataclasses.replace(self._session(job, batch), reopened=True)

    def poll(self, job: Job) -> list[Result] | None:
        """One look at an import session: FINISHED (sent), ERROR (failed with the session's
        description), still running past `poll_timeout` (in flight: held open), else None."""
        call = "its call /api/v1/importstatus"
        with self.polling(job.id, "import session", call, reopened=job.reopened):
            # the spec's path parameter: one segment, percent-encoded (`S?x=1` polled `S`)
            status = self.http.read("GET", f"/api/v1/importstatus/{quote(job.id, safe='')}", dict)
        state = status.get("status")
        if state not in SESSION_STATES:
            raise RetriableError(
                f"import session {job.id}: status {state!r} is not one of {SESSION_STATES}",
                vendor=self.name,
            )
        if state == "FINISHED":
            return self._finished(job, status.get("mapping"))
        if state == "ERROR":
            said = _said(str(status.get("description") or "no description"))
            reason = f"import session failed: {said}"
            return [Result(c.key, Status.FAILED, reason) for c in job.contacts]
        if self.clock.monotonic() >= job.deadline:
            # still open at eSputnik, which may apply it after any session posted later:
            # its contacts stay in flight with it recorded (a restart polls it), and the
            # delivery loop sends no newer data of theirs until it ends
            since = status.get("timestamp")
            reason = (
                f"import session {job.id} still {state}"
                + (f" (its status set {since})" if isinstance(since, str) and since else "")
                + f" after {self.opts['poll_timeout']:g} s of polling: {HELD}"
            )
            self.log.warning(
                "import session still open: held, polled again by the next run",
                session=job.id,
                state=state,
                since=since,
                polled=self.opts["poll_timeout"],
            )
            return [Result(c.key, Status.IN_FLIGHT, reason) for c in job.contacts]
        return None

    def _finished(self, job: Job, mapping: Any) -> list[Result]:
        """A FINISHED session's contacts: sent, with the contact id its `mapping` gives
        each. The mapping is "the list of contact IDs created/updated as a result of the
        import" (the spec's ImportSessionStatus), and the import skips some contacts without
        a word (the article: one deleted in eSputnik while `restoreDeleted` is false): when
        every entry of the mapping names a contact of the session, a contact none names was
        neither created nor updated, and fails. A mapping with an entry that names none of
        them (a value eSputnik normalised otherwise), or none at all, or `trust_mapping =
        false`, tells nothing: every contact is sent.

        An entry names its contact by "a value of the field used to determine the contact
        uniqueness" (DedupeMapping), which contacts of a household share (one email, their
        own externalCustomerIds): an entry whose value one contact alone has is that
        contact's; a value several share acknowledges as many of them as it has entries
        (one that carries the contact id a contact was given before is that contact's), or
        all of them when none carries an externalCustomerId (they are then one eSputnik
        contact, found by that value). Fewer entries than the contacts of distinct keys
        sharing it cannot tell which were imported: none of them is sent."""
        field = str(self.opts["field_id"]) if self.opts["dedupe_on"] == "fieldId" else None
        entries = mapping if isinstance(mapping, list) else None
        by_value: dict[str, list[Any]] = {}  # a dedupe value -> its entries' contact ids
        unread = 0  # entries without a dedupe value to read
        for m in entries or ():
            value = m.get("dedupeValue") if isinstance(m, dict) else None
            if isinstance(value, str) and value.strip():
                by_value.setdefault(_key(value), []).append(m.get("contactId"))
            else:
                unread += 1
        keys = {c.key: list(dict.fromkeys(_keys(c, field))) for c in job.contacts}
        sharing: dict[str, dict[str, Contact]] = {}  # a value -> the contacts that have it
        for c in job.contacts:
            for k in keys[c.key]:
                sharing.setdefault(k, {})[c.key] = c
        complete = (
            entries is not None
            and self.opts["trust_mapping"]
            and not unread
            and set(by_value) <= set(sharing)  # every entry names a contact of the session
        )
        acked: dict[str, str | None] = {}  # contact key -> its contact id, if known
        for c in job.contacts:  # by a value it alone has
            ids = [i for k in keys[c.key] if len(sharing[k]) == 1 for i in by_value.get(k, ())]
            if ids:
                acked[c.key] = _ref(next((i for i in ids if i is not None), None))
        shared: dict[str, str] = {}  # contact key -> the shared value that failed to name it
        for value, ids in by_value.items():
            holders = sharing.get(value, {})
            if len(holders) < 2:  # a value one contact alone has: settled above
                continue
            owners = [c for c in holders.values() if c.key not in acked]
            if not owners:
                continue
            left = [_ref(i) for i in ids]
            for c in list(owners):  # an entry carrying the id a contact was given before
                if c.ref is not None and c.ref in left:
                    acked[c.key] = c.ref
                    left.remove(c.ref)
                    owners.remove(c)
            one = not any(c.fields.get("externalCustomerId") for c in owners)
            if owners and (len(left) >= len(owners) or one):
                ref = left[0] if len(set(left)) == 1 else None  # whose id is whose: unknown
                acked.update((c.key, ref) for c in owners)
            else:
                shared.update((c.key, value) for c in owners)
        results = []
        for c in job.contacts:
            if c.key in acked or not complete:
                results.append(Result(c.key, Status.SENT, ref=acked.get(c.key)))
                continue
            if c.key in shared:
                value = shared[c.key]
                others = [k for k in sharing[value] if k != c.key][:5]
                reason = (
                    f"import session {job.id} FINISHED, its mapping naming {value!r} "
                    f"{len(by_value[value])} time(s) for {len(sharing[value])} contacts of the "
                    f"session that share it (with {', '.join(others)}): which of them eSputnik "
                    "created or updated it does not tell, so none is marked sent"
                )
            else:
                reason = (
                    f"import session {job.id} FINISHED without it: its mapping, the contacts "
                    "eSputnik created or updated, does not name it (eSputnik skips a contact "
                    "deleted there unless restore_deleted = true; trust_mapping = false if "
                    "its mappings leave out contacts it imported)"
                )
            results.append(Result(c.key, Status.FAILED, reason))
        return results

    def _owners(self, item: dict[str, Any], batch: Sequence[Contact]) -> list[Contact]:
        """The contacts of the batch a `failedContacts` entry can be. The spec's
        FailedContact echoes channels, names, address and fields but no
        externalCustomerId, and two contacts of a batch may share an email or a phone
        (dedupe_on = "externalCustomerId"): an entry sharing a channel with several is the
        one it echoes exactly (all channels, and every other field it carries), else all."""
        ext = item.get("externalCustomerId")
        if ext:
            found = [c for c in batch if c.fields.get("externalCustomerId") == ext]
            if found:
                return found
        echo = _comparable(item)
        # compared as `_key` has them: an sms echoed without its + is still that contact's
        # (else the batch named no contact and was sent again, run after run, never dead)
        values = {_key(value) for _kind, value in echo.get("channels", ()) if value} - {""}
        near = [
            c for c in batch if values & {_key(c.fields.get(f) or "") for f in ("email", "sms")}
        ]
        if len(near) < 2:
            return near
        exact = [c for c in near if echo.items() <= _comparable(self._contact(c)).items()]
        return exact or near

    def check(self) -> str:
        """Read one row of today's contact activity: proves the API key, changes nothing."""
        today = self.clock.now()
        params = {
            "dateFrom": today.strftime("%Y-%m-%d"),
            "dateTo": (today + timedelta(days=1)).strftime("%Y-%m-%d"),
            "activityStatus": UNSUBSCRIBED,
            "maxrows": 1,
        }
        self.http.read("GET", "/api/v2/contacts/activity", list, empty_ok=True, params=params)
        return "API key accepted (read contact activity)"

    # --- pull ----------------------------------------------------------------------
    def pull(self, stream: str, since: str | None, until: datetime) -> Iterator[Page]:
        if stream != "unsubscribes":
            yield from super().pull(stream, since, until)
            return
        # the cursor is "dateFrom|offset"; a bare date means "start there"
        date_from, _, offset = (since or "").partition("|")
        date_from = date_from[:10]
        if not date_from:
            date_from = self.opts["first_date"] or (until - timedelta(days=365)).strftime(
                "%Y-%m-%d"
            )
        date_to = (until + timedelta(days=1)).strftime("%Y-%m-%d")
        maxrows = 1000
        zone = ZoneInfo(self.opts["activity_timezone"])
        read = {offset}  # the offsets asked for: one asked again means the paging repeats
        while True:
            params: dict[str, str | int] = {
                "dateFrom": date_from,
                "dateTo": date_to,
                "activityStatus": UNSUBSCRIBED,
                "maxrows": maxrows,
            }
            if offset:
                params["offset"] = offset
            # an empty body is no answer (not an empty list): the cursor stays where it is
            answer = self.http.read("GET", "/api/v2/contacts/activity", list, params=params)
            if not answer:
                return
            items = [it for it in answer if isinstance(it, dict)]
            records: list[Any] = [  # an entry that is no object: `clean` counts it skipped
                it
                if not isinstance(it, dict)
                else {
                    "vendor_id": str(
                        it.get("offset")
                        or f"{it.get('contactId') or it.get('email')}:{it.get('activityDateTime')}"
                    ),
                    "email": lowered(it.get("email")),
                    "phone": _sms(it.get("sms")),
                    "external_key": it.get("externalCustomerId") or None,
                    "channel": it.get("mediaType") or "email",
                    "at": _zoned(it.get("activityDateTime"), zone),
                }
                for it in answer
                # the list holds every kind of activity (the spec's ContactActivity:
                # DELIVERED, READ, CLICKED, SPAM, ...); the query's filter is not taken on
                # trust: an activity that says it is another kind is no unsubscribe
                if not isinstance(it, dict) or it.get("activityStatus") in (None, UNSUBSCRIBED)
            ]
            # where the next page starts: the last offset given (an opaque text)
            last = next((str(it["offset"]) for it in reversed(items) if it.get("offset")), "")
            moved = bool(last) and last not in read
            if moved:
                read.add(last)
                offset = last
            yield Page(records, f"{date_from}|{offset}")
            if len(answer) < maxrows:
                return
            if not moved:  # a full page, and no way to ask for the one after it
                raise RetriableError(
                    f"GET /api/v2/contacts/activity answered a full page of {len(answer)} "
                    + (
                        f"whose last offset {last!r} was read already (the paging repeats)"
                        if last
                        else "with no offset to ask for the next page"
                    )
                    + f"; the unsubscribes stream stays at offset {offset!r}",
                    vendor=self.name,
                )


def _said(text: str) -> str:
    """eSputnik's own words (a refusal's `error`, an ERROR session's `description`) for a
    reason, scrubbed and cut as an HTTP error's text is (`error_text`): whole, a megabyte
    of them was a megabyte in every delivery row of the batch."""
    text = scrub(text.strip().replace("\n", " "))
    return text if len(text) <= SAID else text[: SAID - 1] + "…"


def _comparable(contact: dict[str, Any]) -> dict[str, Any]:
    """A contact as sent or echoed, for telling which one an echo is: channels as a set of
    (type, lower-cased value), fields as (id, value) pairs, the rest as given; `error`
    and empty values (an echo may carry nulls for what was not sent) left out."""
    out: dict[str, Any] = {}
    for name, value in contact.items():
        if name == "error" or value in (None, "", [], {}):
            continue
        if name == "channels" and isinstance(value, list):
            out[name] = frozenset(
                (str(ch.get("type")), str(ch.get("value", "")).lower())
                for ch in value
                if isinstance(ch, dict)
            )
        elif name == "fields" and isinstance(value, list):
            out[name] = frozenset(
                (str(f.get("id")), json.dumps(f.get("value"))) for f in value if isinstance(f, dict)
            )
        else:
            out[name] = json.dumps(value, sort_keys=True)
    return out


def _check_segments(key: str, names: list[Any]) -> None:
    """`groupNames` / `groupNamesExclude` as the spec takes them (an array of strings, no
    other constraint: `ContactsBulkUpdate`), less what names no segment anyone made: an
    empty or blank name, spaces around one, the same name twice."""
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str):
            raise OptionError(key, f"{name!r} is not a segment name", hint='write ["Customers"]')
        if not name.strip():
            raise OptionError(
                key, f"{name!r} is no segment name", hint="name the segment, or leave it out"
            )
        if name != name.strip():
            raise OptionError(
                key,
                f"{name!r} has spaces around it",
                hint=f"write {name.strip()!r}: segments are matched by name, and the spec "
                "does not say that spaces are trimmed",
            )
        if name in seen:
            raise OptionError(key, f"{name!r} is listed twice", hint="list each segment once")
        seen.add(name)


def _is_date(text: str) -> bool:
    """YYYY-MM-DD, as `dateFrom` takes it."""
    try:
        datetime.strptime(text, "%Y-%m-%d")
    except ValueError:
        return False
    return len(text) == 10


def _zoned(value: Any, zone: ZoneInfo) -> Any:
    """An activityDateTime without an offset, given `activity_timezone` (the spec says only
    "Activity date and time"); one with an offset, or that is no ISO time, as it came."""
    if not isinstance(value, str) or not value.strip():
        return value or None
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return value
    return value if when.tzinfo else when.replace(tzinfo=zone).isoformat()


def _keys(c: Contact, field: str | None) -> list[str]:
    """What an import mapping's `dedupeValue` may name this contact by, as `_key` has it:
    "a value of the field used to determine the contact uniqueness" (the spec's
    DedupeMapping): the externalCustomerId, the email or sms, or under dedupe_on =
    "fieldId" the custom field's value (`field`, the field_id)."""
    custom = c.metadata.get(field) if field else None
    fields = c.fields
    values = (fields.get("externalCustomerId"), fields.get("email"), fields.get("sms"), custom)
    return [_key(v) for v in values if v and v.strip()]


def _ref(contact_id: Any) -> str | None:
    """A mapping entry's contactId as a delivery's ref (None when it gives none)."""
    return None if contact_id is None else str(contact_id)


def _sms(value: Any) -> Any:
    """A pulled activity's sms with its + (an sms sent as +380... may come back without it:
    the spec shows both forms; stored bare, it matched no contact's E.164 phone and an
    sms-only opt-out held nobody back); a value of another type as it came, for
    `syncd.pull.clean` to convert or refuse. One with a + or starting with 0 (`00380...`, or
    national: its country unknown here) is left for the store to normalise or keep."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # digits sent as a JSON number
    if isinstance(value, str) and PHONE.fullmatch(text := value.strip()):
        digits = NOT_DIGIT.sub("", text)
        bare = not text.startswith("+") and not digits.startswith("0")
        return f"+{digits}" if bare and 8 <= len(digits) <= 15 else text
    return value or None


def _key(value: str) -> str:
    """A dedupe value compared: trimmed, lower-cased, and a phone number by its digits (an
    sms sent as +380... may come back without the +; the spec shows both forms)."""
    value = value.strip().lower()
    return NOT_DIGIT.sub("", value) if PHONE.fullmatch(value) else value


def _json(body: dict[str, Any]) -> bytes:
    """The request body as compact JSON, by orjson (a tenth of the stdlib's time for 3000
    contacts); by the stdlib, escaped, for text orjson refuses (a lone surrogate that an
    undecodable byte of the export became)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, separators=(",", ":")).encode()
