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


# The SDK's own upsert tests (tests/test_sdk_upsert.py), run by its authors against the real
# API with their program's variables: Fred and Wilma go in quietly, and each bad upload's
# command message holds SignalVine's words. Their program's variables, as the SDK's fixture
# of a real participant types them (tests/test_common.py).
SDK_VARIABLES = {
    "customer_id": "String",
    "active": "Boolean",
    "first_name": "String",
    "last_name": "String",
    "group_list": "List",
    "target_group": "String",
    "email": "String",
    "phone": "Phone",
    "full_name": "String",
    "honors": "Maybe (Boolean)",
}
FRED = {
    "customer_id": "08c95df1-b233-4221-926c-5d19e61c12b2",
    "active": False,
    "first_name": "Fred",
    "last_name": "Flintstone",
    "group_list": "Test Contacts",
    "target_group": None,
    "email": "fred@flintstone.com",
    "phone": "+13035550100",
    "full_name": "Flintstone, Fred",
}
WILMA = {
    **FRED,
    "customer_id": "61ce1d03-9176-477e-90ab-b037c7613b6c",
    "first_name": "Wilma",
    "group_list": "Test Contacts;People Who Put Up With Fred",
    "email": "wilma@flintstone.com",
    "phone": "+13035550101",
    "full_name": "Flintstone, Wilma",
}


@pytest.fixture
def flintstones() -> Iterator[tuple[SignalVineSim, SignalVineSDK]]:
    # the SDK's tests find the words with `in`: in a text, which message_form "text" gives
    sim = SignalVineSim(variables=SDK_VARIABLES, message_form="text")
    with Server(sim) as server:
        yield sim, SignalVineSDK("account", "sandbox-token", "sandbox-secret", server.url)


def upsert(sdk: SignalVineSDK, folks: list[dict[str, Any]]) -> tuple[bool, str]:
    """The SDK's upsert (tx mode, new add, every column updated), then its status read."""
    return sdk.get_location_status(sdk.upsert_participants(PROGRAM, Frame(folks), new_flag="add"))


def test_the_sdks_own_upsert_vectors(flintstones: tuple[SignalVineSim, SignalVineSDK]) -> None:
    sim, sdk = flintstones
    # test_upsert_participants_1: "should be nice and quiet"
    assert upsert(sdk, [FRED, WILMA]) == (True, None)
    held = sim.participants_by_customer()
    assert held[FRED["customer_id"]]["active"] is False
    assert held[WILMA["customer_id"]]["group_list"] == WILMA["group_list"]
    # test_upsert_participants_bad1: a made-up variable and a bad Boolean; "The API seems to
    # only catch the first one that happens"
    done, message = upsert(
        sdk, [{**FRED, "can_ride_tyrannosaurus": True, "honors": "sure why not"}]
    )
    assert done and "Unrecognized variable: can_ride_tyrannosaurus" in message
    assert "sure why not" not in message
    # test_upsert_participants_bad2: the Boolean alone
    done, message = upsert(sdk, [{**FRED, "honors": "sure why not"}])
    assert done and "Could not parse 'sure why not' as Maybe (Boolean)" in message
    # a Maybe may be empty (the SDK's convert_sv_types: no "Maybe", required), a Boolean not
    assert upsert(sdk, [{**FRED, "honors": None}]) == (True, None)
    done, message = upsert(sdk, [{**FRED, "active": None}])
    assert done and "Could not parse '' as Boolean" in message
    assert sim.participants_by_customer()[FRED["customer_id"]]["active"] is False


def test_the_sdk_pages_the_participant_list_one_by_one(
    sim: SignalVineSim, sdk: SignalVineSDK
) -> None:
    """get_participants_chunk's paging ("ensure the chunk_size is the same, or the 'pages'
    don't work anymore"): every participant on exactly one page, then an empty page."""
    for i in range(5):
        sim.seed(f"C{i}", f"+3247000000{i}")
    sim.opt_out("C3")
    pages = [sdk.get_participants_chunk(PROGRAM, chunk_size=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert sorted(i["customerId"] for p in pages for i in p) == [f"C{i}" for i in range(5)]
    assert [i["active"] for p in pages for i in p].count(False) == 1  # active=all: C3 too
