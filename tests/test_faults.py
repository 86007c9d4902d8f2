"""The fault matrix: every vendor × every way a vendor day goes wrong → the outcome the
design promises. The README's reliability table is this table (`FAULTS` and `EXPECTED`).

Each case pushes three contacts through the real delivery loop and a real store, against
the vendor's simulator over loopback, with the fault switched on for the push request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from syncd.sandbox.base import Server, Simulator
from tests.kits import Kit
from tests.vendors.test_contract import KITS, deliver, make_connector

Fault = Callable[[Kit, Simulator], None]

FAULTS: dict[str, Fault] = {
    "429 with Retry-After": lambda k, s: (
        s.faults.add("status", status=429, retry_after="2", count=1, path=k.push_path) and None
    ),
    "429 without Retry-After": lambda k, s: (
        s.faults.add("status", status=429, count=1, path=k.push_path) and None
    ),
    "500 once": lambda k, s: s.faults.add("status", status=500, count=1, path=k.push_path) and None,
    "503 all run": lambda k, s: s.faults.add("down", status=503) and None,
    "read timeout": lambda k, s: (
        s.faults.add("delay", seconds=1.0, count=1, path=k.push_path) and None
    ),
    "connection reset": lambda k, s: s.faults.add("drop", count=1, path=k.push_path) and None,
    "answer dropped": lambda k, s: s.faults.add("drop_after", count=1, path=k.push_path) and None,
    "malformed JSON": lambda k, s: s.faults.add("malformed", count=1, path=k.push_path) and None,
    "partial rejection": lambda k, s: (
        k.reject(s, k.contact(1), "rejected in the matrix")  # type: ignore[misc]
        if k.reject
        else None
    ),
    "revoked credential": lambda k, s: None,  # the connector is given a key the vendor refuses
    "connection refused": lambda k, s: None,  # the connector is pointed at a closed port
}

# fault → (upsert outcome, trigger outcome):
#   sent      every contact acknowledged (after retries where needed)
#   pending   nothing acknowledged; left for the next run
#   unknown   the contacts of the request in flight are `unknown` (the vendor may have
#             acted: never re-sent without `syncd retry --unknown`), the rest sent
#   rejected  the rejected contact `failed` with the vendor's reason, the rest sent
EXPECTED: dict[str, tuple[str, str]] = {
    "429 with Retry-After": ("sent", "sent"),  # waited as told, then sent
    "429 without Retry-After": ("sent", "sent"),  # our own backoff, then sent
    "500 once": ("sent", "sent"),
    "503 all run": ("pending", "pending"),
    "connection refused": ("pending", "pending"),  # nothing reached the vendor
    "read timeout": ("sent", "unknown"),  # upserts re-send: harmless
    "connection reset": ("sent", "unknown"),  # after the request went out: it may have acted
    "answer dropped": ("sent", "unknown"),
    "malformed JSON": ("pending", "unknown"),
    "partial rejection": ("rejected", "rejected"),
    "revoked credential": ("pending", "pending"),  # and the vendor is stopped for the run
}
# where a vendor's API makes the outcome differ, and why
DIFFERENT: dict[tuple[str, str], tuple[str, str]] = {
    ("hellocustomer", "malformed JSON"): (
        "sent",
        "a 200 from addmultipletocache is the whole acknowledgement: syncd reads no body",
    ),
}


def outcome(kit: Kit, fault: str, affected: int) -> dict[str, int]:
    upsert, trigger = EXPECTED[fault]
    expected = DIFFERENT.get((kit.name, fault), (upsert if kit.kind == "upsert" else trigger,))[0]
    counts = {
        "sent": {"sent": 3},
        "pending": {"pending": 3},
        "unknown": {"unknown": affected, "sent": 3 - affected},
        "rejected": {"failed": 1, "sent": 2},
    }[expected]
    return {k: n for k, n in counts.items() if n}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("kit", KITS, ids=[k.name for k in KITS])
def test_fault_matrix(kit: Kit, fault: str, tmp_path: Path) -> None:
    sim = kit.simulator()
    with Server(sim) as server:
        url = "http://127.0.0.1:9" if fault == "connection refused" else server.url
        connector = make_connector(
            kit, url, tmp_path, bad_secret=fault == "revoked credential", read_timeout=0.5
        )
        FAULTS[fault](kit, sim)
        contacts = [kit.contact(i) for i in range(3)]
        affected = len(next(iter(connector.batches(contacts))))
        results, deliverer = deliver(connector, contacts, tmp_path)
    statuses: dict[str, int] = {}
    for status, _reason in results.values():
        statuses[status] = statuses.get(status, 0) + 1
    assert statuses == outcome(kit, fault, affected), results
    if fault == "partial rejection":
        assert results[contacts[1].key] == ("failed", results[contacts[1].key][1])
        assert "rejected in the matrix" in (results[contacts[1].key][1] or "")
    if fault == "revoked credential":
        assert deliverer.out.stopped
    if kit.triggers and EXPECTED[fault][1] == "unknown" and fault != "connection reset":
        assert max(kit.triggers(sim).values()) == 1  # reached the vendor once, never twice


def readme_table() -> str:
    """The reliability table as the README shows it (a test keeps them equal)."""
    rows = [
        "| fault, at the push request | upsert vendors (eSputnik, SignalVine) "
        "| trigger vendors (Dropthought, Hello Customer, Altcraft) |",
        "|---|---|---|",
    ]
    rows += [f"| {fault} | {up} | {tr} |" for fault, (up, tr) in EXPECTED.items()]
    rows += [
        f"\n{vendor}, {fault}: {out} — {why}." for (vendor, fault), (out, why) in DIFFERENT.items()
    ]
    return "\n".join(rows)
