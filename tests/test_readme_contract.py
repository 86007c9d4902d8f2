"""The README's prose held to the behaviour, as an operator reads it: the Commands table
against the commands and options that exist, the documented exit codes run as commands, and
the Configuration reference (its keys, defaults and ranges) against what `syncd.config`
accepts. (The README's generated blocks are tests/test_readme.py's.)"""

from __future__ import annotations

import random
import re
import shutil
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest

from syncd import config as configmod
from syncd.cli import cli, main
from syncd.config import BOUNDS, DAY, load
from syncd.demo import SANDBOX_TABLES, write_config
from syncd.errors import ConfigError
from syncd.lock import InstanceLock
from syncd.sample import row, write_export
from syncd.vendors import REGISTRY
from tests.test_readme import README, default_batch

MAPPINGS = Path(__file__).parent.parent / "syncd" / "mappings"


def readme() -> str:
    return README.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The README's `## title` section, up to the next `## `."""
    return readme().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


# --- the Commands table against the commands and their options ----------------------------


def readme_commands() -> dict[str, str]:
    """Each row of the Commands table: command → its synopsis (the first cell)."""
    rows = re.findall(r"^\| `syncd (\S+)(.*?)` \|", section("Commands"), re.M)
    return {name: synopsis for name, synopsis in rows}


def options_of(command: click.Command) -> list[tuple[str, ...]]:
    """Each option's names (`--rebaseline`, `--no-rebaseline` are one), help aside."""
    return [
        tuple(param.opts + param.secondary_opts)
        for param in command.params
        if isinstance(param, click.Option)
    ]


def test_the_commands_table_lists_every_command() -> None:
    assert sorted(readme_commands()) == sorted(cli.commands)


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_each_commands_options_are_the_ones_the_readme_names(name: str) -> None:
    synopsis = readme_commands()[name]
    named = set(re.findall(r"--[a-z][a-z-]*", synopsis))
    exist = options_of(cli.commands[name])
    assert named <= {o for names in exist for o in names}, f"syncd {name}: no such option"
    missing = [names for names in exist if not named & set(names)]
    assert not missing, f"the README's row for syncd {name} does not name {missing}"


def test_the_global_options_are_in_the_readme() -> None:
    usage = section("Commands").strip().split("\n\n", 1)[0]
    missing = [names for names in options_of(cli) if not any(o in usage for o in names)]
    assert not missing, f"the README's `syncd [...] COMMAND` paragraph does not name {missing}"


# --- exit codes, as documented -------------------------------------------------------------


@dataclass
class Install:
    """One syncd installation in a folder: an export of 10 contacts, eSputnik at a port
    nothing listens on, the store (once made) at `syncd.db`."""

    folder: Path

    @property
    def config(self) -> Path:
        return self.folder / "syncd.toml"

    @property
    def store(self) -> Path:
        return self.folder / "syncd.db"

    @property
    def lock(self) -> Path:
        return self.folder / "syncd.db.lock"

    def export(self, n: int) -> None:
        rng = random.Random(3)
        write_export(self.folder / "contacts.csv", [row(i, rng) for i in range(n)])


def install(folder: Path) -> Install:
    shutil.copy(MAPPINGS / "esputnik.toml", folder / "esputnik.toml")
    (folder / "syncd.toml").write_text(
        '[source]\npath = "contacts.csv"\nkey = "Record ID"\nsettle_seconds = 0\n'
        'phone_region = "BE"\n[store]\npath = "syncd.db"\n'
        "[delivery]\nretries = 0\nbackoff_base = 0\nconnect_timeout = 0.5\n"
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n'
        'mapping = "esputnik.toml"\n',
        encoding="utf-8",
    )
    made = Install(folder)
    made.export(10)
    return made


def syncd(*argv: str) -> int:
    """`syncd ARGV` through `main()`, as the console script runs it: its exit status."""
    saved = sys.argv
    sys.argv = ["syncd", *argv]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        sys.argv = saved
    return 0


def with_store(made: Install) -> None:
    """A store that knows the export's 10 contacts, all acknowledged (no request sent)."""
    assert syncd("--config", str(made.config), "sync", "--baseline") == 0


def empty_store(made: Install) -> None:
    made.store.write_bytes(b"")


@dataclass
class Case:
    """A README statement: `syncd ARGV` after `setup` exits `code`, printing `says`;
    `then` checks what it left."""

    argv: tuple[str, ...]
    code: int
    says: str
    setup: Callable[[Install], Any] = lambda _made: None
    then: Callable[[Install], Any] = lambda _made: None
    lock_held: bool = False
    config: bool = True  # run with --config (init takes none)


def nothing_created(made: Install) -> None:
    assert not made.store.exists() and not made.lock.exists()


def still_empty(made: Install) -> None:
    """Not migrated: no table in it (opening it in WAL mode writes SQLite's header)."""
    conn = sqlite3.connect(made.store)
    try:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,), "migrated"
    finally:
        conn.close()


def truncated(made: Install) -> None:
    with_store(made)
    made.export(5)  # half the known contacts missing: more than max_drop = 10%


CASES: dict[str, Case] = {
    # "a store that does not exist is exit 2, never created (so are prune, retry and
    # withdraw)"; show and backup read it only
    **{
        f"{' '.join(argv)}, no store": Case(argv, 2, "there is no store", then=nothing_created)
        for argv in [
            ("status",),
            ("show", "CRM-0000001"),
            ("prune",),
            ("prune", "--dry-run"),
            ("retry",),
            ("withdraw", "--vendor", "altcraft"),
            ("withdraw", "--vendor", "altcraft", "--dry-run"),
            ("backup", "copy.db"),
        ]
    },
    # "nor migrated: ... a 0-byte file, is exit 2" (status, show); a dry run takes no lock,
    # so it reads the store as it is too
    **{
        f"{' '.join(argv)}, 0-byte store": Case(
            argv, 2, "is empty", setup=empty_store, then=still_empty
        )
        for argv in [
            ("status",),
            ("show", "CRM-0000001"),
            ("prune", "--dry-run"),
            ("withdraw", "--vendor", "altcraft", "--dry-run"),
        ]
    },
    "status --runs 0": Case(("status", "--runs", "0"), 2, "1<=x<=10000", setup=with_store),
    "status --runs 10001": Case(("status", "--runs", "10001"), 2, "1<=x<=10000", with_store),
    "status": Case(("status",), 0, "", setup=with_store),
    "show an unknown key": Case(("show", "CRM-9999999"), 2, "no contact", setup=with_store),
    "show a key": Case(("show", "CRM-0000001"), 0, "", setup=with_store),
    # "Refuses a configured vendor (exit 2)"
    "withdraw a configured vendor": Case(
        ("withdraw", "--vendor", "esputnik"), 2, "is in the config", setup=with_store
    ),
    # "exits 3 while the service holds the lock (`--dry-run` does not need it)"
    **{
        f"{' '.join(argv)}, lock held": Case(
            argv, code, "another syncd" if code else "", setup=with_store, lock_held=True
        )
        for argv, code in [
            (("sync",), 3),
            (("pull",), 3),
            (("retry",), 3),
            (("prune",), 3),
            (("withdraw", "--vendor", "altcraft"), 3),
            (("prune", "--dry-run"), 0),
            (("withdraw", "--vendor", "altcraft", "--dry-run"), 0),
            (("sync", "--dry-run"), 0),
            (("status",), 0),
        ]
    },
    # "never overwrites a file"
    "backup over a file": Case(("backup", "syncd.toml"), 2, "never replaces", setup=with_store),
    "backup": Case(("backup", "copy.db"), 0, "", setup=with_store),
    "sync --baseline --no-rebaseline": Case(
        ("sync", "--baseline", "--no-rebaseline"), 2, "choose one"
    ),
    # the guard: "lost more than max_drop (10%) of the known contacts, is refused (exit 3)
    # unless --force"; "A file of 0 bytes is refused before that, exit 2"
    "sync, half the contacts gone": Case(("sync",), 3, "max_drop", setup=truncated),
    "sync --force, half the contacts gone": Case(("sync", "--force"), 0, "", setup=truncated),
    "sync, a 0-byte export": Case(
        ("sync",), 2, "", setup=lambda made: (made.folder / "contacts.csv").write_bytes(b"")
    ),
    "sync, header only": Case(("sync",), 3, "", setup=lambda made: made.export(0)),
    # "1 finished but some deliveries ... are still pending"
    "sync, the vendor down": Case(("sync",), 1, ""),
    "sync --dry-run, no store": Case(("sync", "--dry-run"), 0, "", then=nothing_created),
    # "`syncd check --online` exits 2 when a vendor refused its read-only call"
    "check --online, the vendor down": Case(("check", "--online"), 2, "online check failed"),
    "check": Case(("check",), 0, ""),
    # init: "--vendors is required"; "if any target exists it names it, exits 2"
    "init without --vendors": Case(
        ("init", "contacts.csv", "--dir", "new"), 2, "--vendors", config=False
    ),
    "init over a file": Case(
        ("init", "contacts.csv", "--vendors", "esputnik", "--dir", "."),
        2,
        "already exist",
        config=False,
    ),
    # usage errors are exit 2, one line, never a traceback
    "sandbox --port past the last port": Case(("sandbox", "--port", "65532"), 2, "65531"),
    "sandbox --port -1": Case(("sandbox", "--port", "-1"), 2, "0<=x<=65531"),
    "demo --contacts 3": Case(("demo", "--contacts", "3"), 2, "x>=10"),
    "pull --since not a date": Case(("pull", "--since", "2026-13-01"), 2, "--since"),
    "an unknown vendor": Case(("sync", "--vendor", "bogus"), 2, "not configured"),
}


@pytest.fixture
def made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)

    def serve(*_args: object, **_kw: object) -> None:  # a case must never serve until killed
        raise AssertionError("syncd sandbox took a port it should have refused")

    monkeypatch.setattr("syncd.demo.serve_sandbox", serve)
    yield install(tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_documented_exit_codes(
    name: str, made: Install, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CASES[name]
    case.setup(made)
    capsys.readouterr()
    argv = ("--config", str(made.config), *case.argv) if case.config else case.argv
    if case.lock_held:
        with InstanceLock(made.store):
            code = syncd(*argv)
    else:
        code = syncd(*argv)
    out = capsys.readouterr()
    printed = out.out + out.err
    assert code == case.code, printed
    assert case.says in printed
    assert "Traceback" not in printed
    case.then(made)


def test_config_missing_is_exit_2(made: Install, capsys: pytest.CaptureFixture[str]) -> None:
    assert syncd("--config", str(made.folder / "none.toml"), "status") == 2
    assert "none.toml: file not found" in capsys.readouterr().err


# --- the Configuration reference against what the loader accepts ---------------------------


@dataclass
class Documented:
    value: Any
    commented: bool
    comment: str


def reference_block() -> str:
    """The Configuration section's first TOML block: the reference."""
    return section("Configuration").split("```toml\n", 1)[1].split("\n```", 1)[0]


def documented() -> dict[str, dict[str, Documented]]:
    """Table → key → what the reference shows: its value, whether it is commented out (a
    default, or an example of a key left unset), and the comment after it."""
    tables: dict[str, dict[str, Documented]] = {}
    table = ""
    for line in reference_block().splitlines():
        commented = line.startswith("# ")
        body = line[2:] if commented else line
        try:
            parsed = tomllib.loads(body)
        except tomllib.TOMLDecodeError:
            continue  # prose
        if body.startswith("["):
            table = body[1 : body.index("]")]
            tables.setdefault(table, {})
        elif len(parsed) == 1:
            ((key, value),) = parsed.items()
            comment = body.partition("  #")[2].strip().removeprefix("#").strip()
            tables[table][key] = Documented(value, commented, comment)
    return tables


def uncommented() -> str:
    """The reference as a config with every key set, commented or not."""
    lines = []
    for line in reference_block().splitlines():
        body = line[2:] if line.startswith("# ") else line
        try:
            tomllib.loads(body)
        except tomllib.TOMLDecodeError:
            continue
        lines.append(body)
    return "\n".join(lines) + "\n"


def load_tracking(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """Load the config at `path`, recording the keys the loader reads in each of its tables
    (`_Table.check_unknown` refuses any other)."""
    read: dict[str, set[str]] = {}
    real = configmod._Table.check_unknown

    def tracking(self: Any, allowed_extra: set[str] | None = None) -> None:
        if self.file == path.resolve():
            read.setdefault(self.name, set()).update(self.used | (allowed_extra or set()))
        real(self, allowed_extra)

    monkeypatch.setattr(configmod._Table, "check_unknown", tracking)
    load(path)
    return read


@pytest.fixture
def reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The reference written out with every key set, and the files it names."""
    monkeypatch.setenv("ESPUTNIK_API_KEY", "k")
    (tmp_path / "mappings").mkdir()
    shutil.copy(MAPPINGS / "esputnik.toml", tmp_path / "mappings" / "esputnik.toml")
    # field_id is "with dedupe_on = fieldId" only: the loader refuses it beside "email"
    text = re.sub(r"^field_id = .*\n", "", uncommented(), flags=re.M)
    (tmp_path / "syncd.toml").write_text(text, encoding="utf-8")
    return tmp_path / "syncd.toml"


VENDOR = "vendors.esputnik"


def test_every_key_the_reference_shows_loads(reference: Path) -> None:
    """Commented out or not, each key of the reference is accepted with the value shown."""
    load(reference)


def test_the_reference_names_every_key_the_loader_reads(
    reference: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = load_tracking(reference, monkeypatch)
    shown = documented()
    for table, keys in read.items():
        if table in ("", VENDOR):  # the top level's tables; a vendor's keys are VENDORS'
            continue
        assert sorted(shown.get(table, {})) == sorted(keys), f"[{table}]"
    assert set(shown[VENDOR]) <= read[VENDOR]
    assert {t for t in read if t} == set(shown)


MINIMAL = (
    '[source]\npath = "contacts.csv"\nkey = "Record ID"\n[store]\npath = "syncd.db"\n'
    '[vendors.esputnik]\nbase_url = "https://esputnik.com"\napi_key = "k"\n'
    'mapping = "esputnik.toml"\n'
)


def defaults(folder: Path) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str]]]:
    """What the loader makes of a config of only the keys it requires: table → key → value;
    and the required (table, key)s, each proved so by a config without it refused."""
    shutil.copy(MAPPINGS / "esputnik.toml", folder / "esputnik.toml")
    path = folder / "syncd.toml"
    required = set()
    table = ""
    for line in MINIMAL.splitlines():
        if line.startswith("["):
            table = line.strip("[]")
            continue
        key = line.split(" = ")[0]
        path.write_text(MINIMAL.replace(line + "\n", ""), encoding="utf-8")
        with pytest.raises(ConfigError, match=re.escape(key)):
            load(path)
        required.add((table, key))
    path.write_text(MINIMAL, encoding="utf-8")
    cfg = load(path)
    vendor = cfg.vendors["esputnik"]
    tables: dict[str, dict[str, Any]] = {
        name: dict(vars(getattr(cfg, name)))
        for name in ("source", "store", "schedule", "suppression", "delivery", "metrics")
    }
    tables[VENDOR] = {
        **vars(vendor.delivery),
        **vendor.options,
        "batch_size": default_batch(REGISTRY["esputnik"]),
        "streams": list(REGISTRY["esputnik"].streams),
    }
    return tables, required


def same(documented: Any, loaded: Any) -> bool:
    if isinstance(loaded, tuple):
        loaded = list(loaded)
    return bool(documented == loaded)


def says_default(comment: str, default: Any) -> bool:
    """Whether `comment` says `(default VALUE)`, VALUE written as TOML."""
    match = re.search(r"\(default ([^)]*)\)", comment)
    try:
        return bool(match) and same(tomllib.loads(f"v = {match[1]}")["v"], default)  # type: ignore[index]
    except tomllib.TOMLDecodeError:
        return False


def test_the_references_defaults_are_the_loaders(tmp_path: Path) -> None:
    """A commented-out key shows its default, or is an example of a key unset by default; a
    key set in the reference that is not required says its default when it shows another
    value."""
    loaded, required = defaults(tmp_path)
    wrong = []
    for table, keys in documented().items():
        for key, shown in keys.items():
            if (table, key) in required:
                continue
            default = loaded[table][key]
            if same(shown.value, default):
                continue
            if shown.commented and default in (None, (), [], {}):
                continue  # an example: left out, the key is off
            if says_default(shown.comment, default):
                continue
            wrong.append(f"[{table}] {key} = {shown.value!r}: the default is {default!r}")
    assert not wrong, "\n".join(wrong)


def test_the_choices_a_comment_lists_are_the_loaders() -> None:
    """`# dedupe_on = "email"  # email | sms | ...`: the values the loader takes."""
    for table, keys in documented().items():
        if not table.startswith("vendors."):
            continue
        options = REGISTRY[table.split(".", 1)[1]].options
        for key, shown in keys.items():
            choices = options[key].choices if key in options else None
            if " | " in shown.comment and choices:
                listed = [c.strip() for c in shown.comment.split(" | ")]
                assert listed == list(choices), key


def ranges() -> dict[str, tuple[float, float]]:
    """The ranges "Every number has a range" lists: key → (low, high)."""
    text = section("Configuration")
    paragraph = text.split("Every number has a range", 1)[1].split("Values that would load", 1)[0]
    paragraph = " ".join(paragraph.split())
    found = {}
    for names, low, high in re.findall(
        r"((?:`\w+`(?:,? and |, )?)+) (\d[\d.]*)–(\d[\d.]*)", paragraph
    ):
        for name in re.findall(r"`(\w+)`", names):
            found[name] = (float(low), float(high))
    if "a vendor's other seconds 0–86400" in paragraph:
        found["a vendor's other seconds"] = (0.0, DAY)
    return found


def test_the_ranges_the_readme_gives_are_the_loaders() -> None:
    code = {key: (float(low), float(high)) for key, (low, high, _unit) in BOUNDS.items()}
    for cls in REGISTRY.values():
        for key, opt in cls.options.items():
            if opt.bounds:
                code[key] = (float(opt.bounds[0]), float(opt.bounds[1]))
    code["a vendor's other seconds"] = (0.0, DAY)
    assert ranges() == code


@pytest.mark.parametrize("value", ["1000000000000", "-1"])
@pytest.mark.parametrize(
    ("vendor", "key"),
    [
        (name, key)
        for name, cls in REGISTRY.items()
        for key, opt in cls.options.items()
        if opt.type in (int, float)
    ],
)
def test_every_number_a_vendor_takes_is_held_to_a_range(
    vendor: str, key: str, value: str, tmp_path: Path
) -> None:
    """The README: "Every number has a range, and a value outside it is refused at load",
    naming the key. `lookback_days = 1000000000000` loaded, and every `check` and pull
    ended in a traceback; a negative `trigger_id` loaded."""
    table = re.sub(rf"^{key} = .*\n", "", SANDBOX_TABLES.get(vendor, ""), flags=re.M)
    table += f"{key} = {value}\n" + ('dedupe_on = "fieldId"\n' if key == "field_id" else "")
    path = write_config(tmp_path, {vendor: "http://127.0.0.1:9"}, {vendor: table})
    with pytest.raises(ConfigError, match=rf"\[vendors.{vendor}\] {key}: "):
        load(path)


# --- "Running under systemd" against the shipped unit ---------------------------------------

UNIT = Path(__file__).parent.parent / "systemd" / "syncd.service"


def unit_settings() -> dict[str, list[str]]:
    """The unit's `Key=value` lines: key → its values, in order."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def seconds(value: str) -> float:
    """A systemd time span of the forms this unit uses (`120`, `120s`, `10s`, `5min`)."""
    match = re.fullmatch(r"(\d+)\s*(s|min)?", value)
    assert match, value
    return float(match[1]) * (60 if match[2] == "min" else 1)


def test_the_systemd_section_describes_the_shipped_unit() -> None:
    text = " ".join(section("Running under systemd").split())
    unit = unit_settings()
    # "(`systemd/syncd.service`: `Type=notify`, `WatchdogSec=120`, `Restart=on-failure`; ..."
    shown = re.search(r"\(`systemd/syncd\.service`: ((?:`\w+=[^`]+`, )+`\w+=[^`]+`);", text)
    assert shown, "the section no longer quotes the unit's directives"
    for directive in re.findall(r"`(\w+)=([^`]+)`", shown[1]):
        key, value = directive
        assert key in unit, f"the unit has no {key}="
        if key.endswith("Sec"):
            assert seconds(unit[key][0]) == seconds(value), key
        else:
            assert unit[key] == [value], key
    kind = f"Type={unit['Type'][0]}"
    assert kind in (cli.commands["run"].help or ""), "syncd run --help"
    assert f"(systemd `{kind}`)" in section("Commands"), "the Commands table's run row"
    watchdog = seconds(unit["WatchdogSec"][0])
    assert f"stops pinging for {watchdog:g} s (watchdog)" in text
    assert f"systemd restarts it after {seconds(unit['RestartSec'][0]):g} s" in text
    assert unit["RestartPreventExitStatus"] == ["2"] and "(exit 2) is not restarted" in text
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"] and "(SIGHUP)" in text
    assert unit["User"] == ["syncd"] and unit["Group"] == ["syncd-analysts"]
    assert unit["SupplementaryGroups"] == ["syncd"] and "`SupplementaryGroups=syncd`" in text
    assert unit["StateDirectory"] == ["syncd"] and unit["StateDirectoryMode"] == ["2750"]
    assert "| `/var/lib/syncd/` | syncd:syncd-analysts | 2750 |" in text
    assert unit["LoadCredential"] == ["syncd:/etc/syncd/credentials"]
    assert "`LoadCredential=syncd:/etc/syncd/credentials`" in text
    assert unit["ProtectHome"] == ["yes"] and unit["ProtectSystem"] == ["strict"]
    assert unit["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert unit["CapabilityBoundingSet"] == [""]
    assert "ExecStart=/opt/syncd/bin/syncd --config /etc/syncd/syncd.toml run" in " ".join(
        f"ExecStart={v}" for v in unit["ExecStart"]
    )
