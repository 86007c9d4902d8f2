"""Export × store → per-vendor deltas, recorded as `pending` deliveries before anything is sent.

Two paths per row:

- fast (`scan`): a 64-bit fingerprint of the raw row (salted with the mapping
  configuration and the export's header) is looked up, a block of rows at a time, among
  the sorted fingerprints the store holds. A hit means the row is byte-for-byte what was
  last recorded, so no vendor can need it: nothing else is done. No dict of a million
  keys is ever built.
- slow (new or changed rows only): the row is projected onto each vendor's mapping,
  normalised (trimmed, emails lower-cased, phones E.164), hashed with sqlite-utils'
  `hash_record` (`_prepare`), and compared with what the vendor acknowledged
  (`vendor_state`) and any open delivery (`_flush`). Upsert vendors hash every mapped
  field; trigger vendors hash only the `[trigger] on_change` columns, so other changes
  never send a survey.

Everything is written inside one transaction; the caller commits it, or rolls it back for a
dry run or when the truncation guard refuses the export.
"""

from __future__ import annotations

import functools
import hashlib
import json
import queue
import re
import sqlite3
import threading
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain, repeat
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np
import orjson
import phonenumbers
from sqlite_utils.utils import hash_record
from xxhash import xxh3_64_intdigest

from syncd.config import Config, SuppressionConfig, VendorConfig
from syncd.errors import ConfigError
from syncd.source import Bad, Export, defect
from syncd.state import OPEN_STATUSES, Store, iso
from syncd.vendors.base import Connector, Contact

CHUNK = 2000  # candidates compared and written at a time (3 x CHUNK SQL parameters at most)
SAMPLES = 5
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def fingerprint(text: bytes, seed: int) -> int:
    """A seeded 63-bit XXH3 of a row's text (fits a signed SQLite integer).

    XXH3 rather than a cryptographic hash: it is one C call per row, which is most of what
    keeps the fast path near a bare CSV pass; the rows are not adversarial.
    """
    return xxh3_64_intdigest(text, seed) >> 1


def config_salt(cfg: Config, export: Export) -> int:
    """Changes whenever what the vendors see could change: mappings, vendors, key, ignores,
    and the export's header and delimiter (the same bytes under other column names, or
    split on another delimiter, are other cells)."""
    sig = {
        "header": export.header,
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
    digest = hashlib.blake2b(json.dumps(sig, sort_keys=True).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


# Names how `Projector.digest` turns a row into a hash: bump it whenever the same row and
# mapping would hash differently (the digest itself, the normalisation, a connector's
# `shape` or `field_types`). Every stored hash is then another definition's: trigger
# vendors are re-baselined rather than surveying everyone, upsert vendors are sent again.
DIGEST_VERSION = 1
UNRECORDED = "no digest definition was recorded (a store from before syncd kept them)"


def redefinition(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between two digest definitions (`Projector.definition`), in a phrase."""
    labels = {
        "on_change": "[trigger] on_change",
        "fields": "[fields]",
        "metadata": "[metadata]",
        "types": "[types]",
        "phone_region": "[source] phone_region",
    }
    parts = []
    if old.get("digest") != new.get("digest"):
        parts.append(f"syncd's digest changed (version {old.get('digest')} → {new.get('digest')})")
    for name, label in labels.items():
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, dict | None) and isinstance(after, dict | None):
            before, after = before or {}, after or {}
            edits = [f"+ {k} = {v!r}" for k, v in after.items() if k not in before]
            edits += [f"- {k}" for k in before if k not in after]
            edits += [
                f"{k}: {before[k]!r} → {v!r}"
                for k, v in after.items()
                if k in before and before[k] != v
            ]
        elif isinstance(before, list | None) and isinstance(after, list | None):
            before, after = before or [], after or []
            edits = [f"+ {c!r}" for c in after if c not in before]
            edits += [f"- {c!r}" for c in before if c not in after]
            edits = edits or ["reordered"]  # the digest is positional
        else:
            edits = [f"{before!r} → {after!r}"]
        parts.append(f"{label} changed: " + ", ".join(edits))
    return "; ".join(parts)


# --- normalisation -------------------------------------------------------------------------
def normalise_email(value: str) -> str:
    return value.strip().lower()


_PHONE_NOISE = re.compile(r"[\s().\-/]")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


@functools.lru_cache(maxsize=65536)
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
                raise ConfigError(
                    f"column {column!r} is not in the export header",
                    file=str(mapping.path),
                    table=table,
                    key=name,
                    hint="export columns: " + ", ".join(repr(h) for h in header[:20]),
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
                    if not EMAIL_RE.match(value):
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

    def digest(self, contact: Contact, row: list[str]) -> str:
        """What must differ for this vendor to be sent the contact again."""
        if self.trigger is not None:
            return self.watched(row)
        record = {f"f.{k}": v for k, v in contact.fields.items()}
        record.update({f"m.{k}": v for k, v in contact.metadata.items()})
        return hash_record(record)

    def watched(self, row: list[str]) -> str:
        """A trigger vendor's digest: its `on_change` columns only, by position."""
        assert self.trigger is not None
        return hash_record({str(n): row[i].strip() for n, i in enumerate(self.trigger)})

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


# --- the plan ------------------------------------------------------------------------------
@dataclass
class VendorPlan:
    name: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    # why the stored hashes were made another way (`redefinition`), and whether this run
    # re-baselines the vendor for it (a trigger vendor, unless --no-rebaseline)
    redefined: str | None = None
    rebaseline: bool = False

    def notice(self, dry_run: bool) -> str | None:
        """The one line a digest definition change deserves, if any."""
        if self.redefined is None:
            return None
        if self.rebaseline:
            n = self.counts["rebaselined"]
            done = "would re-baseline" if dry_run else "re-baselined"
            return (
                f"{self.name}: {done} {n} contacts, surveying none: {self.redefined} "
                "(to survey them instead, apply the change with `syncd sync --no-rebaseline`)"
            )
        n = self.counts["changed"]
        sent = "surveyed" if self.kind == "trigger" else "re-sent"
        return (
            f"{self.name}: {self.redefined}: {n} contacts {'will be' if dry_run else 'are'} {sent}"
        )


@dataclass
class Plan:
    run_id: int
    export: str
    rows_read: int = 0
    quarantined: int = 0
    known: int = 0
    unchanged: int = 0
    gone: int = 0
    refused: str | None = None
    vendors: dict[str, VendorPlan] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {name: dict(v.counts) for name, v in self.vendors.items()}

    def notices(self, dry_run: bool = False) -> list[str]:
        return [n for v in self.vendors.values() if (n := v.notice(dry_run))]


class _Stored(NamedTuple):
    """A contact as the store holds it."""

    rowid: int
    rhash: int
    attributes: str
    email: str | None
    phone: str | None


@dataclass
class _Candidate:
    """A new or changed row, prepared for comparison with the store."""

    line: int
    key: str
    row: list[str]
    text: bytes  # the change text the fingerprint is taken of
    views: dict[str, tuple[str, str] | str]  # vendor → (digest, payload), or why not
    reach: tuple[str | None, str | None]  # normalised email and phone
    attrs: str  # the row as JSON, for `contacts.attributes`


class Differ:
    """Runs one diff inside an open write transaction on `store`."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        connectors: Mapping[str, Connector],
        run_id: int,
        now: datetime,
        *,
        baseline: Iterable[str] = (),
        rebaseline: bool = True,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.conn = store.conn
        self.connectors = connectors
        self.run_id = run_id
        self.now = now
        self.ts = iso(now)
        self.baseline = set(baseline)
        self.may_rebaseline = rebaseline
        self.projectors: dict[str, Projector] = {}
        self.plan: Plan = Plan(run_id=run_id, export="")

    # --- the run ---------------------------------------------------------------------
    def run(self, export: Export) -> Plan:
        plan = self.plan
        plan.export = str(export.path)
        self.salt = config_salt(self.cfg, export)
        for name, vcfg in self.cfg.vendors.items():
            self.projectors[name] = Projector(
                vcfg, self.connectors[name], export.header, self.cfg.source.phone_region
            )
            plan.vendors[name] = VendorPlan(name, self.connectors[name].kind)
        self._definitions()
        self.rowids: np.ndarray | None = None  # each known fingerprint's contact; see `_rows`
        self.renumbered = False  # a cached rowid named the wrong row: all were read again
        known = self._known()
        plan.known = len(known)
        self.known = known
        self.seen = np.zeros(len(known), dtype=np.int32)  # the line each was seen on, 0 = none
        self.replaced = np.zeros(len(known), dtype=bool)  # known rows given a new fingerprint
        self.keys: dict[int, str] = {}  # the key of each replaced known row
        self.added = array("q")  # the fingerprints written for candidates
        self.added_rows = array("q")  # and the rowids they were written to
        self.next_rowid = int(self.store.scalar("SELECT coalesce(max(rowid), 0) FROM contacts")) + 1
        self.cand_lines: dict[str, int] = {}
        self.buffer: list[_Candidate] = []
        # the diff's own writes move the generation on once, at the end (m006)
        self.conn.execute("UPDATE contacts_generation SET in_diff = 1")
        try:
            with _Writer(self.conn) as self.writer:
                self._compare(export)
            self._gone()
            self._rebaseline_absent(export.header)
        finally:
            self.conn.execute(
                "UPDATE contacts_generation SET generation = generation + 1, in_diff = 0"
            )
        for vplan in plan.vendors.values():
            if vplan.redefined == UNRECORDED and not vplan.counts["rebaselined"]:
                vplan.redefined = None  # its hashes were this definition's: nothing to say
        self._cache()
        return plan

    def _definitions(self) -> None:
        """Compare each vendor's digest definition with the one its stored hashes were made
        with, and record the current one.

        A trigger vendor whose definition changed is re-baselined (`_same_before`), unless
        `rebaseline` is off. A store from before definitions were recorded is checked the
        same way once: its hashes were made by the digest of version 1, but perhaps under
        another mapping, and only the contacts' previous rows can tell.
        """
        stored = dict(self.conn.execute("SELECT vendor, definition FROM digest_definitions"))
        for name, proj in self.projectors.items():
            new = proj.definition()
            text = orjson.dumps(new, option=orjson.OPT_SORT_KEYS).decode()
            old = stored.get(name)
            if old is not None and orjson.loads(old) == new:
                continue
            vplan = self.plan.vendors[name]
            if name in self.baseline:
                pass  # every contact is recorded as acknowledged anyway
            elif old is not None:
                vplan.redefined = redefinition(orjson.loads(old), new)
            elif self.store.scalar("SELECT 1 FROM vendor_state WHERE vendor = ? LIMIT 1", (name,)):
                vplan.redefined = UNRECORDED
            vplan.rebaseline = bool(
                vplan.redefined and proj.trigger is not None and self.may_rebaseline
            )
            self.conn.execute(
                "INSERT INTO digest_definitions (vendor, definition, recorded_at, run_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (vendor) DO UPDATE SET "
                "definition = excluded.definition, recorded_at = excluded.recorded_at, "
                "run_id = excluded.run_id",
                (name, text, self.ts, self.run_id),
            )

    def _compare(self, export: Export) -> None:
        """Every row of the export against the known ones: unchanged rows marked seen, new
        and changed ones prepared and compared with the store a chunk at a time."""
        plan = self.plan
        unchanged = records = 0
        for part in scan(export, self.known, self.salt):
            records += part.records
            for item in part.bad:
                self._quarantine(item.line, item.key, None, item.reason)
            unchanged += self._see(part.hits, part.lines)
            for line, row, text in part.misses:
                self._candidate(self._prepare(line, row, text, export), export)
        if self.buffer:
            self._flush(self.buffer, export.header)
        plan.rows_read = records
        plan.unchanged = unchanged
        for vplan in plan.vendors.values():
            vplan.counts["unchanged"] += unchanged

    def _known(self) -> np.ndarray:
        """The live fingerprints, sorted: the cached blob when no contact changed since it
        was written (their rowids are read when needed), else from the table."""
        if self.conn.execute(
            "SELECT 1 FROM fingerprint_cache JOIN contacts_generation USING (generation)"
        ).fetchone():
            return _read_blob(self.conn, "live")
        known, self.rowids = self._live()
        return known

    def _live(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live contact's fingerprint, sorted, and its rowid: a table scan."""
        pairs = np.fromiter(
            chain.from_iterable(
                self.conn.execute("SELECT rhash, rowid FROM contacts WHERE gone_at IS NULL")
            ),
            dtype=np.int64,
        ).reshape(-1, 2)
        pairs = pairs[np.argsort(pairs[:, 0])]
        return pairs[:, 0].copy(), pairs[:, 1].copy()

    def _rows(self) -> np.ndarray:
        """Each known fingerprint's contacts rowid (read from the cache the first time).

        A rowid can be wrong (a VACUUM may renumber rows without a trigger firing), so
        whatever uses one checks the fingerprint too, and calls `_renumbered` when it did
        not match.
        """
        if self.rowids is None:
            self.rowids = _read_blob(self.conn, "rowids")
        return self.rowids

    def _renumbered(self) -> None:
        """The cached rowids are wrong: read every known contact's again, once (a table
        scan). Known rows rewritten in this run get 0; their keys are in `keys`."""
        self.writer.wait()
        live, rows = self._live()
        self.rowids = np.zeros(len(self.known), dtype=np.int64)
        if len(live):
            at = np.minimum(np.searchsorted(live, self.known), len(live) - 1)
            found = live[at] == self.known
            self.rowids[found] = rows[at[found]]
        self.renumbered = True

    def _cache(self) -> None:
        """Write the fingerprints live after this diff and their rowids, for the next one."""
        keep = (self.seen != 0) & ~self.replaced
        added = np.frombuffer(self.added, dtype=np.int64)
        order = np.argsort(added)  # the kept ones are in order already: merge the added in
        live = self.known[keep]
        at = np.searchsorted(live, added[order])
        live = np.insert(live, at, added[order]).astype("<i8", copy=False)
        rows = np.insert(self._rows()[keep], at, np.frombuffer(self.added_rows, np.int64)[order])
        rows = rows.astype("<i8", copy=False)
        # the old blobs hold no contact data: their pages need not be zeroed as they are
        # freed (SQLite builds with SECURE_DELETE would write 16 MB of zeros per million)
        secure = self.store.scalar("PRAGMA secure_delete")
        self.conn.execute("PRAGMA secure_delete = FAST")
        try:
            self.conn.execute(
                "INSERT OR REPLACE INTO fingerprint_cache (id, generation, live, rowids) "
                "VALUES (1, (SELECT generation FROM contacts_generation), zeroblob(?), "
                "zeroblob(?))",
                (live.nbytes, rows.nbytes),
            )
        finally:
            self.conn.execute(f"PRAGMA secure_delete = {int(secure)}")
        _write_blob(self.conn, "live", live)
        _write_blob(self.conn, "rowids", rows)

    def _see(self, found: np.ndarray, lines: np.ndarray) -> int:
        """Mark the known rows at `found` seen on `lines`; how many were unchanged."""
        seen = self.seen
        if not seen[found].any():  # the usual part: every hit a known row not seen before
            seen[found] = lines
            if (seen[found] == lines).all():  # and none twice in the part
                return int(found.size)
            seen[found] = 0
        return self._repeats(found.tolist(), lines.tolist())

    def _repeats(self, found: list[int], lines: list[int]) -> int:
        """Known rows met again (a row repeated byte for byte): the first occurrence wins."""
        unchanged = 0
        for i, line in sorted(zip(found, lines, strict=True), key=itemgetter(1)):
            first = int(self.seen[i])
            if first:
                self._duplicate(line, self._key_of(i), first)
            else:
                self.seen[i] = line
                unchanged += 1
        return unchanged

    def _key_of(self, i: int) -> str:
        """The key of the known contact at `i`."""
        if i in self.keys:  # its row was rewritten in this run
            return self.keys[i]
        sql = "SELECT key FROM contacts WHERE rowid = ? AND rhash = ?"
        key = self.store.scalar(sql, (int(self._rows()[i]), int(self.known[i])))
        if key is None and not self.renumbered:  # the rowids moved under the cache
            self._renumbered()
            key = self.store.scalar(sql, (int(self._rows()[i]), int(self.known[i])))
        return str(key)

    def _prepare(self, line: int, row: list[str], text: bytes, export: Export) -> _Candidate | Bad:
        """What a new or changed row is for each vendor, or why it cannot be used at all:
        a function of the row and the configuration only (the store is `_flush`'s)."""
        key = row[export.key_index].strip()
        if not key:
            return Bad(line, None, f"empty key column {self.cfg.source.key!r}")
        problem = defect(row, export.header, self.cfg.source.encoding)
        if problem:
            return Bad(line, key, problem)
        views: dict[str, tuple[str, str] | str] = {}
        contacts: dict[str, Contact] = {}
        for name, proj in self.projectors.items():
            projected = proj.project(key, row)
            if isinstance(projected, str):
                views[name] = projected
            else:
                contacts[name] = projected
                views[name] = (proj.digest(projected, row), _payload(projected))
        attrs = orjson.dumps(dict(zip(export.header, row, strict=False))).decode()
        return _Candidate(line, key, row, text, views, self._reach(contacts), attrs)

    def _candidate(self, miss: _Candidate | Bad, export: Export) -> None:
        """A new or changed row: compared with the store a chunk at a time."""
        if isinstance(miss, Bad):
            self._quarantine(miss.line, miss.key, None, miss.reason)
            return
        first = self.cand_lines.get(miss.key)
        if first is not None:
            self._duplicate(miss.line, miss.key, first)
            return
        self.cand_lines[miss.key] = miss.line
        self.buffer.append(miss)
        if len(self.buffer) >= CHUNK:
            self._flush(self.buffer, export.header)
            self.buffer = []

    def _quarantine(
        self,
        line: int | None,
        key: str | None,
        vendor: str | None,
        reason: str,
        *,
        row: bool = True,
    ) -> None:
        """Record a quarantined row (for `vendor` only, or for all). `row=False`: the row was
        quarantined for another vendor already; `plan.quarantined` counts rows, not entries."""
        if row:
            self.plan.quarantined += 1
        if vendor:
            self.plan.vendors[vendor].counts["quarantined"] += 1
        self.conn.execute(
            "INSERT INTO quarantine (run_id, file, line, key, vendor, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (self.run_id, self.plan.export, line, key, vendor, reason, self.ts),
        )

    def _duplicate(self, line: int, key: str, first: int) -> None:
        self._quarantine(
            line, key, None, f"duplicate key {key!r}: line {first} has it too (the first wins)"
        )

    # --- candidates (new or changed rows) ----------------------------------------------
    def _flush(self, chunk: list[_Candidate], header: list[str]) -> None:
        keys = [c.key for c in chunk]
        marks = ",".join("?" * len(keys))
        stored = {
            row[0]: _Stored(*row[1:])
            for row in self.conn.execute(
                "SELECT key, rowid, rhash, attributes, email, phone FROM contacts "
                f"WHERE key IN ({marks})",
                keys,
            )
        }
        acked: dict[tuple[str, str], str] = {}
        for vendor in self.projectors:  # (vendor, key) is the primary key: one lookup each
            acked.update(
                ((vendor, k), h)
                for k, h in self.conn.execute(
                    f"SELECT key, hash FROM vendor_state WHERE vendor = ? AND key IN ({marks})",
                    [vendor, *keys],
                )
            )
        open_rows: dict[tuple[str, str], tuple[int, str, str]] = {}
        for did, v, k, status, h in self.conn.execute(
            # by key: without statistics the planner would rather scan a big table than
            # look thousands of keys up
            f"SELECT id, vendor, key, status, hash FROM deliveries INDEXED BY deliveries_key "
            f"WHERE key IN ({marks}) "
            f"AND status IN {OPEN_STATUSES!r} ORDER BY id",
            keys,
        ):
            open_rows[(v, k)] = (did, status, h)  # the latest wins
        reach = {c.key: c.reach for c in chunk}
        suppressed = suppressions(self.store, self.cfg.suppression, reach)
        self._new_deliveries: list[tuple[Any, ...]] = []

        known, seen, n = self.known, self.seen, len(self.known)
        inserts, updates, reached = [], [], []
        for cand in chunk:
            old = stored.get(cand.key)
            if old is not None:
                i = int(np.searchsorted(known, old.rhash))
                if i < n and known[i] == old.rhash:
                    first = int(seen[i])
                    if first and first < cand.line:
                        self._duplicate(cand.line, cand.key, first)
                        continue
                    if first:
                        self._duplicate(first, cand.key, cand.line)
                    seen[i] = cand.line
                    self.replaced[i] = True
                    self.keys[i] = cand.key
            if self._vendors(cand, old, acked, open_rows, suppressed, header):
                rhash = fingerprint(cand.text, self.salt)
            else:  # quarantined for a vendor: look at the row again next run
                rhash = fingerprint(f"\x00requarantine\x00{cand.key}".encode(), self.salt)
            email, phone = cand.reach
            if old is None:
                inserts.append((cand.key, cand.attrs, email, phone, rhash, self.ts, self.ts))
                continue
            updates.append((cand.attrs, rhash, self.ts, old.rowid))
            if (email, phone) != (old.email, old.phone):  # else their index is left alone
                reached.append((email, phone, old.rowid))
            self.added.append(rhash)
            self.added_rows.append(old.rowid)
        # written in key order (new contacts get rowids in it too): each B-tree page is
        # visited once, not once per row, which is most of the cost of recording deltas
        # into tables of a million rows
        inserts.sort(key=itemgetter(0))
        rowids = range(self.next_rowid, self.next_rowid + len(inserts))
        self.next_rowid += len(inserts)
        self.added.extend(map(itemgetter(4), inserts))
        self.added_rows.extend(rowids)
        self._new_deliveries.sort(key=itemgetter(2))
        self.writer.submit(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, reason, "
            "created_at, updated_at) SELECT value->>0, value->>1, value->>2, value->>3, "
            "value->>4, value->>5, value->>6, value->>7, value->>8, value->>9 FROM json_each(?)",
            self._new_deliveries,
        )
        self.writer.submit(
            "INSERT INTO contacts (rowid, key, attributes, email, phone, rhash, first_seen, "
            "updated_at) SELECT value->>0, value->>1, value->>2, value->>3, value->>4, "
            "value->>5, value->>6, value->>7 FROM json_each(?)",
            list(map(tuple.__add__, zip(rowids), inserts)),
        )
        self.writer.submit(
            "UPDATE contacts SET attributes = u.value->>0, rhash = u.value->>1, "
            "updated_at = u.value->>2, gone_at = NULL FROM json_each(?) AS u "
            "WHERE contacts.rowid = u.value->>3",
            sorted(updates, key=itemgetter(3)),
        )
        self.writer.submit(
            "UPDATE contacts SET email = u.value->>0, phone = u.value->>1 "
            "FROM json_each(?) AS u WHERE contacts.rowid = u.value->>2",
            reached,
        )

    def _reach(self, projections: dict[str, Contact]) -> tuple[str | None, str | None]:
        """The contact's normalised email and phone, from any vendor's typed fields."""
        email = phone = None
        for name, projected in projections.items():
            for fname, kind in self.connectors[name].field_types.items():
                value = projected.fields.get(fname)
                if value and kind == "email" and email is None:
                    email = value
                elif value and kind == "phone" and phone is None:
                    phone = value
        return email, phone

    def _vendors(
        self,
        cand: _Candidate,
        old: _Stored | None,
        acked: dict[tuple[str, str], str],
        open_rows: dict[tuple[str, str], tuple[int, str, str]],
        suppressed: dict[str, str],
        header: list[str],
    ) -> bool:
        """Decide each vendor's delta for one candidate; False if quarantined for any."""
        clean = True
        surveyed = None  # the trigger vendor this contact is surveyed by in this run
        for name, proj in self.projectors.items():
            vplan = self.plan.vendors[name]
            view = cand.views[name]
            if isinstance(view, str):
                self._quarantine(cand.line, cand.key, name, view, row=clean)
                clean = False
                continue
            digest, payload = view
            state = acked.get((name, cand.key))
            opened = open_rows.get((name, cand.key))
            if state == digest:
                vplan.counts["unchanged"] += 1
                if opened and opened[1] == "pending":
                    self._set_status(opened[0], "superseded", "the vendor already has this data")
                elif opened and opened[1] == "in_flight" and proj.trigger is None:
                    # the export went back to what the vendor acknowledged while a newer
                    # payload is in flight: send the acknowledged data again, after it
                    self._deliver(name, cand.key, "changed", digest, payload, "pending", None)
                continue
            kind = "new" if state is None else "changed"
            trigger = proj.trigger is not None
            if name in self.baseline or (trigger and kind == "new" and not _on_new(proj)):
                self._ack(name, cand.key, digest)
                vplan.counts["baseline" if name in self.baseline else "not_triggered"] += 1
                continue
            if kind == "changed" and vplan.rebaseline and _same_before(proj, cand, old, header):
                self._ack(name, cand.key, digest)
                if opened:  # a real change still to send: acknowledged as this digest
                    self._rehash(name, cand.key, digest)
                vplan.counts["rebaselined"] += 1
                continue
            if opened and opened[2] == digest:
                vplan.counts["already_" + opened[1]] += 1
                continue
            reason = suppressed.get(cand.key)
            if reason and (trigger or self.cfg.suppression.upserts):
                self._deliver(name, cand.key, kind, digest, payload, "skipped", reason)
                vplan.counts["skipped"] += 1
                continue
            if trigger and (recent := self._recent_survey(cand.key, surveyed)):
                self._deliver(name, cand.key, kind, digest, payload, "skipped", recent)
                vplan.counts["skipped"] += 1
                continue
            if opened and opened[1] in ("pending", "failed", "dead"):
                self._supersede(opened[0], kind, digest, payload)
                if trigger:
                    surveyed = surveyed or name
                vplan.counts[kind] += 1
                continue
            self._deliver(name, cand.key, kind, digest, payload, "pending", None)
            if trigger:
                surveyed = surveyed or name
            vplan.counts[kind] += 1
            if len(vplan.samples) < SAMPLES:
                vplan.samples.append(_sample(cand.key, kind, proj, old, header, payload))
        return clean

    def _recent_survey(self, key: str, planned: str | None) -> str | None:
        """Why `key` must not be surveyed now: `planned` (a trigger vendor that surveys it
        in this run, its delivery not written yet) or one within the last days."""
        days = self.cfg.suppression.min_days_between_surveys
        if days <= 0:
            return None
        if planned:
            vendor, when = planned, "in this run"
        else:
            trigger_vendors = [n for n, c in self.connectors.items() if c.kind == "trigger"]
            marks = ",".join("?" * len(trigger_vendors))
            row = self.conn.execute(
                f"SELECT vendor, max(sent_at) FROM deliveries WHERE key = ? "
                f"AND vendor IN ({marks}) "
                # pending too: a survey an earlier run planned and has not sent yet
                "AND status IN ('pending', 'sent', 'unknown', 'in_flight') "
                "AND coalesce(sent_at, updated_at) >= ?",
                (key, *trigger_vendors, iso(self.now - timedelta(days=days))),
            ).fetchone()
            if not (row and row[0]):
                return None
            vendor, when = row[0], f"on {row[1]}" if row[1] else "(planned, not sent yet)"
        return f"surveyed by {vendor} {when}: within min_days_between_surveys = {days}"

    def _rebaseline_absent(self, header: list[str]) -> None:
        """Re-baseline the contacts not in this export too, from their last row, so that one
        coming back unchanged is not surveyed for the definition change."""
        for name, proj in self.projectors.items():
            if not self.plan.vendors[name].rebaseline:
                continue
            absent = self.conn.execute(
                "SELECT vs.key, vs.hash, c.attributes FROM vendor_state vs JOIN contacts c "
                "ON c.key = vs.key WHERE vs.vendor = ? AND c.gone_at IS NOT NULL",
                (name,),
            ).fetchall()
            for key, stored, attributes in absent:
                before = orjson.loads(attributes)
                digest = proj.watched([before.get(col, "") for col in header])
                if digest != stored:
                    self._ack(name, key, digest)
                    self._rehash(name, key, digest)
                    self.plan.vendors[name].counts["rebaselined"] += 1

    def _rehash(self, vendor: str, key: str, digest: str) -> None:
        """Open deliveries of a re-baselined contact are acknowledged as its new digest."""
        self.conn.execute(
            f"UPDATE deliveries SET hash = ? WHERE vendor = ? AND key = ? "
            f"AND status IN {OPEN_STATUSES!r}",
            (digest, vendor, key),
        )

    def _ack(self, vendor: str, key: str, digest: str) -> None:
        self.conn.execute(
            "INSERT INTO vendor_state (vendor, key, hash, acked_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (vendor, key) DO UPDATE SET hash = excluded.hash, acked_at = excluded.acked_at",
            (vendor, key, digest, self.ts),
        )

    def _deliver(
        self,
        vendor: str,
        key: str,
        kind: str,
        digest: str,
        payload: str,
        status: str,
        reason: str | None,
    ) -> None:
        self._new_deliveries.append(
            (
                self.run_id,
                vendor,
                key,
                kind,
                status,
                digest,
                payload,
                reason,
                self.ts,
                self.ts,
            )
        )

    def _supersede(self, did: int, kind: str, digest: str, payload: str) -> None:
        """A newer change replaces a delivery not yet sent: one send, with the latest data."""
        self.conn.execute(
            "UPDATE deliveries SET run_id = ?, kind = ?, status = 'pending', hash = ?, payload = ?, "
            "attempts = 0, reason = NULL, updated_at = ? WHERE id = ?",
            (self.run_id, kind, digest, payload, self.ts, did),
        )

    def _set_status(self, did: int, status: str, reason: str) -> None:
        self.conn.execute(
            "UPDATE deliveries SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
            (status, reason, self.ts, did),
        )

    # --- gone ------------------------------------------------------------------------
    def _gone(self) -> None:
        """Mark the known contacts not seen gone, by rowid (checked against the fingerprint)."""
        gone = np.flatnonzero(self.seen == 0)
        self.plan.gone = len(gone)
        for vplan in self.plan.vendors.values():
            vplan.counts["gone"] = len(gone)
        if self._mark_gone(gone) < len(gone) and not self.renumbered:
            self._renumbered()  # the rowids moved under the cache: the rest again
            self._mark_gone(gone)

    def _mark_gone(self, gone: np.ndarray) -> int:
        rows = self._rows()[gone]
        order = np.argsort(rows)
        return int(
            self.conn.executemany(
                "UPDATE contacts SET gone_at = ?, rhash = -rhash - 1 "
                "WHERE rowid = ? AND rhash = ? AND gone_at IS NULL",
                zip(repeat(self.ts), rows[order].tolist(), self.known[gone][order].tolist()),
            ).rowcount
        )

    def guard(self, force: bool) -> str | None:
        """Why this export must not be applied (truncated or empty), or None."""
        plan = self.plan
        good = plan.rows_read - plan.quarantined
        if plan.rows_read == 0 or good <= 0:
            reason = f"the export {plan.export} has no usable rows"
        elif plan.known and plan.gone / plan.known > self.cfg.source.max_drop:
            reason = (
                f"{plan.gone} of {plan.known} known contacts ({plan.gone / plan.known:.0%}) are "
                f"missing from {plan.export}, more than max_drop = {self.cfg.source.max_drop:.0%}"
            )
        else:
            return None
        if force:
            return None
        plan.refused = reason
        return reason


# the cache's blobs go through SQLite's blob I/O a megabyte at a time: no whole copy of an
# array ever sits in SQLite's or Python's memory beside the array itself
def _read_blob(conn: sqlite3.Connection, column: str) -> np.ndarray:
    with conn.blobopen("fingerprint_cache", column, 1, readonly=True) as blob:
        values = np.empty(len(blob) // 8, dtype="<i8")
        view = values.data.cast("B")
        for start in range(0, len(view), 1 << 20):
            view[start : start + (1 << 20)] = blob.read(1 << 20)
    return values


def _write_blob(conn: sqlite3.Connection, column: str, values: np.ndarray) -> None:
    with conn.blobopen("fingerprint_cache", column, 1) as blob:
        view = values.data.cast("B")
        for start in range(0, len(view), 1 << 20):
            blob.write(view[start : start + (1 << 20)])


class _Writer:
    """The diff's bulk writes, on a second thread of the same connection (and so the same
    transaction). Each is one statement over a JSON array (`json_each`): SQLite does the
    page work of a whole chunk without the GIL, while the diff reads on. One at a time per
    row (`executemany`) would need the GIL back after every row.

    Leaving the `with` block waits for the writes; a write that failed is raised then, or
    at the next `submit`. Leaving it on an exception drops the writes not yet begun (the
    caller rolls the transaction back) and lets that exception through.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # a chunk's writes may wait while the next chunk is read, no more
        self.jobs: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.dropped = False
        self.thread = threading.Thread(target=self._run, name="syncd-diff-writer", daemon=True)

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job is None:
                    return
                if self.error is None and not self.dropped:
                    self.conn.execute(job[0], (job[1],))
            except BaseException as exc:  # raised in the diff's thread
                self.error = exc
            finally:
                self.jobs.task_done()

    def wait(self) -> None:
        """Until the writes submitted are done: before reading a table whole (rows written
        while a SELECT steps through their table may be seen twice or not at all)."""
        self.jobs.join()

    def submit(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run `sql` with `rows` as its one parameter, a JSON array of arrays."""
        self._raise()
        if rows:
            self.jobs.put((sql, orjson.dumps(rows).decode()))

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.dropped = kind is not None
        self.jobs.put(None)
        self.thread.join()
        if kind is None:
            self._raise()


@dataclass
class Scan:
    """What the fast path found in a stretch of the export."""

    hits: np.ndarray  # where in the known fingerprints each unchanged row is
    lines: np.ndarray  # the line each of those starts on
    misses: list[tuple[int, list[str], bytes]]  # new or changed: line, row, change text
    bad: list[Bad]
    records: int


def scan(export: Export, known: np.ndarray, salt: int) -> Iterator[Scan]:
    """The fast path: each row's fingerprint looked up among the known ones.

    A hit means the row is byte-for-byte what was last recorded, so no vendor can need
    it: only its position goes on. Fingerprinting is a chain of C-level maps and the
    look-up a few vectorised probes (`_finder`): no Python code runs per row here.
    """
    find = _finder(known)
    for block in export.blocks():
        hashes = np.fromiter(
            map(xxh3_64_intdigest, block.texts, repeat(salt)),
            dtype=np.uint64,
            count=len(block.texts),
        )
        where, hit = find((hashes >> np.uint64(1)).astype(np.int64))
        lines = np.asarray(block.lines, dtype=np.int64)
        misses = sorted(  # in file order: the first of two rows with one key wins
            [(block.lines[j], block.row(j), block.texts[j]) for j in np.flatnonzero(~hit).tolist()],
            key=itemgetter(0),
        )
        yield Scan(where[hit], lines[hit], misses, block.bad, block.records)


def _finder(known: np.ndarray) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Looks fingerprints up among the known ones (sorted): `(where, hit)` for an array.

    A table of where each bucket of the top bits starts, a bucket for about each known
    fingerprint, takes a look-up to its place in one or two probes; a binary search
    takes twenty, most of them cache misses (it was a tenth of the diff).
    """
    bits = max(1, len(known).bit_length())
    shift = 63 - bits
    starts = np.zeros((1 << bits) + 1, dtype=np.min_scalar_type(len(known)))
    # fingerprints are not negative; a revived gone contact's may be: bucket 0
    np.cumsum(np.bincount(np.maximum(known >> shift, 0), minlength=1 << bits), out=starts[1:])

    def find(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        bucket = hashes >> shift
        where, end = starts[bucket].astype(np.int64), starts[bucket + 1]
        hit = np.zeros(len(hashes), dtype=bool)
        todo = np.flatnonzero(where < end)
        while todo.size:  # step along each bucket until found or past
            at, wanted = where[todo], hashes[todo]
            value = known[at]
            hit[todo[value == wanted]] = True
            todo = todo[(value < wanted) & (at + 1 < end[todo])]
            where[todo] += 1
        return where, hit

    return find


def _same_before(proj: Projector, cand: _Candidate, old: _Stored | None, header: list[str]) -> bool:
    """Whether a trigger vendor's watched columns hold what they held in the contact's
    previous row (its stored attributes), so only the definition changed, not the contact.
    A column the previous row did not have is taken as unchanged: a column new to the
    export, watched from the start, must not survey everyone."""
    if old is None:
        return True
    before = orjson.loads(old.attributes)
    row = [before.get(col, value) for col, value in zip(header, cand.row, strict=False)]
    return proj.watched(row) == proj.watched(cand.row)


def _on_new(proj: Projector) -> bool:
    trigger = proj.vendor.mapping.trigger
    return trigger is None or trigger.on_new


def _payload(contact: Contact) -> str:
    payload = {"fields": dict(contact.fields), "metadata": dict(contact.metadata)}
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()


def _sample(
    key: str, kind: str, proj: Projector, old: _Stored | None, header: list[str], payload: str
) -> dict[str, Any]:
    """What the connector would send, field by field, before → after: the vendor's values
    (normalised and shaped) of the contact's previous export row, None for a new contact,
    and of this one. A metadata name is shown as `name (metadata)`."""
    after = orjson.loads(payload)
    before: dict[str, dict[str, Any]] = {"fields": {}, "metadata": {}}
    if old is not None and kind == "changed":
        stored = orjson.loads(old.attributes)
        previous = proj.project(key, [stored.get(col, "") for col in header])
        if isinstance(previous, Contact):
            before = {"fields": dict(previous.fields), "metadata": dict(previous.metadata)}
    changes = {}
    for part, suffix in (("fields", ""), ("metadata", " (metadata)")):
        for name, new in after[part].items():
            was = before[part].get(name)
            if was != new:
                changes[name + suffix] = [was, new]
    return {"key": key, "kind": kind, "changes": changes}


def suppressions(
    store: Store, cfg: SuppressionConfig, reach: Mapping[str, tuple[str | None, str | None]]
) -> dict[str, str]:
    """Keys unsubscribed at any vendor (in the configured channels) → the skip reason.

    An unsubscribe matches a contact by CRM key, normalised email or E.164 phone.
    """
    if not cfg.unsubscribed or not reach:
        return {}
    by_email = {e: k for k, (e, _p) in reach.items() if e}
    by_phone = {p: k for k, (_e, p) in reach.items() if p}
    keys, emails, phones = list(reach), list(by_email), list(by_phone)
    sql = (
        "SELECT key, email, phone, vendor, channel, at FROM unsubscribes "
        f"WHERE key IN ({','.join('?' * len(keys))}) "
        f"OR email IN ({','.join('?' * len(emails))}) "
        # the earliest known time names the reason; an untimed opt-out suppresses all the same
        f"OR phone IN ({','.join('?' * len(phones))}) ORDER BY at IS NULL, at"
    )
    out: dict[str, str] = {}
    channels = set(cfg.channels)
    for key, email, phone, vendor, channel, at in store.conn.execute(
        sql, [*keys, *emails, *phones]
    ):
        if "any" not in channels and channel not in channels:
            continue
        for match in (key if key in reach else None, by_email.get(email), by_phone.get(phone)):
            if match:
                when = f"on {at}" if at else "(date unknown)"
                out.setdefault(match, f"unsubscribed at {vendor} ({channel or 'any'}) {when}")
    return out
