"""The eSputnik kit for the contract test."""

from __future__ import annotations

from typing import Any

from syncd.sandbox.base import Simulator
from syncd.sandbox.esputnik import ESputnikSim
from syncd.vendors.base import Contact
from tests.kits import Kit

MAPPING = """
[fields]
email = "Email"
sms = "Phone"
firstName = "First Name"
lastName = "Last Name"
externalCustomerId = "Record ID"
[metadata]
"101" = "Segment"
"""


def vendor_toml(url: str, bad_secret: bool) -> str:
    key = "wrong-key" if bad_secret else "sandbox-key"
    return (
        f'base_url = "{url}"\nmapping = "mapping.toml"\napi_key = "{key}"\n'
        'groups = ["Customers"]\npoll_every = 0.01\n'
    )


def contact(i: int) -> Contact:
    key = f"K{i:05d}"
    return Contact(
        key=key,
        fields={
            "email": f"person{i}@example.com",
            "sms": f"+3247{i:07d}",
            "firstName": f"First{i}",
            "lastName": "Lastname",
            "externalCustomerId": key,
        },
        metadata={"101": "Gold"},
    )


def held(sim: Simulator) -> dict[str, dict[str, Any]]:
    assert isinstance(sim, ESputnikSim)
    return {c["externalCustomerId"]: c for c in sim.contacts() if c.get("externalCustomerId")}


def reject(sim: Simulator, c: Contact, reason: str) -> None:
    sim.faults.reject(c.fields["email"], reason)


KIT = Kit(
    name="esputnik",
    kind="upsert",
    simulator=ESputnikSim,
    vendor_toml=vendor_toml,
    mapping_toml=MAPPING,
    contact=contact,
    held=held,
    reject=reject,
    push_path="/api/v1/contacts",
)
