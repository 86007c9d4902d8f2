"""Shared fixtures. Every store a test opens gets `PRAGMA integrity_check` at teardown."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import log as logmod
from syncd.state import Store


@pytest.fixture(autouse=True)
def _integrity(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    opened: set[Path] = set()
    real_open = Store.open.__func__  # type: ignore[attr-defined]

    def tracking_open(cls: type[Store], path: Path, **kw: object) -> Store:
        opened.add(Path(path))
        return real_open(cls, path, **kw)  # type: ignore[no-any-return]

    monkeypatch.setattr(Store, "open", classmethod(tracking_open))
    yield
    for path in opened:
        if path.exists():
            conn = sqlite3.connect(path)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", path
            finally:
                conn.close()


@pytest.fixture(autouse=True)
def _no_freeze() -> Iterator[None]:
    """Commands run in this process (CliRunner, `main()`) do not `gc.freeze` it: what a
    test leaves would never be collected. tests/test_startup.py holds a real process to it.
    A patch of its own, which a test's `monkeypatch.undo()` leaves in place."""
    import gc

    from syncd import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "_long_lived", lambda: None)
        yield
    assert gc.get_freeze_count() == 0, "something froze the test process"


@pytest.fixture(autouse=True)
def _logging() -> Iterator[None]:
    """Logging to this test's stderr, and put back after it: a module-scoped fixture is set
    up before any test's own fixtures, and would otherwise log to the stream the last test
    captured (capsys closes its stream at teardown: every line was then a ValueError).
    The secrets a test registered are forgotten after it too: a test's token "expired"
    made the next test's log line "token expired" read "token ***"."""
    secrets, compiled = set(logmod._secrets), logmod._compiled
    logmod.configure(level="DEBUG", json=True)
    yield
    logmod.configure(level="DEBUG", json=True)
    with logmod._lock:
        logmod._secrets.clear()
        logmod._secrets.update(secrets)
        logmod._compiled = compiled


@pytest.fixture(autouse=True)
def _process_wide() -> Iterator[None]:
    """The process's pacers (`syncd.http.pacer_for`, one per vendor and key, so the
    service's connectors share a rate limit and a Retry-After) and its `liveness.LIVE`
    are forgotten after each test, as the log's secrets are: a Retry-After one test's vendor
    said would hold the next test that shares its key and clock, and a job a failed test
    left begun would be the next in-process daemon's stall."""
    from syncd import http, liveness

    yield
    with http._pacers_lock:
        http._pacers.clear()
    liveness.LIVE.__init__()  # type: ignore[misc]
