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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate, islice, repeat
from operator import add, itemgetter
from pathlib import Path
from typing import IO

from syncd.config import SourceConfig
from syncd.errors import NotSettledError, SourceError

SNIFF_BYTES = 64 * 1024
FIELD_LIMIT = 1024 * 1024  # 1 MiB per field: anything larger is a broken export, not data
DELIMITERS = ",;\t|"
BLOCK = 512  # records parsed at a time: small enough to stay in the CPU's caches
SEP = "\x1f"  # joins the cells of a change text

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
        keep = [i for i, h in enumerate(self.header) if h not in set(cfg.ignore_columns)]
        # the cells that count for change detection, as one C call per row (itemgetter of
        # one index gives the cell, not a sequence)
        self._pick: Callable[[list[str]], Sequence[str]] = (
            itemgetter(*keep) if len(keep) > 1 else itemgetter(slice(keep[0], keep[0] + 1))
        )
        self.rows_read = 0

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocks(self) -> Iterator[Block]:
        """The records, a block at a time, with their start lines and change texts.

        The csv module parses a whole block in one C call (`list.extend(islice(...))`), and
        what every record needs (its width checked, its change text, the line it starts
        on) runs over the block as C-level `map`s: no Python code runs per record unless
        the block holds an odd one (a blank line, a row of the wrong width, a lone CR in a
        cell). That is what keeps the nightly diff of a million rows near a bare
        `csv.reader` pass.

        Keys are not checked here (the caller knows which it has seen), nor undecodable or
        NUL bytes (`defect(row, ...)`: only rows that are new or changed need the look).
        """
        reader = self._reader
        done = reader.line_num  # physical lines consumed so far
        while True:
            records: list[list[str]] = []
            error = None
            try:
                # on an exception list.extend keeps what it appended: the records before
                # a bad one are not lost (tests/test_source.py holds CPython to that)
                records.extend(islice(reader, BLOCK))
            except csv.Error as exc:
                error = exc
            if not records and error is None:
                return
            first, done = done + 1, reader.line_num
            block = self._block(records, first, None if error else done - first + 1)
            if error is not None:  # a record all the same: `rows_read - quarantined` stays true
                block.bad.append(Bad(block.end, None, _explain(error)))
                block.records += 1
            self.rows_read += block.records
            yield block

    def _block(self, records: list[list[str]], first: int, consumed: int | None) -> Block:
        width, pick = len(self.header), self._pick
        widths = set(map(len, records))
        if widths == {width} or (
            widths == {width + 1} and not any(map(itemgetter(width), records))
        ):  # the usual block: every row of the header's width, or one empty cell more
            texts = list(map(SEP.join, map(pick, records)))
            starts = _starts(records, first, consumed, texts)
            return Block(starts[:-1], records, texts, records=len(records), end=starts[-1])
        starts = _starts(records, first, None, None)
        block = Block([], [], [], end=starts[-1])
        for start, row in zip(starts, records, strict=False):
            n = len(row)
            if not n:
                continue  # a blank line
            block.records += 1
            if n < width or (n > width and any(c.strip() for c in row[width:])):
                key = row[self.key_index].strip() if n > self.key_index else None
                reason = f"has {n} field{'s' if n != 1 else ''}, the header has {width}"
                block.bad.append(Bad(start, key or None, reason))
                continue
            block.lines.append(start)
            block.rows.append(row)
            block.texts.append(SEP.join(pick(row)))
        return block

    def rows(self, on_bad: Callable[[Bad], None]) -> Iterator[tuple[int, list[str]]]:
        """Record by record, in file order: `(line, row)` for good rows, cut to the header's
        width; bad ones go to `on_bad`."""
        width = len(self.header)
        for block in self.blocks():
            items: list[tuple[int, list[str] | Bad]] = [
                (line, row[:width]) for line, row in zip(block.lines, block.rows, strict=True)
            ]
            items += [(item.line, item) for item in block.bad]
            for line, item in sorted(items, key=itemgetter(0)):
                if isinstance(item, Bad):
                    on_bad(item)
                else:
                    yield line, item


@dataclass
class Block:
    """Consecutive records: the usable rows, each with the physical line it starts on and
    its change text, and the bad records.

    A row may hold blank cells past the header's width (the empty trailing column of
    spreadsheet round-trips): index it by column. Its change text is the cells that count
    for change detection ([source] ignore_columns left out), joined by `SEP`.
    """

    lines: list[int]
    rows: list[list[str]]
    texts: list[str]
    bad: list[Bad] = field(default_factory=list)
    records: int = 0  # records read, good and bad (blank lines are not records)
    end: int = 0  # the line after the block's last record


def _starts(
    records: list[list[str]], first: int, consumed: int | None, texts: list[str] | None
) -> list[int]:
    """The physical line each record starts on, and the line after the last one.

    A record spans one line, plus one per line break in its cells (CRLF, CR or LF: the
    file object splits on each). `consumed`, the lines the block took, tells when no cell
    holds a break at all. Counting LFs in the change texts never counts too many; when
    they add up to `consumed`, they are exact; otherwise (lone CRs, breaks in ignored
    columns, a bad record) every cell is counted.
    """
    n = len(records)
    if consumed == n:
        return list(range(first, first + n + 1))
    if consumed is not None and texts is not None:
        extra = list(map(str.count, texts, repeat("\n")))
        if sum(extra) == consumed - n:
            return list(accumulate(map(add, extra, repeat(1)), initial=first))
    extra = [_breaks(SEP.join(row)) for row in records]
    return list(accumulate(map(add, extra, repeat(1)), initial=first))


def _breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


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
