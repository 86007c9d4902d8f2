"""The Hello Customer kit for the contract test.

The contract test drives the connector with its own FakeClock, which the simulator cannot
share, so the kit's simulator does not throttle (`min_interval=0`); the 1-call-per-second
rule is tested in tests/vendors/test_hellocustomer.py with one clock on both sides.
"""

from __future__ import annotations

from typing import Any

from syncd.sandbox.base import Simulator
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.vendors.base import Contact
from tests.kits import Kit

CAMPAIGN = "c8dc5f94-a9e8-4743-8744-e66a73a7e724"

MAPPING = """
[fields]
email = "Email"
language = "Language"
firstName = "First Name"
lastName = "Last Name"
[metadata]
"Store" = "Store"
[trigger]
on_new = true
on_change = ["Closed Date"]
"""


def simulator() -> HelloCustomerSim:
    return HelloCustomerSim(min_interval=0.0)


def vendor_toml(url: str, bad_secret: bool) -> str:
    token = "wrong-token" if bad_secret else "sandbox-token"
    return (
        f'base_url = "{url}"\nmapping = "mapping.toml"\ntoken = "{token}"\n'
        f'campaign = "{CAMPAIGN}"\ndefault_language = "EN"\n'
    )


def contact(i: int) -> Contact:
    return Contact(
        key=f"K{i:05d}",
        fields={
            "email": f"person{i}@example.com",
            "language": ("French", "nl", "EN")[i % 3],
            "firstName": f"First{i}",
            "lastName": "Lastname",
        },
        metadata={"Store": f"Store {i % 4 + 1}"},
    )


def held(sim: Simulator) -> dict[str, dict[str, Any]]:
    assert isinstance(sim, HelloCustomerSim)
    return {key: adds[-1] for key, adds in sim.by_key().items()}


def triggers(sim: Simulator) -> dict[str, int]:
    assert isinstance(sim, HelloCustomerSim)
    return {key: len(adds) for key, adds in sim.by_key().items()}


def reject(sim: Simulator, c: Contact, reason: str) -> None:
    sim.faults.reject(c.fields["email"], reason)


KIT = Kit(
    name="hellocustomer",
    kind="trigger",
    simulator=simulator,
    vendor_toml=vendor_toml,
    mapping_toml=MAPPING,
    contact=contact,
    held=held,
    triggers=triggers,
    reject=reject,
    push_path=f"/V1.0/EN/campaign/{CAMPAIGN}/respondent/addmultipletocache",
)
