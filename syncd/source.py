"""Streaming CRM export reader.

Finds the export (a file or the newest settled match of a glob), checks it has settled,
strips a BOM, sniffs the delimiter unless configured, and yields `(line, row)` with the
physical line each record starts on. Bad records are yielded as `Bad` and end up in
`quarantine`; only problems with the file as a whole raise (`SourceError`).
"""

from __future__ import annotations

import codecs
import csv
import glob
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from syncd.config import SourceConfig
from syncd.errors import NotSettledError, SourceError

SNIFF_BYTES = 64 * 1024
FIELD_LIMIT = 1024 * 1024  # 1 MiB per field: anything larger is a broken export, not data
DELIMITERS = ",;\t|"

csv.field_size_limit(FIELD_LIMIT)
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Bad:
    """A record that cannot be used: quarantined with its line and reason."""

    line: int
    key: str | None
    reason: str


def find_export(cfg: SourceConfig, now: datetime) -> Path:
    """The export to read: the path itself, or the newest settled file matching the glob."""
    pattern = cfg.path
    if glob.has_magic(pattern):
        matches = sorted(
            (Path(p) for p in glob.glob(pattern) if os.path.isfile(p)),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
        if not matches:
            raise SourceError(
                f"no export matches {pattern}",
                hint="check [source] path and that the CRM export ran",
            )
        settled = [p for p in matches if _age(p, now) >= cfg.settle_seconds]
        if not settled:
            _raise_not_settled(matches[0], now, cfg.settle_seconds)
        return settled[0]
    path = Path(pattern)
    if not path.is_file():
        raise SourceError(
            f"export {path} does not exist", hint="check [source] path and that the CRM export ran"
        )
    if _age(path, now) < cfg.settle_seconds:
        _raise_not_settled(path, now, cfg.settle_seconds)
    return path


def _age(path: Path, now: datetime) -> float:
    return now.timestamp() - path.stat().st_mtime


def _raise_not_settled(path: Path, now: datetime, settle: float) -> None:
    raise NotSettledError(
        f"export {path} was modified {_age(path, now):.0f}s ago and may still be being written",
        hint=f"syncd waits until it is unchanged for {settle:g}s ([source] settle_seconds); "
        "try again shortly",
    )


class Export:
    """An open export: header, key column index and a stream of rows."""

    def __init__(self, path: Path, cfg: SourceConfig) -> None:
        self.path = path
        self.cfg = cfg
        encoding = cfg.encoding
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"  # strips a byte-order mark when there is one
        try:
            self._fh: IO[str] = path.open(
                "r", encoding=encoding, errors="surrogateescape", newline=""
            )
        except OSError as exc:
            raise SourceError(f"cannot read export {path}: {exc.strerror}") from None
        try:
            sample = self._fh.read(SNIFF_BYTES)
        except OSError as exc:
            raise SourceError(f"cannot read export {path}: {exc.strerror}") from None
        if not sample.strip():
            raise SourceError(
                f"export {path} is empty", hint="the CRM export produced no header and no rows"
            )
        self.delimiter = cfg.delimiter or _sniff(sample)
        self._fh.seek(0)
        self._reader = csv.reader(self._fh, delimiter=self.delimiter, strict=True)
        try:
            header = next(self._reader)
        except (csv.Error, StopIteration) as exc:
            raise SourceError(f"export {path}: cannot read the header line: {exc}") from None
        self.header = [h.strip() for h in header]
        while self.header and not self.header[-1]:
            self.header.pop()  # empty trailing columns from spreadsheet round-trips
        if cfg.key not in self.header:
            raise SourceError(
                f"export {path}: key column {cfg.key!r} is not in the header",
                hint="set [source] key to one of: " + ", ".join(repr(h) for h in self.header[:20]),
            )
        dupes = sorted({h for h in self.header if self.header.count(h) > 1})
        if dupes:
            raise SourceError(
                f"export {path}: the header names {', '.join(map(repr, dupes))} more than once",
                hint="rename the duplicate columns in the CRM export",
            )
        self.key_index = self.header.index(cfg.key)
        self.rows_read = 0

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, on_bad: Callable[[Bad], None]) -> Iterator[tuple[int, list[str]]]:
        """Yield `(line, row)` for rows of the header's width; report the rest to `on_bad`.

        Keys are not checked here (the caller knows which it has seen), nor undecodable
        or NUL bytes (`defect(row, ...)`: only rows that are new or changed need the look).
        """
        reader = self._reader
        width = len(self.header)
        kidx = self.key_index
        count = 0
        line = reader.line_num + 1
        try:
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    count += 1  # a record all the same: `rows_read - quarantined` stays true
                    on_bad(Bad(line, None, _explain(exc)))
                    line = reader.line_num + 1
                    continue
                start, line = line, reader.line_num + 1
                if len(row) == width:
                    count += 1
                    yield start, row
                    continue
                n = len(row)
                if not n:
                    continue  # a blank line
                count += 1
                if n == width + 1 and not row[-1]:
                    row.pop()  # one empty trailing cell: spreadsheet noise, and common
                elif n > width and not any(c.strip() for c in row[width:]):
                    del row[width:]  # several, or blank ones
                else:
                    key = row[kidx].strip() if n > kidx else None
                    reason = f"has {n} field{'s' if n != 1 else ''}, the header has {width}"
                    on_bad(Bad(start, key or None, reason))
                    continue
                yield start, row
        finally:
            self.rows_read += count


def defect(row: list[str], header: list[str], encoding: str) -> str | None:
    """Why a row cannot be used as it is: bytes the encoding cannot decode, or NUL bytes.

    Such rows are quarantined rather than repaired: a guessed repair could send a
    mangled name to a vendor, and the operator is told which column to look at.
    """
    for name, cell in zip(header, row, strict=False):
        if "\x00" in cell:
            return f"column {name!r} contains a NUL byte; re-export the file or remove the byte"
        if not cell.isascii() and _SURROGATE.search(cell):
            return (
                f"column {name!r} has bytes that are not valid {encoding}; re-export as "
                "UTF-8 or set [source] encoding"
            )
    return None


def _explain(exc: csv.Error) -> str:
    """A csv module error in the operator's terms."""
    text = str(exc)
    if "unexpected end of data" in text:
        return "the file ends inside a quoted field: the export looks truncated; re-export it"
    if "field limit" in text:
        return (
            f"a field is larger than {FIELD_LIMIT // 1024 // 1024} MiB: an unclosed quote or "
            "binary data; fix the export from this line on"
        )
    if "expected after" in text:
        return f'bad quoting ({text}): a quote inside a quoted field must be doubled ("")'
    return f"unreadable record: {text}"


def _sniff(sample: str) -> str:
    first = sample.splitlines()[0] if sample else ""
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        counts = {d: first.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        return best if counts[best] else ","
