"""The `syncd` command. Every SyncdError becomes one line for the operator and an exit status:
0 all good; 1 finished but some deliveries failed; 2 bad config or usage; 3 refused by a
guard (truncated export, lock held, export still being written).

Start-up costs only what the command uses: this module imports click and the standard
library, and each command imports what it needs inside its function (the config and
structlog when a command runs, the pipeline for sync, the simulators for demo and sandbox,
rich only when stderr is a terminal). `syncd --help` and shell completion, which runs this
module on every TAB, load none of it; tests/test_startup.py holds that.
"""

from __future__ import annotations

import difflib
import functools
import gc
import io
import json
import os
import signal
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from syncd.clock import SYSTEM
from syncd.errors import EmptyStoreError, SyncdError

if TYPE_CHECKING:
    from syncd.config import Config
    from syncd.progress import Display

F = TypeVar("F", bound=Callable[..., Any])

# `syncd demo` stages contact 5's refusal and a duplicate of contact 3 (syncd.demo); with
# fewer than 4 contacts it failed with a traceback
DEMO_MIN_CONTACTS = 10


class Ctx:
    def __init__(self, config: str | None, log_level: str) -> None:
        self.config_arg = config
        self.log_level = log_level
        self._cfg: Config | None = None
        # set by a SIGHUP to `syncd run` while it starts (`cli`)
        self.reload_asked = threading.Event()

    @property
    def cfg(self) -> Config:
        if self._cfg is None:
            from syncd import log as logmod
            from syncd.config import config_path, load

            # only these schedule anything: the others need not import APScheduler
            context = click.get_current_context(silent=True)
            scheduled = context is None or context.info_name in ("run", "check", "status")
            self._cfg = load(config_path(self.config_arg), check_schedule=scheduled)
            logmod.add_secrets(self._cfg.secrets)
        return self._cfg


_pass_ctx = click.make_pass_decorator(Ctx)


def pass_ctx(f: F) -> F:
    """Pass the `Ctx` (click's pass decorator); every such command works on the config and
    the store, so the store's libraries are imported first, before the command's own
    imports (`_store_libraries`)."""

    @functools.wraps(f)
    def command(*args: Any, **kw: Any) -> Any:
        _store_libraries()
        return f(*args, **kw)

    return _pass_ctx(command)  # type: ignore[return-value]


def _store_libraries() -> None:
    """Import sqlite-utils with pandas hidden from it, before any command opens the store.

    sqlite-utils imports pandas whenever it is installed (the test extra's SignalVine SDK
    brings it) only to map `pandas.Timestamp` values to TEXT columns, which syncd never
    inserts: a quarter of a second of every store command's start-up.
    """
    from syncd.log import hidden

    with hidden("pandas"):
        import sqlite_utils  # noqa: F401


def complete_vendor(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of `--vendor`: the vendors the config names, read quietly (no secret
    resolved, nothing logged); without a readable config, every vendor syncd knows."""
    from syncd.config import MAX_TOML, config_path, read_capped

    try:
        raw = read_capped(config_path(ctx.find_root().params.get("config")), MAX_TOML)
        names = list(tomllib.loads(raw.decode())["vendors"].keys())
    except Exception:  # a completion never fails in the operator's shell
        from syncd.vendors import REGISTRY

        names = list(REGISTRY)
    return [name for name in names if name.startswith(incomplete)]


def vendor_option(help: str) -> Callable[[F], F]:
    """`--vendor V`, repeatable, completing the configured vendor names."""
    return click.option(
        "--vendor", "vendors", multiple=True, metavar="V", help=help, shell_complete=complete_vendor
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config", metavar="PATH", help="config file (default: $SYNCD_CONFIG, ./syncd.toml)"
)
@click.option(
    "--log-level",
    default=lambda: os.environ.get("SYNCD_LOG_LEVEL", "WARNING"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    help="log level (default $SYNCD_LOG_LEVEL or WARNING; `run` logs at INFO)",
)
@click.version_option(package_name="syncd")
@click.pass_context
def cli(ctx: click.Context, config: str | None, log_level: str) -> None:
    """Keep survey and messaging vendors in step with your CRM export."""
    asked = threading.Event()
    if ctx.invoked_subcommand == "run":
        # before anything is imported: a SIGHUP from here on asks for a reload once the
        # service is up (`Daemon.run`); its default action would end the process while it
        # starts, a death systemd counts as clean (Restart=on-failure: no restart)
        signal.signal(signal.SIGHUP, lambda _signum, _frame: asked.set())
        if "SYNCD_LOG_LEVEL" not in os.environ:
            log_level = "INFO" if log_level.upper() == "WARNING" else log_level
    from syncd import log as logmod

    logmod.configure(level=log_level)
    ctx.obj = Ctx(config, log_level)
    ctx.obj.reload_asked = asked


def _interruptible() -> None:
    """SIGTERM ends a command as Ctrl-C does (KeyboardInterrupt), so the run is recorded
    `interrupted`, not left `running` (the daemon has its own handler)."""

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)


@contextmanager
def _stoppable() -> Iterator[threading.Event]:
    """For work that checks a stop between its steps (`Store.prune`, as the daemon's
    jobs): SIGTERM and Ctrl-C set the event it checks, instead of interrupting it
    wherever it is; the handlers before are restored after."""
    stop = threading.Event()
    before = {
        signum: signal.signal(signum, lambda _signum, _frame: stop.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def _long_lived() -> None:
    """Once a command has imported what it needs and read its config: what is alive now
    lives until the process ends, so the cyclic collector stops scanning it (`gc.freeze`).
    A whole second sync at 1M contacts spent 0.17 s in collections, half of it re-scanning
    the modules' objects, and ~40 ms more at exit; frozen, about a third of that. Frozen
    objects are never collected: the test suite, one process running many commands, turns
    this off (tests/conftest.py)."""
    gc.freeze()


def _display() -> Display | None:
    """The progress display when stderr is a terminal (`for_terminal`); off a terminal
    (cron, systemd, a pipe) rich is not even imported."""
    if not sys.stderr.isatty():
        return None
    from syncd.progress import for_terminal

    return for_terminal()


@cli.command()
@pass_ctx
def run(ctx: Ctx) -> None:
    """Run as a service: scheduled reconciles and pulls until SIGTERM (systemd Type=notify)."""
    from syncd.config import config_path
    from syncd.daemon import Daemon

    daemon = Daemon(config_path(ctx.config_arg), reload_requested=ctx.reload_asked)
    _long_lived()
    sys.exit(daemon.run())


@cli.command()
@click.option("--dry-run", is_flag=True, help="show what would be sent; write nothing")
@vendor_option("deliver to this vendor only")
@click.option("--force", is_flag=True, help="apply an export the truncation guard refuses")
@click.option(
    "--baseline",
    is_flag=True,
    help="record the export as acknowledged without sending (first run of a trigger vendor)",
)
@click.option(
    "--rebaseline/--no-rebaseline",
    default=True,
    help="when a trigger vendor's on_change (or syncd's digest) changed: re-baseline the "
    "contacts it makes differ (the default), or with --no-rebaseline survey them",
)
@pass_ctx
def sync(
    ctx: Ctx,
    dry_run: bool,
    vendors: tuple[str, ...],
    force: bool,
    baseline: bool,
    rebaseline: bool,
) -> None:
    """Reconcile the CRM export with the vendors now."""
    from syncd.pipeline import opened, reconcile

    if baseline and not rebaseline:
        raise click.UsageError(
            "--no-rebaseline surveys what a changed on_change makes differ, and --baseline "
            "sends nothing: choose one"
        )

    cfg = ctx.cfg
    _interruptible()
    display = _display()
    with opened(cfg, dry_run=dry_run) as store, display or nullcontext():
        _long_lived()
        report = reconcile(
            cfg,
            store,
            SYSTEM,
            dry_run=dry_run,
            force=force,
            vendors=vendors or None,
            baseline=baseline,
            rebaseline=rebaseline,
            progress=display,
        )
    if dry_run and report.plan:
        click.echo(f"dry run of {report.plan.export}: nothing was written or sent")
        click.echo(
            f"  {report.plan.rows_read} rows, {report.plan.unchanged} unchanged, "
            f"{report.plan.quarantined} quarantined, {report.plan.gone} gone"
        )
        for name, counts in report.counts().items():
            click.echo(f"  {report.vendor_line(name, counts)}")
            for sample in report.plan.vendors[name].samples:
                click.echo(f"    {sample['kind']} {sample['key']} would send:")
                for field, (old, new) in sample["changes"].items():
                    click.echo(f"      {field}: {old!r} → {new!r}")
    else:
        click.echo(report.summary())
    for line in report.details():
        click.echo(line)
    for notice in report.plan.notices(dry_run) if report.plan else ():
        click.echo(notice)
    sys.exit(report.exit_code)


@cli.command()
@vendor_option("only this vendor")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d"]),
    help="re-read from this date (YYYY-MM-DD) instead of each stream's cursor",
)
@pass_ctx
def pull(ctx: Ctx, vendors: tuple[str, ...], since: datetime | None) -> None:
    """Pull responses, NPS and unsubscribes back into the store."""
    from syncd.pipeline import opened
    from syncd.pull import pull as run_pull

    cfg = ctx.cfg
    _interruptible()
    display = _display()
    with opened(cfg) as store, display or nullcontext():
        _long_lived()
        report = run_pull(
            cfg,
            store,
            SYSTEM,
            vendors=vendors or None,
            since=since.date() if since else None,
            on_page=display.pulled if display else None,
        )
    click.echo(report.summary())  # after the display is gone: a line of its own
    for line in report.details():
        click.echo(line)
    sys.exit(report.exit_code)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="machine-readable (schema in the README)")
@click.option(
    "--runs",
    default=5,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="how many recent runs to show",
)
@pass_ctx
def status(ctx: Ctx, as_json: bool, runs: int) -> None:
    """Recent runs, open deliveries per vendor, cursors, quarantined rows, next runs."""
    from syncd.status import collect, render

    cfg = ctx.cfg
    data = collect(cfg, SYSTEM.now(), runs=runs)
    click.echo(json.dumps(data, indent=2, sort_keys=True) if as_json else render(data))


@cli.command()
@click.argument("who", metavar="KEY|EMAIL")
@click.option("--json", "as_json", is_flag=True, help="machine-readable (schema in the README)")
@pass_ctx
def show(ctx: Ctx, who: str, as_json: bool) -> None:
    """One contact: attributes, each vendor's state and deliveries, quarantine, answers."""
    from syncd.show import collect, render

    data = collect(ctx.cfg, who)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else render(data))


@cli.command()
@click.option(
    "--online", is_flag=True, help="also prove each vendor's credentials with a read-only call"
)
@pass_ctx
def check(ctx: Ctx, online: bool) -> None:
    """Validate the config, mappings, secrets, store and export header; send nothing."""
    from syncd.log import printable
    from syncd.project import Projector
    from syncd.runs import open_connectors
    from syncd.source import Export, find_export
    from syncd.state import Store, damaged

    cfg = ctx.cfg
    click.echo(f"config {cfg.path}: ok ({', '.join(cfg.vendors)})")
    if cfg.store.path.exists():
        # neither creates nor migrates it; open refuses a store from a newer syncd
        try:
            store = Store.open(cfg.store.path, create=False, migrate=False)
        except EmptyStoreError as exc:  # as a missing one, but the hint says what else
            store = None
            click.echo(f"store {cfg.store.path}: empty, no sync has written it yet: {exc.hint}")
        if store is not None:
            try:
                problems = store.quick_check()
            finally:
                store.close()
            if problems != "ok":
                raise damaged(cfg.store.path, problems)
            click.echo(f"store {cfg.store.path}: ok")
    else:
        click.echo(f"store {cfg.store.path}: not created yet (the first `syncd sync` creates it)")
    failed = []
    with open_connectors(cfg, SYSTEM) as connectors:
        try:
            found = find_export(cfg.source, SYSTEM.now())
        except SyncdError as exc:
            click.echo(f"export: not checked ({exc})")
        else:
            path = found.path
            with Export(found, cfg.source) as export:
                for name, vcfg in cfg.vendors.items():
                    Projector(vcfg, connectors[name], export.header, cfg.source.phone_region)
                click.echo(
                    f"export {path}: key {cfg.source.key!r} found, "
                    f"delimiter {export.delimiter!r}, every mapped column present"
                )
        for name, connector in connectors.items() if online else ():
            try:
                proven = connector.check()
            except SyncdError as exc:
                failed.append(name)
                click.echo(printable(f"{name}: FAILED: {exc}"))
                continue
            if proven is None:
                click.echo(
                    f"{name}: not checked online: it has no read-only call; "
                    "the first push will tell"
                )
            else:
                click.echo(f"{name}: {proven}")
    if failed:
        raise SyncdError(
            f"the online check failed for {', '.join(failed)}",
            hint="see each vendor's line above",
        )


@cli.command()
@vendor_option("only this vendor")
@click.option("--dead", is_flag=True, help="also re-send deliveries that used up their attempts")
@click.option(
    "--unknown", is_flag=True, help="also re-send triggers whose outcome is unknown (may duplicate)"
)
@click.option(
    "--forget-jobs",
    is_flag=True,
    help="also give up async jobs an upsert vendor still holds open (an eSputnik import "
    "session that never ends) and send their contacts again: the vendor may still apply "
    "the old job after them",
)
@pass_ctx
def retry(ctx: Ctx, vendors: tuple[str, ...], dead: bool, unknown: bool, forget_jobs: bool) -> None:
    """Re-queue failed deliveries (and --dead / --unknown ones) and deliver them now."""
    from syncd.pipeline import deliver, opened
    from syncd.vendors import REGISTRY

    cfg = ctx.cfg
    statuses = ["failed"] + (["dead"] if dead else []) + (["unknown"] if unknown else [])
    _interruptible()
    display = _display()
    with opened(cfg, create=False) as store, display or nullcontext():
        _long_lived()
        for name in (vendors or cfg.vendors) if forget_jobs else ():
            if name not in REGISTRY:
                continue  # `deliver` names the vendor that is not configured
            if REGISTRY[name].kind == "trigger":  # re-sent, a survey could go twice
                click.echo(f"{name}: a trigger vendor's jobs are never forgotten (--forget-jobs)")
                continue
            forgotten = store.forget_jobs(name, SYSTEM.now())
            if forgotten:
                click.echo(f"{name}: forgot the open jobs of {forgotten} deliveries")
        report = deliver(cfg, store, SYSTEM, statuses, vendors or None, progress=display)
    click.echo(report.summary())
    for line in report.details():
        click.echo(line)
    sys.exit(report.exit_code)


@cli.command()
@click.option(
    "--vendor",
    "vendors",
    multiple=True,
    required=True,
    metavar="V",
    help="a vendor no longer in the config (repeatable)",
)
@click.option(
    "--unknown",
    is_flag=True,
    help="also withdraw triggers whose outcome is unknown, and deliveries in flight",
)
@click.option("--dry-run", is_flag=True, help="count what would be withdrawn; change nothing")
@pass_ctx
def withdraw(ctx: Ctx, vendors: tuple[str, ...], unknown: bool, dry_run: bool) -> None:
    """Close the open deliveries of vendors removed from the config: never sent again."""
    from syncd.errors import ConfigError
    from syncd.pipeline import opened
    from syncd.state import OPEN_STATUSES, WITHDRAWN

    cfg = ctx.cfg
    from syncd.vendors import REGISTRY

    for name in vendors:  # every name is checked before anything is done
        if name not in REGISTRY:  # a typo said "no open deliveries", exit 0
            near = difflib.get_close_matches(name, sorted(REGISTRY), 1)
            raise ConfigError(
                f"withdraw --vendor {name}: no such vendor",
                hint=(f"did you mean {near[0]!r}? " if near else "")
                + "vendors are: "
                + ", ".join(sorted(REGISTRY)),
            )
        if name in cfg.vendors:
            raise ConfigError(
                f"{name} is in the config: `syncd withdraw` closes the open deliveries of a "
                "vendor removed from it",
                file=str(cfg.path),
                hint=f"to stop sending to {name}, remove [vendors.{name}] and reload or restart "
                f"the service first; `syncd retry --vendor {name}` re-sends its failed deliveries",
            )
    # the vendor may have these: added back, it would be sent them again
    maybe = () if unknown else ("in_flight", "unknown")
    statuses = [s for s in OPEN_STATUSES if s not in maybe]
    # a dry run takes no lock, so it reads the store as it is (`opened(dry_run=True)`):
    # migrating it without the lock would leave a service of the version before on a store
    # from a newer syncd, and a 0-byte file would become a store
    with (
        _stoppable() as stop,
        opened(cfg, lock=not dry_run, create=False, dry_run=dry_run) as store,
    ):
        backlog = store.backlog()

        def listed(name: str, of: Sequence[str]) -> str:
            counts = backlog.get(name, {})
            return ", ".join(f"{counts[s]} {s}" for s in of if counts.get(s))

        names = list(dict.fromkeys(vendors))
        for at, name in enumerate(names):
            counts = backlog.get(name, {})
            going, kept = listed(name, statuses), listed(name, maybe)
            if going and not dry_run:
                withdrawn = store.withdraw_vendor(name, statuses, SYSTEM.now(), stop)
                if stop.is_set():  # exit 130, as an interrupted sync or prune
                    withdrew = ", ".join(f"{n} {s}" for s, n in withdrawn.items() if n) or "nothing"
                    click.echo(
                        f"{name}: stopped: withdrew {withdrew} of {going} before the stop; "
                        "the rest stay open: run `syncd withdraw` again to close them"
                    )
                    for later in names[at + 1 :]:  # each named: none of theirs is closed
                        if left := listed(later, statuses):
                            click.echo(
                                f"{later}: not reached before the stop: its {left} stay open; "
                                "run `syncd withdraw` again to close them"
                            )
                        else:
                            click.echo(
                                f"{later}: not reached before the stop (nothing to withdraw)"
                            )
                    sys.exit(130)
            if going:
                done = "would withdraw" if dry_run else "withdrew"
                click.echo(f"{name}: {done} {going} (superseded: {WITHDRAWN})")
            if kept:
                click.echo(
                    f"{name}: left open {kept}: the vendor may have them, and added back it "
                    "would be sent them again; `--unknown` withdraws them too"
                )
            if not counts:
                click.echo(f"{name}: no open deliveries")


@cli.command()
@click.option(
    "--datasette",
    "database",
    metavar="NAME",
    help="print Datasette metadata for the store served as NAME (file name without .db)",
)
def schema(database: str | None) -> None:
    """Describe the store's tables and views for analysts (Markdown), or as Datasette metadata."""
    from syncd.analyst import datasette_metadata, markdown

    if database:
        click.echo(json.dumps(datasette_metadata(database), indent=2))
    else:
        click.echo(markdown())


@cli.command()
@click.option("--dir", "folder", type=click.Path(path_type=Path), help="keep the demo here")
@click.option(
    "--contacts",
    default=200,
    show_default=True,
    type=click.IntRange(min=DEMO_MIN_CONTACTS),
    help="contacts in the sample export",
)
def demo(folder: Path | None, contacts: int) -> None:
    """Run the whole cycle against the built-in simulators, in a temporary folder."""
    _store_libraries()
    from syncd.demo import run_demo

    sys.exit(run_demo(folder, contacts, echo=click.echo))


@cli.command()
@click.option(
    "--port",
    default=8600,
    show_default=True,
    # the five simulators take P to P+4: a port past 65535 wrapped round (70000 served on
    # 4464, 65532 on 0 and 1)
    type=click.IntRange(0, 65535 - 4),
    help="first port; one per vendor (0: any free ones)",
)
def sandbox(port: int) -> None:
    """Serve the five vendor simulators on loopback until interrupted."""
    from syncd.demo import serve_sandbox

    serve_sandbox("127.0.0.1", port, echo=click.echo)


@cli.command("init")
@click.argument("export", type=click.Path(path_type=Path))
@click.option("--vendors", multiple=True, metavar="V[,V…]", help="the vendors to set up (required)")
@click.option(
    "--dir", "folder", type=click.Path(path_type=Path), default=Path("."), help="write here"
)
@click.option("--key", metavar="COLUMN", help="the CRM's unique id column, if not recognised")
@click.option("--encoding", help="the export's encoding (default: UTF-8, else cp1252)")
def init_command(
    export: Path, vendors: tuple[str, ...], folder: Path, key: str | None, encoding: str | None
) -> None:
    """Write a commented syncd.toml and a mapping per vendor from an export's header."""
    from syncd.init import init

    init(export, vendors, folder, key=key, encoding=encoding, echo=click.echo)


@cli.command()
@click.option("--dry-run", is_flag=True, help="count what would go; remove nothing")
@pass_ctx
def prune(ctx: Ctx, dry_run: bool) -> None:
    """Apply [store] retention now: old runs, their quarantined rows, old delivery payloads."""
    from syncd.pipeline import opened

    cfg, keep = ctx.cfg, ctx.cfg.store
    # a dry run takes no lock, so it reads the store as it is, never migrating it (`withdraw`)
    with (
        _stoppable() as stop,
        opened(cfg, lock=not dry_run, create=False, dry_run=dry_run) as store,
    ):
        n = store.prune(
            SYSTEM.now(),
            runs_days=keep.keep_runs_days,
            payload_days=keep.keep_payload_days,
            dry_run=dry_run,
            stop=stop,
        )
    verb = "would prune" if dry_run else "pruned"
    counts = (
        f"{n['runs']} runs, {n['quarantine']} quarantined rows, {n['payloads']} delivery payloads"
    )
    kept = (
        f"(keep_runs_days = {keep.keep_runs_days}, keep_payload_days = "
        f"{keep.keep_payload_days}; 0 keeps all)"
    )
    if stop.is_set():  # exit 130, as an interrupted sync
        rest = "counts" if dry_run else "removes"
        click.echo(
            f"stopped: {verb} {counts} before the stop; the next prune {rest} the rest {kept}"
        )
        sys.exit(130)
    click.echo(f"{verb}: {counts} {kept}")


@cli.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def backup(ctx: Ctx, path: Path) -> None:
    """Copy the store to PATH, a new file: a consistent copy, even while syncd runs."""
    from syncd.state import Store

    cfg = ctx.cfg
    _interruptible()
    store = Store.open(cfg.store.path, create=False, migrate=False)
    try:
        store.backup(path)
    except KeyboardInterrupt:  # Store.backup removed what it wrote, as after a failure
        click.echo(f"syncd: the backup to {path} was stopped: it left nothing behind", err=True)
        sys.exit(130)
    finally:
        store.close()
    click.echo(f"backed up {cfg.store.path} to {path}")


def main() -> None:
    for stream in (sys.stdout, sys.stderr):
        # a terminal whose encoding has no `—` or `é` (a latin-1 locale) shows their escape:
        # `syncd status` ended in a UnicodeEncodeError there
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except SyncdError as exc:
        from syncd.log import printable  # a vendor's words, a path: one line each, as written

        click.echo(printable(f"syncd: {exc.message}"), err=True)
        if exc.hint:
            click.echo(printable(f"  → {exc.hint}"), err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
