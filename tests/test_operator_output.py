"""What the operator's commands print comes partly from others: a vendor's reasons, stop
reasons and cursors, the export's keys and values, a respondent's answers. Whatever those
hold — a line break that starts a fake line, a carriage return, ANSI escape sequences that
clear or recolour a terminal, a bell, a bidi override — `syncd status`, `syncd show`, the
lines under `syncd sync`'s summary and an error's line show it as written, escaped, each
where it belongs; `--json` carries it whole and keeps to its schema. In process, with the
in-memory vendors, on a stdout that is a terminal (click keeps escape sequences there)."""

from __future__ import annotations

import io
import json
import socket
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from syncd.cli import main
from syncd.errors import FatalError, OutcomeUnknownError
from syncd.log import printable
from syncd.notify import notify
from syncd.sample import rows
from tests.memory import MemoryWorld, Remote, memory_vendors

# a vendor's reason as a hostile (or merely broken) one may write it
EVIL = '\x1b[2J\x1b[31mok\x1b[0m\n{"event": "sent", "level": "info"}\r\x07\u202eevil'
KEY = "CRM-0000003"  # its City holds a line break (keys with one are quarantined)
CONTROL = {chr(c) for c in (*range(32), *range(127, 160))} | {"\u202e", "\u2028"}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def syncd(monkeypatch: pytest.MonkeyPatch, world: MemoryWorld, *args: str) -> tuple[int, str, str]:
    """`syncd --config … ARGS` in process, stdout a terminal: (exit status, stdout, stderr)."""
    out, err = Terminal(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(sys, "argv", ["syncd", "--config", str(world.folder / "syncd.toml"), *args])
    code: Any = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    finally:
        monkeypatch.undo()
    return int(code or 0), out.getvalue(), err.getvalue()


def clean(text: str) -> list[str]:
    """`text`'s lines, each asserted free of control characters and none a fake log line."""
    lines = text.splitlines()
    for line in lines:
        assert not CONTROL & set(line), repr(line)
        assert not line.startswith("{"), line
    assert "\r" not in text
    return lines


@pytest.fixture
def remotes() -> Iterator[dict[str, Remote]]:
    with memory_vendors(mem="upsert", survey="trigger") as found:
        yield found


@pytest.fixture
def world(tmp_path: Path, remotes: dict[str, Remote]) -> MemoryWorld:
    """Four contacts: mem refuses KEY with EVIL, survey's answer for CRM-0000002 leaves it
    unknown (EVIL) and stops survey."""
    world = MemoryWorld(tmp_path, remotes, batch_size=1)
    hostile = list(rows(4))
    hostile[3][5] = 'Gent\n{"event": "fake"}'  # City: a value over two lines
    world.write(hostile)
    remotes["mem"].script[KEY] = FatalError(EVIL)
    remotes["survey"].script["CRM-0000002"] = OutcomeUnknownError(EVIL)
    return world


def test_a_vendors_words_never_reach_the_terminal_as_control_characters(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = syncd(monkeypatch, world, "sync")
    assert code == 1, err
    lines = clean(out)
    escaped = EVIL.encode("unicode_escape").decode()[:40]
    shown = [ln for ln in lines if "\\x1b[2J" in ln]
    assert shown and any("stopped" in ln for ln in shown), out  # survey's stop reason
    assert any(ln.startswith("  mem: 1 failed") for ln in shown), out
    assert all(EVIL not in ln for ln in lines) and escaped[:20] in out

    code, out, err = syncd(monkeypatch, world, "status")
    assert code == 0, err
    lines = clean(out)
    [problem] = [ln for ln in lines if ln.startswith("  mem: 1 failed — ")]
    assert "\\x1b[2J\\x1b[31mok\\x1b[0m {" in problem and KEY in problem

    code, out, err = syncd(monkeypatch, world, "show", KEY)
    assert code == 0, err
    lines = clean(out)
    assert '  City: Gent\\n{"event": "fake"}' in lines, out
    [delivery] = [ln for ln in lines if "failed" in ln and "#" in ln]
    assert delivery.endswith("\\r\\x07\\u202eevil"), delivery


def test_json_carries_a_vendors_words_whole_and_keeps_to_its_schema(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert syncd(monkeypatch, world, "sync")[0] == 1
    found = {}
    for command, schema in ((["status", "--json"], "status"), (["show", "--json", KEY], "show")):
        code, out, err = syncd(monkeypatch, world, *command)
        assert code == 0, err
        assert "\x1b" not in out  # JSON escapes it
        found[schema] = json.loads(out)
        text = files("syncd").joinpath(f"{schema}.schema.json").read_text("utf-8")
        jsonschema.validate(found[schema], json.loads(text))
    assert {g["vendor"]: g["reason"] for g in found["status"]["problems"]}["mem"] == EVIL
    shown = found["show"]
    assert shown["vendors"]["mem"]["deliveries"][-1]["reason"] == EVIL
    assert shown["contact"]["attributes"]["City"] == 'Gent\n{"event": "fake"}'


def test_an_error_naming_a_hostile_path_is_one_line_as_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A path is anyone's words too: a file name can hold a line break and an escape."""
    named = tmp_path / "gone\x1b[2J\nsyncd: all good.toml"
    monkeypatch.setattr(sys, "stderr", err := Terminal())
    monkeypatch.setattr(sys, "argv", ["syncd", "--config", str(named), "status"])
    with pytest.raises(SystemExit) as exit_:
        main()
    monkeypatch.undo()
    message, hint = clean(err.getvalue())
    assert exit_.value.code == 2
    assert message.startswith("syncd: ") and "gone\\x1b[2J\\nsyncd: all good.toml" in message
    assert hint.startswith("  → ")


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["show", KEY]])
def test_text_in_the_store_that_is_not_utf8_is_one_line_not_a_traceback(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    """syncd writes none (Python's str cannot hold it), but a tool or a restore can."""
    assert syncd(monkeypatch, world, "sync")[0] == 1
    with closing(sqlite3.connect(world.folder / "syncd.db")) as conn, conn:
        conn.execute(
            "UPDATE deliveries SET reason = CAST(x'48ff54' AS TEXT) "
            "WHERE vendor = 'mem' AND key = ?",
            (KEY,),
        )
    code, out, err = syncd(monkeypatch, world, *command)
    assert (code, out) == (2, ""), err
    message, hint = clean(err)
    assert message.startswith(f"syncd: the store {world.folder / 'syncd.db'} holds text that is")
    assert "column 'reason'" in message or "column 'grp'" in message, message
    assert hint.startswith("  → something else wrote it")


def test_a_vendors_reason_is_kept_whole_past_a_nul(
    world: MemoryWorld, remotes: dict[str, Remote], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's JSON functions, through which outcomes are recorded, end a text at a NUL."""
    remotes["mem"].script[KEY] = FatalError("HTTP 500: \x00" + "the vendor's words " * 20)
    assert syncd(monkeypatch, world, "sync")[0] == 1
    code, out, err = syncd(monkeypatch, world, "show", "--json", KEY)
    assert code == 0, err
    [delivery] = json.loads(out)["vendors"]["mem"]["deliveries"]
    assert delivery["reason"] == "HTTP 500: \\x00" + "the vendor's words " * 20


def test_a_terminal_that_cannot_show_a_character_gets_its_escape(
    world: MemoryWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`—` or `…` on a latin-1 terminal (to an ASCII one click writes UTF-8): not a traceback."""
    assert syncd(monkeypatch, world, "sync")[0] == 1
    for command in (["status"], ["show", KEY]):
        out = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        monkeypatch.setattr(
            sys, "argv", ["syncd", "--config", str(world.folder / "syncd.toml"), *command]
        )
        try:
            main()
        finally:
            out.flush()
            monkeypatch.undo()
        shown = out.buffer.getvalue().decode("latin-1")  # type: ignore[attr-defined]
        assert "\\u2014" in shown, shown


def test_systemds_status_line_gets_a_vendors_words_escaped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`systemctl status syncd` prints STATUS= on the operator's terminal."""
    address = tmp_path / "notify.sock"
    with closing(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)) as receiver:
        receiver.bind(str(address))
        monkeypatch.setenv("NOTIFY_SOCKET", str(address))
        assert notify("READY=1", f"STATUS=last reconcile failed: {EVIL}")
        ready, status = clean(receiver.recv(65536).decode())
    assert ready == "READY=1"
    assert status == "STATUS=last reconcile failed: " + printable(EVIL.replace("\n", " "))
