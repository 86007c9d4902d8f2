"""A row as each vendor sees it: normalised, projected onto the vendor's mapping, digested.

A function of the row and the configuration only (no store, no HTTP). Upsert vendors'
digests cover every mapped field; trigger vendors' only the `[trigger] on_change`
columns, so other changes never send a survey.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import phonenumbers
from sqlite_utils.utils import hash_record

from syncd.config import Config, SourceConfig, VendorConfig
from syncd.errors import ConfigError
from syncd.source import Bad, Export, defect
from syncd.vendors.base import Connector, Contact

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def config_salt(cfg: Config, export: Export, names: list[str]) -> int:
    """Changes whenever what the vendors see could change: mappings, vendors, key, ignores,
    and the export's header (`names`, see `salted`) and delimiter (the same bytes under
    other column names, or split on another delimiter, are other cells)."""
    sig = {
        "header": names,
        "delimiter": export.delimiter,
        "key": cfg.source.key,
        "ignore": cfg.source.ignore_columns,
        "region": cfg.source.phone_region,
        "digest": DIGEST_VERSION,
        "vendors": {
            name: [
                dict(v.mapping.fields),
                dict(v.mapping.metadata),
                repr(v.mapping.trigger),
                dict(v.mapping.types),
            ]
            for name, v in sorted(cfg.vendors.items())
        },
    }
    salt = hashlib.blake2b(json.dumps(sig, sort_keys=True).encode(), digest_size=8).digest()
    return int.from_bytes(salt, "little")


def salted(cfg: Config, header: list[str], before: list[str] | None) -> list[str]:
    """The header as the fingerprints are salted with it, given the names they were salted
    with `before`: a column nothing reads (not the key, not ignored, in no mapping) keeps
    its name from then, so renaming it in the CRM re-examines no row. Its name only labels
    `contacts.attributes`, which the diff renames in place (`renamed`). A column added,
    dropped or moved changes the rows' bytes anyway: then it is the header as it is."""
    if before is None or len(before) != len(header):
        return list(header)
    read = {cfg.source.key, *cfg.source.ignore_columns}
    read.update(c for v in cfg.vendors.values() for c in v.mapping.columns)
    return [new if new in read else old for old, new in zip(before, header, strict=True)]


def renamed(before: list[str] | None, header: list[str]) -> dict[str, str]:
    """The columns renamed since the header `contacts.attributes` are keyed by (`before`),
    old name → new; none when a column was added, dropped or moved (every row's bytes
    change then, so every row is written again)."""
    if before is None or len(before) != len(header):
        return {}
    return {old: new for old, new in zip(before, header, strict=True) if old != new}


# Names how `Projector.digest` turns a row into a hash: bump it whenever the same row and
# mapping would hash differently (the digest itself, the normalisation, a connector's
# `shape` or `field_types`). Every stored hash is then another definition's: trigger
# vendors are re-baselined rather than surveying everyone, upsert vendors are sent again
# (from version 1, whose digests are converted, nobody is: see `digest`).
DIGEST_VERSION = 2


def digest(data: bytes) -> int:
    """The first 64 bits of the SHA-1 of `data`, a signed integer (SQLite stores it in 8
    bytes): of an upsert's payload (`Projector.view`), of a trigger vendor's watched
    columns as sorted-key JSON (`Projector.watched`).

    Version 2. Version 1 was sqlite-utils' `hash_record` of the mapped values (the whole
    SHA-1 as 40 hex digits, of stdlib JSON): building that record and its JSON beside
    the payload's cost twice as much a row, and 33 bytes more in each `vendor_state` and
    `deliveries` row. A store's text digests (version 1's, and version 2's as the
    releases before m012 stored it: `legacy`) are converted as the diff meets them
    (`Redefinitions.convert`): nobody is sent anything for it. 64 bits are
    plenty: a digest is only ever compared with the same contact's previous one at the
    same vendor.
    """
    return int.from_bytes(hashlib.sha1(data).digest()[:8], "big", signed=True)


def legacy(record: Mapping[str, str], like: str = "") -> str:
    """The digest an older syncd stored for a record, in the form of `like` (a stored
    one), to recognise it: the only digests that are text. Version 1 is `hash_record` (40
    hex digits); the releases of version 2 before m012 (b7b5713 to b3b5a18) stored the
    same record's first 64 bits of SHA-1 over sorted-key orjson as 16 hex digits, and
    recorded `digest: 2`, so only the form tells them apart."""
    if len(like) == TEXT_V2_LENGTH:
        body = orjson.dumps(dict(record), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha1(body).digest()[:8].hex()
    return hash_record(dict(record))


TEXT_V2_LENGTH = 16  # a version-2 digest stored as text, before m012: 16 hex digits


# --- normalisation -------------------------------------------------------------------------
def normalise_email(value: str) -> str:
    return value.strip().lower()


_PHONE_NOISE = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


# each vendor that maps a phone normalises the row's value again: hits come within a row,
# so a small cache serves (65,536 entries held ~13 MB at a first sync of unique phones)
@functools.lru_cache(maxsize=1024)
def normalise_phone(value: str, region: str | None) -> str | None:
    """E.164, or None when the value is not a possible phone number.

    International shapes (`+32 470 12 34 56`, `0032470…`) and national ones in a region
    whose trunk prefix is a plain `0` (`0470123456`) are folded without the full parser;
    the others (`(555) 010-1234`, regions with carrier codes) go through `phonenumbers`.
    Both give the same answer (tests/test_phones.py holds them to it).
    """
    compact = _PHONE_NOISE.sub("", value)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _E164.match(compact):
        return compact
    if region and (trunk := _trunk(region)) and compact.isascii() and compact.isdigit():
        country, prefix, international, general = trunk
        national = compact.removeprefix(prefix)
        if (
            len(national) < len(compact)
            and national[:1] not in ("", "0")
            and not (international and international.match(compact))
            and general.fullmatch(national)  # else the parser keeps the prefix
        ):
            number = phonenumbers.PhoneNumber(country_code=country, national_number=int(national))
            return f"+{country}{national}" if phonenumbers.is_possible_number(number) else None
    return parse_phone(value, region)


def parse_phone(value: str, region: str | None) -> str | None:
    """E.164 through `phonenumbers`' full parser, or None."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


@functools.cache
def _trunk(region: str) -> tuple[int, str, re.Pattern[str] | None, re.Pattern[str]] | None:
    """(country code, trunk prefix, international prefix, national number pattern) for a
    region where a national number is the trunk prefix and the number, nothing else."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region.upper())
    if meta is None or not meta.national_prefix or not meta.national_prefix.isdigit():
        return None
    if meta.national_prefix_transform_rule or meta.leading_digits:
        return None
    if meta.national_prefix_for_parsing not in (None, meta.national_prefix):
        return None
    pattern = meta.general_desc.national_number_pattern if meta.general_desc else None
    if meta.country_code is None or not pattern:
        return None
    international = re.compile(meta.international_prefix) if meta.international_prefix else None
    return meta.country_code, meta.national_prefix, international, re.compile(pattern)


class Projector:
    """Projects an export row onto one vendor's mapping, normalised."""

    def __init__(
        self, vendor: VendorConfig, connector: Connector, header: list[str], region: str | None
    ) -> None:
        self.vendor = vendor
        self.connector = connector
        self.region = region
        mapping = vendor.mapping

        def index(table: str, name: str, column: str) -> int:
            if column not in header:
                folded = {h.casefold(): h for h in header}
                near = [folded[column.casefold()]] if column.casefold() in folded else []
                near = near or difflib.get_close_matches(column, header, 1)
                raise ConfigError(
                    f"column {column!r} is not in the export header",
                    file=str(mapping.path),
                    table=table,
                    key=name,
                    hint=(f"did you mean {near[0]!r}? " if near else "")
                    + "export columns: "
                    + ", ".join(repr(h) for h in header[:20])
                    + (f", … ({len(header)} in all)" if len(header) > 20 else ""),
                )
            return header.index(column)

        kinds = connector.value_kinds()
        self.fields = [
            (name, col, index("fields", name, col), kinds.get(name))
            for name, col in mapping.fields.items()
        ]
        self.metadata = [
            (name, col, index("metadata", name, col), kinds.get(name))
            for name, col in mapping.metadata.items()
        ]
        trigger = mapping.trigger
        self.trigger = (
            [index("trigger", "on_change", col) for col in trigger.on_change] if trigger else None
        )

    def project(self, key: str, row: list[str]) -> Contact | str:
        """The vendor's view of the row, or the reason it cannot be sent to this vendor."""
        fields: dict[str, str] = {}
        metadata: dict[str, str] = {}
        for names, into in ((self.fields, fields), (self.metadata, metadata)):
            for name, col, i, kind in names:
                value = row[i].strip()
                if value and kind == "email":
                    value = normalise_email(value)
                    if not EMAIL_RE.match(value) or not value.isprintable():  # `\u200b`
                        return f"invalid email {row[i].strip()!r} in column {col!r}"
                elif value and kind == "phone":
                    phone = normalise_phone(value, self.region)
                    if phone is None:
                        hint = (
                            ""
                            if self.region
                            else " (set [source] phone_region for national numbers)"
                        )
                        return f"invalid phone {value!r} in column {col!r}{hint}"
                    value = phone
                into[name] = value
        return self.connector.shape(Contact(key=key, fields=fields, metadata=metadata))

    def view(self, contact: Contact, row: list[str]) -> tuple[int, str]:
        """The contact's digest (what must differ for this vendor to be sent it again)
        and its payload (the JSON a delivery holds and the connector is sent, with sorted
        keys): a trigger vendor's digest is of its `on_change`
        columns only (`watched`), so other changes never send a survey."""
        body = orjson.dumps(
            {"fields": dict(contact.fields), "metadata": dict(contact.metadata)},
            option=orjson.OPT_SORT_KEYS,
        )
        return (digest(body) if self.trigger is None else self.watched(row)), body.decode()

    def digested(self, key: str, row: list[str]) -> tuple[int, str] | None:
        """(digest, payload) of a stored row (`stored_row`), None when it cannot be sent
        to this vendor; a trigger vendor's from its watched columns alone (no payload)."""
        if self.trigger is not None:
            return self.watched(row), ""
        projected = self.project(key, row)
        return None if isinstance(projected, str) else self.view(projected, row)

    def legacy(self, data: str, row: list[str], like: str = "") -> str:
        """The text digest an older syncd made of a payload (`view`) and its row: of
        version 1, or of `like`'s form (`project.legacy`)."""
        if self.trigger is not None:
            return legacy({str(n): row[i].strip() for n, i in enumerate(self.trigger)}, like)
        body = orjson.loads(data)
        record = {f"f.{k}": v for k, v in body["fields"].items()}
        record.update({f"m.{k}": v for k, v in body["metadata"].items()})
        return legacy(record, like)

    def watched(self, row: list[str]) -> int:
        """A trigger vendor's digest, from the row alone."""
        assert self.trigger is not None
        watched = {str(n): row[i].strip() for n, i in enumerate(self.trigger)}
        return digest(orjson.dumps(watched, option=orjson.OPT_SORT_KEYS))

    @property
    def on_new(self) -> bool:
        """Whether a contact new to the vendor is sent (a trigger vendor's `on_new`)."""
        trigger = self.vendor.mapping.trigger
        return trigger is None or trigger.on_new

    def same_before(self, row: list[str], attributes: str | None, header: list[str]) -> bool:
        """Whether a trigger vendor's watched columns hold what they held in the contact's
        previous row (its stored `attributes`), so only the definition changed, not the
        contact. A column the previous row did not have is taken as unchanged: a column
        new to the export, watched from the start, must not survey everyone."""
        if attributes is None:
            return True
        return self.watched(stored_row(attributes, header, row)) == self.watched(row)

    def sample(
        self,
        key: str,
        kind: str,
        attributes: str | None,
        header: list[str],
        payload: str,
        row: list[str],
    ) -> dict[str, Any]:
        """What the connector would send, field by field, before → after: the vendor's
        values (normalised and shaped) of the contact's previous export row (its stored
        `attributes`), None for a new contact, and of this one (`row`). A metadata name is
        shown as `name (metadata)`; a trigger vendor's watched column that changed, which
        is why it surveys, as `column (on_change)`."""
        after = orjson.loads(payload)
        before: dict[str, dict[str, Any]] = {"fields": {}, "metadata": {}}
        changes: dict[str, list[Any]] = {}
        if attributes is not None and kind == "changed":
            previous = self.project(key, stored_row(attributes, header))
            if isinstance(previous, Contact):
                before = {"fields": dict(previous.fields), "metadata": dict(previous.metadata)}
            trigger = self.vendor.mapping.trigger
            if trigger is not None:  # as `same_before` reads them: a new column unchanged
                old = stored_row(attributes, header, row)
                for col, i in zip(trigger.on_change, self.trigger or (), strict=True):
                    if old[i].strip() != row[i].strip():
                        changes[f"{col} (on_change)"] = [old[i].strip(), row[i].strip()]
        for part, suffix in (("fields", ""), ("metadata", " (metadata)")):
            for name, new in after[part].items():
                was = before[part].get(name)
                if was != new:
                    changes[name + suffix] = [was, new]
        return {"key": key, "kind": kind, "changes": changes}

    def definition(self) -> dict[str, Any]:
        """Everything `digest` depends on besides the row: when it changes, every stored
        hash of this vendor was made another way."""
        mapping = self.vendor.mapping
        if mapping.trigger is not None:
            return {"digest": DIGEST_VERSION, "on_change": list(mapping.trigger.on_change)}
        return {
            "digest": DIGEST_VERSION,
            "fields": dict(mapping.fields),
            "metadata": dict(mapping.metadata),
            "types": dict(mapping.types),
            "phone_region": self.region,
        }


def stored_row(attributes: str, header: list[str], fill: list[str] | None = None) -> list[str]:
    """A contact's stored `attributes` (its last export row, as JSON) as a row under this
    `header`: a column it did not have is `fill`'s value there, else empty."""
    before = orjson.loads(attributes)
    if fill is None:
        return [before.get(col, "") for col in header]
    return [before.get(col, value) for col, value in zip(header, fill, strict=False)]


@dataclass
class Candidate:
    """A new or changed row, prepared for comparison with the store."""

    line: int
    key: str
    row: list[str]
    text: bytes  # the change text the fingerprint is taken of
    views: dict[str, tuple[Any, str] | str]  # vendor → (digest, payload), or why not
    reach: tuple[str | None, str | None]  # normalised email and phone
    attrs: str  # the row as JSON, for `contacts.attributes`


def _repeats(row: list[str], header: list[str]) -> bool:
    """The row is the header line again (a contact named "Record ID", email "Email")."""
    cells = [cell.strip() for cell in row[: len(header)]]
    return [cells[0].removeprefix("\ufeff"), *cells[1:]] == header


def prepare(
    line: int,
    row: list[str],
    text: bytes,
    export: Export,
    projectors: Mapping[str, Projector],
    source: SourceConfig,
) -> Candidate | Bad:
    """What a new or changed row is for each vendor, or why it cannot be used at all:
    a function of the row and the configuration only."""
    key = row[export.key_index].strip()
    if not key:
        return Bad(line, None, f"empty key column {source.key!r}")
    if key.removeprefix("\ufeff") == source.key and _repeats(row, export.header):
        return Bad(
            line,
            None,
            "repeats the header line: two exports one after the other in one file (the CRM's "
            "job appended instead of replacing it?); re-export it",
        )
    problem = defect(row, export.header, source.encoding, export.key_index)
    if problem:  # held back by its key and the one it looks like: never gone (`Bad`)
        return Bad(line, key, problem)
    views: dict[str, tuple[Any, str] | str] = {}
    email = phone = None
    for name, proj in projectors.items():
        projected = proj.project(key, row)
        if isinstance(projected, str):
            views[name] = projected
            continue
        views[name] = proj.view(projected, row)
        if email is not None and phone is not None:
            continue
        for fname, kind in proj.connector.field_types.items():
            value = projected.fields.get(fname)  # the reach: any vendor's typed fields
            if value and kind == "email" and email is None:
                email = value
            elif value and kind == "phone" and phone is None:
                phone = value
    attrs = orjson.dumps(dict(zip(export.header, row, strict=False))).decode()
    return Candidate(line, key, row, text, views, (email, phone), attrs)
