"""Every answer the eSputnik simulator gives, held to the vendor's OpenAPI document.

The simulator is driven the way the connector drives it (pushes that import, refuse one
contact or several, end in ERROR; the unsubscribes stream over pages; the online check; a
wrong key) and the way a careless client would (a body the schema refuses, a body of
another content type), and every answer it gives is recorded. Each one must be an answer
the spec lists for that path, method and status, with that media type, and a body its
schema takes -- *closed*: an object may carry only the properties the schema lists, so a
connector cannot come to rely on a field the simulator invents and eSputnik never sends.

The spec's one quirk is kept as it words it (`ContactBulkUpdateResult.failedContacts`:
"If 1 element is found, failedContacts is an object"): one failed contact is held to
`FailedContact`, several to the array.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator
from werkzeug.routing import Rule
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from syncd.config import load
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import SPEC, ESputnikSim
from syncd.vendors.base import Contact, Status
from syncd.vendors.esputnik import ESputnik
from tests.helpers import esputnik_table
from tests.kits.esputnik import KIT
from tests.vendors.test_contract import deliver, make_connector

EMAIL = {"type": "email", "value": "a@example.com"}
SMS = {"type": "sms", "value": "+32470000001"}
AUTH = {"Authorization": "Basic " + base64.b64encode(b"any:sandbox-key").decode()}
# answers the spec does not list for an operation but that the connector's documented
# assumptions rest on: a wrong key is a 401 on every call (the spec lists 401 for the
# calls it lists errors for at all), and an import session eSputnik no longer knows is a
# 404 (syncd.vendors.esputnik: "A 404 from the import status ...")
UNLISTED_BUT_ASSUMED = {
    ("get", "/api/v1/importstatus/{sessionId}"): {"401", "404"},
    ("get", "/api/v2/contacts/activity"): {"401"},
}


def closed(schema: Any) -> Any:
    """The schema with every object that lists properties closed to others."""
    if isinstance(schema, dict):
        out = {k: closed(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


COMPONENTS = closed(copy.deepcopy(SPEC["components"]))


def checker(schema: dict[str, Any]) -> Draft4Validator:
    return Draft4Validator({**closed(schema), "components": COMPONENTS})


FAILED_ONE = checker({"$ref": "#/components/schemas/FailedContact"})


class Recording(ESputnikSim):
    """The simulator, keeping every answer it gives with the spec path it answered."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.answers: list[tuple[str, str, Response]] = []
        self.templates = {
            rule.endpoint: str(rule.rule).replace("<session>", "{sessionId}")
            for rule in self.rules
            if isinstance(rule, Rule)
        }

    def dispatch(self, request: Request) -> Response:
        response = super().dispatch(request)
        endpoint, _args = self.url_map.bind_to_environ(request.environ).match()
        response.direct_passthrough = False
        self.answers.append((request.method.lower(), self.templates[str(endpoint)], response))
        return response


def problems(app: Recording) -> list[str]:
    """What in the recorded answers the spec does not say eSputnik answers."""
    found = []
    for method, path, response in app.answers:
        where = f"{method.upper()} {path} {response.status_code}"
        listed = SPEC["paths"][path][method]["responses"]
        status = str(response.status_code)
        if status not in listed:
            if status not in UNLISTED_BUT_ASSUMED.get((method, path), ()):
                found.append(f"{where}: the spec lists only {sorted(listed)}")
            continue
        content = listed[status].get("content")
        if not content:  # an error the spec gives no body for: text
            continue
        ((media, media_spec),) = content.items()
        if response.headers.get("Content-Type") != media:
            found.append(f"{where}: Content-Type {response.headers.get('Content-Type')!r}")
        body = response.get_json()
        schema = media_spec["schema"]
        if path == "/api/v1/contacts" and isinstance(body, dict):
            failed = body.get("failedContacts")
            if isinstance(failed, dict):  # the spec's quirk, in its own words
                found += [
                    f"{where} failedContacts: {e.message}" for e in FAILED_ONE.iter_errors(failed)
                ]
                body = {k: v for k, v in body.items() if k != "failedContacts"}
        found += [
            f"{where}: {e.message} (at {e.json_path})" for e in checker(schema).iter_errors(body)
        ]
    return found


def test_every_answer_to_the_connectors_flows_is_one_the_spec_documents(tmp_path: Path) -> None:
    app = Recording(polls_to_finish=3)
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        contacts = [KIT.contact(i) for i in range(6)]
        # one refused (failedContacts an object), then two refused (an array)
        KIT.reject(app, contacts[1], "no such mailbox")
        outcome, _ = deliver(connector, contacts[:3], tmp_path / "one")
        assert [s for s, _r in outcome.values()].count("failed") == 1
        KIT.reject(app, contacts[4], "no such mailbox")
        KIT.reject(app, contacts[5], "no such mailbox")
        results = connector.push(contacts[3:], lambda job, refused=(): None)
        assert {r.key: r.status for r in results}[contacts[3].key] is Status.SENT
        # every contact refused: no session at all
        assert {r.status for r in connector.push(contacts[4:], lambda j, r=(): None)} == {
            Status.FAILED
        }
        # a session that ends in ERROR
        app.fail_import(KIT.contact(9).fields["email"], "the import was cancelled")
        failed = connector.push([KIT.contact(9)], lambda job, refused=(): None)
        assert [r.status for r in failed] == [Status.FAILED]
        # unsubscribes over several pages, and the online check
        for i in (0, 2, 3):
            app.unsubscribe(KIT.contact(i).fields["email"])
        for i in range(1000):  # and strangers, past the connector's page of 1000
            app.unsubscribe(f"stranger{i}@example.com")
        now = datetime.now(UTC)
        pages = list(
            connector.pull("unsubscribes", (now - timedelta(days=2)).strftime("%Y-%m-%d"), now)
        )
        assert sum(len(p.records) for p in pages) == 1003
        assert connector.check()
        # a wrong key on every call the connector makes
        client = Client(app)
        wrong = {"Authorization": "Basic " + base64.b64encode(b"any:wrong").decode()}
        body = {
            "contacts": [{"channels": [{"type": "email", "value": "a@example.com"}]}],
            "dedupeOn": "email",
        }
        session = client.post("/api/v1/contacts", json=body, headers=AUTH).get_json()
        client.post("/api/v1/contacts", json=body, headers=wrong)
        client.get(f"/api/v1/importstatus/{session['asyncSessionId']}", headers=wrong)
        client.get("/api/v2/contacts/activity?dateFrom=2026-01-01&dateTo=2026-01-02", headers=wrong)
        # documented errors: a body the schema refuses, another content type, no such session
        client.post("/api/v1/contacts", json={"contacts": [{}], "dedupeOn": "email"}, headers=AUTH)
        client.post("/api/v1/contacts", data="{}", content_type="text/plain", headers=AUTH)
        client.get("/api/v1/importstatus/no-such-session", headers=AUTH)
    statuses = {(m, p, r.status_code) for m, p, r in app.answers}
    assert {
        ("post", "/api/v1/contacts", 200),
        ("post", "/api/v1/contacts", 400),
        ("post", "/api/v1/contacts", 401),
        ("post", "/api/v1/contacts", 415),
        ("get", "/api/v1/importstatus/{sessionId}", 200),
        ("get", "/api/v1/importstatus/{sessionId}", 404),
        ("get", "/api/v2/contacts/activity", 200),
    } <= statuses
    read = [
        r for m, p, r in app.answers if p == "/api/v2/contacts/activity" and r.status_code == 200
    ]
    assert len(read) >= 3  # two pages of the pull (1000, then 3), and the online check
    sessions = [
        r.get_json() for m, p, r in app.answers if "importstatus" in p and r.status_code == 200
    ]
    assert {s["status"] for s in sessions} == {"STARTED", "IMPORTING", "FINISHED", "ERROR"}
    assert problems(app) == []


@pytest.mark.parametrize(
    ("dedupe", "contact", "expected"),
    [
        ("sms", {"channels": [SMS, EMAIL]}, SMS["value"]),
        ("email_or_sms", {"channels": [SMS]}, SMS["value"]),
        ("email_or_sms", {"channels": [{"type": "viber", "value": "+32470000009"}]}, None),
        ("fieldId", {"channels": [EMAIL], "fields": [{"id": 7, "value": "CRM-7"}]}, "CRM-7"),
        ("email", {"channels": [EMAIL], "externalCustomerId": "E1"}, "E1"),
    ],
    ids=["sms", "email-or-sms", "viber-only", "field-id", "external-id-first"],
)
def test_the_import_mapping_names_the_field_matched_on_and_is_always_text(
    dedupe: str, contact: dict[str, Any], expected: str | None
) -> None:
    """DedupeMapping.dedupeValue is "a value of the field used to determine the contact
    uniqueness", a string: it was the email under dedupeOn sms or fieldId, and null for a
    contact with neither email nor sms."""
    app = Recording(polls_to_finish=1)
    client = Client(app)
    body = {
        "contacts": [contact],
        "dedupeOn": dedupe,
        **({"fieldId": 7} if dedupe == "fieldId" else {}),
    }
    session = client.post("/api/v1/contacts", json=body, headers=AUTH).get_json()["asyncSessionId"]
    status = client.get(f"/api/v1/importstatus/{session}", headers=AUTH).get_json()
    ((entry),) = status["mapping"]
    assert entry["dedupeValue"] == (expected or contact["channels"][0]["value"])
    assert problems(app) == []


def test_a_contact_deduplicated_on_a_custom_field_gets_its_contact_id_as_ref(
    tmp_path: Path,
) -> None:
    """Under dedupe_on = "fieldId" the mapping names the contact by its custom field's value
    (the spec's DedupeMapping): the connector looked only for the externalCustomerId, email
    and sms there, so such a contact was sent without the id eSputnik gave it."""
    app = ESputnikSim(polls_to_finish=1)
    (tmp_path / "mapping.toml").write_text(
        '[fields]\nemail = "Email"\n[metadata]\n"101" = "CRM ID"\n', encoding="utf-8"
    )
    with Server(app) as server:
        body, _ = esputnik_table(server.url, dedupe_on="fieldId", field_id=101)
        (tmp_path / "syncd.toml").write_text(
            '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
            f'[vendors.esputnik]\n{body}mapping = "mapping.toml"\n',
            encoding="utf-8",
        )
        connector = ESputnik(load(tmp_path / "syncd.toml").vendors["esputnik"])
        contact = Contact("K1", {"email": "a@example.com"}, {"101": "CRM-1"})
        (result,) = connector.push([contact], lambda job, refused=(): None)
    (held,) = app.contacts()
    assert (result.status, result.ref) == (Status.SENT, str(held["id"]))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"asyncSessionId": "s", "invented": 1}, "Additional properties are not allowed"),
        ({"failedContacts": {"error": "x"}}, "'channels' is a required property"),
        ({"asyncSessionId": 5}, "5 is not of type 'string'"),
    ],
)
def test_the_check_itself_catches_an_answer_outside_the_spec(answer: Any, expected: str) -> None:
    app = Recording()
    app.answers.append(("post", "/api/v1/contacts", _json(answer)))
    assert any(expected in p for p in problems(app))


def _json(data: Any) -> Response:
    return Response(json.dumps(data), 200, content_type="application/json; charset=UTF-8")
