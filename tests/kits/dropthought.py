"""The Dropthought kit for the contract test: the shipped mapping against the default list."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from syncd.sandbox.base import Simulator
from syncd.sandbox.dropthought import DropthoughtSim
from syncd.vendors.base import Contact
from tests.kits import Kit

# the shipped mapping: the simulator's default list has exactly its metadata names
MAPPING = files("syncd.mappings").joinpath("dropthought.toml").read_text(encoding="utf-8")


def vendor_toml(url: str, bad_secret: bool) -> str:
    password = "wrong-password" if bad_secret else "sandbox-password"
    return (
        f'base_url = "{url}"\nmapping = "mapping.toml"\nemail = "ops@example.com"\n'
        f'password = "{password}"\nparticipant_group = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"\n'
    )


def contact(i: int) -> Contact:
    key = f"K{i:05d}"
    return Contact(
        key=key,
        fields={"email": f"person{i}@example.com", "phone": f"+3247{i:07d}", "name": f"First{i}"},
        metadata={
            "CRM ID": key,
            "Closed Date": f"2026-01-{1 + i % 28:02d} 14:00:00",
            "Ticket Type": "Billing",
            "Store": "Store 1",
        },
    )


def held(sim: Simulator) -> dict[str, dict[str, Any]]:
    assert isinstance(sim, DropthoughtSim)
    return {p["record"]["CRM ID"]: p for p in sim.participants() if p["record"].get("CRM ID")}


def triggers(sim: Simulator) -> dict[str, int]:
    return {key: p["triggers"] for key, p in held(sim).items()}


def reject(sim: Simulator, c: Contact, reason: str) -> None:
    sim.faults.reject(c.fields["email"], reason)


KIT = Kit(
    name="dropthought",
    kind="trigger",
    simulator=DropthoughtSim,
    vendor_toml=vendor_toml,
    mapping_toml=MAPPING,
    contact=contact,
    held=held,
    triggers=triggers,
    reject=reject,
    push_path="/dtapp/api/participant/",
)
