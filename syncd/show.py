"""`syncd show KEY|EMAIL`: everything the store holds about one contact, as data (--json)
or text.

The JSON shape is documented in the README ("syncd show --json") and checked against
`syncd/show.schema.json` by the tests. The store is only read: never created or migrated.
"""

from __future__ import annotations

import json
from typing import Any

from syncd.config import Config
from syncd.errors import SyncdError
from syncd.log import printable
from syncd.project import normalise_email
from syncd.state import Store

# how many of the contacts sharing an email the error lists
AMBIGUOUS_SHOWN = 10
DELIVERY_COLUMNS = (
    "id, run_id, kind, status, attempts, reason, vendor_ref, job, created_at, updated_at, sent_at"
)
ANSWER_FLAGS = ("boolean", "is_nps", "is_ces", "is_csat", "is_score")


def _vendors(table: str) -> str:
    """`v`, the vendors `table` holds, one probe each of its index that leads with vendor:
    a table keyed (vendor, key, ...) is then searched for one contact by `vendor IN (SELECT
    vendor FROM v) AND key = ?`, where `key = ?` alone reads every row of every vendor."""
    return f"""
    WITH RECURSIVE v(vendor) AS (
        SELECT min(vendor) FROM {table}
        UNION ALL
        SELECT (SELECT min(vendor) FROM {table} WHERE vendor > v.vendor)
        FROM v WHERE v.vendor IS NOT NULL)"""


# one contact's acknowledgements: vendor_state's key is (vendor, key)
STATES = f"""{_vendors("vendor_state")}
    SELECT * FROM vendor_state WHERE vendor IN (SELECT vendor FROM v) AND key = ?"""
# one contact's responses, through responses_key (vendor, key, answered_at); a response
# pulled before the contact was known has no key: its email still ties it
# (responses_unmatched_email)
RESPONSES = f"""{_vendors("responses")}
    SELECT vendor, response_id, campaign, language, surveyed_at, answered_at FROM responses
    WHERE vendor IN (SELECT vendor FROM v) AND key = ? OR (key IS NULL AND email = ?)
    ORDER BY answered_at, response_id"""


def collect(cfg: Config, who: str) -> dict[str, Any]:
    """The contact `who` (its CRM key, or an email only one contact has) as a JSON-ready dict."""
    store = Store.read(cfg.store.path)
    try:
        return _collect(store, resolve(store, who), list(cfg.vendors))
    finally:
        store.close()


def resolve(store: Store, who: str) -> str:
    """The CRM key `who` names: a key the store has seen (as a contact or a quarantined
    row), else the one contact with that email; a SyncdError (exit 2) otherwise."""
    if store.scalar("SELECT 1 FROM contacts WHERE key = ?", (who,)) or store.scalar(
        "SELECT 1 FROM quarantine WHERE key = ? LIMIT 1", (who,)
    ):
        return who
    if "@" in who:
        keys = [
            r["key"]
            for r in store.query(
                "SELECT key FROM contacts WHERE email = ? ORDER BY key", (normalise_email(who),)
            )
        ]
        if len(keys) == 1:
            return str(keys[0])
        if keys:
            shown = ", ".join(keys[:AMBIGUOUS_SHOWN])
            more = f" and {len(keys) - AMBIGUOUS_SHOWN} more" if len(keys) > AMBIGUOUS_SHOWN else ""
            raise SyncdError(
                f"{who} is the email of {len(keys)} contacts: {shown}{more}",
                hint=f"pass the key instead, e.g. `syncd show {keys[0]}`",
            )
    raise SyncdError(
        f"no contact {who!r} in the store {store.path}",
        hint="pass the CRM key (the [source] key column) or the contact's email",
    )


def _collect(store: Store, key: str, configured: list[str]) -> dict[str, Any]:
    row = store.query("SELECT * FROM contacts WHERE key = ?", (key,))
    contact = None
    if row:
        c = row[0]
        contact = {
            "attributes": json.loads(c["attributes"]),
            "email": c["email"],
            "phone": c["phone"],
            "first_seen": c["first_seen"],
            "updated_at": c["updated_at"],
            "gone_at": c["gone_at"],
            "gone": c["gone_at"] is not None,
        }
    states = {
        r["vendor"]: {"hash": r["hash"], "ref": r["ref"], "acked_at": r["acked_at"]}
        for r in store.query(STATES, (key,))
    }
    history: dict[str, list[dict[str, Any]]] = {}
    for r in store.query(
        f"SELECT vendor, {DELIVERY_COLUMNS} FROM deliveries WHERE key = ? ORDER BY id", (key,)
    ):
        d = dict(r)
        history.setdefault(d.pop("vendor"), []).append(d)
    # configured vendors first, in config order, then any the store still remembers
    names = configured + sorted((states.keys() | history.keys()) - set(configured))
    vendors = {n: {"state": states.get(n), "deliveries": history.get(n, [])} for n in names}
    # a bad row is quarantined again by every run until the CRM fixes it: each reason once,
    # as the latest run saw it, and how many runs did (the bare columns come from the
    # max(id) row: SQLite's rule for a query with one min/max aggregate)
    quarantine = [
        {k: r[k] for k in r.keys() if k != "id"}  # noqa: SIM118 (sqlite3.Row)
        for r in store.query(
            "SELECT max(id) AS id, run_id, file, line, vendor, reason, created_at, "
            "count(*) AS times FROM quarantine "
            "WHERE key = ? GROUP BY vendor, reason ORDER BY id",
            (key,),
        )
    ]
    email = contact["email"] if contact else None
    phone = contact["phone"] if contact else None
    responses = []
    for r in store.query(RESPONSES, (key, email)):
        response = dict(r)
        response["answers"] = [
            _answer(dict(a))
            for a in store.query(
                "SELECT question_id, question_text, sort_order, score, text, boolean, options, "
                "is_nps, is_ces, is_csat, is_score, paths FROM answers "
                "WHERE vendor = ? AND response_id = ? ORDER BY sort_order, answer_id",
                (r["vendor"], r["response_id"]),
            )
        ]
        responses.append(response)
    # the `nps` table holds the vendors' aggregates, tied to no contact: the contact's own
    # NPS is its answers to NPS questions
    nps = [
        {
            "vendor": r["vendor"],
            "response_id": r["response_id"],
            "answered_at": r["answered_at"],
            "score": a["score"],
        }
        for r in responses
        for a in r["answers"]
        if a["is_nps"] and a["score"] is not None
    ]
    # matched as suppression matches them: by key, email or phone
    unsubscribes = [
        dict(r)
        for r in store.query(
            "SELECT vendor, vendor_id, email, phone, channel, at FROM unsubscribes "
            "WHERE key = ? OR email = ? OR phone = ? ORDER BY at, vendor",
            (key, email, phone),
        )
    ]
    return {
        "key": key,
        "contact": contact,
        "vendors": vendors,
        "quarantine": quarantine,
        "responses": responses,
        "nps": nps,
        "unsubscribes": unsubscribes,
    }


def _answer(a: dict[str, Any]) -> dict[str, Any]:
    for name in ANSWER_FLAGS:
        a[name] = None if a[name] is None else bool(a[name])
    for name in ("options", "paths"):
        a[name] = json.loads(a[name]) if a[name] else []
    return a


def render(data: dict[str, Any]) -> str:
    c = data["contact"]
    if c is None:
        lines = [f"contact {data['key']}: never accepted from an export (see quarantine)"]
    else:
        where = f"gone since {c['gone_at']}" if c["gone"] else "in the export"
        lines = [
            f"contact {data['key']}: {where}; first seen {c['first_seen']}, "
            f"updated {c['updated_at']}",
            f"  email {c['email'] or '-'}, phone {c['phone'] or '-'}",
            "attributes:",
            *(f"  {name}: {value}" for name, value in c["attributes"].items()),
        ]
    lines.append("vendors:")
    for name, v in data["vendors"].items():
        s = v["state"]
        acked = (
            f"acknowledged {s['acked_at']}, ref {s['ref'] or '-'}, hash {s['hash']}"
            if s
            else "nothing acknowledged"
        )
        lines.append(f"  {name}: {acked}")
        for d in v["deliveries"]:
            line = (
                f"    #{d['id']} run {d['run_id']} {d['created_at']} {d['kind']}: {d['status']}, "
                f"{d['attempts']} attempt{'s' if d['attempts'] != 1 else ''}"
            )
            if d["sent_at"]:
                line += f", sent {d['sent_at']}"
            elif d["status"] != "pending":
                line += f", at {d['updated_at']}"
            if d["job"]:
                line += f", job {d['job']}"
            lines.append(line + (f" — {d['reason']}" if d["reason"] else ""))
    if data["quarantine"]:
        lines.append("quarantined rows:")
        for q in data["quarantine"]:
            vendor = f" [{q['vendor']}]" if q["vendor"] else ""
            again = f", {q['times']} runs in all" if q["times"] > 1 else ""
            lines.append(f"  line {q['line']}{vendor}: {q['reason']} (run {q['run_id']}{again})")
    for r in data["responses"]:
        lines.append(
            f"response {r['vendor']} {r['response_id']}, answered {r['answered_at'] or '-'}:"
        )
        for a in r["answers"]:
            shown = [
                str(x)
                for x in (a["score"], a["text"], a["boolean"], ", ".join(a["options"]) or None)
                if x is not None
            ]
            nps = " (NPS)" if a["is_nps"] else ""
            lines.append(f"  {a['question_text'] or a['question_id']}{nps}: {' / '.join(shown)}")
    if data["unsubscribes"]:
        lines.append("unsubscribed:")
        for u in data["unsubscribes"]:
            lines.append(
                f"  {u['vendor']} ({u['channel'] or 'any'}) at {u['at'] or 'an unknown time'}"
                f": {u['email'] or u['phone'] or u['vendor_id']}"
            )
    # the export's values, a vendor's reasons and a respondent's answers as written, each on
    # its own line: never a line break or an escape sequence of theirs (`printable`)
    return "\n".join(map(printable, lines))
