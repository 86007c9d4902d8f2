"""A property of the whole pipeline: whatever sequence of CRM edits and syncs happens, after
each sync the vendor holds exactly the export's current mapped values, and a sync after
edits to unmapped columns only sends nothing."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.sample import row
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import World, esputnik_table

FIRST, CITY, NOTES = 1, 5, 14  # First Name is mapped; City and Notes are not

edits = st.lists(
    st.tuples(
        st.sampled_from(["rename", "unmapped", "add", "remove", "sync"]),
        st.integers(0, 10_000),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=20, deadline=None)
@given(script=edits)
def test_the_vendor_always_holds_the_current_export(script: list[tuple[str, int]]) -> None:
    rng = random.Random(0)
    data = {i: row(i, rng) for i in range(20)}
    next_id = 20
    with tempfile.TemporaryDirectory() as folder, Server(ESputnikSim()) as server:
        sim = server.app
        assert isinstance(sim, ESputnikSim)
        world = World(Path(folder), {"esputnik": esputnik_table(server.url)}, max_drop=1.0)
        mapped_change = True
        for op, n in [*script, ("sync", 0)]:
            keys = sorted(data)
            if op == "rename":
                data[keys[n % len(keys)]][FIRST] = f"Name{n}"
                mapped_change = True
            elif op == "unmapped":
                target = data[keys[n % len(keys)]]
                target[CITY], target[NOTES] = f"City{n}", f"note {n}\nsecond line"
            elif op == "add":
                data[next_id] = row(next_id, rng)
                next_id += 1
                mapped_change = True
            elif op == "remove" and len(data) > 1:
                del data[keys[n % len(keys)]]
            elif op == "sync":
                world.write(list(data.values()))
                before = sim.count("/api/v1/contacts", "POST")
                report = world.sync()
                assert report.exit_code == 0, report.summary()
                if not mapped_change:
                    assert sim.count("/api/v1/contacts", "POST") == before
                mapped_change = False
                held = {c["externalCustomerId"]: c for c in sim.contacts()}
                for r in data.values():
                    assert held[r[0]]["firstName"] == r[FIRST].strip()
                    assert held[r[0]]["email"] == r[3].strip().lower()
