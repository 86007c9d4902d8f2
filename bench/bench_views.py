"""Benchmark the analysts' views: run by hand, never by the test suite.

    python bench/bench_views.py                    # 1,000,000 contacts (builds in minutes)
    python bench/bench_views.py --contacts 50000   # smaller
    python bench/bench_views.py --rebuild          # build the store again

It builds a store of N contacts and a year of their history in `bench/data/` (once: it
is kept for the next run), through `Store.open` and so the store's own migrations, with
SQL inserts generated inside SQLite: contacts with CRM attributes; deliveries to the five
vendors (two upserts on first sight and on changes, survey and campaign triggers on first
sight and some months later), mostly sent, some skipped, superseded, failed, dead or
unknown, a few still open; what each vendor acknowledged; Hello Customer responses to a
fifth of its surveys with four answers each (an NPS among them); the vendor's monthly NPS
per filter, with a month without answers; unsubscribes; runs and quarantined rows.

Then, on a read-only connection as an analyst would open it (no ANALYZE: the daemon never
runs it), it times every documented view (`SELECT * FROM view` fully consumed, and its
first 1000 rows as Datasette's canned query shows them), every example query, and what
an analyst opens the two row-per-contact views with (Datasette's first page, one contact
or response, a vendor and status filter: fully consumed and its first 1000 rows), and
prints a table: the best of `--repeat` runs, with the page cache warm; a query still
running after `--limit` seconds is cut and shown as such.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

START = "2025-12-01"  # the year of history: day 0 is START, day 364 the last
DAYS = 365
CITIES = (
    '["Brussels","Antwerpen","Gent","Liège","Leuven","Namur","Brugge","Mons","Hasselt","Aalst"]'
)
SEGMENTS = '["Retail","SMB","Enterprise","Partner","Public"]'
FIRST = '["Ann","Bart","Chloé","Dirk","Els","Frédéric","Greet","Hans","Inès","Jan","Katrien","Luc"]'
LAST = '["Peeters","Janssens","Maes","Jacobs","Mertens","Willems","Claes","Goossens","Dubois","Lambert"]'

# (vendor, sequence number, chance in 1000, days after first sight): the first delivery
# of each vendor on first sight, later ones on changes (upserts) or re-surveys (triggers)
PLAN = [
    *[
        (v, s, 1000 if s == 0 else 350, s * 95)
        for v in ("esputnik", "signalvine")
        for s in range(4)
    ],
    *[("hellocustomer", s, 900 if s == 0 else 350, s * 100) for s in range(4)],
    *[("dropthought", s, 600 if s == 0 else 300, s * 120) for s in range(2)],
    *[("altcraft", s, 700 if s == 0 else 300, s * 110) for s in range(3)],
]
TRIGGERS = ("hellocustomer", "dropthought", "altcraft")


def rand(n: int) -> str:
    """SQL for a random integer in [0, n)."""
    return f"(abs(random()) % {n})"


def pick(array: str) -> str:
    """SQL for a random element of a JSON array literal, skewed towards its start."""
    n = array.count(",") + 1
    return f"json_extract('{array}', '$[' || min({rand(n)}, {rand(n)}) || ']')"


def build(path: Path, n: int) -> None:
    """Write a store of `n` contacts and a year of their history to `path`."""
    from syncd.state import Store

    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store.open(path)
    c = store.conn
    c.execute("PRAGMA cache_size = -500000")  # 500 MB: the indexes are built in key order

    def step(what: str, sql: str, params: tuple[object, ...] = ()) -> None:
        started = time.perf_counter()
        with store.write():
            c.execute(sql, params)
            count = c.execute("SELECT changes()").fetchone()[0]
        print(f"  {what}: {count:,} rows in {time.perf_counter() - started:.1f} s", flush=True)

    print(f"building {path} ({n:,} contacts)", flush=True)
    step(
        "runs",
        f"""WITH RECURSIVE d(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM d WHERE i < {DAYS - 1})
        INSERT INTO runs (id, kind, started_at, finished_at, status, exit_code, rows_read,
                          quarantined, counts, message, seconds)
        SELECT i + 1, 'reconcile', datetime('{START}', '+' || i || ' days', '+2 hours'),
               datetime('{START}', '+' || i || ' days', '+2 hours', '+95 seconds'),
               'ok', 0, {n}, 5, '{{}}', 'reconciled', 95.0
        FROM d""",
    )
    step(
        "pull runs",
        f"""WITH RECURSIVE h(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM h WHERE i < {DAYS * 48 - 1})
        INSERT INTO runs (kind, started_at, finished_at, status, exit_code, counts, message, seconds)
        SELECT 'pull', datetime('{START}', '+' || (i * 30) || ' minutes'),
               datetime('{START}', '+' || (i * 30) || ' minutes', '+4 seconds'),
               'ok', 0, '{{}}', 'pulled', 4.0
        FROM h""",
    )
    # a contact's first day: 60% came with the first export, the others over the year
    step(
        "contacts",
        f"""WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {n}),
        x AS MATERIALIZED (
            SELECT i, printf('%08d', i) AS key, printf('user%08d@example.com', i) AS email,
                   CASE WHEN {rand(10)} < 6 THEN 0 ELSE {rand(DAYS)} END AS day,
                   {rand(1000)} AS fate
            FROM k)
        INSERT INTO contacts (key, attributes, email, phone, rhash, first_seen, updated_at, gone_at)
        SELECT key,
               json_object('Record ID', key, 'First Name', {pick(FIRST)},
                           'Last Name', {pick(LAST)}, 'Email', email,
                           'Phone', printf('+32 470 %02d %02d %02d', i % 97, i % 89, i % 83),
                           'City', {pick(CITIES)}, 'Segment', {pick(SEGMENTS)},
                           'Store', {pick(CITIES)}, 'Language', 'NL',
                           'Closed Date', date('{START}', '+' || {rand(DAYS)} || ' days'),
                           'Last Activity Date', '2026-11-30 09:00'),
               email, printf('+3247%07d', i), random(),
               datetime('{START}', '+' || day || ' days', '+2 hours'),
               datetime('{START}', '+' || (day + {rand(DAYS)} / 2) || ' days', '+2 hours'),
               CASE WHEN fate < 20 THEN datetime('{START}', '+364 days', '+2 hours') END
        FROM x""",
    )
    c.execute(
        "CREATE TEMP TABLE plan (vendor TEXT, seq INTEGER, chance INTEGER, after INTEGER, "
        "trigger INTEGER)"
    )
    c.executemany(
        "INSERT INTO plan VALUES (?, ?, ?, ?, ?)",
        [(v, s, p, a, v in TRIGGERS) for v, s, p, a in PLAN],
    )
    # in the order the nightly runs wrote them: by day, then key
    step(
        "deliveries",
        f"""WITH x AS MATERIALIZED (
            SELECT c.key, c.email, p.vendor, p.seq, p.trigger,
                   CAST(julianday(c.first_seen) - julianday('{START}') AS INTEGER) + p.after
                       + CASE WHEN p.seq THEN {rand(30)} ELSE 0 END AS day,
                   {rand(1000)} AS fate,
                   json_extract(c.attributes, '$."First Name"') AS first,
                   json_extract(c.attributes, '$."Store"') AS store
            FROM contacts c JOIN plan p
            WHERE {rand(1000)} < p.chance),
        y AS MATERIALIZED (
            SELECT *, datetime('{START}', '+' || day || ' days', '+2 hours') AS at,
                   CASE WHEN day >= {DAYS - 2} THEN CASE WHEN fate < 900 THEN 'pending'
                                                         ELSE 'in_flight' END
                        WHEN fate < 930 THEN 'sent'
                        WHEN fate < 960 THEN CASE WHEN trigger THEN 'skipped' ELSE 'sent' END
                        WHEN fate < 980 THEN 'superseded'
                        WHEN fate < 988 THEN 'failed'
                        WHEN fate < 992 THEN 'dead'
                        WHEN fate < 996 AND trigger THEN 'unknown'
                        ELSE 'sent' END AS status
            FROM x WHERE day < {DAYS})
        INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, attempts,
                                reason, vendor_ref, created_at, updated_at, sent_at)
        SELECT day + 1, vendor, key, CASE WHEN seq THEN 'changed' ELSE 'new' END, status,
               printf('%016x', random()),
               json_object('fields', json_object('email', email, 'firstName', first,
                                                 'externalCustomerId', key),
                           'metadata', json_object('Store', store)),
               CASE WHEN status IN ('pending', 'skipped', 'superseded') THEN 0
                    WHEN status = 'dead' THEN 5 WHEN status = 'failed' THEN 1 + {rand(4)}
                    ELSE 1 END,
               CASE status WHEN 'skipped' THEN CASE WHEN fate % 2
                                THEN 'unsubscribed at ' || vendor
                                ELSE 'surveyed by ' || vendor || ' on ' || date(at, '-12 days') END
                           WHEN 'failed' THEN 'invalid email address'
                           WHEN 'dead' THEN 'invalid email address' END,
               CASE WHEN status = 'sent' THEN printf('%s-%s', vendor, key) END,
               at, datetime(at, '+3 minutes'),
               CASE WHEN status = 'sent' THEN datetime(at, '+' || {rand(3600)} || ' seconds') END
        FROM y ORDER BY day, key""",
    )
    step(
        "vendor_state",
        """INSERT INTO vendor_state (vendor, key, hash, ref, acked_at)
        SELECT vendor, key, max(hash), max(vendor_ref), max(sent_at)
        FROM deliveries WHERE status = 'sent' GROUP BY vendor, key""",
    )
    # a fifth of the sent surveys answered within a week; 3% of them not matched to a key
    step(
        "responses",
        f"""WITH x AS MATERIALIZED (
            SELECT id, key, sent_at, {rand(7 * 86400)} AS delay, {rand(100)} AS fate
            FROM deliveries WHERE vendor = 'hellocustomer' AND status = 'sent')
        INSERT INTO responses (vendor, response_id, key, email, campaign, language, surveyed_at,
                               answered_at, raw, pulled_at)
        SELECT 'hellocustomer', printf('r%09d', id), CASE WHEN fate >= 3 THEN key END,
               printf('user%s@example.com', key), 'c8dc5f94-a9e8-4743-8744-e66a73a7e724', 'NL',
               sent_at, datetime(sent_at, '+' || delay || ' seconds'),
               json_object('uniqueID', printf('r%09d', id), 'custom_UniqueID', key,
                           'respondent_Email', printf('user%s@example.com', key),
                           'touchPoint', 'After sale', 'keyValues', json_object('Store', 'Gent'),
                           'date', datetime(sent_at, '+' || delay || ' seconds')),
               datetime(sent_at, '+' || (delay + 1800) || ' seconds')
        FROM x WHERE fate < 20 ORDER BY sent_at""",
    )
    step(
        "answers",
        f"""WITH q(n, id, text) AS (VALUES
            (1, 'q-nps', 'How likely are you to recommend us to a friend?'),
            (2, 'q-ces', 'How easy was it to get what you needed?'),
            (3, 'q-why', 'What is the main reason for your score?'),
            (4, 'q-topics', 'What did you like?'))
        INSERT INTO answers (vendor, answer_id, response_id, question_id, question_text,
                             sort_order, score, text, boolean, options, is_nps, is_ces,
                             is_csat, is_score, paths)
        SELECT r.vendor, r.response_id || '-' || q.n, r.response_id, q.id, q.text, q.n,
               CASE q.n WHEN 1 THEN max(0, 10 - {rand(5)} * {rand(4)}) WHEN 2 THEN 1 + {rand(7)} END,
               CASE WHEN q.n = 3 AND {rand(2)} THEN 'Friendly staff, but the delivery was late.' END,
               NULL, CASE WHEN q.n = 4 THEN '["Price","Staff"]' END,
               q.n = 1, q.n = 2, 0, q.n <= 2,
               CASE WHEN q.n = 3 THEN '["Service/Staff"]' END
        FROM responses r JOIN q""",
    )
    # Hello Customer's monthly NPS, all respondents and per store; the month before the
    # first survey had no answers (the vendor says 0 for it), the last is to date
    step(
        "nps",
        f"""WITH RECURSIVE m(i) AS (SELECT -1 UNION ALL SELECT i + 1 FROM m WHERE i < 11),
        f(filter) AS (VALUES ('[]'), ('[{{"filterValues":["Gent"],"key":"Store"}}]'),
                             ('[{{"filterValues":["Brussels"],"key":"Store"}}]'))
        INSERT INTO nps (vendor, filter, period_start, period_end, nps, detractors, passives,
                         promoters, vendor_id, computed_at, pulled_at)
        SELECT 'hellocustomer', filter, date('{START}', printf('%+d months', i)),
               date('{START}', printf('%+d months', i + 1), '-1 day'),
               CASE WHEN i < 0 THEN 0 ELSE 20 + {rand(30)} END,
               CASE WHEN i < 0 THEN 0 ELSE 15.5 END, CASE WHEN i < 0 THEN 0 ELSE 34.5 END,
               CASE WHEN i < 0 THEN 0 ELSE 50.0 END, printf('nps-%d-%s', i, filter),
               date('{START}', printf('%+d months', i + 1)),
               date('{START}', printf('%+d months', i + 1))
        FROM m JOIN f""",
    )
    step(
        "unsubscribes",
        f"""INSERT INTO unsubscribes (vendor, vendor_id, key, email, phone, channel, at, pulled_at)
        SELECT v, 'u-' || key, key, email, phone, CASE v WHEN 'signalvine' THEN 'sms' ELSE 'email' END,
               at, datetime(at, '+30 minutes')
        FROM (SELECT key, email, phone,
                     json_extract('["hellocustomer","esputnik","signalvine"]', '$[' || {rand(3)} || ']') AS v,
                     datetime(first_seen, '+' || ({rand(DAYS * 86400)} / 2) || ' seconds') AS at
              FROM contacts WHERE {rand(100)} < 3)""",
    )
    step(
        "quarantine",
        f"""INSERT INTO quarantine (run_id, file, line, key, vendor, reason, created_at)
        SELECT 1 + {rand(DAYS)}, 'exports/contacts.csv', 2 + {rand(n)},
               CASE WHEN {rand(4)} THEN printf('%08d', 1 + {rand(n)}) END, NULL,
               'invalid email address in column Email', datetime('{START}', '+200 days')
        FROM contacts WHERE {rand(1000)} < 5""",
    )
    with store.write():
        c.executemany(
            "INSERT INTO cursors (vendor, stream, cursor, updated_at) VALUES (?, ?, ?, ?)",
            [
                ("hellocustomer", "responses", "2026-11-30T23:59:59Z", "2026-11-30T23:59:59"),
                ("hellocustomer", "nps", "2026-11-01", "2026-11-30T23:59:59"),
                ("hellocustomer", "unsubscribes", "2026-11-30T23:59:59Z", "2026-11-30T23:59:59"),
                ("esputnik", "unsubscribes", "2026-11-30T23:00:00", "2026-11-30T23:59:59"),
                ("signalvine", "unsubscribes", "2026-11-30T23:00:00", "2026-11-30T23:59:59"),
            ],
        )
    store.close()
    print(f"  {path.stat().st_size / 2**30:.2f} GiB", flush=True)


def timed(conn: sqlite3.Connection, sql: str, repeat: int, limit: float) -> tuple[str, str]:
    """(rows, best seconds) of running `sql` and fetching every row, as text; a query
    still running after `limit` seconds is interrupted (and not repeated)."""
    best, rows, deadline = float("inf"), 0, 0.0

    def late() -> bool:
        return time.perf_counter() > deadline

    for _ in range(repeat):
        started = time.perf_counter()
        deadline = started + limit
        conn.set_progress_handler(late, 100_000)
        try:
            cur = conn.execute(sql)
            rows = 0
            while batch := cur.fetchmany(10_000):
                rows += len(batch)
        except sqlite3.OperationalError as exc:
            if "interrupted" not in str(exc):
                raise
            return "?", f"> {limit:g}"
        finally:
            conn.set_progress_handler(None, 0)
        best = min(best, time.perf_counter() - started)
    return f"{rows:,}", f"{best:.2f}"


def measure(path: Path, repeat: int, limit: float) -> None:
    """Time every documented view and example query on the store at `path`; print a table."""
    from syncd.analyst import EXAMPLES, RELATIONS
    from syncd.state import Store

    started = time.perf_counter()
    Store.open(path).close()  # apply this version's migrations
    print(f"migrations: {time.perf_counter() - started:.1f} s\n")
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    counts = {
        t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
        for t in ("contacts", "deliveries", "vendor_state", "responses", "answers", "unsubscribes")
    }
    print(", ".join(f"{t} {n:,}" for t, n in counts.items()) + "\n")
    print("| query | rows | all rows (s) | first 1000 (s) |\n|---|---:|---:|---:|")
    for r in RELATIONS:
        if r.view:
            rows, seconds = timed(conn, f"SELECT * FROM {r.name}", repeat, limit)
            _, first = timed(conn, f"SELECT * FROM {r.name} LIMIT 1000", repeat, limit)
            print(f"| `{r.name}` | {rows} | {seconds} | {first} |", flush=True)
    for e in EXAMPLES:
        rows, seconds = timed(conn, e.sql, repeat, limit)
        print(f"| example `{e.name}` | {rows} | {seconds} | |", flush=True)
    for what, sql in lookups(conn):
        rows, seconds = timed(conn, sql, repeat, limit)
        first = "" if " LIMIT " in sql else timed(conn, f"{sql} LIMIT 1000", repeat, limit)[1]
        print(f"| {what} | {rows} | {seconds} | {first} |", flush=True)
    conn.close()


def lookups(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """What an analyst opens a row-per-contact view with, beyond its first page: one
    contact or response (values from the middle of the store), a vendor and status filter
    (a common one, a rare one, the largest) as Datasette's column filters write it, and
    Datasette's first page (100 rows and one to know there are more)."""

    def middle(sql: str) -> str:
        n = conn.execute(f"SELECT count(*) FROM ({sql})").fetchone()[0]
        value = conn.execute(f"{sql} LIMIT 1 OFFSET ?", (n // 2,)).fetchone()[0]
        return "'" + str(value).replace("'", "''") + "'"

    key = middle("SELECT key FROM vendor_state WHERE vendor = 'hellocustomer'")
    answered = middle("SELECT key FROM responses WHERE key IS NOT NULL")
    response = middle("SELECT response_id FROM responses")
    out = [
        ("`contact_status` Datasette page", "SELECT * FROM contact_status LIMIT 101"),
        ("`contact_status` WHERE key = ?", f"SELECT * FROM contact_status WHERE key = {key}"),
    ]
    for vendor, status in (
        ("hellocustomer", "failed"),
        ("altcraft", "in_flight"),
        ("esputnik", "sent"),
    ):
        out.append(
            (
                f"`contact_status` WHERE vendor = '{vendor}' AND status = '{status}'",
                f"SELECT * FROM contact_status WHERE vendor = '{vendor}' AND status = '{status}'",
            )
        )
    out += [
        ("`answers_with_contact` Datasette page", "SELECT * FROM answers_with_contact LIMIT 101"),
        (
            "`answers_with_contact` WHERE key = ?",
            f"SELECT * FROM answers_with_contact WHERE key = {answered}",
        ),
        (
            "`answers_with_contact` WHERE response_id = ?",
            f"SELECT * FROM answers_with_contact WHERE response_id = {response}",
        ),
    ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--data", default=str(HERE / "data"), help="where the store goes")
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--repeat", type=int, default=2, help="runs per query (the best counts)")
    parser.add_argument("--limit", type=float, default=60, help="seconds before a query is cut")
    args = parser.parse_args()
    path = Path(args.data) / f"views-{args.contacts}.db"
    if args.rebuild or not path.exists():
        build(path, args.contacts)
    measure(path, args.repeat, args.limit)


if __name__ == "__main__":
    main()
