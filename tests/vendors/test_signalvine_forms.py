"""The body SignalVine signs is its own compact re-serialisation of the JSON it parsed, and
whether that form escapes non-ASCII is unknown: the simulator holds to either form, and the
connector gets accented names from a real export through under both."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from syncd.clock import FakeClock
from syncd.demo import mapping_text
from syncd.errors import AuthError
from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.signalvine import PROGRAM, SignalVineSim
from syncd.vendors.base import Contact
from syncd.vendors.signalvine import SignalVine, signature, timestamp
from tests.helpers import World

PUSH = f"/v2/programs/{PROGRAM}/participants"
BODY = {
    "program": PROGRAM,
    "options": {"new": "add", "mode": "row", "existing": ["phone"], "absent": "ignore"},
    "participants": "customer_id,phone,first_name\nC1,+32470000001,Zoë\n",
}


def post(
    url: str, sent: bytes, signed: str, clock: FakeClock, kind: str = "application/json"
) -> requests.Response:
    stamp = timestamp(clock.now())
    sig = signature("sandbox-token", "sandbox-secret", "POST", PUSH, signed, stamp)
    headers = {
        "Authorization": f"SignalVine sandbox-token:{sig}",
        "SignalVine-Date": stamp,
        "Content-Type": kind,
    }
    return requests.post(url + PUSH, data=sent, headers=headers, timeout=5)


@pytest.mark.parametrize("form", ["raw", "escape"])
def test_the_simulator_checks_its_compact_form_not_the_bytes_received(form: str) -> None:
    clock = FakeClock()
    spaced = json.dumps(BODY, ensure_ascii=form == "escape")
    compact = json.dumps(BODY, separators=(",", ":"), ensure_ascii=form == "escape")
    other = json.dumps(BODY, separators=(",", ":"), ensure_ascii=form != "escape")
    with Server(SignalVineSim(non_ascii=form, now=clock.now)) as server:
        assert post(server.url, spaced.encode(), spaced, clock).status_code == 401
        assert post(server.url, spaced.encode(), other, clock).status_code == 401
        assert post(server.url, spaced.encode(), compact, clock).status_code == 202
        assert post(server.url, b"not json", "not json", clock).status_code == 400


def test_only_a_json_body_is_signed_compact_and_the_upload_takes_only_json() -> None:
    """docbox's sign_request compacts the body with `jq -c` only when it posts JSON; with
    --text (text/plain) it signs the body as sent. The simulator compacted every body, so
    a spaced body sent as text and signed compact was taken, and an upload of another
    Content-Type than the article's JSON was accepted."""
    clock = FakeClock()
    spaced = json.dumps(BODY)
    compact = json.dumps(BODY, separators=(",", ":"))
    with Server(SignalVineSim(now=clock.now)) as server:
        assert post(server.url, spaced.encode(), compact, clock, "text/plain").status_code == 401
        taken = post(server.url, spaced.encode(), spaced, clock, "text/plain")
        assert (taken.status_code, taken.json()) == (
            415,
            {"error": "Content-Type must be application/json"},
        )


@pytest.mark.parametrize("form", ["raw", "escape"])
def test_accented_names_from_the_export_are_sent_under_either_server_form(
    tmp_path: Path, form: str
) -> None:
    clock = FakeClock(datetime.now(UTC) + timedelta(seconds=5))  # after the export is written
    sim = SignalVineSim(non_ascii=form, now=clock.now)
    with Server(sim) as server:
        table = (
            f'base_url = "{server.url}"\ntoken = "sandbox-token"\nsecret = "sandbox-secret"\n'
            f'program = "{PROGRAM}"\nbatch_size = 4\n'
        )
        world = World(tmp_path, {"signalvine": (table, mapping_text("signalvine"))})
        world.clock = clock  # type: ignore[assignment]
        world.write(list(rows(12)))
        world.sync()
    statuses = [d["status"] for d in world.deliveries()]
    assert statuses and set(statuses) == {"sent"}
    held = sim.participants_by_customer()
    assert held["CRM-0000000"]["first_name"] == "Émile"
    assert held["CRM-0000009"]["last_name"] == "Müller"
    accepted = -(-len(statuses) // 4)
    # raw UTF-8 first; under the escaping form, refused once, then escaped for the run
    assert sim.count(PUSH, "POST") == accepted + (form == "escape")


def test_a_wrong_secret_is_not_retried_past_the_other_form(tmp_path: Path) -> None:
    clock = FakeClock()
    sim = SignalVineSim(now=clock.now)
    with Server(sim) as server:
        world = World(
            tmp_path,
            {
                "signalvine": (
                    f'base_url = "{server.url}"\ntoken = "sandbox-token"\nsecret = "wrong"\n'
                    f'program = "{PROGRAM}"\n',
                    mapping_text("signalvine"),
                )
            },
        )
        connector = SignalVine(world.cfg.vendors["signalvine"], clock=clock)
        zoe = Contact("K1", {"customer_id": "K1", "phone": "+32470000001", "first_name": "Zoë"})
        with pytest.raises(AuthError, match="signature"):
            connector.push([zoe], lambda job: None)
    assert sim.count(PUSH, "POST") == 2  # each form once
    assert connector.non_ascii == "raw"
