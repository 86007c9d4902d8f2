"""The pull path against a hostile vendor: each simulator's answer rewritten by the test
(fields of the wrong type, records without their id, paging that goes nowhere, empty pages
in the middle, lists in no order), and pulls killed between a page and its commit.

What must hold whatever the pages look like: every record the vendor has is stored once,
a record that cannot be stored is skipped and counted (the pull ends partial, exit 1), a
stream's cursor never moves past what was not read, and a broken answer stops its stream
with a message naming the vendor, the stream and what is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlite_utils import Database
from werkzeug.wrappers import Request, Response

from syncd.clock import FakeClock
from syncd.config import Config, load
from syncd.pull import Invalid, PullReport, clean, pull
from syncd.sandbox.base import Server, json_response
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.sandbox.signalvine import PROGRAM, SignalVineSim
from syncd.state import Store
from syncd.state.schema import migrations
from syncd.vendors import signalvine
from syncd.vendors.signalvine import SignalVine
from tests.helpers import World, esputnik_table
from tests.hostile import HostileProxy
from tests.kits.signalvine import MAPPING as SV_MAPPING
from tests.kits.signalvine import contact as sv_contact

CAMPAIGN = "c8dc5f94-a9e8-4743-8744-e66a73a7e724"
Rewrite = Callable[[Any], Any]


def rewritten(response: Response, rewrite: Rewrite | None) -> Response:
    """The simulator's JSON answer passed through `rewrite` (a 200 only)."""
    if rewrite is None or response.status_code != 200:
        return response
    return json_response(rewrite(json.loads(response.get_data())))


# --- Hello Customer ------------------------------------------------------------------------
class HostileHC(HelloCustomerSim):
    answers_rewrite: Rewrite | None = None
    unsubscribed_rewrite: Rewrite | None = None

    def answers(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        return rewritten(
            super().answers(request, culture, campaign, start, end), self.answers_rewrite
        )

    def unsubscribed(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        return rewritten(
            super().unsubscribed(request, culture, campaign, start, end), self.unsubscribed_rewrite
        )


def hc_config(folder: Path, url: str, streams: str = '["responses", "unsubscribes"]') -> Config:
    (folder / "mapping.toml").write_text(
        '[fields]\nemail = "Email"\nlanguage = "Language"\n', encoding="utf-8"
    )
    (folder / "syncd.toml").write_text(
        '[source]\npath = "contacts.csv"\nkey = "Record ID"\nsettle_seconds = 0\n'
        '[store]\npath = "syncd.db"\n[delivery]\nretries = 1\nbackoff_base = 0.01\n'
        f'[vendors.hellocustomer]\nbase_url = "{url}"\nmapping = "mapping.toml"\n'
        f'token = "sandbox-token"\ncampaign = "{CAMPAIGN}"\nstreams = {streams}\n'
        "lookback_days = 1\n",
        encoding="utf-8",
    )
    return load(folder / "syncd.toml")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def hc(clock: FakeClock) -> Iterator[tuple[HostileHC, Server]]:
    sim = HostileHC(clock=clock.monotonic, now=clock.now)
    with Server(sim) as server:
        yield sim, server


def pulled(cfg: Config, clock: FakeClock, sql: str) -> tuple[PullReport, list[Any]]:
    store = Store.open(cfg.store.path)
    try:
        report = pull(cfg, store, clock)
        return report, [tuple(r) for r in store.query(sql)]
    finally:
        store.close()


def test_hc_fields_of_any_type_skip_their_record_and_never_stop_the_pull(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """An email that is a number or an object, a `prediction` that is text, answers that
    are not a list: the records that cannot be stored are skipped and counted, the others
    stored, and the pull goes on to the next stream."""
    sim, server = hc
    now = clock.now()
    ids = sim.add_responses(4, now - timedelta(hours=3), now - timedelta(hours=2))
    sim.unsubscribe("seeded.0@example.com", now - timedelta(hours=1))
    sim.unsubscribe("seeded.1@example.com", now - timedelta(hours=1))

    def answers(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not items:
            return items
        items[0]["email"] = {"address": "seeded.0@example.com"}  # skipped
        items[1]["answerQuestions"][2]["prediction"] = "unavailable"  # stored, no paths
        items[2]["answerQuestions"] = 7  # skipped: answers is not a list
        return items

    def unsubscribed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not items:
            return items
        items[0]["email"] = ["seeded.0@example.com"]  # skipped
        return items

    sim.answers_rewrite, sim.unsubscribed_rewrite = answers, unsubscribed
    cfg = hc_config(tmp_path, server.url)
    report, rows = pulled(cfg, clock, "SELECT response_id FROM responses ORDER BY response_id")
    assert report.exit_code == 1, report.summary()
    done = report.vendors["hellocustomer"]
    assert done.errors == {} and done.read == ["responses", "unsubscribes"]
    assert dict(done.counts) == {"responses": 2, "unsubscribes": 1, "invalid": 3}
    assert rows == sorted((i,) for i in (ids[1], ids[3]))


def test_hc_values_the_store_cannot_hold_never_stop_the_pull(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """A date UTC cannot hold (9999-12-31 at -01:00), a score past SQLite's integers
    (10**19, which JSON allows and orjson reads as an int), a sort order of 1e308: each
    raised out of the pull as it was converted or stored, stopping it for every stream and
    vendor after it, at every pull (the page never committed). Now the date is kept as it
    came, and a record with a number the store cannot hold is skipped and counted."""
    sim, server = hc
    now = clock.now()
    ids = sim.add_responses(4, now - timedelta(hours=3), now - timedelta(hours=2))
    sim.unsubscribe("seeded.0@example.com", now - timedelta(hours=1))
    far = "9999-12-31T23:59:59-01:00"

    def answers(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not items:
            return items
        items[0]["dateAnswer"] = far
        items[1]["answerQuestions"][0]["answer_Value"] = 10**19  # skipped
        items[2]["answerQuestions"][1]["question_SortOrder"] = 1e308  # skipped
        return items

    sim.answers_rewrite = answers
    cfg = hc_config(tmp_path, server.url)
    report, rows = pulled(cfg, clock, "SELECT response_id, answered_at FROM responses")
    assert report.exit_code == 1, report.summary()
    done = report.vendors["hellocustomer"]
    assert done.errors == {} and done.read == ["responses", "unsubscribes"]
    assert dict(done.counts) == {"responses": 2, "unsubscribes": 1, "invalid": 2}
    assert sorted(r[0] for r in rows) == sorted([ids[0], ids[3]])
    assert (ids[0], far) in rows


class NestedHC(HostileHC):
    """Answers with `"NEST"` replaced by arrays `depth` deep, in the bytes (Python's json
    cannot write them)."""

    depth = 1000

    def answers(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        answer = super().answers(request, culture, campaign, start, end)
        nest = b"[" * self.depth + b"]" * self.depth
        answer.set_data(answer.get_data().replace(b'"NEST"', nest))
        return answer


def test_hc_an_answer_nested_a_thousand_deep_fails_its_stream_not_the_pull(
    tmp_path: Path, clock: FakeClock
) -> None:
    """`answer_Options` 1000 arrays deep: orjson reads up to 1024 levels, but the raw
    record is stored through Python's json, which raised RecursionError out of the pull,
    at every pull: no stream of any vendor after it was read. Now such an answer is
    unreadable like any that is not JSON: the stream fails saying so, its cursor kept, and
    the next stream is read."""
    sim = NestedHC(clock=clock.monotonic, now=clock.now)
    now = clock.now()
    ids = sim.add_responses(2, now - timedelta(hours=3), now - timedelta(hours=2))
    sim.unsubscribe("seeded.0@example.com", now - timedelta(hours=1))

    def answers(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if items:
            items[0]["answerQuestions"][0]["answer_Options"] = "NEST"
        return items

    sim.answers_rewrite = answers
    with Server(sim) as server:
        cfg = hc_config(tmp_path, server.url)
        report, rows = pulled(cfg, clock, "SELECT response_id FROM responses")
        assert report.exit_code == 1, report.summary()
        done = report.vendors["hellocustomer"]
        assert done.read == ["unsubscribes"] and rows == []
        assert "nested deeper than 254 levels" in done.errors["responses"]
        sim.depth = 3
        report, rows = pulled(cfg, clock, "SELECT response_id FROM responses")
    assert report.exit_code == 0, report.details()
    assert sorted(r[0] for r in rows) == sorted(ids)


# --- eSputnik ------------------------------------------------------------------------------
class HostileES(ESputnikSim):
    rewrite: Rewrite | None = None
    ignore_offset = False  # answer every offset with the first page
    calls = 0

    def activity(self, request: Request) -> Response:
        self.calls += 1
        if self.calls > 20:  # a pull that would read the same page for ever
            return Response("the test's vendor: too many calls", 400)
        if self.ignore_offset:
            query = "&".join(f"{k}={v}" for k, v in request.args.items(multi=True) if k != "offset")
            request = Request({**request.environ, "QUERY_STRING": query})
        return rewritten(super().activity(request), self.rewrite)

    def offsets(self) -> list[str]:
        return [a["offset"] for a in self.unsubscribes()]


@pytest.fixture
def es() -> Iterator[tuple[HostileES, Server]]:
    sim = HostileES()
    with Server(sim) as server:
        yield sim, server


def es_world(folder: Path, url: str) -> World:
    return World(folder, {"esputnik": esputnik_table(url)})


def es_pull(world: World) -> tuple[PullReport, list[str]]:
    cfg = world.cfg
    store = Store.open(cfg.store.path)
    try:
        report = pull(cfg, store, world.clock)
        rows = [r["email"] for r in store.query("SELECT email FROM unsubscribes ORDER BY email")]
        return report, rows
    finally:
        store.close()


def test_es_fields_of_any_type_skip_their_record_and_never_stop_the_pull(
    tmp_path: Path, es: tuple[HostileES, Server]
) -> None:
    sim, server = es
    for i in range(3):
        sim.unsubscribe(f"u{i}@example.com")

    def activity(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if items:
            items[0]["email"] = {"value": "u0@example.com"}
        return items

    sim.rewrite = activity
    report, rows = es_pull(es_world(tmp_path, server.url))
    assert report.exit_code == 1, report.summary()
    done = report.vendors["esputnik"]
    assert done.errors == {}
    assert dict(done.counts) == {"unsubscribes": 2, "invalid": 1}
    assert rows == ["u1@example.com", "u2@example.com"]


def test_es_an_activity_of_another_kind_is_no_unsubscribe(
    tmp_path: Path, es: tuple[HostileES, Server]
) -> None:
    """The activity list holds every kind (the spec's ContactActivity: DELIVERED, READ,
    CLICKED, SPAM, ...). A vendor that answers other kinds too (the filter not applied)
    had each stored as an unsubscribe; now only what says UNSUBSCRIBED is one."""
    sim, server = es
    for i in range(3):
        sim.unsubscribe(f"u{i}@example.com")

    def unfiltered(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items[0]["activityStatus"] = "DELIVERED"
        items[1]["activityStatus"] = "READ"
        return items

    sim.rewrite = unfiltered
    report, rows = es_pull(es_world(tmp_path, server.url))
    assert report.exit_code == 0, report.summary()
    assert report.vendors["esputnik"].counts["unsubscribes"] == 1
    assert rows == ["u2@example.com"]


def _no_offsets(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in it.items() if k != "offset"} for it in items]


@pytest.mark.parametrize("hostile", ["no offsets", "offset ignored"])
def test_es_paging_that_does_not_move_on_stops_the_stream_and_keeps_its_cursor(
    tmp_path: Path, es: tuple[HostileES, Server], hostile: str
) -> None:
    """A full page (1000 rows) whose last activity has no offset, or a vendor that answers
    every offset with the first page: the connector cannot go on. It must say so after one
    repeat at most, not read the same page until the end of time; what it read is kept and
    the cursor stays at the last offset that moved."""
    sim, server = es
    for i in range(1001):
        sim.unsubscribe(f"u{i:04d}@example.com")
    if hostile == "no offsets":
        sim.rewrite = _no_offsets
    else:
        sim.ignore_offset = True
    world = es_world(tmp_path, server.url)
    report, rows = es_pull(world)
    assert sim.calls <= 2, sim.calls
    assert report.exit_code == 1
    why = report.vendors["esputnik"].errors["unsubscribes"]
    assert why.startswith("esputnik: ") and "offset" in why, why
    assert rows == [f"u{i:04d}@example.com" for i in range(1000)]  # the page read is kept
    store = world.store()
    try:
        cursor = store.scalar("SELECT cursor FROM cursors WHERE vendor = 'esputnik'")
    finally:
        store.close()
    last = "" if hostile == "no offsets" else sim.offsets()[999]
    assert cursor.partition("|")[2] == last


# --- SignalVine ----------------------------------------------------------------------------
class Unordered(SignalVineSim):
    """Lists participants newest first (the connector does not know the list's order); a
    page of `holes` is empty yet not the last (filtered after paging: the items follow on
    the next page), and `next_offset` answers the nextOffset of the test's choosing."""

    holes: tuple[int, ...] = ()
    next_offset: dict[int, Any] = {}  # noqa: RUF012
    # a list that never ends: "same page" (the first, whatever the offset) or "empty pages"
    # (after the first), each with a nextOffset after its own and no total, for `LIMIT`
    # pages (then it ends, so that a pull that does not stop still ends); `pages` asked
    never_ends: str | None = None
    pages = 0
    LIMIT = 40

    def participants(self, request: Request, program: str) -> Response:
        args = request.args.to_dict()
        offset, count = int(args.get("offset", "0")), int(args.get("count", "50"))
        if self.never_ends:
            self.pages += 1
            asked, offset = offset, 0 if self.never_ends == "same page" else offset
        whole = Request(
            {**request.environ, "QUERY_STRING": urlencode({**args, "offset": 0, "count": 500})}
        )
        answer = super().participants(whole, program)  # at most 500 in these tests
        if answer.status_code != 200:
            return answer
        slots: list[dict[str, Any] | None] = json.loads(answer.get_data())["items"][::-1]
        for hole in self.holes:
            slots[hole:hole] = [None] * count
        page = [item for item in slots[offset : offset + count] if item is not None]
        following = offset + count if offset + count < len(slots) else None
        following = self.next_offset.get(offset, following)
        if self.never_ends:
            following = asked + count if self.pages < self.LIMIT else None
            page = [] if self.never_ends == "empty pages" and asked else page
            return json_response({"items": page, "offset": asked, "nextOffset": following})
        envelope = {"items": page, "offset": offset, "nextOffset": following}
        return json_response({**envelope, "total": len(slots)})


def sv_config(folder: Path, url: str) -> Config:
    (folder / "mapping.toml").write_text(SV_MAPPING, encoding="utf-8")
    (folder / "syncd.toml").write_text(
        '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
        f'[vendors.signalvine]\nbase_url = "{url}"\nmapping = "mapping.toml"\n'
        f'token = "sandbox-token"\nsecret = "sandbox-secret"\nprogram = "{PROGRAM}"\n'
        "retries = 1\nbackoff_base = 0.01\npull_lookback = 0\n",
        encoding="utf-8",
    )
    return load(folder / "syncd.toml")


@pytest.fixture
def sv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> Iterator[tuple[Unordered, Config]]:
    """Six participants, K1 to K5 opted out an hour apart; pages of two, newest first:
    [K5 K4] [K3 K2] [K1 K0]."""
    monkeypatch.setattr(signalvine, "PAGE", 2)
    sim = Unordered(now=clock.now)
    with Server(sim) as server:
        cfg = sv_config(tmp_path, server.url)
        connector = SignalVine(cfg.vendors["signalvine"], clock=clock)
        connector.push([sv_contact(i) for i in range(6)], lambda job, refused=(): None)
        connector.close()
        start = clock.now()
        for i in range(1, 6):
            sim.opt_out(f"K{i:05d}", start + timedelta(hours=i))
        clock.sleep(6 * 3600)
        yield sim, cfg


OPTED_OUT = [f"+3247{i:07d}" for i in range(1, 6)]


def sv_stored(cfg: Config) -> list[str]:
    store = Store.open(cfg.store.path)
    try:
        return [r[0] for r in store.query("SELECT phone FROM unsubscribes ORDER BY phone")]
    finally:
        store.close()


def test_sv_an_empty_page_that_is_not_the_last_is_read_past(
    sv: tuple[Unordered, Config], clock: FakeClock
) -> None:
    """[K5 K4] [] [K3 K2] [K1 K0]: the empty page says more follow. Stopping there stored
    the cursor at K5's time, and K3 to K1, older, were never read again."""
    sim, cfg = sv
    sim.holes = (2,)
    report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 0, report.summary()
    assert sv_stored(cfg) == OPTED_OUT


@pytest.mark.parametrize("following", [0, 2, "4", True, 6, 600])
def test_sv_a_next_offset_that_does_not_move_on_fails_the_stream_and_keeps_its_cursor(
    sv: tuple[Unordered, Config], clock: FakeClock, following: Any
) -> None:
    """nextOffset back to the start, the same offset again, not a number, or at or past the
    list's total (empty pages for ever): the paging cannot go on. Taking it for the last page moved the cursor past K1, on a page never
    read; now the stream fails saying so, and the next pull reads everything."""
    sim, cfg = sv
    sim.next_offset = {2: following}  # answered with [K3 K2]
    report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 1, report.summary()
    why = report.vendors["signalvine"].errors["unsubscribes"]
    assert why.startswith("signalvine: ") and "nextOffset" in why, why
    sim.next_offset = {}
    report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 0, report.summary()
    assert sv_stored(cfg) == OPTED_OUT


@pytest.mark.parametrize("never_ends", ["same page", "empty pages"])
def test_sv_a_list_that_never_moves_on_fails_the_stream_naming_it_and_keeps_its_cursor(
    sv: tuple[Unordered, Config],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    never_ends: str,
) -> None:
    """A server that answers its first page whatever the offset, or nothing but empty pages
    after it, each with a nextOffset after its own and no total to bound it: the pull asked
    for the next page for ever, and since every request is a sign of life to the service's
    watchdog, it looked alive while it read nothing new. The stream now fails at the first
    page that repeats the one before, or after `EMPTY_RUN` empty pages in a row, saying so,
    its cursor kept; the next pull of a list that ends reads everything."""
    sim, cfg = sv
    monkeypatch.setattr(signalvine, "EMPTY_RUN", 5, raising=False)  # (the fix's bound)
    sim.never_ends = never_ends
    report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 1, report.summary()
    why = report.vendors["signalvine"].errors["unsubscribes"]
    said = (
        "again, in the same order"
        if never_ends == "same page"
        else "answered 5 empty pages in a row from offset 2"
    )
    assert why.startswith("signalvine: GET ") and said in why, why
    assert "does not move on; the unsubscribes stream stays at 1970-01-01T00:00:00.000Z" in why
    assert sim.pages == (2 if never_ends == "same page" else 6)
    store = Store.open(cfg.store.path)
    try:
        kept = store.scalar("SELECT cursor FROM cursors WHERE vendor = 'signalvine'")
    finally:
        store.close()
    assert kept == "1970-01-01T00:00:00.000Z"  # where it started: nothing is skipped
    sim.never_ends = None
    report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 0, report.summary()
    assert sv_stored(cfg) == OPTED_OUT


def test_hc_records_without_their_id_are_skipped_not_merged_into_one(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """Two answers without `uniqueID` or `respondent_UniqueID`: they were stored as one
    response with the id "", the second overwriting the first, and the pull said ok."""
    sim, server = hc
    now = clock.now()
    ids = sim.add_responses(3, now - timedelta(hours=3), now - timedelta(hours=2))

    def answers(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items[:2]:
            item.pop("uniqueID")
            item.pop("respondent_UniqueID", None)
        return items

    sim.answers_rewrite = answers
    cfg = hc_config(tmp_path, server.url, '["responses"]')
    report, rows = pulled(cfg, clock, "SELECT response_id FROM responses")
    assert rows == [(ids[2],)]
    assert report.exit_code == 1, report.summary()
    assert dict(report.vendors["hellocustomer"].counts) == {"responses": 1, "invalid": 2}


class EditedWhilePaged(SignalVineSim):
    """Edits the first participant of the first page as the second page is asked for (a
    colleague, or a text, changing it mid-pull)."""

    first: str | None = None

    def participants(self, request: Request, program: str) -> Response:
        if request.args.get("offset") == "2" and self.first is not None:
            with self.lock:
                pid, self.first = self._by_customer[self.first], None
                self._participants[pid].write({"notes": "called back"}, self.now())
        answer = super().participants(request, program)
        if request.args.get("offset") == "0" and self.first is None and answer.status_code == 200:
            self.first = json.loads(answer.get_data())["items"][0]["customerId"]
        return answer


def test_sv_a_participant_changed_while_the_list_is_paged_loses_no_opt_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """Pages of two over the list ordered by last change: [A B] [K2 K3], K2 and K3 opted
    out. A is edited as the second page is asked for: the list is now [B K2 K3 A], offset 2
    answers [K3 A], and K2 is on no page. The cursor went to A's change (less the
    lookback), past K2's opt-out, and K2 was never read again. The pages held 3 distinct
    participants of the list's 4: the cursor stays, and the next pull reads K2."""
    monkeypatch.setattr(signalvine, "PAGE", 2)
    sim = EditedWhilePaged(now=clock.now)
    start = clock.now()
    for i in range(4):
        sim.seed(f"K{i}", f"+3247000000{i}")
    sim.opt_out("K2", start + timedelta(minutes=10))
    sim.opt_out("K3", start + timedelta(minutes=20))
    clock.sleep(3600)
    with Server(sim) as server:
        cfg = sv_config(tmp_path, server.url)
        report, _ = pulled(cfg, clock, "SELECT 1")
        assert report.exit_code == 0, report.summary()
        assert sv_stored(cfg) == ["+32470000003"]
        clock.sleep(60)
        report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 0, report.summary()
    assert sv_stored(cfg) == ["+32470000002", "+32470000003"]


class DatedAhead(SignalVineSim):
    """Lists participant K0 as changed in 2999 (edited by hand, a vendor clock gone wrong)."""

    def participants(self, request: Request, program: str) -> Response:
        answer = super().participants(request, program)
        if answer.status_code != 200:
            return answer
        body = json.loads(answer.get_data())
        for item in body["items"]:
            if item.get("customerId") == "K0":
                item["updatedAt"] = "2999-01-01T00:00:00.000Z"
        return json_response(body)


def test_sv_a_participant_dated_in_the_future_does_not_take_the_cursor_past_now(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A participant whose last change is in 2999: the cursor went to 2999, so nothing was
    read again, and every later pull failed blaming this machine's clock (`--since` only
    set it to 2999 once more): K1's opt-out an hour later was never pulled. The cursor
    now goes no further than the pull's own time."""
    sim = DatedAhead(now=clock.now)
    for i in range(3):
        sim.seed(f"K{i}", f"+3247000000{i}")
    clock.sleep(60)
    with Server(sim) as server:
        cfg = sv_config(tmp_path, server.url)
        report, cursors = pulled(cfg, clock, "SELECT cursor FROM cursors")
        assert report.exit_code == 0, report.summary()
        assert cursors == [(signalvine.timestamp(clock.now()),)]
        clock.sleep(3600)
        sim.opt_out("K1", clock.now())
        clock.sleep(60)
        report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 0, report.details()
    assert sv_stored(cfg) == ["+32470000001"]


class OddParticipants(SignalVineSim):
    """K0's profile is a number, K1's times are in year 1 at +01:00 (UTC cannot hold
    them), K3's id is an object; `items` is what the test says, when it says."""

    items: Any = None

    def participants(self, request: Request, program: str) -> Response:
        answer = super().participants(request, program)
        if answer.status_code != 200:
            return answer
        body = json.loads(answer.get_data())
        for item in body["items"]:
            if item.get("customerId") == "K0":
                item["profile"] = 5
            if item.get("customerId") == "K1":
                item["updatedAt"] = item["created"] = "0001-01-01T00:00:00+01:00"
                for variable in item["profile"]:
                    variable["updated"] = "0001-01-01T00:00:00+01:00"
            if item.get("customerId") == "K3":
                item["id"] = {"uuid": item["id"]}
        if self.items is not None:
            body["items"] = self.items
        return json_response(body)


def test_sv_participants_of_any_shape_never_stop_the_pull(tmp_path: Path, clock: FakeClock) -> None:
    """A `profile` that is a number, times UTC cannot hold, and an id that is an object
    raised out of the pull (TypeError, OverflowError) and stopped it at every pull; K2's
    opt-out was never read.
    `items` that is no list (an object, a number) read as an empty page, or raised: now
    the stream fails saying so, its cursor kept."""
    sim = OddParticipants(now=clock.now)
    for i in range(4):
        sim.seed(f"K{i}", f"+3247000000{i}")
    sim.opt_out("K1", clock.now())
    sim.opt_out("K2", clock.now())
    clock.sleep(60)
    with Server(sim) as server:
        cfg = sv_config(tmp_path, server.url)
        for items in ({"0": {"id": "p"}}, 5):
            sim.items = items
            report, cursors = pulled(cfg, clock, "SELECT cursor FROM cursors")
            assert report.exit_code == 1, report.summary()
            why = report.vendors["signalvine"].errors["unsubscribes"]
            assert "not a list" in why, why
            assert cursors == []
        sim.items = None
        report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 0, report.details()
    assert sv_stored(cfg) == ["+32470000001", "+32470000002"]


def test_sv_a_participant_without_id_is_refused_not_keyed_none() -> None:
    item = {"customerId": "K1", "phone": "+32470000001", "active": False, "profile": []}
    with pytest.raises(Invalid, match="vendor_id is missing"):
        clean("unsubscribes", signalvine._unsubscribe(item))


@pytest.mark.parametrize(
    ("active", "out"),
    [(False, True), (True, False), ("false", True), (" TRUE ", False), ("no", None), (0, None)],
)
def test_sv_an_opt_out_is_read_from_active_false_or_its_text_and_nothing_else(
    active: object, out: bool | None
) -> None:
    """`"active": "false"` (text) was passed over as no opt-out, silently; a value that is
    neither is not taken for one either way (the pull logs it)."""
    item = {"id": "p1", "phone": "+32470000001", "active": active, "profile": []}
    assert signalvine._opted_out(item) is out


def test_each_failed_stream_is_named_with_what_came(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """Two of three streams answered with HTML: the lines under the summary (the CLI's,
    the run's `counts`) named neither stream and told only the last failure."""
    sim, server = hc
    base = f"/V1.0/EN/campaign/{CAMPAIGN}"
    sim.faults.add("malformed", path=f"{base}/analysis/nps/", count=99)
    sim.faults.add("malformed", path=f"{base}/respondent/unsubscribed/", count=99)
    cfg = hc_config(tmp_path, server.url, '["responses", "nps", "unsubscribes"]')
    report, _ = pulled(cfg, clock, "SELECT 1")
    assert report.exit_code == 1
    (line,) = report.details()
    nps, unsubscribes = line.removeprefix("  hellocustomer: stopped — ").split("; ")
    assert nps.startswith(f"nps: POST {base}/analysis/nps/getnpsscore/"), nps
    assert unsubscribes.startswith(f"unsubscribes: GET {base}/respondent/unsubscribed/")
    for why in (nps, unsubscribes):
        assert "answered HTTP 200 with text that is not JSON" in why, why
    assert report.counts()["hellocustomer"]["stopped"] == f"{nps}; {unsubscribes}"


# --- kills -----------------------------------------------------------------------------------
def test_es_killed_between_pages_holds_whole_pages_and_converges(
    tmp_path: Path, es: tuple[HostileES, Server]
) -> None:
    """2500 unsubscribes, three pages. SIGKILLed as each page arrives: the store holds
    exactly the pages committed before, each with its cursor; a clean pull then holds
    every activity once."""
    sim, server = es
    for i in range(2500):
        sim.unsubscribe(f"u{i:04d}@example.com")
    world = es_world(tmp_path, server.url)
    offsets = sim.offsets()
    cmd = [sys.executable, "-m", "syncd.cli", "--config", str(world.folder / "syncd.toml")]
    env = {**os.environ, "SYNCD_LOG_LEVEL": "WARNING"}

    def state() -> tuple[int, str | None]:
        store = world.store()
        try:
            n = store.scalar("SELECT count(*) FROM unsubscribes")
            return n, store.scalar("SELECT cursor FROM cursors WHERE vendor = 'esputnik'")
        finally:
            store.close()

    for nth, held in ((1, 0), (2, 1000), (3, 2000)):
        if held:  # start again from nothing: each kill after `held` committed rows
            (world.folder / "syncd.db").unlink()
        proc = subprocess.run(
            [*cmd, "pull"], env={**env, "SYNCD_CRASH_AT": f"page_fetched:{nth}"}, timeout=60
        )
        assert proc.returncode == -9
        n, cursor = state()
        assert n == held
        assert (cursor or "|").partition("|")[2] == (offsets[held - 1] if held else "")
    for _ in range(2):  # the second pull reads past the end: nothing doubles
        assert subprocess.run([*cmd, "pull"], env=env, timeout=60).returncode == 0
    store = world.store()
    try:
        ids = [r[0] for r in store.query("SELECT vendor_id FROM unsubscribes ORDER BY 1")]
    finally:
        store.close()
    assert ids == offsets


def test_hc_an_answer_the_vendor_no_longer_has_is_not_kept(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """A response re-read in the lookback with one answer fewer (cleared, or re-created
    under new ids): its answers are replaced, as `save_response` says, not added to."""
    sim, server = hc
    now = clock.now()
    (rid,) = sim.add_responses(1, now - timedelta(hours=3), now - timedelta(hours=3))
    cfg = hc_config(tmp_path, server.url, '["responses"]')
    pulled(cfg, clock, "SELECT 1")

    def renewed(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            item["answerQuestions"] = item["answerQuestions"][:2]
            for a in item["answerQuestions"]:
                a["uniqueID"] = a["uniqueID"] + "-v2"
        return items

    sim.answers_rewrite = renewed
    clock.sleep(3600)
    report, rows = pulled(cfg, clock, "SELECT answer_id FROM answers ORDER BY answer_id")
    assert report.exit_code == 0
    expected = sorted(a["uniqueID"] + "-v2" for a in sim.response(rid)["answerQuestions"][:2])
    assert rows == [(a,) for a in expected]


def test_list_entries_that_are_no_object_are_counted_skipped_not_dropped_unsaid(
    tmp_path: Path,
    hc: tuple[HostileHC, Server],
    es: tuple[HostileES, Server],
    clock: FakeClock,
) -> None:
    hc_sim, hc_server = hc
    now = clock.now()
    hc_sim.add_responses(2, now - timedelta(hours=3), now - timedelta(hours=2))
    hc_sim.answers_rewrite = lambda items: [*items, "garbage", None] if items else items
    (tmp_path / "hc").mkdir()
    report, rows = pulled(
        hc_config(tmp_path / "hc", hc_server.url, '["responses"]'), clock, "SELECT 1 FROM responses"
    )
    assert len(rows) == 2 and report.exit_code == 1, report.summary()
    assert dict(report.vendors["hellocustomer"].counts) == {"responses": 2, "invalid": 2}

    es_sim, es_server = es
    es_sim.unsubscribe("u0@example.com")
    es_sim.rewrite = lambda items: [17, *items]
    (tmp_path / "es").mkdir()
    report, rows = es_pull(es_world(tmp_path / "es", es_server.url))
    assert rows == ["u0@example.com"] and report.exit_code == 1, report.summary()
    assert dict(report.vendors["esputnik"].counts) == {"unsubscribes": 1, "invalid": 1}


def test_records_re_read_in_the_lookback_are_not_reported_as_new(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """Every pull re-reads its lookback (a day here): the same three responses were
    reported as three new ones each time. Now they count as `unchanged`, and the summary
    says there is nothing new."""
    sim, server = hc
    now = clock.now()
    sim.add_responses(3, now - timedelta(hours=3), now - timedelta(hours=2))
    sim.unsubscribe("gone@example.com", now - timedelta(hours=1))
    cfg = hc_config(tmp_path, server.url, '["responses", "nps", "unsubscribes"]')
    first, _ = pulled(cfg, clock, "SELECT 1")
    counts = +first.vendors["hellocustomer"].counts
    assert counts.pop("responses") == 3 and counts.pop("unsubscribes") == 1
    assert counts.pop("nps") and not counts
    clock.sleep(60)
    again, rows = pulled(cfg, clock, "SELECT count(*) FROM responses")
    assert rows == [(3,)]
    counts = +again.vendors["hellocustomer"].counts  # the current month's NPS read again too
    assert list(counts) == ["unchanged"] and counts["unchanged"] > 3 + 1
    assert "hellocustomer: no new responses, nps or unsubscribes" in again.summary()


@pytest.mark.parametrize(
    ("came", "stored"),
    [
        (" 42 ", 42),
        ("-12.5", -12.5),
        ("NaN", None),  # .NET's text for 0/0: no number, as SQLite would have stored it
        (2**63 - 1, 2**63 - 1),
        (2**63, "is too large a number to store"),  # JSON allows it, SQLite does not
        ("99999999999999999999", "is too large a number to store"),
        ("Infinity", "is not a finite number"),
        ("1e400", "is not a finite number"),
    ],
)
def test_a_pulled_number_is_stored_as_it_reads_or_its_record_skipped(
    came: object, stored: object
) -> None:
    """An NPS of 2**63 raised OverflowError as it was stored, out of the pull, which then
    stopped for every later stream at every pull; now its record is skipped, saying why."""
    record = {"period_start": "2026-01-01", "period_end": "2026-01-31", "nps": came}
    if isinstance(stored, str):
        with pytest.raises(Invalid, match=f"^nps .* {stored}$"):
            clean("nps", record)
    else:
        assert clean("nps", record)["nps"] == stored


@pytest.mark.parametrize(
    ("came", "stored"),
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05+00:00"),
        ("2026-01-02T03:04:05.250Z", "2026-01-02T03:04:05+00:00"),
        ("2026-01-02 03:04:05", "2026-01-02T03:04:05+00:00"),  # no offset: UTC
        ("2026-01-02T05:04:05+02:00", "2026-01-02T03:04:05+00:00"),
        ("the day before", "the day before"),  # unreadable: as it came
        ("9999-12-31T23:59:59-01:00", "9999-12-31T23:59:59-01:00"),  # past UTC: as it came
    ],
)
def test_pulled_times_are_stored_as_the_store_writes_its_own(
    tmp_path: Path, came: str, stored: str
) -> None:
    """The views compare a response's `answered_at` with a survey's `sent_at` as text: a
    vendor's `Z`, milliseconds, space or offset sorted wrongly against syncd's own form (a
    response in the same second as its survey was not credited; `+02:00` put an answer in
    the wrong month). The pull writes them as syncd does; m018 converts stored ones."""
    record = {"response_id": "r1", "answered_at": came, "surveyed_at": came}
    assert clean("responses", record)["answered_at"] == stored
    assert clean("unsubscribes", {"vendor_id": "u1", "at": came})["at"] == stored

    old = Database(tmp_path / "old.db")  # a store from before m018, holding the vendor's text
    migrations.apply(old, stop_before="m018_pulled_times_as_the_store_writes_them")
    old.execute(
        "INSERT INTO responses (vendor, response_id, surveyed_at, answered_at, pulled_at) "
        "VALUES ('hellocustomer', 'r1', ?, ?, 'now')",
        (came, came),
    )
    old.execute(
        "INSERT INTO unsubscribes (vendor, vendor_id, at, pulled_at) VALUES ('x', 'u1', ?, 'now')",
        (came,),
    )
    old.conn.commit()
    old.close()
    store = Store.open(tmp_path / "old.db")
    try:
        got = store.query("SELECT surveyed_at, answered_at FROM responses")
        assert tuple(got[0]) == (stored, stored)
        assert store.scalar("SELECT at FROM unsubscribes") == stored
    finally:
        store.close()


def test_hc_an_answer_id_two_answers_share_is_refused_never_moved_or_overwritten(
    tmp_path: Path, hc: tuple[HostileHC, Server], clock: FakeClock
) -> None:
    """Answers are keyed (vendor, answer_id): a response carrying an answer id another
    response holds would move that answer to itself, and one id twice in a response would
    keep only the second. Both records are skipped with their reason, counted, and the
    answers already stored stay where they are."""
    sim, server = hc
    now = clock.now()
    ids = sim.add_responses(3, now - timedelta(hours=3), now - timedelta(hours=2))
    cfg = hc_config(tmp_path, server.url, '["responses"]')
    report, before = pulled(cfg, clock, "SELECT answer_id, response_id FROM answers ORDER BY 1")
    assert report.exit_code == 0, report.summary()
    first = {a["uniqueID"] for a in sim.response(ids[0])["answerQuestions"]}

    def reused(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        by_id = {item["uniqueID"]: item for item in items}
        stolen = sim.response(ids[0])["answerQuestions"][0]["uniqueID"]
        by_id[ids[1]]["answerQuestions"][0]["uniqueID"] = stolen  # response 0's answer
        twice = by_id[ids[2]]["answerQuestions"]
        twice[1]["uniqueID"] = twice[0]["uniqueID"]  # one id, two answers
        return items

    sim.answers_rewrite = reused
    clock.sleep(3600)
    report, after = pulled(cfg, clock, "SELECT answer_id, response_id FROM answers ORDER BY 1")
    assert report.exit_code == 1, report.summary()
    assert dict(report.vendors["hellocustomer"].counts) == {
        "responses": 0,
        "unchanged": 1,
        "invalid": 2,
    }
    assert after == before  # response 0 keeps its answers; 1 and 2 keep their last good ones
    assert {a for a, r in after if r == ids[0]} == first


@pytest.mark.parametrize(
    ("zone", "came", "stored"),
    [
        ("Europe/Kyiv", "2026-07-01T12:00:00", "2026-07-01T09:00:00+00:00"),
        ("UTC", "2026-07-01T12:00:00", "2026-07-01T12:00:00+00:00"),
        ("Europe/Kyiv", "2026-07-01T12:00:00+01:00", "2026-07-01T11:00:00+00:00"),
    ],
)
def test_es_an_activity_time_without_an_offset_is_read_in_activity_timezone(
    tmp_path: Path, es: tuple[HostileES, Server], zone: str, came: str, stored: str
) -> None:
    """The spec's ContactActivity.activityDateTime is "Activity date and time", no zone;
    the store took a time without an offset for UTC whatever the account's clock said."""
    sim, server = es
    sim.unsubscribe("u0@example.com", datetime(2026, 7, 1, 12, tzinfo=UTC))
    sim.rewrite = lambda items: [{**it, "activityDateTime": came} for it in items]
    world = World(tmp_path, {"esputnik": esputnik_table(server.url, activity_timezone=zone)})
    report, _ = es_pull(world)
    assert report.exit_code == 0, report.summary()
    store = world.store()
    try:
        assert store.scalar("SELECT at FROM unsubscribes") == stored
    finally:
        store.close()


# --- answers lost on the way ---------------------------------------------------------------
# (who answers, how): the simulator itself, or the hostile proxy after the vendor acted
LOST: dict[str, tuple[str, dict[str, Any]]] = {
    "drop_after": ("vendor", {}),  # the vendor read the page, then the connection closed
    "delay": ("vendor", {"seconds": 1.2}),  # answered after the read timeout (0.5 s below)
    "cut body": ("proxy", {}),  # the answer's head and half its body, then closed
    "truncated JSON": ("proxy", {}),  # a whole answer holding half the JSON
}


def lost_world(
    vendor: str, folder: Path, url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Config:
    """A config pulling `vendor`'s one paged stream at `url`, timing out reads at 0.5 s
    (at 0.1 s an ordinary answer on a loaded machine timed out, and was counted as the
    lost page asked again)."""
    if vendor == "esputnik":
        es_world(folder, url)
        path = folder / "syncd.toml"
    elif vendor == "signalvine":
        monkeypatch.setattr(signalvine, "PAGE", 2)
        sv_config(folder, url)
        path = folder / "syncd.toml"
    else:
        first = (clock.now() - timedelta(days=40)).date()
        hc_config(folder, url, '["responses"]')
        path = folder / "syncd.toml"
        path.write_text(path.read_text("utf-8") + f'first_date = "{first}"\n', encoding="utf-8")
    text = path.read_text("utf-8").replace(
        f"[vendors.{vendor}]\n", f"[vendors.{vendor}]\nread_timeout = 0.5\n"
    )
    path.write_text(text, encoding="utf-8")
    return load(path)


def lost_sim(vendor: str, clock: FakeClock) -> tuple[Any, str, list[str], list[str]]:
    """The vendor with records on several pages: (simulator, the pages' path, every
    record's id in the store, those of the first page)."""
    now = clock.now()
    if vendor == "esputnik":
        es = HostileES()
        for i in range(1500):  # pages of 1000
            es.unsubscribe(f"u{i:04d}@example.com")
        offsets = es.offsets()
        return es, "/api/v2/contacts/activity", offsets, offsets[:1000]
    if vendor == "signalvine":
        sv = SignalVineSim(now=clock.now)
        ids = [sv.seed(f"K{i}", f"+3247000000{i}") for i in range(6)]  # pages of 2
        clock.sleep(60)
        for pid_index in range(6):
            sv.opt_out(f"K{pid_index}", clock.now() + timedelta(seconds=pid_index))
        clock.sleep(60)
        stamp = [signalvine.timestamp(now + timedelta(seconds=60 + i)) for i in range(6)]
        every = [f"{pid}@{at}" for pid, at in zip(ids, stamp, strict=True)]
        return sv, f"/v1/programs/{PROGRAM}/participants", every, every[:2]
    hc = HelloCustomerSim(clock=clock.monotonic, now=clock.now)
    early = hc.add_responses(2, now - timedelta(days=38), now - timedelta(days=37))
    late = hc.add_responses(2, now - timedelta(hours=2), now - timedelta(hours=1))
    return hc, f"/V1.0/EN/campaign/{CAMPAIGN}/answers/getall/", early + late, early


def lost_held(vendor: str, cfg: Config) -> tuple[list[str], str | None]:
    """The ids the store holds, sorted, and the stream's cursor."""
    table, column = (
        ("responses", "response_id")
        if vendor == "hellocustomer"
        else (
            "unsubscribes",
            "vendor_id",
        )
    )
    store = Store.open(cfg.store.path)
    try:
        ids = [r[0] for r in store.query(f"SELECT {column} FROM {table} ORDER BY 1")]
        return ids, store.scalar("SELECT cursor FROM cursors WHERE vendor = ?", (vendor,))
    finally:
        store.close()


@pytest.mark.parametrize("kind", list(LOST))
@pytest.mark.parametrize("vendor", ["esputnik", "signalvine", "hellocustomer"])
def test_a_page_the_vendor_served_but_syncd_never_got_leaves_the_cursor_before_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    vendor: str,
    kind: str,
) -> None:
    """The vendor read the second page and answered, and the answer never reached syncd
    whole, at any attempt: the connection closed before it, or halfway through its body,
    a body holding half the JSON, an answer later than the read timeout. The stream fails
    saying so; the store holds the first page, with a cursor that does not pass the lost
    page; the next pull reads the rest, each record once."""
    sim, path, every, first = lost_sim(vendor, clock)
    with Server(sim) as server, HostileProxy(server.url) as proxy:
        cfg = lost_world(vendor, tmp_path, proxy.url, clock, monkeypatch)
        lose(kind, sim, proxy, path, count=99)  # at every attempt
        report, _ = pulled(cfg, clock, "SELECT 1")
        assert report.exit_code == 1, report.summary()
        assert asked_again(proxy, path) == cfg.vendors[vendor].delivery.retries  # bounded
        errors = report.vendors[vendor].errors
        assert list(errors) == ["responses" if vendor == "hellocustomer" else "unsubscribes"]
        held, cursor = lost_held(vendor, cfg)
        assert held == sorted(first)
        if vendor == "esputnik":
            assert cursor is not None and cursor.partition("|")[2] == first[-1]
        elif vendor == "signalvine":  # its cursor moves after the last page only
            assert cursor == signalvine.timestamp(signalvine.EPOCH)
        else:
            assert cursor is not None
            assert cursor < min(sim.response(r)["dateAnswer"] for r in every[2:])
        sim.faults.clear()
        proxy.clear()
        clock.sleep(60)
        report, _ = pulled(cfg, clock, "SELECT 1")
        assert report.exit_code == 0, report.summary()
        assert lost_held(vendor, cfg)[0] == sorted(every)


def lose(kind: str, sim: Any, proxy: HostileProxy, path: str, count: int) -> None:
    """The answers to `path`'s pages after the first lost `kind`'s way, `count` times: by
    the vendor (`LOST`'s "vendor") or by the proxy after the vendor served them."""
    who, options = LOST[kind]
    if who == "vendor":
        sim.faults.add(kind, path=path, after=1, count=count, **options)
    else:
        proxy.plan(kind, acted=True, path=path, after=1, count=count)


def asked_again(proxy: HostileProxy, path: str) -> int:
    """How many of the requests for `path`'s pages repeated one before them."""
    asked = [line for line in proxy.seen if line.split(" ")[1].startswith(path)]
    return len(asked) - len(set(asked))


@pytest.mark.parametrize("kind", list(LOST))
@pytest.mark.parametrize("vendor", ["esputnik", "signalvine", "hellocustomer"])
def test_a_page_whose_answer_is_lost_once_is_read_again_in_the_same_pull(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: FakeClock,
    vendor: str,
    kind: str,
) -> None:
    """As above, but only the first answer to the second page is lost: the read is asked
    again within the run, under the delivery retries and backoff, and the one pull stores
    every record, exit 0 (half the JSON in a whole answer failed the stream, and only the
    next pull read the page again)."""
    sim, path, every, _first = lost_sim(vendor, clock)
    with Server(sim) as server, HostileProxy(server.url) as proxy:
        cfg = lost_world(vendor, tmp_path, proxy.url, clock, monkeypatch)
        lose(kind, sim, proxy, path, count=1)
        report, _ = pulled(cfg, clock, "SELECT 1")
        assert report.exit_code == 0, report.summary()
        assert asked_again(proxy, path) == 1
    assert report.vendors[vendor].errors == {}
    assert lost_held(vendor, cfg)[0] == sorted(every)
