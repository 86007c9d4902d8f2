"""TOML config and mapping files → frozen dataclasses.

Every mistake is a `ConfigError` that reads `file: [table] key: what is wrong (what to do)`.
Relative paths are resolved against the folder of the file that names them. Secrets are
written as a literal, `env:NAME`, `file:PATH` or `credential:NAME` (systemd's
`$CREDENTIALS_DIRECTORY/NAME`) and resolved once, at load time.
"""

from __future__ import annotations

import codecs
import difflib
import glob
import ipaddress
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from syncd.errors import ConfigError, OptionError
from syncd.liveness import STALL_SECONDS
from syncd.settings import DeliveryConfig as DeliveryConfig
from syncd.settings import MappingConfig as MappingConfig
from syncd.settings import TriggerRule as TriggerRule
from syncd.settings import VendorConfig as VendorConfig
from syncd.settings import secret_problem, time_zone

if TYPE_CHECKING:
    from syncd.vendors.base import Connector

MAX_TOML = 1024 * 1024  # a config or mapping file larger than this is not one
MAX_SECRET = 64 * 1024
# TOML's integers: "if an integer cannot be represented losslessly, an error must be thrown";
# tomllib reads any, and one too large for a float key was an OverflowError
INT64 = (-(2**63), 2**63 - 1)
DAY = 86400.0
# every numeric key's sane range: outside it a value is a typo that would hang or spin
# (`backoff_base = 1e10` sleeps for centuries); nan is in no range
BOUNDS: dict[str, tuple[float, float, str]] = {
    "max_drop": (0, 1, "a fraction: 0.10 = 10%"),
    "settle_seconds": (0, DAY, "seconds"),
    "misfire_grace_seconds": (1, 7 * DAY, "seconds"),
    "stall_seconds": (1, DAY, "seconds a job may show no progress"),
    "min_days_between_surveys": (0, 3650, "days"),
    "max_resurvey": (0, 1, "a fraction: 0.50 = 50%"),
    "max_attempts": (1, 100, "tries"),
    "retries": (0, 20, "per request"),
    "backoff_base": (0, 600, "seconds"),
    "backoff_cap": (0, 3600, "seconds"),
    "retry_after_cap": (0, 3600, "seconds"),
    "connect_timeout": (0.01, 600, "seconds"),
    "read_timeout": (0.01, 3600, "seconds"),
    "request_deadline": (0.01, 3600, "seconds"),
    "breaker_threshold": (1, 1000, "consecutive failures"),
    "keep_runs_days": (0, 36500, "days; 0 keeps every run"),
    "keep_payload_days": (0, 36500, "days; 0 keeps every payload"),
}


def _bound(value: float) -> str:
    """A range's end as the operator writes it: 2147483647, not 2.14748e+09."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class SourceConfig:
    path: str
    key: str
    encoding: str = "utf-8"
    delimiter: str | None = None
    max_drop: float = 0.10
    settle_seconds: float = 30.0
    phone_region: str | None = None
    ignore_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    # retention (`syncd prune`, and the daemon after each reconcile); 0 keeps everything
    keep_runs_days: int = 90
    keep_payload_days: int = 30


@dataclass(frozen=True)
class ScheduleConfig:
    timezone: str = "UTC"
    reconcile: str = "0 2 * * *"
    pull: str = "*/30 * * * *"
    watch_export: bool = False
    misfire_grace_seconds: int = 3600
    # `syncd run`: a job that shows no progress (syncd.liveness) for this long, beyond the
    # waits it announced (requests, sleeps), is stalled: logged, said in systemctl status,
    # and the watchdog pings stop so that systemd restarts the service
    stall_seconds: float = STALL_SECONDS


@dataclass(frozen=True)
class SuppressionConfig:
    unsubscribed: bool = True
    min_days_between_surveys: int = 0
    # refuse a run in which one trigger vendor would survey again more than this share of
    # the known contacts (`Plan.guard`): a watched column written another way by the CRM
    max_resurvey: float = 0.5
    # which unsubscribe channels suppress: "any" or a list like ["email"]
    channels: tuple[str, ...] = ("any",)
    # whether an unsubscribe also holds back upserts (never re-subscribe through an update)
    upserts: bool = True


@dataclass(frozen=True)
class MetricsConfig:
    """`[metrics]`: where `syncd run` serves Prometheus metrics; no `listen`, no server."""

    listen: tuple[str, int] | None = None  # (IP address, port)
    allow_remote: bool = False


@dataclass(frozen=True)
class Config:
    path: Path
    source: SourceConfig
    store: StoreConfig
    schedule: ScheduleConfig
    suppression: SuppressionConfig
    delivery: DeliveryConfig
    vendors: Mapping[str, VendorConfig]
    metrics: MetricsConfig = MetricsConfig()

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every resolved secret value, for log redaction."""
        return tuple(s for v in self.vendors.values() for s in v.secrets)


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """`--config`, else `$SYNCD_CONFIG`, else `./syncd.toml`. An empty `--config` (a
    script's `--config "$CONF"` with $CONF unset) is refused: it read the default instead,
    which may be another installation's config, vendors and store."""
    if explicit is not None and not os.fspath(explicit).strip():
        raise ConfigError(
            "--config is empty",
            hint="name the config file, or leave --config out to use $SYNCD_CONFIG or ./syncd.toml",
        )
    if explicit:
        return Path(explicit)
    env = os.environ.get("SYNCD_CONFIG")
    return Path(env) if env else Path("syncd.toml")


def read_capped(path: Path, limit: int) -> bytes:
    """A regular file's bytes, at most `limit` of them; never blocks (a FIFO is refused
    before anything is read). Raises OSError, or ValueError saying what the file is."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):  # before fdopen, which refuses a directory as "Is a directory"
        os.close(fd)
        raise ValueError(f"is {kind_of(mode)}, not a regular file")
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"is larger than {limit // 1024} KiB")
    return data


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a message."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def read_toml(path: Path, named_by: str | None = None) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a ConfigError naming the file.
    `named_by`: the config key that names it (a mapping's), for the hint when it is missing."""
    try:
        data = read_capped(path, MAX_TOML)
        # a BOM (Notepad's "UTF-8") is no TOML, but no mistake of the operator's either
        text = data.removeprefix(codecs.BOM_UTF8).decode("utf-8")
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise
        except ValueError:  # int()'s digit limit: its advice is Python's, not the operator's
            raise ConfigError(
                f"not valid TOML: an integer of more than {sys.get_int_max_str_digits()} digits "
                "(TOML's are 64-bit)",
                file=str(path),
            ) from None
    except UnicodeDecodeError as exc:
        # Windows PowerShell 5's `>` and Out-File write UTF-16, with its byte-order mark
        # (UTF-32 first: its little-endian mark starts with UTF-16's)
        for bom, name in (
            (codecs.BOM_UTF32_LE, "UTF-32"),
            (codecs.BOM_UTF32_BE, "UTF-32"),
            (codecs.BOM_UTF16_LE, "UTF-16"),
            (codecs.BOM_UTF16_BE, "UTF-16"),
        ):
            if data.startswith(bom):
                raise ConfigError(
                    f"is {name} (it starts with a {name} byte-order mark), not UTF-8",
                    file=str(path),
                    hint="save the file as UTF-8; in PowerShell: Out-File -Encoding utf8, or "
                    "Set-Content -Encoding utf8",
                ) from None
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"is not UTF-8: byte 0x{data[exc.start]:02x} on line {line}",
            file=str(path),
            hint="save the file as UTF-8 (a Latin-1 or cp1252 accent is the usual cause)",
        ) from None
    except FileNotFoundError:
        raise ConfigError(
            "file not found",
            file=str(path),
            hint=f"check {named_by}" if named_by else "pass --config or set $SYNCD_CONFIG",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # a table given twice, once by a dotted key (`vendors.esputnik.api_key = ...` beside
        # `[vendors.esputnik]`): TOML allows each table to be defined once
        twice = str(exc).startswith(("Cannot declare", "Cannot redefine namespace"))
        raise ConfigError(
            f"not valid TOML: {exc}",
            file=str(path),
            hint="a table is defined once: put its keys under its one [table] header, without "
            "repeating the table's name in dotted keys elsewhere"
            if twice
            else None,
        ) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", file=str(path)) from None
    except ValueError as exc:  # what read_capped found, or bytes that are not UTF-8
        raise ConfigError(
            f"cannot be read: {exc}", file=str(path), hint=f"check {named_by}" if named_by else None
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot be read: {exc.strerror}",
            file=str(path),
            hint=f"check {named_by}" if named_by else None,
        ) from None


class _Table:
    """Typed access to one TOML table, reporting `file: [table] key:` on every mistake."""

    def __init__(self, file: Path, name: str, data: Any) -> None:
        self.file, self.name = file, name
        if not isinstance(data, dict):
            raise self.error(f"must be a table, not {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def error(self, message: str, key: str | None = None, hint: str | None = None) -> ConfigError:
        return ConfigError(message, file=str(self.file), table=self.name, key=key, hint=hint)

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = None,
        *,
        required: bool = False,
        choices: tuple[Any, ...] | None = None,
        secret: bool = False,
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required and kind is dict:
                table = f"{self.name}.{key}" if self.name else key
                near = difflib.get_close_matches(key, [k for k in self.data if k != key], 1)
                raise ConfigError(
                    "table is missing",
                    file=str(self.file),
                    table=table,
                    hint=f"the file has [{near[0]}]: did you mean [{key}]?" if near else None,
                )
            if required:
                raise self.error("is required", key)
            return default
        value = self.data[key]
        if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
            digits = len(str(abs(value)))
            raise self.error(f"a {digits}-digit integer is outside TOML's 64-bit range", key)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            shown = "" if secret else f" {value!r}"  # a secret's value is never shown
            raise self.error(
                f"must be {names}, not {type(value).__name__}{shown}",
                key,
                _type_hint(key, value, kinds, secret),
            )
        if choices is not None and value not in choices:
            raise self.error(f"{value!r} is not one of {', '.join(map(repr, choices))}", key)
        return value

    def number(self, key: str, kind: type, default: float) -> Any:
        """An int or float key held to its range in `BOUNDS`."""
        value = self.get(key, kind, default)
        low, high, unit = BOUNDS[key]
        if not low <= value <= high:
            raise self.error(
                f"must be between {_bound(low)} and {_bound(high)} ({unit}), not {value!r}", key
            )
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, None)
        if value is None:
            return default
        if not all(isinstance(v, str) for v in value):
            raise self.error("must be a list of strings", key)
        return tuple(value)

    def path(
        self, key: str, *, required: bool = False, default: str | None = None, follow: bool = True
    ) -> Path:
        """`key`'s path against this file's folder. `follow=False` keeps its symlinks, for
        a path read anew on every run (the export: `latest.csv -> contacts-<date>.csv` is
        moved on by the CRM's job, and the service must read what it points at then)."""
        raw = str(self.get(key, str, default, required=required))
        if not raw.strip():
            raise self.error("is empty", key, hint="name a file, relative to this file's folder")
        if "\x00" in raw:
            raise self.error(f"{raw!r} contains a NUL byte, which no path can hold", key)
        path = self.file.parent / os.path.expanduser(raw)
        # realpath, not Path.resolve: a symlink loop is the reader's to report, with its name
        return Path(os.path.realpath(path)) if follow else path

    def check_unknown(self, allowed_extra: set[str] | None = None) -> None:
        unknown = set(self.data) - self.used - (allowed_extra or set())
        if unknown:
            key = sorted(unknown)[0]
            near = difflib.get_close_matches(key, sorted(self.used | (allowed_extra or set())), 1)
            hint = f"did you mean {near[0]!r}?" if near else "check the spelling against the README"
            raise self.error("unknown key", key, hint=hint)


def _type_hint(key: str, value: Any, kinds: tuple[type, ...], secret: bool) -> str | None:
    """What to write instead of `value`, of a TOML type `key` does not take: the number or
    boolean without its quotes (`"30"`, `"true"`), a whole number without its point (`5.0`
    for an int), text in quotes (an unquoted date, `first_date = 2026-01-01`)."""
    if isinstance(value, str) and not secret:
        text = value.strip()
        if bool in kinds and text.lower() in ("true", "false"):
            return f"write {key} = {text.lower()}, without quotes"
        if float in kinds or int in kinds:
            try:
                number = float(text)
            except ValueError:
                return None
            if number == number and abs(number) != float("inf"):  # `"nan"` is no number to write
                return f"write {key} = {text}, a number without quotes"
        if list in kinds:
            return f"write a list: {key} = [{value!r}]".replace("'", '"')
        return None
    if int in kinds and float not in kinds and isinstance(value, float):
        if value.is_integer():
            return f"write {key} = {int(value)}, a whole number without a decimal point"
        return "write a whole number"
    if kinds == (str,) and not isinstance(value, (list, dict)):
        shown = "…" if secret else str(value).lower() if isinstance(value, bool) else str(value)
        return f'write it in quotes: {key} = "{shown}"'
    return None


def _read_secret(path: Path, what: str, table: _Table, key: str) -> str:
    try:
        value = read_capped(path, MAX_SECRET).decode("utf-8").strip()
    except OSError as exc:
        raise table.error(f"cannot read {what} {path}: {exc.strerror}", key) from None
    except ValueError as exc:  # what read_capped found, or bytes that are not UTF-8
        raise table.error(f"{what} {path} {_secret_problem(exc)}", key) from None
    if not value:
        raise table.error(f"{what} {path} is empty", key)
    return value


def _secret_problem(exc: ValueError) -> str:
    return "is not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)


def resolve_secret(raw: str, table: _Table, key: str) -> str:
    """literal | env:NAME | file:PATH | credential:NAME → the secret's value, without the
    whitespace around it, wherever it came from (no vendor's key has any: a file's line
    break, an `EnvironmentFile=` line's trailing space or a pasted one made every call a
    401)."""
    raw = raw.strip()
    scheme, _, rest = raw.partition(":")
    if scheme in ("env", "file", "credential") and "\x00" in rest:
        what = "variable name" if scheme == "env" else "path"
        raise table.error(f"{raw!r} contains a NUL byte, which no {what} can hold", key)
    if scheme in ("env", "file", "credential") and not rest.strip():
        raise table.error(
            f"{raw!r} names no {'variable' if scheme == 'env' else 'file'}",
            key,
            hint=f"write {scheme}:NAME",
        )
    if scheme == "env" and rest:
        value = os.environ.get(rest)
        if value is None or not value.strip():
            raise table.error(f"environment variable {rest} is not set or empty", key)
        return value.strip()
    if scheme == "file" and rest:
        return _read_secret((table.file.parent / rest).resolve(), "secret file", table, key)
    if scheme == "credential" and rest:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise table.error(
                f"credential:{rest} needs $CREDENTIALS_DIRECTORY",
                key,
                hint="run under the systemd unit (LoadCredential=), or use env: or file:",
            )
        return _read_secret(Path(cred_dir) / rest, "credential", table, key)
    if not raw.strip():
        raise table.error("is empty", key)
    return raw


def load_mapping(
    path: Path, vendor: str, connector: type[Connector], named_by: str | None = None
) -> MappingConfig:
    """Read and check one mapping file against what the connector accepts."""
    data = read_toml(path, named_by)
    top = _Table(path, "", data)
    fields_t = _Table(path, "fields", top.get("fields", dict, required=True))
    meta_t = _Table(path, "metadata", top.get("metadata", dict, {}))
    fields: dict[str, str] = {}
    for name in fields_t.data:
        fields[name] = fields_t.get(name, str)
        if name in connector.refused_fields:
            raise fields_t.error(
                f"{vendor} may not be sent {name!r}: {connector.refused_fields[name]}",
                name,
                hint=f"remove {name} from [fields]",
            )
        if connector.field_names is not None and name not in connector.field_names:
            near = difflib.get_close_matches(name, sorted(connector.field_names), 1)
            raise fields_t.error(
                f"{vendor} has no field {name!r}",
                name,
                hint=(f"did you mean {near[0]!r}? " if near else "")
                + "known fields: "
                + ", ".join(sorted(connector.field_names)),
            )
    if not fields:
        raise fields_t.error("maps no field", hint="map at least the vendor's identifying field")
    for name in connector.required_fields:
        if name not in fields:
            raise fields_t.error(f"{vendor} needs {name!r} mapped to a CRM column", name)
    metadata = {name: meta_t.get(name, str) for name in meta_t.data}
    types_t = _Table(path, "types", top.get("types", dict, {}))
    types: dict[str, str] = {}
    for name in types_t.data:
        if not connector.value_types:
            raise types_t.error(f"{vendor} has no typed values; remove [types]")
        types[name] = types_t.get(name, str, choices=connector.value_types)
        if name not in fields and name not in metadata:
            raise types_t.error(
                "is neither a mapped field nor a metadata name",
                name,
                hint="give a type to a name from [fields] or [metadata]",
            )
    trigger = None
    if "trigger" in data:
        trig_t = _Table(path, "trigger", top.get("trigger", dict))
        if connector.kind != "trigger":
            raise trig_t.error(f"{vendor} is not a trigger vendor; remove [trigger]")
        trigger = TriggerRule(
            on_new=trig_t.get("on_new", bool, True), on_change=trig_t.strings("on_change")
        )
        trig_t.check_unknown()
    elif connector.kind == "trigger":
        trigger = TriggerRule()
    top.check_unknown()
    return MappingConfig(path=path, fields=fields, metadata=metadata, trigger=trigger, types=types)


def _delivery(table: _Table, base: DeliveryConfig) -> DeliveryConfig:
    kw = {
        name: table.number(name, int if isinstance(default, int) else float, default)
        for name, default in base.__dict__.items()
    }
    return DeliveryConfig(**kw)


def load(path: Path, *, check_schedule: bool = True) -> Config:
    """Load and validate a whole config, its mapping files and its secrets.

    `check_schedule=False` leaves the `[schedule]` crontab lines unchecked (they are checked by
    APScheduler, which takes a tenth of a second to import): for the commands that do not
    schedule anything. `syncd run`, its reloads, `check` and `status` check them."""
    # here, not at the top: the connectors (and requests, phonenumbers) load only when a
    # config does, not for `syncd --help`; they never import this module, so no cycle
    from syncd.vendors import REGISTRY

    path = path.resolve() if path.exists() else path
    data = read_toml(path)
    top = _Table(path, "", data)

    src = _Table(path, "source", top.get("source", dict, required=True))
    source = SourceConfig(
        path=str(src.path("path", required=True, follow=False)),
        key=src.get("key", str, required=True),
        encoding=src.get("encoding", str, "utf-8"),
        delimiter=src.get("delimiter", str, None),
        max_drop=src.number("max_drop", float, 0.10),
        settle_seconds=src.number("settle_seconds", float, 30.0),
        phone_region=src.get("phone_region", str, None),
        ignore_columns=src.strings("ignore_columns"),
    )
    if source.key in source.ignore_columns:
        raise src.error(
            f"names the key column {source.key!r}: a contact's key always counts", "ignore_columns"
        )
    if source.delimiter is not None and len(source.delimiter) != 1:
        raise src.error("must be one character, or left out to sniff it", "delimiter")
    if source.delimiter is not None and source.delimiter in '"\r\n\x00':
        raise src.error(
            f"{source.delimiter!r} cannot separate columns (it quotes or ends them)",
            "delimiter",
            hint='e.g. ",", ";", "\\t" or "|", or leave it out to sniff it',
        )
    if not source.key.strip():
        raise src.error("is empty", "key", hint="name the CRM's unique id column")
    _check_region(src, source.phone_region)
    _check_encoding(src, source.encoding)
    src.check_unknown()

    st = _Table(path, "store", top.get("store", dict, required=True))
    store = StoreConfig(
        path=st.path("path", required=True),
        keep_runs_days=st.number("keep_runs_days", int, 90),
        keep_payload_days=st.number("keep_payload_days", int, 30),
    )
    _check_store(st, store.path)
    st.check_unknown()

    sch = _Table(path, "schedule", top.get("schedule", dict, {}))
    schedule = ScheduleConfig(
        timezone=sch.get("timezone", str, "UTC"),
        reconcile=sch.get("reconcile", str, "0 2 * * *"),
        pull=sch.get("pull", str, "*/30 * * * *"),
        watch_export=sch.get("watch_export", bool, False),
        misfire_grace_seconds=sch.number("misfire_grace_seconds", int, 3600),
        stall_seconds=sch.number("stall_seconds", float, STALL_SECONDS),
    )
    try:
        time_zone(schedule.timezone, "timezone")
    except OptionError as exc:
        raise sch.error(exc.bare, exc.key, exc.hint) from None
    for key in ("reconcile", "pull") if check_schedule else ():
        _check_cron(sch, key, getattr(schedule, key))
    sch.check_unknown()

    sup = _Table(path, "suppression", top.get("suppression", dict, {}))
    suppression = SuppressionConfig(
        unsubscribed=sup.get("unsubscribed", bool, True),
        min_days_between_surveys=sup.number("min_days_between_surveys", int, 0),
        max_resurvey=sup.number("max_resurvey", float, 0.5),
        channels=sup.strings("channels", ("any",)),
        upserts=sup.get("upserts", bool, True),
    )
    _check_channels(sup, suppression)
    sup.check_unknown()

    dlv = _Table(path, "delivery", top.get("delivery", dict, {}))
    delivery = _delivery(dlv, DeliveryConfig())
    dlv.check_unknown()

    met = _Table(path, "metrics", top.get("metrics", dict, {}))
    metrics = _metrics(met)
    met.check_unknown()

    vendors_raw = top.get("vendors", dict, {})
    vendors: dict[str, VendorConfig] = {}
    for name in vendors_raw:
        vendors[name] = _load_vendor(path, name, vendors_raw[name], delivery, REGISTRY)
    top.check_unknown()
    if not vendors:
        raise top.error(
            "no [vendors.<name>] table", hint="enable at least one of " + ", ".join(REGISTRY)
        )
    for name, vendor in vendors.items():
        read = [c for c in vendor.mapping.columns if c in source.ignore_columns]
        if read:
            raise src.error(
                f"names {read[0]!r}, which {name}'s mapping {vendor.mapping.path} reads: a "
                "change to an ignored column is never seen, so it would never be sent",
                "ignore_columns",
                hint=f"take {read[0]!r} out of ignore_columns, or out of the mapping",
            )
    _check_store_is_its_own(st, store.path, path, source, vendors)
    return Config(path, source, store, schedule, suppression, delivery, vendors, metrics)


def _check_store_is_its_own(
    table: _Table, store: Path, config: Path, source: SourceConfig, vendors: dict[str, VendorConfig]
) -> None:
    """The store is none of the files syncd reads: opened as one, the export, the config or a
    mapping was "damaged", with the advice to move a recovered copy into its place."""
    export = source.path
    others = [(Path(os.path.realpath(config)), "the config file")]
    others += [(v.mapping.path, f"{name}'s mapping file") for name, v in vendors.items()]
    for other, what in others:
        if store == other:
            raise table.error(
                f"{store} is {what}: the store needs a file of its own", "path", 'e.g. "syncd.db"'
            )
    if store.match(export) or store.match(os.path.realpath(export)):  # a glob's match too
        what = "a match of the export" if glob.has_magic(export) else "the export"
        raise table.error(
            f"{store} is {what} ([source] path {export}): the store needs a file of its own",
            "path",
            'e.g. "syncd.db", outside the folder the exports land in',
        )


def _metrics(table: _Table) -> MetricsConfig:
    """`listen = "IP:port"` (IPv6 in brackets), on loopback unless `allow_remote = true`:
    /metrics has no authentication, and it names the vendors and what waits for them."""
    allow_remote = table.get("allow_remote", bool, False)
    raw = table.get("listen", str, None)
    if raw is None:
        return MetricsConfig(allow_remote=allow_remote)
    host, _, port = raw.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        address = None
    if (
        address is None
        or (address.version == 6) != bracketed
        or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535)
    ):
        raise table.error(
            f"{raw!r} is not IP:port", "listen", hint='e.g. "127.0.0.1:9464" or "[::1]:9464"'
        )
    if not address.is_loopback and not allow_remote:
        raise table.error(
            f"{host} is not a loopback address: /metrics has no authentication",
            "listen",
            hint="listen on 127.0.0.1 and let Prometheus reach it through a proxy or tunnel, "
            "or set allow_remote = true",
        )
    return MetricsConfig(listen=(str(address), int(port)), allow_remote=allow_remote)


# the channels an unsubscribe is recorded with: eSputnik's `mediaType`s, Hello Customer's
# email, SignalVine's sms (`Connector.pull`); "any" is every one, and an unknown channel
CHANNELS = (
    "any",
    "email",
    "sms",
    "viber",
    "mobilepush",
    "webpush",
    "appinbox",
    "widget",
    "inapp",
    "telegrambot",
)


def _check_channels(table: _Table, sup: SuppressionConfig) -> None:
    """Every channel one that unsubscribes are recorded with: a misspelt one (`emial`)
    matches no unsubscribe, and its contacts would be surveyed again."""
    if not sup.channels:
        raise table.error(
            "is empty: no unsubscribe would suppress anyone",
            "channels",
            hint='write ["any"], or set unsubscribed = false to suppress nobody',
        )
    for channel in sup.channels:
        if channel not in CHANNELS:
            near = difflib.get_close_matches(channel, CHANNELS, 1)
            raise table.error(
                f"unknown channel {channel!r}: it would match no unsubscribe",
                "channels",
                hint=(f"did you mean {near[0]!r}? " if near else "")
                + "channels are: "
                + ", ".join(CHANNELS),
            )


def _check_region(table: _Table, region: str | None) -> None:
    """A region phonenumbers knows: any other makes every national number invalid, so each
    contact with one would be quarantined, with `check` saying nothing."""
    if region is None:
        return
    import phonenumbers

    if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise table.error(
            f"unknown region {region!r}",
            "phone_region",
            hint='an ISO 3166 two-letter code such as "BE", or leave it out',
        )


def encoding_problem(encoding: str) -> tuple[str, str | None] | None:
    """What is wrong with `encoding` as a text encoding (message, hint), or None: for
    `[source] encoding` and `syncd init --encoding`."""
    try:
        codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return f"unknown encoding {encoding!r}", None
    try:
        "".encode(encoding)
    except LookupError:  # rot13, base64, hex: codecs, but not text encodings
        return f"{encoding!r} is not a text encoding", "e.g. utf-8 or cp1252"
    return None


def _check_encoding(table: _Table, encoding: str) -> None:
    if problem := encoding_problem(encoding):
        raise table.error(problem[0], "encoding", hint=problem[1])


def _check_store(table: _Table, path: Path) -> None:
    """The store's file, if it exists, is a file; the nearest folder above it that exists
    is a folder (the store and its lock file are created under it)."""
    try:
        if path.is_dir():
            raise table.error(f"{path} is a directory", "path", hint="name a file, e.g. syncd.db")
        parent = next(p for p in path.parents if p.exists())
        if not parent.is_dir():
            raise table.error(
                f"{parent} is not a directory, so {path} cannot be created under it", "path"
            )
    except OSError as exc:
        raise table.error(f"{path} cannot be checked: {exc.strerror}", "path") from None


def _check_cron(table: _Table, key: str, expr: str) -> None:
    from syncd.schedule import trigger_for

    try:
        trigger_for(expr, "UTC")
    except (ValueError, OverflowError) as exc:  # `every 1e15h`: too large for a timedelta
        raise table.error(
            f"not a crontab line nor 'every N[s|m|h]' ({exc})",
            key,
            hint='e.g. "30 2 * * *" (02:30 every night, in [schedule] timezone) or "every 30m"',
        ) from None


def _base_url(table: _Table, raw: str) -> str:
    """`scheme://host[:port]`, as the connectors take it: they add the documented paths, so
    a path here (`https://esputnik.com/api/v1`) doubles theirs and every call is a 404 at
    night; a query or fragment swallows them; a port out of range crashed the first call; a
    user or password in it would be sent and logged outside the secrets' keys."""
    url = raw.rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise table.error("must start with http:// or https://", "base_url")
    hint = "write scheme://host[:port] only; the connector adds the vendor's documented paths"
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "Invalid IPv6 URL": an unclosed [
        raise table.error(f"{raw!r} is not a valid URL ({exc})", "base_url", hint) from None
    try:
        port = parts.port  # raises for a port that is no number from 0 to 65535
    except ValueError:
        port = 0
    if port == 0:
        raise table.error(f"{raw!r} has no valid port (1 to 65535)", "base_url", hint)
    if parts.username is not None or parts.password is not None:
        raise table.error(
            f"{url.split('://')[0]}://…@{parts.hostname} holds a user name or password",
            "base_url",
            "write scheme://host[:port]; credentials go in this table's secret keys",
        )
    if not parts.hostname or any(c.isspace() for c in url):
        raise table.error(f"{raw!r} names no valid host", "base_url", hint)
    extra = url.removeprefix(f"{parts.scheme}://{parts.netloc}")
    if extra:
        raise table.error(
            f"{raw!r} has more than scheme://host[:port]: {extra!r}", "base_url", hint
        )
    # what the HTTP client will make of it: a host it cannot put in a URL (a bidi control or
    # zero-width space pasted with it, a label IDNA refuses) passed here and `check`, then
    # failed every request at night ("request failed": a trigger's outcome unknown)
    from requests.exceptions import RequestException
    from requests.models import PreparedRequest

    retype = (
        "retype the host name: it holds a character no host name can (often an invisible "
        "one, pasted with it)"
    )
    prepared = PreparedRequest()
    try:
        prepared.prepare_url(url + "/", None)
    except (RequestException, ValueError, UnicodeError) as exc:
        from syncd.log import printable

        shown = printable(str(exc))
        raise table.error(f"{raw!r} is not a valid URL ({shown})", "base_url", retype) from None
    # what it sends: a backslash was made a path (`https://host\api` went out as
    # `https://host/%5Capi/...`, a 404 every night), a `;`, a quote or `%` kept in the host
    sent = urlsplit(prepared.url or "")
    if sent.path != "/":
        raise table.error(
            f"{raw!r} has more than scheme://host[:port]: it is sent as {prepared.url!r}",
            "base_url",
            hint,
        )
    host = sent.hostname or ""
    if not (HOST_NAME.fullmatch(host) or (":" in host and _is_ip(host))):
        raise table.error(f"{raw!r} names no valid host ({host!r})", "base_url", retype)
    return url


# a host name as sent (IDNA already applied): dot-separated labels of letters, digits,
# hyphens (and underscores, which some internal names hold); an IPv6 literal is checked apart
HOST_NAME = re.compile(
    r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\.)*"
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?\.?"
)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _load_vendor(
    path: Path,
    name: str,
    raw: Any,
    delivery: DeliveryConfig,
    registry: Mapping[str, type[Connector]],
) -> VendorConfig:
    table = _Table(path, f"vendors.{name}", raw)
    if name not in registry:
        raise table.error(
            f"unknown vendor {name!r}", hint="vendors are: " + ", ".join(sorted(registry))
        )
    connector = registry[name]
    base_url = _base_url(table, table.get("base_url", str, required=True))
    where = f"[vendors.{name}] mapping in {path} (relative to its folder)"
    mapping = load_mapping(table.path("mapping", required=True), name, connector, where)
    batch_size = table.get("batch_size", int, None)
    if batch_size is not None and not 1 <= batch_size <= connector.max_batch:
        raise table.error(f"must be between 1 and {connector.max_batch}", "batch_size")
    options: dict[str, Any] = {}
    secrets: list[str] = []
    for key, opt in connector.options.items():
        value = table.get(
            key,
            opt.type,
            opt.default,
            required=opt.required,
            choices=opt.choices,
            secret=opt.secret,
        )
        bounds = opt.bounds or ((0.0, DAY) if opt.type is float else None)
        if bounds and value is not None and not bounds[0] <= value <= bounds[1]:
            raise table.error(
                f"must be between {_bound(bounds[0])} and {_bound(bounds[1])}, not {value!r}", key
            )
        if opt.secret and value is not None:
            value = resolve_secret(value, table, key)
            if problem := secret_problem(name, key, value, opt):
                raise table.error(problem.bare, key, problem.hint)
            secrets.append(value)
        options[key] = value
    try:
        connector.check_options(base_url, options)
    except OptionError as exc:
        raise table.error(exc.bare, exc.key, exc.hint) from None
    streams = table.strings("streams", connector.streams)
    unknown = [s for s in streams if s not in connector.streams]
    if unknown:
        offered = ", ".join(connector.streams) or "none"
        raise table.error(
            f"{name} offers no {unknown[0]!r} stream", "streams", hint=f"it offers: {offered}"
        )
    vdelivery = _delivery(table, delivery)
    table.check_unknown()
    return VendorConfig(
        name=name,
        base_url=base_url,
        mapping=mapping,
        options=options,
        delivery=vdelivery,
        batch_size=batch_size,
        secrets=tuple(secrets),
        streams=tuple(dict.fromkeys(streams)),
    )
