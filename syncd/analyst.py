"""The store described for analysts: one source for the README's schema section, the
Datasette metadata (`pip install syncd[analyst]`) and `syncd schema`.

A test checks that every table and view of the store is described here with exactly its
columns, that every example query runs, and that the README's schema section is what
`syncd schema` prints.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from syncd.vendors import REGISTRY


@dataclass(frozen=True)
class Relation:
    name: str
    description: str
    columns: dict[str, str] = field(default_factory=dict)
    view: bool = False
    internal: bool = False  # syncd's bookkeeping: listed last, hidden in Datasette


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
            "phone": "Normalised phone (E.164); indexed (m023), as pulled records are matched by it.",
            "rhash": "Fingerprint of the raw export row (the diff's fast path; not a key); a "
            "gone contact's is `-rhash - 1`, so that it matches no export row.",
            "first_seen": "When the contact first appeared in an export (UTC ISO 8601).",
            "updated_at": "When its row last changed, or it came back to the export.",
            "gone_at": "When it left the export; NULL while present.",
        },
    ),
    Relation(
        "vendor_state",
        "What each vendor has acknowledged per contact: the basis of the diff.",
        {
            "vendor": "Vendor name (" + ", ".join(f"`{name}`" for name in REGISTRY) + ").",
            "key": "CRM key.",
            "hash": "Fingerprint of the projection the vendor acknowledged: a 64-bit integer (text of 40 hex digits if made by a syncd before digest version 2).",
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
            "reason), `superseded` (never sent: a newer change replaced it, the contact left "
            "the export, the vendor already had this data, `--baseline` recorded it as "
            "acknowledged, or the vendor was removed from the config; see reason).",
            "hash": "Fingerprint of the projection it carries (as `vendor_state.hash`); `vendor_state.hash` once acknowledged.",
            "payload": "The fields and metadata sent, as JSON (NULL once pruned).",
            "attempts": "Requests that carried it.",
            "reason": "The vendor's rejection text, or why it was skipped.",
            "vendor_ref": "The vendor's id for the contact, when it said.",
            "job": "The vendor's asynchronous job to resume after a crash (eSputnik import "
            "session, SignalVine command `Location`), while one is open.",
            "created_at": "When it was planned.",
            "updated_at": "When it last changed: its status, its data (a newer change replacing it before "
            "it was sent) or its vendor job.",
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
            "status": "`running`, `ok`, `partial` (some deliveries or streams failed), `refused` "
            "(a guard), `failed` (any error), `interrupted` (Ctrl-C, SIGTERM) or `crashed` "
            "(left `running` by a kill; closed by the next run).",
            "exit_code": "The command's exit code.",
            "export_path": "The export file read (reconcile).",
            "rows_read": "Export rows read (reconcile).",
            "quarantined": "Export rows quarantined (reconcile).",
            "counts": "Per-vendor counts, as JSON.",
            "message": "The one-line summary.",
            "seconds": "How long it took.",
            "delivered": "The vendors a reconcile sent its queued deliveries to, as a JSON "
            "array; NULL when it sent nothing (a dry run, `--baseline`, a refusal) and for a "
            "pull or a retry. For a reconcile from before m020, read from its counts (m021): "
            "the vendors they show a delivery to, or a stop at.",
        },
    ),
    Relation(
        "quarantine",
        "Export rows that could not be used, with the physical line and the reason.",
        {
            "id": "Row id.",
            "run_id": "The run that read the row.",
            "file": "The export file.",
            "line": "Physical line where the record starts (the header is line 1).",
            "key": "CRM key, when the row had one.",
            "vendor": "The vendor it could not go to; NULL means no vendor.",
            "reason": "What is wrong, and what to do.",
            "created_at": "When it was quarantined.",
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
            "pulled_at": "When syncd last stored it.",
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
            "is_score": "1 for a question answered with a score.",
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
            "vendor_id": "The vendor's id for the computation.",
            "computed_at": "When the vendor computed it.",
            "pulled_at": "When syncd last stored it.",
        },
    ),
    Relation(
        "unsubscribes",
        "Opt-outs pulled from the vendors; they suppress further sends (see [suppression]). "
        "One stays when the person subscribes again at the vendor (syncd records no "
        "re-subscribe), and one who opts out again may be a second row (SignalVine keys an "
        "opt-out by participant and time).",
        {
            "vendor": "Where the person unsubscribed.",
            "vendor_id": "The vendor's id for the event.",
            "key": "CRM key, where it could be matched (vendor copy of our key, email, phone).",
            "email": "Email, trimmed and lower-case, as `contacts.email`.",
            "phone": "Phone, E.164 where it reads as an international number (an eSputnik sms "
            "without its `+` gets it), else as the vendor sent it.",
            "channel": "`email`, `sms`, ...",
            "at": "When they unsubscribed (NULL: the vendor did not say).",
            "pulled_at": "When syncd stored it.",
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
            "run_id": "Not written by this version (NULL).",
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
        internal=True,
    ),
    Relation(
        "fingerprint_cache",
        "syncd's own bookkeeping, nothing to query: the live contacts' fingerprints as one "
        "blob, so the nightly diff loads a million in milliseconds.",
        {
            "id": "1 or 2: the table holds one row, the diff writes the next one beside it.",
            "generation": "The `contacts_generation` it was written at; any other means stale.",
            "live": "The live `contacts.rhash` values, sorted, as little-endian int64.",
            "rowids": "Each one's `contacts` rowid, in the same order and form.",
        },
        internal=True,
    ),
    Relation(
        "contacts_generation",
        "syncd's own bookkeeping: a counter that triggers move on at every change to a "
        "contact's fingerprint or liveness, by whatever made it.",
        {
            "id": "Always 1: the table holds one row.",
            "generation": "The counter.",
            "in_diff": "1 only inside the diff's own transaction, which accounts for its "
            "writes itself; always 0 to anyone else.",
        },
        internal=True,
    ),
    Relation(
        "export_header",
        "syncd's own bookkeeping: the header of the last export diffed, so that a CRM column "
        "renamed is renamed in `contacts.attributes` without every row being looked at again.",
        {
            "id": "Always 1: the table holds one row.",
            "named": "The names `contacts.attributes` are keyed by (a JSON array, in order).",
            "salted": "The names the contacts' fingerprints were made under: a column no "
            "mapping reads keeps its first name here.",
        },
        internal=True,
    ),
    Relation(
        "unfinished_diff",
        "syncd's own bookkeeping: the run whose first sync has committed part of what it "
        "found but not finished (killed, or it failed); the next run undoes that part "
        "before anything is sent. Empty otherwise.",
        {"run_id": "That run (`runs.id`)."},
        internal=True,
    ),
    Relation(
        "_sqlite_migrations",
        "syncd's own bookkeeping (sqlite-utils' migrations table): the schema changes this "
        "store has applied.",
        {
            "id": "Row id.",
            "migration_set": "Always `syncd`.",
            "name": "The migration (`syncd/state/schema.py`).",
            "applied_at": "When it was applied.",
        },
        internal=True,
    ),
    Relation(
        "contact_status",
        "Each contact's latest delivery per vendor, with what the vendor acknowledged: one "
        "row per contact and vendor it has a delivery to (a contact acknowledged without a "
        "send, by `--baseline`, `on_new = false` or a re-baseline, has none), in no promised order (today open work first, then "
        "held back, then sent in key order). Filter it (`WHERE key = ?`, `WHERE vendor = ? AND status = ?`) rather than "
        "reading it whole; to count, query `deliveries` as the example below does.",
        {
            "key": "CRM key.",
            "vendor": "Vendor name.",
            "status": "Status of the latest delivery.",
            "reason": "Its reason.",
            "attempts": "Its attempts.",
            "updated_at": "When it last changed: its status, its data (a newer change replacing it before "
            "it was sent) or its vendor job.",
            "acked_at": "When the vendor last acknowledged the contact.",
            "vendor_ref": "The vendor's id for the contact.",
            "gone_at": "Set when the contact left the export.",
        },
        view=True,
    ),
    Relation(
        "delivery_backlog",
        "Open work per vendor and status, with the oldest item: what `syncd status` counts. "
        "A vendor removed from the config keeps its open rows here (`syncd status` lists them "
        "apart) until `syncd withdraw` closes them.",
        {
            "vendor": "Vendor name.",
            "status": "Open status.",
            "n": "How many.",
            "oldest": "The earliest `created_at` (a replaced delivery keeps its first one).",
        },
        view=True,
    ),
    Relation(
        "answers_with_contact",
        "Every answer with its response and the contact's CRM attributes.",
        {
            "vendor": "Vendor name.",
            "response_id": "The response.",
            "key": "CRM key (NULL when the response was not matched).",
            "email": "Respondent email.",
            "answered_at": "When the response was answered.",
            "question_id": "The question's id.",
            "question_text": "The question as asked.",
            "sort_order": "The question's position.",
            "score": "Numeric answer.",
            "text": "Open answer.",
            "boolean": "Yes/no answer (1/0).",
            "options": "Chosen options (JSON list).",
            "is_nps": "1 for the NPS question.",
            "is_ces": "1 for a CES question.",
            "is_csat": "1 for a CSAT question.",
            "paths": "Text-analytics paths (JSON list).",
            "attributes": "The contact's export row as JSON (NULL if unmatched).",
        },
        view=True,
    ),
    Relation(
        "nps_over_time",
        "The vendor's NPS per period and filter, in time order (Hello Customer: calendar months, "
        "UTC). A period without respondents "
        "(the vendor reports 0, or nothing, for the NPS and every share) is NULL throughout.",
        {
            "vendor": "Vendor name.",
            "filter": "The filter as JSON; `[]` is all respondents.",
            "period_start": "Period start (inclusive).",
            "period_end": "Period end (inclusive).",
            "nps": "Net Promoter Score, -100 to 100; NULL without respondents. Hello Customer "
            "reports a whole number (31 for promoters 36.84 and detractors 5.26 in its "
            "document), where `nps_from_answers` rounds to 0.1.",
            "promoters": "Promoters, as the vendor reports them (Hello Customer: % of respondents).",
            "passives": "Passives, likewise.",
            "detractors": "Detractors, likewise.",
        },
        view=True,
    ),
    Relation(
        "nps_from_answers",
        "NPS computed here from the NPS answers, per vendor and month (UTC, as Hello Customer's "
        "own periods), to check `nps_over_time`. An answer counts once per response and NPS "
        "question (a respondent who answered twice counts twice), and only on the NPS scale: "
        "a score that is not a whole number from 0 to 10 (a vendor's 8.5 or 11) is left out.",
        {
            "vendor": "Vendor name.",
            "month": "YYYY-MM of `answered_at` (UTC); NULL for answers whose response has none, "
            "or one that is no ISO 8601 time (kept as the vendor sent it).",
            "answers": "NPS answers that month (months without any are absent); always "
            "promoters + passives + detractors.",
            "nps": "(promoters - detractors) / answers × 100, rounded to 0.1 (a half away "
            "from zero).",
            "promoters": "Answers scoring 9 or 10.",
            "passives": "Answers scoring 7 or 8.",
            "detractors": "Answers scoring 0 to 6.",
        },
        view=True,
    ),
    Relation(
        "response_rate",
        "Contacts surveyed per month at each vendor whose responses syncd pulls (a "
        "`responses` row in `cursors`: Hello Customer; upsert vendors and triggers that "
        "return nothing are not listed), and how many of them answered. A matched response "
        "answers the contact's latest survey at that vendor acknowledged at or before it; one "
        "answered before any (a survey re-sent by `syncd retry --unknown` after it was "
        "answered), unmatched (`responses.key` NULL) or whose `answered_at` is no ISO 8601 "
        "time answers none.",
        {
            "vendor": "Vendor name.",
            "month": "YYYY-MM of the survey's `sent_at` (UTC).",
            "sent": "Contacts with a survey acknowledged that month (each counted once).",
            "responded": "Of those, contacts whose response answers a survey of that month.",
            "rate_percent": "responded / sent × 100, rounded to 0.1 (a half away from zero).",
        },
        view=True,
    ),
    Relation(
        "unsubscribes_per_week",
        "Unsubscribes per week, vendor and channel.",
        {
            "week": "`YYYY-Www`: `strftime('%Y-W%W', at)`, weeks starting on Monday, the days "
            "before a year's first Monday in week 00 (not ISO 8601 weeks); NULL for an "
            "untimed opt-out, or one whose `at` SQLite cannot read (a `+0000` offset).",
            "vendor": "Vendor name.",
            "channel": "`email`, `sms`, ...",
            "unsubscribes": "How many opt-outs (rows of `unsubscribes`: a person who opted out "
            "at two vendors, or twice at one, counts each time).",
        },
        view=True,
    ),
    Relation(
        "skipped_reasons",
        "What was held back and why (unsubscribed, min_days_between_surveys, superseded...).",
        {
            "vendor": "Vendor name.",
            "status": "`skipped` or `superseded`.",
            "reason": "`unsubscribed`, `min_days_between_surveys`, or the reason as recorded.",
            "n": "Deliveries, in the whole ledger (not only each contact's latest).",
        },
        view=True,
    ),
)

EXAMPLES: tuple[Example, ...] = (
    Example(
        "nps_by_city",
        "NPS by the contact's city (from the answers)",
        """-- the answers on the NPS scale, as nps_from_answers counts them; city NULL: a
-- contact without one, or a response matched to no contact
SELECT json_extract(attributes, '$."City"') AS city, count(*) AS answers,
       round(100.0 * (sum(score >= 9) - sum(score <= 6)) / count(*), 1) AS nps
FROM answers_with_contact
WHERE is_nps AND score IN (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
GROUP BY city ORDER BY answers DESC""",
    ),
    Example(
        "not_yet_at_vendor",
        "Contacts a vendor does not have yet, and why",
        """-- contact_status's rows with neither status 'sent' nor 'superseded', read from the
-- ledger: the deliveries with one of the other statuses (found through the partial
-- indexes on exactly these lists) that are their contact's latest to that vendor
SELECT vendor, status, reason, count(*) AS contacts
FROM (SELECT id, vendor, key, status, reason FROM deliveries
      WHERE status IN ('pending', 'in_flight', 'failed', 'unknown', 'dead')
      UNION ALL
      SELECT id, vendor, key, status, reason FROM deliveries
      WHERE status IN ('skipped', 'superseded') AND status = 'skipped') d
WHERE NOT EXISTS (SELECT 1 FROM deliveries newer
                  WHERE newer.key = d.key AND newer.vendor = d.vendor AND newer.id > d.id)
GROUP BY vendor, status, reason ORDER BY contacts DESC""",
    ),
    Example(
        "unsubscribed_contacts",
        "Unsubscribed contacts with their CRM segment",
        """-- each opt-out with the contact it names, and every other contact with its email or
-- phone (one pulled before its contact was in an export names none): as the
-- suppression matches them
SELECT u.vendor, u.channel, u.at, c.key, json_extract(c.attributes, '$."Segment"') AS segment
FROM unsubscribes u JOIN contacts c ON c.key = u.key
UNION ALL
SELECT u.vendor, u.channel, u.at, c.key, json_extract(c.attributes, '$."Segment"')
FROM unsubscribes u JOIN contacts c ON c.email = u.email
WHERE c.key IS NOT u.key
UNION ALL
SELECT u.vendor, u.channel, u.at, c.key, json_extract(c.attributes, '$."Segment"')
FROM unsubscribes u JOIN contacts c ON c.phone = u.phone
WHERE c.key IS NOT u.key AND coalesce(c.email = u.email, 0) = 0
ORDER BY at DESC""",
    ),
    Example(
        "last_runs",
        "The last ten runs",
        "SELECT id, kind, started_at, status, exit_code, message FROM runs ORDER BY id DESC LIMIT 10",
    ),
)


# the canned queries the index and database pages open on (Datasette has no default query)
START = ("view_response_rate", "view_nps_over_time", "view_delivery_backlog", "last_runs")
# the bytes Datasette writes as they are in a URL's database name; a space is `+`, any
# other byte `~XX` (its "tilde encoding": `syncd.db` is `syncd~2Edb`)
URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def _in_url(name: str) -> str:
    """`name` as Datasette writes it in a URL."""
    return "".join(
        chr(b) if b in URL_SAFE else "+" if b == 32 else f"~{b:02X}" for b in name.encode()
    )


def datasette_metadata(database: str = "syncd") -> dict[str, Any]:
    """Datasette metadata for a database served under the name `database`: table and column
    descriptions, syncd's bookkeeping tables hidden, a canned query per example and per
    view, and pages that open on links to the most useful of them."""
    queries: dict[str, Any] = {e.name: {"title": e.title, "sql": e.sql} for e in EXAMPLES}
    for r in RELATIONS:
        if r.view:
            queries[f"view_{r.name}"] = {
                "title": r.name,
                "description": r.description,
                "sql": f"SELECT * FROM {r.name} LIMIT 1000",
            }
    links = ", ".join(
        f'<a href="/{_in_url(database)}/{q}">{html.escape(queries[q]["title"])}</a>' for q in START
    )
    about = "CRM contacts, what each vendor acknowledged, and what came back."
    start = f"<p>{about}</p><p>Start with: {links}.</p>"
    return {
        "title": "syncd",
        "description_html": start,
        "databases": {
            database: {
                "description_html": start
                + "<p>Every table and column is described on its page; the views and "
                "example queries are the canned queries below.</p>",
                "tables": {
                    r.name: {
                        "description": r.description,
                        "columns": dict(r.columns),
                        "hidden": r.internal,
                    }
                    for r in RELATIONS
                },
                "queries": queries,
            }
        },
    }


def markdown() -> str:
    """The README's schema section (between its `<!-- SCHEMA -->` markers)."""
    out: list[str] = []
    for title, views, internal in (
        ("Tables", False, False),
        ("Views", True, False),
        ("Bookkeeping tables (nothing to query; hidden in Datasette)", False, True),
    ):
        out.append(f"#### {title}\n")
        for r in RELATIONS:
            if (r.view, r.internal) != (views, internal):
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
