"""Every analyst view against an oracle: plain Python that computes, from the base tables,
the rows the view's documentation (`syncd/analyst.py`, the README's "For analysts")
promises.

Hypothesis builds small random stores by inserting rows directly into a store made by
`Store.open` (its migrations, so its views): several vendors, contacts gone and back and
keys no contact has, deliveries in every status, equal timestamps and month and week
edges, responses before, after and without a matching survey, unmatched responses,
answers without their response, NPS rows with zeros and NULLs, untimed opt-outs, and NULL
wherever a column allows one. Times come in the UTC forms syncd and its vendors write
(`+00:00` from syncd's own clock; `Z`, milliseconds, `+00:00` from the vendors); the
oracle compares them as instants, the views as text, which is what the README promises
is the same thing.

Each view is compared whole, and `contact_status` also under the filters analysts use
(they are pushed into its arms, so each arm is checked on its own).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.analyst import EXAMPLES, RELATIONS
from syncd.state import Store

VENDORS = ("hellocustomer", "esputnik", "signalvine", "altcraft")
KEYS = ("k0", "k1", "k2", "k3", "k4")  # k4 often has no contact
STATUSES = ("pending", "in_flight", "sent", "failed", "unknown", "dead", "skipped", "superseded")
OPEN = ("pending", "in_flight", "failed", "unknown", "dead")
# instants on the edges that matter: a year, a week (2026-01-05 is a Monday), a month; the
# same instant several times over, so that ties are common
INSTANTS = tuple(
    datetime(*t, tzinfo=UTC)
    for t in (
        (2025, 12, 31, 23, 59, 59),
        (2026, 1, 1, 0, 0, 0),
        (2026, 1, 4, 23, 59, 59),
        (2026, 1, 5, 0, 0, 0),
        (2026, 1, 31, 23, 59, 59),
        (2026, 2, 1, 0, 0, 0),
        (2026, 2, 1, 0, 0, 0),
        (2026, 2, 14, 12, 0, 0),
    )
)
REASONS = (
    None,
    "unsubscribed at hellocustomer (email) on 2026-01-02T10:00:00Z",
    "unsubscribed at signalvine (sms) (date unknown)",
    "surveyed by altcraft in this run: within min_days_between_surveys = 30",
    "surveyed by hellocustomer 2026-01-05T00:00:00+00:00: within min_days_between_surveys = 7",
    "the vendor already has this data",
    "a newer delivery replaces it",
    "invalid email",
    "unsubscribed",  # not a skip's reason as syncd writes it: as recorded
)


def syncd_time(t: datetime) -> str:
    """As syncd's own clock writes a time (`syncd.state.iso`)."""
    return t.isoformat(timespec="seconds")


def vendor_time(t: datetime, form: int) -> str:
    """As a vendor sends a UTC time: `Z`, with milliseconds, or `+00:00`."""
    if form == 0:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if form == 1:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.isoformat()


# answer times a vendor sent that the pull does not read as ISO 8601, and so keeps as they
# came (`syncd.pull._when`): a .NET date, a European one, seconds since 1970
NOT_TIMES = ("/Date(1769903999000)/", "31/01/2026 23:30", "1769903999")


def instant(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def readable(text: str | None) -> bool:
    return text is not None and text not in NOT_TIMES


def month(text: str) -> str:
    return instant(text).astimezone(UTC).strftime("%Y-%m")


# --- the random store --------------------------------------------------------------------

instants = st.sampled_from(INSTANTS)
# a vendor's time: an instant, maybe a few milliseconds or a second off it, in any form
vendor_times = st.builds(
    lambda t, ms, form: vendor_time(t + timedelta(milliseconds=ms), form),
    instants,
    st.sampled_from((0, 0, 0, 1, 500, -1, 1000, -1000)),
    st.integers(0, 2),
)
syncd_times = instants.map(syncd_time)


@dataclass
class Data:
    contacts: list[tuple[Any, ...]]
    deliveries: list[tuple[Any, ...]]
    vendor_state: list[tuple[Any, ...]]
    responses: list[tuple[Any, ...]]
    answers: list[tuple[Any, ...]]
    nps: list[tuple[Any, ...]]
    unsubscribes: list[tuple[Any, ...]]
    cursors: list[tuple[Any, ...]]


@st.composite
def stores(draw: st.DrawFn) -> Data:
    contacts: list[tuple[Any, ...]] = []
    for key in KEYS:
        if draw(st.integers(0, 4)) == 0 or (key == "k4" and draw(st.booleans())):
            continue  # a key no contact has (deliveries and responses may still name it)
        gone = draw(st.none() | syncd_times)  # gone, or present (again)
        city = draw(st.sampled_from(("Gent", "Liège", None)))
        contacts.append(
            (
                key,
                json.dumps({"Record ID": key, "City": city}),
                draw(st.none() | st.just(f"{key}@example.com")),
                draw(syncd_times),
                draw(syncd_times),
                gone,
            )
        )
    deliveries: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 30))):
        status = draw(st.sampled_from(STATUSES))
        sent_at = (
            draw(st.none() | syncd_times, label="sent_at")
            if status == "sent" and draw(st.integers(0, 9)) == 0
            else draw(syncd_times)
            if status == "sent"
            else draw(st.none() | syncd_times)
            if draw(st.integers(0, 9)) == 0
            else None
        )
        deliveries.append(
            (
                draw(st.sampled_from(VENDORS)),
                draw(st.sampled_from(KEYS)),
                draw(st.sampled_from(("new", "changed"))),
                status,
                draw(st.integers(0, 3)),
                draw(st.sampled_from(REASONS)),
                draw(st.none() | st.sampled_from(("ref-1", "ref-2"))),
                draw(syncd_times),
                draw(syncd_times),
                sent_at,
            )
        )
    pairs = draw(st.sets(st.tuples(st.sampled_from(VENDORS), st.sampled_from(KEYS)), max_size=8))
    vendor_state = [
        (v, k, draw(st.integers(0, 3)), draw(st.none() | st.just(f"ref-{k}")), draw(syncd_times))
        for v, k in sorted(pairs)
    ]
    responses: list[tuple[Any, ...]] = []
    for i in range(draw(st.integers(0, 10))):
        responses.append(
            (
                draw(st.sampled_from(("hellocustomer", "hellocustomer", "esputnik"))),
                f"r{i}",
                draw(st.none() | st.sampled_from((*KEYS, "nobody"))),
                draw(st.none() | st.just(f"r{i}@example.com")),
                draw(st.none() | vendor_times),  # surveyed_at
                draw(st.none() | vendor_times | st.sampled_from(NOT_TIMES), label="answered_at")
                if draw(st.integers(0, 5)) == 0
                else draw(vendor_times),
                draw(syncd_times),
            )
        )
    answers: list[tuple[Any, ...]] = []
    for i in range(draw(st.integers(0, 20))):
        if responses and draw(st.integers(0, 9)) > 0:
            vendor, response_id = draw(st.sampled_from([(r[0], r[1]) for r in responses]))
        else:  # an answer whose response is not stored
            vendor, response_id = draw(st.sampled_from(VENDORS)), "orphan"
        answers.append(
            (
                vendor,
                f"a{i}",
                response_id,
                draw(st.sampled_from(("q-nps", "q-ces", "q-text", None))),
                draw(st.none() | st.just(f"question {i}")),
                draw(st.none() | st.integers(0, 5)),
                # a score on the NPS scale, or one a vendor sends off it
                draw(
                    st.none()
                    | st.integers(0, 10).map(float)
                    | st.sampled_from((-1.0, 6.5, 7.5, 8.5, 9.5, 11.0, 100.0))
                ),
                draw(st.none() | st.just("fine")),
                draw(st.sampled_from((None, 0, 1))),
                draw(st.none() | st.just('["a"]')),
                draw(st.sampled_from((None, 0, 1, 1))),  # is_nps
                draw(st.sampled_from((None, 0, 1))),
                draw(st.sampled_from((None, 0, 1))),
                draw(st.sampled_from((None, 0, 1))),
                draw(st.none() | st.just('["Service"]')),
            )
        )
    figures = st.sampled_from((None, 0.0, 0.0, 25.0, 50.0, 100.0))
    periods = draw(
        st.sets(
            st.tuples(
                st.sampled_from(VENDORS[:2]),
                st.sampled_from(("[]", '[{"Segment": "A"}]')),
                st.sampled_from(("2026-01-01", "2026-02-01", "2026-03-01")),
                st.sampled_from(("2026-01-31", "2026-02-28", "2026-03-31")),
            ),
            max_size=6,
        )
    )
    nps = [
        (
            *p,
            draw(st.sampled_from((None, 0.0, 0.0, -20.0, 35.0, 100.0))),
            draw(figures),
            draw(figures),
            draw(figures),
            draw(syncd_times),
        )
        for p in sorted(periods)
    ]
    unsubscribes = [
        (
            draw(st.sampled_from(VENDORS)),
            f"u{i}",
            draw(st.none() | st.sampled_from(KEYS)),
            draw(st.sampled_from(("email", "sms", None))),
            draw(st.none() | vendor_times),
            draw(syncd_times),
        )
        for i in range(draw(st.integers(0, 10)))
    ]
    streams = draw(
        st.sets(
            st.tuples(
                st.sampled_from(VENDORS), st.sampled_from(("responses", "nps", "unsubscribes"))
            ),
            max_size=6,
        )
    )
    cursors = [(v, s, draw(st.none() | st.just("c")), draw(syncd_times)) for v, s in streams]
    return Data(contacts, deliveries, vendor_state, responses, answers, nps, unsubscribes, cursors)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A store as `Store.open` makes it, empty: each example starts from a copy."""
    path = tmp_path_factory.mktemp("views") / "template.db"
    Store.open(path).close()
    yield path


def load(template: Path, d: Data) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    src = sqlite3.connect(template)
    try:
        src.backup(conn)
    finally:
        src.close()
    conn.executescript(
        "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', '2026-01-01', 'ok')"
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO contacts (key, attributes, email, rhash, first_seen, updated_at, gone_at) "
        "VALUES (?, ?, ?, 0, ?, ?, ?)",
        d.contacts,
    )
    conn.executemany(
        "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, attempts, "
        "reason, vendor_ref, created_at, updated_at, sent_at) "
        "VALUES (1, ?, ?, ?, ?, 7, '{}', ?, ?, ?, ?, ?, ?)",
        d.deliveries,
    )
    conn.executemany(
        "INSERT INTO vendor_state (vendor, key, hash, ref, acked_at) VALUES (?, ?, ?, ?, ?)",
        d.vendor_state,
    )
    conn.executemany(
        "INSERT INTO responses (vendor, response_id, key, email, surveyed_at, answered_at, "
        "pulled_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        d.responses,
    )
    conn.executemany(f"INSERT INTO answers VALUES ({', '.join('?' * 15)})", d.answers)
    conn.executemany(
        "INSERT INTO nps (vendor, filter, period_start, period_end, nps, promoters, passives, "
        "detractors, pulled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        d.nps,
    )
    conn.executemany(
        "INSERT INTO unsubscribes (vendor, vendor_id, key, channel, at, pulled_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        d.unsubscribes,
    )
    conn.executemany(
        "INSERT INTO cursors (vendor, stream, cursor, updated_at) VALUES (?, ?, ?, ?)", d.cursors
    )
    conn.execute("COMMIT")
    return conn


def rows(conn: sqlite3.Connection, sql: str, *params: object) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, params)]


def bag(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return sorted(items, key=repr)


def rounded(value: object, exact: Fraction) -> bool:
    """`value` is `exact` rounded to 0.1 (either way at a half: the docs do not say)."""
    return (
        isinstance(value, float)
        and abs(Fraction(value) - exact) <= Fraction(1, 20) + Fraction(1, 10**9)
        and abs(value * 10 - round(value * 10)) < 1e-6
    )


# --- the oracles ------------------------------------------------------------------------


def contact_status(d: Data) -> list[tuple[Any, ...]]:
    """Each contact's latest delivery (highest id) per vendor, with what the vendor
    acknowledged; one row per contact and vendor it has a delivery to."""
    contacts = {c[0]: c for c in d.contacts}
    acked = {(v[0], v[1]): v for v in d.vendor_state}
    latest: dict[tuple[str, str], tuple[Any, ...]] = {}
    for row in d.deliveries:  # in id order: the last one wins
        latest[(row[1], row[0])] = row
    out = []
    for (key, vendor), row in latest.items():
        if key not in contacts:
            continue
        vs = acked.get((vendor, key))
        status, attempts, reason, updated_at = row[3], row[4], row[5], row[8]
        out.append(
            (
                key,
                vendor,
                status,
                reason,
                attempts,
                updated_at,
                vs[4] if vs else None,
                vs[3] if vs else None,
                contacts[key][5],
            )
        )
    return out


def delivery_backlog(d: Data) -> list[tuple[Any, ...]]:
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in d.deliveries:
        if row[3] in OPEN:
            groups[(row[0], row[3])].append(row[7])
    return [(v, s, len(created), min(created)) for (v, s), created in groups.items()]


def answers_with_contact(d: Data) -> list[tuple[Any, ...]]:
    responses = {(r[0], r[1]): r for r in d.responses}
    contacts = {c[0]: c for c in d.contacts}
    out = []
    for a in d.answers:
        r = responses.get((a[0], a[2]))
        if r is None:
            continue  # "with its response": an answer without one has nothing to join
        c = contacts.get(r[2]) if r[2] is not None else None
        out.append((a[0], a[2], r[2], r[3], r[5], *a[3:13], a[14], c[1] if c else None))
    return out


def nps_over_time(d: Data) -> list[tuple[Any, ...]]:
    """In time order per vendor and filter; a period where the vendor reports 0 for the
    NPS and every share (or nothing at all) is NULL throughout."""
    out = []
    for vendor, flt, start, end, nps, promoters, passives, detractors, _ in sorted(
        d.nps, key=lambda n: (n[0], n[1], n[2])
    ):
        figures = (nps, promoters, passives, detractors)
        if all(f in (None, 0) for f in figures):
            figures = (None, None, None, None)
        out.append((vendor, flt, start, end, *figures))
    return out


def nps_from_answers(d: Data) -> list[tuple[Any, ...]]:
    responses = {(r[0], r[1]): r for r in d.responses}
    groups: dict[tuple[str, str | None], list[float]] = defaultdict(list)
    for a in d.answers:
        r = responses.get((a[0], a[2]))
        if r is None or not a[10] or a[6] not in range(11):
            continue  # no response, not the NPS question, or no score on the NPS scale
        groups[(a[0], month(r[5]) if readable(r[5]) else None)].append(a[6])
    out = []
    for (vendor, m), scores in groups.items():
        promoters = sum(9 <= s <= 10 for s in scores)
        passives = sum(7 <= s <= 8 for s in scores)
        detractors = sum(0 <= s <= 6 for s in scores)
        exact = Fraction(100 * (promoters - detractors), len(scores))
        out.append((vendor, m, len(scores), exact, promoters, passives, detractors))
    return out


def response_rate(d: Data) -> list[tuple[Any, ...]]:
    """Per vendor whose responses are pulled and month of `sent_at`: the contacts with a
    survey acknowledged that month, and of those the ones whose matched response answers
    (is the latest survey acknowledged at or before) a survey of that month."""
    pulled = {c[0] for c in d.cursors if c[1] == "responses"}
    surveys: dict[tuple[str, str], list[datetime]] = defaultdict(list)
    sent: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in d.deliveries:
        vendor, key, status, sent_at = row[0], row[1], row[3], row[9]
        if status == "sent" and vendor in pulled and sent_at is not None:
            surveys[(vendor, key)].append(instant(sent_at))
            sent[(vendor, month(sent_at))].add(key)
    responded: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in d.responses:
        vendor, key, answered_at = r[0], r[2], r[5]
        if vendor not in pulled or key is None or not readable(answered_at):
            continue
        before = [t for t in surveys[(vendor, key)] if t <= instant(answered_at)]
        if before:
            responded[(vendor, max(before).strftime("%Y-%m"))].add(key)
    return [
        (v, m, len(keys), len(responded[(v, m)]), Fraction(100 * len(responded[(v, m)]), len(keys)))
        for (v, m), keys in sorted(sent.items())
    ]


def unsubscribes_per_week(d: Data) -> list[tuple[Any, ...]]:
    counts: dict[tuple[str | None, str, str | None], int] = defaultdict(int)
    for vendor, _id, _key, channel, at, _pulled in d.unsubscribes:
        week = instant(at).astimezone(UTC).strftime("%Y-W%W") if at else None
        counts[(week, vendor, channel)] += 1
    return [(*k, n) for k, n in counts.items()]


def skipped_reasons(d: Data) -> list[tuple[Any, ...]]:
    counts: dict[tuple[str, str, str | None], int] = defaultdict(int)
    for row in d.deliveries:
        vendor, status, reason = row[0], row[3], row[5]
        if status not in ("skipped", "superseded"):
            continue
        if reason is not None and reason.startswith("unsubscribed at "):
            reason = "unsubscribed"
        elif reason is not None and reason.startswith("surveyed by "):
            reason = "min_days_between_surveys"
        counts[(vendor, status, reason)] += 1
    return [(*k, n) for k, n in counts.items()]


# --- the properties ---------------------------------------------------------------------

# more for a hunt: SYNCD_ORACLE_EXAMPLES=2000 pytest -n0 tests/test_views_oracle.py
SETTINGS = settings(
    max_examples=int(os.environ.get("SYNCD_ORACLE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_every_view_has_an_oracle_here() -> None:
    views = {r.name for r in RELATIONS if r.view}
    assert views == {
        "contact_status",
        "delivery_backlog",
        "answers_with_contact",
        "nps_over_time",
        "nps_from_answers",
        "response_rate",
        "unsubscribes_per_week",
        "skipped_reasons",
    }, "a view was added or renamed: give it an oracle here"


@SETTINGS
@given(d=stores())
def test_contact_status(template: Path, d: Data) -> None:
    conn = load(template, d)
    expected = contact_status(d)
    assert bag(rows(conn, "SELECT * FROM contact_status")) == bag(expected)
    for key in (*KEYS, "nobody"):
        got = rows(conn, "SELECT * FROM contact_status WHERE key = ?", key)
        assert bag(got) == bag([r for r in expected if r[0] == key])
    for vendor in VENDORS:
        got = rows(conn, "SELECT * FROM contact_status WHERE vendor = ?", vendor)
        assert bag(got) == bag([r for r in expected if r[1] == vendor])
    for status in STATUSES:
        got = rows(conn, "SELECT * FROM contact_status WHERE status = ?", status)
        assert bag(got) == bag([r for r in expected if r[2] == status])
    got = rows(conn, "SELECT * FROM contact_status WHERE gone_at IS NULL")
    assert bag(got) == bag([r for r in expected if r[8] is None])
    for vendor in VENDORS:
        for status in STATUSES:
            got = rows(
                conn, "SELECT * FROM contact_status WHERE vendor = ? AND status = ?", vendor, status
            )
            assert bag(got) == bag([r for r in expected if r[1:3] == (vendor, status)])


@SETTINGS
@given(d=stores())
def test_delivery_backlog(template: Path, d: Data) -> None:
    conn = load(template, d)
    assert bag(rows(conn, "SELECT * FROM delivery_backlog")) == bag(delivery_backlog(d))


@SETTINGS
@given(d=stores())
def test_answers_with_contact(template: Path, d: Data) -> None:
    conn = load(template, d)
    expected = answers_with_contact(d)
    assert bag(rows(conn, "SELECT * FROM answers_with_contact")) == bag(expected)
    for key in (*KEYS, "nobody"):
        got = rows(conn, "SELECT * FROM answers_with_contact WHERE key = ?", key)
        assert bag(got) == bag([r for r in expected if r[2] == key])
    for response_id in ("r0", "r1", "orphan"):
        got = rows(conn, "SELECT * FROM answers_with_contact WHERE response_id = ?", response_id)
        assert bag(got) == bag([r for r in expected if r[1] == response_id])
    got = rows(conn, "SELECT * FROM answers_with_contact WHERE is_nps")
    assert bag(got) == bag([r for r in expected if r[12]])


@SETTINGS
@given(d=stores())
def test_nps_over_time(template: Path, d: Data) -> None:
    conn = load(template, d)
    got = rows(conn, "SELECT * FROM nps_over_time")
    expected = nps_over_time(d)
    assert bag(got) == bag(expected)
    assert [r[:3] for r in got] == [r[:3] for r in expected]  # in time order


@SETTINGS
@given(d=stores())
def test_nps_from_answers(template: Path, d: Data) -> None:
    conn = load(template, d)
    got = {(r[0], r[1]): r for r in rows(conn, "SELECT * FROM nps_from_answers")}
    expected = {(r[0], r[1]): r for r in nps_from_answers(d)}
    assert set(got) == set(expected)
    for group, want in expected.items():
        have = got[group]
        assert have[2] == want[2] and have[4:] == want[4:], (have, want)
        assert rounded(have[3], want[3]), (have, want)


@SETTINGS
@given(d=stores())
def test_response_rate(template: Path, d: Data) -> None:
    conn = load(template, d)
    got = {(r[0], r[1]): r for r in rows(conn, "SELECT * FROM response_rate")}
    expected = {(r[0], r[1]): r for r in response_rate(d)}
    assert set(got) == set(expected)
    for group, want in expected.items():
        have = got[group]
        assert have[2:4] == want[2:4], (have, want)
        assert rounded(have[4], want[4]), (have, want)


@SETTINGS
@given(d=stores())
def test_unsubscribes_per_week(template: Path, d: Data) -> None:
    conn = load(template, d)
    got = rows(conn, "SELECT * FROM unsubscribes_per_week")
    assert bag(got) == bag(unsubscribes_per_week(d))


@SETTINGS
@given(d=stores())
def test_skipped_reasons(template: Path, d: Data) -> None:
    conn = load(template, d)
    assert bag(rows(conn, "SELECT * FROM skipped_reasons")) == bag(skipped_reasons(d))


def read(conn: sqlite3.Connection) -> Data:
    """A store's base tables as the oracles take them."""

    def q(sql: str) -> list[tuple[Any, ...]]:
        return rows(conn, sql)

    return Data(
        q("SELECT key, attributes, email, first_seen, updated_at, gone_at FROM contacts"),
        q(
            "SELECT vendor, key, kind, status, attempts, reason, vendor_ref, created_at, "
            "updated_at, sent_at FROM deliveries ORDER BY id"
        ),
        q("SELECT vendor, key, hash, ref, acked_at FROM vendor_state"),
        q(
            "SELECT vendor, response_id, key, email, surveyed_at, answered_at, pulled_at "
            "FROM responses"
        ),
        q("SELECT * FROM answers"),
        q(
            "SELECT vendor, filter, period_start, period_end, nps, promoters, passives, "
            "detractors, pulled_at FROM nps"
        ),
        q("SELECT vendor, vendor_id, key, channel, at, pulled_at FROM unsubscribes"),
        q("SELECT vendor, stream, cursor, updated_at FROM cursors"),
    )


@pytest.mark.slow
def test_every_view_on_the_demo_store(tmp_path: Path) -> None:
    """The store a real cycle against the simulators leaves (syncs, an edit, a pull): its
    times in the forms the connectors really store (ties to the second between a survey and
    its answer included), every view as its oracle says. 11 s: run with -m slow."""
    from syncd.demo import run_demo

    assert run_demo(tmp_path, 30, echo=lambda _: None) == 0
    conn = sqlite3.connect(next(tmp_path.rglob("*.db")))
    try:
        d = read(conn)
        assert d.responses and d.answers and d.unsubscribes and d.nps
        for name, oracle in (
            ("contact_status", contact_status),
            ("delivery_backlog", delivery_backlog),
            ("answers_with_contact", answers_with_contact),
            ("nps_over_time", nps_over_time),
            ("unsubscribes_per_week", unsubscribes_per_week),
            ("skipped_reasons", skipped_reasons),
        ):
            assert bag(rows(conn, f"SELECT * FROM {name}")) == bag(oracle(d)), name
        for name, oracle, figure in (
            ("nps_from_answers", nps_from_answers, 3),
            ("response_rate", response_rate, 4),
        ):
            got = {(r[0], r[1]): r for r in rows(conn, f"SELECT * FROM {name}")}
            expected = {(r[0], r[1]): r for r in oracle(d)}
            assert got and set(got) == set(expected), name
            for group, want in expected.items():
                have = got[group]
                assert have[:figure] + have[figure + 1 :] == want[:figure] + want[figure + 1 :]
                assert rounded(have[figure], want[figure]), (name, have, want)
    finally:
        conn.close()


# --- the disagreements found, each as the smallest store that shows it -------------------


def test_nps_over_time_keeps_an_nps_reported_without_shares(tmp_path: Path) -> None:
    """Only a period the vendor reports 0 (or nothing) for, NPS and shares alike, has no
    respondents: an NPS that came without its shares is the vendor's NPS (m010 made it
    NULL, as it looked at the shares alone)."""
    store = Store.open(tmp_path / "s.db")
    try:
        with store.write() as c:
            c.executemany(
                "INSERT INTO nps (vendor, filter, period_start, period_end, nps, promoters, "
                "passives, detractors, pulled_at) VALUES ('hellocustomer', '[]', ?, ?, ?, ?, ?, ?, "
                "'2026-03-01T00:00:00+00:00')",
                [
                    ("2026-01-01", "2026-01-31", -20.0, None, None, None),  # no shares said
                    ("2026-02-01", "2026-02-28", 0.0, 0.0, 0.0, 0.0),  # nobody answered
                    ("2026-03-01", "2026-03-31", 0.0, None, None, None),  # nothing but a 0
                ],
            )
        got = [tuple(r) for r in store.query("SELECT period_start, nps FROM nps_over_time")]
        assert got == [("2026-01-01", -20.0), ("2026-02-01", None), ("2026-03-01", None)]
    finally:
        store.close()


def test_response_rate_lists_no_month_for_a_survey_without_sent_at(tmp_path: Path) -> None:
    """A `sent` delivery without `sent_at` (the column allows it; syncd's own push always
    sets it) was acknowledged in no month: m010 listed it as a month of NULL at 0%."""
    store = Store.open(tmp_path / "s.db")
    try:
        with store.write() as c:
            c.execute(
                "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', "
                "'2026-01-01T00:00:00+00:00', 'ok')"
            )
            c.executemany(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at, sent_at) VALUES (1, 'hellocustomer', ?, 'new', 'sent', "
                "7, '{}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', ?)",
                [("a", None), ("b", "2026-01-02T00:00:00+00:00")],
            )
            c.execute(
                "INSERT INTO cursors (vendor, stream, cursor, updated_at) "
                "VALUES ('hellocustomer', 'responses', 'x', '2026-01-03T00:00:00+00:00')"
            )
        got = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert got == [("hellocustomer", "2026-01", 1, 0, 0.0)]
    finally:
        store.close()


def test_nps_from_answers_and_nps_by_city_count_the_nps_scale_only_as_pulled(
    tmp_path: Path,
) -> None:
    """What Hello Customer sends goes through the real pull: NPS answers of 0, 6, 7, 8, 9
    and 10, and of 8.5, 11 and -1 (off the scale), one answered at a time the pull keeps as
    it came (not ISO 8601), one at 00:30 on the 1st in Brussels (the month before, in UTC).
    Only the scale counts, so promoters, passives and detractors add up to the answers, and
    the month of the unreadable one is NULL: m010 counted 8.5 as an answer of no kind and
    11 as a promoter, and cut `/Date(1769...` to the month `/Date(1`."""
    from syncd.clock import FakeClock
    from syncd.pull import pull
    from syncd.sandbox.base import Server
    from tests.test_pull_adversary import HostileHC, hc_config

    clock = FakeClock(datetime(2026, 3, 10, 12, tzinfo=UTC))
    sim = HostileHC(clock=clock.monotonic, now=clock.now)
    scores = (0, 6, 7, 8, 9, 10, 8.5, 11, -1, 10)
    when = datetime(2026, 2, 1, tzinfo=UTC)
    ids = sim.add_responses(len(scores), when, when + timedelta(days=20))
    for response_id, score in zip(ids, scores, strict=True):
        sim.edit_response(response_id, score=score)  # type: ignore[arg-type]
    late = ids[-1]  # the last 10, answered at a time the pull cannot read
    early = ids[0]  # the 0, answered in January (UTC)

    def dotnet_date(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            if item["uniqueID"] == late:
                item["dateAnswer"] = "/Date(1771545600000)/"
            if item["uniqueID"] == early:
                item["dateAnswer"] = "2026-02-01T00:30:00+01:00"
        return items

    sim.answers_rewrite = dotnet_date
    with Server(sim) as server:
        cfg = hc_config(tmp_path, server.url, '["responses"]')
        store = Store.open(cfg.store.path)
        try:
            assert pull(cfg, store, clock, since=date(2026, 1, 25)).exit_code == 0
            assert store.scalar(
                "SELECT answered_at FROM responses WHERE response_id = ?", (late,)
            ) == ("/Date(1771545600000)/")
            got = [tuple(r) for r in store.query("SELECT * FROM nps_from_answers ORDER BY 2")]
            # the late 10 in a month of NULL; the 0 in January; 6 | 7 8 | 9 10 in February
            assert got == [
                ("hellocustomer", None, 1, 100.0, 1, 0, 0),
                ("hellocustomer", "2026-01", 1, -100.0, 0, 0, 1),
                ("hellocustomer", "2026-02", 5, 20.0, 2, 2, 1),
            ]
            example = next(e for e in EXAMPLES if e.name == "nps_by_city")
            # the seeded respondents are no contacts: one city, NULL, of seven answers
            assert [tuple(r) for r in store.query(example.sql)] == [(None, 7, 14.3)]
        finally:
            store.close()


def test_response_rate_credits_no_survey_with_an_answer_time_that_is_no_time(
    tmp_path: Path,
) -> None:
    """A response whose `answered_at` the pull kept as the vendor sent it (not ISO 8601)
    was answered at no time syncd knows, so it answers no survey: m010 compared its text
    with `sent_at`, and `31/01/2026 23:30` sorts after every survey there is."""
    store = Store.open(tmp_path / "s.db")
    try:
        with store.write() as c:
            c.execute(
                "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', "
                "'2026-01-01T00:00:00+00:00', 'ok')"
            )
            c.executemany(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at, sent_at) VALUES (1, 'hellocustomer', ?, 'new', 'sent', "
                "7, '{}', ?, ?, ?)",
                [
                    (k, t, t, t)
                    for k, t in (
                        ("a", "2026-01-05T10:00:00+00:00"),
                        ("b", "2026-01-06T10:00:00+00:00"),
                    )
                ],
            )
            c.executemany(
                "INSERT INTO responses (vendor, response_id, key, answered_at, pulled_at) "
                "VALUES ('hellocustomer', ?, ?, ?, '2026-02-01T00:00:00+00:00')",
                [
                    ("r1", "a", "2026-01-10T00:00:00+00:00"),  # answers a's survey
                    ("r2", "b", "31/01/2026 23:30"),  # answered at no time syncd can read
                ],
            )
            c.execute(
                "INSERT INTO cursors (vendor, stream, cursor, updated_at) "
                "VALUES ('hellocustomer', 'responses', 'x', '2026-02-01T00:00:00+00:00')"
            )
        got = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert got == [("hellocustomer", "2026-01", 2, 1, 50.0)]
    finally:
        store.close()


def test_unsubscribed_contacts_lists_whom_the_suppression_holds_back_by_email(
    tmp_path: Path,
) -> None:
    """An opt-out pulled before its contact was in an export names no contact (the pull
    matches keys as it stores them), yet the suppression holds that contact back by its
    email or phone, and any other contact with that email or phone too: the example lists
    them all, each once. It joined on `unsubscribes.key` alone, so it listed neither."""
    from syncd.state import pulled

    store = Store.open(tmp_path / "s.db")
    t = "2026-01-01T00:00:00+00:00"
    try:
        with store.write() as c:  # pulled through the saver, while no contact has the emails
            for vendor_id, email in (("u1", "Early@Example.com"), ("u2", "b@example.com")):
                row = {"vendor_id": vendor_id, "email": email, "channel": "email", "at": t}
                pulled.save_unsubscribe(store.db, "esputnik", row, t)
            sms = {"vendor_id": "u3", "phone": "+32470000009", "channel": "sms", "at": t}
            pulled.save_unsubscribe(store.db, "signalvine", sms, t)
            c.executemany(
                "INSERT INTO contacts (key, attributes, email, phone, rhash, first_seen, "
                "updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)",
                [
                    (k, json.dumps({"Segment": s}), e, p, t, t)
                    for k, s, e, p in (
                        ("a", "Retail", "early@example.com", None),
                        ("a2", "SMB", "early@example.com", None),  # shares a's email
                        ("b", "Public", "b@example.com", "+32470000009"),  # and p's phone
                        ("p", "SMB", None, "+32470000009"),
                        ("z", "Retail", "z@example.com", None),  # never unsubscribed
                    )
                ],
            )
            # u2 matched later (a re-read within the lookback): it names b
            pulled.save_unsubscribe(
                store.db, "esputnik", {"vendor_id": "u2", "email": "b@example.com"}, t
            )
        assert store.scalar("SELECT key FROM unsubscribes WHERE vendor_id = 'u1'") is None
        reach = {k: (e, p) for k, e, p in store.query("SELECT key, email, phone FROM contacts")}
        held = store.suppressions(["any"], reach)
        example = next(e for e in EXAMPLES if e.name == "unsubscribed_contacts")
        got = sorted((r["vendor"], r["key"]) for r in store.query(example.sql))
        assert got == [
            ("esputnik", "a"),
            ("esputnik", "a2"),
            ("esputnik", "b"),
            ("signalvine", "b"),
            ("signalvine", "p"),
        ]
        assert set(held) == {key for _, key in got}
    finally:
        store.close()


def test_response_rate_after_retry_unknown_counts_the_resend_and_no_earlier_answer(
    tmp_path: Path,
) -> None:
    """As documented: a survey whose outcome was unknown, answered before `syncd retry
    --unknown` re-sent it, is counted in the month of the re-send (its `sent_at`), and the
    answer, given before any survey was acknowledged, answers none; a later answer answers
    the re-send. Through the store's own writes: settle, requeue, settle."""
    store = Store.open(tmp_path / "s.db")
    t0 = datetime(2026, 1, 31, 22, tzinfo=UTC)
    try:
        run = store.start_run("reconcile", t0)
        with store.write() as c:
            c.execute(
                "INSERT INTO contacts (key, attributes, rhash, first_seen, updated_at) "
                "VALUES ('a', '{}', 0, ?, ?)",
                (syncd_time(t0), syncd_time(t0)),
            )
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at) VALUES (?, 'hellocustomer', 'a', 'new', 'in_flight', 7, "
                "'{}', ?, ?)",
                (run, syncd_time(t0), syncd_time(t0)),
            )
            c.execute(
                "INSERT INTO cursors (vendor, stream, cursor, updated_at) "
                "VALUES ('hellocustomer', 'responses', 'x', ?)",
                (syncd_time(t0),),
            )
        did = store.scalar("SELECT id FROM deliveries")
        store.settle("hellocustomer", [(did, "a", "unknown", "timed out", None)], t0, 3)
        with store.write() as c:  # the invitation did go out: answered that night
            c.execute(
                "INSERT INTO responses (vendor, response_id, key, answered_at, pulled_at) "
                "VALUES ('hellocustomer', 'r1', 'a', '2026-01-31T23:00:00+00:00', ?)",
                (syncd_time(t0),),
            )
        resent = datetime(2026, 2, 2, 9, tzinfo=UTC)
        assert store.requeue(["unknown"], "hellocustomer", resent) == 1
        store.settle("hellocustomer", [(did, "a", "sent", None, "ref")], resent, 3)
        got = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert got == [("hellocustomer", "2026-02", 1, 0, 0.0)]
        with store.write() as c:  # answered again, to the re-sent invitation
            c.execute(
                "INSERT INTO responses (vendor, response_id, key, answered_at, pulled_at) "
                "VALUES ('hellocustomer', 'r2', 'a', '2026-02-03T08:00:00+00:00', ?)",
                (syncd_time(resent),),
            )
        got = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert got == [("hellocustomer", "2026-02", 1, 1, 100.0)]
    finally:
        store.close()


# --- found here, in the pull's matching and the suppression


def test_response_rate_credits_the_surveyed_one_of_two_contacts_sharing_an_email(
    tmp_path: Path,
) -> None:
    """A response without the vendor's copy of our key (Hello Customer's `custom_UniqueID`
    is empty in its own document's example) is matched by email; two contacts sharing one
    (a couple, a shop's address) leave the pull to pick one: the one the vendor was sent
    the survey for, not the first by rowid."""
    from syncd.state import pulled

    store = Store.open(tmp_path / "s.db")
    t = "2026-01-01T00:00:00+00:00"
    try:
        with store.write() as c:
            c.execute(
                "INSERT INTO runs (id, kind, started_at, status) VALUES (1, 'reconcile', ?, 'ok')",
                (t,),
            )
            c.executemany(
                "INSERT INTO contacts (key, attributes, email, rhash, first_seen, updated_at) "
                "VALUES (?, '{}', 'shared@example.com', 0, ?, ?)",
                [("d", t, t), ("c", t, t)],
            )
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at, sent_at) VALUES (1, 'hellocustomer', 'c', 'new', "
                "'sent', 7, '{}', ?, ?, '2026-01-05T00:00:00+00:00')",
                (t, t),
            )
            c.execute(
                "INSERT INTO cursors (vendor, stream, cursor, updated_at) "
                "VALUES ('hellocustomer', 'responses', 'x', ?)",
                (t,),
            )
            response = {
                "response_id": "r1",
                "email": "shared@example.com",
                "answered_at": "2026-01-06T00:00:00+00:00",
            }
            pulled.save_response(store.db, "hellocustomer", response, t)
        got = [tuple(r) for r in store.query("SELECT * FROM response_rate")]
        assert got == [("hellocustomer", "2026-01", 1, 1, 100.0)]
    finally:
        store.close()


def test_the_suppression_holds_back_every_contact_with_an_unsubscribed_email(
    tmp_path: Path,
) -> None:
    """What the `unsubscribed_contacts` example lists, the suppression holds back: every
    contact sharing an unsubscribed email (a household), or phone, not one of them."""
    from syncd.state import pulled

    store = Store.open(tmp_path / "s.db")
    t = "2026-01-01T00:00:00+00:00"
    try:
        with store.write():  # pulled before either contact was in an export: no key
            row = {"vendor_id": "u1", "email": "shared@example.com", "channel": "email", "at": t}
            pulled.save_unsubscribe(store.db, "esputnik", row, t)
            row = {"vendor_id": "u2", "phone": "+32470000001", "channel": "sms", "at": t}
            pulled.save_unsubscribe(store.db, "signalvine", row, t)
        reach = {"a": ("shared@example.com", None), "b": ("shared@example.com", None)}
        assert set(store.suppressions(["email"], reach)) == {"a", "b"}
        reach = {"c": (None, "+32470000001"), "d": ("d@example.com", "+32470000001")}
        assert set(store.suppressions(["any"], reach)) == {"c", "d"}
    finally:
        store.close()
