"""The spec's dedupeOn: "Important the field set as dedupeOn will not be updated" -- for
every dedupeOn syncd offers, not only email and sms."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from syncd import log as logmod
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.vendors.base import Contact, Status
from tests.vendors.test_esputnik import connector_for, push

KEYED = '[fields]\nemail = "Email"\nsms = "Phone"\nexternalCustomerId = "Record ID"\n'


@pytest.mark.parametrize(
    ("options", "before", "after", "field", "held"),
    [
        (
            {"dedupe_on": "fieldId", "field_id": 101},
            ({"email": "a@example.com"}, {"101": "CARD-1"}),
            ({"email": "a@example.com"}, {"101": "CARD-2"}),
            "101",
            lambda c: c["fields"]["101"] == "CARD-1",
        ),
        (
            {"dedupe_on": "email_or_sms"},
            ({"email": "old@example.com", "sms": "+32470000001"}, {"101": "x"}),
            ({"email": "new@example.com", "sms": "+32470000002"}, {"101": "x"}),
            "email",
            lambda c: (c["email"], c["sms"]) == ("old@example.com", "+32470000001"),
        ),
    ],
    ids=["field-id", "email-or-sms"],
)
def test_a_dedupe_field_eSputnik_never_updates_is_warned_about_for_every_dedupe_on(
    tmp_path: Path,
    options: dict[str, Any],
    before: tuple[dict[str, str], dict[str, str]],
    after: tuple[dict[str, str], dict[str, str]],
    field: str,
    held: Any,
) -> None:
    """A contact found by its externalCustomerId keeps the value of the field dedupeOn
    names: the custom field of dedupe_on = "fieldId", the email and sms of
    "email_or_sms". The simulator updated them, and the connector warned only for
    "email" and "sms": syncd recorded the change sent, eSputnik (by its spec) kept the old
    value, and nothing said so."""
    app = ESputnikSim(polls_to_finish=1)
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    with Server(app) as server:
        connector = connector_for(
            tmp_path, server.url, KEYED + '[metadata]\n"101" = "Card"\n', **options
        )
        for fields, metadata in (before, after):
            contact = Contact("K1", {**fields, "externalCustomerId": "K1"}, metadata)
            assert push(connector, [contact])["K1"].status is Status.SENT
    (contact,) = app.contacts()
    assert held(contact), contact
    warnings = [line for line in map(json.loads, out.getvalue().splitlines()) if line.get("fix")]
    assert [w["field"] for w in warnings] == [field]
    assert 'dedupe_on = "externalCustomerId"' in warnings[0]["fix"]
