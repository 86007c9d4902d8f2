"""SignalVine connector against its simulator over loopback HTTP: signatures, CSV uploads,
command polling, per-row errors, and opt-outs pulled back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import (
    AuthError,
    ConfigError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    RetriableError,
)
from syncd.pull import pull
from syncd.sandbox.base import Server, json_response
from syncd.sandbox.signalvine import PROGRAM, Command, SignalVineSim
from syncd.state import Store
from syncd.vendors import signalvine
from syncd.vendors.base import Contact, Result, Status
from syncd.vendors.signalvine import (
    SignalVine,
    SignalVineAuth,
    _changed,
    _instant,
    _unsubscribe,
    signature,
    timestamp,
)
from tests.kits.signalvine import MAPPING, contact
from tests.vendors.test_contract import deliver

PUSH = f"/v2/programs/{PROGRAM}/participants"
COMMANDS = "/v2/commands/"


@dataclass
class Env:
    sim: SignalVineSim
    server: Server
    clock: FakeClock
    folder: Path

    def config(
        self, extra: str = "", mapping: str = MAPPING, secret: str = "sandbox-secret"
    ) -> Path:
        (self.folder / "mapping.toml").write_text(mapping, encoding="utf-8")
        path = self.folder / "syncd.toml"
        path.write_text(
            '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
            f'[vendors.signalvine]\nbase_url = "{self.server.url}"\nmapping = "mapping.toml"\n'
            f'token = "sandbox-token"\nsecret = "{secret}"\nprogram = "{PROGRAM}"\n'
            f"retries = 1\nbackoff_base = 0.01\n{extra}",
            encoding="utf-8",
        )
        return path

    def connector(self, extra: str = "", **kw: str) -> SignalVine:
        cfg = load(self.config(extra, **kw))
        return SignalVine(cfg.vendors["signalvine"], clock=self.clock)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = FakeClock()
    sim = SignalVineSim(now=clock.now)
    with Server(sim) as server:
        yield Env(sim, server, clock, tmp_path)


def push(connector: SignalVine, batch: list[Contact]) -> tuple[dict[str, Result], list[str]]:
    jobs: list[str] = []
    results = connector.push(batch, jobs.append)
    assert sorted(r.key for r in results) == sorted(c.key for c in batch)
    return {r.key: r for r in results}, jobs


# --- signatures --------------------------------------------------------------------------
def test_signature_matches_the_sdk_test_vector() -> None:
    sig = signature(
        "INVENTED_TOKEN", "INVENTED_SECRET", "GET", "/bogus", "", "1969-07-20T20:17:00+00:00"
    )
    assert sig == "P1f0up2G0I6tJG4D3nRed/IlvvT2tqEQqbqEPXNQXDo="


def test_the_auth_signs_the_exact_body_bytes_path_and_date() -> None:
    clock = FakeClock()
    body = b'{"a":1, "b": "X"}'
    prepared = requests.Request("POST", "http://h:1/v2/Path?q=1", data=body).prepare()
    signed = SignalVineAuth("Tok", "sec", clock)(prepared)
    stamp = timestamp(clock.now())
    assert stamp == "2026-01-01T00:00:00.000Z"
    assert signed.headers["SignalVine-Date"] == stamp
    expected = signature("Tok", "sec", "POST", "/v2/Path", body.decode(), stamp)
    assert signed.headers["Authorization"] == f"SignalVine Tok:{expected}"


@pytest.mark.parametrize("wrong", ["token", "secret"])
def test_a_wrong_token_or_secret_is_a_clear_auth_error(env: Env, wrong: str) -> None:
    connector = env.connector(secret="not-the-secret")
    if wrong == "token":
        connector = env.connector()
        connector.http.session.auth = SignalVineAuth("not-the-token", "sandbox-secret", env.clock)
    for attempt in (lambda: connector.push([contact(1)], lambda job: None), connector.check):
        with pytest.raises(AuthError) as caught:
            attempt()
        message = str(caught.value)
        assert caught.value.vendor == "signalvine"
        assert message.startswith("signalvine: ")
        assert "signature" in message and "secret" in message and "401" in message
    assert env.sim.participants_by_customer() == {}


def test_a_clock_off_by_more_than_the_window_is_refused(env: Env) -> None:
    connector = env.connector()
    connector.check()  # the schema read is signed and accepted
    connector.clock = FakeClock(env.clock.now() + timedelta(minutes=10))
    connector.http.session.auth = SignalVineAuth("sandbox-token", "sandbox-secret", connector.clock)
    with pytest.raises(AuthError, match="clock"):
        connector.check()


@pytest.mark.parametrize(
    ("stamp", "code"),
    [
        ("2026-01-01T00:00:00.000Z", 200),
        ("2026-01-01T00:00:00.000123+00:00", 200),  # the SDK's isoformat()
        ("2026-01-01T00:00:00Z", 401),
        ("2026-01-01T00:00:00+00:00", 401),
    ],
)
def test_the_simulator_wants_the_date_to_the_millisecond(stamp: str, code: int) -> None:
    """Docbox's notes: "The timestamp parameter must include milliseconds to 3 digits -
    i.e. append .000 to your timestamp"; a date signed right without them was accepted."""
    clock = FakeClock()
    sim = SignalVineSim(now=clock.now)
    path = f"/v1/programs/{PROGRAM}"
    sig = signature("sandbox-token", "sandbox-secret", "GET", path, "", stamp)
    headers = {"Authorization": f"SignalVine sandbox-token:{sig}", "SignalVine-Date": stamp}
    assert Client(sim).get(path + "?type=schema", headers=headers).status_code == code


# --- uploads ----------------------------------------------------------------------------
def test_2000_contacts_go_in_one_upload_then_polls(env: Env) -> None:
    env.sim.polls_to_complete = 3
    connector = env.connector()
    contacts = [contact(i) for i in range(2000)]
    batches = list(connector.batches(contacts))
    assert len(batches) == 1
    seen_at_job: list[int] = []
    results = connector.push(batches[0], lambda job: seen_at_job.append(env.sim.count(COMMANDS)))
    assert {r.status for r in results} == {Status.SENT}
    assert seen_at_job == [0]  # the Location was reported before the first poll
    assert env.sim.count(PUSH, "POST") == 1
    assert env.sim.count(COMMANDS, "GET") == 3
    assert env.clock.slept == [2.0, 2.0, 2.0]
    body = env.sim.requests(PUSH)[0].json()
    assert body["options"] == {
        "new": "add",
        "mode": "row",
        "existing": ["phone", "first_name", "last_name", "email"],
        "absent": "ignore",
    }
    held = env.sim.participants_by_customer()
    assert len(held) == 2000
    assert held["K01999"]["phone"] == "+32470001999"


def test_awkward_values_round_trip_through_the_csv(env: Env) -> None:
    connector = env.connector()
    awkward = [
        'Smith, "Jr."',
        "line one\nline two",
        "crlf\r\ninside",
        '"',
        ",",
        "Zoë Ørsted — 東京 🎉",
        "trailing backslash \\",
        "",
    ]
    batch = [
        replace(contact(i), fields={**contact(i).fields, "first_name": v, "last_name": v[::-1]})
        for i, v in enumerate(awkward)
    ]
    results, _ = push(connector, batch)
    assert {r.status for r in results.values()} == {Status.SENT}
    held = env.sim.participants_by_customer()
    for c in batch:
        assert held[c.key]["first_name"] == c.fields["first_name"]
        assert held[c.key]["last_name"] == c.fields["last_name"]
    sent = env.sim.requests(PUSH)[0]
    compact = json.dumps(json.loads(sent.body), separators=(",", ":"), ensure_ascii=False)
    assert sent.body == compact.encode("utf-8")  # the text the server signs, as sent


def test_more_than_10_mb_is_split_and_a_too_big_body_is_refused(env: Env) -> None:
    mapping = MAPPING + 'notes = "Notes"\n'
    connector = env.connector(mapping=mapping)
    note = 'x, "y"\n' * 800  # ~6 KB raw, more once CSV-quoted and JSON-escaped
    contacts = [
        replace(contact(i), fields={**contact(i).fields, "notes": f"{i} {note}"})
        for i in range(1500)
    ]
    with pytest.raises(FatalError, match="413"):
        connector.push(contacts, lambda job: None)  # one body of ~14 MB: refused whole
    batches = list(connector.batches(contacts))
    assert len(batches) == 2
    for batch in batches:
        results, _ = push(connector, list(batch))
        assert {r.status for r in results.values()} == {Status.SENT}
    sizes = [len(r.body) for r in env.sim.requests(PUSH)[1:]]  # after the refused one
    assert len(sizes) == 2 and all(size < 10_000_000 for size in sizes)
    held = env.sim.participants_by_customer()
    assert len(held) == 1500
    assert held["K00042"]["notes"] == f"42 {note}"


# --- polling --------------------------------------------------------------------------
def test_the_poll_schedule_then_held_on_timeout(env: Env) -> None:
    env.sim.polls_to_complete = 0  # never completes
    connector = env.connector("poll_timeout = 120\n")
    results, jobs = push(connector, [contact(1), contact(2)])
    assert env.clock.slept == [2.0] * 16 + [4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0]
    assert env.sim.count(COMMANDS, "GET") == 24
    assert len(jobs) == 1 and jobs[0].startswith(COMMANDS)
    assert {r.status for r in results.values()} == {Status.IN_FLIGHT}
    assert "not complete" in (results["K00001"].reason or "")


def test_the_back_off_stops_growing_at_the_cap(env: Env) -> None:
    env.sim.polls_to_complete = 0
    connector = env.connector("poll_timeout = 100\npoll_cap = 9\n")
    push(connector, [contact(1)])
    assert env.clock.slept[:16] == [2.0] * 16
    # 32 s, then 36, 42, 50, then every 9 s until 100 s have passed (at 104 s)
    assert env.clock.slept[16:] == [4.0, 6.0, 8.0] + [9.0] * 6


def test_resume_polls_the_recorded_location_and_never_resends(env: Env) -> None:
    env.sim.polls_to_complete = 0
    contacts = [contact(i) for i in range(5)]
    env.sim.faults.reject("K00003", "invalid for the test")
    _, jobs = push(env.connector("poll_timeout = 2\n"), contacts)
    env.sim.polls_to_complete = 1
    restarted = env.connector()
    results = {r.key: r for r in restarted.resume(jobs[0], list(reversed(contacts)))}
    assert env.sim.count(PUSH, "POST") == 1
    assert results["K00003"].status is Status.FAILED
    assert results["K00003"].reason == "invalid for the test"
    assert all(results[c.key].status is Status.SENT for c in contacts if c.key != "K00003")


class OtherAccept(SignalVineSim):
    """Takes the upload as the real one does, then answers it with the test's status, with
    or without the command's Location."""

    status = 200
    location = True

    def upload(self, request: Request, program: str) -> Response:
        resp = super().upload(request, program)
        if resp.status_code == 202:
            resp.status_code = self.status
            if not self.location:
                del resp.headers["Location"]
        return resp


@pytest.mark.parametrize(
    ("status", "location"),
    [(200, True), (201, True), (202, False)],
    ids=["200", "201", "202-no-location"],
)
def test_only_202_with_a_location_accepts_an_upload(
    tmp_path: Path, status: int, location: bool
) -> None:
    """signalvine.md: "If your API POST is accepted, you will receive a 202 response back";
    the SDK raises on any other status. Any 2xx with a Location was followed, and its
    rows marked sent, by the old connector."""
    clock = FakeClock()
    sim = OtherAccept(now=clock.now)
    sim.status, sim.location = status, location
    with Server(sim) as server:
        connector = Env(sim, server, clock, tmp_path).connector()
        with pytest.raises(OutcomeUnknownError, match="not SignalVine's 202") as caught:
            connector.push([contact(0)], lambda job: None)
        assert f"HTTP {status}" in str(caught.value)
        outcome, _ = deliver(connector, [contact(1), contact(2)], tmp_path)
    assert {s for s, _r in outcome.values()} == {"pending"}
    assert sim.count(COMMANDS) == 0  # no Location was followed


class OtherPollStatus(SignalVineSim):
    """Answers a command poll, running or complete, with the test's 2xx."""

    status = 202

    def command(self, request: Request, command: str) -> Response:
        resp = super().command(request, command)
        if resp.status_code == 200:
            resp.status_code = self.status
        return resp


@pytest.mark.parametrize("status", [201, 202, 203])
def test_a_poll_is_read_only_from_a_200(tmp_path: Path, status: int) -> None:
    """The SDK's `get_location_status` reads a command only from a 200 and raises on any
    other status. A completed command answered with another 2xx had its rows marked sent."""
    clock = FakeClock()
    sim = OtherPollStatus(now=clock.now)
    sim.status = status
    with Server(sim) as server:
        connector = Env(sim, server, clock, tmp_path).connector()
        with pytest.raises(RetriableError, match=f"HTTP {status} where HTTP 200 was expected"):
            connector.push([contact(0)], lambda job: None)
        outcome, _ = deliver(connector, [contact(1)], tmp_path)
    assert {s for s, _r in outcome.values()} == {"pending"}


# --- per-row errors -----------------------------------------------------------------
def test_row_errors_are_mapped_to_their_contacts(env: Env) -> None:
    connector = env.connector()
    push(connector, [contact(100)])
    taken = replace(contact(5), fields={**contact(5).fields, "phone": "+32470000100"})
    batch = [contact(i) for i in range(5)] + [taken]
    env.sim.faults.reject("K00002", "opted out of the school year")
    results, _ = push(connector, batch)
    assert results["K00002"].status is Status.FAILED
    assert results["K00002"].reason == "opted out of the school year"
    assert results["K00005"].status is Status.FAILED
    assert "+32470000100 is already used" in (results["K00005"].reason or "")
    sent = {k for k, r in results.items() if r.status is Status.SENT}
    assert sent == {"K00000", "K00001", "K00003", "K00004"}
    assert set(env.sim.participants_by_customer()) == sent | {"K00100"}


@pytest.mark.parametrize("shared", ["", "SHARED"])
def test_an_error_naming_a_customer_id_rows_share_never_falls_on_another(
    env: Env, shared: str
) -> None:
    """Two rows of one upload with one customer_id (it mapped from a column that is not
    the CRM key), or none: their errors were placed on the last such row, so a refusal of
    the first failed the second and marked the refused one sent. Now such an id names no
    row, and the upload is split down to the row refused."""
    one, other = (
        replace(contact(i), fields={**contact(i).fields, "customer_id": shared}) for i in (1, 3)
    )
    env.sim.faults.reject("+32470000001", "number is a landline")
    outcome, _ = deliver(env.connector(), [one, contact(2), other, contact(5)], env.folder)
    assert outcome.pop("K00001")[0] == "failed"
    assert {s for s, _r in outcome.values()} == {"sent"}


class Unflagged(SignalVineSim):
    """A completed command that answers `error` of the test's choosing, whatever its
    report lists."""

    error: object = False

    def _status(self, command: Command) -> dict[str, Any]:
        answer = super()._status(command)
        if answer["complete"]:
            answer["error"] = self.error
        return answer


def test_row_errors_listed_under_error_false_are_not_marked_sent(tmp_path: Path) -> None:
    """signalvine.md, row mode: "respond with all errors that occurred during processing";
    the flag on a completed command is not documented to follow them. Read off the flag
    alone, the refused row was marked sent."""
    clock = FakeClock()
    sim = Unflagged(now=clock.now)
    sim.faults.reject("K00001", "Could not parse 'x' as PhoneNumber")
    with Server(sim) as server:
        results, _ = push(Env(sim, server, clock, tmp_path).connector(), [contact(0), contact(1)])
    assert results["K00000"].status is Status.SENT
    assert results["K00001"] == Result(
        "K00001", Status.FAILED, "Could not parse 'x' as PhoneNumber"
    )


@pytest.mark.parametrize("error", [None, "false", 0])
def test_a_completed_command_whose_error_is_no_boolean_acknowledges_nothing(
    tmp_path: Path, error: object
) -> None:
    clock = FakeClock()
    sim = Unflagged(now=clock.now)
    sim.error = error
    with Server(sim) as server, pytest.raises(RetriableError, match="neither true nor false"):
        push(Env(sim, server, clock, tmp_path).connector(), [contact(0)])


class Uncompleted(SignalVineSim):
    """Answers a command poll with `complete` of the test's choosing (absent: MISSING)."""

    complete: object = None

    def _status(self, command: Command) -> dict[str, Any]:
        answer = super()._status(command)
        if self.complete is MISSING:
            del answer["complete"]
        else:
            answer["complete"] = self.complete
        return answer


MISSING = object()


@pytest.mark.parametrize(
    "complete", [MISSING, None, "true", 1], ids=["absent", "null", "text", "1"]
)
def test_a_poll_whose_complete_is_no_boolean_acknowledges_nothing(
    tmp_path: Path, complete: object
) -> None:
    """signalvine.md shows every command status with `"complete": false` while it runs and
    `true` once done; the SDK reads `status_json["complete"]` (a KeyError without it). An
    answer without a boolean `complete` is no command status: it was polled as a running
    command until `poll_timeout` (15 minutes by default) for nothing. Now it acknowledges
    nothing at once, and the rows stay pending (they go again: an upsert)."""
    clock = FakeClock()
    sim = Uncompleted(now=clock.now)
    sim.complete = complete
    with Server(sim) as server:
        connector = Env(sim, server, clock, tmp_path).connector()
        with pytest.raises(RetriableError, match="neither true nor false"):
            connector.push([contact(0)], lambda job: None)
        assert sim.count(COMMANDS) == 1  # not polled on as a running command
        outcome, _ = deliver(connector, [contact(1)], tmp_path)
    assert {s for s, _r in outcome.values()} == {"pending"}


def test_tx_mode_adds_nothing_when_a_row_fails(env: Env) -> None:
    connector = env.connector('mode = "tx"\n')
    env.sim.faults.reject("K00001", "bad row")
    results, _ = push(connector, [contact(i) for i in range(4)])
    assert results["K00001"].status is Status.FAILED
    others = [results[k] for k in ("K00000", "K00002", "K00003")]
    assert {r.status for r in others} == {Status.PENDING}
    assert "tx" in (others[0].reason or "")
    assert env.sim.participants_by_customer() == {}


def test_row_mode_past_1000_errors_sends_the_good_rows_again(env: Env) -> None:
    """The vendor adds nothing when more than 1,000 rows fail: the rows without an error
    are uploaded again at once (not left pending for the next run)."""
    connector = env.connector()
    contacts = [contact(i) for i in range(1010)]
    for c in contacts[:1001]:
        env.sim.faults.reject(c.key, "no consent")
    results, jobs = push(connector, contacts)
    assert sum(r.status is Status.FAILED for r in results.values()) == 1001
    assert results["K00000"].reason == "no consent"
    assert {results[c.key].status for c in contacts[1001:]} == {Status.SENT}
    assert set(env.sim.participants_by_customer()) == {c.key for c in contacts[1001:]}
    posts = env.sim.requests(PUSH, "POST")
    assert len(posts) == 2
    again = posts[1].json()["participants"].splitlines()
    assert again[1:] == [",".join(connector._values(c)) for c in contacts[1001:]]
    first, second = jobs  # the second job names both commands: resume follows them
    assert second.split() == [first, second.split()[1]]


def test_shared_phones_past_1000_fail_only_the_later_contacts(env: Env) -> None:
    """bench_diff's export repeats a phone every 10,000 rows: each contact whose phone an
    earlier row has is refused; the first holder of each phone is added in the same push."""
    connector = env.connector()
    firsts = [contact(i) for i in range(1200)]
    later = [
        replace(
            contact(i), fields={**contact(i).fields, "phone": contact(i - 1200).fields["phone"]}
        )
        for i in range(1200, 2400)
    ]
    results, _ = push(connector, [*later, *firsts])
    assert {results[c.key].status for c in firsts} == {Status.SENT}
    assert {results[c.key].status for c in later} == {Status.FAILED}
    assert (
        results["K01200"].reason == "phone +32470000000 is already used by an earlier row (K00000)"
    )
    assert set(env.sim.participants_by_customer()) == {c.key for c in firsts}


def test_resume_follows_a_re_upload_without_re_sending(env: Env) -> None:
    contacts = [contact(i) for i in range(1010)]
    for c in contacts[:1001]:
        env.sim.faults.reject(c.key, "no consent")
    results, jobs = push(env.connector(), contacts)
    restarted = env.connector()
    resumed = {r.key: r for r in restarted.resume(jobs[-1], list(reversed(contacts)))}
    assert env.sim.count(PUSH, "POST") == 2
    assert {k: (r.status, r.reason) for k, r in resumed.items()} == {
        k: (r.status, r.reason) for k, r in results.items()
    }
    # the first command alone (a crash before the re-upload): its good rows stay pending
    alone = {r.key: r for r in restarted.resume(jobs[0], contacts)}
    assert env.sim.count(PUSH, "POST") == 2
    assert {alone[c.key].status for c in contacts[1001:]} == {Status.PENDING}
    assert "over 1,000" in (alone["K01005"].reason or "")


def test_re_uploads_stop_at_the_limit(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("syncd.vendors.signalvine.MAX_REUPLOADS", 0)
    connector = env.connector()
    contacts = [contact(i) for i in range(1010)]
    for c in contacts[:1001]:
        env.sim.faults.reject(c.key, "no consent")
    results, _ = push(connector, contacts)
    assert sum(r.status is Status.FAILED for r in results.values()) == 1001
    assert {results[c.key].status for c in contacts[1001:]} == {Status.PENDING}
    assert env.sim.participants_by_customer() == {}


@pytest.mark.parametrize("form", ["report", "text"])
def test_a_variable_the_program_lacks_stops_signalvine_with_every_contact_pending(
    env: Env, form: str
) -> None:
    """ "Unrecognized variable: x" (SignalVine's words, as the SDK's tests read them from a
    real command) is the mapping's fault: every row of every batch of the run, then of the
    next runs, was failed with it until dead."""
    env.sim.message_form = form
    connector = env.connector(mapping=MAPPING + 'nickname = "City"\n')
    with pytest.raises(EndpointError, match=r"variable\(s\) nickname") as caught:
        push(connector, [contact(1), contact(2)])
    assert "mapping.toml" in (caught.value.hint or "")
    outcome, _ = deliver(connector, [contact(1), contact(2)], env.folder)
    assert {s for s, _r in outcome.values()} == {"pending"}
    assert env.sim.participants_by_customer() == {}
    with pytest.raises(FatalError, match="no variable nickname"):
        connector.check()


def test_a_rows_own_value_quoting_unrecognized_variable_fails_that_row_alone(env: Env) -> None:
    """A row's refused value may be quoted in its error. Read from the whole message, one
    quoting "Unrecognized variable: first_name" (a header column) stopped SignalVine at
    every run, every contact pending; an error naming the row's customer_id is that row's."""
    why = "Could not parse 'Unrecognized variable: first_name' as Maybe (Boolean)"
    env.sim.faults.reject("K00002", why)
    outcome, _ = deliver(env.connector(), [contact(i) for i in range(4)], env.folder)
    assert outcome.pop("K00002") == ("failed", why)
    assert {s for s, _r in outcome.values()} == {"sent"}


@pytest.mark.parametrize("form", ["text", "report naming no customer_id"])
def test_a_value_quoting_unrecognized_variable_in_words_naming_no_row_fails_that_row_alone(
    env: Env, form: str
) -> None:
    """The same refusal, in words that name no row: the command's message as text, or a
    report whose error names only a row. SignalVine quotes the value it could not parse,
    "Unrecognized variable: first_name" (a header column) in a Boolean; read as the
    vendor's word on the header, it stopped SignalVine at every run, every contact
    pending, for one row's value. Words that a row of the upload holds are that row's:
    the upload is split down to it."""
    if form == "text":
        env.sim.message_form = "text"
    else:
        env.sim.errors_name_customer = False
    connector = env.connector(mapping=MAPPING + 'vip = "VIP"\n')
    value = "Unrecognized variable: first_name"
    contacts = [
        replace(c, fields={**c.fields, "vip": value if i == 2 else "yes"})
        for i, c in enumerate(contact(i) for i in range(4))
    ]
    outcome, _ = deliver(connector, contacts, env.folder)
    status, reason = outcome.pop("K00002")
    assert (status, f"Could not parse {value!r} as Boolean" in (reason or "")) == ("failed", True)
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert set(env.sim.participants_by_customer()) == set(outcome)


@pytest.mark.parametrize("mode", ["row", "tx"])
def test_errors_that_name_no_row_are_split_down_to_the_rows_refused(env: Env, mode: str) -> None:
    """A command whose message names no row (text, as the SDK's tests read SignalVine's
    words): every row was failed with it, those row mode added and the good ones tx mode
    held back too, run after run until dead. Now the upload is refused whole, and the
    delivery loop splits it until the refused row is alone."""
    env.sim.message_form = "text"
    connector = env.connector(f'mode = "{mode}"\n')
    env.sim.faults.reject("K00002", "Could not parse 'sure why not' as Maybe (Boolean)")
    outcome, _ = deliver(connector, [contact(i) for i in range(4)], env.folder)
    assert outcome.pop("K00002") == (
        "failed",
        "SignalVine refused the upload of 1 row(s) with errors that name no customer_id of "
        "it: Could not parse 'sure why not' as Maybe (Boolean)",
    )
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert set(env.sim.participants_by_customer()) == set(outcome)


@pytest.mark.parametrize("form", ["text", "report naming no customer_id"])
def test_a_refused_value_quoted_in_words_naming_no_row_is_split_out_first(
    env: Env, form: str
) -> None:
    """Words naming no row split the upload down by halves: two uploads of half the rest
    for each halving, 20 for one bad row of 1,000 (34 at the default batch of 100,000).
    SignalVine quotes the value it could not parse: the rows holding a quoted value go
    alone first and the rest beside them, so the bad row costs two uploads; its refusal
    is still the vendor's, on an upload of it alone."""
    if form == "text":
        env.sim.message_form = "text"
    else:
        env.sim.errors_name_customer = False
    connector = env.connector(mapping=MAPPING + 'vip = "VIP"\n')
    contacts = [
        replace(c, fields={**c.fields, "vip": "sure why not" if c.key == "K00700" else "yes"})
        for c in (contact(i) for i in range(1000))
    ]
    outcome, _ = deliver(connector, contacts, env.folder)
    status, reason = outcome.pop("K00700")
    assert status == "failed" and "Could not parse 'sure why not' as Boolean" in (reason or "")
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert env.sim.count(PUSH, "POST") == 3  # the batch, the row alone, the rest


def test_a_quoted_value_of_another_row_still_splits_down_to_the_refused_one(env: Env) -> None:
    """The quoted value only says which rows go alone first: a guess the vendor's next
    answer proves wrong (the row it points at is taken alone) costs one upload, and the
    halving goes on to the row refused; nobody is failed on the words alone."""
    env.sim.message_form = "text"
    env.sim.faults.reject("K00002", "Could not parse 'First5' as Boolean")
    outcome, _ = deliver(env.connector(), [contact(i) for i in range(8)], env.folder)
    assert outcome.pop("K00002")[0] == "failed"
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert set(env.sim.participants_by_customer()) == set(outcome)


@pytest.mark.parametrize("first_row", [0, 1, 2])
@pytest.mark.parametrize("mode", ["row", "tx"])
def test_errors_naming_only_a_row_never_fall_on_another_contact(
    env: Env, mode: str, first_row: int
) -> None:
    """How SignalVine's `row` counts is documented nowhere. An error naming only its row
    was placed as if the header were row 1: counted otherwise, it fell on the neighbouring
    contact, the refused row marked sent (row mode: never added) and a good one failed.
    Now a row alone names no contact: the upload is split down to the row refused."""
    env.sim.first_row = first_row
    env.sim.errors_name_customer = False
    connector = env.connector(f'mode = "{mode}"\n')
    env.sim.faults.reject("K00002", "no consent")
    outcome, _ = deliver(connector, [contact(i) for i in range(5)], env.folder)
    assert outcome.pop("K00002") == (
        "failed",
        "SignalVine refused the upload of 1 row(s) with errors that name no customer_id of "
        f"it: row {first_row}: no consent",
    )
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert set(env.sim.participants_by_customer()) == set(outcome)


def test_the_same_refusal_of_a_whole_upload_stops_signalvine(env: Env) -> None:
    """A refusal that names no row and comes for every row alone (no report at all) fails
    five contacts, then stops SignalVine, instead of an upload per contact."""
    env.sim.message_form = "text"
    for i in range(40):
        env.sim.faults.reject(contact(i).key, "Internal error")
    outcome, _ = deliver(env.connector(), [contact(i) for i in range(40)], env.folder)
    assert sum(s == "failed" for s, _r in outcome.values()) == 5
    assert {s for s, _r in outcome.values()} == {"failed", "pending"}
    assert env.sim.count(PUSH, "POST") < 20


def test_existing_limits_what_an_update_changes(env: Env) -> None:
    connector = env.connector('existing = ["first_name"]\n')
    push(connector, [contact(1)])
    changed = replace(
        contact(1), fields={**contact(1).fields, "first_name": "New", "last_name": "Other"}
    )
    results, _ = push(connector, [changed])
    assert results["K00001"].status is Status.SENT
    held = env.sim.participants_by_customer()["K00001"]
    assert (held["first_name"], held["last_name"]) == ("New", "Lastname")


def test_absent_and_bad_options_are_config_errors(env: Env) -> None:
    with pytest.raises(ConfigError, match="absent"):
        env.connector('absent = "delete"\n')
    with pytest.raises(ConfigError, match="existing"):
        env.connector('existing = ["nickname"]\n')
    # docbox: "one or more values in the header row"; [] went out, and a name twice
    for odd in ("[]", '["first_name", "first_name"]'):
        with pytest.raises(ConfigError, match=r"existing: .*each once.*\(none to update"):
            env.connector(f"existing = {odd}\n")
    with pytest.raises(ConfigError, match="metadata"):
        env.connector(mapping=MAPPING + '[metadata]\n"x" = "City"\n')


def test_existing_all_never_updates_the_ids_a_row_is_matched_on(env: Env) -> None:
    """signalvine.md's example puts signalvine_id in the header, not in `existing`; the
    SDK, whose `existing` is every column, warns "including the signalvine_id at all
    introduces mayhem". "all" listed a mapped signalvine_id among the variables to update."""
    mapping = MAPPING + 'signalvine_id = "SV ID"\n'
    options = env.connector(mapping=mapping).payload([contact(1)])["options"]
    assert options["existing"] == ["phone", "first_name", "last_name", "email"]
    with pytest.raises(ConfigError, match="never signalvine_id"):
        env.connector('existing = ["signalvine_id", "first_name"]\n', mapping=mapping)


def test_the_simulator_refuses_an_empty_existing(env: Env) -> None:
    connector = env.connector()
    body = connector.payload([contact(1)])
    body["options"] = {**body["options"], "existing": []}
    with pytest.raises(FatalError, match=r"options\.existing must be ignore or an array"):
        connector.call("POST", PUSH, body)


# --- opt-outs -------------------------------------------------------------------------
def test_opt_outs_are_pulled_with_paging_and_an_inclusive_cursor(env: Env) -> None:
    connector = env.connector("pull_lookback = 0\n")
    start = env.clock.now()
    push(connector, [contact(i) for i in range(1200)])
    env.sim.opt_out("K00007", start + timedelta(hours=1))
    env.sim.opt_out("+32470000900", start + timedelta(hours=2))
    env.clock.sleep(4 * 3600)  # the opt-outs are in the past of the pull
    pages = list(connector.pull("unsubscribes", None, env.clock.now()))
    assert len(pages) == 3  # 1200 participants, 500 a page
    queries = [r.query for r in env.sim.requests(f"/v1/programs/{PROGRAM}/participants")]
    assert all("type=full" in q and "count=500" in q and "active=all" in q for q in queries)
    assert [q.split("offset=")[1].split("&")[0] for q in queries] == ["0", "500", "1000"]
    records = [r for p in pages for r in p.records]
    assert {r["external_key"] for r in records} == {"K00007", "K00900"}
    assert {r["phone"] for r in records} == {"+32470000007", "+32470000900"}
    assert all(r["channel"] == "sms" and r["vendor_id"].endswith(r["at"]) for r in records)
    cursor = pages[-1].cursor
    assert cursor == timestamp(start + timedelta(hours=2))
    assert [p.cursor for p in pages[:-1]] == ["1970-01-01T00:00:00.000Z"] * 2

    env.sim.opt_out("K00011", start + timedelta(hours=3))
    again = [r for p in connector.pull("unsubscribes", cursor, env.clock.now()) for r in p.records]
    # the boundary participant is read again, with the same id: nothing doubles in the store
    assert {r["external_key"] for r in again} == {"K00900", "K00011"}
    assert {r["vendor_id"] for r in again} & {r["vendor_id"] for r in records} == {
        next(r["vendor_id"] for r in records if r["external_key"] == "K00900")
    }


class ZeroAtTheEnd(SignalVineSim):
    """The last page answers `nextOffset: 0`, as docbox's one-page lists do (`"nextOffset":
    0, "prevOffset": 0, "lastOffset": 0, "pages": 1`), and carries no `lastOffset`."""

    def participants(self, request: Request, program: str) -> Response:
        answer = super().participants(request, program)
        page = json.loads(answer.get_data())
        if page["offset"] >= page.pop("lastOffset"):
            page["nextOffset"] = 0
        return json_response(page, answer.status_code)


@pytest.mark.parametrize("sim_class", [SignalVineSim, ZeroAtTheEnd])
@pytest.mark.parametrize("people", [3, 1000])
def test_the_last_page_is_the_one_whose_next_offset_is_not_after_it(
    tmp_path: Path, sim_class: type[SignalVineSim], people: int
) -> None:
    """Docbox answers a one-page list with `nextOffset: 0`: that was taken for paging gone
    wrong (the stream failed at every pull and no opt-out was ever read)."""
    clock = FakeClock()
    sim = sim_class(now=clock.now)
    with Server(sim) as server:
        env = Env(sim, server, clock, tmp_path)
        connector = env.connector("pull_lookback = 0\n")
        push(connector, [contact(i) for i in range(people)])
        at = clock.now() + timedelta(hours=1)
        sim.opt_out(f"K{people - 1:05d}", at)
        clock.sleep(2 * 3600)
        pages = list(connector.pull("unsubscribes", None, clock.now()))
    assert len(pages) == -(-people // 500)
    assert [r["external_key"] for p in pages for r in p.records] == [f"K{people - 1:05d}"]
    assert pages[-1].cursor == timestamp(at)


def test_pulled_opt_outs_are_stored_once(env: Env, tmp_path: Path) -> None:
    env.sim.opt_out_every = 3
    push(env.connector(), [contact(i) for i in range(9)])
    cfg = load(env.config())
    store = Store.open(cfg.store.path)
    try:
        for _ in range(2):  # the second pull re-reads the lookback window
            report = pull(cfg, store, env.clock)
            assert report.exit_code == 0
        rows = store.query("SELECT vendor_id, phone FROM unsubscribes ORDER BY phone")
        assert [r["phone"] for r in rows] == ["+32470000002", "+32470000005", "+32470000008"]
        assert store.scalar("SELECT cursor FROM cursors WHERE vendor = 'signalvine'")
    finally:
        store.close()
    assert env.sim.state()["inactive"] == 3


def test_an_opt_out_is_timed_by_its_active_variable_and_keeps_its_id(env: Env) -> None:
    """Items carry no `updatedAt` (the SDK's fixture): the cursor follows `profile[].updated`,
    and a later change to another variable neither re-times nor duplicates the opt-out."""
    connector = env.connector("pull_lookback = 60\n")
    start = env.clock.now()
    push(connector, [contact(i) for i in range(3)])
    env.sim.opt_out("K00001", start + timedelta(hours=1))
    first = [r for p in connector.pull("unsubscribes", None, env.clock.now()) for r in p.records]
    env.clock.sleep(3 * 3600)
    renamed = replace(contact(1), fields={**contact(1).fields, "first_name": "Renamed"})
    push(connector, [renamed])  # applied at the first poll: the newest change is now
    pages = list(connector.pull("unsubscribes", None, env.clock.now()))
    again = [r for p in pages for r in p.records]
    assert [r["at"] for r in again] == [timestamp(start + timedelta(hours=1))]
    assert [r["vendor_id"] for r in again] == [r["vendor_id"] for r in first]
    assert env.sim.participants_by_customer()["K00001"]["first_name"] == "Renamed"
    assert pages[-1].cursor == timestamp(env.clock.now() - timedelta(seconds=60))


class Timeless(SignalVineSim):
    """Participant items with no time at all: no `created`, no `profile[].updated`."""

    def participants(self, request: Request, program: str) -> Response:
        answer = super().participants(request, program)
        page = json.loads(answer.get_data())
        for item in page.get("items", []):
            item.pop("created")
            for variable in item["profile"]:
                variable.pop("updated")
        return json_response(page, answer.status_code)


def test_without_any_time_the_cursor_is_until_less_lookback_and_the_opt_out_untimed(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    sim = Timeless(now=clock.now)
    with Server(sim) as server:
        env = Env(sim, server, clock, tmp_path)
        connector = env.connector("pull_lookback = 300\n")
        push(connector, [contact(1), contact(2)])
        sim.opt_out("K00002")
        until = clock.now() + timedelta(minutes=5)
        pages = list(connector.pull("unsubscribes", None, until))
        empty = list(connector.pull("unsubscribes", pages[-1].cursor, until))
    records = [r for p in pages for r in p.records]
    assert records == [
        {
            "vendor_id": records[0]["vendor_id"],
            "external_key": "K00002",
            "email": "person2@example.com",
            "phone": "+32470000002",
            "channel": "sms",
            "at": None,  # unknown, not the pull's time
        }
    ]
    assert "@" not in records[0]["vendor_id"]
    assert pages[-1].cursor == timestamp(until - timedelta(seconds=300))
    assert empty[-1].cursor == pages[-1].cursor


def test_an_items_time_prefers_updated_at_then_the_newest_profile_write() -> None:
    profile = [
        {"name": "first_name", "updated": "2020-10-28T14:36:57.831Z"},
        {"name": "active", "updated": "2020-11-11T16:43:50.579Z", "value": "false"},
    ]
    item = {"id": "p1", "created": "2020-01-01T00:00:00.000Z", "active": False}
    assert _changed({**item, "profile": profile}) == _instant("2020-11-11T16:43:50.579Z")
    updated = {**item, "profile": profile, "updatedAt": "2021-01-01T00:00:00Z"}
    assert _changed(updated) == _instant("2021-01-01T00:00:00Z")
    assert _changed(item) is None  # `created` is not a change the opt-out can be timed by
    assert _unsubscribe(updated)["at"] == "2020-11-11T16:43:50.579Z"


class ListPolls(SignalVineSim):
    """Answers a command poll with a JSON array."""

    def command(self, request: Request, command: str) -> Response:
        return json_response([{"complete": True}])


def test_a_poll_answered_with_another_shape_is_retriable_and_says_what_came(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    with Server(ListPolls(now=clock.now)) as server:
        env = Env(SignalVineSim(), server, clock, tmp_path)
        with pytest.raises(RetriableError) as caught:
            push(env.connector(), [contact(1)])
    assert str(caught.value).startswith(f"signalvine: GET {COMMANDS}")
    assert "answered HTTP 200 with a JSON array where a JSON object was expected: '[" in str(
        caught.value
    )


class ChangedEveryPage(SignalVineSim):
    """As each page after the first is asked for, the participant the asked list starts
    with (read on the pull's first page) is edited, a second later: the list, ordered by
    last change, moves under the offsets between every two pages, and a participant at a
    page's offset is on no page."""

    editor = FakeClock()  # the clock the edits wait on (the test's)

    def participants(self, request: Request, program: str) -> Response:
        after = _instant(request.args.get("updated-after", "1970-01-01T00:00:00+00:00"))
        if request.args.get("offset") != "0":
            with self.lock:
                listed = [p for p in self._participants.values() if p.updated >= after]
                first = min(listed, key=lambda p: (p.updated, p.id))
                self.editor.sleep(1)
                first.write({"notes": "edited"}, self.now())
        return super().participants(request, program)


def test_a_list_changed_between_every_page_loses_no_opt_out_and_the_cursor_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of two over ten participants, one of those already read edited before every
    page. The cursor stayed where it was whenever fewer participants were read than the
    list's `total`: under constant change, at every pull, so it never moved. Taken to the
    newest change read, it passes the participants that were on no page and loses their
    opt-outs. It goes to the end of the first page a participant read again was on."""
    monkeypatch.setattr(signalvine, "PAGE", 2)
    clock = FakeClock()
    sim = ChangedEveryPage(now=clock.now)
    sim.editor = clock
    start = clock.now()
    for i in range(10):
        sim.seed(f"K{i}", f"+3247000000{i}")
        if i in (2, 5, 8):
            sim.opt_out(f"K{i}", clock.now() + timedelta(seconds=1))
        clock.sleep(60)
    seeded = timestamp(start + timedelta(seconds=60 * 9 + 1))
    stored: set[str] = set()
    cursors: list[str] = []
    with Server(sim) as server:
        connector = Env(sim, server, clock, tmp_path).connector("pull_lookback = 0\n")
        cursor = None
        for _ in range(8):
            pages = list(connector.pull("unsubscribes", cursor, clock.now()))
            stored |= {r["external_key"] for p in pages for r in p.records}
            cursor = pages[-1].cursor
            cursors.append(cursor)
    assert stored == {"K2", "K5", "K8"}
    assert cursors == sorted(set(cursors))  # every pull moves it on
    assert cursors[-1] > seeded  # past every participant of the list as it first was


class DocboxTotal(SignalVineSim):
    """A one-page list whose `total` is more than its items, as in docbox's own example
    (content/api.md, Program Participants: three items, `"total": 10`, `"pages": 1`)."""

    def participants(self, request: Request, program: str) -> Response:
        answer = super().participants(request, program)
        page = json.loads(answer.get_data())
        page["total"] += 7
        return json_response(page, answer.status_code)


def test_a_total_above_the_items_read_does_not_hold_the_cursor(tmp_path: Path) -> None:
    """The cursor stayed whenever fewer participants were read than `total`, taken for the
    list's length: on docbox's own example answer, at every pull, for ever."""
    clock = FakeClock()
    sim = DocboxTotal(now=clock.now)
    with Server(sim) as server:
        connector = Env(sim, server, clock, tmp_path).connector("pull_lookback = 0\n")
        for i in range(3):
            sim.seed(f"K{i}", f"+3247000000{i}")
        at = clock.now() + timedelta(minutes=1)
        sim.opt_out("K1", at)
        clock.sleep(120)
        pages = list(connector.pull("unsubscribes", None, clock.now()))
    assert [r["external_key"] for p in pages for r in p.records] == ["K1"]
    assert pages[-1].cursor == timestamp(at)


class OtherPageStatus(SignalVineSim):
    """Answers a participant page with a 2xx other than 200 (a 206: a part of it)."""

    def participants(self, request: Request, program: str) -> Response:
        resp = super().participants(request, program)
        if resp.status_code == 200:
            resp.status_code = 206
        return resp


def test_a_participant_page_is_read_only_from_a_200(tmp_path: Path) -> None:
    """The SDK's get_participants_chunk reads `items` only from a 200: a 206 page was taken
    as the whole page, and the cursor moved past what it left out."""
    clock = FakeClock()
    sim = OtherPageStatus(now=clock.now)
    with Server(sim) as server:
        sim.seed("K1", "+32470000001")
        sim.opt_out("K1")
        connector = Env(sim, server, clock, tmp_path).connector()
        with pytest.raises(RetriableError, match="HTTP 206 where HTTP 200 was expected"):
            list(connector.pull("unsubscribes", None, clock.now()))


def test_commands_a_restart_finds_forgotten_are_sent_again_without_stopping_signalvine(
    tmp_path: Path,
) -> None:
    """syncd stopped with commands being polled and came back after SignalVine had forgotten
    them (how long it keeps a command's status is not documented): each recorded Location
    answers 404. A command lost, not a moved endpoint: SignalVine is not stopped as if its
    base_url were wrong (eSputnik was, run after run), and the rows go again in this run."""
    from syncd.push import Deliverer
    from tests.kits.signalvine import KIT
    from tests.test_push import NOW, queue
    from tests.vendors.test_contract import make_connector

    sim = SignalVineSim()
    with Server(sim) as server:
        connector = make_connector(KIT, server.url, tmp_path, extra="poll_first = 0.01\n")
        store = Store.open(tmp_path / "s.db")
        contacts = [KIT.contact(i) for i in range(4)]
        gone = f"{server.url}/v2/commands/gone-"
        queue(store, "signalvine", [(c, "in_flight", f"{gone}{i}") for i, c in enumerate(contacts)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        rows = {r["key"]: r["status"] for r in store.query("SELECT key, status FROM deliveries")}
        store.close()
    assert out.stopped is None, out.stopped
    assert rows == {c.key: "sent" for c in contacts}
    assert set(sim.participants_by_customer()) == {c.key for c in contacts}


# --- rows SignalVine ignores (new / existing = "ignore") ----------------------------------
def _held(env: Env, sent: set[str], contacts: list[Contact]) -> None:
    """Every contact recorded sent is a participant holding its data."""
    have = env.sim.participants_by_customer()
    for c in contacts:
        if c.key in sent:
            assert {k: have[c.key][k] for k in c.fields} == dict(c.fields), c.key


def test_new_ignore_skips_the_rows_signalvine_did_not_add(env: Env) -> None:
    env.sim.seed("K00001", "+32470000001", first_name="Old")
    connector = env.connector('new = "ignore"\n')
    contacts = [contact(i) for i in range(4)]
    outcome, _ = deliver(connector, contacts, env.folder)
    assert outcome["K00001"] == ("sent", None)
    for key in ("K00000", "K00002", "K00003"):
        status, reason = outcome[key]
        assert status == "skipped", key
        assert 'SignalVine ignored it: new = "ignore"' in (reason or "")
    assert set(env.sim.participants_by_customer()) == {"K00001"}
    _held(env, {"K00001"}, contacts)


def test_existing_ignore_never_records_an_ignored_participant_sent(env: Env) -> None:
    env.sim.seed("K00001", "+32470000001", first_name="Old")
    connector = env.connector('existing = "ignore"\n')
    results, _ = push(connector, [contact(1)])
    assert results["K00001"].status is Status.SKIPPED
    assert 'existing = "ignore" and it is a participant' in (results["K00001"].reason or "")
    assert env.sim.participants_by_customer()["K00001"]["first_name"] == "Old"
    results, _ = push(connector, [contact(5), contact(6)])  # none a participant: all added
    assert {r.status for r in results.values()} == {Status.SENT}
    contacts = [contact(i) for i in range(4)]
    outcome, _ = deliver(connector, contacts, env.folder)
    assert {status for status, _ in outcome.values()} == {"skipped"}  # which were added?
    assert "it ignored 1 of the 4 rows" in (outcome["K00000"][1] or "")
    assert len(env.sim.requests(PUSH, "POST")) == 3  # nothing re-uploaded to tell them
    assert env.sim.participants_by_customer()["K00001"]["first_name"] == "Old"


def test_with_an_ignore_option_a_report_without_an_ignored_count_marks_nothing_sent(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    sim = SignalVineSim(now=clock.now, message_form="text")
    with Server(sim) as server:
        connector = Env(sim, server, clock, tmp_path).connector('new = "ignore"\n')
        with pytest.raises(EndpointError, match="counts no rows ignored"):
            connector.push([contact(0)], lambda job: None)


def test_new_and_existing_both_ignore_is_a_config_error(env: Env) -> None:
    with pytest.raises(ConfigError, match='both "ignore"'):
        env.connector('new = "ignore"\nexisting = "ignore"\n')


# --- a new customer_id with a phone another participant has -------------------------------
@pytest.mark.parametrize("reading", ["refuse", "update"])
def test_a_new_customer_whose_phone_another_participant_has_is_never_sent(
    tmp_path: Path, reading: str
) -> None:
    """docbox: "`new = add`: any participants in the CSV that don't exist in Signal Vine
    will be added (i.e. customer_id & phone don't exist ...)": SignalVine may refuse the
    row (the SDK's tests) or take it as the participant holding the phone, and update that
    one; the report then counts it updated, as any change."""
    clock = FakeClock()
    sim = SignalVineSim(now=clock.now, phone_taken=reading)
    with Server(sim) as server:
        env = Env(sim, server, clock, tmp_path)
        other = sim.seed("K00100", "+32470000100", first_name="Other")
        sim.seed("K00001", "+32470000001", first_name="Old")
        taken = replace(contact(5), fields={**contact(5).fields, "phone": "+32470000100"})
        contacts = [contact(1), contact(2), taken]
        outcome, _ = deliver(env.connector(), contacts, tmp_path)
        assert outcome["K00001"] == ("sent", None)
        assert outcome["K00002"] == ("sent", None)
        status, reason = outcome["K00005"]
        assert status == "failed"
        assert other in (reason or "")
        _held(env, {"K00001", "K00002"}, contacts)
        if reading == "update":  # what the vendor did, which syncd must not call sent
            assert sim.participants_by_customer()["K00100"]["first_name"] == "First5"
            assert "'K00100'" in (reason or "")


def test_the_check_reads_only_after_an_upload_that_updated_someone(env: Env) -> None:
    push(env.connector(), [contact(i) for i in range(3)])  # all added: nothing to read
    assert env.sim.requests(f"/v1/programs/{PROGRAM}/participants") == []


def test_a_command_still_running_at_poll_timeout_is_held_and_no_newer_data_goes_before_it(
    env: Env,
) -> None:
    """As an eSputnik session: a command still running at `poll_timeout` is still queued at
    SignalVine, which may run it after a newer upload of its rows (the order of commands is
    documented nowhere). Left pending, the command forgotten, the contact's next change went
    in a new upload; the old command, run after it, would leave SignalVine holding the old
    data while the store had the new acknowledged. Held, its rows stay in flight with the
    command recorded, the next run polls it first, and no newer upload of them goes before
    it completes."""
    from syncd.push import Deliverer
    from tests.test_push import NOW, ledger, queue

    def first(c: Contact, name: str) -> Contact:
        return Contact(c.key, {**c.fields, "first_name": name}, c.metadata)

    def uploads(key: str) -> int:
        return sum(key in r.json()["participants"] for r in env.sim.requests(PUSH, "POST"))

    def run(store: Store) -> dict[str, int]:
        connector = env.connector("poll_timeout = 30\n")
        return dict(Deliverer(store, connector, lambda: NOW, max_attempts=3).run().counts)

    env.sim.polls_to_complete = 0  # SignalVine has not run the command by poll_timeout
    store = Store.open(env.folder / "s.db")
    queue(store, "signalvine", [(first(contact(1), "Old"), "pending", None)])
    assert run(store) == {"in_flight": 1}
    status, job, reason = ledger(store)["K00001"]
    assert status == "in_flight" and job and job.startswith(COMMANDS)  # recorded: polled again
    assert "not complete after 30 s" in (reason or "") and "held" in (reason or "")
    queue(store, "signalvine", [(first(contact(1), "New"), "pending", None)])
    assert run(store) == {"in_flight": 1, "pending": 1}  # the new data held back
    assert uploads("K00001") == 1
    env.sim.polls_to_complete = 1  # SignalVine runs the old command at last
    assert run(store) == {"sent": 2}
    assert uploads("K00001") == 2
    assert env.sim.participants_by_customer()["K00001"]["first_name"] == "New"
    store.close()
