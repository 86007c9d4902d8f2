"""Dropthought's typed list metadata: DATE and PHONE values converted by `shape`, refused
by the simulator when they are not in the list's format."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

import syncd.vendors.dropthought as module
from syncd.errors import ConfigError
from syncd.sample import HEADER
from syncd.sandbox.base import Server
from syncd.sandbox.dropthought import DEFAULT_METADATA, DropthoughtSim
from syncd.vendors.dropthought import Dropthought, list_date
from tests.helpers import World
from tests.kits.dropthought import MAPPING, held

UTC = ZoneInfo("UTC")


def documented_pairs() -> list[tuple[str, str]]:
    """The module docstring's `input` → `sent` pairs (stated for date_order = "DMY")."""
    doc = " ".join((module.__doc__ or "").split())
    table = doc.split("DATE conversion", 1)[1].split('with `date_order = "MDY"`', 1)[0]
    return re.findall(r"`([^`]+)` → `([^`]+)`", table)


def test_the_docstring_documents_the_conversions() -> None:
    assert len(documented_pairs()) >= 10


@pytest.mark.parametrize(("value", "sent"), documented_pairs())
def test_every_documented_date_form_converts_as_documented(value: str, sent: str) -> None:
    assert list_date(value, "DMY", UTC) == sent


@pytest.mark.parametrize(
    ("value", "order", "zone", "sent"),
    [
        ("01/10/2026", "MDY", "UTC", "2026-01-10 00:00:00"),
        ("1/10/2026 9:05", "MDY", "UTC", "2026-01-10 09:05:00"),
        ("10/01/2026 14:00", "DMY", "UTC", "2026-01-10 14:00:00"),
        ("2026-01-10T14:05:30Z", "DMY", "Europe/Brussels", "2026-01-10 15:05:30"),
        ("2026-07-10T14:05:30Z", "DMY", "Europe/Brussels", "2026-07-10 16:05:30"),
        ("2026-01-10T14:05:30-0500", "DMY", "UTC", "2026-01-10 19:05:30"),
        ("2026-01-10T14:05:30", "DMY", "Europe/Brussels", "2026-01-10 14:05:30"),
        ("2026-01-01T00:30:00+01:00", "DMY", "UTC", "2025-12-31 23:30:00"),
    ],
)
def test_dates_follow_date_order_and_date_timezone(
    value: str, order: str, zone: str, sent: str
) -> None:
    assert list_date(value, order, ZoneInfo(zone)) == sent


@pytest.mark.parametrize(
    ("value", "order", "why"),
    [
        ("01/13/2026", "DMY", "has month 13 under date_order = 'DMY': the column looks MM/DD"),
        ("13/01/2026", "MDY", "has month 13 under date_order = 'MDY': the column looks DD/MM"),
        ("10/01/2026", None, "may be DD/MM/YYYY or MM/DD/YYYY: set date_order"),
        ("31/02/2026", "DMY", "is not a calendar date"),
        ("2026-02-30", "DMY", "is not a calendar date"),
        ("2026-01-10 25:00", "DMY", "is not a calendar date"),
        ("13/13/2026", "DMY", "is not a calendar date"),
        ("10/01/26", "DMY", "cannot read '10/01/26' as a date"),
        ("10.01.2026", "DMY", "cannot read"),
        ("Jan 10 2026", "DMY", "cannot read"),
        ("20260110", "DMY", "cannot read"),
    ],
)
def test_unreadable_dates_say_why(value: str, order: str | None, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        list_date(value, order, UTC)


# --- through the diff and the simulator ---------------------------------------------------
TYPED = MAPPING.replace('"Store" = "Store"', '"Store" = "Store"\n"Mobile" = "Phone"').replace(
    '[types]\n"Closed Date" = "DATE"', '[types]\n"Closed Date" = "DATE"\n"Mobile" = "PHONE"'
)


def sample(i: int, closed: str, phone: str = "+32 470 12 34 56") -> list[str]:
    values = {
        "Record ID": f"CRM-{i}",
        "First Name": f"First{i}",
        "Email": f"person{i}@example.com",
        "Phone": phone,
        "Closed Date": closed,
        "Ticket Type": "Billing",
        "Store": "Store 1",
    }
    return [values.get(h, "") for h in HEADER]


@pytest.fixture
def sim() -> DropthoughtSim:
    return DropthoughtSim(metadata={**DEFAULT_METADATA, "Mobile": "PHONE"})


def world(tmp_path: Path, url: str, mapping: str = TYPED, **options: str) -> World:
    table = (
        f'base_url = "{url}"\nemail = "ops@example.com"\npassword = "sandbox-password"\n'
        'participant_group = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"\n'
        + "".join(f'{k} = "{v}"\n' for k, v in options.items())
    )
    return World(tmp_path, {"dropthought": (table, mapping)})


def quarantined(w: World) -> dict[str, str]:
    store = w.store()
    try:
        rows = store.query("SELECT key, vendor, reason FROM quarantine")
        return {r["key"]: f"{r['vendor']}: {r['reason']}" for r in rows}
    finally:
        store.close()


def test_dates_and_phones_reach_the_list_in_its_formats(
    tmp_path: Path, sim: DropthoughtSim
) -> None:
    with Server(sim) as server:
        w = world(tmp_path, server.url, date_order="DMY")
        w.write(
            [
                sample(1, "10/01/2026 14:00"),
                sample(2, "2026-01-10T14:05:30+01:00", "0032 470 12 34 57"),
                sample(3, ""),
                sample(4, "01/13/2026"),  # MM/DD in a DD/MM export
                sample(5, "2026-01-10", "0470 12 34 58"),  # national: [source] phone_region
            ]
        )
        w.sync()
    records = {k: p["record"] for k, p in held(sim).items()}
    assert {k: (r["Closed Date"], r["Mobile"]) for k, r in records.items()} == {
        "CRM-1": ("2026-01-10 14:00:00", "+32470123456"),
        "CRM-2": ("2026-01-10 13:05:30", "+32470123457"),
        "CRM-3": ("", "+32470123456"),  # an empty date is sent empty
        "CRM-5": ("2026-01-10 00:00:00", "+32470123458"),  # normalised like a phone field
    }
    assert quarantined(w) == {
        "CRM-4": "dropthought: DATE metadata 'Closed Date' (column 'Closed Date'): "
        "'01/13/2026' has month 13 under date_order = 'DMY': the column looks MM/DD/YYYY; "
        "fix the export or date_order",
    }
    assert {d["key"]: d["status"] for d in w.deliveries()} == {
        "CRM-1": "sent",
        "CRM-2": "sent",
        "CRM-3": "sent",
        "CRM-5": "sent",
    }


def test_slashed_dates_without_date_order_are_quarantined(
    tmp_path: Path, sim: DropthoughtSim
) -> None:
    with Server(sim) as server:
        w = world(tmp_path, server.url)
        w.write([sample(1, "10/01/2026"), sample(2, "2026-01-10 14:00")])
        w.sync()
    assert set(held(sim)) == {"CRM-2"}
    assert "set date_order in [vendors.dropthought]" in quarantined(w)["CRM-1"]


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        (
            TYPED.replace('"Mobile" = "PHONE"', 'phone = "PHONE"'),
            "[types] phone: the [fields] are typed already",
        ),
        (
            TYPED.replace('"Mobile" = "PHONE"', '"Mobile" = "Date"'),
            "[types] Mobile: 'Date' is not one of 'DATE', 'PHONE', 'String'",
        ),
    ],
)
def test_types_mistakes_name_the_mapping(tmp_path: Path, mapping: str, expected: str) -> None:
    w = world(tmp_path, "http://127.0.0.1:1", mapping=mapping)
    with pytest.raises(ConfigError) as err:
        Dropthought(w.cfg.vendors["dropthought"])
    assert str(tmp_path / "dropthought.toml") in str(err.value)
    assert expected in str(err.value)


def post(url: str, header: list[str], data: list[str]) -> tuple[int, dict[str, Any]]:
    """One participant call to the simulator, as Dropthought's document shows it."""
    login = {"email": "ops@example.com", "password": "sandbox-password"}
    token = requests.post(f"{url}/dtapp/api/authenticate/login", json=login, timeout=5)
    resp = requests.post(
        f"{url}/dtapp/api/participant/",
        params={"participantgroupuuid": "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"},
        json={"header": header, "data": data},
        headers={"Authorization": f"Bearer {token.json()['result']['accessToken']}"},
        timeout=5,
    )
    return resp.status_code, resp.json()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("Closed Date", "2026-01-10", "Closed Date: date must be YYYY-MM-DD HH:MM:SS"),
        ("Closed Date", "10/01/2026 14:00", "Closed Date: date must be YYYY-MM-DD HH:MM:SS"),
        ("Closed Date", "2026-02-30 14:00:00", "Closed Date: date must be YYYY-MM-DD HH:MM:SS"),
        ("Mobile", "0470123456", "Mobile: phone number must start with its country code"),
        ("Mobile", "+32 470 12 34 56", "Mobile: phone number must start with its country code"),
        ("Shop", "Store 1", "header 'Shop' is not a metadata of the list"),
    ],
)
def test_the_simulator_refuses_values_outside_the_lists_types(
    sim: DropthoughtSim, name: str, value: str, message: str
) -> None:
    with Server(sim) as server:
        status, answer = post(server.url, ["Email", name], ["a@example.com", value])
        assert status == 400 and answer["success"] is False
        assert answer["message"].startswith(message)
    assert sim.participants() == []


def test_the_simulator_takes_values_in_the_lists_types(sim: DropthoughtSim) -> None:
    header = ["Email", "Closed Date", "Mobile", "Store"]
    with Server(sim) as server:
        status, answer = post(server.url, header, ["a@example.com", "2026-01-10 14:00:00", "", ""])
    assert status == 200 and answer["success"] is True
    assert answer["result"][0]["participant_uuid"] == sim.participants()[0]["participant_uuid"]
