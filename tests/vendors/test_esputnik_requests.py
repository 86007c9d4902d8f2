"""Every request body the connector can build, held to the spec's ContactsBulkUpdate
*closed*: no property the schema does not list (the schema itself lets any through, and
eSputnik would drop a misspelt one without a word), every value of the listed type."""

from __future__ import annotations

from pathlib import Path

from jsonschema import Draft4Validator

from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.vendors.base import Contact
from tests.kits.esputnik import KIT
from tests.vendors.test_contract import deliver, make_connector
from tests.vendors.test_esputnik import connector_for
from tests.vendors.test_esputnik_answers import COMPONENTS

CLOSED = Draft4Validator(
    {"$ref": "#/components/schemas/ContactsBulkUpdate", "components": COMPONENTS}
)
EVERY_FIELD = """[fields]
email = "E"
sms = "P"
firstName = "F"
lastName = "L"
externalCustomerId = "K"
languageCode = "LC"
timeZone = "TZ"
"address.region" = "R"
"address.town" = "T"
"address.address" = "A"
"address.postcode" = "PC"
[metadata]
"101" = "Card"
"102" = "Closed"
"""
VALUES = {
    "email": "a@example.com",
    "sms": "+32470000001",
    "firstName": "Ann",
    "lastName": "Lee",
    "externalCustomerId": "K1",
    "languageCode": "en",
    "timeZone": "Europe/Brussels",
    "address.region": "Flanders",
    "address.town": "Gent",
    "address.address": "Veldstraat 1",
    "address.postcode": "9000",
}


def test_every_body_the_connector_builds_is_one_the_closed_schema_takes(tmp_path: Path) -> None:
    connector = connector_for(
        tmp_path,
        "http://127.0.0.1:9",
        EVERY_FIELD,
        dedupe_on="fieldId",
        field_id=101,
        groups=["Customers"],
        groups_exclude=["Leads"],
        event_key_new="newContact",
        restore_deleted=True,
    )
    full = Contact("K1", VALUES, {"101": "CARD-1", "102": ""})
    sparse = Contact("K2", {"sms": "+32470000002"}, {"101": "CARD-2", "102": "x"})
    body = connector.body([full, sparse])
    assert [e.message for e in CLOSED.iter_errors(body)] == []
    # and nothing mapped is left out of it: every property the contact schema lists that
    # the mapping maps is there, by its spec name
    sent = set(body["contacts"][0]) | {f"address.{a}" for a in body["contacts"][0]["address"]}
    assert sent >= {"firstName", "lastName", "externalCustomerId", "languageCode", "timeZone"}
    assert sorted(body["contactFields"]) == sorted(name.removeprefix("address.") for name in VALUES)
    assert body["customFieldsIDs"] == [101, 102]


def test_a_415_stops_the_vendor_and_fails_no_contact(tmp_path: Path) -> None:
    """The spec lists 415 "Unsupported media type" for `POST /api/v1/contacts`: the body's
    content type was refused (a proxy rewriting it, a client bug), not any contact in it.
    Read as any other 4xx, the batch was split down to single contacts and five of them
    marked failed with "HTTP 415" before the guard stopped eSputnik. Now the first 415
    stops it, every contact pending, its attempts unspent."""
    app = ESputnikSim(polls_to_finish=1)
    app.faults.add("down", status=415, path="/api/v1/contacts")
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        outcome, deliverer = deliver(connector, [KIT.contact(i) for i in range(8)], tmp_path)
    assert {status for status, _r in outcome.values()} == {"pending"}, outcome
    stopped = deliverer.out.stopped or ""
    assert "415" in stopped and "application/json" in stopped, stopped
