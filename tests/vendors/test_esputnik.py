"""eSputnik against its simulator: update semantics that keep what other systems enriched,
requests and answers held to the vendor's OpenAPI schemas, and answers that are not the
documented acknowledgement."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from syncd.config import load
from syncd.errors import ConfigError, FatalError
from syncd.sample import rows
from syncd.sandbox.base import Server, json_response
from syncd.sandbox.esputnik import SPEC, ESputnikSim
from syncd.vendors.base import Contact, Status
from syncd.vendors.esputnik import ESputnik
from tests.helpers import World, esputnik_table
from tests.kits.esputnik import KIT
from tests.vendors.test_contract import deliver, make_connector

AUTH = {"Authorization": "Basic " + base64.b64encode(b"any:sandbox-key").decode()}
MAPPING = """
[fields]
email = "Email"
firstName = "First Name"
externalCustomerId = "Record ID"
"address.town" = "City"
[metadata]
"101" = "Segment"
"""


@pytest.fixture
def sim() -> Iterator[tuple[ESputnikSim, Server]]:
    app = ESputnikSim()
    with Server(app) as server:
        yield app, server


def test_an_upsert_changes_the_mapped_fields_and_keeps_what_another_system_enriched(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    app, server = sim
    data = list(rows(3))
    crm = data[0]
    enriched = app.seed(
        externalCustomerId=crm[0],
        email=crm[3].strip().lower(),
        firstName="Old",
        town="Nowhere",
        languageCode="nl",
        timeZone="Europe/Brussels",
        fields={"101": "Old segment", "202": "scored by another system"},
    )
    body, _ = esputnik_table(server.url)
    world = World(tmp_path, {"esputnik": (body, MAPPING)})
    world.write(data)
    assert world.sync().exit_code == 0
    held = {c["id"]: c for c in app.contacts()}[enriched]
    assert (held["firstName"], held["town"]) == (crm[1], crm[5])
    assert held["fields"] == {"101": crm[8], "202": "scored by another system"}
    assert (held["languageCode"], held["timeZone"]) == ("nl", "Europe/Brussels")
    sent = app.requests("/api/v1/contacts", "POST")[-1].json()
    assert sent["contactFields"] == ["email", "firstName", "externalCustomerId", "town"]
    assert sent["customFieldsIDs"] == [101]


def post(client: Client, body: Any) -> tuple[int, Any]:
    resp = client.post("/api/v1/contacts", json=body, headers=AUTH)
    text = resp.get_data(as_text=True)
    return resp.status_code, json.loads(text) if resp.status_code == 200 else text


def settle(client: Client, answer: dict[str, Any]) -> dict[str, Any]:
    """Poll the answer's import session until it finishes; return the last status."""
    while True:
        status: dict[str, Any] = client.get(
            f"/api/v1/importstatus/{answer['asyncSessionId']}", headers=AUTH
        ).get_json()
        if status["status"] == "FINISHED":
            return status


def test_the_simulator_nulls_untransmitted_standard_fields_only_without_contact_fields() -> None:
    app = ESputnikSim(polls_to_finish=1)
    client = Client(app)
    first = {"channels": [{"type": "email", "value": "a@example.com"}], "firstName": "Ann"}
    known = app.seed(email="a@example.com", lastName="Kept", languageCode="fr", fields={"7": "x"})
    update = {"contacts": [{**first, "fields": [{"id": 7, "value": "y"}]}], "dedupeOn": "email"}

    settle(client, post(client, {**update, "contactFields": ["firstName"]})[1])
    held = {c["id"]: c for c in app.contacts()}[known]
    assert (held["firstName"], held["lastName"], held["languageCode"]) == ("Ann", "Kept", "fr")
    assert held["fields"] == {"7": "x"}  # not in customFieldsIDs

    settle(client, post(client, {**update, "customFieldsIDs": [7]})[1])
    held = {c["id"]: c for c in app.contacts()}[known]
    assert (held["firstName"], held["lastName"], held["languageCode"]) == ("Ann", None, None)
    assert held["fields"] == {"7": "y"}
    assert len(app.contacts()) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"contacts": [{"channels": []}], "dedupeOn": "fieldId", "fieldId": None}, "$.fieldId"),
        ({"contacts": [{"firstName": "No channels"}], "dedupeOn": "email"}, "'channels'"),
        (
            {"contacts": [{"channels": []}], "dedupeOn": "email", "contactFields": ["town2"]},
            "'town2' is not one of",
        ),
        (
            {"contacts": [{"channels": [], "fields": [{"id": 1, "value": 2}]}], "dedupeOn": "sms"},
            "2 is not of type 'string'",
        ),
    ],
)
def test_the_simulator_refuses_what_the_schema_refuses(body: Any, expected: str) -> None:
    status, text = post(Client(ESputnikSim()), body)
    assert status == 400
    assert expected in text


def test_the_simulator_takes_only_the_specs_content_type() -> None:
    """The spec's requestBody is `application/json` only, and its answers list 415
    "Unsupported media type": a JSON text sent as another type was imported."""
    body = json.dumps({"contacts": [{"channels": []}], "dedupeOn": "email"})
    client = Client(ESputnikSim())
    for content_type, code in (("text/plain", 415), (None, 415), ("application/json", 200)):
        answer = client.post("/api/v1/contacts", data=body, content_type=content_type, headers=AUTH)
        assert answer.status_code == code, content_type


def test_the_simulator_checks_activity_parameters_and_the_key() -> None:
    client = Client(ESputnikSim())
    query = "/api/v2/contacts/activity?dateFrom=2026-01-01&dateTo=2026-01-02"
    assert client.get(query, headers=AUTH).status_code == 200
    bad = client.get(query + "&activityStatus=GONE", headers=AUTH)
    assert bad.status_code == 400 and "activityStatus" in bad.get_data(as_text=True)
    wrong = {"Authorization": "Basic " + base64.b64encode(b"any:wrong").decode()}
    assert client.get(query, headers=wrong).status_code == 401


def response_validator(path: str, method: str = "get") -> Any:
    content = SPEC["paths"][path][method]["responses"]["200"]["content"]
    (schema,) = [c["schema"] for c in content.values()]
    return Draft4Validator({**schema, "components": SPEC["components"]})


def test_the_simulators_answers_match_the_response_schemas() -> None:
    app = ESputnikSim(polls_to_finish=2)
    client = Client(app)
    app.faults.reject("bad1@example.com", "no such mailbox")
    app.faults.reject("bad2@example.com", "no such mailbox")
    bulk = response_validator("/api/v1/contacts", "post")
    failed_one = Draft4Validator(
        {"$ref": "#/components/schemas/FailedContact", "components": SPEC["components"]}
    )
    status = response_validator("/api/v1/importstatus/{sessionId}")
    answers = []
    for bad in (["bad1"], ["bad1", "bad2"]):
        emails = [*bad, "good"]
        contacts = [{"channels": [{"type": "email", "value": f"{e}@example.com"}]} for e in emails]
        code, answer = post(client, {"contacts": contacts, "dedupeOn": "email"})
        assert code == 200
        answers.append(answer)
        if len(bad) == 1:  # the spec's quirk: one failed contact is an object
            failed_one.validate(answer.pop("failedContacts"))
        bulk.validate(answer)
        session = f"/api/v1/importstatus/{answer['asyncSessionId']}"
        status.validate(client.get(session, headers=AUTH).get_json())  # STARTED
        status.validate(settle(client, answer))  # FINISHED, with its mapping
    assert isinstance(answers[1]["failedContacts"], list)
    app.unsubscribe("good@example.com")
    activity = client.get(
        "/api/v2/contacts/activity?dateFrom=2000-01-01&dateTo=2100-01-01", headers=AUTH
    ).get_json()
    assert activity
    response_validator("/api/v2/contacts/activity").validate(activity)


class Answers(ESputnikSim):
    """eSputnik answering `POST /api/v1/contacts` with a 200 of the test's choosing."""

    answer: Any = None

    def contacts_post(self, request: Request) -> Response:
        return json_response(self.answer)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"failedContacts": 5}, "failedContacts is neither"),
        ({"failedContacts": [5], "asyncSessionId": "s1"}, "failedContacts is neither"),
        (
            {
                "failedContacts": {"channels": [{"type": "email", "value": "x@example.com"}]},
                "asyncSessionId": "s1",
            },
            "names no contact of the batch",
        ),
        ({}, "no asyncSessionId"),
        ({"asyncSessionId": 5}, "no asyncSessionId"),
        (
            [{"asyncSessionId": "s1"}],
            "POST /api/v1/contacts answered HTTP 200 with a JSON array where a JSON object",
        ),
    ],
    ids=["number", "array-of-numbers", "stranger", "empty", "numeric-session", "array"],
)
def test_an_answer_that_is_not_the_documented_acknowledgement_marks_nobody_sent(
    tmp_path: Path, answer: Any, expected: str
) -> None:
    app = Answers()
    app.answer = answer
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        contacts = [KIT.contact(i) for i in range(3)]
        outcome, _ = deliver(connector, contacts, tmp_path)
    assert {status for status, _r in outcome.values()} == {"pending"}
    assert all(expected in (reason or "") for _s, reason in outcome.values())


def test_the_simulator_matches_on_the_custom_field_dedupe_on_names() -> None:
    app = ESputnikSim(polls_to_finish=1)
    client = Client(app)
    for email in ("old@example.com", "new@example.com"):
        contact = {
            "channels": [{"type": "email", "value": email}],
            "fields": [{"id": 7, "value": "CRM-1"}],
        }
        body = {"contacts": [contact], "dedupeOn": "fieldId", "fieldId": 7}
        settle(client, post(client, {**body, "contactFields": ["email"]})[1])
    assert [(c["email"], c["fields"]) for c in app.contacts()] == [
        ("new@example.com", {"7": "CRM-1"})
    ]


def shared_email(i: int, first: str) -> Contact:
    """Contacts of one household: one email, their own CRM key and name."""
    key = f"H{i}"
    fields = {"email": "home@example.com", "firstName": first, "externalCustomerId": key}
    return Contact(key=key, fields=fields)


@pytest.mark.parametrize(
    ("names", "failed"),
    [(["Ann", "Bob"], {"H1"}), (["Ann", "Ann"], {"H0", "H1"})],
    ids=["told-apart", "alike"],
)
def test_a_refused_contact_sharing_its_email_is_never_taken_for_another(
    tmp_path: Path, sim: tuple[ESputnikSim, Server], names: list[str], failed: set[str]
) -> None:
    """The spec's FailedContact echoes channels and names but no externalCustomerId.
    Matched on the first contact sharing one of its channels, the refusal of H1 failed H0
    and marked H1 sent; now it is the contact the echo matches exactly, or, when the echo
    cannot tell them apart, none of them is marked sent."""
    app, server = sim
    app.faults.reject("H1", "no such segment")
    (tmp_path / "mapping.toml").write_text(
        '[fields]\nemail = "Email"\nfirstName = "First Name"\nexternalCustomerId = "Record ID"\n',
        encoding="utf-8",
    )
    body, _ = esputnik_table(server.url, dedupe_on="externalCustomerId")
    (tmp_path / "syncd.toml").write_text(
        '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
        f'[vendors.esputnik]\n{body}mapping = "mapping.toml"\n',
        encoding="utf-8",
    )
    connector = ESputnik(load(tmp_path / "syncd.toml").vendors["esputnik"])
    contacts = [shared_email(i, name) for i, name in enumerate(names)]
    results = {r.key: r for r in connector.push(contacts, lambda job, refused=(): None)}
    assert {k for k, r in results.items() if r.status is Status.FAILED} == failed
    assert {k for k, r in results.items() if r.status is Status.SENT} == {"H0", "H1"} - failed
    assert all(results[k].reason.startswith("no such segment") for k in failed)
    assert {c["externalCustomerId"] for c in app.contacts()} <= {"H0"}  # H1 never imported


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"first_date": "1/2/2026"}, "first_date"),
        ({"activity_timezone": "Kyiv"}, "activity_timezone"),
    ],
)
def test_a_first_date_or_zone_esputnik_cannot_read_is_refused_at_load(
    tmp_path: Path, extra: dict[str, str], key: str
) -> None:
    body, mapping = esputnik_table("http://127.0.0.1:9", **extra)
    world = World(tmp_path, {"esputnik": (body, mapping)})
    with pytest.raises(ConfigError, match=key):
        load(world.folder / "syncd.toml")


@pytest.mark.parametrize("name", ["²", "١٠١", "101a", "2147483648"])
def test_a_metadata_name_that_is_no_ascii_number_is_refused_naming_it(
    tmp_path: Path, name: str
) -> None:
    """ "²".isdigit() and "١٠١".isdigit() are true; int() takes the second and not the first,
    and eSputnik's custom field ids are plain numbers: each is refused before a request."""
    body, mapping = esputnik_table("http://127.0.0.1:9")
    world = World(tmp_path, {"esputnik": (body, mapping.replace('"101"', f'"{name}"'))})
    cfg = load(world.folder / "syncd.toml")
    with pytest.raises(FatalError, match=f"'{name}' in .*numeric id"):
        ESputnik(cfg.vendors["esputnik"])


def test_the_simulator_refuses_a_custom_field_id_past_int32(tmp_path: Path) -> None:
    """The spec's ContactField.id and customFieldsIDs are `"format": "int32"`, which the
    schema check does not hold a body to: 2147483648 was imported."""
    sim = ESputnikSim()
    contact = {"channels": [{"type": "email", "value": "a@example.com"}]}
    for body in (
        {"contacts": [contact], "dedupeOn": "email", "customFieldsIDs": [2**31]},
        {"contacts": [{**contact, "fields": [{"id": 2**31, "value": "x"}]}], "dedupeOn": "email"},
    ):
        resp = Client(sim).post(
            "/api/v1/contacts",
            json=body,
            headers={"Authorization": "Basic " + base64.b64encode(b"u:sandbox-key").decode()},
        )
        assert resp.status_code == 400 and "2147483648 is not an int32" in resp.get_data(True)
    ok = {"contacts": [contact], "dedupeOn": "email", "customFieldsIDs": [2**31 - 1]}
    resp = Client(sim).post(
        "/api/v1/contacts",
        json=ok,
        headers={"Authorization": "Basic " + base64.b64encode(b"u:sandbox-key").decode()},
    )
    assert resp.status_code == 200
