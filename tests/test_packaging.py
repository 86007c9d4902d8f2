"""`python -m syncd`, and shell completion of `--vendor` from the config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from syncd.cli import cli, complete_vendor
from syncd.vendors import REGISTRY

# the secrets name variables nobody set: completion must not need them
CONFIG = """
[source]
path = "x.csv"
key = "id"
[store]
path = "syncd.db"
[vendors.esputnik]
base_url = "https://esputnik.com"
api_key = "env:SYNCD_TEST_UNSET_KEY"
mapping = "m.toml"
[vendors.altcraft]
base_url = "https://ru.altkraft.com"
token = "env:SYNCD_TEST_UNSET_TOKEN"
mapping = "m.toml"
"""


def test_python_m_syncd_runs_the_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syncd", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert all(name in result.stdout for name in ("sync", "pull", "status"))


def completions(config: Path | None, incomplete: str = "") -> list[str]:
    ctx = click.Context(cli)
    ctx.params = {"config": str(config) if config else None}
    param = next(p for p in cli.commands["sync"].params if p.name == "vendors")
    return complete_vendor(ctx, param, incomplete)


def test_vendor_completion_offers_the_configured_vendors(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    config.write_text(CONFIG)
    assert completions(config) == ["esputnik", "altcraft"]
    assert completions(config, "al") == ["altcraft"]


@pytest.mark.parametrize("text", [None, "[vendors\n", "vendors = 3\n"])
def test_without_a_readable_config_completion_offers_every_vendor(
    tmp_path: Path, text: str | None
) -> None:
    config = tmp_path / "syncd.toml"
    if text is not None:
        config.write_text(text)
    assert sorted(completions(config)) == sorted(REGISTRY)
    assert completions(config, "hello") == ["hellocustomer"]


@pytest.mark.parametrize("command", ["sync", "pull", "retry"])
def test_the_shell_completes_vendor_through_clicks_variable(tmp_path: Path, command: str) -> None:
    script = Path(sys.executable).with_name("syncd")  # the installed console script
    (tmp_path / "syncd.toml").write_text(CONFIG)
    env = {
        **os.environ,
        "_SYNCD_COMPLETE": "bash_complete",
        "COMP_WORDS": f"syncd {command} --vendor ",
        "COMP_CWORD": "3",
    }
    env.pop("SYNCD_CONFIG", None)  # ./syncd.toml, as the operator's shell would find it
    result = subprocess.run(
        [str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,esputnik", "plain,altcraft"]
    assert result.stderr == ""
