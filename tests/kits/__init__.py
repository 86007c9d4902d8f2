"""One kit per vendor: what the shared contract test needs to drive that vendor.

A kit knows its simulator class, the `[vendors.<name>]` table and mapping file for a
config pointed at a running simulator, how to build contacts, and how to read back what
the simulator holds (keyed by CRM key) so tests can compare it with what was sent.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from syncd.sandbox.base import Simulator
from syncd.vendors.base import Contact


@dataclass(frozen=True)
class Kit:
    name: str
    kind: str  # "upsert" | "trigger"
    simulator: Callable[[], Simulator]
    # the [vendors.<name>] table body (without the header) for a simulator at `url`;
    # `bad_secret` gives credentials the simulator refuses
    vendor_toml: Callable[[str, bool], str]
    mapping_toml: str  # the mapping file the table's `mapping = "mapping.toml"` points at
    # contact i, optionally with changed field values
    contact: Callable[[int], Contact]
    # what the simulator holds: CRM key → the vendor-side record (upserts: latest state;
    # triggers: the last trigger received for that key)
    held: Callable[[Simulator], dict[str, dict[str, Any]]]
    # trigger vendors: how many triggers each CRM key received
    triggers: Callable[[Simulator], dict[str, int]] | None = None
    # make the simulator reject contact i (per-contact rejection)
    reject: Callable[[Simulator, Contact, str], None] | None = None
    # the path of the push request (for counting and path-scoped faults)
    push_path: str = ""


# kits registered from a test (tests/throwaway); every other vendor's is tests/kits/<name>.py
KITS: dict[str, Kit] = {}


def kit_for(name: str) -> Kit:
    """The kit of a registered vendor; LookupError when it has none."""
    if name not in KITS:
        module = f"tests.kits.{name}"
        try:
            KITS[name] = importlib.import_module(module).KIT
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            raise LookupError(
                f"vendor {name!r} is registered but has no kit: write tests/kits/{name}.py"
            ) from None
    return KITS[name]
