"""The spec's dedupeOn: "Important the field set as dedupeOn will not be updated" -- the
custom field of dedupeOn = "fieldId" too, not only email and sms."""

from __future__ import annotations

import io
import json
from pathlib import Path

from syncd import log as logmod
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.vendors.base import Contact, Status
from tests.vendors.test_esputnik import connector_for, push

KEYED = '[fields]\nemail = "Email"\nexternalCustomerId = "Record ID"\n[metadata]\n"101" = "Card"\n'


def test_the_custom_field_deduplicated_on_is_never_updated_and_syncd_says_so(
    tmp_path: Path,
) -> None:
    """A contact found by its externalCustomerId keeps the value of the field dedupeOn
    names, the custom field of dedupe_on = "fieldId" too (the spec's fieldId: "The field
    for determining the contact uniqueness"). The simulator updated it, and the connector
    warned only for "email" and "sms": syncd recorded the change sent, eSputnik (by its
    spec) kept the old value, and nothing said so. (Which field "email_or_sms" sets the
    spec does not say: neither is assumed frozen.)"""
    app = ESputnikSim(polls_to_finish=1)
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    with Server(app) as server:
        connector = connector_for(tmp_path, server.url, KEYED, dedupe_on="fieldId", field_id=101)
        for card in ("CARD-1", "CARD-2"):
            contact = Contact(
                "K1", {"email": "a@example.com", "externalCustomerId": "K1"}, {"101": card}
            )
            assert push(connector, [contact])["K1"].status is Status.SENT
    (held,) = app.contacts()
    assert held["fields"]["101"] == "CARD-1"  # as the spec says
    warnings = [line for line in map(json.loads, out.getvalue().splitlines()) if line.get("fix")]
    assert [w["field"] for w in warnings] == ["101"]
    assert "custom field 101" in warnings[0]["event"]
    assert 'dedupe_on = "externalCustomerId"' in warnings[0]["fix"]
