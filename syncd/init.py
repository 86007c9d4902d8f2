"""`syncd init`: a first, commented `syncd.toml` and one mapping per vendor, from a CRM
export's header.

The header is read by `syncd.source` exactly as a sync reads it (BOM, sniffed delimiter,
encoding: UTF-8, else cp1252 when that is what decodes the header and the first rows). Its
columns are recognised by the names HubSpot, Salesforce, Zoho, Pipedrive and Excel lists
give them (`ROLES`, compared without case, spaces or punctuation), and each named vendor's
mapping takes what fills its fields. What an export cannot tell (a vendor's program,
campaign or trigger id) is written as a valid placeholder marked `CHANGE ME`, every secret
as `env:NAME`; so `syncd check` passes as soon as those variables are set. Nothing is ever
overwritten: every file is checked before the first is written; each is written whole
before it has its name, the config last, so a killed init leaves no half file and no config
without its mappings, and the same init run again finishes it.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from syncd.config import SourceConfig, encoding_problem
from syncd.errors import SourceError, SyncdError
from syncd.source import Export, defect
from syncd.vendors import REGISTRY


def _pipedrive(*names: str) -> tuple[str, ...]:
    """Pipedrive's person-export headers, bare and with its entity prefix."""
    return tuple(n for name in names for n in (name, f"Person - {name}"))


# What a column means, by the names CRMs and spreadsheets give it, best first; compared by
# `norm`, so MailingCity is Mailing City and E-mail is Email. HubSpot's contact export
# (Record ID, Email, Phone Number, Mobile Phone Number, Preferred language, Street Address,
# State/Region, Postal Code), Salesforce's report labels (Contact ID, Mobile, Mailing City,
# Mailing Zip/Postal Code) and Data Loader's API names (ID, FIRSTNAME, MOBILEPHONE,
# LANGUAGES__C), Zoho CRM's (Record Id, Mobile, Mailing Zip, Modified Time), Pipedrive's
# person export (ID, Name, Email - Work, Phone - Mobile, with or without "Person - "), and
# hand-made Excel lists (E-mail, GSM; in English, Dutch, French or German).
ROLES: dict[str, tuple[str, ...]] = {
    "key": (
        "Record ID",
        "Contact ID",
        *_pipedrive("ID"),
        "Lead ID",
        "Customer ID",
        "Customer Number",
        "Client ID",
        "External ID",
        "VID",
        "Klantnummer",
        "Numéro de client",
        "Kundennummer",
    ),
    "email": (
        "Email",
        "Email Address",
        *_pipedrive("Email - Work", "Email - Home", "Email - Other"),
        "Person - Email",
        "Work Email",
        "Primary Email",
        "Business Email",
        "Email 1",
        "E-mailadres",
        "Adresse e-mail",
        "Courriel",
        "E-Mail-Adresse",
        "Mail",
    ),
    "first": (
        "First Name",
        "Person - First name",
        "Given Name",
        "First",
        "Forename",
        "Voornaam",
        "Prénom",
        "Vorname",
    ),
    "last": (
        "Last Name",
        "Person - Last name",
        "Surname",
        "Family Name",
        "Last",
        "Achternaam",
        "Familienaam",
        "Nom de famille",
        "Nom",
        "Nachname",
    ),
    "name": ("Full Name", *_pipedrive("Name"), "Contact Name", "Naam", "Nom complet"),
    "mobile": (
        "Mobile Phone Number",
        "Mobile",
        "MobilePhone",
        "Mobile Number",
        *_pipedrive("Phone - Mobile"),
        "Cell",
        "Cell Phone",
        "GSM",
        "Mobiel",
        "Mobiel nummer",
        "Portable",
        "Téléphone portable",
        "Handy",
        "Mobilnummer",
    ),
    "phone": (
        "Phone Number",
        *_pipedrive("Phone", "Phone - Work", "Phone - Home", "Phone - Other"),
        "Business Phone",
        "Work Phone",
        "Home Phone",
        "Telephone",
        "Telephone Number",
        "Tel",
        "Telefoon",
        "Telefoonnummer",
        "Téléphone",
        "Telefon",
        "Telefonnummer",
    ),
    "language": (
        "Preferred Language",
        "Language",
        "Languages",
        "Languages__c",
        "Language Code",
        "Locale",
        "Taal",
        "Langue",
        "Sprache",
    ),
    "city": (
        "City",
        "Mailing City",
        "Town",
        "Stad",
        "Gemeente",
        "Woonplaats",
        "Ville",
        "Stadt",
        "Ort",
    ),
    "postcode": (
        "Postal Code",
        "Zip",
        "Zip Code",
        "Mailing Zip/Postal Code",
        "MailingPostalCode",
        "Mailing Zip",
        "Postcode",
        "Code postal",
        "PLZ",
        "Postleitzahl",
    ),
    "street": (
        "Street Address",
        "Mailing Street",
        "Street",
        "Address",
        "Adres",
        "Straat",
        "Adresse",
        "Rue",
        "Straße",
    ),
    "region": (
        "State/Region",
        "Mailing State/Province",
        "Mailing State",
        "State",
        "Province",
        "Region",
        "Provincie",
    ),
    # change on every export without meaning anything: suggested for ignore_columns
    "volatile": (
        "Last Activity Date",
        "Last Modified Date",
        "SystemModstamp",
        "Last Modified",
        "Modified Time",
        "Last Activity Time",
        "Last Contacted",
        *_pipedrive("Update time"),
        "Updated At",
    ),
}
WHAT = {  # a role, in a sentence
    "key": "a unique contact id",
    "email": "an email",
    "first": "a first name",
    "last": "a last name",
    "name": "a full name",
    "mobile": "a mobile phone",
    "phone": "a phone",
    "language": "a language",
    "city": "a city",
    "postcode": "a postcode",
    "street": "a street address",
    "region": "a state or province",
}


def norm(name: str) -> str:
    """A header name without case, spaces, underscores or punctuation."""
    return "".join(c for c in name.casefold() if c.isalnum())


# normalised name → (role, rank): the lower the rank, the likelier the column
ALIASES = {norm(n): (role, rank) for role, names in ROLES.items() for rank, n in enumerate(names)}
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class VendorPlan:
    """What init writes for one vendor."""

    base_url: str
    # each vendor field and the roles that may fill it, best first
    fields: tuple[tuple[str, tuple[str, ...]], ...]
    # groups of fields of which the mapping needs one (what load or the connector refuses)
    needs: tuple[tuple[str, ...], ...] = ()
    # required options an export cannot tell: option → (TOML value, where to find it)
    placeholders: dict[str, tuple[str, str]] = field(default_factory=dict)
    note: str = ""  # said above [fields]


PLANS = {
    "esputnik": VendorPlan(
        "https://esputnik.com",
        (
            ("email", ("email",)),
            ("sms", ("mobile", "phone")),
            ("firstName", ("first",)),
            ("lastName", ("last",)),
            ("externalCustomerId", ("key",)),
            ("languageCode", ("language",)),
            ("address.town", ("city",)),
            ("address.postcode", ("postcode",)),
            ("address.address", ("street",)),
            ("address.region", ("region",)),
        ),
        needs=(("email", "sms"),),
        note="languageCode takes a code (en, nl): check the column holds codes, not names. "
        "[metadata] takes custom fields by their numeric id.",
    ),
    "signalvine": VendorPlan(
        "https://theseus-api.signalvine.com",
        (
            ("customer_id", ("key",)),
            ("phone", ("mobile", "phone")),
            ("first_name", ("first",)),
            ("last_name", ("last",)),
            ("email", ("email",)),
        ),
        needs=(("customer_id",), ("phone",)),
        placeholders={
            "program": (f'"{ZERO_GUID}"', "the program id, from Programs → Program Settings")
        },
        note="the names are program variables: keep those your program has (`syncd check "
        "--online` compares them with the program's schema).",
    ),
    "hellocustomer": VendorPlan(
        "https://api.hellocustomer.com",
        (
            ("email", ("email",)),
            ("firstName", ("first",)),
            ("lastName", ("last",)),
            ("phoneNumber", ("mobile", "phone")),
            ("language", ("language",)),
        ),
        needs=(("email",),),
        placeholders={
            "campaign": (
                f'"{ZERO_GUID}"',
                "the touchpoint's CampaignUniqueID, from its General Settings",
            )
        },
        note="the CRM key is always sent as custom_UniqueID. [metadata] adds keyValues.",
    ),
    "dropthought": VendorPlan(
        "https://api.dropthought.com",
        (("email", ("email",)), ("phone", ("mobile", "phone")), ("name", ("name", "first"))),
        needs=(("email", "phone"),),
        placeholders={
            "email": ('"CHANGE-ME@example.com"', "the registered admin user's email"),
            "participant_group": (
                f'"{ZERO_GUID}"',
                "the participant group uuid, from Dropthought's customer success team",
            ),
        },
        note="[metadata] names must be metadata names of the participant list, as spelled "
        "in Dropthought.",
    ),
    "altcraft": VendorPlan(
        "https://ru.altkraft.com",
        (("email", ("email",)), ("phone", ("mobile", "phone"))),
        needs=(("email", "phone"),),
        placeholders={
            "trigger_id": ("0", "the trigger campaign's number, from the campaign in Altcraft")
        },
        note="only the field `matching` names is sent (Altcraft holds the profile); init "
        "maps email, else phone. [metadata] takes content.<name> and custom_data.<name>.",
    ),
}


@dataclass(frozen=True)
class Found:
    """An export's header as syncd reads it, and the columns init recognised in it."""

    path: Path
    header: list[str]
    delimiter: str
    encoding: str
    key: str
    other_keys: list[str]  # other columns that look like a unique id
    roles: dict[str, list[str]]  # role → its columns present, best first


@dataclass(frozen=True)
class Draft:
    """One vendor's mapping as init writes it."""

    vendor: str
    fields: dict[str, str]
    missing: list[str]  # needed groups with no column, e.g. "email or sms"
    absent: list[str]  # optional fields with no column
    unused: list[str]  # export columns (the key aside) this mapping does not read


def read_export(path: Path, key: str | None, encoding: str | None) -> Found:
    """Read the export's header (and its first rows, to settle the encoding) and recognise
    its columns; raise SyncdError when no key column can be told."""
    first: SourceError | None = None
    found: Found | None = None
    fewest = 0  # rows `found` quarantines
    for enc in (encoding,) if encoding else ("utf-8", "cp1252"):
        try:
            with Export(
                path, SourceConfig(path=str(path), key="", encoding=enc), header_only=True
            ) as export:
                header, delimiter = export.header, export.delimiter
        except SourceError as exc:
            first = first or exc
            continue
        roles = recognise(header)
        chosen, others = pick_key(path, header, roles, key)
        cfg = SourceConfig(path=str(path), key=chosen, encoding=enc, delimiter=delimiter)
        # the whole reader, with the key it will run with (duplicate columns, say, refused)
        with Export(path, cfg, force=True) as export:
            rows = islice(export.rows(lambda _bad: None), 1000)
            bad = sum(1 for _line, row in rows if defect(row, header, enc))
        candidate = Found(path, header, delimiter, enc, chosen, others, roles)
        if not bad:
            return candidate
        if found is None or bad < fewest:  # (a cp1252 export with a row pasted in as UTF-8)
            found, fewest = candidate, bad
    if found is not None:  # no encoding decodes every row: syncd quarantines those rows
        return found
    assert first is not None
    raise first


def recognise(header: Sequence[str]) -> dict[str, list[str]]:
    """Each role's columns in the header, best first."""
    ranked: dict[str, list[tuple[int, str]]] = {}
    for column in header:
        if (hit := ALIASES.get(norm(column))) is not None:
            ranked.setdefault(hit[0], []).append((hit[1], column))
    return {role: [c for _r, c in sorted(cols)] for role, cols in ranked.items()}


def pick_key(
    path: Path, header: Sequence[str], roles: dict[str, list[str]], key: str | None
) -> tuple[str, list[str]]:
    """The key column (`key` if given, matched like the rest) and the other candidates."""
    candidates = roles.get("key", [])
    if key is not None:
        named = [c for c in header if c == key] or [c for c in header if norm(c) == norm(key)]
        if not named:
            raise SyncdError(
                f"export {path}: no column {key!r}",
                hint="--key takes one of: " + ", ".join(repr(c) for c in header[:30]),
            )
        return named[0], [c for c in candidates if c != named[0]]
    if not candidates:
        raise SyncdError(
            f"export {path}: no column looks like a unique contact id "
            f"({', '.join(ROLES['key'][:5])}, …), so init cannot pick the key",
            hint="pass --key COLUMN naming the CRM's unique id column, one of: "
            + ", ".join(repr(c) for c in header[:30]),
        )
    return candidates[0], candidates[1:]


def map_vendor(vendor: str, found: Found) -> Draft:
    """The vendor's fields filled from the recognised columns."""
    plan = PLANS[vendor]
    best = {role: cols[0] for role, cols in found.roles.items()}
    best["key"] = found.key
    fields: dict[str, str] = {}
    absent = []
    for name, roles in plan.fields:
        column = next((best[r] for r in roles if r in best), None)
        if column is None:
            absent.append(f"{name} (no column looks like {' or '.join(WHAT[r] for r in roles)})")
        elif vendor != "altcraft" or not fields:  # Altcraft sends one matching field
            fields[name] = column
    missing = [" or ".join(g) for g in plan.needs if not any(f in fields for f in g)]
    used = set(fields.values()) | {found.key}
    unused = [c for c in found.header if c not in used]
    return Draft(vendor, fields, missing, absent, unused)


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; DEL must be escaped too)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _listed(names: Iterable[str]) -> str:
    return ", ".join(map(_q, names)) or "none"


def _wrapped(prefix: str, text: str) -> list[str]:
    """`text` as comment lines, the first starting with `prefix`."""
    return textwrap.wrap(
        prefix + text,
        width=88,
        initial_indent="# ",
        subsequent_indent="#   ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _source_path(export: Path, folder: Path) -> str:
    """The export as the config names it: relative when it is under the config's folder."""
    path, base = export.resolve(), folder.resolve()
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def config_text(found: Found, folder: Path, mappings: Sequence[Draft]) -> str:
    """The commented `syncd.toml`."""
    volatile = found.roles.get("volatile", [])
    enc_note = (
        "the export's encoding; a BOM is stripped either way"
        if found.encoding == "utf-8"
        else "the export's encoding: it is not valid UTF-8"
    )
    lines = [
        f"# syncd.toml, written by `syncd init` from {_q(str(found.path))}.",
        "# Values are what init found in the export's header, or syncd's defaults. Lines",
        "# marked CHANGE ME hold placeholders for what an export cannot tell (a vendor's",
        "# ids): replace them before the first `syncd sync`. Secrets are read from the",
        "# environment (env:NAME); under systemd prefer credential:NAME (LoadCredential=).",
        "# The README's Configuration section lists every key.",
        "",
        "[source]",
        "# the export; a glob such as exports/contacts-*.csv reads the newest settled match",
        f"path = {_q(_source_path(found.path, folder))}",
        "# the CRM's unique id column"
        + (f" (other candidates: {_listed(found.other_keys)})" if found.other_keys else ""),
        f"key = {_q(found.key)}",
        f"# {enc_note}",
        f"encoding = {_q(found.encoding)}",
        "# found by the reader's sniffer; pinned so every run reads the export the same way",
        f"delimiter = {_q(found.delimiter)}",
        "# max_drop = 0.10                  # refuse an export that lost more than 10% of contacts",
        "# settle_seconds = 30              # the export must be unchanged this long to be read",
        '# phone_region = "BE"              # for national phone numbers (0470 12 34 56)',
        "# volatile columns, kept out of the store (no vendor is sent a change in them anyway):",
        f"# ignore_columns = [{', '.join(map(_q, volatile or ['Last Activity Date']))}]",
        "",
        "[store]",
        'path = "syncd.db"',
        "",
        "[schedule]",
        '# the zone the crontab lines are read in, e.g. "Europe/Brussels"',
        'timezone = "UTC"',
        'reconcile = "0 2 * * *"',
        'pull = "*/30 * * * *"',
        "",
        "[suppression]",
        "unsubscribed = true               # never trigger anyone who unsubscribed anywhere",
        "min_days_between_surveys = 30     # across all trigger vendors",
        "# max_resurvey = 0.50             # refuse surveying again over half the contacts",
    ]
    for mapping in mappings:
        lines += ["", *vendor_table(mapping)]
    return "\n".join(lines) + "\n"


def env_name(vendor: str, key: str) -> str:
    """The environment variable a secret is read from: ESPUTNIK_API_KEY."""
    return f"{vendor}_{key}".upper()


def vendor_table(mapping: Draft) -> list[str]:
    """One `[vendors.<name>]` table: base_url, mapping, the secrets as env:, placeholders."""
    name, plan, connector = mapping.vendor, PLANS[mapping.vendor], REGISTRY[mapping.vendor]
    lines = [
        f"[vendors.{name}]",
        "# scheme://host[:port] only: the connector adds the documented paths"
        + ("; your account's host" if name == "altcraft" else ""),
        f"base_url = {_q(plan.base_url)}",
        f'mapping = "mappings/{name}.toml"',
    ]
    for key, opt in connector.options.items():
        if opt.secret:
            var = env_name(name, key)
            lines += [f"# {opt.help}: set the environment variable {var}", f'{key} = "env:{var}"']
        elif opt.required:
            value, where = plan.placeholders[key]
            lines += [
                *_wrapped(
                    "CHANGE ME: ",
                    f"{where}. An export does not say; this placeholder "
                    "only lets `syncd check` pass until you replace it.",
                ),
                f"{key} = {value}",
            ]
    if name == "altcraft":
        matching = next(iter(mapping.fields), "email")
        lines += ["# the profile field Altcraft matches on (mapped in the mapping)"]
        lines += [f"matching = {_q(matching)}"]
    if name == "hellocustomer":
        default = 'default_language = "EN"'
        if "language" in mapping.fields:
            lines += [
                "# without it, a contact whose language is empty or unknown is not surveyed",
                "# (quarantined for Hello Customer):",
                f"# {default}",
            ]
        else:
            lines += [
                "# CHANGE ME if your contacts are not English: no column holds a language",
                default,
            ]
    return lines


def mapping_text(found: Found, mapping: Draft) -> str:
    """The commented `mappings/<vendor>.toml`."""
    name, plan = mapping.vendor, PLANS[mapping.vendor]
    lines = [
        f"# {name} mapping, written by `syncd init` from the header of {_q(found.path.name)}.",
        f"# [fields]: the {name} field = the export column. syncd/mappings/{name}.toml",
        "# documents every field.",
        *_wrapped("", plan.note),
    ]
    if mapping.missing:
        lines += _wrapped(
            "REQUIRED, not mapped: ",
            f"{', '.join(mapping.missing)}. No column looks like one: name it below, or "
            "`syncd check` refuses this mapping.",
        )
    if mapping.absent:
        lines += _wrapped("Not mapped: ", "; ".join(mapping.absent) + ".")
    lines += _wrapped("Export columns not used here: ", _listed(mapping.unused) + ".")
    lines += ["", "[fields]"]
    lines += [f"{_q(field_)} = {_q(column)}" for field_, column in mapping.fields.items()]
    lines += [f'# {group.split(" or ")[0]} = "?"   # REQUIRED' for group in mapping.missing]
    if REGISTRY[name].kind == "trigger":
        lines += [
            "",
            "[trigger]",
            "# survey every contact new to this vendor; on the first run, `syncd sync",
            "# --baseline` records the export as sent, or everyone in it is new",
            "on_new = true",
            '# columns whose change sends again, e.g. ["Closed Date"]; init cannot tell them',
            "on_change = []",
        ]
    return "\n".join(lines) + "\n"


def vendor_names(given: Sequence[str]) -> list[str]:
    """`--vendors a,b --vendors c` → the names, checked against the registry."""
    names = [n.strip() for item in given for n in item.split(",") if n.strip()]
    if not names:
        raise SyncdError(
            "name the vendors to set up",
            hint="--vendors " + ",".join(REGISTRY) + " (any of them; each one written is a "
            "vendor syncd will send to)",
        )
    for n in names:
        if n not in REGISTRY:
            raise SyncdError(f"unknown vendor {n!r}", hint="vendors are: " + ", ".join(REGISTRY))
    return list(dict.fromkeys(names))


def write_new(files: dict[Path, str], last: Path | None = None) -> set[Path]:
    """Write every file, or none: refuse if any exists, and remove those written so far
    when one cannot be. Each is written whole before it has its name (`_write_whole`), and
    `last` (the config) after all the others, so a kill (SIGKILL, power loss) leaves no
    half file and no config without its mappings. A file that already holds exactly what
    would be written is not in the way, and left as it is: the same init, killed part-way,
    run again finishes. Returns the files it wrote."""
    existing, todo = [], {}
    for path, text in files.items():
        if not os.path.lexists(path):
            todo[path] = text
        elif not _holds(path, text):
            existing.append(str(path))
    if existing:
        raise SyncdError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: init "
            "never overwrites a file; nothing was written",
            hint="move them away, or pass --dir to write elsewhere",
        )
    written: list[Path] = []
    try:
        for path in sorted(todo, key=lambda p: p == last):
            _write_whole(path, todo[path])
            written.append(path)
    except OSError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise SyncdError(
            f"cannot write {exc.filename}: {exc.strerror}; nothing was written"
        ) from None
    return set(written)


def _holds(path: Path, text: str) -> bool:
    """Whether `path` is a file holding exactly `text`, as init writes it."""
    try:
        return path.is_file() and path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def _write_whole(path: Path, text: str) -> None:
    """Make `path`, a new file holding `text`: written and synced under no name (Linux's
    O_TMPFILE; elsewhere a hidden temporary name), then linked to `path`, which fails
    rather than replace a file made since (EEXIST). A kill leaves the whole file or none."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    unnamed, fd = getattr(os, "O_TMPFILE", None), -1
    if unnamed is not None:
        try:
            fd = os.open(path.parent, unnamed | os.O_WRONLY, 0o666)
        except OSError as exc:  # EOPNOTSUPP, EISDIR, EINVAL: this file system has none
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise OSError(exc.errno, exc.strerror, str(path)) from None
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if fd == -1:
            _write_named(path, data)
        else:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
                # linkat(2) through /proc names the unnamed file (open(2), O_TMPFILE)
                os.link(f"/proc/self/fd/{fd}", path.name, dst_dir_fd=folder)
            except FileExistsError:
                raise FileExistsError(errno.EEXIST, "made since init looked", str(path)) from None
            except FileNotFoundError:  # no /proc (a chroot): a named temporary file
                _write_named(path, data)
            finally:
                os.close(fd)
        os.fsync(folder)  # the new name is on disk
    finally:
        os.close(folder)


def _write_named(path: Path, data: bytes) -> None:
    """`_write_whole` without O_TMPFILE: a hidden temporary file, linked, then unnamed (a
    kill between the two leaves that hidden file, and the whole one)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "made since init looked", str(path)) from None
    finally:
        with suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def init(
    export: Path,
    vendors: Sequence[str],
    folder: Path,
    *,
    key: str | None = None,
    encoding: str | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Write `folder/syncd.toml` and `folder/mappings/<vendor>.toml` from the export."""
    names = vendor_names(vendors)
    if encoding is not None and (problem := encoding_problem(encoding)):
        raise SyncdError(f"--encoding: {problem[0]}", hint=problem[1])
    found = read_export(export, key, encoding)
    mappings = [map_vendor(n, found) for n in names]
    files = {folder / "syncd.toml": config_text(found, folder, mappings)}
    files |= {folder / "mappings" / f"{m.vendor}.toml": mapping_text(found, m) for m in mappings}
    for text in files.values():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # the header is decoded strictly: it is the export's name
            shown = str(os.fsencode(found.path))[2:-1]
            raise SyncdError(
                f"export {shown}: its name is not UTF-8, and a TOML config can name only UTF-8 "
                "paths; nothing was written",
                hint="rename the export (and have the CRM's job write UTF-8 names), then run "
                "init again",
            ) from None
    wrote = write_new(files, last=folder / "syncd.toml")

    def said(path: Path) -> str:
        return f"wrote {path}" if path in wrote else f"{path} unchanged: it holds what init writes"

    echo(
        f"export {found.path}: {len(found.header)} columns, delimiter {found.delimiter!r}, "
        f"encoding {found.encoding}, key {found.key!r}"
        + (
            f" (other candidates: {', '.join(map(repr, found.other_keys))})"
            if found.other_keys
            else ""
        )
    )
    echo(said(folder / "syncd.toml"))
    for m in mappings:
        shown = ", ".join(f"{f} = {c!r}" for f, c in m.fields.items())
        echo(f"{said(folder / 'mappings' / (m.vendor + '.toml'))}: {shown}")
        for group in m.missing:
            echo(f"  REQUIRED, no column found: {group}: name one in the mapping")
        for absent in m.absent:
            echo(f"  not mapped: {absent}")
    used = {c for m in mappings for c in m.fields.values()} | {found.key}
    echo(
        "columns no mapping uses: "
        + (", ".join(repr(c) for c in found.header if c not in used) or "none")
    )
    secrets = [env_name(n, k) for n in names for k, o in REGISTRY[n].options.items() if o.secret]
    todo = [f"[vendors.{n}] {k}" for n in names for k in PLANS[n].placeholders]
    todo += [
        "[vendors.hellocustomer] default_language (if not English)"
        for m in mappings
        if m.vendor == "hellocustomer" and "language" not in m.fields
    ]
    echo("next:")
    echo(f"  set {', '.join(secrets)}")
    if todo:
        echo(f"  replace the CHANGE ME placeholders: {', '.join(todo)}")
    echo(f"  syncd --config {folder / 'syncd.toml'} check")
    if any(REGISTRY[n].kind == "trigger" for n in names):
        echo("  first run: `syncd sync --baseline`, or every contact is new to the survey vendors")
