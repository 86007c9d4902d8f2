"""The SignalVine kit for the contract test."""

from __future__ import annotations

from typing import Any

from syncd.sandbox.base import Simulator
from syncd.sandbox.signalvine import PROGRAM, SignalVineSim
from syncd.vendors.base import Contact
from tests.kits import Kit

MAPPING = """
[fields]
customer_id = "Record ID"
phone = "Phone"
first_name = "First Name"
last_name = "Last Name"
email = "Email"
"""


def vendor_toml(url: str, bad_secret: bool) -> str:
    secret = "wrong-secret" if bad_secret else "sandbox-secret"
    return (
        f'base_url = "{url}"\nmapping = "mapping.toml"\ntoken = "sandbox-token"\n'
        f'secret = "{secret}"\nprogram = "{PROGRAM}"\n'
    )


def contact(i: int) -> Contact:
    key = f"K{i:05d}"
    return Contact(
        key=key,
        fields={
            "customer_id": key,
            "phone": f"+3247{i:07d}",
            "first_name": f"First{i}",
            "last_name": "Lastname",
            "email": f"person{i}@example.com",
        },
    )


def held(sim: Simulator) -> dict[str, dict[str, Any]]:
    assert isinstance(sim, SignalVineSim)
    return sim.participants_by_customer()


def reject(sim: Simulator, c: Contact, reason: str) -> None:
    sim.faults.reject(c.fields["customer_id"], reason)


KIT = Kit(
    name="signalvine",
    kind="upsert",
    simulator=SignalVineSim,
    vendor_toml=vendor_toml,
    mapping_toml=MAPPING,
    contact=contact,
    held=held,
    reject=reject,
    push_path=f"/v2/programs/{PROGRAM}/participants",
)
