"""Secrets never leak: every secret is a unique marker, given in each of the four ways a
config can give one; every command runs at DEBUG, through auth failures, vendor outages and
garbage answers; then the logs, the database (with its WAL) and the quarantine table are
searched for the markers."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from syncd.demo import SANDBOX_TABLES, demo_rows, write_config
from syncd.sample import write_export
from syncd.sandbox import SIMULATORS, Stack

SYNCD = [sys.executable, "-m", "syncd.cli"]

MARKERS = {
    "esputnik": "MARKER-esputnik-api-key-3f9c1",
    "dropthought": "MARKER-dropthought-password-77ab2",
    "altcraft": "MARKER-altcraft-token-c0d3e",
    "signalvine_token": "MARKER-signalvine-token-91e0f",
    "signalvine_secret": "MARKER-signalvine-secret-5aa4b",
    "hellocustomer": "MARKER-hellocustomer-token-e21d7",
}
WRONG = "MARKER-wrong-key-never-valid-0bad1"


def simulators() -> dict[str, object]:
    return {
        "esputnik": SIMULATORS["esputnik"](api_key=MARKERS["esputnik"]),  # type: ignore[call-arg]
        "dropthought": SIMULATORS["dropthought"](password=MARKERS["dropthought"]),  # type: ignore[call-arg]
        "altcraft": SIMULATORS["altcraft"](token=MARKERS["altcraft"]),  # type: ignore[call-arg]
        "signalvine": SIMULATORS["signalvine"](  # type: ignore[call-arg]
            token=MARKERS["signalvine_token"], secret=MARKERS["signalvine_secret"]
        ),
        "hellocustomer": SIMULATORS["hellocustomer"](token=MARKERS["hellocustomer"]),  # type: ignore[call-arg]
    }


def tables(folder: Path, esputnik_key: str) -> dict[str, str]:
    """Each vendor's table with its secret as a literal, env:, file: or credential:."""
    creds = folder / "credentials"
    creds.mkdir(exist_ok=True)
    (creds / "signalvine_secret").write_text(MARKERS["signalvine_secret"] + "\n")
    (folder / "altcraft.token").write_text(MARKERS["altcraft"])

    def swap(name: str, key: str, value: str) -> str:
        lines = [
            f'{key} = "{value}"' if line.startswith(f"{key} =") else line
            for line in SANDBOX_TABLES[name].splitlines()
        ]
        return "\n".join(lines) + "\n"

    out = {
        "esputnik": swap("esputnik", "api_key", esputnik_key),  # literal
        "dropthought": swap("dropthought", "password", "env:SYNCD_TEST_DT_PASSWORD"),
        "altcraft": swap("altcraft", "token", f"file:{folder / 'altcraft.token'}"),
        "signalvine": swap("signalvine", "secret", "credential:signalvine_secret").replace(
            'token = "sandbox-token"', f'token = "{MARKERS["signalvine_token"]}"'
        ),
        "hellocustomer": swap("hellocustomer", "token", "env:SYNCD_TEST_HC_TOKEN"),
    }
    return out


def run(folder: Path, config: Path, *args: str) -> str:
    env = {
        **os.environ,
        "SYNCD_TEST_DT_PASSWORD": MARKERS["dropthought"],
        "SYNCD_TEST_HC_TOKEN": MARKERS["hellocustomer"],
        "CREDENTIALS_DIRECTORY": str(folder / "credentials"),
    }
    proc = subprocess.run(
        [*SYNCD, "--config", str(config), "--log-level", "DEBUG", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc.stdout + proc.stderr


def text_of(output: list[str]) -> str:
    return "\n".join(output)


def test_no_secret_appears_in_logs_errors_or_the_database(tmp_path: Path) -> None:
    sims = simulators()
    output = []
    with Stack() as stack:
        urls = {name: stack.add(sim).url for name, sim in sims.items()}  # type: ignore[arg-type]
        config = write_config(tmp_path, urls, tables(tmp_path, MARKERS["esputnik"]))
        (tmp_path / "exports").mkdir()
        write_export(tmp_path / "exports" / "contacts-1.csv", demo_rows(30))
        output.append(run(tmp_path, config, "check", "--online"))
        output.append(run(tmp_path, config, "sync"))
        output.append(run(tmp_path, config, "pull"))
        output.append(run(tmp_path, config, "status", "--json"))
        conn = sqlite3.connect(tmp_path / "syncd.db")
        sent = {v for (v,) in conn.execute("SELECT vendor FROM deliveries WHERE status = 'sent'")}
        conn.close()
        assert sent == set(sims), text_of(output)  # every secret was really used
        # forced failures: every vendor answers garbage, then is down, then a key is wrong
        for name in sims:
            stack.servers[name].app.faults.add("malformed", count=3)
        write_export(tmp_path / "exports" / "contacts-1.csv", demo_rows(32, {1: 1, 2: 1}))
        output.append(run(tmp_path, config, "sync"))
        for name in sims:
            stack.servers[name].app.faults.add("down", status=503)
        output.append(run(tmp_path, config, "retry", "--dead", "--unknown"))
        output.append(run(tmp_path, config, "pull"))
        for name in sims:
            stack.servers[name].app.faults.clear()
        wrong = write_config(tmp_path, urls, tables(tmp_path, WRONG))
        write_export(tmp_path / "exports" / "contacts-1.csv", demo_rows(33, {3: 1}))
        output.append(run(tmp_path, wrong, "sync"))
        output.append(run(tmp_path, wrong, "check", "--online"))
    text = text_of(output)
    assert "AuthError" in text or "refused" in text or "401" in text  # the failures happened
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("syncd.db*") if p.suffix != ".lock")
    for marker in [*MARKERS.values(), WRONG]:
        assert marker not in text, f"{marker} leaked into the output"
        assert marker.encode() not in stored, f"{marker} leaked into the database"
