"""The store described for analysts: one source for the README's schema section, the
Datasette metadata (`pip install syncd[analyst]`) and `syncd schema`.

A test checks that every table and view of the store is described here, that every
column described exists, that every example query runs, and that the README's schema
section is what `syncd schema` prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Relation:
    name: str
    description: str
    columns: dict[str, str] = field(default_factory=dict)
    view: bool = False


@dataclass(frozen=True)
class Example:
    name: str
    title: str
    sql: str


RELATIONS: tuple[Relation, ...] = (
    Relation(
        "contacts",
        "One row per CRM contact ever seen: the latest export row, as JSON.",
        {
            "key": "The CRM key column (e.g. `Record ID`).",
            "attributes": "Every column of the latest export row, as a JSON object; read one "
            """with `json_extract(attributes, '$."City"')`.""",
            "email": "Normalised email (trimmed, lower-case), used to match pulled data.",
            "phone": "Normalised phone (E.164).",
            "first_seen": "When the contact first appeared in an export (UTC ISO 8601).",
            "updated_at": "When its row last changed.",
            "gone_at": "When it left the export; NULL while present.",
        },
    ),
    Relation(
        "vendor_state",
        "What each vendor has acknowledged per contact: the basis of the diff.",
        {
            "vendor": "Vendor name (`esputnik`, `dropthought`, `hellocustomer`, `altcraft`, `signalvine`).",
            "key": "CRM key.",
            "hash": "Fingerprint of the projection the vendor acknowledged.",
            "ref": "The vendor's own id for the contact (eSputnik contact id, Dropthought participant_uuid, ...).",
            "acked_at": "When the vendor acknowledged it.",
        },
    ),
    Relation(
        "deliveries",
        "The delivery ledger: one row per contact change to send to a vendor, written before "
        "any request.",
        {
            "id": "Delivery id.",
            "run_id": "The run that planned it (`runs.id`).",
            "vendor": "Vendor name.",
            "key": "CRM key.",
            "kind": "`new` or `changed`.",
            "status": "`pending`, `in_flight`, `sent`, `failed` (retried next run), `dead` "
            "(gave up after max_attempts), `unknown` (a trigger whose outcome is unknown: "
            "never re-sent without `syncd retry --unknown`), `skipped` (suppressed; see "
            "reason), `superseded` (a newer change replaced it).",
            "payload": "The fields and metadata sent, as JSON.",
            "attempts": "Requests that carried it.",
            "reason": "The vendor's rejection text, or why it was skipped.",
            "vendor_ref": "The vendor's id for the contact, when it said.",
            "created_at": "When it was planned.",
            "sent_at": "When the vendor acknowledged it.",
        },
    ),
    Relation(
        "runs",
        "Every reconcile, pull and retry, with its counts.",
        {
            "id": "Run id.",
            "kind": "`reconcile`, `pull` or `retry`.",
            "started_at": "Start (UTC).",
            "finished_at": "End (UTC); NULL while running or after a crash.",
            "status": "`running`, `ok`, `partial`, `refused`, `failed` or `dry_run`.",
            "exit_code": "The command's exit code.",
            "rows_read": "Export rows read (reconcile).",
            "quarantined": "Export rows quarantined (reconcile).",
            "counts": "Per-vendor counts, as JSON.",
            "message": "The one-line summary.",
        },
    ),
    Relation(
        "quarantine",
        "Export rows that could not be used, with the physical line and the reason.",
        {
            "run_id": "The run that read the row.",
            "file": "The export file.",
            "line": "Physical line where the record starts (the header is line 1).",
            "key": "CRM key, when the row had one.",
            "vendor": "The vendor it could not go to; NULL means no vendor.",
            "reason": "What is wrong, and what to do.",
        },
    ),
    Relation(
        "responses",
        "Survey responses pulled back (Hello Customer), one row per response.",
        {
            "vendor": "Vendor name.",
            "response_id": "The vendor's response id.",
            "key": "CRM key, matched by `custom_UniqueID` or email; NULL when unmatched.",
            "email": "Respondent email.",
            "campaign": "Campaign / touchpoint.",
            "language": "Response language.",
            "surveyed_at": "When the survey was sent.",
            "answered_at": "When it was answered.",
            "raw": "The vendor's record, as JSON.",
        },
    ),
    Relation(
        "answers",
        "One row per answered question of a response.",
        {
            "vendor": "Vendor name.",
            "answer_id": "The vendor's answer id.",
            "response_id": "The response (`responses.response_id`).",
            "question_id": "The question's id.",
            "question_text": "The question as asked.",
            "sort_order": "The question's position in the survey.",
            "score": "Numeric answer (NPS 0-10, CES, CSAT, rating).",
            "text": "Open answer.",
            "boolean": "Yes/no answer (1/0).",
            "options": "Chosen options, as a JSON list.",
            "is_nps": "1 for the NPS question.",
            "is_ces": "1 for a Customer Effort Score question.",
            "is_csat": "1 for a CSAT question.",
            "paths": "Text-analytics paths (topics), as a JSON list, when present.",
        },
    ),
    Relation(
        "nps",
        "NPS as the vendor computes it, per period and filter.",
        {
            "vendor": "Vendor name.",
            "filter": "The filter as JSON; `[]` is all respondents.",
            "period_start": "Period start (inclusive).",
            "period_end": "Period end (inclusive).",
            "nps": "Net Promoter Score, -100 to 100.",
            "detractors": "Share or count of detractors, as the vendor reports it.",
            "passives": "Passives.",
            "promoters": "Promoters.",
        },
    ),
    Relation(
        "unsubscribes",
        "Opt-outs pulled from the vendors; they suppress further sends (see [suppression]).",
        {
            "vendor": "Where the person unsubscribed.",
            "vendor_id": "The vendor's id for the event.",
            "key": "CRM key, where it could be matched (vendor copy of our key, email, phone).",
            "email": "Email, lower-case.",
            "phone": "Phone (E.164).",
            "channel": "`email`, `sms`, ...",
            "at": "When they unsubscribed (NULL: the vendor did not say).",
        },
    ),
    Relation(
        "cursors",
        "How far each vendor's pull streams have read; advanced with the rows they cover.",
        {
            "vendor": "Vendor name.",
            "stream": "`responses`, `nps` or `unsubscribes`.",
            "cursor": "The vendor-specific position.",
            "updated_at": "When it last moved.",
        },
    ),
    Relation(
        "digest_definitions",
        "syncd's own bookkeeping: what each vendor's `vendor_state.hash` is computed from. "
        "When it changes, a trigger vendor is re-baselined (its contacts recorded as "
        "acknowledged, nobody surveyed) and an upsert vendor is sent its contacts again.",
        {
            "vendor": "Vendor name.",
            "definition": "JSON: `digest` (syncd's digest version) and, for a trigger vendor, "
            "`on_change`; for an upsert vendor `fields`, `metadata`, `types` and "
            "`phone_region`.",
            "recorded_at": "When the reconcile that recorded it ran.",
            "run_id": "That reconcile (`runs.id`).",
        },
    ),
    Relation(
        "fingerprint_cache",
        "syncd's own bookkeeping, nothing to query: the live contacts' fingerprints as one "
        "blob, so the nightly diff loads a million in milliseconds.",
        {
            "generation": "The `contacts_generation` it was written at; any other means stale.",
            "live": "The live `contacts.rhash` values, sorted, as little-endian int64.",
            "rowids": "Each one's `contacts` rowid, in the same order and form.",
        },
    ),
    Relation(
        "contacts_generation",
        "syncd's own bookkeeping: a counter that triggers move on at every change to a "
        "contact's fingerprint or liveness, by whatever made it.",
        {
            "generation": "The counter.",
            "in_diff": "1 only inside the diff's own transaction, which accounts for its "
            "writes itself; always 0 to anyone else.",
        },
    ),
    Relation(
        "contact_status",
        "Each contact's latest delivery per vendor, with what the vendor acknowledged.",
        {
            "key": "CRM key.",
            "vendor": "Vendor name.",
            "status": "Status of the latest delivery.",
            "reason": "Its reason.",
            "acked_at": "When the vendor last acknowledged the contact.",
            "vendor_ref": "The vendor's id for the contact.",
            "gone_at": "Set when the contact left the export.",
        },
        view=True,
    ),
    Relation(
        "delivery_backlog",
        "Open work per vendor and status, with the oldest item: what `syncd status` counts.",
        {"vendor": "Vendor name.", "status": "Open status.", "n": "How many.", "oldest": "Oldest."},
        view=True,
    ),
    Relation(
        "answers_with_contact",
        "Every answer with its response and the contact's CRM attributes.",
        {"attributes": "The contact's export row as JSON (NULL if unmatched)."},
        view=True,
    ),
    Relation(
        "nps_over_time",
        "The vendor's NPS per period and filter, in time order.",
        view=True,
    ),
    Relation(
        "nps_from_answers",
        "NPS computed here from the NPS answers, per vendor and month, to check `nps_over_time`.",
        {"month": "YYYY-MM of `answered_at`.", "answers": "NPS answers that month."},
        view=True,
    ),
    Relation(
        "response_rate",
        "Surveys acknowledged per trigger vendor and month, and how many of those contacts "
        "responded afterwards.",
        {
            "sent": "Deliveries acknowledged.",
            "responded": "Contacts with a later response.",
            "rate_percent": "responded / sent × 100.",
        },
        view=True,
    ),
    Relation(
        "unsubscribes_per_week",
        "Unsubscribes per week (`YYYY-Www`), vendor and channel.",
        view=True,
    ),
    Relation(
        "skipped_reasons",
        "What was held back and why (unsubscribed, min_days_between_surveys, superseded...).",
        view=True,
    ),
)

EXAMPLES: tuple[Example, ...] = (
    Example(
        "nps_by_city",
        "NPS by the contact's city (from the answers)",
        """SELECT json_extract(attributes, '$."City"') AS city, count(*) AS answers,
       round(100.0 * (sum(score >= 9) - sum(score <= 6)) / count(*), 1) AS nps
FROM answers_with_contact
WHERE is_nps AND score IS NOT NULL
GROUP BY city ORDER BY answers DESC""",
    ),
    Example(
        "not_yet_at_vendor",
        "Contacts a vendor does not have yet, and why",
        """SELECT vendor, status, reason, count(*) AS contacts
FROM contact_status
WHERE status NOT IN ('sent', 'superseded')
GROUP BY vendor, status, reason ORDER BY contacts DESC""",
    ),
    Example(
        "unsubscribed_contacts",
        "Unsubscribed contacts with their CRM segment",
        """SELECT u.vendor, u.channel, u.at, c.key, json_extract(c.attributes, '$."Segment"') AS segment
FROM unsubscribes u JOIN contacts c ON c.key = u.key
ORDER BY u.at DESC""",
    ),
    Example(
        "last_runs",
        "The last ten runs",
        "SELECT id, kind, started_at, status, exit_code, message FROM runs ORDER BY id DESC LIMIT 10",
    ),
)


def datasette_metadata(database: str = "syncd") -> dict[str, Any]:
    """Datasette metadata: table and column descriptions, and a canned query per example
    and per view, for a database served under the name `database`."""
    queries: dict[str, Any] = {e.name: {"title": e.title, "sql": e.sql} for e in EXAMPLES}
    for r in RELATIONS:
        if r.view:
            queries[f"view_{r.name}"] = {
                "title": r.name,
                "description": r.description,
                "sql": f"SELECT * FROM {r.name} LIMIT 1000",
            }
    return {
        "title": "syncd",
        "description": "CRM contacts, what each vendor acknowledged, and what came back.",
        "databases": {
            database: {
                "tables": {
                    r.name: {"description": r.description, "columns": dict(r.columns)}
                    for r in RELATIONS
                },
                "queries": queries,
            }
        },
    }


def markdown() -> str:
    """The README's schema section (between its `<!-- SCHEMA -->` markers)."""
    out: list[str] = []
    for title, views in (("Tables", False), ("Views", True)):
        out.append(f"#### {title}\n")
        for r in RELATIONS:
            if r.view != views:
                continue
            out.append(f"**`{r.name}`** — {r.description}\n")
            if r.columns:
                out.append("| column | meaning |\n|---|---|")
                out += [f"| `{c}` | {d} |" for c, d in r.columns.items()]
                out.append("")
    out.append("#### Example queries\n")
    for e in EXAMPLES:
        out.append(f"{e.title}:\n\n```sql\n{e.sql};\n```\n")
    return "\n".join(out)
