"""Progress on a terminal: totals, rate and time left, drawn by rich on stderr when (and only
when) stderr is a terminal. `syncd sync` runs in a pseudo-terminal against the simulators."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from syncd.clock import SystemClock
from syncd.demo import SANDBOX_TABLES, demo_rows, mapping_text
from syncd.progress import Display, duration, paced_seconds
from syncd.runs import open_connectors
from syncd.sample import write_export
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from tests.helpers import World, esputnik_table

CONTACTS = 150  # two Hello Customer calls of 100, a second apart


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with Server(ESputnikSim()) as esputnik, Server(HelloCustomerSim()) as hello:
        w = World(
            tmp_path,
            {
                "esputnik": esputnik_table(esputnik.url),
                "hellocustomer": (
                    f'base_url = "{hello.url}"\n' + SANDBOX_TABLES["hellocustomer"],
                    mapping_text("hellocustomer"),
                ),
            },
        )
        write_export(w.export, demo_rows(CONTACTS))
        yield w


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (0.2, 40, 500, 7500)] == ["1 s", "40 s", "8 min", "2 h 05 min"]


def test_a_paced_vendor_says_how_long_up_front(world: World) -> None:
    """50,000 contacts to Hello Customer, 100 a call at 1 call/s: ≈ 8 min before any is sent."""
    with open_connectors(world.cfg, SystemClock()) as connectors:
        hello, esputnik = connectors["hellocustomer"], connectors["esputnik"]
        assert paced_seconds(hello, 50_000) == 500.0
        assert paced_seconds(esputnik, 50_000) is None  # not rate limited: measured instead
        out = io.StringIO()
        with Display(Console(file=out, force_terminal=True, width=160)) as display:
            display.sending(hello, 50_000)
            display.bar.refresh()
    assert "sent 0 of 50,000" in out.getvalue()
    assert "≈ 8 min left" in out.getvalue()


def syncd(world: World, *, tty: bool) -> tuple[int, str, str]:
    """Run `syncd sync` with stderr a pseudo-terminal (or a pipe): (exit, stdout, stderr)."""
    cmd = [sys.executable, "-m", "syncd.cli", "--config", str(world.folder / "syncd.toml"), "sync"]
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "160"}
    env.pop("JOURNAL_STREAM", None)
    if not tty:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        return done.returncode, done.stdout, done.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env, text=True)
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read() if proc.stdout else ""
    return proc.wait(60), out, seen.decode("utf-8", "replace")


def test_sync_on_a_terminal_shows_totals_and_time_left(world: World) -> None:
    code, out, err = syncd(world, tty=True)
    assert code == 0, (out, err)
    assert "reading contacts.csv" in err
    assert f"sent 0 of {CONTACTS}" in err  # Hello Customer's total before its first call
    assert "≈ 2 s left" in err  # its pacing: two calls, a second apart
    assert f"of {CONTACTS}" in err and "left" in err
    assert out.startswith("reconcile #1: ") and "sent 0 of" not in out  # its own line


def test_nothing_of_the_progress_goes_to_a_pipe(world: World) -> None:
    code, out, err = syncd(world, tty=False)
    assert code == 0, (out, err)
    for text in ("reading contacts.csv", "sent 0 of", "left", "\r", "\x1b["):
        assert text not in err and text not in out, text
