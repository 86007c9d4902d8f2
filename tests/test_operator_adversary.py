"""The operator's side, attacked: `status`, `show`, `prune`, `retry` and `backup` on stores
that are missing, huge, newer or being written, and `syncd run` reloaded and stopped at the
wrong moment. Each test pins a promise of the README that a first version broke, or one
that no other test held."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import World, esputnik_table

SYNCD = [sys.executable, "-m", "syncd.cli"]


@pytest.fixture
def sim() -> Iterator[tuple[ESputnikSim, Server]]:
    app = ESputnikSim()
    with Server(app) as server:
        yield app, server


def syncd(config: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*SYNCD, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def synced(folder: Path, url: str, n: int = 50) -> World:
    world = World(folder, {"esputnik": esputnik_table(url)})
    world.write(list(rows(n)))
    assert world.sync().exit_code == 0
    return world


# --- a store that does not exist ----------------------------------------------------------


def missing_store_config(tmp_path: Path) -> Path:
    """A valid config whose store (in a folder not made yet) does not exist."""
    config = tmp_path / "syncd.toml"
    config.write_text(
        '[source]\npath = "contacts.csv"\nkey = "Record ID"\n[store]\npath = "state/syncd.db"\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n'
        'mapping = "esputnik.toml"\n',
        encoding="utf-8",
    )
    (tmp_path / "esputnik.toml").write_text('[fields]\nemail = "Email"\n', encoding="utf-8")
    return config


@pytest.mark.parametrize(
    "command",
    [["status"], ["status", "--json"], ["prune"], ["prune", "--dry-run"], ["retry"]],
    ids=" ".join,
)
def test_a_command_on_a_missing_store_says_so_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    """A mistyped [store] path must not look like a healthy, empty installation (status
    exiting 0 with no runs and nothing open) nor leave an empty store, its folder or a lock
    file behind for the service to find."""
    config = missing_store_config(tmp_path)
    proc = syncd(config, *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    store = tmp_path / "state" / "syncd.db"
    assert proc.stderr.startswith(f"syncd: there is no store at {store}\n"), proc.stderr
    assert "the first `syncd sync` creates it" in proc.stderr
    assert not proc.stdout
    assert not (tmp_path / "state").exists()
