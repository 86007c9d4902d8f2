"""The random-moment kill loop for `syncd pull`: SIGKILLed after a random wall-clock delay,
again and again, against all five simulators slowed so requests take a while (eSputnik,
SignalVine and Hello Customer pull; Dropthought and Altcraft have no streams), while the
vendors gain records between kills: new responses, a response's answers edited, new
unsubscribes and opt-outs, some dated back inside the lookback (behind the cursor), and
now and then a burst of eSputnik unsubscribes that takes two pages. Every n-th pull is left
to finish. Unlike tests/test_pull_adversary.py's kill between two pages, a kill here lands
anywhere: in start-up, mid-request, between a page and its commit, in the commit.

After every run: `PRAGMA integrity_check` ok, and no stream's cursor past a record the store
lacks (the next pull would start after it: lost for good). After the final clean pulls:
- 0 lost: every record each vendor holds is stored;
- 0 duplicate: each once, and nothing stored the vendor does not hold;
- 0 stale: each response's answers are the vendor's current ones (none of an older
  version), each stored NPS figure is what the vendor answers now;
- every `runs` row closed (a killed one `crashed`, by the next run);
- the last clean pull's counts are what it stored (new or changed, per stream), and a pull
  after it finds nothing new.

The short loop (Hello Customer's 1 call/s shortened to 0.1 s on both sides, to fit in the
suite) runs by default; the 150-kill loop, at Hello Customer's real pace, with `-m slow`:
    .venv/bin/pytest -m slow tests/test_pull_kill_loop.py
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from syncd.sandbox import Stack
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.sandbox.signalvine import SignalVineSim
from tests.helpers import FAST, FAST_SYNCD
from tests.test_kill_loop import CLEAN_EVERY, Figures, KillLoop
from tests.test_kill_loop import assert_promises as assert_sync_promises

CAMPAIGN = "c8dc5f94-a9e8-4743-8744-e66a73a7e724"
LOOKBACK_DAYS = 1  # Hello Customer's; records are dated back at most BACKDATE
BACKDATE = timedelta(hours=2)
SV_LOOKBACK = timedelta(seconds=300)  # SignalVine's `pull_lookback` (its default)
PARTICIPANTS = 600  # two SignalVine pages of 500
ES_BURST = 1100  # two eSputnik pages of 1000


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class PullLoop(KillLoop):
    """tests/test_kill_loop.py's loop, killing pulls, the vendors' records changing."""

    def __init__(self, folder: Path, stack: Stack, seed: int, *, fast: bool) -> None:
        super().__init__(folder, stack, seed, flip=False)
        self.hc: HelloCustomerSim = self.sims["hellocustomer"]  # type: ignore[assignment]
        self.es: ESputnikSim = self.sims["esputnik"]  # type: ignore[assignment]
        self.sv: SignalVineSim = self.sims["signalvine"]  # type: ignore[assignment]
        if fast:
            self.hc.min_interval = FAST
            self.syncd = FAST_SYNCD
        self.first = (datetime.now(UTC) - timedelta(days=2)).date()  # Hello Customer's backfill
        # its own backfill start in place of the crash loop's (a week)
        config = re.sub(r"(?m)^first_date = .*\n", "", self.config.read_text(encoding="utf-8"))
        config = config.replace(
            "[vendors.hellocustomer]\n",
            f'[vendors.hellocustomer]\nfirst_date = "{self.first}"\n'
            f"lookback_days = {LOOKBACK_DAYS}\n",
        )
        self.config.write_text(config, encoding="utf-8")
        self.made = 0  # records made so far: each one's email or phone is new
        self.added: dict[str, datetime] = {}  # response id, email or phone → when it came
        now = datetime.now(UTC)
        self.responses: list[str] = []
        self.respond(20, now - BACKDATE, now)
        # SignalVine: phone → (participant id, when seeded at the latest, opted out when)
        self.participants: dict[str, tuple[str, datetime, datetime | None]] = {}
        for i in range(PARTICIPANTS):
            phone = f"+3247{i:07d}"
            pid = self.sv.seed(f"SV-{i:05d}", phone, email=f"sv{i}@example.com")
            self.participants[phone] = (pid, self.came(phone), None)
        for _ in range(40):
            self.opt_out()
        for _ in range(5):
            self.hc_unsubscribe()
            self.es_unsubscribe()

    # --- the vendors' side, between kills ------------------------------------------------
    def back(self, span: timedelta) -> datetime:
        return datetime.now(UTC) - span * self.rng.random()

    def came(self, ident: str) -> datetime:
        """Note that the record `ident` reached its vendor now."""
        self.added[ident] = datetime.now(UTC)
        return self.added[ident]

    def respond(self, n: int, start: datetime, end: datetime) -> None:
        for rid in self.hc.add_responses(n, start, end):
            self.responses.append(rid)
            self.came(rid)

    def hc_unsubscribe(self) -> None:
        self.made += 1
        email = f"hc.out.{self.made}@example.com"
        self.hc.unsubscribe(email, self.back(BACKDATE))
        self.came(email)

    def es_unsubscribe(self) -> None:
        self.made += 1
        email = f"es.out.{self.made}@example.com"
        self.es.unsubscribe(email, self.back(BACKDATE))
        self.came(email)

    def opt_out(self) -> None:
        """A participant still active texts STOP, dated back inside SignalVine's lookback."""
        active = [p for p, (_pid, _seeded, out) in self.participants.items() if out is None]
        phone = self.rng.choice(active)
        when = self.back(SV_LOOKBACK / 3)
        self.sv.opt_out(phone, when)
        pid, seeded, _ = self.participants[phone]
        self.participants[phone] = (pid, seeded, when)
        self.came(phone)

    def vendor_day(self) -> None:
        """What the vendors gain between two runs."""
        when = self.back(BACKDATE)
        self.respond(self.rng.randint(0, 2), when, when)
        if self.rng.random() < 0.5:  # a respondent changes their answers
            score, text = self.rng.randint(0, 10), f"edited {self.figures.iterations}"
            self.hc.edit_response(self.rng.choice(self.responses), score=score, text=text)
        if self.rng.random() < 0.5:
            self.hc_unsubscribe()
        for _ in range(self.rng.randint(0, 3)):
            self.es_unsubscribe()
        if self.rng.random() < 0.1:  # a campaign's unsubscribes: two pages
            for _ in range(ES_BURST):
                self.es_unsubscribe()
        if self.rng.random() < 0.5:
            self.opt_out()

    def iterate(self) -> None:
        self.figures.iterations += 1
        self.vendor_day()
        if self.figures.iterations % CLEAN_EVERY == 0:
            self.launch(None, "pull")
        else:
            self.launch(self.rng.uniform(0.0, self.spread * 1.1), "pull")
        self.check_run()

    # --- what the store holds --------------------------------------------------------------
    def stored(self) -> dict[str, Any]:
        conn = self.db()
        conn.row_factory = sqlite3.Row
        try:
            return {
                "responses": [dict(r) for r in conn.execute("SELECT * FROM responses")],
                "answers": [dict(r) for r in conn.execute("SELECT * FROM answers")],
                "nps": [dict(r) for r in conn.execute("SELECT * FROM nps")],
                "unsubscribes": [dict(r) for r in conn.execute("SELECT * FROM unsubscribes")],
                "cursors": {
                    (r["vendor"], r["stream"]): (r["cursor"], r["updated_at"])
                    for r in conn.execute("SELECT * FROM cursors")
                },
            }
        finally:
            conn.close()

    def check_run(self) -> None:
        """After any run: the store is intact, and no cursor is past a record not stored."""
        with closing(self.db()) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        self.figures.lost += [
            f"run {self.figures.runs}: {p}" for p in self.cursors_behind(self.stored())
        ]

    def cursors_behind(self, held: dict[str, Any]) -> list[str]:
        """Records the store lacks though their stream's cursor was stored after they came
        and is at or past their place: the next pull starts after them, so they are lost.
        (A record that came later, dated behind the cursor, is the lookback's to read.)"""
        found = []
        cursors = held["cursors"]
        ids = {(u["vendor"], u["vendor_id"]) for u in held["unsubscribes"]}

        def behind(stream: tuple[str, str], ident: str, when: datetime) -> bool:
            cursor, updated = cursors[stream]
            return when <= _at(cursor) and self.added[ident] < _at(updated)

        if ("esputnik", "unsubscribes") in cursors:
            cursor, _ = cursors[("esputnik", "unsubscribes")]
            offset = cursor.partition("|")[2]  # the activities up to it came before it
            found += [
                f"esputnik: activity {a['offset']} at or before the cursor {cursor}, not stored"
                for a in self.es.unsubscribes()
                if a["offset"] <= offset and ("esputnik", a["offset"]) not in ids
            ]
        if ("hellocustomer", "responses") in cursors:
            have = {r["response_id"] for r in held["responses"] if r["vendor"] == "hellocustomer"}
            for rid in self.responses:
                when = _at(self.hc.response(rid)["dateAnswer"])
                if rid not in have and behind(("hellocustomer", "responses"), rid, when):
                    found.append(f"hellocustomer: response {rid} of {when}, behind the cursor")
        if ("hellocustomer", "unsubscribes") in cursors:
            for u in self.hc.unsubscribes():
                if ("hellocustomer", u["uniqueID"]) not in ids and behind(
                    ("hellocustomer", "unsubscribes"), u["email"], _at(u["date"])
                ):
                    found.append(f"hellocustomer: unsubscribe of {u['date']}, behind the cursor")
        if ("hellocustomer", "nps") in cursors:
            cursor, _ = cursors[("hellocustomer", "nps")]
            months = {n["period_start"] for n in held["nps"] if n["filter"] == "[]"}
            month = self.first.replace(day=1)  # each month from first_date's to the cursor's
            while month.isoformat() <= cursor:
                if month.isoformat() not in months:
                    found.append(f"hellocustomer: no NPS for {month}, cursor {cursor}")
                month = (month + timedelta(days=32)).replace(day=1)
        if ("signalvine", "unsubscribes") in cursors:
            phones = {u["phone"] for u in held["unsubscribes"] if u["vendor"] == "signalvine"}
            for phone, (_pid, seeded, out) in self.participants.items():
                # listed while updated (the later of its creation and its opt-out) >= cursor
                if out is not None and phone not in phones:
                    cursor, updated = cursors[("signalvine", "unsubscribes")]
                    if max(seeded, out) < _at(cursor) and self.added[phone] < _at(updated):
                        found.append(f"signalvine: opt-out of {phone} at {out}, cursor {cursor}")
        return found

    def nps_now(self, start: str, end: str) -> dict[str, Any]:
        """What Hello Customer answers for [start, end] now, asked as syncd asks it."""
        self.hc.min_interval = 0.0  # the loop is over: nobody else calls
        path = f"/V1.0/EN/campaign/{CAMPAIGN}/analysis/nps/getnpsscore/"
        stamp = "%Y%m%d%H%M%S"
        first, last = datetime.fromisoformat(start), datetime.fromisoformat(end)
        answer = Client(self.hc).post(
            path
            + first.strftime(stamp)
            + "/"
            + last.replace(hour=23, minute=59, second=59).strftime(stamp),
            json=[],
            headers={"Authorization": "basic sandbox-token"},
        )
        assert answer.status_code == 200, answer.get_data()
        return answer.get_json()  # type: ignore[no-any-return]


# --- the promises ---------------------------------------------------------------------------
def check(loop: PullLoop) -> Figures:
    figures = loop.figures
    held = loop.stored()
    figures.lost += [f"at the end: {p}" for p in loop.cursors_behind(held)]

    def compare(vendor: str, stored: list[str], want: set[str], what: str) -> None:
        counts = Counter(stored)
        figures.lost += [f"{vendor} {what} {i}: not stored" for i in sorted(want - set(counts))]
        figures.duplicate += [
            f"{vendor} {what} {i}: stored {n}x" for i, n in counts.items() if n > 1
        ]
        figures.duplicate += [
            f"{vendor} {what} {i}: stored, the vendor never had it" for i in set(counts) - want
        ]

    unsubscribes = {
        vendor: [u for u in held["unsubscribes"] if u["vendor"] == vendor]
        for vendor in ("esputnik", "hellocustomer", "signalvine")
    }
    compare(
        "esputnik",
        [u["vendor_id"] for u in unsubscribes["esputnik"]],
        {a["offset"] for a in loop.es.unsubscribes()},
        "activity",
    )
    compare(
        "hellocustomer",
        [u["vendor_id"] for u in unsubscribes["hellocustomer"]],
        {u["uniqueID"] for u in loop.hc.unsubscribes()},
        "unsubscribe",
    )
    # SignalVine: one opt-out per participant (the loop never opts one out twice), by its id
    # and the time it opted out
    out = {
        phone: f"{pid}@{when.replace(microsecond=0).isoformat()}"
        for phone, (pid, _seeded, when) in loop.participants.items()
        if when is not None
    }
    compare(
        "signalvine",
        [f"{u['vendor_id'].partition('@')[0]}@{u['at']}" for u in unsubscribes["signalvine"]],
        set(out.values()),
        "opt-out",
    )
    responses = [r["response_id"] for r in held["responses"] if r["vendor"] == "hellocustomer"]
    compare("hellocustomer", responses, set(loop.responses), "response")

    answers: dict[str, set[tuple[Any, ...]]] = {}
    for a in held["answers"]:
        answers.setdefault(a["response_id"], set()).add((a["answer_id"], a["score"], a["text"]))
    for rid in loop.responses:
        want = {
            (a["uniqueID"], a.get("answer_Value"), a.get("answer_Text"))
            for a in loop.hc.response(rid)["answerQuestions"]
        }
        if answers.get(rid, set()) != want and rid in responses:
            figures.stale.append(f"hellocustomer response {rid}: {answers.get(rid)} != {want}")
    figures.duplicate += [
        f"answers of response {rid}, which is not the vendor's"
        for rid in set(answers) - set(loop.responses)
    ]
    for n in held["nps"]:
        vendor = loop.nps_now(n["period_start"], n["period_end"])
        got = (n["nps"], n["detractors"], n["passives"], n["promoters"])
        says = (vendor["nps"], vendor["detractors"], vendor["passive"], vendor["promoters"])
        if got != says:
            figures.stale.append(f"hellocustomer NPS {n['period_start']}: {got}, vendor {says}")
    with closing(loop.db()) as conn:
        figures.left_running = conn.execute(
            "SELECT count(*) FROM runs WHERE status = 'running'"
        ).fetchone()[0]
    return figures


def fresh(before: dict[str, Any], after: dict[str, Any]) -> Counter[tuple[str, str]]:
    """(vendor, stream) → the records new or changed between two looks at the store, as a
    pull counts them: a response whose raw record or matched key changed, an NPS figure
    whose score or shares did, an unsubscribe whose key or time did."""
    keys = {
        "responses": (("vendor", "response_id"), ("raw", "key")),
        "nps": (
            ("vendor", "filter", "period_start", "period_end"),
            ("nps", "detractors", "passives", "promoters"),
        ),
        "unsubscribes": (("vendor", "vendor_id"), ("key", "at")),
    }
    out: Counter[tuple[str, str]] = Counter()
    for stream, (ident, values) in keys.items():
        was = {tuple(r[k] for k in ident): tuple(r[k] for k in values) for r in before[stream]}
        for r in after[stream]:
            key = tuple(r[k] for k in ident)
            if was.get(key) != tuple(r[k] for k in values):
                out[(r["vendor"], stream)] += 1
    return out


def last_counts(loop: PullLoop) -> tuple[str, dict[str, dict[str, Any]]]:
    with closing(loop.db()) as conn:
        status, counts = conn.execute(
            "SELECT status, counts FROM runs WHERE kind = 'pull' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    return status, json.loads(counts)


def reported(counts: dict[str, dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(
        {
            (vendor, stream): n
            for vendor, by in counts.items()
            for stream, n in by.items()
            if stream in ("responses", "nps", "unsubscribes") and n
        }
    )


def pull_kill_loop(folder: Path, kills: int, seed: int, *, fast: bool) -> Figures:
    """Vendor day, pull, kill at a random moment, until `kills` pulls were killed; then a
    vendor day and clean pulls; check."""
    started = time.monotonic()
    with Stack() as stack:
        loop = PullLoop(folder, stack, seed, fast=fast)
        loop.launch(None, "pull")  # the first, full pull measures how long one takes
        loop.check_run()
        while loop.figures.kills < kills:
            loop.iterate()
        loop.vendor_day()  # news for the clean pull to count
        before = loop.stored()
        assert loop.launch(None, "pull") == 0
        loop.check_run()
        status, counts = last_counts(loop)
        assert status == "ok", counts
        assert reported(counts) == fresh(before, loop.stored()), counts
        assert loop.launch(None, "pull") == 0  # nothing new since: nothing counted new
        status, counts = last_counts(loop)
        assert status == "ok" and not reported(counts), counts
        figures = check(loop)
        with closing(loop.db()) as conn:
            crashed = conn.execute("SELECT count(*) FROM runs WHERE status = 'crashed'").fetchone()
    figures.seconds = time.monotonic() - started
    print(figures.line(), f"({crashed[0]} runs closed as crashed)")
    for problem in figures.stale + figures.duplicate + figures.lost:
        print("  " + problem)
    return figures


def assert_promises(figures: Figures) -> None:
    assert_sync_promises(figures)
    assert figures.left_running == 0


def test_a_short_pull_kill_loop(tmp_path: Path) -> None:
    figures = pull_kill_loop(tmp_path, kills=10, seed=1, fast=True)
    assert_promises(figures)


@pytest.mark.slow
def test_the_long_pull_kill_loop(tmp_path: Path) -> None:
    figures = pull_kill_loop(tmp_path, kills=150, seed=2, fast=False)
    assert_promises(figures)
