"""The pull tables' writes: responses and their answers, NPS, unsubscribes, and the cursor
of each stream. `syncd.pull` fetches, checks (`clean`) and calls these inside the page's
`store.write()` transaction, so a page and its cursor commit together.

Where the upsert simply replaces every column but the key (answers, nps, cursors) it is
sqlite-utils' `upsert` (inside the caller's transaction it runs in a savepoint). Where it
keeps what is stored (a response only changes when its raw record or its match does; an
unsubscribe keeps a key and a time a later pull does not know) it is plain SQL. Each saver
says whether the record was new or changed anything: a pull re-reads its lookback, and
those records are not news.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from sqlite_utils import Database

from syncd.project import normalise_email, normalise_phone


def match_key(
    c: sqlite3.Connection,
    vendor: str,
    external: str | None,
    email: str | None,
    phone: str | None,
) -> str | None:
    """The CRM key of a pulled record: the vendor's copy of our key, else email, else phone.
    Of several contacts sharing the email or phone (a couple, a shop's address), the one
    `vendor` was sent something (`deliveries_sent_key`), then one still in the export, then
    the first seen: a response answers the survey the vendor was sent, not a namesake's."""
    if external:
        row = c.execute("SELECT key FROM contacts WHERE key = ?", (external,)).fetchone()
        if row:
            return str(row[0])
    for column, value in (("email", (email or "").strip().lower()), ("phone", phone)):
        if value:
            row = c.execute(
                f"SELECT key FROM contacts c WHERE {column} = ?1 ORDER BY NOT EXISTS (SELECT 1 "
                "FROM deliveries INDEXED BY deliveries_sent_key WHERE vendor = ?2 AND "
                "key = c.key AND status = 'sent'), gone_at IS NOT NULL, rowid LIMIT 1",
                (value, vendor),
            ).fetchone()
            if row:
                return str(row[0])
    return None


class Refused(ValueError):
    """A pulled record the store will not take as it stands: the pull skips it, with this
    reason, as it skips a record with a field of the wrong type."""


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def save_response(db: Database, vendor: str, r: dict[str, Any], now: str) -> bool:
    """A response (updated only when its raw record or its matched key changed; campaign and
    language stay as first pulled) and its answers (replaced). An answer id that another
    response of the vendor holds is `Refused`, before anything is written: the answers are
    keyed (vendor, answer_id), and taking it would move that response's answer to this one."""
    ids = [a["answer_id"] for a in r.get("answers") or []]
    taken = db.conn.execute(
        "SELECT answer_id, response_id FROM answers WHERE vendor = ? "
        "AND answer_id IN (SELECT value FROM json_each(?)) AND response_id != ? LIMIT 1",
        (vendor, json.dumps(ids), r["response_id"]),
    ).fetchone()
    if taken:
        raise Refused(
            f"answer {taken[0]} is response {taken[1]}'s already: an answer id names one "
            "answer of one response"
        )
    key = match_key(db.conn, vendor, r.get("external_key"), r.get("email"), None)
    raw = json.dumps(r.get("raw"), sort_keys=True, ensure_ascii=False)
    stored = db.conn.execute(
        "INSERT INTO responses (vendor, response_id, key, email, campaign, language, surveyed_at, "
        "answered_at, raw, pulled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (vendor, response_id) DO UPDATE SET key = excluded.key, "
        "email = excluded.email, surveyed_at = excluded.surveyed_at, "
        "answered_at = excluded.answered_at, raw = excluded.raw, pulled_at = excluded.pulled_at "
        "WHERE responses.raw IS NOT excluded.raw OR responses.key IS NOT excluded.key",
        (
            vendor,
            r["response_id"],
            key,
            r.get("email"),
            r.get("campaign"),
            r.get("language"),
            r.get("surveyed_at"),
            r.get("answered_at"),
            raw,
            now,
        ),
    ).rowcount
    db.conn.execute(  # what the vendor no longer has (cleared, or re-created under new ids)
        "DELETE FROM answers WHERE vendor = ? AND response_id = ? "
        f"AND answer_id NOT IN ({', '.join('?' * len(ids))})",
        (vendor, r["response_id"], *ids),
    )
    answers = db.table("answers")
    for a in r.get("answers") or []:  # cleaned: the flags are 0, 1 or None already
        answers.upsert(
            {
                "vendor": vendor,
                "answer_id": a["answer_id"],
                "response_id": r["response_id"],
                "question_id": a.get("question_id"),
                "question_text": a.get("question_text"),
                "sort_order": a.get("sort_order"),
                "score": a.get("score"),
                "text": a.get("text"),
                "boolean": a.get("boolean"),
                "options": _json(a.get("options")),
                "is_nps": a.get("is_nps"),
                "is_ces": a.get("is_ces"),
                "is_csat": a.get("is_csat"),
                "is_score": a.get("is_score"),
                "paths": _json(a.get("paths")),
            },
            pk=("vendor", "answer_id"),
        )
    return stored > 0


def save_nps(db: Database, vendor: str, r: dict[str, Any], now: str) -> bool:
    """An NPS figure of a filter and period (replaced); new when its score or shares are
    (a re-read one comes with a new computation time of its own: that is no news)."""
    record = {
        "vendor": vendor,
        "filter": r.get("filter") or "[]",
        "period_start": r["period_start"],
        "period_end": r["period_end"],
        "nps": r.get("nps"),
        "detractors": r.get("detractors"),
        "passives": r.get("passives"),
        "promoters": r.get("promoters"),
        "vendor_id": r.get("vendor_id"),
        "computed_at": r.get("computed_at"),
        "pulled_at": now,
    }
    figures = ("nps", "detractors", "passives", "promoters")
    before = db.conn.execute(
        f"SELECT {', '.join(figures)} FROM nps "
        "WHERE vendor = ? AND filter = ? AND period_start = ? AND period_end = ?",
        (vendor, record["filter"], record["period_start"], record["period_end"]),
    ).fetchone()
    db.table("nps").upsert(record, pk=("vendor", "filter", "period_start", "period_end"))
    return before is None or tuple(before) != tuple(record[f] for f in figures)


def reach(email: str | None, phone: str | None) -> tuple[str | None, str | None]:
    """A pulled email and phone as the contacts' are stored, which is how the diff's
    suppression compares them: the email trimmed and lower-cased, the phone E.164 when it
    reads as an international number (a national one is kept as it came: its country is
    the CRM's `phone_region`, not known here). Stored only lower-cased, `" Ann@x.com"`
    matched no contact, and an opt-out pulled before its contact was exported never held
    that contact back."""
    email = normalise_email(email or "") or None
    phone = (phone or "").strip() or None
    return email, (normalise_phone(phone, None) or phone) if phone else None


def save_unsubscribe(db: Database, vendor: str, r: dict[str, Any], now: str) -> bool:
    """An unsubscribe; a later pull only fills in the key and the time, never clears them."""
    email, phone = reach(r.get("email"), r.get("phone"))
    key = match_key(db.conn, vendor, r.get("external_key"), email, phone)
    return (
        db.conn.execute(
            "INSERT INTO unsubscribes (vendor, vendor_id, key, email, phone, channel, at, pulled_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vendor, vendor_id) DO UPDATE SET "
            "key = coalesce(excluded.key, unsubscribes.key), "
            "at = coalesce(excluded.at, unsubscribes.at) "  # a pull that does not know keeps it
            "WHERE unsubscribes.key IS NOT coalesce(excluded.key, unsubscribes.key) "
            "OR unsubscribes.at IS NOT coalesce(excluded.at, unsubscribes.at)",
            (
                vendor,
                r["vendor_id"],
                key,
                email,
                phone,
                r.get("channel"),
                r.get("at") or None,  # NULL: the vendor did not say when
                now,
            ),
        ).rowcount
        > 0
    )


def save_cursor(db: Database, vendor: str, stream: str, cursor: str | None, now: str) -> None:
    """Where the stream goes on from (its `run_id` is left as it is)."""
    db.table("cursors").upsert(
        {"vendor": vendor, "stream": stream, "cursor": cursor, "updated_at": now},
        pk=("vendor", "stream"),
    )


SAVERS: dict[str, Callable[[Database, str, dict[str, Any], str], bool]] = {
    "responses": save_response,
    "nps": save_nps,
    "unsubscribes": save_unsubscribe,
}
