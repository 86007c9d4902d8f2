"""Start-up costs nothing a command does not use.

Each case runs `syncd` in a fresh interpreter (the import state of the test process says
nothing) and reads that interpreter's `sys.modules` when it exits: `--help`, a
subcommand's help and shell completion load none of the heavy libraries; a real `sync`
loads none of the simulators', the daemon's or the terminal's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from tests.helpers import World, esputnik_table

# what a command that reads neither config nor store must not load
HEAVY = (
    "rich",
    "pygments",  # rich's (and structlog's dev renderer's, through rich)
    "jsonschema",  # the eSputnik simulator's
    "prometheus_client",
    "numpy",
    "pandas",
    "phonenumbers",
    "apscheduler",
    "werkzeug",
    "syncd.sandbox",
    "syncd.pipeline",
    "syncd.daemon",
    "syncd.demo",
    "syncd.progress",
    "syncd.metrics",
    "sqlite_utils",
    "requests",
    "urllib3",
)

RUN = """
import atexit, json, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["syncd", *sys.argv[1:]]
runpy.run_module("syncd", run_name="__main__")
"""


def modules_after(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `syncd ARGS` in a new interpreter; its result and every module it had loaded."""
    out = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RUN, str(out), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd or tmp_path,
        timeout=120,
    )
    return result, set(json.loads(out.read_text()))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    """Those of `names` loaded, as a package or any module under it."""
    return [n for n in names if any(m == n or m.startswith(n + ".") for m in modules)]


def test_importing_the_cli_loads_nothing_heavy(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    code = (
        f"import json, sys, syncd.cli; open({str(out)!r}, 'w').write(json.dumps(list(sys.modules)))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    modules = set(json.loads(out.read_text()))
    assert "syncd.cli" in modules
    assert loaded(modules, (*HEAVY, "structlog", "syncd.config")) == []


@pytest.mark.parametrize(
    "args", [["--help"], ["status", "--help"], ["sync", "--help"], ["check", "--help"]]
)
def test_help_loads_nothing_heavy(tmp_path: Path, args: list[str]) -> None:
    result, modules = modules_after(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "Usage: syncd" in result.stdout
    assert loaded(modules, HEAVY) == []
    if args == ["--help"]:  # the group's callback does not run: not even logging is set up
        assert loaded(modules, ("structlog", "syncd.config")) == []
        assert "Reconcile the CRM export" in result.stdout


def test_shell_completion_works_and_loads_nothing_heavy(tmp_path: Path) -> None:
    result, modules = modules_after(
        tmp_path,
        env={"_SYNCD_COMPLETE": "bash_complete", "COMP_WORDS": "syncd sta", "COMP_CWORD": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "plain,status" in result.stdout.splitlines()
    assert loaded(modules, (*HEAVY, "structlog")) == []


def test_vendor_completion_reads_the_config_quietly(tmp_path: Path) -> None:
    (tmp_path / "syncd.toml").write_text("[vendors.esputnik]\n[vendors.altcraft]\n")
    result, modules = modules_after(
        tmp_path,
        env={
            "_SYNCD_COMPLETE": "bash_complete",
            "COMP_WORDS": "syncd sync --vendor al",
            "COMP_CWORD": "3",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["plain,altcraft"]
    assert loaded(modules, HEAVY) == []


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """A store with contacts at the eSputnik simulator, `[metrics]` configured (which only
    `syncd run` serves), and one change in the export for the next sync to send."""
    with Server(ESputnikSim()) as server:
        folder = tmp_path / "world"
        folder.mkdir()
        w = World(folder, {"esputnik": esputnik_table(server.url)})
        config = folder / "syncd.toml"
        config.write_text(config.read_text() + '[metrics]\nlisten = "127.0.0.1:9464"\n')
        data = list(rows(50))
        w.write(data)
        assert w.sync().exit_code == 0
        data[0][1] += "x"
        w.write(data)
        yield w


def _sync(tmp_path: Path, world: World) -> set[str]:
    result, modules = modules_after(tmp_path, "sync", cwd=world.folder)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "esputnik: 1 changed, 1 sent" in result.stdout
    return modules


def test_a_sync_loads_no_simulator_daemon_or_terminal_module(tmp_path: Path, world: World) -> None:
    modules = _sync(tmp_path, world)
    assert {"syncd.pipeline", "syncd.diff", "requests"} <= modules  # it did sync
    assert (
        loaded(
            modules,
            (
                "syncd.sandbox",
                "werkzeug",
                "jsonschema",
                "prometheus_client",  # [metrics] is served by `syncd run` only
                "syncd.metrics",
                "syncd.daemon",
                "syncd.demo",
                "rich",  # stderr is not a terminal: no progress display
                "pygments",
                "pandas",  # sqlite-utils looks for it; syncd hides it (cli._store_libraries)
            ),
        )
        == []
    )


def test_a_sync_does_not_load_apscheduler(tmp_path: Path, world: World) -> None:
    assert loaded(_sync(tmp_path, world), ("apscheduler", "syncd.schedule")) == []


FROZEN = """
import atexit, gc, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(str(gc.get_freeze_count())))
sys.argv = ["syncd", *sys.argv[1:]]
runpy.run_module("syncd", run_name="__main__")
"""


def test_a_sync_in_a_process_of_its_own_freezes_what_it_loaded(
    tmp_path: Path, world: World
) -> None:
    """`cli._long_lived`: the modules' objects leave the cyclic collector's scans once a
    command has loaded them (the suite's own process turns it off: tests/conftest.py)."""
    out = tmp_path / "frozen"
    done = subprocess.run(
        [sys.executable, "-c", FROZEN, str(out), "sync"],
        capture_output=True,
        text=True,
        cwd=world.folder,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(out.read_text()) > 10_000  # what the imports made: tens of thousands
