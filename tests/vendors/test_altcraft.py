"""Altcraft against its simulator over loopback: which call carries a batch, what goes in
it, how answers are read (the envelope, not the HTTP status), and the tariff limit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import AuthError, ConfigError, EndpointError, FatalError
from syncd.sandbox.altcraft import MAX_BODY, AltcraftSim, EnvelopeError
from syncd.sandbox.base import Server, json_response
from syncd.state import Store
from syncd.vendors import REGISTRY, Connector, Contact
from syncd.vendors.altcraft import Altcraft
from tests.vendors.test_contract import deliver

START = "/api/v1.1/campaigns/triggers/start"
BATCH = "/api/v1.1/campaigns/triggers/start_batch"
MAPPING = """
[fields]
email = "Email"
[metadata]
"content.ticket_type" = "Ticket Type"
"custom_data.segment" = "Segment"
[trigger]
on_change = ["Closed Date"]
"""


@pytest.fixture
def sim() -> AltcraftSim:
    return AltcraftSim()


@pytest.fixture
def url(sim: AltcraftSim) -> Iterator[str]:
    with Server(sim) as server:
        yield server.url


def make(url: str, folder: Path, *, extra: str = "", mapping: str = MAPPING) -> Connector:
    (folder / "mapping.toml").write_text(mapping, encoding="utf-8")
    (folder / "syncd.toml").write_text(
        '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
        f'[vendors.altcraft]\nbase_url = "{url}"\nmapping = "mapping.toml"\n'
        f'token = "sandbox-token"\ntrigger_id = 7\nretries = 2\nbackoff_base = 0.01\n{extra}',
        encoding="utf-8",
    )
    cfg = load(folder / "syncd.toml")
    return REGISTRY["altcraft"](cfg.vendors["altcraft"], clock=FakeClock(datetime.now(UTC)))


def starts(sim: AltcraftSim) -> list[dict[str, object]]:
    """The bodies of the `start` calls (START is also a prefix of BATCH)."""
    return [r.json() for r in sim.requests(START) if r.path == START]


def person(i: int, ticket: str = "Billing", **custom: str) -> Contact:
    return Contact(
        key=f"K{i:05d}",
        fields={"email": f"Person{i}@Example.com".lower()},
        metadata={"content.ticket_type": ticket, "custom_data.segment": "Gold"}
        | {f"custom_data.{k}": v for k, v in custom.items()},
    )


def test_2000_contacts_go_in_one_start_batch(sim: AltcraftSim, url: str, tmp_path: Path) -> None:
    contacts = [person(i) for i in range(2000)]
    outcome, _ = deliver(make(url, tmp_path), contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert sim.count(BATCH) == 1 and starts(sim) == []
    body = sim.requests(BATCH)[0].json()
    assert body["trigger_id"] == 7 and "id" not in body
    assert (body["token"], body["format"], body["matching"]) == ("sandbox-token", "json", "email")
    assert body["content"] == {"ticket_type": "Billing"}
    assert body["data"][0] == {"email": "person0@example.com", "custom_data": {"segment": "Gold"}}
    assert len(body["data"]) == 2000
    assert set(sim.triggers().values()) == {1} and len(sim.triggers()) == 2000


def test_a_single_contact_uses_start(sim: AltcraftSim, url: str, tmp_path: Path) -> None:
    outcome, _ = deliver(make(url, tmp_path), [person(1)], tmp_path)
    assert outcome["K00001"][0] == "sent"
    [body] = starts(sim)
    assert sim.count(BATCH) == 0
    assert body["id"] == 7 and "trigger_id" not in body and "data" not in body
    assert body["email"] == "person1@example.com" and body["matching"] == "email"
    assert body["content"] == {"ticket_type": "Billing"}
    assert body["custom_data"] == {"segment": "Gold"}
    store = Store.open(tmp_path / "s.db")
    [row] = store.query("SELECT vendor_ref FROM deliveries")
    store.close()
    assert row["vendor_ref"] == sim.last()["person1@example.com"]["profile_id"]


@pytest.mark.parametrize("http_errors", [False, True], ids=["http-200", "http-4xx"])
def test_an_envelope_error_fails_the_contact_with_its_text(
    sim: AltcraftSim, url: str, tmp_path: Path, http_errors: bool
) -> None:
    sim.http_errors = http_errors
    contacts = [person(i) for i in range(5)]
    sim.faults.reject(contacts[3].fields["email"], "Profile is unsubscribed")
    outcome, _ = deliver(make(url, tmp_path), contacts, tmp_path)
    status, reason = outcome[contacts[3].key]
    assert status == "failed"
    assert reason == "error 404: Profile is unsubscribed"
    assert all(outcome[c.key][0] == "sent" for c in contacts if c is not contacts[3])
    # the refused batch launched nobody, so the split sends no one twice
    assert sim.triggers() == {c.fields["email"]: 1 for c in contacts if c is not contacts[3]}


@pytest.mark.parametrize("http_errors", [False, True], ids=["http-200", "http-402"])
def test_the_tariff_limit_stops_altcraft_for_the_run(
    sim: AltcraftSim, url: str, tmp_path: Path, http_errors: bool
) -> None:
    sim.limit, sim.http_errors = 5, http_errors
    contacts = [person(i) for i in range(10)]
    outcome, deliverer = deliver(make(url, tmp_path, extra="batch_size = 3\n"), contacts, tmp_path)
    statuses = [outcome[c.key][0] for c in contacts]
    assert statuses == ["sent"] * 3 + ["pending"] * 7
    assert deliverer.out.stopped and "error 402" in deliverer.out.stopped
    assert sim.count(BATCH) == 2  # nothing was tried after the 402
    assert sim.launched == 3


@pytest.mark.parametrize("why", ["not-found", "inactive", "another-event"])
@pytest.mark.parametrize("http_errors", [False, True], ids=["http-200", "http-4xx"])
def test_a_missing_or_inactive_campaign_stops_altcraft_with_all_pending(
    sim: AltcraftSim, url: str, tmp_path: Path, http_errors: bool, why: str
) -> None:
    """altcraft.md: "Only active trigger campaigns set to the 'When using a special API
    call' event can be run via the API" (an active campaign of another event launched in
    the sandbox)."""
    sim.http_errors = http_errors
    if why == "not-found":
        del sim.campaigns[7]
    elif why == "inactive":
        sim.campaigns[7]["is_active"] = False
    else:
        sim.campaigns[7]["trigger_type"] = "new_profile"
    contacts = [person(i) for i in range(8)]
    outcome, deliverer = deliver(make(url, tmp_path), contacts, tmp_path)
    assert {outcome[c.key][0] for c in contacts} == {"pending"}
    assert deliverer.out.stopped and "Trigger campaign 7" in deliverer.out.stopped
    assert sim.count(BATCH) == 1 and starts(sim) == []  # not split down to each profile
    store = Store.open(tmp_path / "s.db")
    attempts = {r["attempts"] for r in store.query("SELECT attempts FROM deliveries")}
    store.close()
    assert attempts == {0}


def test_custom_matching_sends_field_name_and_value(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    mapping = '[fields]\nfield_value = "Record ID"\n'
    connector = make(
        url, tmp_path, extra='matching = "custom"\nfield_name = "CRM_ID"\n', mapping=mapping
    )
    contacts = [Contact(key=f"CRM-{i}", fields={"field_value": f"CRM-{i}"}) for i in range(3)]
    connector.push(contacts, lambda job: None)
    connector.push(contacts[:1], lambda job: None)
    batch = sim.requests(BATCH)[0].json()
    assert (batch["matching"], batch["field_name"]) == ("custom", "CRM_ID")
    assert batch["data"] == [
        {"field_value": "CRM-0"},
        {"field_value": "CRM-1"},
        {"field_value": "CRM-2"},
    ]
    [single] = starts(sim)
    assert (single["field_name"], single["field_value"]) == ("CRM_ID", "CRM-0")
    assert sim.triggers() == {"CRM-0": 2, "CRM-1": 1, "CRM-2": 1}


def test_a_batch_over_10_mb_is_split(sim: AltcraftSim, url: str, tmp_path: Path) -> None:
    connector = make(url, tmp_path)
    contacts = [person(i, note="x" * 5000) for i in range(2400)]  # ~12 MB of data[]
    batches = list(connector.batches(contacts))
    assert len(batches) == 2
    outcome, _ = deliver(connector, contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"sent"}
    sizes = [len(r.body) for r in sim.requests(BATCH)]
    assert len(sizes) == 2 and all(s <= MAX_BODY for s in sizes) and sum(sizes) > MAX_BODY
    assert len(sim.triggers()) == 2400


def test_different_content_goes_in_different_requests(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    contacts = [person(i, ticket="Billing" if i % 2 else "Returns") for i in range(6)]
    outcome, _ = deliver(make(url, tmp_path), contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"sent"}
    contents = sorted(
        (r.json()["content"]["ticket_type"], len(r.json()["data"])) for r in sim.requests(BATCH)
    )
    assert contents == [("Billing", 3), ("Returns", 3)]


def test_a_garbled_answer_leaves_the_launch_unknown(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    sim.faults.add("malformed", path=BATCH)
    contacts = [person(i) for i in range(3)]
    outcome, _ = deliver(make(url, tmp_path), contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"unknown"}
    assert sim.count(BATCH) == 1 and set(sim.triggers().values()) == {1}


@pytest.mark.parametrize("http_errors", [False, True], ids=["http-200", "http-403"])
def test_a_wrong_token_is_an_auth_error(
    sim: AltcraftSim, url: str, tmp_path: Path, http_errors: bool
) -> None:
    sim.http_errors = http_errors
    sim.token = "another-token"
    with pytest.raises(AuthError, match="error 403"):
        make(url, tmp_path).push([person(1), person(2)], lambda job: None)


def test_check_reads_the_campaign(sim: AltcraftSim, url: str, tmp_path: Path) -> None:
    connector = make(url, tmp_path)
    connector.check()
    sim.campaigns[7]["is_active"] = False
    with pytest.raises(FatalError, match="not active"):
        connector.check()
    sim.token = "rotated"
    with pytest.raises(AuthError) as err:
        connector.check()  # HTTP 200 with error 403
    assert (err.value.vendor, str(err.value)[:19]) == ("altcraft", "altcraft: error 403")
    assert sim.launched == 0


@pytest.mark.parametrize(
    ("campaign", "said"),
    [
        ({"id": 7, "is_active": True}, "campaign 7 is active"),
        ({"id": 7, "is_active": 1}, "campaign 7 is active"),
        ({"id": 7, "name": "API trigger 7"}, "could not tell whether trigger campaign 7"),
        ({"id": 7, "is_active": None}, "could not tell"),
        ({"id": 7, "is_active": "yes"}, "could not tell"),
    ],
    ids=["true", "one", "absent", "null", "text"],
)
def test_check_says_active_only_when_the_answer_says_so(
    sim: AltcraftSim, url: str, tmp_path: Path, campaign: dict[str, object], said: str
) -> None:
    """Only the guide's "Get trigger campaign information" shows `is_active` (a bool), in
    none of altcraft.md or NOTES.md: a campaign without the flag is not called inactive
    (the old check failed it)."""
    sim.campaigns[7] = campaign
    assert said in make(url, tmp_path).check()


class Worded(AltcraftSim):
    """Refuses a campaign it does not hold with Altcraft's code 404 and words of the test's
    choosing (the real wording is in none of Altcraft's documents)."""

    wording = "Object not found"

    def _campaign(self, body: dict[str, Any], key: str) -> int:
        if body.get(key) not in self.campaigns:
            raise EnvelopeError(404, self.wording)
        return super()._campaign(body, key)

    def _get(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("id") not in self.campaigns:
            raise EnvelopeError(404, self.wording)
        return super()._get(body)


@pytest.mark.parametrize("http_errors", [False, True], ids=["http-200", "http-404"])
def test_check_reads_altcrafts_404_as_no_such_campaign(tmp_path: Path, http_errors: bool) -> None:
    """An `error` 404 to `campaigns/triggers/get` (which names only the campaign) was an
    unexplained FatalError when its words were not the guessed ones."""
    sim = Worded(http_errors=http_errors)
    del sim.campaigns[7]
    with Server(sim) as server, pytest.raises(EndpointError) as caught:
        make(server.url, tmp_path).check()
    text = str(caught.value)
    assert "error 404: Object not found" in text and "no trigger campaign 7" in text
    assert "check trigger_id = 7" in text


def test_check_says_what_a_404_without_the_envelope_can_mean(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    """An HTTP 404 with no Altcraft envelope only said "check base_url (scheme://host[:port]
    only) and the vendor's path options": Altcraft has no path options."""
    sim.faults.add("status", status=404, path="/api/v1.1/campaigns/triggers/get")
    with pytest.raises(EndpointError) as caught:
        make(url, tmp_path).check()
    text = str(caught.value)
    assert "HTTP 404" in text and "(no Altcraft error envelope)" in text
    assert "base_url does not reach the Altcraft API" in text and "ru.altkraft.com" in text
    assert "path options" not in text


def test_a_campaign_refusal_in_unknown_words_fails_at_most_five_then_stops(
    tmp_path: Path,
) -> None:
    """The words of a missing campaign's refusal are a guess (CAMPAIGN_REFUSED): in any
    others the batch is split, and the guard of five refusals in a row with the same reason
    stops Altcraft, the rest pending."""
    sim = Worded()
    del sim.campaigns[7]
    contacts = [person(i) for i in range(12)]
    with Server(sim) as server:
        outcome, deliverer = deliver(make(server.url, tmp_path), contacts, tmp_path)
    statuses = sorted(s for s, _r in outcome.values())
    assert statuses == ["failed"] * 5 + ["pending"] * 7
    assert {r for s, r in outcome.values() if s == "failed"} == {"error 404: Object not found"}
    assert deliverer.out.stopped and "5 contacts in a row refused" in deliverer.out.stopped
    assert sim.launched == 0


def test_check_says_a_campaign_of_another_event_cannot_be_run_from_the_api(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    """The guide's "Get trigger campaign information" answers `trigger_type` ("api_call" for
    an API-call campaign): an active campaign of another event passed check as "active",
    and every launch to it was refused."""
    sim.campaigns[7]["trigger_type"] = "new_profile"
    with pytest.raises(FatalError) as caught:
        make(url, tmp_path).check()
    assert "event 'new_profile', not the API call" in str(caught.value)
    assert "When using a special API call" in (caught.value.hint or "")


@pytest.mark.parametrize("flag", [False, 0], ids=["false", "zero"])
def test_check_says_not_active_when_is_active_is_false(
    sim: AltcraftSim, url: str, tmp_path: Path, flag: object
) -> None:
    sim.campaigns[7] = {"id": 7, "is_active": flag}
    with pytest.raises(FatalError, match="is not active"):
        make(url, tmp_path).check()


def test_the_mapping_must_fit_the_matching(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="field_name"):
        make(url, tmp_path, extra='matching = "custom"\n')
    with pytest.raises(ConfigError, match="'phone'"):
        make(url, tmp_path, extra='matching = "phone"\n')
    with pytest.raises(ConfigError, match="name it content"):
        make(url, tmp_path, mapping='[fields]\nemail = "Email"\n[metadata]\nStore = "Store"\n')
    connector = make(url, tmp_path)
    assert isinstance(connector, Altcraft)
    assert connector.validate(Contact("K1", {"email": ""})) is not None
    assert connector.validate(person(1)) is None


def test_the_simulator_is_strict(sim: AltcraftSim, url: str) -> None:
    def post(path: str, body: object, **kw: object) -> requests.Response:
        return requests.post(url + path, json=body, timeout=5, **kw)  # type: ignore[arg-type]

    ok = {"token": "sandbox-token", "matching": "email"}
    assert post(START, ok | {"id": 7, "email": "a@example.com"}).json()["error"] == 0
    assert post(START, ok | {"trigger_id": 7, "email": "a@example.com"}).json()["error"] == 400
    assert post(START, ok | {"id": "7", "email": "a@example.com"}).json()["error"] == 400
    assert (
        post(BATCH, ok | {"trigger_id": "7", "data": [{"email": "a@example.com"}]}).json()["error"]
        == 400
    )
    assert post(START, {"token": 1, "id": 7, "email": "a@example.com"}).json()["error"] == 400
    one = ok | {"id": 7, "email": "a@example.com"}
    assert post(START, one | {"resource_id": "main"}).json()["error"] == 400
    assert post(BATCH, ok | {"id": 7, "data": [{"email": "a@example.com"}]}).json()["error"] == 400
    assert post(START, {"id": 7, "email": "a@example.com"}).json()["error"] == 401
    assert post(START, ok | {"id": 8, "email": "a@example.com"}).json()["error"] == 404
    assert post(START, ok | {"id": 7, "email": "not-an-email"}).json()["error"] == 400
    assert post(BATCH, ok | {"trigger_id": 7, "data": []}).json()["error"] == 400
    custom = ok | {"trigger_id": 7, "matching": "custom", "data": [{"field_value": "1"}]}
    assert post(BATCH, custom).json()["error"] == 400  # field_name missing
    big = json.dumps(
        ok | {"trigger_id": 7, "data": [{"email": "a@example.com"}], "pad": "x" * MAX_BODY}
    )
    resp = requests.post(
        url + BATCH, data=big, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert resp.status_code == 413
    assert sim.launched == 1


@pytest.mark.parametrize("left_out", ["format", "matching"])
def test_the_simulator_refuses_a_start_batch_without_format_or_matching(
    sim: AltcraftSim, url: str, left_out: str
) -> None:
    """NOTES.md, "Altcraft": start_batch is `{"token", "trigger_id", "format": "json",
    "matching", "data": [...], "content"?, "custom_data"?}` -- only content and custom_data
    are marked optional (a default for matching is given for `start` alone). The sandbox
    took a batch without format or matching as json and email."""
    body = {
        "token": "sandbox-token",
        "trigger_id": 7,
        "format": "json",
        "matching": "email",
        "data": [{"email": "a@example.com"}],
    }
    assert requests.post(url + BATCH, json=body, timeout=5).json()["error"] == 0
    del body[left_out]
    answer = requests.post(url + BATCH, json=body, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["error"] == 400
    assert f"'{left_out}'" in answer.json()["error_text"]
    assert sim.launched == 1


class Busy(AltcraftSim):
    """Answers the first `busy` launches HTTP 200 with Altcraft's `error` 429, launching
    nothing (the envelope carries every failure, whatever the HTTP status)."""

    busy = 2

    def _answer(
        self, request: Request, handler: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> Response:
        if self.busy and request.path != "/api/v1.1/campaigns/triggers/get":
            self.busy -= 1
            return json_response({"error": 429, "error_text": "Too many requests"})
        return super()._answer(request, handler)


def test_an_envelope_429_is_retried_with_backoff(tmp_path: Path) -> None:
    """An HTTP 200 with `error` 429 was raised after the exchange counted as a success: the
    batch went back to pending and the next was sent at once, never backed off."""
    sim = Busy()
    contacts = [person(i) for i in range(3)]
    with Server(sim) as server:
        connector = make(server.url, tmp_path)
        outcome, _ = deliver(connector, contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"sent"}
    assert sim.count(BATCH) == 3 and sim.triggers() == {c.fields["email"]: 1 for c in contacts}
    assert len(connector.clock.slept) == 2  # type: ignore[attr-defined]


def test_envelope_429s_trip_the_breaker(tmp_path: Path) -> None:
    """40 batches answered `error` 429 were 40 requests without a pause; now each is backed
    off, and five failures in a row stop Altcraft for the run with the rest pending."""
    sim = Busy()
    sim.busy = 10**6
    contacts = [person(i, ticket=f"T{i}") for i in range(40)]  # 40 batches of one (start)
    with Server(sim) as server:
        connector = make(server.url, tmp_path)
        outcome, deliverer = deliver(connector, contacts, tmp_path)
    assert {s for s, _r in outcome.values()} == {"pending"}
    assert deliverer.out.stopped and "5 consecutive failures" in deliverer.out.stopped
    assert sim.count(START) == 5 and len(connector.clock.slept) == 3  # type: ignore[attr-defined]
    assert sim.launched == 0


def test_a_profile_refused_in_the_campaigns_words_fails_alone(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    """A profile's refusal whose text matched the guessed campaign wording (CAMPAIGN_REFUSED)
    stopped Altcraft with every contact pending, at every run: the campaign, read again,
    is active for API calls, so the batch is split and that profile fails alone."""
    contacts = [person(i) for i in range(6)]
    sim.faults.reject(contacts[2].fields["email"], "Trigger launch failed: profile not found")
    outcome, deliverer = deliver(make(url, tmp_path), contacts, tmp_path)
    assert outcome[contacts[2].key] == (
        "failed",
        "error 404: Trigger launch failed: profile not found",
    )
    assert all(outcome[c.key][0] == "sent" for c in contacts if c is not contacts[2])
    assert deliverer.out.stopped is None
    assert sim.launched == 5


def test_contacts_sharing_a_matching_value_launch_one_profile_once(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    """Two CRM contacts with the same field_value (or email) in one run launched the same
    profile twice, in one start_batch or in two: a double survey. The first (in delivery
    order) is launched; the others are skipped, naming it, and go in no request."""
    mapping = '[fields]\nfield_value = "CRM ID"\n[metadata]\n"content.ticket_type" = "Type"\n'
    connector = make(
        url, tmp_path, extra='matching = "custom"\nfield_name = "CRM_ID"\n', mapping=mapping
    )

    def crm(key: str, value: str, ticket: str = "B") -> Contact:
        return Contact(key, {"field_value": value}, {"content.ticket_type": ticket})

    contacts = [crm("K1", "CRM-9"), crm("K2", "CRM-9"), crm("K3", "CRM-3"), crm("K4", "CRM-9", "C")]
    outcome, deliverer = deliver(connector, contacts, tmp_path)
    assert [outcome[k][0] for k in ("K1", "K2", "K3", "K4")] == [
        "sent",
        "skipped",
        "sent",
        "skipped",
    ]
    assert outcome["K2"][1] == outcome["K4"][1]
    assert outcome["K2"][1].startswith("K1 has the same field_value (one Altcraft profile)")
    assert sim.triggers() == {"CRM-9": 1, "CRM-3": 1} and deliverer.out.stopped is None
    sent = [item for r in sim.requests(START) for item in r.json().get("data", [r.json()])]
    assert sorted(i["field_value"] for i in sent) == ["CRM-3", "CRM-9"]


def test_a_custom_value_several_profiles_hold_is_refused(
    sim: AltcraftSim, url: str, tmp_path: Path
) -> None:
    """altcraft.md: "The field value must be unique, otherwise the request will not work".
    The sandbox launched any custom value; one that several profiles hold is refused, and
    the connector fails that contact alone."""
    sim.shared.add(("CRM_ID", "CRM-1"))
    connector = make(
        url,
        tmp_path,
        extra='matching = "custom"\nfield_name = "CRM_ID"\n',
        mapping='[fields]\nfield_value = "Record ID"\n',
    )
    contacts = [Contact(key=f"CRM-{i}", fields={"field_value": f"CRM-{i}"}) for i in range(3)]
    outcome, _ = deliver(connector, contacts, tmp_path)
    status, reason = outcome["CRM-1"]
    assert status == "failed" and "held by several profiles" in reason
    assert sim.triggers() == {"CRM-0": 1, "CRM-2": 1}
