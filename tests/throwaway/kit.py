"""The throw-away vendor's kit for the contract test."""

from __future__ import annotations

from typing import Any

from syncd.sandbox.base import Simulator
from syncd.vendors.base import Contact
from tests.kits import Kit
from tests.throwaway.simulator import ThrowawaySim


def vendor_toml(url: str, bad_secret: bool) -> str:
    token = "wrong-token" if bad_secret else "sandbox-token"
    return f'base_url = "{url}"\nmapping = "mapping.toml"\ntoken = "{token}"\n'


def contact(i: int) -> Contact:
    return Contact(key=f"K{i:05d}", fields={"email": f"person{i}@example.com"})


def held(sim: Simulator) -> dict[str, dict[str, Any]]:
    assert isinstance(sim, ThrowawaySim)
    with sim.lock:
        return dict(sim.held)


def reject(sim: Simulator, c: Contact, reason: str) -> None:
    sim.faults.reject(c.key, reason)


KIT = Kit(
    name="throwaway",
    kind="upsert",
    simulator=ThrowawaySim,
    vendor_toml=vendor_toml,
    mapping_toml='[fields]\nemail = "Email"\n',
    contact=contact,
    held=held,
    reject=reject,
    push_path="/contacts",
)
