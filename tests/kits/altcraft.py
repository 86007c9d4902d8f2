"""The Altcraft kit for the contract test: custom matching on the CRM key."""

from __future__ import annotations

from typing import Any

from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Simulator
from syncd.vendors.base import Contact
from tests.kits import Kit

MAPPING = """
[fields]
field_value = "Record ID"
email = "Email"
[metadata]
"content.ticket_type" = "Ticket Type"
"custom_data.segment" = "Segment"
[trigger]
on_new = true
on_change = ["Closed Date"]
"""


def vendor_toml(url: str, bad_secret: bool) -> str:
    token = "wrong-token" if bad_secret else "sandbox-token"
    return (
        f'base_url = "{url}"\nmapping = "mapping.toml"\ntoken = "{token}"\ntrigger_id = 7\n'
        'matching = "custom"\nfield_name = "CRM_ID"\n'
    )


def contact(i: int) -> Contact:
    key = f"K{i:05d}"
    return Contact(
        key=key,
        fields={"field_value": key, "email": f"person{i}@example.com"},
        metadata={"content.ticket_type": "Billing", "custom_data.segment": "Gold"},
    )


def held(sim: Simulator) -> dict[str, dict[str, Any]]:
    assert isinstance(sim, AltcraftSim)
    return sim.last()  # custom matching on CRM_ID: the matching value is the CRM key


def triggers(sim: Simulator) -> dict[str, int]:
    assert isinstance(sim, AltcraftSim)
    return sim.triggers()


def reject(sim: Simulator, c: Contact, reason: str) -> None:
    sim.faults.reject(c.fields["field_value"], reason)


KIT = Kit(
    name="altcraft",
    kind="trigger",
    simulator=AltcraftSim,
    vendor_toml=vendor_toml,
    mapping_toml=MAPPING,
    contact=contact,
    held=held,
    triggers=triggers,
    reject=reject,
    push_path="/api/v1.1/campaigns/triggers/",
)
