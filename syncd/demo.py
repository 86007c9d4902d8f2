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
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from syncd.clock import SYSTEM
from syncd.config import load
from syncd.errors import SyncdError
from syncd.sample import row, write_export
from syncd.sandbox import SIMULATORS, Stack
from syncd.state import OPEN_STATUSES
from syncd.vendors import REGISTRY

if TYPE_CHECKING:
    from syncd.runs import Report

Echo = Callable[[str], None]

# the [vendors.<name>] keys that work against each simulator's built-in account (a vendor
# whose simulator takes none needs no entry)
SANDBOX_TABLES: dict[str, str] = {
    "esputnik": 'api_key = "sandbox-key"\ngroups = ["Customers"]\npoll_every = 0.2\n',
    "dropthought": (
        'email = "ops@example.com"\npassword = "sandbox-password"\n'
        'participant_group = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"\n'
        'date_order = "DMY"\n'  # the sample export writes its dates DD/MM/YYYY (mostly)
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
    """The registered vendors that have a simulator, in the registry's order."""
    return [name for name in REGISTRY if name in SIMULATORS]


def write_config(
    folder: Path, urls: dict[str, str], tables: dict[str, str] | None = None, days: int = 0
) -> Path:
    """A config for the demo folder, pointing every vendor at its simulator (with the
    sandbox accounts, or the given `[vendors.<name>]` keys).

    `days` is `min_days_between_surveys`: 0, so that the demo shows every trigger vendor
    at work; with 30, a contact due at three trigger vendors is surveyed by the first only.
    """
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
        f"min_days_between_surveys = {days}",
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
            tables.get(name, "").rstrip(),
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


# the simulators' switches the demo turns on so every view has something to show
DEMO_SIMULATORS: dict[str, dict[str, int]] = {
    "esputnik": {"unsubscribe_every": 9},
    "signalvine": {"opt_out_every": 9},
}
REFUSED = 5  # eSputnik refuses this contact's address, to show a failed delivery


def run_demo(folder: Path | None, contacts: int, echo: Echo) -> int:
    from syncd.analyst import EXAMPLES
    from syncd.pipeline import opened, reconcile
    from syncd.pull import pull

    if folder is not None and folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        # the demo writes syncd.toml, mappings/ and syncd.db there: over an installation's,
        # its store would hold the simulators' acknowledgements as the real vendors'; over
        # an earlier demo's, the "first sync" sent only what differed from that one
        raise SyncdError(
            f"demo --dir {folder}: not an empty folder: the demo writes its own syncd.toml, "
            "mappings, exports and store there",
            hint="pass a new or empty folder, or no --dir for a temporary one",
        )
    folder = folder or Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    exports = folder / "exports"
    exports.mkdir(exist_ok=True)
    names = vendors_available()
    tables = dict(SANDBOX_TABLES)
    week_ago = (SYSTEM.now() - timedelta(days=7)).strftime("%Y-%m-%d")
    tables["hellocustomer"] += f'first_date = "{week_ago}"\n'  # fewer paced calls
    with Stack() as stack:
        sims = {name: SIMULATORS[name](**DEMO_SIMULATORS.get(name, {})) for name in names}  # type: ignore[arg-type]
        urls = {name: stack.add(sim).url for name, sim in sims.items()}
        cfg_path = write_config(folder, urls, tables)
        echo(f"demo folder: {folder}")
        for name, url in urls.items():
            echo(f"  {name} simulator at {url}")
        data = demo_rows(contacts)
        if "esputnik" in sims and contacts > REFUSED:
            email = data[REFUSED][3].strip().lower()
            sims["esputnik"].faults.reject(email, "mailbox does not exist")
        export = write_export(exports / "contacts-1.csv", data)
        echo(f"\n1. first sync of {export.name} ({contacts} contacts and 3 bad rows)")
        cfg = load(cfg_path)
        reports: list[Report] = []
        try:
            with opened(cfg) as store:
                reports.append(reconcile(cfg, store, SYSTEM))
            echo("   " + reports[-1].summary())
            before = {n: sims[n].count() for n in names}
            changed = {i: 1 for i in range(0, contacts, max(contacts // 7, 1))}
            export.unlink()
            write_export(exports / "contacts-2.csv", demo_rows(contacts, changed))
            echo(
                f"\n2. the CRM changed {len(changed)} contacts (city, segment, closed date); "
                "every row's 'Last Activity Date' moved too, which no vendor maps"
            )
            with opened(cfg) as store:
                reports.append(reconcile(cfg, store, SYSTEM))
            echo("   " + reports[-1].summary())
            for n in names:
                echo(f"   {n}: {sims[n].count() - before[n]} request(s) for the delta")
            echo("\n3. pulling responses, NPS and unsubscribes back (Hello Customer is paced")
            echo("   at one call per second)")
            with opened(cfg) as store:
                reports.append(pull(cfg, store, SYSTEM))
                echo("   " + reports[-1].summary())
                nps = store.query(
                    "SELECT vendor, period_start, period_end, nps FROM nps_over_time "
                    "WHERE filter = '[]' ORDER BY period_start DESC LIMIT 3"
                )
                for r in nps:
                    echo(
                        f"   NPS at {r['vendor']} {r['period_start']}..{r['period_end']}: {r['nps']}"
                    )
                example = EXAMPLES[0]
                echo(f"\n   {example.title}:")
                for r in store.query(example.sql + " LIMIT 5"):
                    echo("   " + "  ".join(f"{k}={r[k]}" for k in r.keys()))  # noqa: SIM118
            changed = {**changed, **{i: 2 for i in range(2, contacts, 3)}}
            write_export(exports / "contacts-3.csv", demo_rows(contacts, changed))
            echo("\n4. the next CRM export, after the pull: unsubscribed contacts are held back")
            echo("   everywhere, and nobody is surveyed twice within 30 days")
            with opened(cfg) as store:
                reports.append(reconcile(cfg, store, SYSTEM))
                echo("   " + reports[-1].summary())
                for r in store.query(
                    "SELECT reason, sum(n) AS n FROM skipped_reasons GROUP BY reason ORDER BY n DESC"
                ):
                    echo(f"   skipped: {r['n']} for {r['reason']}")
                unexpected = store.query(
                    "SELECT vendor, key, status, reason FROM deliveries "
                    f"WHERE status IN {OPEN_STATUSES!r} AND NOT (vendor = 'esputnik' AND key = ?)",
                    (data[REFUSED][0] if contacts > REFUSED else "",),
                )
        except SyncdError as exc:
            echo(f"demo failed: {exc}")
            return exc.exit_code
    db = cfg.store.path
    echo(f"\nthe database: {db}")
    echo("try:")
    echo(f'  sqlite3 -readonly {db} "SELECT * FROM contact_status LIMIT 10"')
    echo(f'  sqlite3 -readonly {db} "SELECT * FROM response_rate"')
    echo(f"  syncd --config {cfg_path} status")
    echo("  syncd schema        (every table and view, with example queries)")
    code = max(r.exit_code for r in reports)
    if code > 1 or unexpected:
        for r in unexpected[:10]:
            echo(f"  unexpected: {r['vendor']} {r['key']} {r['status']}: {r['reason']}")
        echo("demo failed: a run did not end as staged (see above)")
        return max(code, 1)
    echo("\n(the reconciles said exit 1 for the contact eSputnik refuses on purpose: that is")
    echo(" how syncd reports a failed delivery; everything else went as staged)")
    return 0


def serve_sandbox(host: str, port: int, echo: Echo) -> None:
    """Serve every simulator until SIGINT/SIGTERM; print where and a config to paste."""
    stop = threading.Event()
    with Stack() as stack:
        names = vendors_available()
        for offset, name in enumerate(names):
            server = stack.add(SIMULATORS[name](), port=port + offset if port else 0)
            echo(f"{name}: {server.url}  (control: {server.url}/_sandbox/state)")
        echo("\nvendor tables for your syncd.toml:")
        for name in names:
            echo(
                f'[vendors.{name}]\nbase_url = "{stack.servers[name].url}"\n'
                f'mapping = "mappings/{name}.toml"\n{SANDBOX_TABLES.get(name, "")}'
            )
        echo("serving; Ctrl-C to stop")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
