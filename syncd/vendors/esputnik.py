"""eSputnik (Yespo): contact upsert through `POST /api/v1/contacts` and its import sessions.

- HTTP Basic auth: any user name, the API key as password.
- At most 3000 contacts a request; `dedupeOn`, `groupNames`, `groupNamesExclude`,
  `eventKeyForNewContacts`, `restoreDeleted`, and custom fields by id from `[metadata]`.
- The 200 answer carries `failedContacts` — an object when one contact failed, an array
  when several did — and an `asyncSessionId`, polled through `/api/v1/importstatus/{id}`
  until FINISHED (sent) or ERROR (failed with the session's description).
- Unsubscribes are read from `GET /api/v2/contacts/activity?activityStatus=UNSUBSCRIBED`
  with its opaque `offset` cursor.

Assumptions (unknown in the vendor's documents): Retry-After on 429 may be absent (we back
off on our own); an import session that neither finishes nor fails within
`poll_timeout` seconds leaves its contacts pending (an upsert: re-sending is harmless).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from syncd.config import Option
from syncd.errors import FatalError, RetriableError
from syncd.vendors.base import Connector, Contact, OnJob, Page, Result, Status

ADDRESS_FIELDS = ("region", "town", "address", "postcode")
DEDUPE = ("email", "sms", "email_or_sms", "id", "externalCustomerId", "fieldId")


class ESputnik(Connector):
    name = "esputnik"
    kind = "upsert"
    max_batch = 3000
    options: ClassVar[dict[str, Option]] = {
        "api_key": Option(str, required=True, secret=True, help="the API key (Basic password)"),
        "dedupe_on": Option(str, default="email", choices=DEDUPE),
        "field_id": Option(int, help="the custom field id, when dedupe_on = 'fieldId'"),
        "groups": Option(list, default=[], help="segments to add the contacts to"),
        "groups_exclude": Option(list, default=[], help="segments to take them out of"),
        "event_key_new": Option(str, help="eventKeyForNewContacts: an event for new contacts"),
        "restore_deleted": Option(bool, default=False),
        "poll_every": Option(float, default=5.0, help="seconds between import-status polls"),
        "poll_timeout": Option(float, default=900.0, help="give up polling after this long"),
        "first_date": Option(str, help="unsubscribes: pull from this date (YYYY-MM-DD)"),
    }
    field_names = frozenset(
        {"email", "sms", "firstName", "lastName", "externalCustomerId", "languageCode", "timeZone"}
        | {f"address.{f}" for f in ADDRESS_FIELDS}
    )
    field_types: ClassVar[dict[str, Literal["email", "phone"]]] = {
        "email": "email",
        "sms": "phone",
    }
    streams = ("unsubscribes",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http.session.auth = ("syncd", self.opts["api_key"])
        for name in self.config.mapping.metadata:
            if not name.isdigit():
                raise FatalError(
                    f"[metadata] {name!r} in {self.config.mapping.path}: eSputnik custom fields "
                    "are named by their numeric id",
                    vendor=self.name,
                )

    def validate(self, contact: Contact) -> str | None:
        if not contact.fields.get("email") and not contact.fields.get("sms"):
            return "no email and no sms: eSputnik needs at least one channel"
        dedupe = self.opts["dedupe_on"]
        if (
            dedupe in ("email", "sms")
            and not contact.fields.get(dedupe)
            and not (contact.fields.get("externalCustomerId"))
        ):
            return f"no {dedupe}, which eSputnik deduplicates on (dedupe_on)"
        return None

    # --- push --------------------------------------------------------------------------
    def body(self, batch: Sequence[Contact]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "contacts": [self._contact(c) for c in batch],
            "dedupeOn": self.opts["dedupe_on"],
        }
        if self.opts["dedupe_on"] == "fieldId":
            body["fieldId"] = self.opts["field_id"]
        if self.config.mapping.metadata:
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
        f = c.fields
        out: dict[str, Any] = {
            "channels": [{"type": t, "value": f[t]} for t in ("email", "sms") if f.get(t)]
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

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        resp = self.http.request("POST", "/api/v1/contacts", json=self.body(batch))
        answer = _json(resp.text, self.name)
        failed = answer.get("failedContacts") or []
        if isinstance(failed, dict):  # one failure comes as an object, several as an array
            failed = [failed]
        results: dict[str, Result] = {}
        for item in failed:
            contact = self._match(item, batch)
            if contact is not None:
                reason = str(item.get("error") or "rejected by eSputnik")
                results[contact.key] = Result(contact.key, Status.FAILED, reason)
        rest = [c for c in batch if c.key not in results]
        session = answer.get("asyncSessionId")
        if rest and not session:
            message = answer.get("errorMessage") or "the answer has no asyncSessionId"
            raise FatalError(str(message), vendor=self.name)
        if rest:
            on_job(str(session))
            for r in self.resume(str(session), rest):
                results[r.key] = r
        return list(results.values())

    def resume(self, job: str, batch: Sequence[Contact]) -> list[Result]:
        """Poll the import session until it is FINISHED or ERROR (or we give up)."""
        deadline = self.clock.monotonic() + self.opts["poll_timeout"]
        while True:
            resp = self.http.request("GET", f"/api/v1/importstatus/{job}")
            status = _json(resp.text, self.name)
            state = str(status.get("status", "")).upper()
            if state == "FINISHED":
                ids = {
                    str(m.get("dedupeValue", "")).lower(): m.get("contactId")
                    for m in status.get("mapping") or []
                }
                return [Result(c.key, Status.SENT, ref=_ref(ids, c)) for c in batch]
            if state == "ERROR":
                reason = f"import session failed: {status.get('description') or 'no description'}"
                return [Result(c.key, Status.FAILED, reason) for c in batch]
            if self.clock.monotonic() >= deadline:
                reason = f"import session {job} still {state or 'unknown'} after polling"
                return [Result(c.key, Status.PENDING, reason) for c in batch]
            self.clock.sleep(self.opts["poll_every"])

    def _match(self, item: Any, batch: Sequence[Contact]) -> Contact | None:
        """Which contact of the batch a `failedContacts` entry is."""
        if not isinstance(item, dict):
            return None
        ext = item.get("externalCustomerId")
        values = {
            str(ch.get("value", "")).lower()
            for ch in item.get("channels") or []
            if isinstance(ch, dict)
        }
        for c in batch:
            if ext and c.fields.get("externalCustomerId") == ext:
                return c
        for c in batch:
            if values & {c.fields.get("email", ""), c.fields.get("sms", "")} - {""}:
                return c
        return None

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
        while True:
            params: dict[str, str | int] = {
                "dateFrom": date_from,
                "dateTo": date_to,
                "activityStatus": "UNSUBSCRIBED",
                "maxrows": maxrows,
            }
            if offset:
                params["offset"] = offset
            resp = self.http.request("GET", "/api/v2/contacts/activity", params=params)
            items = _json_list(resp.text, self.name)
            if not items:
                return
            records = [
                {
                    "vendor_id": str(
                        it.get("offset") or f"{it.get('contactId')}:{it.get('activityDateTime')}"
                    ),
                    "email": (it.get("email") or "").lower() or None,
                    "phone": it.get("sms") or None,
                    "external_key": it.get("externalCustomerId") or None,
                    "channel": it.get("mediaType") or "email",
                    "at": str(it.get("activityDateTime") or ""),
                }
                for it in items
            ]
            offset = str(items[-1].get("offset") or offset)
            yield Page(records, f"{date_from}|{offset}")
            if len(items) < maxrows:
                return


def _ref(ids: dict[str, Any], c: Contact) -> str | None:
    for value in (c.fields.get("externalCustomerId"), c.fields.get("email"), c.fields.get("sms")):
        if value and ids.get(value.lower()) is not None:
            return str(ids[value.lower()])
    return None


def _json(text: str, vendor: str) -> dict[str, Any]:
    import json

    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        raise RetriableError(f"answer is not JSON: {text[:120]!r}", vendor=vendor) from None
    if not isinstance(data, dict):
        raise RetriableError(f"answer is not a JSON object: {text[:120]!r}", vendor=vendor)
    return data


def _json_list(text: str, vendor: str) -> list[dict[str, Any]]:
    import json

    try:
        data = json.loads(text) if text.strip() else []
    except ValueError:
        raise RetriableError(f"answer is not JSON: {text[:120]!r}", vendor=vendor) from None
    if not isinstance(data, list):
        raise RetriableError(f"answer is not a JSON array: {text[:120]!r}", vendor=vendor)
    return [d for d in data if isinstance(d, dict)]
