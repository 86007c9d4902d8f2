"""SignalVine's public Python SDK (`signalvine-sdk`, a client nobody here wrote) against our
simulator over loopback: its calls must be accepted as the real API accepts them, above all
its upsert, which sends spaced JSON while it signs the compact form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from signalvine_sdk import SignalVineSDK

from syncd.sandbox.base import Server
from syncd.sandbox.signalvine import PROGRAM, VARIABLES, SignalVineSim


class Frame(pd.DataFrame):
    """pandas 2 renamed `to_csv(line_terminator=)`, which the SDK still passes, to
    `lineterminator`: only that spelling is translated; the SDK builds, signs and sends."""

    def to_csv(self, *args: Any, line_terminator: str | None = None, **kwargs: Any) -> Any:
        return super().to_csv(*args, lineterminator=line_terminator, **kwargs)


@pytest.fixture(params=["raw", "escape"])
def sim(request: pytest.FixtureRequest) -> SignalVineSim:
    return SignalVineSim(non_ascii=request.param)  # the SDK dates requests by the real clock


@pytest.fixture
def sdk(sim: SignalVineSim) -> Iterator[SignalVineSDK]:
    with Server(sim) as server:
        yield SignalVineSDK("account", "sandbox-token", "sandbox-secret", api_hostname=server.url)


def test_the_sdk_reads_the_schema_upserts_polls_and_lists(
    sim: SignalVineSim, sdk: SignalVineSDK
) -> None:
    assert sdk.get_program_schema(PROGRAM) == VARIABLES
    people = Frame(
        {
            "customer_id": ["C1", "C2"],
            "phone": ["+32470000001", "+32470000002"],
            "first_name": ["Ana", "Luc"],
        }
    )
    sim.polls_to_complete = 2
    location = sdk.upsert_participants(PROGRAM, people, new_flag="add", mode_flag="tx")
    sent = sim.requests(f"/v2/programs/{PROGRAM}/participants")[0].body
    assert b'"mode": "tx"' in sent  # spaced on the wire, signed compact: accepted
    # the SDK reads a running command, as a complete one, only from a 200 (else APIError)
    assert sdk.get_location_status(location) == (False, None)
    assert sdk.get_location_status(location) == (True, None)
    items = sdk.get_participants_chunk(PROGRAM, chunk_size=500, offset=0)
    assert sorted((i["customerId"], i["phone"]) for i in items) == [
        ("C1", "+32470000001"),
        ("C2", "+32470000002"),
    ]
    names = {p["name"]: p["value"] for p in items[0]["profile"]}
    assert names["first_name"] in {"Ana", "Luc"}
