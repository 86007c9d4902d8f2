"""Hello Customer against its simulator: pacing, languages, keyValues, windowed pulls, NPS.

Time matters here (one call per second per token), so most tests give the connector and the
simulator the same FakeClock: the pacer's sleeps move both, and the simulator still refuses
any call less than a second after the previous one. One test runs a real sync in real time.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from werkzeug.wrappers import Request, Response

from syncd import http
from syncd.clock import FakeClock
from syncd.config import Config, load
from syncd.errors import AuthError, ConfigError, EndpointError, RetriableError
from syncd.pipeline import reconcile
from syncd.pull import pull
from syncd.push import Deliverer
from syncd.sample import row, write_export
from syncd.sandbox.base import Server
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.state import Store
from syncd.vendors import Contact
from syncd.vendors.hellocustomer import HelloCustomer, resolve_language
from tests.helpers import World

SECOND = timedelta(seconds=1)
CAMPAIGN = "c8dc5f94-a9e8-4743-8744-e66a73a7e724"
BASE = f"/V1.0/EN/campaign/{CAMPAIGN}"
PUSH = f"{BASE}/respondent/addmultipletocache"
FRENCH = "901af5bc-06cb-4de0-b523-135ecfdc882a"
ENGLISH = "df88d743-1b99-44ef-b47f-260c78030ee7"
DUTCH = "1b5c1275-4f92-422f-b1fc-799bf8e30598"
MAPPING = """
[fields]
email = "Email"
language = "Language"
firstName = "First Name"
lastName = "Last Name"
[metadata]
"Store" = "Store"
"Segment" = "Segment"
[trigger]
on_new = true
on_change = ["Closed Date"]
"""


def write_config(folder: Path, url: str, extra: str = "", mapping: str = MAPPING) -> Config:
    (folder / "mapping.toml").write_text(mapping, encoding="utf-8")
    (folder / "syncd.toml").write_text(
        f'[source]\npath = "contacts.csv"\nkey = "Record ID"\nsettle_seconds = 0\n'
        f'[store]\npath = "syncd.db"\n[delivery]\nretries = 2\nbackoff_base = 0.01\n'
        f'[vendors.hellocustomer]\nbase_url = "{url}"\nmapping = "mapping.toml"\n'
        f'token = "sandbox-token"\ncampaign = "{CAMPAIGN}"\n{extra}',
        encoding="utf-8",
    )
    return load(folder / "syncd.toml")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def sim(clock: FakeClock) -> HelloCustomerSim:
    return HelloCustomerSim(clock=clock.monotonic, now=clock.now)


@pytest.fixture
def server(sim: HelloCustomerSim) -> Iterator[Server]:
    with Server(sim) as srv:
        yield srv


def connector(cfg: Config, clock: FakeClock) -> HelloCustomer:
    return HelloCustomer(cfg.vendors["hellocustomer"], clock=clock)


def contact(i: int, language: str = "EN", **metadata: str) -> Contact:
    return Contact(
        key=f"CRM-{i:05d}",
        fields={
            "email": f"person{i}@example.com",
            "language": language,
            "firstName": f"First{i}",
            "lastName": "Last",
        },
        metadata=metadata or {"Store": f"Store {i % 3 + 1}", "Segment": "Gold"},
    )


def deliver(conn: HelloCustomer, contacts: list[Contact], folder: Path) -> dict[str, str]:
    """Queue the contacts as pending deliveries and run the delivery loop: key → status."""
    store = Store.open(folder / "syncd.db")
    now = datetime.now(UTC)
    run = store.start_run("test", now)
    with store.write() as c:
        for ct in contacts:
            payload = json.dumps({"fields": dict(ct.fields), "metadata": dict(ct.metadata)})
            c.execute(
                "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
                "created_at, updated_at) VALUES (?, ?, ?, 'new', 'pending', 'h', ?, ?, ?)",
                (run, conn.name, ct.key, payload, now.isoformat(), now.isoformat()),
            )
    Deliverer(store, conn, lambda: now, max_attempts=3).run()
    rows = store.query("SELECT key, status FROM deliveries")
    store.close()
    return {r["key"]: r["status"] for r in rows}


def gaps(sim: HelloCustomerSim) -> list[float]:
    times = [r.at for r in sim.requests("/V1.0/")]
    return [b - a for a, b in itertools.pairwise(times)]


# --- languages and quarantine --------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "guid"),
    [
        ("French", FRENCH),
        ("fr", FRENCH),
        ("FR", FRENCH),
        ("fr-BE", FRENCH),
        (" Nederlands ", DUTCH),
        ("901AF5BC-06CB-4DE0-B523-135ECFDC882A", FRENCH),
        (FRENCH, FRENCH),
        ("EN", ENGLISH),
        ("Klingon", None),
        ("", None),
        ("00000000-0000-0000-0000-000000000000", None),
    ],
)
def test_a_language_is_a_name_an_iso_code_or_a_guid(value: str, guid: str | None) -> None:
    assert resolve_language(value) == guid


def test_validate_uses_the_default_language_or_says_why_not(tmp_path: Path) -> None:
    clock = FakeClock()
    strict = connector(write_config(tmp_path, "http://127.0.0.1:9"), clock)
    assert strict.validate(contact(1, "German")) is None
    assert strict.validate(contact(2, "Klingon")) == (
        "unknown language 'Klingon' and no default_language (needed by hellocustomer)"
    )
    assert strict.validate(contact(3, "")) == (
        "no language and no default_language (needed by hellocustomer)"
    )
    no_email = Contact("CRM-9", {"email": "", "language": "fr"})
    assert strict.validate(no_email) == "no email (needed by hellocustomer)"

    lenient = connector(
        write_config(tmp_path, "http://localhost:9", 'default_language = "nl"\n'), clock
    )
    assert lenient.validate(contact(2, "Klingon")) is None
    assert lenient.language(contact(2, "Klingon")) == DUTCH
    assert lenient.language(contact(4, "fr")) == FRENCH


def test_unsendable_rows_are_quarantined_for_hello_customer_with_the_reason(
    tmp_path: Path,
) -> None:
    sim = HelloCustomerSim(min_interval=0.0)
    with Server(sim) as srv:
        table = f'base_url = "{srv.url}"\ntoken = "sandbox-token"\ncampaign = "{CAMPAIGN}"\n'
        world = World(tmp_path, {"hellocustomer": (table, MAPPING)})
        rng = random.Random(1)
        rows = [row(i, rng) for i in range(1, 5)]
        rows[1][7] = "Klingon"  # Language
        rows[2][3] = ""  # Email
        world.write(rows)
        world.sync()
    store = world.store()
    try:
        quarantined = {
            r["key"]: (r["vendor"], r["reason"])
            for r in store.query("SELECT key, vendor, reason FROM quarantine")
        }
    finally:
        store.close()
    assert quarantined == {
        "CRM-0000002": (
            "hellocustomer",
            "unknown language 'Klingon' and no default_language (needed by hellocustomer)",
        ),
        "CRM-0000003": ("hellocustomer", "no email (needed by hellocustomer)"),
    }
    assert set(sim.by_key()) == {"CRM-0000001", "CRM-0000004"}


@pytest.mark.parametrize(
    ("extra", "mapping", "key"),
    [
        ('default_language = "Klingon"\n', MAPPING, "default_language"),
        ("", MAPPING.replace('language = "Language"\n', ""), "default_language"),
        ("first_date = '1/2/2026'\n", MAPPING, "first_date"),
        ('nps_filters = [{key = "Store"}]\n', MAPPING, "nps_filters"),
    ],
)
def test_config_mistakes_are_config_errors(
    tmp_path: Path, extra: str, mapping: str, key: str
) -> None:
    cfg = write_config(tmp_path, "http://127.0.0.1:9", extra, mapping)
    with pytest.raises(ConfigError, match=f"{key}:"):
        connector(cfg, FakeClock())


def test_a_campaign_that_is_not_a_guid_is_refused_at_load(tmp_path: Path) -> None:
    write_config(tmp_path, "http://127.0.0.1:9")
    text = (tmp_path / "syncd.toml").read_text().replace(CAMPAIGN, "my-touchpoint")
    (tmp_path / "syncd.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"\[vendors.hellocustomer\] campaign: must be"):
        load(tmp_path / "syncd.toml")


# --- push ------------------------------------------------------------------------------
def test_a_respondent_carries_language_guid_key_values_and_the_crm_key(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    conn = connector(write_config(tmp_path, server.url), clock)
    batch = [contact(1, "French"), contact(2, "nl", Store="Gent", Segment="")]
    results = conn.push(batch, lambda job: None)
    assert {r.key: r.status.value for r in results} == {"CRM-00001": "sent", "CRM-00002": "sent"}
    (request,) = sim.requests(PUSH)
    assert request.headers["Authorization"] == "<redacted>"
    assert request.json() == [
        {
            "firstName": "First1",
            "lastName": "Last",
            "email": "person1@example.com",
            "custom_UniqueID": "CRM-00001",
            "language_UniqueID": FRENCH,
            "campaign_UniqueID": CAMPAIGN,
            "keyValues": {"Store": "Store 2", "Segment": "Gold"},
        },
        {
            "firstName": "First2",
            "lastName": "Last",
            "email": "person2@example.com",
            "custom_UniqueID": "CRM-00002",
            "language_UniqueID": DUTCH,
            "campaign_UniqueID": CAMPAIGN,
            "keyValues": {"Store": "Gent"},  # empty values are left out
        },
    ]
    held = sim.by_key()
    assert held["CRM-00002"][0]["keyValues"] == {"Store": "Gent"}


def test_2000_contacts_take_ceil_n_over_batch_requests_and_no_429(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    conn = connector(write_config(tmp_path, server.url, "batch_size = 300\n"), clock)
    contacts = [contact(i, ("EN", "fr", "Dutch")[i % 3]) for i in range(2000)]
    outcome = deliver(conn, contacts, tmp_path)
    assert set(outcome.values()) == {"sent"}
    assert sim.count(PUSH) == math.ceil(2000 / 300) == 7
    assert sim.throttled == 0
    assert len(sim.by_key()) == 2000
    assert min(gaps(sim)) >= 1.0


def test_refused_respondents_are_isolated_by_splitting_without_a_429(
    tmp_path: Path, clock: FakeClock
) -> None:
    sim = HelloCustomerSim(
        clock=clock.monotonic, now=clock.now, languages=[ENGLISH, FRENCH], mandatory_keys=["Store"]
    )
    with Server(sim) as srv:
        conn = connector(write_config(tmp_path, srv.url), clock)
        contacts = [contact(i, ("EN", "fr")[i % 2]) for i in range(8)]
        contacts[3] = contact(3, "German")  # not a language of this touchpoint
        contacts[5] = contact(5, Segment="Gold")  # no Store, which the touchpoint requires
        sim.faults.reject(contacts[6].fields["email"], "address on the blocklist")
        outcome = deliver(conn, contacts, tmp_path)
    failed = {k for k, v in outcome.items() if v == "failed"}
    assert failed == {"CRM-00003", "CRM-00005", "CRM-00006"}
    store = Store.open(tmp_path / "syncd.db")
    try:
        reasons = {
            r["key"]: r["reason"]
            for r in store.query("SELECT key, reason FROM deliveries WHERE status = 'failed'")
        }
    finally:
        store.close()
    assert "The LanguageUniqueId is not part of this touchpoint" in reasons["CRM-00003"]
    assert "key value 'Store' is mandatory" in reasons["CRM-00005"]
    assert "address on the blocklist" in reasons["CRM-00006"]
    assert set(sim.by_key()) == {c.key for c in contacts} - failed
    assert all(len(adds) == 1 for adds in sim.by_key().values())
    assert sim.throttled == 0


def test_a_refused_respondent_its_email_quoted_costs_two_calls_not_a_halving_each(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    """hellocustomer.md: "The respondent email {model.Respondent.Email} is invalid" refuses
    the whole call (all or nothing). Halved down to it, one bad respondent of the default
    100 took 14 calls, a second of pacing each; the one whose email the words quote goes
    alone first, the rest beside it."""
    conn = connector(write_config(tmp_path, server.url), clock)
    contacts = [contact(i) for i in range(100)]
    sim.faults.reject(contacts[70].fields["email"], "address on the blocklist")
    outcome = deliver(conn, contacts, tmp_path)
    assert {k for k, v in outcome.items() if v == "failed"} == {"CRM-00070"}
    assert set(sim.by_key()) == {c.key for c in contacts} - {"CRM-00070"}
    assert sim.count(PUSH) == 3  # the batch, the respondent alone, the rest


def test_an_unknown_touchpoint_stops_hello_customer_with_every_respondent_pending(
    tmp_path: Path, clock: FakeClock
) -> None:
    """hellocustomer.md, 400 for the Add respondents API: "Touchpoint with ID:
    {campaignUniqueID} not found" is about the configured campaign: no respondent is split
    off and failed for it (the old code failed five, one call each, before stopping)."""
    sim = HelloCustomerSim(
        clock=clock.monotonic, now=clock.now, campaign="0d0e0f10-1111-4222-8333-444455556666"
    )
    with Server(sim) as srv:
        conn = connector(write_config(tmp_path, srv.url), clock)
        outcome = deliver(conn, [contact(i) for i in range(8)], tmp_path)
    assert set(outcome.values()) == {"pending"}
    assert sim.count("/V1.0/") == 1  # not split
    store = Store.open(tmp_path / "syncd.db")
    try:
        (attempts,) = store.query("SELECT DISTINCT attempts FROM deliveries")
    finally:
        store.close()
    assert attempts["attempts"] == 0  # a configuration error spends no attempt


@pytest.mark.parametrize("stream", ["check", "responses", "nps", "unsubscribes"])
def test_an_unknown_touchpoint_names_campaign_on_every_read_too(
    tmp_path: Path, clock: FakeClock, stream: str
) -> None:
    """The same "Touchpoint with ID: ... not found" answering `check` or a pull is about
    the campaign option too: an EndpointError that names it, not a bare refusal."""
    sim = HelloCustomerSim(
        clock=clock.monotonic, now=clock.now, campaign="0d0e0f10-1111-4222-8333-444455556666"
    )
    with Server(sim) as srv:
        conn = connector(write_config(tmp_path, srv.url), clock)
        with pytest.raises(EndpointError) as caught:
            if stream == "check":
                conn.check()
            else:
                list(conn.pull(stream, None, clock.now()))
    text = str(caught.value)
    assert f"Touchpoint with ID: {CAMPAIGN} not found" in text
    assert "check campaign (the touchpoint's CampaignUniqueID)" in text
    assert sim.count("/V1.0/") == 1


def test_the_default_batch_is_100(tmp_path: Path) -> None:
    conn = connector(write_config(tmp_path, "http://127.0.0.1:9"), FakeClock())
    contacts = [contact(i) for i in range(2000)]
    assert [len(b) for b in conn.batches(contacts)] == [100] * 20


@pytest.mark.parametrize("retry_after", [True, False])
def test_a_throttled_push_is_retried_with_or_without_retry_after(
    tmp_path: Path, clock: FakeClock, retry_after: bool
) -> None:
    sim = HelloCustomerSim(clock=clock.monotonic, now=clock.now, retry_after=retry_after)
    with Server(sim) as srv:
        conn = connector(write_config(tmp_path, srv.url), clock)
        # another program with the same token called just now: the vendor says 429
        first = requests.get(
            f"{srv.url}{BASE}/answers/getall/20260101000000/20260102000000",
            headers={"Authorization": "basic sandbox-token"},
            timeout=5,
        )
        assert first.status_code == 200
        results = conn.push([contact(1)], lambda job: None)
        conn.close()
    assert [r.status.value for r in results] == ["sent"]
    assert sim.throttled == 1
    assert len(sim.by_key()["CRM-00001"]) == 1  # a 429 is not processed: one invitation
    assert (1.0 in clock.slept) is retry_after  # Retry-After: 1 is honoured when sent
    assert gaps(sim)[-1] >= 1.0  # the retry waited for the token's next second


def test_the_simulator_throttles_one_call_per_second_per_token(
    sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    url = f"{server.url}{BASE}/answers/getall/20260101000000/20260102000000"
    auth = {"Authorization": "basic sandbox-token"}
    assert requests.get(url, headers=auth, timeout=5).status_code == 200
    second = requests.get(url, headers=auth, timeout=5)
    assert (second.status_code, second.headers.get("Retry-After")) == (429, "1")
    clock.sleep(1.0)
    assert requests.get(url, headers=auth, timeout=5).status_code == 200
    sim.retry_after = False
    fourth = requests.get(url, headers=auth, timeout=5)
    assert (fourth.status_code, "Retry-After" in fourth.headers) == (429, False)
    wrong = requests.get(url, headers={"Authorization": "basic nope"}, timeout=5)
    assert wrong.status_code == 401


def test_check_proves_the_token_with_a_read(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    connector(write_config(tmp_path, server.url), clock).check()
    assert [r.method for r in sim.requests(f"{BASE}/answers/getall/")] == ["GET"]
    text = (tmp_path / "syncd.toml").read_text().replace("sandbox-token", "expired")
    (tmp_path / "syncd.toml").write_text(text)
    with pytest.raises(AuthError) as caught:
        connector(load(tmp_path / "syncd.toml"), clock).check()
    # hellocustomer.md: a 401 is also a token without this touchpoint or call permission
    assert (
        f"check token in [vendors.hellocustomer]; Hello Customer also answers 401 for a "
        f"token that does not hold touchpoint {CAMPAIGN} (campaign)" in str(caught.value)
    )


def test_a_touchpoint_the_token_does_not_hold_is_a_401_on_every_call(
    tmp_path: Path, clock: FakeClock
) -> None:
    """hellocustomer.md, "5. Validation messages", 401: "API token does not contain this
    touchpoint/CampaignUniqueID" -- a touchpoint that exists but not on this token is a 401
    (a touchpoint that does not exist stays the 400 "Touchpoint with ID ... not found")."""
    other = "0d0e0f10-1111-4222-8333-444455556666"
    sim = HelloCustomerSim(
        clock=clock.monotonic, now=clock.now, campaign=other, other_touchpoints=[CAMPAIGN]
    )
    with Server(sim) as srv:
        auth = {"Authorization": "basic sandbox-token"}
        url = f"{srv.url}{BASE}/answers/getall/20260101000000/20260102000000"
        assert requests.get(url, headers=auth, timeout=5).status_code == 401
        conn = connector(write_config(tmp_path, srv.url), clock)
        clock.sleep(1.0)
        with pytest.raises(AuthError) as caught:
            conn.check()
        outcome = deliver(conn, [contact(i) for i in range(3)], tmp_path)
    assert f"does not hold touchpoint {CAMPAIGN} (campaign)" in str(caught.value)
    assert set(outcome.values()) == {"pending"}
    assert sim.respondents() == []


def test_the_simulator_refuses_windows_over_31_days(
    sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    auth = {"Authorization": "basic sandbox-token"}
    ok = requests.get(
        f"{server.url}{BASE}/answers/getall/20260101000000/20260201000000", headers=auth, timeout=5
    )
    clock.sleep(1.0)
    too_long = requests.get(
        f"{server.url}{BASE}/answers/getall/20260101000000/20260201000001", headers=auth, timeout=5
    )
    assert (ok.status_code, too_long.status_code) == (200, 400)
    assert "31 days" in too_long.json()["message"]


def test_the_simulator_takes_only_digits_as_yyyymmddhhmmss(
    sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    """hellocustomer.md, "3. Date format": yyyyMMddHHmmss, 15/12/2018 at 3pm is
    20181215150000 -- fourteen digits; strptime alone read "202611 1000000" as 1 Nov."""
    auth = {"Authorization": "basic sandbox-token"}
    url = f"{server.url}{BASE}/answers/getall/202611 1000000/20261102000000"
    refused = requests.get(url, headers=auth, timeout=5)
    assert refused.status_code == 400
    assert refused.json()["message"] == "The dates must be formatted as yyyyMMddHHmmss"


def test_the_simulator_takes_the_nps_filter_as_a_json_array_only(
    sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    """hellocustomer.md, "10. API-Call 4": the filter is a JSON array in the body; NOTES.md:
    `[]` for all. The simulator read an empty body as `[]`, so a connector that sent none
    passed here though the vendor documents none."""
    url = f"{server.url}{BASE}/analysis/nps/getnpsscore/20260101000000/20260131000000"
    auth = {"Authorization": "basic sandbox-token"}
    empty = requests.post(url, headers=auth, timeout=5)
    clock.sleep(1.0)
    listed = requests.post(url, headers=auth, json=[], timeout=5)
    assert (empty.status_code, empty.json()["message"]) == (400, "The JSON model is not correct")
    assert listed.status_code == 200


# --- push and pull together --------------------------------------------------------------
def test_sync_then_pull_share_one_pacer_and_link_answers_to_contacts(
    tmp_path: Path, clock: FakeClock
) -> None:
    sim = HelloCustomerSim(
        clock=clock.monotonic, now=clock.now, response_rate=1.0, unsubscribe_rate=0.5
    )
    with Server(sim) as srv:
        first = clock.now().date().isoformat()
        cfg = write_config(tmp_path, srv.url, f'batch_size = 4\nfirst_date = "{first}"\n')
        write_export(tmp_path / "contacts.csv", [row(i, random.Random(i)) for i in range(10)])
        clock.sleep(5)  # the export was written after the fake clock started
        assert connector(cfg, clock).http.pacer is connector(cfg, clock).http.pacer
        store = Store.open(cfg.store.path)
        try:
            report = reconcile(cfg, store, clock)
            clock.sleep(1)  # a pull reads whole seconds: the last answers' second is over
            pulled = pull(cfg, store, clock)
            responses = store.query("SELECT key, email FROM responses ORDER BY key")
            keys = [r["key"] for r in store.query("SELECT key FROM contacts ORDER BY key")]
            unsubscribed = store.scalar("SELECT count(*) FROM unsubscribes WHERE key IS NOT NULL")
        finally:
            store.close()
    assert report.exit_code == 0 and pulled.exit_code == 0
    assert sim.count(PUSH) == 3
    assert sim.throttled == 0
    assert min(gaps(sim)) >= 1.0  # push, then the first pull call a second later
    assert [r["key"] for r in responses] == keys  # linked through custom_UniqueID
    assert unsubscribed == sim.state()["unsubscribed"] > 0


def test_a_real_time_sync_sees_no_429(tmp_path: Path) -> None:
    sim = HelloCustomerSim()  # the real monotonic clock
    with Server(sim) as srv:
        table = (
            f'base_url = "{srv.url}"\ntoken = "sandbox-token"\n'
            f'campaign = "{CAMPAIGN}"\nbatch_size = 2\n'
        )
        world = World(tmp_path, {"hellocustomer": (table, MAPPING)})
        world.write([row(i, random.Random(i)) for i in range(10)])
        report = world.sync()
    assert report.exit_code == 0
    assert sim.count(PUSH) == 5
    assert sim.throttled == 0
    assert {d["status"] for d in world.deliveries()} == {"sent"}


# --- pull -------------------------------------------------------------------------------
def test_a_120_day_backfill_of_2000_answers_then_lookback_and_edits(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    now = clock.now()
    seeded = sim.add_responses(2_000, now - timedelta(days=120), now - timedelta(hours=1))
    first = (now - timedelta(days=120)).date().isoformat()
    cfg = write_config(
        tmp_path, server.url, f'first_date = "{first}"\nlookback_days = 7\nwindow_days = 31\n'
    )
    store = Store.open(cfg.store.path)
    try:
        report = pull(cfg, store, clock)
        assert report.exit_code == 0
        assert report.vendors["hellocustomer"].counts["responses"] == 2_000  # each once
        assert store.scalar("SELECT count(*) FROM responses") == 2_000
        assert store.scalar("SELECT count(*) FROM answers") == 6_000

        windows = [r.path.split("/")[-2:] for r in sim.requests(f"{BASE}/answers/getall/")]
        spans = [(_parse(a), _parse(b)) for a, b in windows]
        assert len(spans) == 4  # 121 days in windows of at most 31
        assert all(b - a <= timedelta(days=31) for a, b in spans)
        assert all(nxt[0] == prev[1] for prev, nxt in itertools.pairwise(spans))  # no gap
        assert sim.throttled == 0

        # a second pull re-reads only the lookback window and stores nothing new
        clock.sleep(3600)
        before = len(sim.requests(f"{BASE}/answers/getall/"))
        assert pull(cfg, store, clock).exit_code == 0
        assert len(sim.requests(f"{BASE}/answers/getall/")) == before + 1
        assert store.scalar("SELECT count(*) FROM responses") == 2_000
        assert store.scalar("SELECT count(*) FROM answers") == 6_000

        # an answer edited inside the lookback window is updated; one older is not re-read
        recent, old = seeded[-10], seeded[100]
        sim.edit_response(recent, score=10, text="Edited: much better now")
        sim.edit_response(old, score=10, text="Edited long after")
        clock.sleep(3600)
        pull(cfg, store, clock)
        edited = store.query(
            "SELECT response_id, score, text FROM answers WHERE response_id IN (?, ?) "
            "AND (is_nps OR text IS NOT NULL) ORDER BY response_id, sort_order",
            (recent, old),
        )
        by_id = {(r["response_id"], r["text"] is None): r for r in edited}
        assert by_id[(recent, True)]["score"] == 10
        assert by_id[(recent, False)]["text"] == "Edited: much better now"
        assert by_id[(old, False)]["text"] != "Edited long after"
        assert store.scalar("SELECT count(*) FROM answers") == 6_000
    finally:
        store.close()


def test_no_fraction_of_a_second_falls_between_two_windows_or_two_pulls(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    """The date parameters are whole seconds (yyyyMMddHHmmss) but Hello Customer keeps its
    times finer (the NPS answer's "date":"2015-12-16T14:45:31.3778294+00:00"): windows that
    met at 23:59:59 and 00:00:00, or a pull that went on a second after its cursor, never
    read an answer given in the half second between (the old code lost both)."""
    now = clock.now()  # a whole second
    first = (now - timedelta(days=40)).date()
    boundary = datetime.combine(first, datetime.min.time(), UTC) + timedelta(days=31)
    (between_windows,) = sim.add_responses(1, boundary - 0.5 * SECOND, boundary - 0.5 * SECOND)
    cfg = write_config(
        tmp_path, server.url, f'first_date = "{first}"\nlookback_days = 0\nwindow_days = 31\n'
    )
    store = Store.open(cfg.store.path)
    try:
        assert pull(cfg, store, clock).exit_code == 0  # up to `now`, its cursor
        (after_cursor,) = sim.add_responses(1, now + 0.5 * SECOND, now + 0.5 * SECOND)
        clock.sleep(3600)
        assert pull(cfg, store, clock).exit_code == 0
        stored = {r["response_id"] for r in store.query("SELECT response_id FROM responses")}
    finally:
        store.close()
    assert stored == {between_windows, after_cursor}


def test_a_busy_touchpoint_is_read_in_windows_whose_answers_fit(
    tmp_path: Path,
    sim: HelloCustomerSim,
    server: Server,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """answers/getall has no paging: its answer is every response of the window in one
    array. With windows of 31 days (the document's maximum, the old code's only size) a
    touchpoint of some 400 answers a day fills syncd's 32 MiB cap, and its responses are
    never read; here cap and touchpoint are scaled down together (80 KB, 3 a day)."""
    monkeypatch.setattr(http, "MAX_ANSWER", 80_000)
    now = clock.now()
    sim.add_responses(90, now - timedelta(days=30), now - timedelta(hours=1))
    first = (now - timedelta(days=30)).date().isoformat()
    cfg = write_config(tmp_path, server.url, f'first_date = "{first}"\n')
    store = Store.open(cfg.store.path)
    try:
        report = pull(cfg, store, clock)
        stored = store.scalar("SELECT count(*) FROM responses")
    finally:
        store.close()
    assert (report.exit_code, stored) == (0, 90)
    assert sim.count(f"{BASE}/answers/getall/") == 5  # a week each


def test_a_touchpoint_too_busy_for_a_days_window_is_read_in_windows_of_hours(
    tmp_path: Path,
    sim: HelloCustomerSim,
    server: Server,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """window_days was a whole number, at least 1: a touchpoint answered more often in a day
    than the 32 MiB cap holds (some 10,000 answers) failed its stream at every pull, never
    read. A fraction of a day is a window of hours; here the cap and the touchpoint are
    scaled down together (30 KB, 24 answers a day, one an hour)."""
    monkeypatch.setattr(http, "MAX_ANSWER", 30_000)
    now = clock.now()
    sim.add_responses(48, now - timedelta(days=2), now - timedelta(minutes=30))
    first = (now - timedelta(days=2)).date().isoformat()
    stored = {}
    for days in ("1", "0.25"):
        (tmp_path / days).mkdir()
        extra = f'first_date = "{first}"\nwindow_days = {days}\n'
        cfg = write_config(tmp_path / days, server.url, extra)
        store = Store.open(cfg.store.path)
        try:
            report = pull(cfg, store, clock)
            stored[days] = (report.exit_code, store.scalar("SELECT count(*) FROM responses"))
        finally:
            store.close()
    assert stored["1"][0] == 1 and stored["1"][1] < 48  # a day's answers are over the cap
    assert stored["0.25"] == (0, 48)
    windows = [r.path.split("/")[-2:] for r in sim.requests(f"{BASE}/answers/getall/")]
    spans = [(_parse(a), _parse(b)) for a, b in windows][-8:]  # the last pull's
    assert all(b - a == timedelta(hours=6) - SECOND for a, b in spans[:-1])
    assert all(nxt[0] == prev[1] for prev, nxt in itertools.pairwise(spans))


def test_answers_keep_question_flags_and_text_analytics_paths(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    now = clock.now()
    (rid,) = sim.add_responses(1, now - timedelta(hours=2), now - timedelta(hours=2))
    cfg = write_config(tmp_path, server.url, "lookback_days = 1\n")
    conn = connector(cfg, clock)
    (page,) = list(conn.pull("responses", (now - timedelta(days=1)).date().isoformat(), now))
    (record,) = page.records
    raw = sim.response(rid)
    text_answer = raw["answerQuestions"][2]
    assert record["response_id"] == rid
    assert record["external_key"] == raw["custom_UniqueID"]
    assert record["language"] == "en"
    assert record["answered_at"] == raw["dateAnswer"]
    nps, ces, why = sorted(record["answers"], key=lambda a: a["sort_order"])
    assert (nps["is_nps"], nps["is_score"], nps["is_ces"]) == (True, True, False)
    assert nps["score"] == raw["answerQuestions"][0]["answer_Value"]
    assert (ces["is_ces"], ces["is_nps"]) == (True, False)
    assert why["text"] == text_answer["answer_Text"]
    assert why["score"] is None and why["is_score"] is False
    assert why["paths"] == [text_answer["prediction"]["items"][0]["paths"][0]["path"]]
    assert why["question_id"] == text_answer["question_UniqueID"]
    assert why["question_text"] == text_answer["question_Text"]
    assert page.cursor == now.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_nps_is_stored_per_month_for_all_and_per_filter(
    tmp_path: Path, sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    now = clock.now()
    month = now.replace(day=1, hour=0, minute=0, second=0)
    start = month + timedelta(minutes=1)
    stores = ["Gent", "Brugge", "Gent", "Namur"]
    sim.add_responses(
        400, start, start + timedelta(minutes=400), key_values=lambda i: {"Store": stores[i % 4]}
    )
    filters = (
        '[{key = "Store", filterValues = ["Gent"]}, {key = "Store", filterValues = ["Namur"]}]'
    )
    first = month.date().isoformat()
    cfg = write_config(tmp_path, server.url, f'first_date = "{first}"\nnps_filters = {filters}\n')
    store = Store.open(cfg.store.path)
    try:
        assert pull(cfg, store, clock).exit_code == 0
        rows = {r["filter"]: dict(r) for r in store.query("SELECT * FROM nps")}
        expected = {}
        for name, where in (
            ("[]", "1"),
            ('[{"filterValues": ["Gent"], "key": "Store"}]', "store = 'Gent'"),
            ('[{"filterValues": ["Namur"], "key": "Store"}]', "store = 'Namur'"),
        ):
            expected[name] = store.query(
                "SELECT count(*) AS n, 100.0 * sum(score >= 9) / count(*) AS pro, "
                "100.0 * sum(score <= 6) / count(*) AS det FROM (SELECT a.score, "
                "json_extract(r.raw, '$.keyValues.Store') AS store FROM answers a JOIN responses r "
                f"USING (vendor, response_id) WHERE a.is_nps) WHERE {where}"
            )[0]
    finally:
        store.close()
    assert set(rows) == set(expected)
    for name, row_ in rows.items():
        assert (row_["period_start"], row_["period_end"][:8]) == (first, first[:8])
        assert row_["promoters"] == pytest.approx(expected[name]["pro"], abs=0.01)
        assert row_["detractors"] == pytest.approx(expected[name]["det"], abs=0.01)
        assert row_["nps"] == int(row_["promoters"] - row_["detractors"])
        assert row_["vendor_id"] and row_["computed_at"]
    gent, namur = (f'[{{"filterValues": ["{s}"], "key": "Store"}}]' for s in ("Gent", "Namur"))
    assert (expected["[]"]["n"], expected[gent]["n"], expected[namur]["n"]) == (400, 200, 100)
    assert len({rows["[]"]["nps"], rows[gent]["nps"], rows[namur]["nps"]}) > 1


def test_an_nps_answer_in_a_months_last_half_second_is_in_that_months_score(
    tmp_path: Path,
) -> None:
    """A promoter at 23:59:59.5 on July 31st and a detractor half a second into August:
    each month's score holds its own answer (July's call ended at 23:59:59, so its score
    held none and the promoter was in neither month's)."""
    clock = FakeClock(datetime(2026, 8, 15, 12, tzinfo=UTC))
    sim = HelloCustomerSim(clock=clock.monotonic, now=clock.now)
    last = datetime(2026, 8, 1, tzinfo=UTC) - 0.5 * SECOND
    (promoter,) = sim.add_responses(1, last, last)
    (detractor,) = sim.add_responses(1, last + SECOND, last + SECOND)
    sim.edit_response(promoter, score=10)
    sim.edit_response(detractor, score=0)
    with Server(sim) as server:
        extra = 'first_date = "2026-07-01"\nstreams = ["nps"]\n'
        cfg = write_config(tmp_path, server.url, extra)
        store = Store.open(cfg.store.path)
        try:
            assert pull(cfg, store, clock).exit_code == 0
            scores = store.query("SELECT period_start, period_end, nps FROM nps ORDER BY 1")
        finally:
            store.close()
    assert [tuple(r) for r in scores] == [
        ("2026-07-01", "2026-07-31", 100),
        ("2026-08-01", "2026-08-31", -100),
    ]


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y%m%d%H%M%S")


def test_the_simulator_holds_push_bodies_to_the_document(
    sim: HelloCustomerSim, server: Server, clock: FakeClock
) -> None:
    auth = {"Authorization": "basic sandbox-token"}
    good = {"email": "a@example.com", "language_UniqueID": ENGLISH, "campaign_UniqueID": CAMPAIGN}

    def post(body: object, **headers: str) -> tuple[int, str]:
        clock.sleep(1.0)
        resp = requests.post(
            server.url + PUSH, data=json.dumps(body), headers=auth | headers, timeout=5
        )
        return resp.status_code, resp.json()["message"] if resp.content else ""

    assert post([good], **{"Content-Type": "text/plain"})[0] == 415
    json_type = {"Content-Type": "application/json"}
    assert post([good | {"campaign_UniqueID": "my-touchpoint"}], **json_type) == (
        400,
        "The model of the respondent is invalid: campaign_UniqueID must be a GUID",
    )
    assert post([good | {"language_UniqueID": "EN"}], **json_type) == (
        400,
        "The format of the Guid of the language is not valid",
    )
    assert post([{"language_UniqueID": ENGLISH}], **json_type) == (
        400,
        "The respondent email None is invalid",
    )
    assert post([good, good | {"keyValues": {"Age": 35}}], **json_type)[0] == 400
    assert sim.respondents() == []  # all or nothing
    assert post([good], **json_type) == (200, "")
    assert len(sim.respondents()) == 1


class AnswersWith(HelloCustomerSim):
    """Answers `getall` with a 200 of the test's choosing."""

    body = b""

    def answers(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        return Response(self.body, 200, mimetype="application/json")


def test_a_read_answered_with_another_shape_is_retriable_and_says_what_came(
    tmp_path: Path, clock: FakeClock
) -> None:
    sim = AnswersWith(clock=clock.monotonic, now=clock.now)
    with Server(sim) as srv:
        conn = connector(write_config(tmp_path, srv.url), clock)
        assert conn.check().startswith("token accepted")  # an empty body lists no answers
        sim.body = b'{"message": "sandbox-token"}'
        with pytest.raises(RetriableError) as caught:
            conn.check()
    message = str(caught.value)
    assert message.startswith(f"hellocustomer: GET {BASE}/answers/getall/")
    assert "answered HTTP 200 with a JSON object where a JSON array was expected" in message
    assert "sandbox-token" not in message


def test_an_empty_answer_to_a_pull_is_no_answer_and_the_stream_stays_put(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A 200 with an empty body where a list of answers belongs is not "no answers": the
    pull fails retriably, so its cursor does not move past the window (a check only
    needs the 200)."""
    sim = AnswersWith(clock=clock.monotonic, now=clock.now)
    with Server(sim) as srv:
        conn = connector(write_config(tmp_path, srv.url), clock)
        with pytest.raises(RetriableError, match="an empty body"):
            list(conn.pull("responses", None, clock.now()))
        sim.body = b"[]"  # the same window answered with no answers: the cursor moves on
        pages = list(conn.pull("responses", None, clock.now()))
        assert pages and all(p.records == [] for p in pages)
