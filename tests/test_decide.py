"""The diff's rule book (`syncd.decide.decide`): a table with a row for every action, and
properties that hold for any facts. No store, no export: the facts are given."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.decide import REPLACEABLE, SURVEYS, Act, Decision, Facts, decide

NEW = Facts(digest="d2", acked=None)
CHANGED = Facts(digest="d2", acked="d1")
SAME = Facts(digest="d1", acked="d1")
TRIGGER = {"trigger": True}

# (why, facts, the decision)
TABLE: list[tuple[str, Facts, Decision]] = [
    ("a new contact is sent", NEW, Decision(Act.SEND, "new", "new")),
    ("a changed one too", CHANGED, Decision(Act.SEND, "changed", "changed")),
    ("the vendor has this data", SAME, Decision(Act.NOTHING, "unchanged")),
    (
        "... and a pending survey is no longer wanted",
        replace(SAME, open_status="pending", open_digest="d3", **TRIGGER),
        Decision(Act.WITHDRAW, "unchanged"),
    ),
    (
        "... a pending upsert of other data may have reached it: this data replaces it",
        replace(SAME, open_status="pending", open_digest="d3"),
        Decision(Act.REPLACE, "unchanged", "changed"),
    ),
    (
        "... a dead one too, or `syncd retry --dead` would send the other data",
        replace(SAME, open_status="dead", open_digest="d3"),
        Decision(Act.REPLACE, "unchanged", "changed"),
    ),
    (
        "... an open upsert of this very data is left to send it",
        replace(SAME, open_status="pending", open_digest="d1"),
        Decision(Act.NOTHING, "unchanged"),
    ),
    (
        "... but a newer upsert is in flight: the acknowledged data is queued after it",
        replace(SAME, open_status="in_flight", open_digest="d3"),
        Decision(Act.RESEND, "unchanged", "changed"),
    ),
    (
        "... a trigger in flight is left alone: a survey is not un-sent",
        replace(SAME, open_status="in_flight", open_digest="d3", **TRIGGER),
        Decision(Act.NOTHING, "unchanged"),
    ),
    (
        "an unknown outcome of the same data is not a reason to send again",
        replace(SAME, open_status="unknown", open_digest="d1"),
        Decision(Act.NOTHING, "unchanged"),
    ),
    (
        "a trigger vendor spared this very data for min_days is not sent it later",
        replace(NEW, spared=True, **TRIGGER),
        Decision(Act.NOTHING, "unchanged"),
    ),
    ("--baseline acknowledges", replace(NEW, baseline=True), Decision(Act.ACK, "baseline", "new")),
    (
        "--baseline wins over everything that would send",
        replace(CHANGED, baseline=True, suppressed="x", open_status="pending", **TRIGGER),
        Decision(Act.ACK, "baseline", "changed"),
    ),
    (
        "on_new = false: a contact new to a trigger vendor is acknowledged, not surveyed",
        replace(NEW, on_new=False, **TRIGGER),
        Decision(Act.ACK, "not_triggered", "new"),
    ),
    (
        "on_new means nothing to an upsert vendor",
        replace(NEW, on_new=False),
        Decision(Act.SEND, "new", "new"),
    ),
    (
        "a changed definition with the watched columns as they were: re-baselined",
        replace(CHANGED, rebaseline=True, **TRIGGER),
        Decision(Act.REBASELINE, "rebaselined", "changed"),
    ),
    (
        "a re-baseline concerns changed contacts only: a new one is surveyed",
        replace(NEW, rebaseline=True, **TRIGGER),
        Decision(Act.SEND, "new", "new"),
    ),
    (
        "an open delivery carries this data already",
        replace(CHANGED, open_status="pending", open_digest="d2"),
        Decision(Act.ALREADY, "already_pending", "changed"),
    ),
    (
        "... whatever its status",
        replace(CHANGED, open_status="unknown", open_digest="d2", **TRIGGER),
        Decision(Act.ALREADY, "already_unknown", "changed"),
    ),
    (
        "unsubscribed: a survey is skipped",
        replace(NEW, suppressed="unsubscribed at x", **TRIGGER),
        Decision(Act.SKIP, "skipped", "new", "unsubscribed at x"),
    ),
    (
        "unsubscribed: an upsert is sent unless [suppression] upserts",
        replace(NEW, suppressed="unsubscribed at x"),
        Decision(Act.SEND, "new", "new"),
    ),
    (
        "... and skipped with it",
        replace(NEW, suppressed="unsubscribed at x", suppress_upserts=True),
        Decision(Act.SKIP, "skipped", "new", "unsubscribed at x"),
    ),
    (
        "surveyed lately: skipped",
        replace(CHANGED, too_soon="surveyed by y", **TRIGGER),
        Decision(Act.SKIP, "skipped", "changed", "surveyed by y"),
    ),
    (
        "a survey's spacing means nothing to an upsert vendor",
        replace(CHANGED, too_soon="surveyed by y"),
        Decision(Act.SEND, "changed", "changed"),
    ),
    (
        "the opt-out is named before the spacing",
        replace(CHANGED, suppressed="unsubscribed", too_soon="surveyed", **TRIGGER),
        Decision(Act.SKIP, "skipped", "changed", "unsubscribed"),
    ),
    *(
        (
            f"an open {status} delivery of older data gets this data instead",
            replace(CHANGED, open_status=status, open_digest="d0"),
            Decision(Act.REPLACE, "changed", "changed"),
        )
        for status in REPLACEABLE
    ),
    (
        "an older upsert in flight: a new delivery, sent after it",
        replace(CHANGED, open_status="in_flight", open_digest="d0"),
        Decision(Act.SEND, "changed", "changed"),
    ),
    (
        "an older survey with an unknown outcome: the change is a new survey",
        replace(CHANGED, open_status="unknown", open_digest="d0", **TRIGGER),
        Decision(Act.SEND, "changed", "changed"),
    ),
]


@pytest.mark.parametrize(("facts", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_the_table(facts: Facts, expected: Decision) -> None:
    assert decide(facts) == expected


def test_the_table_has_a_row_for_every_action() -> None:
    assert {row[2].act for row in TABLE} == set(Act)


DIGESTS = st.sampled_from(["d0", "d1", "d2"])
FACTS = st.builds(
    Facts,
    digest=DIGESTS,
    acked=st.one_of(st.none(), DIGESTS),
    open_status=st.sampled_from([None, "pending", "in_flight", "failed", "unknown", "dead"]),
    open_digest=DIGESTS,
    trigger=st.booleans(),
    on_new=st.booleans(),
    baseline=st.booleans(),
    rebaseline=st.booleans(),
    suppressed=st.sampled_from([None, "unsubscribed"]),
    suppress_upserts=st.booleans(),
    too_soon=st.sampled_from([None, "surveyed lately"]),
)
SENDS = (*SURVEYS, Act.RESEND)


@given(FACTS)
def test_what_holds_for_any_facts(f: Facts) -> None:
    d = decide(f)
    if f.acked == f.digest:  # the vendor has it: nothing new goes
        assert d.act not in (Act.SEND, Act.SKIP, Act.ACK, Act.REBASELINE)
        assert d.count == "unchanged"
        if d.act in (Act.REPLACE, Act.RESEND):  # only over other data that may be there
            assert not f.trigger and f.open_digest != f.digest
    else:
        assert d.kind == ("new" if f.acked is None else "changed")
    if f.baseline and f.acked != f.digest:
        assert d.act is Act.ACK
    if f.trigger:
        assert d.act is not Act.RESEND  # a survey is never repeated on our own
        if f.suppressed or f.too_soon:
            assert d.act not in SENDS
    if d.act is Act.REPLACE:
        assert f.open_status in REPLACEABLE
    if d.act is Act.SEND and f.open_status is not None:
        assert f.open_status not in REPLACEABLE  # one open delivery at most to be sent
    if d.act is Act.ALREADY:
        assert f.open_digest == f.digest
    if d.act is Act.SKIP:
        assert d.reason in (f.suppressed, f.too_soon)
    assert (d.reason is not None) == (d.act is Act.SKIP)
