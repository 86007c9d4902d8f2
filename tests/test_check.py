"""`syncd check --online`: every vendor is checked with a real read-only call, each gets its
line, and a refusal of any one fails the command naming it (the others are still checked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from syncd.demo import SANDBOX_TABLES, demo_rows, write_config
from syncd.sample import write_export
from syncd.sandbox import SIMULATORS, Stack

SYNCD = [sys.executable, "-m", "syncd.cli"]
OTHER = "another-credential-entirely"
STRANGERS = {  # simulators that hold other credentials than the demo's config gives
    "esputnik": {"api_key": OTHER},
    "dropthought": {"password": OTHER},
    "altcraft": {"token": OTHER},
    "signalvine": {"secret": OTHER},
    "hellocustomer": {"token": OTHER},
}


def check(tmp_path: Path, strangers: bool) -> subprocess.CompletedProcess[str]:
    with Stack() as stack:
        urls = {
            name: stack.add(cls(**(STRANGERS[name] if strangers else {}))).url  # type: ignore[call-arg]
            for name, cls in SIMULATORS.items()
        }
        config = write_config(tmp_path, urls, dict(SANDBOX_TABLES))
        (tmp_path / "exports").mkdir(exist_ok=True)
        write_export(tmp_path / "exports" / "contacts-1.csv", demo_rows(5))
        return subprocess.run(
            [*SYNCD, "--config", str(config), "check", "--online"],
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_every_vendor_proves_its_credentials(tmp_path: Path) -> None:
    proc = check(tmp_path, strangers=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split(":", 1)[0]: line for line in proc.stdout.splitlines()}
    for name in SIMULATORS:
        assert name in lines, proc.stdout
        assert "FAILED" not in lines[name] and "not checked" not in lines[name], lines[name]
    assert "not created yet" in proc.stdout and not list(tmp_path.glob("*.db"))  # never creates it


def test_a_wrong_credential_fails_naming_each_vendor_and_the_rest_are_still_checked(
    tmp_path: Path,
) -> None:
    proc = check(tmp_path, strangers=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    for name in SIMULATORS:
        assert f"{name}: FAILED: {name}:" in proc.stdout, proc.stdout
    assert "the online check failed for" in proc.stderr
    assert all(name in proc.stderr for name in SIMULATORS), proc.stderr
    assert "Traceback" not in proc.stderr
