"""`syncd demo` and `syncd sandbox`: the whole cycle against the built-in simulators.

The demo writes a messy sample export, a config and the packaged mappings into a folder,
serves every simulator on loopback, syncs, edits the export, syncs again to show that only
the delta goes, pulls answers back, and prints where the database is and what to ask it.
"""

from __future__ import annotations

import importlib.resources
import random
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from syncd.clock import SYSTEM
from syncd.config import load
from syncd.errors import SyncdError
from syncd.sample import row, write_export
from syncd.sandbox import SIMULATORS, Stack

Echo = Callable[[str], None]

# the [vendors.<name>] keys that work against each simulator's built-in account
SANDBOX_TABLES: dict[str, str] = {
    "esputnik": 'api_key = "sandbox-key"\ngroups = ["Customers"]\npoll_every = 0.2\n',
    "dropthought": (
        'email = "ops@example.com"\npassword = "sandbox-password"\n'
        'participant_group = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"\n'
    ),
    "altcraft": 'token = "sandbox-token"\ntrigger_id = 7\n',
    "hellocustomer": (
        'token = "sandbox-token"\ncampaign = "c8dc5f94-a9e8-4743-8744-e66a73a7e724"\n'
        'default_language = "en"\n'
    ),
    "signalvine": (
        'token = "sandbox-token"\nsecret = "sandbox-secret"\n'
        'program = "ed1b9efb-0ccf-4ea0-9585-0d7e57f28869"\n'
    ),
}


def mapping_text(vendor: str) -> str:
    return importlib.resources.files("syncd.mappings").joinpath(f"{vendor}.toml").read_text("utf-8")


def vendors_available() -> list[str]:
    return [name for name in SANDBOX_TABLES if name in SIMULATORS]


def write_config(folder: Path, urls: dict[str, str], tables: dict[str, str] | None = None) -> Path:
    """A config for the demo folder, pointing every vendor at its simulator (with the
    sandbox accounts, or the given `[vendors.<name>]` keys)."""
    tables = tables or SANDBOX_TABLES
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    parts = [
        "# written by `syncd demo`: every vendor points at a local simulator",
        "[source]",
        'path = "exports/contacts-*.csv"',
        'key = "Record ID"',
        "settle_seconds = 0",
        'phone_region = "BE"',
        "",
        "[store]",
        'path = "syncd.db"',
        "",
        "[schedule]",
        'timezone = "Europe/Brussels"',
        "",
        "[suppression]",
        "unsubscribed = true",
        "min_days_between_surveys = 30",
        "",
        "[delivery]",
        "backoff_base = 0.2",
        "read_timeout = 10",
    ]
    for name, url in urls.items():
        (folder / "mappings" / f"{name}.toml").write_text(mapping_text(name), encoding="utf-8")
        parts += [
            "",
            f"[vendors.{name}]",
            f'base_url = "{url}"',
            f'mapping = "mappings/{name}.toml"',
            tables[name].rstrip(),
        ]
    path = folder / "syncd.toml"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def demo_rows(n: int, version: dict[int, int] | None = None) -> list[list[str]]:
    """n sample contacts plus the kinds of bad rows real exports carry."""
    rng = random.Random(11)
    data = [row(i, rng, (version or {}).get(i, 0)) for i in range(n)]
    bad_email = row(n, rng)
    bad_email[3] = "not-an-email@"
    no_key = row(n + 1, rng)
    no_key[0] = ""
    duplicate = list(data[3])
    duplicate[1] = "Duplicate"
    return [*data, bad_email, no_key, duplicate]


def run_demo(folder: Path | None, contacts: int, echo: Echo) -> int:
    from syncd.pipeline import opened, reconcile

    folder = folder or Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    exports = folder / "exports"
    exports.mkdir(exist_ok=True)
    names = vendors_available()
    with Stack() as stack:
        urls = {name: stack.add(SIMULATORS[name]()).url for name in names}
        cfg_path = write_config(folder, urls)
        echo(f"demo folder: {folder}")
        for name, url in urls.items():
            echo(f"  {name} simulator at {url}")
        export = write_export(exports / "contacts-1.csv", demo_rows(contacts))
        echo(f"\n1. first sync of {export.name} ({contacts} contacts and 3 bad rows)")
        cfg = load(cfg_path)
        try:
            with opened(cfg) as store:
                first = reconcile(cfg, store, SYSTEM)
            echo("   " + first.summary())
            before = {n: stack.servers[n].app.count() for n in names}
            changed = {i: 1 for i in range(0, contacts, max(contacts // 7, 1))}
            export.unlink()
            write_export(exports / "contacts-2.csv", demo_rows(contacts, changed))
            echo(
                f"\n2. the CRM changed {len(changed)} contacts (city and segment); every row's "
                "'Last Activity Date' moved too, which no vendor maps"
            )
            with opened(cfg) as store:
                second = reconcile(cfg, store, SYSTEM)
            echo("   " + second.summary())
            for n in names:
                requests = stack.servers[n].app.count() - before[n]
                echo(f"   {n}: {requests} request(s) for the delta")
        except SyncdError as exc:
            echo(f"demo failed: {exc}")
            return exc.exit_code
    db = cfg.store.path
    echo(f"\nthe database: {db}")
    echo("try:")
    echo(f'  sqlite3 {db} "SELECT vendor, status, count(*) FROM deliveries GROUP BY 1, 2"')
    echo(f'  sqlite3 {db} "SELECT line, key, vendor, reason FROM quarantine"')
    echo(f"  syncd --config {cfg_path} status")
    return max(first.exit_code, second.exit_code)


def serve_sandbox(host: str, port: int, echo: Echo) -> None:
    """Serve every simulator until SIGINT/SIGTERM; print where and a config to paste."""
    stop = threading.Event()
    with Stack() as stack:
        for offset, name in enumerate(sorted(SIMULATORS)):
            server = stack.add(SIMULATORS[name](), port=port + offset if port else 0)
            echo(f"{name}: {server.url}  (control: {server.url}/_sandbox/state)")
        echo("\nvendor tables for your syncd.toml:")
        for name in sorted(SIMULATORS):
            if name in SANDBOX_TABLES:
                echo(
                    f'[vendors.{name}]\nbase_url = "{stack.servers[name].url}"\n'
                    f'mapping = "mappings/{name}.toml"\n{SANDBOX_TABLES[name]}'
                )
        echo("serving; Ctrl-C to stop")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
