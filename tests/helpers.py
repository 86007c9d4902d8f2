"""A small test world: a folder with an export, a config pointing at simulators, a store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from syncd.clock import SystemClock
from syncd.config import Config, load
from syncd.daemon import Daemon
from syncd.pipeline import RunReport, opened, reconcile
from syncd.sample import HEADER, write_export
from syncd.state import Store


class AheadClock(SystemClock):
    """The real clock, its wall time moved on by `ahead` (its monotonic time not): days
    passing between runs, or a resume from suspend."""

    def __init__(self) -> None:
        super().__init__()
        self.ahead = timedelta()

    def now(self) -> datetime:
        return super().now() + self.ahead


ESPUTNIK_MAPPING = """
[fields]
email = "Email"
sms = "Phone"
firstName = "First Name"
lastName = "Last Name"
externalCustomerId = "Record ID"
[metadata]
"101" = "Segment"
"""


# Hello Customer's call spacing (one a second) shortened on both sides, simulator and
# connector, where a test's subject is not the pacing: `FAST_SYNCD` is the syncd command
FAST = 0.1
FAST_SYNCD = [
    sys.executable,
    "-c",
    "import sys; from syncd.vendors.hellocustomer import HelloCustomer as H; "
    f"H.min_interval = {FAST}; sys.argv[0] = 'syncd'; from syncd.cli import main; main()",
]


class World:
    """One syncd installation in a temp folder."""

    def __init__(self, folder: Path, vendors: dict[str, tuple[str, str]], **source: Any) -> None:
        """vendors: name → (vendor table body incl. base_url, mapping text)."""
        self.folder = folder
        self.export = folder / "contacts.csv"
        parts = [
            "[source]",
            f'path = "{self.export.name}"',
            'key = "Record ID"',
            "settle_seconds = 0",
            'phone_region = "BE"',
        ]
        parts += [f"{k} = {v!r}".replace("'", '"') for k, v in source.items()]
        parts += [
            "[store]",
            'path = "syncd.db"',
            "[delivery]",
            "backoff_base = 0.01",
            "retries = 2",
            "read_timeout = 5",
            "connect_timeout = 2",
        ]
        for name, (table, mapping) in vendors.items():
            (folder / f"{name}.toml").write_text(mapping, encoding="utf-8")
            parts += [f"[vendors.{name}]", f'mapping = "{name}.toml"', table]
        (folder / "syncd.toml").write_text("\n".join(parts) + "\n", encoding="utf-8")
        self.clock = SystemClock()

    @property
    def cfg(self) -> Config:
        return load(self.folder / "syncd.toml")

    def write(self, rows: list[list[str]], **kw: Any) -> None:
        write_export(self.export, rows, **kw)

    def sync(self, **kw: Any) -> RunReport:
        cfg = self.cfg
        with opened(cfg) as store:
            return reconcile(cfg, store, self.clock, **kw)

    def store(self) -> Store:
        return Store.open(self.folder / "syncd.db")

    def deliveries(self) -> list[dict[str, Any]]:
        store = self.store()
        try:
            return [dict(r) for r in store.query("SELECT * FROM deliveries ORDER BY id")]
        finally:
            store.close()


def assert_fingerprint_cache_holds(conn: sqlite3.Connection) -> None:
    """A fingerprint cache that claims to be current is exactly the live contacts': their
    fingerprints in order, each with its contact's rowid."""
    try:
        cached = conn.execute(
            "SELECT live, rowids FROM fingerprint_cache JOIN contacts_generation USING (generation)"
        ).fetchone()
    except sqlite3.OperationalError:
        return  # not a syncd store
    # set only inside the diff's own transaction: committed, it would hide every change
    assert conn.execute("SELECT in_diff FROM contacts_generation").fetchone() == (0,)
    if cached:
        live = conn.execute("SELECT rhash, rowid FROM contacts WHERE gone_at IS NULL").fetchall()
        pairs = zip(*(np.frombuffer(blob, dtype="<i8").tolist() for blob in cached), strict=True)
        assert list(pairs) == sorted(live)


def esputnik_table(url: str, **extra: Any) -> tuple[str, str]:
    body = f'base_url = "{url}"\napi_key = "sandbox-key"\npoll_every = 0.01\n'
    body += "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in extra.items())
    return body, ESPUTNIK_MAPPING


__all__ = ["HEADER", "World", "assert_fingerprint_cache_holds", "esputnik_table"]


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block as a uid the kernel holds to file modes (nobody, when we are root)."""
    if os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    os.setgroups([])
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)
        os.setgroups(groups)


def start_service(config: Path) -> int:
    """`syncd run` through its start-up, stopped as soon as it is scheduled (its exit
    status); a refusal raises. The signal handlers it installs are put back."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    daemon = Daemon(config, SystemClock())
    daemon.stop.set()
    try:
        return daemon.run()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def run_syncd(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`syncd ARGS` in a process of its own, in `folder`, with `env` added to ours."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
