"""Dropthought against its simulator: token reuse, renewal, re-login, one call per contact."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest
import requests
from werkzeug.wrappers import Request, Response

from syncd import log as logmod
from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import AuthError, ConfigError, EndpointError, FatalError
from syncd.push import Deliverer
from syncd.sandbox.base import Server
from syncd.sandbox.dropthought import DropthoughtSim
from syncd.state import Store
from syncd.vendors import Contact, Status
from syncd.vendors.dropthought import Dropthought, echoed
from tests.kits.dropthought import MAPPING, contact, held, triggers

LOGIN = "/dtapp/api/authenticate/login"
RENEW = "/dtapp/api/token/renew"
PARTICIPANT = "/dtapp/api/participant/"


class World:
    """A simulator and connectors sharing one fake clock; `skew` moves only the vendor's."""

    def __init__(
        self,
        folder: Path,
        password: str = "sandbox-password",
        renew_shape: Literal["result", "top"] = "result",
    ) -> None:
        self.folder = folder
        self.clock = FakeClock(datetime(2026, 3, 1, tzinfo=UTC))
        self.skew = 0.0
        self.sim = DropthoughtSim(
            password=password,
            renew_shape=renew_shape,
            now=lambda: self.clock.now().timestamp() + self.skew,
        )
        self.server = Server(self.sim).start()

    def connector(
        self, *, password: str = "sandbox-password", mapping: str = MAPPING, extra: str = ""
    ) -> Dropthought:
        (self.folder / "mapping.toml").write_text(mapping, encoding="utf-8")
        (self.folder / "syncd.toml").write_text(
            '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
            f'[vendors.dropthought]\nbase_url = "{self.server.url}"\nmapping = "mapping.toml"\n'
            f'email = "ops@example.com"\npassword = "{password}"\n'
            'participant_group = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"\n'
            f"retries = 2\nbackoff_base = 0.01\nread_timeout = 5\n{extra}",
            encoding="utf-8",
        )
        cfg = load(self.folder / "syncd.toml")
        return Dropthought(cfg.vendors["dropthought"], clock=self.clock)

    def counts(self) -> tuple[int, int, int]:
        """(logins, renewals, participant calls) that reached the vendor."""
        return (
            self.sim.count(LOGIN),
            self.sim.count(RENEW),
            self.sim.count(PARTICIPANT),
        )


@pytest.fixture(params=["result", "top"], ids=["renewal-in-result", "renewal-at-top"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[World]:
    """Every test runs with both shapes of a renewal's answer: `result.{accessToken,
    refreshToken}` as login answers, and both at the top level, where the SDK reads them."""
    w = World(tmp_path, renew_shape=request.param)
    yield w
    w.server.stop()


def push_one(connector: Dropthought, c: Contact) -> Status:
    [result] = connector.push([c], lambda job: None)
    return result.status


def test_one_login_serves_every_participant(world: World) -> None:
    connector = world.connector()
    contacts = [contact(i) for i in range(20)]
    results = [r for b in connector.batches(contacts) for r in connector.push(b, lambda j: None)]
    assert world.counts() == (1, 0, 20)
    assert {r.status for r in results} == {Status.SENT}
    stored = held(world.sim)
    assert {r.key: r.ref for r in results} == {k: p["participant_uuid"] for k, p in stored.items()}
    first = stored[contacts[0].key]["record"]
    assert first == {
        "Email": "person0@example.com",
        "Phone": "+32470000000",
        "Name": "First0",
        "CRM ID": "K00000",
        "Closed Date": "2026-01-01 14:00:00",
        "Ticket Type": "Billing",
        "Store": "Store 1",
    }
    body = world.sim.requests(PARTICIPANT)[0]
    assert body.query == "participantgroupuuid=6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"
    assert body.json()["header"] == list(first)


def pending(folder: Path, n: int, metadata: dict[str, str] | None = None) -> tuple[Store, datetime]:
    """A store holding `n` pending Dropthought deliveries (their metadata plus `metadata`)."""
    store = Store.open(folder / "s.db")
    now = datetime.now(UTC)
    run = store.start_run("test", now)
    with store.write() as c:
        for ct in (contact(i) for i in range(n)):
            values = dict(ct.metadata) | (metadata or {})
            payload = json.dumps({"fields": dict(ct.fields), "metadata": values})
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at) VALUES (?, 'dropthought', ?, 'new', 'pending', 'h', ?, ?, ?)",
                (run, ct.key, payload, now.isoformat(), now.isoformat()),
            )
    return store, now


@pytest.mark.parametrize("later", [3500.0, 3700.0], ids=["inside-margin", "past-expiry"])
def test_an_access_token_expiring_mid_run_is_renewed_once(
    world: World, tmp_path: Path, later: float
) -> None:
    connector = world.connector()
    store, now = pending(tmp_path, 10)

    def progress(vendor: str, sent: int) -> None:
        if sent == 5:
            world.clock.sleep(later)  # an hour passes in the middle of the run

    out = Deliverer(store, connector, lambda: now, max_attempts=3, progress=progress).run()
    rows = store.query(
        "SELECT d.status, d.vendor_ref, vs.ref FROM deliveries d "
        "JOIN vendor_state vs ON vs.vendor = d.vendor AND vs.key = d.key"
    )
    store.close()
    assert out.counts["sent"] == 10
    uuids = {p["participant_uuid"] for p in held(world.sim).values()}
    assert {(r["status"], r["vendor_ref"], r["ref"]) for r in rows} == {
        ("sent", u, u) for u in uuids
    }
    assert world.counts() == (1, 1, 10)  # renewed before use: no call was refused


@pytest.mark.parametrize("path", [LOGIN, RENEW])
def test_a_failed_login_or_renewal_leaves_the_contacts_pending(
    world: World, tmp_path: Path, path: str
) -> None:
    """Tokens are obtained before a contact is marked in flight: when that fails (or syncd
    dies there), no participant call went out, so nothing is `unknown`."""
    connector = world.connector()
    store, now = pending(tmp_path, 3)
    if path == RENEW:
        connector.tokens.login()
        world.clock.sleep(3500.0)  # inside the renewal margin: the next call renews
    world.sim.faults.add("drop_after", count=-1, path=path)
    out = Deliverer(store, connector, lambda: now, max_attempts=3).run()
    statuses = {r["status"] for r in store.query("SELECT status FROM deliveries")}
    assert out.stopped and statuses == {"pending"}
    assert world.sim.count(PARTICIPANT) == 0
    world.sim.faults.clear()
    out = Deliverer(store, connector, lambda: now, max_attempts=3).run()
    store.close()
    assert out.counts["sent"] == 3 and set(triggers(world.sim).values()) == {1}


def test_a_401_renews_once_and_retries(world: World) -> None:
    connector = world.connector()
    assert push_one(connector, contact(1)) is Status.SENT
    world.skew = 3700.0  # Dropthought's clock says the access token expired; ours does not
    assert push_one(connector, contact(2)) is Status.SENT
    assert world.counts() == (1, 1, 3)  # the refused call, then the retry
    assert triggers(world.sim)[contact(2).key] == 1


def test_a_refused_refresh_token_means_logging_in_again(world: World) -> None:
    connector = world.connector()
    assert push_one(connector, contact(1)) is Status.SENT
    world.skew = 90000.0  # both tokens expired at Dropthought
    assert push_one(connector, contact(2)) is Status.SENT
    assert world.counts() == (2, 1, 3)
    assert world.sim.renewals == 0  # the renewal was refused


def test_an_expired_refresh_token_is_not_even_tried(world: World) -> None:
    connector = world.connector()
    assert push_one(connector, contact(1)) is Status.SENT
    world.clock.sleep(90000.0)  # a day later, for both sides
    assert push_one(connector, contact(2)) is Status.SENT
    assert world.counts() == (2, 0, 2)


def test_a_third_401_is_an_auth_error(world: World) -> None:
    connector = world.connector()
    assert push_one(connector, contact(1)) is Status.SENT
    world.sim.faults.add("status", status=401, count=3, path=PARTICIPANT)
    with pytest.raises(AuthError):
        connector.push([contact(2)], lambda job: None)
    assert world.counts() == (2, 1, 1)  # one renewal, one login, no more


@pytest.mark.parametrize("who", ["connector", "vendor"])
def test_overlapping_calls_renew_once(world: World, who: str) -> None:
    connector = world.connector()
    assert push_one(connector, contact(0)) is Status.SENT
    if who == "connector":
        world.clock.sleep(3500.0)  # we see the token about to expire
    else:
        world.skew = 3700.0  # only Dropthought knows: every call is refused with a 401
    world.sim.faults.add("delay", seconds=0.3, count=1, path=RENEW)  # a slow renewal
    barrier = threading.Barrier(8)
    statuses: list[Status] = []

    def call(i: int) -> None:
        barrier.wait()
        statuses.append(push_one(connector, contact(i)))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert statuses == [Status.SENT] * 8
    logins, renewals, _calls = world.counts()
    assert (logins, renewals) == (1, 1)
    assert sum(triggers(world.sim).values()) == 9


def test_the_password_never_reaches_a_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    password = "pw-Zq9-never-logged-7731"  # deliberately not registered for redaction
    world = World(tmp_path, password=password)
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")
    try:
        connector = world.connector(password=password)
        assert connector.config.secrets == (password,)  # known to the log redactor
        connector.check()
        push_one(connector, contact(1))
        world.skew = 3700.0
        push_one(connector, contact(2))
        world.skew = 100000.0  # past the renewed refresh token too
        push_one(connector, contact(3))
        with pytest.raises(AuthError) as refused:
            world.connector(password="wrong-" + password).check()
    finally:
        world.server.stop()
    refresh_tokens = [r.json()["refreshToken"] for r in world.sim.requests(RENEW)]
    text = out.getvalue() + caplog.text + str(refused.value)
    assert "logged in" in text and "renewal refused" in text
    assert password not in text
    assert refresh_tokens and not any(t in text for t in refresh_tokens)


def test_a_participant_outside_the_list_fails_with_dropthoughts_reason(world: World) -> None:
    mapping = MAPPING.replace('"Store" = "Store"', '"Shop" = "Store"')
    connector = world.connector(mapping=mapping)
    c = contact(1)
    c = Contact(c.key, c.fields, {**c.metadata, "Shop": "Store 1"})
    with pytest.raises(FatalError) as err:  # the delivery loop records it as failed
        connector.push([c], lambda job: None)
    assert err.value.reason == "HTTP 400: header 'Shop' is not a metadata of the list"
    assert held(world.sim) == {}


@pytest.mark.parametrize("answer", ["400", "200-success-false"])
def test_a_list_that_refuses_every_participant_stops_dropthought_after_five(
    world: World, tmp_path: Path, answer: str
) -> None:
    """A mapping header the list lacks (or a 2xx `"success": false` for every participant)
    is no participant's fault: the delivery loop's guard stops Dropthought after five such
    refusals in a row, the rest pending (the old code returned each refusal as a result,
    past the guard, and failed all eight)."""
    connector = world.connector(mapping=MAPPING.replace('"Store" = "Store"', '"Shop" = "Store"'))
    if answer != "400":
        world.sim.metadata["Shop"] = "String"
        world.sim.answer = {"success": False, "message": "Program is not published"}
    store, now = pending(tmp_path, 8, metadata={"Shop": "Store 1"})
    out = Deliverer(store, connector, lambda: now, max_attempts=3).run()
    statuses = [r["status"] for r in store.query("SELECT status FROM deliveries ORDER BY key")]
    store.close()
    assert (out.counts["failed"], statuses) == (5, ["failed"] * 5 + ["pending"] * 3)
    assert world.sim.count(PARTICIPANT) == 5


def test_an_unreadable_answer_leaves_the_trigger_unknown(world: World) -> None:
    connector = world.connector()
    world.sim.faults.add("malformed", count=1, path=PARTICIPANT)
    [result] = connector.push([contact(1)], lambda job: None)
    assert result.status is Status.UNKNOWN
    assert "POST /dtapp/api/participant/ answered HTTP 200 with text that is not JSON" in (
        result.reason or ""
    )
    assert triggers(world.sim) == {contact(1).key: 1}


def test_the_answers_json_strings_are_read() -> None:
    # the documented answer: header and data are JSON text, not arrays
    record = {
        "data": '["DST1234", "Sudhakar", "sudhakar1@dropthought.com", "+6738699729", ""]',
        "meta_data": '["String", "NAME", "EMAIL", "PHONE", "STRING"]',
        "header": '["Account Number", "Customer Name", "Customer Email", '
        '"Customer Contact No", "Primary Key"]',
        "participant_uuid": "e29272f4-f572-421f-8662-58428a2cba47",
    }
    assert echoed(record) == {
        "Account Number": "DST1234",
        "Customer Name": "Sudhakar",
        "Customer Email": "sudhakar1@dropthought.com",
        "Customer Contact No": "+6738699729",
        "Primary Key": "",
    }
    assert echoed({"header": ["A"], "data": ["1"]}) == {"A": "1"}
    assert echoed({"header": "[not json", "data": "[]"}) == {}


def test_the_echo_is_compared_with_what_was_sent(world: World) -> None:
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    connector = world.connector()
    [result] = connector.push([contact(1)], lambda job: None)
    answer = world.sim.participants()[0]
    assert result.ref == answer["participant_uuid"]
    assert "stored other values" not in out.getvalue()


class StoresAsText(DropthoughtSim):
    """A list that stores a DATE or PHONE value in another format as text (NOTES.md: "at
    best stored as text the scheduler cannot use") instead of refusing it."""

    def _invalid(self, body: Any) -> str | None:
        kinds = self.metadata
        self.metadata = {name: "String" for name in kinds}
        try:
            return super()._invalid(body)
        finally:
            self.metadata = kinds


def test_a_list_date_sent_untyped_is_warned_about_once_naming_the_types_line(
    tmp_path: Path,
) -> None:
    """The answer's meta_data says "Closed Date" is a DATE: a mapping without its [types]
    line sends the export's own format, which advanced scheduling cannot read."""
    world = World(tmp_path)
    world.sim = StoresAsText(now=world.sim.now)
    world.server.stop()
    world.server = Server(world.sim).start()
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    try:
        connector = world.connector(mapping=MAPPING.replace('"Closed Date" = "DATE"', ""))
        for i in range(3):
            c = contact(i)
            c = Contact(c.key, c.fields, {**c.metadata, "Closed Date": "10/01/2026 14:00"})
            assert push_one(connector, c) is Status.SENT
    finally:
        world.server.stop()
    warnings = [line for line in map(json.loads, out.getvalue().splitlines()) if line.get("fix")]
    assert [(w["header"], w["type"]) for w in warnings] == [("Closed Date", "DATE")]
    assert warnings[0]["fix"] == """add "Closed Date" = "DATE" to the mapping's [types]"""


def test_a_mapping_that_sends_no_date_metadata_is_warned_about_once(tmp_path: Path) -> None:
    """dropthought.md, Step #2: the list needs "at least one metadata of date-time type",
    which advanced scheduling triggers the program by. When the answer's meta_data holds no
    DATE among the headers sent, the participant is acknowledged but has no date to be
    scheduled by: say so once, naming what to map."""
    world = World(tmp_path)
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    undated = (
        MAPPING.replace('"Closed Date" = "Closed Date"', "")
        .replace('"Closed Date" = "DATE"', "")
        .replace('on_change = ["Closed Date"]', "")
    )
    try:
        connector = world.connector(mapping=undated)
        for i in range(3):
            c = contact(i)
            metadata = {k: v for k, v in c.metadata.items() if k != "Closed Date"}
            assert push_one(connector, Contact(c.key, c.fields, metadata)) is Status.SENT
        assert push_one(world.connector(), contact(9)) is Status.SENT  # dated: no warning
    finally:
        world.server.stop()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    warned = [line for line in lines if line.get("event", "").startswith("no DATE metadata")]
    assert len(warned) == 1
    assert "[types]" in warned[0]["fix"] and "DATE" in warned[0]["fix"]


def test_a_mapping_needs_email_or_phone(world: World) -> None:
    with pytest.raises(ConfigError, match="maps neither email nor phone"):
        world.connector(mapping='[fields]\nname = "First Name"\n')


@pytest.mark.parametrize(
    "n", [500, pytest.param(2000, marks=pytest.mark.slow)], ids=["500", "2000"]
)
def test_n_contacts_make_n_participant_calls(world: World, n: int) -> None:
    connector = world.connector()
    contacts = [contact(i) for i in range(n)]
    results = [r for b in connector.batches(contacts) for r in connector.push(b, lambda j: None)]
    assert len(results) == n and {r.status for r in results} == {Status.SENT}
    assert world.counts() == (1, 0, n)
    assert len(world.sim.requests()) == n + 1  # every request: the contacts and one login
    assert set(triggers(world.sim).values()) == {1}


def test_check_logs_in_and_says_so_and_a_wrong_password_names_the_vendor(world: World) -> None:
    assert world.connector().check() == "logged in as ops@example.com"
    with pytest.raises(AuthError) as refused:
        world.connector(password="wrong-password").check()
    assert str(refused.value).startswith("dropthought: HTTP 401: Invalid email or password")
    assert world.counts() == (2, 0, 0)


@pytest.mark.parametrize(
    "answer",
    [
        {},
        {"success": "false"},
        {"success": "true", "result": [{"participant_uuid": "e29272f4"}]},
        {"success": True},
        {"success": True, "result": []},
        {"success": True, "result": [{"participant_uuid": ""}]},
        {"result": [{"participant_uuid": "e29272f4"}]},
        [],
    ],
    ids=[
        "empty",
        "false-string",
        "true-string",
        "no-result",
        "no-record",
        "no-uuid",
        "no-success",
        "array",
    ],
)
def test_an_answer_without_the_documented_acknowledgement_is_unknown_and_not_resent(
    world: World, tmp_path: Path, answer: Any
) -> None:
    """Only `success: true` with a `participant_uuid` says Dropthought added the participant;
    after any other 2xx it may have, so the trigger is `unknown`, never sent again by us."""
    connector = world.connector()
    store, now = pending(tmp_path, 1)
    world.sim.answer = answer
    out = Deliverer(store, connector, lambda: now, max_attempts=3).run()
    assert out.counts["unknown"] == 1 and out.counts["sent"] == 0
    [row] = store.query("SELECT status, reason FROM deliveries")
    assert row["status"] == "unknown"
    assert "without Dropthought's acknowledgement" in row["reason"]
    assert store.query("SELECT * FROM vendor_state") == []
    Deliverer(store, connector, lambda: now, max_attempts=3).run()
    store.close()
    assert world.sim.count(PARTICIPANT) == 1
    assert set(triggers(world.sim).values()) == {1}


def test_each_calls_404_and_401_name_what_is_likely_wrong(world: World) -> None:
    """A 404 on login means base_url is wrong (the participant group is not in its URL);
    a 404 on the participant call, the participant group too. A 401 on login is the email
    and password; a participant call refused after a fresh login proved them is the user's
    rights or the group (dropthought.md, Pre-requisites: "the user should have Admin
    access")."""
    world.sim.faults.add("status", status=404, path=LOGIN)
    with pytest.raises(EndpointError) as login_404:
        world.connector().check()
    assert "base_url" in str(login_404.value)
    assert "participant_group" not in str(login_404.value)

    connector = world.connector()
    world.sim.faults.add("status", status=404, path=PARTICIPANT)
    with pytest.raises(EndpointError) as participant_404:
        connector.push([contact(1)], lambda job: None)
    assert "participant_group" in str(participant_404.value)

    with pytest.raises(AuthError) as login_401:
        world.connector(password="wrong-password").check()
    assert "email and password" in str(login_401.value)

    world.sim.faults.add("status", status=401, count=3, path=PARTICIPANT)
    with pytest.raises(AuthError) as participant_401:
        connector.push([contact(2)], lambda job: None)
    text = str(participant_401.value)
    assert "Admin access" in text and "participant_group" in text
    assert "check email and password" not in text


@pytest.mark.parametrize(
    "body",
    [
        {"email": 1, "password": "sandbox-password"},
        {"email": "ops@example.com", "password": ["sandbox-password"]},
        {"email": "ops@example.com"},
    ],
    ids=["number-email", "array-password", "no-password"],
)
def test_the_simulator_refuses_a_login_whose_fields_are_not_strings(
    tmp_path: Path, body: dict[str, Any]
) -> None:
    """dropthought.md, Step #1, Request fields: email and password are String, Optional
    false: anything else is a bad request (400), not wrong credentials (401)."""
    sim = DropthoughtSim()
    with Server(sim) as server:
        resp = requests.post(server.url + LOGIN, json=body, timeout=5)
    assert resp.status_code == 400
    assert resp.json() == {"success": False, "message": "email and password are required strings"}
    assert sim.logins == 0


def test_the_simulator_renews_only_with_the_refresh_token_in_the_body(tmp_path: Path) -> None:
    """NOTES.md, Dropthought: `POST /token/renew` with `{"refreshToken": "..."}` (the SDK
    also sends the raw refresh token as Authorization). The header alone is not the
    documented call: the simulator renewed on it, so a connector sending only that passed."""
    sim = DropthoughtSim()
    with Server(sim) as server:
        login = requests.post(
            server.url + LOGIN,
            json={"email": "ops@example.com", "password": "sandbox-password"},
            timeout=5,
        )
        refresh = login.json()["result"]["refreshToken"]
        alone = requests.post(server.url + RENEW, headers={"Authorization": refresh}, timeout=5)
        both = requests.post(
            server.url + RENEW,
            json={"refreshToken": refresh},
            headers={"Authorization": refresh},
            timeout=5,
        )
    assert (alone.status_code, alone.json()["message"]) == (400, "refreshToken is required")
    assert both.status_code == 200 and sim.renewals == 1


class LoginAnswers(DropthoughtSim):
    """A login answered 200 with the test's body (a proxy's page, or a refusal in JSON)."""

    body = b""
    mimetype = "text/html"

    def login(self, request: Request) -> Response:
        return Response(self.body, 200, mimetype=self.mimetype)


def test_a_login_answered_without_a_token_names_what_is_likely_wrong(tmp_path: Path) -> None:
    """A 200 to the login that is no JSON at all (a proxy's or a website's page) is not the
    password: its hint names base_url. One in JSON that says no names email and password."""
    world = World(tmp_path)
    world.server.stop()
    world.sim = LoginAnswers(now=world.sim.now)
    world.server = Server(world.sim).start()
    try:
        world.sim.body = b"<html><body>Welcome to our website</body></html>"
        with pytest.raises(EndpointError) as page:
            world.connector().check()
        assert world.sim.count(LOGIN) == 3  # asked again under the retries (2) first
        world.sim.body = b'{"success": false, "message": "User is not registered"}'
        world.sim.mimetype = "application/json"
        with pytest.raises(AuthError) as refused:
            world.connector().check()
    finally:
        world.server.stop()
    assert "base_url" in str(page.value) and "password" not in str(page.value)
    assert "User is not registered" in str(refused.value)
    assert "check email and password in [vendors.dropthought]" in str(refused.value)


class CutOnce(DropthoughtSim):
    """Answers the first login or renewal (`path`) 200 with `body` (half a document a proxy
    framed as whole, or nothing), then as Dropthought does."""

    def __init__(self, path: str, body: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path, self.body, self.cut = path, body, 1

    def dispatch(self, request: Request) -> Response:
        if request.path == self.path and self.cut:
            self.cut -= 1
            return Response(self.body, 200, mimetype="application/json")
        return super().dispatch(request)


@pytest.mark.parametrize("path", [LOGIN, RENEW])
@pytest.mark.parametrize("body", [b'{"result": {"accessToken": "eyJ', b""], ids=["half", "empty"])
def test_a_login_or_renewal_cut_once_is_asked_again(tmp_path: Path, path: str, body: bytes) -> None:
    """Login and renewal were read with read_json after the exchange counted as a success:
    half a JSON document or an empty 200 once stopped Dropthought for the run ("check
    base_url"). They are read as `HttpClient.read` reads: asked again under the retries."""
    world = World(tmp_path)
    world.server.stop()
    world.sim = CutOnce(path, body, now=world.sim.now)
    world.server = Server(world.sim).start()
    try:
        connector = world.connector()
        if path == RENEW:
            connector.tokens.login()
            world.clock.sleep(3500.0)  # inside the renewal margin: the next call renews
        store, now = pending(tmp_path, 3)
        out = Deliverer(store, connector, lambda: now, max_attempts=3).run()
        store.close()
    finally:
        world.server.stop()
    assert out.stopped is None and out.counts["sent"] == 3
    assert world.sim.count(path) == 2 and world.sim.count(LOGIN) == 2 - (path == RENEW)


def test_participants_without_email_keyed_by_name_alone_are_warned_about_once(
    world: World,
) -> None:
    """dropthought.md, Step #3, Sample Response: "primary_key": "Sudhakarsudhakar1@..." --
    Dropthought keys a participant by its name and email. Two contacts without email who
    share a name are then one participant (the second takes the first's uuid and values):
    said once, when the answer's primary_key is the name alone."""
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    connector = world.connector()
    ann = [
        Contact(f"K{i}", {"phone": f"+3247000000{i}", "name": "Ann"}, {"CRM ID": f"K{i}"})
        for i in range(3)
    ]
    results = [connector.push([c], lambda job: None)[0] for c in ann]
    assert len({r.ref for r in results}) == 1  # one participant to Dropthought
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    warned = [line for line in lines if line.get("event", "").startswith("no email:")]
    assert len(warned) == 1 and warned[0]["key"] == "K0"
    assert "Ann" not in json.dumps(warned[0])  # a person's name is not for the log


@pytest.mark.parametrize("path", [LOGIN, PARTICIPANT])
def test_a_500_is_retried_on_login_but_leaves_a_participant_unknown(
    world: World, tmp_path: Path, path: str
) -> None:
    """The module docstring said "429 and 5xx are retried with backoff like everywhere
    else": a 500 to the participant call (a trigger) is an unknown outcome that stops
    Dropthought for the run; only the login (a read) is asked again."""
    world.sim.faults.add("status", status=500, count=1, path=path)
    store, now = pending(tmp_path, 3)
    out = Deliverer(store, world.connector(), lambda: now, max_attempts=3).run()
    store.close()
    if path == LOGIN:
        assert out.stopped is None and out.counts["sent"] == 3
    else:
        assert out.counts["unknown"] == 1 and out.stopped and "unknown" in out.stopped
        assert out.counts["sent"] == 0  # the rest stay pending


def test_min_interval_paces_every_call_of_the_user(world: World) -> None:
    """NOTES.md: Dropthought's rate limits are unknown; Altcraft, as undocumented, had
    `min_interval` and Dropthought had no way to slow down. Login and participant calls
    alike are paced, per user."""
    connector = world.connector(extra="min_interval = 2.5\n")
    for i in range(3):
        assert push_one(connector, contact(i)) is Status.SENT
    assert world.counts() == (1, 0, 3)
    assert world.clock.slept == [2.5, 2.5, 2.5]  # between the four calls
