"""eSputnik against its simulator: update semantics that keep what other systems enriched,
requests and answers held to the vendor's OpenAPI schemas, and answers that are not the
documented acknowledgement."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from syncd import log as logmod
from syncd.config import load
from syncd.errors import ConfigError, FatalError
from syncd.sample import rows
from syncd.sandbox.base import Server, json_response
from syncd.sandbox.esputnik import SPEC, ESputnikSim
from syncd.vendors.base import Contact, Result, Status
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

    settle(
        client, post(client, {**update, "contactFields": ["firstName"], "customFieldsIDs": []})[1]
    )
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
        code, answer = post(
            client, {"contacts": contacts, "dedupeOn": "email", "customFieldsIDs": []}
        )
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


@pytest.mark.parametrize("echo", ["32470000001", " +32470000001 ", "PERSON1@example.com"])
def test_a_refusal_echoing_a_channel_in_another_form_is_its_contacts(
    tmp_path: Path, echo: str
) -> None:
    """An sms echoed without its + (a form the spec shows too), padded, or an email in
    another case: it named no contact of the batch, and the whole batch was sent again run
    after run, the refused contact never failed nor dead."""
    kind = "email" if "@" in echo else "sms"
    app = Answers()
    app.answer = {
        "failedContacts": {"channels": [{"type": kind, "value": echo}], "error": "blocked"}
    }
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        results = connector.start([KIT.contact(1)], lambda job: None)
    assert results == [Result("K00001", Status.FAILED, "blocked")]


def test_a_refusal_echoing_a_blank_channel_names_no_contact_without_one(tmp_path: Path) -> None:
    """A blank value compares as nothing: it is no contact's, not every contact's without
    that channel (nobody marked failed for a refusal that names none of them)."""
    app = Answers()
    app.answer = {"failedContacts": {"channels": [{"type": "sms", "value": "  "}]}}
    no_sms = KIT.contact(1)
    no_sms = Contact(
        no_sms.key, {k: v for k, v in no_sms.fields.items() if k != "sms"}, no_sms.metadata
    )
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        outcome, _ = deliver(connector, [no_sms], tmp_path)
    assert outcome == {"K00001": ("pending", outcome["K00001"][1])}
    assert "names no contact of the batch" in (outcome["K00001"][1] or "")


def test_the_simulator_matches_on_the_custom_field_dedupe_on_names() -> None:
    app = ESputnikSim(polls_to_finish=1)
    client = Client(app)
    for email in ("old@example.com", "new@example.com"):
        contact = {
            "channels": [{"type": "email", "value": email}],
            "fields": [{"id": 7, "value": "CRM-1"}],
        }
        body = {"contacts": [contact], "dedupeOn": "fieldId", "fieldId": 7, "customFieldsIDs": [7]}
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


def connector_for(tmp_path: Path, url: str, mapping: str, **options: Any) -> ESputnik:
    """An eSputnik connector on `url` with this mapping and these options."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "mapping.toml").write_text(mapping, encoding="utf-8")
    body, _ = esputnik_table(url)
    body += "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    (tmp_path / "syncd.toml").write_text(
        '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
        f'[vendors.esputnik]\n{body}mapping = "mapping.toml"\n',
        encoding="utf-8",
    )
    return ESputnik(load(tmp_path / "syncd.toml").vendors["esputnik"])


def push(connector: ESputnik, contacts: list[Contact]) -> dict[str, Any]:
    return {r.key: r for r in connector.push(contacts, lambda job, refused=(): None)}


def test_an_update_without_metadata_still_names_the_custom_fields_it_changes(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """The spec's customFieldsIDs is "required when a contact is updated": the connector
    left it out when the mapping had no [metadata], and the simulator took such an update
    (keeping the custom fields, a guess the spec does not make). Now the simulator refuses
    it, as the vendor would, and the connector always sends the list: empty, nothing of
    the custom fields another system keeps changes."""
    app, server = sim
    known = app.seed(email="a@example.com", firstName="Old", fields={"7": "kept"})
    connector = connector_for(tmp_path, server.url, '[fields]\nemail = "Email"\nfirstName = "F"\n')
    results = push(connector, [Contact("K1", {"email": "a@example.com", "firstName": "Ann"})])
    assert results["K1"].status is Status.SENT, results["K1"].reason
    held = {c["id"]: c for c in app.contacts()}[known]
    assert (held["firstName"], held["fields"]) == ("Ann", {"7": "kept"})
    assert app.requests("/api/v1/contacts", "POST")[-1].json()["customFieldsIDs"] == []


def test_the_simulator_refuses_an_update_without_custom_field_ids_and_takes_a_new_contact() -> None:
    app = ESputnikSim(polls_to_finish=1)
    client = Client(app)
    app.seed(email="known@example.com")
    contacts = [
        {"channels": [{"type": "email", "value": f"{who}@example.com"}]} for who in ("known", "new")
    ]
    code, answer = post(client, {"contacts": contacts, "dedupeOn": "email"})
    assert code == 200
    assert answer["failedContacts"]["channels"][0]["value"] == "known@example.com"
    assert (
        answer["failedContacts"]["error"] == "customFieldsIDs is required when a contact is updated"
    )
    settle(client, answer)
    assert sorted(c["email"] for c in app.contacts()) == ["known@example.com", "new@example.com"]


HOUSE = '[fields]\nemail = "Email"\nexternalCustomerId = "Record ID"\n[metadata]\n"7" = "Tier"\n'


def crm(i: int) -> Contact:
    return Contact(
        f"K{i}", {"email": f"p{i}@example.com", "externalCustomerId": f"K{i}"}, {"7": "x"}
    )


@pytest.mark.parametrize("restore", [False, True])
def test_a_contact_deleted_in_esputnik_is_never_marked_sent_while_its_import_skips_it(
    tmp_path: Path, sim: tuple[ESputnikSim, Server], restore: bool
) -> None:
    """The article: "If the contact with the externalCustomerId in the request was deleted
    and the flag restoreDeleted = false, this contact is skipped" -- no failedContacts,
    the session FINISHED. The connector marked it sent all the same; now a contact the
    session's mapping (the contacts it created or updated) leaves out, when the mapping
    names the others, fails saying why. With restore_deleted it is restored and sent."""
    app, server = sim
    connector = connector_for(tmp_path, server.url, HOUSE, restore_deleted=restore)
    assert {r.status for r in push(connector, [crm(0), crm(1)]).values()} == {Status.SENT}
    (gone,) = [c["id"] for c in app.contacts() if c["externalCustomerId"] == "K1"]
    app.delete(gone)
    results = push(connector, [crm(0), crm(1), crm(2)])
    assert results["K0"].status is results["K2"].status is Status.SENT
    if restore:
        assert (results["K1"].status, results["K1"].ref) == (Status.SENT, str(gone))
        assert gone in {c["id"] for c in app.contacts()}
    else:
        assert results["K1"].status is Status.FAILED
        assert "restore_deleted = true" in (results["K1"].reason or "")
        assert gone not in {c["id"] for c in app.contacts()}


class Status200(ESputnikSim):
    """eSputnik answering every import-status poll FINISHED with the test's mapping."""

    mapping: Any = None

    def importstatus(self, request: Request, session: str) -> Response:
        answer = {"status": "FINISHED", "timestamp": "2026-01-01T00:00:00"}
        if self.mapping is not None:
            answer["mapping"] = self.mapping
        return json_response(answer)


@pytest.mark.parametrize(
    ("mapping", "options", "failed"),
    [
        ([{"dedupeValue": "K0", "contactId": 1}], {}, {"K1"}),
        ([{"dedupeValue": "P0@Example.com", "contactId": 1}], {}, {"K1"}),
        ([], {}, {"K0", "K1"}),
        (None, {}, set()),  # no mapping at all: nothing to read
        ([{"dedupeValue": "K0", "contactId": 1}, {"dedupeValue": "?", "contactId": 2}], {}, set()),
        ([{"dedupeValue": "K0", "contactId": 1}, {"contactId": 2}], {}, set()),
        ([{"dedupeValue": "K0", "contactId": 1}], {"trust_mapping": False}, set()),
    ],
    ids=["ext", "email", "empty", "absent", "stranger", "no-value", "untrusted"],
)
def test_only_a_mapping_that_names_the_sessions_contacts_can_leave_one_out(
    tmp_path: Path, mapping: Any, options: dict[str, Any], failed: set[str]
) -> None:
    """A contact the mapping does not name fails only when every entry is read as one of
    the session's own: an entry naming none of them (a value normalised otherwise) or
    without a value means the mapping cannot be read, and the contacts are sent as before."""
    app = Status200()
    app.mapping = mapping
    with Server(app) as server:
        connector = connector_for(tmp_path, server.url, HOUSE, **options)
        results = push(connector, [crm(0), crm(1)])
    assert {k for k, r in results.items() if r.status is Status.FAILED} == failed
    assert {k for k, r in results.items() if r.status is Status.SENT} == {"K0", "K1"} - failed
    if "K0" not in failed and mapping and options == {}:
        assert results["K0"].ref == "1"


def test_an_sms_in_the_mapping_is_read_by_its_digits(tmp_path: Path) -> None:
    app = Status200()
    app.mapping = [{"dedupeValue": "32470000001", "contactId": 5}]
    mapping = '[fields]\nsms = "Phone"\n'
    with Server(app) as server:
        connector = connector_for(tmp_path, server.url, mapping, dedupe_on="sms")
        results = push(connector, [Contact("K0", {"sms": "+32470000001"})])
    assert (results["K0"].status, results["K0"].ref) == (Status.SENT, "5")


def test_the_simulator_never_gives_one_crm_key_a_contact_holding_another() -> None:
    """The article's logic for dedupeOn and externalCustomerId: a request whose
    externalCustomerId eSputnik does not hold updates the contact sharing its email only
    if that one holds none ("updated with the externalCustomerId"); when those sharing it
    hold others, "a new contact is created". Without one, of the contacts sharing the
    email "the contact that was updated later than the others is used". The simulator
    took the contact holding another CRM key and overwrote that key: two CRM contacts of
    one household were one contact whose key flipped at every sync."""
    app = ESputnikSim(polls_to_finish=1)
    client = Client(app)
    plain = app.seed(email="home@example.com", firstName="Plain")

    def send(ext: str | None, name: str) -> None:
        contact: dict[str, Any] = {
            "channels": [{"type": "email", "value": "home@example.com"}],
            "firstName": name,
        }
        if ext:
            contact["externalCustomerId"] = ext
        fields = ["firstName", "externalCustomerId"] if ext else ["firstName"]
        body = {"contacts": [contact], "dedupeOn": "email", "customFieldsIDs": []}
        assert "failedContacts" not in settle(
            client, post(client, {**body, "contactFields": fields})[1]
        )

    send("H0", "Ann")  # takes the contact holding no key
    send("H1", "Bob")  # the only one sharing the email holds H0: a new contact
    held = {c["externalCustomerId"]: c for c in app.contacts()}
    assert held["H0"]["id"] == plain and held["H0"]["firstName"] == "Ann"
    assert held["H1"]["id"] != plain and held["H1"]["firstName"] == "Bob"
    send(None, "Either")  # no key: the one written last
    held = {c["externalCustomerId"]: c for c in app.contacts()}
    assert (held["H0"]["firstName"], held["H1"]["firstName"]) == ("Ann", "Either")


DATED = """[fields]
email = "Email"
[metadata]
"7" = "Birthday"
"8" = "Last order"
[types]
"7" = "date"
"8" = "datetime"
"""


def dated(birthday: str, last_order: str) -> Contact:
    return Contact("K1", {"email": "a@example.com"}, {"7": birthday, "8": last_order})


def test_date_custom_fields_are_sent_in_the_format_esputnik_reads(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """eSputnik's guide ("Contact Fields in the System"): a Date field takes yyyy-MM-dd,
    dd/MM/yyyy, dd.MM.yy or dd.MM.yyyy over the API, a Date with time field
    YYYY-MM-DDTHH:MM, and "If the contact fields have errors or the wrong format, this
    data will not be saved". The export's values went as they were: a US export's
    03/04/2026 (4 March) was read as 3 April, a 2026-03-04 14:05:30 was not saved, and
    both were marked sent. A mapping can now type its custom fields, converted like
    Dropthought's DATE metadata (date_order, date_timezone)."""
    app, server = sim
    app.define_field(7, "date")
    app.define_field(8, "datetime")
    untyped = connector_for(tmp_path / "a", server.url, DATED.split("[types]")[0])
    contact = dated("03/04/2026", "2026-03-04 14:05:30")
    plain = untyped.shape(contact)
    assert isinstance(plain, Contact)
    assert push(untyped, [plain])["K1"].status is Status.SENT
    (held,) = app.contacts()
    assert held["fields"] == {"7": "2026-04-03"}  # read day first; the time not saved

    typed = connector_for(tmp_path / "b", server.url, DATED, date_order="MDY")
    shaped = typed.shape(contact)
    assert isinstance(shaped, Contact)
    assert shaped.metadata == {"7": "2026-03-04", "8": "2026-03-04T14:05"}
    assert push(typed, [shaped])["K1"].status is Status.SENT
    (held,) = app.contacts()
    assert held["fields"] == {"7": "2026-03-04", "8": "2026-03-04T14:05"}


@pytest.mark.parametrize(
    ("birthday", "last_order", "options", "expected"),
    [
        ("1990-05-01", "2026-03-04T14:05:30Z", {}, {"7": "1990-05-01", "8": "2026-03-04T14:05"}),
        (
            "1990-05-01 00:00:00",
            "2026-03-04T14:05:30+01:00",
            {"date_timezone": "Europe/Kyiv"},
            {"7": "1990-05-01", "8": "2026-03-04T15:05"},
        ),
        (
            "01/05/1990",
            "04/03/2026 9:05",
            {"date_order": "DMY"},
            {"7": "1990-05-01", "8": "2026-03-04T09:05"},
        ),
        ("", "", {}, {"7": "", "8": ""}),  # sent empty: the field is cleared
        (
            "01/05/1990",
            "",
            {},
            "date custom field 7 (column 'Birthday'): '01/05/1990' may be DD/MM/YYYY or MM/DD/YYYY: set date_order in [vendors.esputnik]",
        ),
        (
            "1990-05-01",
            "yesterday",
            {},
            "datetime custom field 8 (column 'Last order'): cannot read 'yesterday'",
        ),
        ("31/02/1990", "", {"date_order": "DMY"}, "is not a calendar date"),
    ],
)
def test_typed_custom_fields_convert_or_say_why_the_contact_cannot_go(
    tmp_path: Path, birthday: str, last_order: str, options: dict[str, str], expected: Any
) -> None:
    connector = connector_for(tmp_path, "http://127.0.0.1:9", DATED, **options)
    shaped = connector.shape(dated(birthday, last_order))
    if isinstance(expected, dict):
        assert isinstance(shaped, Contact) and shaped.metadata == expected
    else:
        assert isinstance(shaped, str) and expected in shaped


def test_a_standard_field_takes_no_type(tmp_path: Path) -> None:
    mapping = DATED + '"email" = "text"\n'
    with pytest.raises(ConfigError, match="give types to \\[metadata\\] ids only"):
        connector_for(tmp_path, "http://127.0.0.1:9", mapping)


def test_a_dedupe_field_eSputnik_never_updates_is_warned_about_once(
    tmp_path: Path, sim: tuple[ESputnikSim, Server]
) -> None:
    """The spec's dedupeOn: "the field set as dedupeOn will not be updated". With the CRM
    key mapped to externalCustomerId (as `syncd init` and the example mapping do) and the
    default dedupe_on = "email", a contact found by its key keeps its old email at
    eSputnik while syncd records the change sent, and nothing said so."""
    app, server = sim
    mapping = '[fields]\nemail = "Email"\nexternalCustomerId = "Record ID"\n'
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    connector = connector_for(tmp_path, server.url, mapping)
    for email in ("old@example.com", "new@example.com"):
        contact = Contact("K1", {"email": email, "externalCustomerId": "K1"})
        assert push(connector, [contact])["K1"].status is Status.SENT
    assert [c["email"] for c in app.contacts()] == ["old@example.com"]  # as the spec says
    warnings = [line for line in map(json.loads, out.getvalue().splitlines()) if line.get("fix")]
    assert [w["field"] for w in warnings] == ["email"]
    assert 'dedupe_on = "externalCustomerId"' in warnings[0]["fix"]
    out.seek(0)
    out.truncate()
    keyed = connector_for(tmp_path / "k", server.url, mapping, dedupe_on="externalCustomerId")
    push(keyed, [Contact("K1", {"email": "new@example.com", "externalCustomerId": "K1"})])
    assert not [line for line in out.getvalue().splitlines() if '"fix"' in line]
    assert [c["email"] for c in app.contacts()] == ["new@example.com"]
