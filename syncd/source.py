"""Streaming CRM export reader.

Finds the export (a file or the newest settled match of a glob), checks it has settled,
strips a BOM, sniffs the delimiter unless configured, and yields `(line, row)` with the
physical line each record starts on. Bad records are yielded as `Bad` and end up in
`quarantine`; only problems with the file as a whole raise (`SourceError`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import glob
import io
import os
import re
import stat
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from itertools import accumulate, compress, islice, repeat
from operator import add, attrgetter, itemgetter
from pathlib import Path
from typing import IO, Any, NamedTuple, NoReturn

import numpy as np

from syncd.config import SourceConfig, kind_of
from syncd.errors import GuardError, NotSettledError, SourceError

SNIFF_BYTES = 64 * 1024
SCAN_BYTES = 1024 * 1024  # read at a time by the look for UTF-8 under a single-byte encoding
FIELD_LIMIT = 1024 * 1024  # 1 MiB per field: anything larger is a broken export, not data
DELIMITERS = ",;\t|"
BLOCK = 512  # records parsed at a time: small enough to stay in the CPU's caches
# joins the cells of a change text: a lone high surrogate, which no decoder here ever
# produces (`surrogateescape` gives low ones), so the joined text names its cells exactly
SEP = "\ud800"
# and as UTF-8 (`surrogatepass`): a line holding these bytes, which no UTF-8 text does, is
# read by the csv module, else its text (its own bytes) could be a record's whose cells
# hold the delimiter (`"7;";x` and `7;\xed\xa0\x80x` are both `7;\xed\xa0\x80x`)
SEP_BYTES = SEP.encode("utf-8", "surrogatepass")
# bytes read at a time on the raw path: a block's working set stays in the CPU's caches
RAW_BYTES = 256 * 1024
LONG = 1 << 16  # bytes in a line the raw path leaves to the csv module (see `_per_line`)
# a header past these is not a CRM's (and would cost seconds per check on every run)
MAX_COLUMNS = 4096
MAX_HEADER = 1024 * 1024  # characters in the header's first line
CTRL_Z = b"\x1a"  # DOS's end-of-file mark, which old Windows tools end a text file with
SKEW = 2.0  # seconds a file's modification time may be ahead of the clock (a share's)

csv.field_size_limit(FIELD_LIMIT)
_SURROGATE = re.compile("[\udc80-\udcff]")
_NON_ASCII = re.compile("[^\x00-\x7f]")


@dataclass(frozen=True)
class Bad:
    """A record that cannot be used: quarantined with its line and reason.

    `key` is the row's key as the row holds it (stripped); it is kept as `raw`, and `key`
    becomes what it looks like (`visible`), which the quarantine shows. A known contact
    whose row this is stays held back under either (`held`): the one it looks like (a
    zero-width space pasted into `3`), or its own (`3\\u200b`, stored by a release that
    did not look at keys).

    `maybe`: the cells that may be the key of a row whose key cannot be told (`key` None),
    one of the wrong width: a known contact under any of them is held back too.

    `tail`: the record's last cell, stripped (set for a row of the wrong width: the record
    the file is cut inside ends with it). `starts`: the cells of a record cut inside its
    key's cell, each only the start of the key: a known contact whose key begins with one
    is held back (the file cut in `1001` ends `100`; contact 1001 is in it, not gone)."""

    line: int
    key: str | None
    reason: str
    raw: str | None = field(default=None, compare=False, repr=False)
    maybe: tuple[str, ...] = field(default=(), compare=False, repr=False)
    tail: str | None = field(default=None, compare=False, repr=False)
    starts: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        key = self.key
        if self.raw is None:
            object.__setattr__(self, "raw", key)
        if not key or (key.isascii() and key.isprintable()):
            return  # the usual key: shown as it is
        # a character that does not show (a byte-order mark before it, a zero-width space
        # in it) is none of the key it looks like: the contact is held back by that one
        key = visible(key)
        # a key with bytes the encoding cannot decode is shown by its bytes (`\\xe9`): the
        # store takes only text it can encode, and the operator can find these bytes
        if not key.isascii() and _SURROGATE.search(key):
            key = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        object.__setattr__(self, "key", key or None)

    @property
    def held(self) -> list[str]:
        """The keys a known contact of this row may be stored under (see the class)."""
        # a cell that may be the key (`maybe`): the contact it is, or the one it looks like
        maybe = [each for cell in self.maybe for each in (cell, visible(cell).strip())]
        held = [self.key] if self.key else []
        for raw in (self.raw, *maybe):
            if not raw or raw in held or (not raw.isascii() and _SURROGATE.search(raw)):
                continue  # (undecodable bytes are never stored: the store takes only text)
            held.append(raw)
        return held


class Found(NamedTuple):
    """The export `find_export` judged settled, and the look (`os.stat`) it judged on:
    `Export` reads that file or none (the CRM's job may rename a new one over the path
    between the two)."""

    path: Path
    stat: os.stat_result


def find_export(cfg: SourceConfig, now: datetime) -> Found:
    """The export to read: the path itself, or the newest settled file matching the glob.

    Each match is looked at once (`os.stat`): the CRM's job may remove or rename one
    between the listing and the look (it is passed over, as if never listed), and what
    settled means is judged on that one look."""
    pattern = cfg.path
    if glob.has_magic(pattern):
        found, other = [], ""
        for name in glob.glob(pattern):
            try:
                st = os.stat(name)
            except FileNotFoundError:  # gone since the listing, or a dangling symlink
                continue
            except OSError as exc:  # no permission on its folder, a symlink loop
                raise SourceError(
                    f"cannot read export {name} (a match of {pattern}): {exc.strerror}",
                    hint=_unreadable_hint(exc),
                ) from None
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime, Path(name), st))
            else:
                other = f"{name} is {kind_of(st.st_mode)}"
        if not found:
            raise _no_match(pattern, other)
        found.sort(key=itemgetter(0), reverse=True)
        for mtime, path, st in found:
            if _settled(path, mtime, now, cfg.settle_seconds):
                return Found(path, st)
        _raise_not_settled(found[0][1], found[0][0], now, cfg.settle_seconds)
    path = Path(pattern)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(
            f"export {path} does not exist", hint="check [source] path and that the CRM export ran"
        ) from None
    except OSError as exc:  # a symlink loop, a path through a file, no permission
        raise SourceError(
            f"cannot read export {path}: {exc.strerror}", hint=_unreadable_hint(exc)
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(
            f"export {path} is {kind_of(st.st_mode)}, not a regular file",
            hint="point [source] path at the CRM's export file, or a glob of them",
        )
    if not _settled(path, st.st_mtime, now, cfg.settle_seconds):
        _raise_not_settled(path, st.st_mtime, now, cfg.settle_seconds)
    return Found(path, st)


def _version(st: os.stat_result) -> tuple[int, int, int, int]:
    """Which file, at which length and modification: a file renamed over the path, or
    written to, is another version."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _no_match(pattern: str, other: str) -> SourceError:
    """Why nothing matches the glob: a match that is no file, or a folder missing or that
    syncd may not list (`glob` says nothing of either), else the export did not run."""
    why = f": {other}, not a regular file" if other else ""
    parts = Path(pattern).parts
    folder = Path(*parts[: next(i for i, part in enumerate(parts) if glob.has_magic(part))])
    hint: str | None = "check [source] path and that the CRM export ran"
    try:
        os.scandir(folder).close()
    except FileNotFoundError:
        why, hint = f": folder {folder} does not exist", "check [source] path"
    except OSError as exc:
        why, hint = f": cannot list folder {folder}: {exc.strerror}", _unreadable_hint(exc)
    return SourceError(f"no export matches {pattern}{why}", hint=hint)


def _unreadable_hint(exc: OSError) -> str | None:
    """What to do about an export syncd may not read: who it is, for `chmod`/`chown`."""
    if not isinstance(exc, PermissionError):
        return None
    return (
        f"syncd runs as uid {os.geteuid()}: let that user read the file and search its "
        "folders (a group it shares with the CRM's job, or an ACL)"
    )


def _settled(path: Path, mtime: float, now: datetime, settle: float) -> bool:
    """Unchanged for `settle` seconds (0: not waited for). A modification time in the future
    (the writing host's clock ahead, on a share) can say nothing of that: it is refused by
    name, rather than waited on for as long as the clocks differ, or, in a glob, passed over
    for last night's export without a word."""
    if not settle:
        return True
    age = now.timestamp() - mtime
    if age < -SKEW:
        raise NotSettledError(
            f"export {path} was modified {-age:.0f}s in the future by this host's clock: the "
            "clock of the host that wrote it is ahead, so syncd cannot tell whether it is "
            "still being written",
            hint="set that host's clock right (NTP); or, if the CRM writes the export whole and "
            "renames it into place, set [source] settle_seconds = 0",
        )
    return age >= settle


def _raise_not_settled(path: Path, mtime: float, now: datetime, settle: float) -> NoReturn:
    raise NotSettledError(
        f"export {path} was modified {now.timestamp() - mtime:.0f}s ago and may still be "
        "being written",
        hint=f"syncd waits until it is unchanged for {settle:g}s ([source] settle_seconds); "
        "try again shortly",
    )


def _key_hint(key: str, header: list[str], delimiter: str, first: str, head: bytes) -> str:
    """What to do when the key is not in the header: the column it most likely means, or
    the delimiter, encoding or file it most likely is, else the columns there are."""
    fold = {" ".join(h.split()).casefold(): h for h in header}
    near = fold.get(" ".join(key.split()).casefold())  # case, spaces, a non-breaking space
    if near is not None:
        return f"the header has {near!r}: set [source] key = {near!r}"
    if first.lower().startswith("sep="):
        return (
            f"the first line is {first.strip()[:20]!r}, a spreadsheet's delimiter line, not "
            "the header: export without it"
        )
    if "\0" in first:
        # UTF-16 (Excel's "Unicode Text") read in a single-byte encoding, or without its BOM
        marked = next((name for bom, name in _BOMS if head.startswith(bom)), None)
        if marked is None and head[1:4:2] == b"\0\0" and 0 < head[0] < 0x80:
            marked = "utf-16-le"  # `R\0e\0`: ASCII letters, each with a NUL after it
        elif marked is None and head[0:3:2] == b"\0\0" and 0 < head[1] < 0x80:
            marked = "utf-16-be"
        if marked is not None:
            return f'the file is {marked.upper()} text: set [source] encoding = "{marked}"'
        return "the header holds NUL bytes: this is not a CSV export; check [source] path"
    others = [d for d in ",;\t|" if d != delimiter and d in first]
    if len(header) == 1 and others:
        return (
            f"the header is one column when split at {delimiter!r}; it holds {others[0]!r}: "
            f"set [source] delimiter = {others[0]!r} (or leave it out to detect it)"
        )
    return "set [source] key to one of: " + ", ".join(repr(h[:60]) for h in header[:20])


class Export:
    """An open export: header, key column index and a stream of rows."""

    def __init__(
        self,
        path: Path | Found,
        cfg: SourceConfig,
        *,
        force: bool = False,
        header_only: bool = False,
    ) -> None:
        """`path`: what `find_export` found, which must still be the file it judged settled
        when it is opened (else `NotSettledError`); or a path nobody judged (`syncd init`).
        `force`: read an export that ends mid-record (the CRM's job died while writing
        it) with that record quarantined, rather than refuse it (`GuardError`).
        `header_only`: read and check the header alone, with no key (`syncd init` reads it
        to find the key); nothing else of the export may be used."""
        self._judged: os.stat_result | None = None
        if isinstance(path, Found):
            path, self._judged = path
        self.path = path
        self.cfg = cfg
        self.force = force
        self.header_only = header_only
        self.position = 0  # bytes read so far by `blocks` (for a progress display)
        # the file as first opened: later opens, and the end of the read, must find it so
        self._stat: os.stat_result | None = None
        # the export's lines as text, read on as far as `_left_open` needed: (file, next line)
        self._scan: tuple[IO[str], int] | None = None
        encoding = cfg.encoding
        if codecs.lookup(encoding).name == "utf-8":
            encoding = "utf-8-sig"  # strips a byte-order mark when there is one
        self._encoding = encoding
        binary = self._open()
        self._fh = io.TextIOWrapper(binary, encoding=encoding, errors="surrogateescape", newline="")
        try:
            self._start(binary.fileno())
        except BaseException:
            self._fh.close()
            raise

    def _start(self, fd: int) -> None:
        """Check the file as a whole and read its header."""
        path, cfg = self.path, self.cfg
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, SNIFF_BYTES, 0)
            # the last bytes a line break, or the last record may be cut short (`_ending`);
            # or one DOS end-of-file mark (Ctrl-Z) after it, which is no record (`_ctrl_z`)
            tail, breaks = os.pread(fd, 4, max(0, size - 4)), _line_breaks(cfg.encoding, head)
            # (a byte of its own in an encoding whose line breaks are: not UTF-16's `\x1a\0`)
            self._marked = tail.endswith(CTRL_Z) and len(breaks[0]) == 1
            self._ctrl_z = self._marked and tail[:-1].endswith(breaks)
            self._unended = bool(size) and not tail.endswith(breaks) and not self._ctrl_z
            misread = _misread_utf8(_chunks(fd, size), cfg.encoding)
            first = self._fh.readline(MAX_HEADER + 1)
            # lines ending in CRLF, the last (not a blank one) in a CR alone: the file was
            # cut between the two
            cr = breaks[1]
            self._half_crlf = (
                first.endswith("\r\n")
                and tail.endswith(cr)
                and not tail[: -len(cr)].endswith(breaks)
            )
            self._unended = self._unended or (self._half_crlf and not self._ctrl_z)
            self._fh.seek(0)
            sample = self._fh.read(SNIFF_BYTES)
        except OSError as exc:
            raise SourceError(f"cannot read export {path}: {exc.strerror}") from None
        except UnicodeError as exc:
            raise self._undecodable(exc, f"its first {SNIFF_BYTES // 1024} KiB") from None
        if not sample.strip():
            raise SourceError(
                f"export {path} is empty", hint="the CRM export produced no header and no rows"
            )
        if misread:
            raise SourceError(
                f"export {path} is UTF-8, but [source] encoding = {cfg.encoding!r} reads it "
                f"otherwise ({misread}): every accented name would be sent mangled",
                hint='set [source] encoding = "utf-8" (or leave it out): the CRM exports UTF-8',
            )
        if len(first) > MAX_HEADER:
            raise SourceError(
                f"export {path}: the header line is longer than {MAX_HEADER // 1024} KiB",
                hint="this is not a CRM export's header; check [source] path",
            )
        self.delimiter = cfg.delimiter or _sniff(sample)
        self._fh.seek(0)
        self._reader = csv.reader(self._fh, delimiter=self.delimiter, strict=True)
        try:
            header = next(self._reader)
        except (csv.Error, StopIteration) as exc:
            raise SourceError(f"export {path}: cannot read the header line: {exc}") from None
        except UnicodeError as exc:
            raise self._undecodable(exc, "its header") from None
        if len(header) > MAX_COLUMNS:
            raise SourceError(
                f"export {path}: the header has {len(header)} columns, more than {MAX_COLUMNS}",
                hint="this is not a CRM export's header: check [source] path and delimiter",
            )
        self.header = [h.strip() for h in header]
        while self.header and not self.header[-1]:
            self.header.pop()  # empty trailing columns from spreadsheet round-trips
        undecodable = [i + 1 for i, h in enumerate(self.header) if _SURROGATE.search(h)]
        if undecodable:
            marked = next((name for bom, name in _BOMS if head.startswith(bom)), None)
            raise SourceError(
                f"export {path}: the header has bytes that are not valid {cfg.encoding} "
                f"(column {undecodable[0]})",
                hint=f"it starts with a {marked.upper()} byte-order mark: set [source] "
                f'encoding = "{marked}"'
                if marked
                else "re-export the file as UTF-8, or set [source] encoding to the file's",
            )
        if self.header_only:
            return
        if cfg.key not in self.header:
            raise SourceError(
                f"export {path}: key column {cfg.key!r} is not in the header",
                hint=_key_hint(cfg.key, self.header, self.delimiter, first, head),
            )
        dupes = sorted(h for h, n in Counter(self.header).items() if n > 1)
        if "" in dupes:  # a spreadsheet's blank columns, between named ones
            blank = [str(i + 1) for i, h in enumerate(self.header) if not h]
            raise SourceError(
                f"export {path}: the header's columns {', '.join(blank)} have no name",
                hint="name them in the CRM export, or remove them",
            )
        if dupes:
            raise SourceError(
                f"export {path}: the header names {', '.join(map(repr, dupes))} more than once",
                hint="rename the duplicate columns in the CRM export",
            )
        self.key_index = self.header.index(cfg.key)
        ignored = set(cfg.ignore_columns)
        keep = [i for i, h in enumerate(self.header) if h not in ignored]
        # the cells that count for change detection, as one C call per row (itemgetter of
        # one index gives the cell, not a sequence)
        self._pick: Callable[[list[Any]], Sequence[Any]] = (
            itemgetter(*keep) if len(keep) > 1 else itemgetter(slice(keep[0], keep[0] + 1))
        )
        self._raw_start = self._raw_offset()
        if self._raw_start is not None:
            self._texts = _texter(len(self.header), keep, self.delimiter.encode())

    def _raw_offset(self) -> int | None:
        """Where the rows start in bytes, when `_raw_blocks` can read this export: UTF-8, a
        one-line header, a one-byte delimiter."""
        if (
            codecs.lookup(self.cfg.encoding).name != "utf-8"
            or self._reader.line_num != 1
            or len(self.delimiter.encode()) != 1
            or self.delimiter in '"\r\n'
        ):
            return None
        with self._open() as fh:
            first = fh.readline()
        body = first.removesuffix(b"\n").removesuffix(b"\r")
        return None if b"\r" in body else len(first)

    def _open(self) -> IO[bytes]:
        """The export's bytes, if it still is a regular file (a FIFO is refused, never
        waited on: `find_export` looked, but the path may have changed since)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            if self._stat is not None:  # removed since the header was read
                raise self._changed("removed") from None
            raise SourceError(
                f"export {self.path} does not exist",
                hint="if it was there a moment ago, the CRM's job may be replacing it: try "
                "again shortly; else check the path",
            ) from None
        except OSError as exc:
            raise SourceError(
                f"cannot read export {self.path}: {exc.strerror}", hint=_unreadable_hint(exc)
            ) from None
        # looked at before `os.fdopen`, which raises IsADirectoryError of a directory (one
        # opens read-only) and leaves the descriptor open
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode):
            os.close(fd)
            if self._stat is not None:  # a regular file when the header was read
                raise self._changed("replaced")
            raise SourceError(f"export {self.path} is {kind_of(now.st_mode)}, not a regular file")
        fh = os.fdopen(fd, "rb")
        if self._stat is None:
            self._stat = now
            judged = self._judged
            if judged is not None and self.cfg.settle_seconds and _version(now) != _version(judged):
                fh.close()  # a new file renamed over it, or written to, since it was judged
                raise NotSettledError(
                    f"export {self.path} changed since syncd found it settled; nothing was sent",
                    hint="the CRM's job is writing a new export: try again shortly",
                )
        elif (now.st_dev, now.st_ino) != (self._stat.st_dev, self._stat.st_ino):
            fh.close()  # renamed over since the header was read: its rows are not its header's
            raise self._changed("replaced")
        return fh

    def _changed(self, how: str) -> NotSettledError:
        return NotSettledError(
            f"export {self.path} changed while it was read ({how}); nothing was sent",
            hint=f"the CRM's export was still being written; syncd waits until it is "
            f"unchanged for {self.cfg.settle_seconds:g}s ([source] settle_seconds): "
            "try again shortly",
        )

    def _undecodable(self, exc: UnicodeError, where: str) -> SourceError | GuardError:
        """Bytes that an encoding which cannot escape them (UTF-16, UTF-32) fails on; or,
        when they end in part of a character (the decoder met the file's end inside one, or
        between the halves of a UTF-16 surrogate pair), a file cut short by the CRM's job."""
        why = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        if why in ("truncated data", "unexpected end of data"):
            return GuardError(
                f"refused: export {self.path} ends inside its last character (its size is no "
                f"whole number of {self.cfg.encoding} characters): the CRM's export looks cut "
                "short; nothing was sent",
                hint="re-run the CRM export, or wait for its job to finish writing it",
            )
        return SourceError(
            f"export {self.path}: {where} {'is' if 'KiB' in where else 'are'} not valid "
            f"{self.cfg.encoding} ({why})",
            hint="re-export the file, or set [source] encoding to the file's",
        )

    def close(self) -> None:
        self._fh.close()
        if self._scan is not None:
            self._scan[0].close()

    def _unreadable(self, exc: csv.Error, start: int, last: int) -> Bad:
        """The record on `start` the csv module gave up on at line `last`, quarantined; or
        the run refused, when a quoted field is left open at the end of `last`.

        The csv module reads on from the next line as if it began a record. When the
        record's lines so far hold an odd number of quotes, that line is inside a quoted
        field (a field past 1 MiB, a bad quote before a quoted line break): its text would
        be read as records and sent (`1,"…` then `3,Eve,eve@example.com` in the note), and
        the rest of the file read with its quotes the wrong way round."""
        why = _explain(exc)
        if why != _UNCLOSED and self._left_open(start, last):
            raise SourceError(
                f"export {self.path}: line {start} is unreadable ({why}), and a quoted field is "
                f"still open at the end of line {last}: the lines after it cannot be told from "
                "that field's text, so the export is not read; nothing was sent",
                hint=f"fix the quoting from line {start} on, and re-export",
            )
        return Bad(start, None, why)

    def _left_open(self, start: int, last: int) -> bool:
        """Whether lines `start` to `last` hold an odd number of quotes. Read on from where
        the last look ended (the bad records come in file order), so a file of them is read
        once more at most, and only when there is one."""
        if self._scan is None or self._scan[1] > start:
            if self._scan is not None:
                self._scan[0].close()
            opened = io.TextIOWrapper(
                self._open(), encoding=self._encoding, errors="surrogateescape", newline=""
            )
            self._scan = (opened, 1)
        text, at = self._scan
        lines = islice(text, start - at, last - at + 1)
        quotes = sum(map(str.count, lines, repeat('"')))
        self._scan = (text, last + 1)
        return quotes % 2 == 1

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocks(self) -> Iterator[Block]:
        """The records, a block at a time, with their start lines and change texts.

        UTF-8 exports are read as bytes (`_raw_blocks`): a line with no quote is a whole
        record, split on the delimiter without the csv module; the other lines go through
        the csv module exactly as `_csv_blocks` would read them. Other encodings are read
        by `_csv_blocks`.
        """
        blocks = self._raw_blocks() if self._raw_start is not None else self._csv_blocks()
        last = next(blocks, None)
        for block in blocks:  # one block behind: the last one is `_ending`'s
            yield last  # type: ignore[misc]
            last = block
        if last is None:  # no record: the file may have been emptied while it was read
            self._unchanged()
            return
        self._ending(last)
        yield last

    def _unchanged(self) -> None:
        """Refuse an export written to while it was read: its rows are of two versions."""
        now, then = os.fstat(self._fh.fileno()), self._stat
        if then is not None and (now.st_size, now.st_mtime_ns) != (then.st_size, then.st_mtime_ns):
            raise self._changed("written to")

    def _ending(self, block: Block) -> None:
        """Refuse an export whose last record is cut short (no line break after it, or a
        quoted field never closed) unless `force`; with it, quarantine that record. First,
        refuse an export written to while it was read (`_unchanged`)."""
        self._unchanged()
        if self._ctrl_z:
            self._drop_ctrl_z(block)
        lines = block.lines
        at = max(range(len(lines)), key=lines.__getitem__) if lines else None
        bad = max(block.bad, key=attrgetter("line"), default=None)
        unended = "its last line has no line break"
        if self._half_crlf:
            unended = "its last line break is a CR without the LF of every other line's"
        if self._marked:
            unended += (
                ", only a DOS end-of-file mark (Ctrl-Z, \\x1a): syncd takes one after the last "
                "line break as the end of the file, not one in place of it"
            )
        if bad is not None and (at is None or bad.line > lines[at]):
            if bad.reason == _UNCLOSED:
                why = "a quoted field is never closed"
            elif self._unended:
                why = unended
            else:
                return
            line, key, maybe, tail = bad.line, bad.raw, bad.maybe, bad.tail
            block.bad.remove(bad)
        elif at is not None and self._unended:
            why = unended
            line, row = lines[at], block.row(at)
            key, maybe, tail = row[self.key_index].strip(), (), row[-1].strip()
            del lines[at], block.rows[at], block.texts[at]
        else:
            return
        # the cut is inside the record's last cell: where that may be the key, the key is
        # only known to start with it (a line break after it may be all that is missing)
        starts = tuple(cell for cell in dict.fromkeys((key, *maybe)) if cell and cell == tail)
        if not self.force:
            raise GuardError(
                f"refused: export {self.path} ends mid-record at line {line} ({why}): the CRM's "
                "export looks cut short; nothing was sent",
                hint=f"re-run the CRM export; if the file is complete, `syncd sync --force` "
                f"reads it with line {line} quarantined",
            )
        reason = f"the file ends mid-record: {why}"
        if key is not None and key in starts:  # not the key of the contact it shows
            reason += f"; its key may be cut: it begins {visible(key)[:60]!r}"
            key = None
        block.bad.append(Bad(line, key or None, reason, maybe=maybe, starts=starts))

    def _drop_ctrl_z(self, block: Block) -> None:
        """Drop the DOS end-of-file mark (Ctrl-Z) after the last line break: old Windows
        tools end a text file with one. It is the file's last line, and read as a record of
        one cell (a row, or one of the wrong width), unless a quoted field runs into it (then
        no record starts there, and the field left open is refused as ever). A file cut
        short ends at any byte: it ends in a line break and Ctrl-Z only where a record
        starts with Ctrl-Z, which none of a CRM's does."""
        if any(bad.reason == _UNCLOSED for bad in block.bad):
            return  # the open field runs to the end of the file, the Ctrl-Z inside it
        last = block.end - 1  # (the csv path's end stops short of a field left open)
        if last in block.lines:
            j = block.lines.index(last)
            del block.lines[j], block.rows[j], block.texts[j]
        elif not any(bad.line == last for bad in block.bad):
            return
        block.bad = [bad for bad in block.bad if bad.line != last]
        block.records -= 1

    def _csv_blocks(self) -> Iterator[Block]:
        """The records through the csv module, a block at a time (exports not in UTF-8,
        and the reference the raw path is tested against).

        The csv module parses a whole block in one C call (`list.extend(islice(...))`), and
        what every record needs (its width checked, its change text, the line it starts
        on) runs over the block as C-level `map`s: no Python code runs per record unless
        the block holds an odd one (a blank line, a row of the wrong width, a lone CR in a
        cell).

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
            except UnicodeError as exc:
                raise self._undecodable(exc, f"the bytes after line {reader.line_num}") from None
            if not records and error is None:
                return
            first, done = done + 1, reader.line_num
            block = self._block(records, first, None if error else done - first + 1)
            if (
                error is not None
            ):  # a record all the same: `plan.rows_read - quarantined` stays true
                block.bad.append(self._unreadable(error, block.end, done))
                block.records += 1
            self.position = self._fh.buffer.tell()
            yield block

    def _block(self, records: list[list[str]], first: int, consumed: int | None) -> Block:
        texts = self._usual(records)
        starts = _starts(records, first, None if texts is None else consumed, texts)
        block = self._fill(records, starts[:-1], texts)
        block.end = starts[-1]
        return block

    def _fill(self, records: list[list[str]], starts: list[int], texts: list[str] | None) -> Block:
        """A block of records the csv module parsed, each with the line it starts on: taken
        whole when `_usual` gave their change texts, else each through `_one`."""
        if texts is not None:
            return Block(starts, records, _encode(texts), records=len(records))
        block = Block([], [], [])
        for start, row in zip(starts, records, strict=True):
            self._one(block, start, row)
        return block

    def _usual(self, records: list[list[str]]) -> list[str] | None:
        """The change texts, when every record has the header's width (or one empty cell
        more): the usual block, taken whole. None: look at each with `_one`."""
        width = len(self.header)
        widths = set(map(len, records))
        if widths == {width} or (
            widths == {width + 1} and not any(map(itemgetter(width), records))
        ):
            return list(map(SEP.join, map(self._pick, records)))
        return None

    def _one(self, block: Block, start: int, row: list[str]) -> None:
        """Add one record parsed by the csv module to `block`: kept, bad, or a blank line."""
        width, n = len(self.header), len(row)
        if not n:
            return  # a blank line
        block.records += 1
        if n < width or (n > width and "".join(row[width:]).strip()):
            block.bad.append(self._misfit(start, row))
            return
        block.lines.append(start)
        block.rows.append(row)
        block.texts.extend(_encode([SEP.join(self._pick(row))]))

    def _misfit(self, start: int, row: list[str]) -> Bad:
        """A record of the wrong width, quarantined under its key where it can be told.

        A cell holding the delimiter unquoted (`Ann, Jr`) moves the cells after it right,
        one left out moves them left: the key column's cell may be another column's (the
        phone), and the key one of its neighbours. Only a key in the first column stays in
        place. Each cell it may be holds its known contact back (`Bad.maybe`): the contact
        is in the file, not gone, and the quarantine names no other contact's key."""
        width, n, at = len(self.header), len(row), self.key_index
        reason = f"has {n} field{'s' if n != 1 else ''}, the header has {width}"
        if n > width:  # cells before the key split in two: it is up to n - width further
            low, high = at, at + (n - width if at else 0)
        else:  # cells before it left out: up to width - n nearer the start
            low, high = max(0, at - (width - n)), at
        cells = dict.fromkeys(row[i].strip() if i < n else "" for i in range(low, high + 1))
        tail = row[-1].strip() if row else None
        if len(cells) < 2:  # one cell it can be, or all alike (an empty one, none: no key)
            return Bad(start, next(iter(cells), None) or None, reason, tail=tail)
        cells.pop("", None)
        shown = ", ".join(repr(visible(cell)[:60]) for cell in cells)
        reason += (
            f" (key column {self.cfg.key!r} may be {shown}: a cell holds the delimiter "
            "unquoted, or one is missing)"
        )
        return Bad(start, None, reason, maybe=tuple(cells), tail=tail)

    def _raw_blocks(self) -> Iterator[Block]:
        """The records of a UTF-8 export, read as bytes `RAW_BYTES` at a time.

        Lines end where the file object ends them (CRLF, LF or a lone CR). A line
        without a quote that holds the header's width of delimiters is a record by itself,
        and its change text is its own bytes: where each line ends and how many quotes and
        delimiters it holds are counted with numpy over the whole block, so nothing runs
        per line but `bytes.splitlines`, and nothing is decoded unless the row turns out
        new or changed. Every other line is handed to the csv module, from where the last
        record ended, and the csv module decides how many lines its record takes (a
        quoted field may run on past the block: the lines are read for it). So a stray
        quote costs speed, never a wrong record.
        """
        width, delimiter = len(self.header), self.delimiter.encode()
        assert self._raw_start is not None
        with self._open() as fh:
            fh.seek(self._raw_start)
            line, carry = 2, b""  # the line the block starts on (the header is line 1)
            while chunk := carry + fh.read(RAW_BYTES):
                if not chunk.endswith(b"\n"):
                    chunk += fh.readline()  # never end between a CR and its LF
                starts, stops, ends = _line_bounds(chunk)
                n = len(starts)
                data = np.frombuffer(chunk, dtype=np.uint8)
                quotes = _per_line(data == ord('"'), starts)
                cells = _per_line(data == delimiter[0], starts) + 1
                trailing = (ends > starts) & (data[ends - 1] == delimiter[0])  # ";" at the end
                # a record: no quote, and the header's width, or one empty cell more (a
                # spreadsheet's habit); a blank line is none
                raw = (quotes == 0) & ((cells == width) | ((cells == width + 1) & trailing))
                raw &= stops - starts < LONG  # else the counts may have wrapped
                if width == 1:
                    raw &= ends > starts
                if SEP_BYTES in chunk:  # (no real export has them: one look a block)
                    at = [m.start() for m in re.finditer(re.escape(SEP_BYTES), chunk)]
                    raw[np.searchsorted(starts, at, side="right") - 1] = False
                block, feed = self._others(_Slices(chunk, starts, stops), quotes, raw, line, fh)
                bodies = list(compress(chunk.splitlines(), raw.tolist()))
                texts = self._texts(bodies, cells[raw] - width)
                block.add((np.flatnonzero(raw) + line).tolist(), bodies, texts)
                block.records += len(bodies)
                line += n + feed.past
                carry = feed.carry
                block.end = line
                self.position = fh.tell()
                yield block

    def _others(
        self, lines: _Slices, quotes: np.ndarray, raw: np.ndarray, first: int, fh: IO[bytes]
    ) -> tuple[Block, _Lines]:
        """The records that start on lines the raw path cannot read, through the csv module.

        Each run starts where a record ended, so the csv module is never handed half a
        record. Lines a record takes are unmarked in `raw`: they belong to that record.
        `_batch` parses them all in one pass when it can; this walks them one by one.
        """
        feed, n = _Lines(lines, fh), len(lines)
        block = self._batch(lines, quotes, raw, first)
        if block is not None:
            return block, feed
        block = Block([], [], [], delimiter=self.delimiter.encode())
        reader = csv.reader(feed, delimiter=self.delimiter, strict=True)
        for j in np.flatnonzero(~raw).tolist():
            if j < feed.pos:
                continue  # part of the record before
            feed.pos = j
            while True:
                start = first + feed.pos
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    block.records += 1
                    block.bad.append(self._unreadable(exc, start, first + feed.pos - 1))
                else:
                    self._one(block, start, row)
                if feed.pos >= n or raw[feed.pos]:
                    break  # the block's end, or a line the raw path reads
            raw[j : feed.pos] = False
        return block, feed

    def _batch(
        self, lines: _Slices, quotes: np.ndarray, raw: np.ndarray, first: int
    ) -> Block | None:
        """`_others`' records in one csv module pass, or None when that cannot be trusted.

        In well-formed CSV a record that starts on a line with an odd number of quotes
        ends on the next such line, and any other record is one line: so the lines the
        csv module must see, and where each record starts, are known up front. The records
        it returns are held to that (their number, and the lines each one took); a stray
        quote, a quoted field running past the block or a csv error means None, and the
        walk does it. Worth it when many lines are quoted (exports quoting every field).
        """
        odd = np.flatnonzero(quotes & 1)
        if len(odd) % 2:
            return None
        runs = np.zeros(len(lines) + 1, dtype=np.int64)  # +1 from a record's second line
        runs[odd[0::2] + 1] += 1
        runs[odd[1::2] + 1] -= 1  # to the line after its last
        inside = np.cumsum(runs[:-1]) > 0
        member = ~raw | inside
        heads = np.flatnonzero(member & ~inside)
        # where each record should end: the lines the csv module has taken by then
        taken = np.cumsum(member)
        ends = np.append(taken[heads[1:]] - 1, taken[-1])[: len(heads)]
        decoded = map(
            bytes.decode,
            lines.picked(member),
            repeat("utf-8"),
            repeat("surrogateescape"),
        )
        reader = csv.reader(decoded, delimiter=self.delimiter, strict=True)
        try:  # each record, and the lines taken when it ended
            read = list(zip(reader, map(attrgetter("line_num"), repeat(reader)), strict=False))
        except csv.Error:
            return None
        took = np.fromiter(map(itemgetter(1), read), dtype=np.int64, count=len(read))
        if len(read) != len(heads) or (took != ends).any():
            return None
        records = list(map(itemgetter(0), read))
        raw[member] = False
        block = self._fill(records, (heads + first).tolist(), self._usual(records))
        block.delimiter = self.delimiter.encode()
        return block

    def rows(self, on_bad: Callable[[Bad], None]) -> Iterator[tuple[int, list[str]]]:
        """Record by record, in file order: `(line, row)` for good rows, cut to the header's
        width; bad ones go to `on_bad`."""
        width = len(self.header)
        for block in self.blocks():
            items: list[tuple[int, list[str] | Bad]] = [
                (line, block.row(j)[:width]) for j, line in enumerate(block.lines)
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
    its change text, and the bad records. Sort by line where order matters (see `add`).

    A row may hold blank cells past the header's width (the empty trailing column of
    spreadsheet round-trips): index it by column. Its change text names exactly the cells
    that count for change detection ([source] ignore_columns left out): for a line read
    raw, the line's own bytes less any ignored cells (`_texter`); for a record the csv
    module read, those cells joined by `SEP`. The fingerprints of the texts are all the
    diff looks at for an unchanged row, so equal texts must mean equal cells.
    """

    lines: list[int]
    rows: list[Any]  # each a list[str], or a line read raw (bytes): `row(j)` splits it
    texts: list[bytes]  # UTF-8
    bad: list[Bad] = field(default_factory=list)
    records: int = 0  # records read, good and bad (blank lines are not records)
    end: int = 0  # the line after the block's last record
    delimiter: bytes = b","  # splits the rows read raw

    def row(self, j: int) -> list[str]:
        row = self.rows[j]
        if isinstance(row, bytes):  # (an ASCII delimiter: splitting after decoding is the same)
            return row.decode("utf-8", "surrogateescape").split(self.delimiter.decode())
        return row  # type: ignore[no-any-return]

    def add(self, lines: list[int], rows: list[bytes], texts: list[bytes]) -> None:
        """Add rows read raw, after those read through the csv module: a block read raw
        is in file order within each kind, not across them."""
        self.lines += lines
        self.rows += rows
        self.texts += texts


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
    extra = _breaks(records).tolist()
    return list(accumulate(map(add, extra, repeat(1)), initial=first))


def _texter(
    width: int, keep: list[int], delimiter: bytes
) -> Callable[[list[bytes], np.ndarray], list[bytes]]:
    """Change texts straight from raw lines: the line itself, or without the ignored cells.

    A line read raw has no quote and the header's width, so its bytes name its cells
    exactly; its text is not the `SEP`-joined text of a record the csv module read (a row
    quoted in one export and not in the next is looked at once more, nothing else).
    Ignored columns are cut out with one split bounded to reach them from the nearer end
    (a handful of pieces rather than a piece per column). The texts are given the lines
    and, for each, how many cells past the header's width it has (0, or 1 empty one).
    """
    if len(keep) == width:
        return lambda lines, _extra: lines
    kept = set(keep)
    ignored = sorted(set(range(width)) - kept)
    first, last = ignored[0], ignored[-1]
    if first and width - first < last + 1:  # from the right: the rest of the line, then cells
        cuts = width - first
        parts = [0] + [k for k in range(1, cuts + 1) if first + k - 1 in kept]

        def split(lines: list[bytes], extra: np.ndarray) -> Iterator[list[bytes]]:
            # an empty cell past the header's width is one piece more, at the end: not picked
            return map(bytes.rsplit, lines, repeat(delimiter), (extra + cuts).tolist())
    else:  # from the left: cells, then the rest of the line (with any empty cell past it)
        cuts = last + 1
        parts = [k for k in range(cuts) if k in kept] + ([cuts] if cuts < width else [])

        def split(lines: list[bytes], extra: np.ndarray) -> Iterator[list[bytes]]:
            return map(bytes.split, lines, repeat(delimiter), repeat(cuts))

    pick = itemgetter(*parts) if len(parts) > 1 else itemgetter(slice(parts[0], parts[0] + 1))
    return lambda lines, extra: list(map(delimiter.join, map(pick, split(lines, extra))))


def _line_bounds(chunk: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each line of `chunk` starts, where it ends without its line break, and after
    it: the lines `bytes.splitlines` gives (a break is CRLF, LF or a lone CR)."""
    data = np.frombuffer(chunk, dtype=np.uint8)
    lf = data == ord("\n")
    breaks = ends = np.flatnonzero(lf)
    if b"\r" in chunk:
        cr = data == ord("\r")
        crlf = (data[breaks - 1] == ord("\r")) & (breaks > 0)
        if np.count_nonzero(cr) == np.count_nonzero(crlf):  # no lone CR
            ends = breaks - crlf
        else:
            pairs = np.zeros(len(data), dtype=bool)  # the LF of each CRLF
            pairs[1:] = cr[:-1] & lf[1:]
            breaks = np.flatnonzero(lf | cr & ~np.append(pairs[1:], False))
            ends = breaks - pairs[breaks]
    stops = breaks + 1
    if not len(breaks) or stops[-1] < len(data):  # the file's last line, without a break
        stops, ends = np.append(stops, len(data)), np.append(ends, len(data))
    starts = np.zeros(len(stops), dtype=np.int64)
    starts[1:] = stops[:-1]
    return starts, stops, ends


def _per_line(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """How many of each line's bytes `mask` marks, modulo 65536 (summed in 16 bits, four
    times as fast as in 64): exact, and its parity right, for lines shorter than `LONG`."""
    if not mask.any():
        return np.zeros(len(starts), dtype=np.uint16)
    counts: np.ndarray = np.add.reduceat(mask.view(np.uint8), starts, dtype=np.uint16)
    return counts


class _Slices:
    """A block's lines with their breaks, cut from the chunk only when asked for."""

    def __init__(self, chunk: bytes, starts: np.ndarray, stops: np.ndarray) -> None:
        self.chunk, self.starts, self.stops = chunk, starts, stops

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, j: int) -> bytes:
        return self.chunk[int(self.starts[j]) : int(self.stops[j])]

    def picked(self, mask: np.ndarray) -> Iterator[bytes]:
        """The lines `mask` marks."""
        return map(
            self.chunk.__getitem__,
            map(slice, self.starts[mask].tolist(), self.stops[mask].tolist()),
        )


def _breaks(records: list[list[str]]) -> np.ndarray:
    """The line breaks inside each record's cells: CRLF, CR or LF, as the file object and
    `bytes.splitlines` split lines."""
    joined = list(map(SEP.join, records))  # not "": a CR ending one cell and an LF
    # starting the next are two breaks
    count = partial(np.fromiter, dtype=np.int64, count=len(joined))
    breaks: np.ndarray = count(map(str.count, joined, repeat("\n")))
    breaks += count(map(str.count, joined, repeat("\r")))
    breaks -= count(map(str.count, joined, repeat("\r\n")))
    return breaks


def _encode(texts: list[str]) -> list[bytes]:
    return list(map(str.encode, texts, repeat("utf-8"), repeat("surrogatepass")))


class _Lines:
    """A raw block's lines for the csv module, from any line on (`pos`); past the block's
    end, read on from the file for a quoted field that runs on. What was read past the
    block and not taken is `carry`, for the next block."""

    def __init__(self, lines: _Slices, fh: IO[bytes]) -> None:
        self.lines, self.fh, self.pos, self.carry = lines, fh, 0, b""
        self._more: list[bytes] = []  # read past the block, reversed

    @property
    def past(self) -> int:
        """Lines taken past the block."""
        return max(0, self.pos - len(self.lines))

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.pos < len(self.lines):
            line = self.lines[self.pos]
        else:
            if not self._more:
                self._more = self.fh.readline().splitlines(keepends=True)[::-1]
                if not self._more:
                    raise StopIteration
            line = self._more.pop()
            self.carry = b"".join(reversed(self._more))
        self.pos += 1
        return line.decode("utf-8", "surrogateescape")


def defect(row: list[str], header: list[str], encoding: str, key: int | None = None) -> str | None:
    """Why a row cannot be used as it is: bytes the encoding cannot decode, NUL bytes, or a
    byte-order mark (a file's first bytes, here inside a row: files joined into one); or,
    in its key (column `key`), a character that prints as nothing or as a space (`visible`).

    Such rows are quarantined rather than repaired: a guessed repair could send a
    mangled name to a vendor, and the operator is told which column to look at.
    """
    joined = "".join(row)  # the usual row: one look at all its cells
    if "\x00" in joined or (
        not joined.isascii() and (_ODD[encoding].search(joined) or "\ufeff" in joined)
    ):
        problem = _cells(row, header, encoding)
        if problem:
            return problem
    return None if key is None or row[key].strip().isprintable() else _hidden(row, header, key)


def _cells(row: list[str], header: list[str], encoding: str) -> str | None:
    """`defect`'s look at each cell of a row that holds an odd character (`_ODD`)."""
    if _single_byte(encoding) and (pasted := _pasted_utf8(row, header, encoding)):
        return pasted
    for name, cell in zip(header, row, strict=False):
        if "\x00" in cell:
            return f"column {name!r} contains a NUL byte; re-export the file or remove the byte"
        if "\ufeff" in cell:  # invisible: `\ufeff2` would be a contact of its own, not 2
            return (
                f"column {name!r} holds a byte-order mark (U+FEFF), which only starts a file: "
                "two files joined into one? re-export the file or remove the mark"
            )
        if not cell.isascii() and _SURROGATE.search(cell):
            return (
                f"column {name!r} has bytes that are not valid {encoding}; re-export as "
                "UTF-8 or set [source] encoding"
            )
    return None


@functools.cache
def _single_byte(encoding: str) -> bool:
    """Whether `encoding` reads every byte as one character (cp1252, Latin-1, KOI8-R): UTF-8
    text then reads as other text (`RenÃ©e`), where other encodings would fail on it."""
    return not codecs.lookup(encoding).name.startswith(("utf-", "utf_")) and (
        len(bytes(range(256)).decode(encoding, "replace")) == 256
    )


class _Odd(dict[str, re.Pattern[str]]):
    """What sends a non-ASCII row through `_cells`, per encoding: bytes the encoding cannot
    decode; and, in a single-byte encoding, a UTF-8 continuation byte as that encoding reads
    one (the `©` of `Ã©`), which every non-ASCII UTF-8 character has. One scan either way, so a row
    in cp1252 without one (`Renée`: é, then an ASCII e) costs what a UTF-8 row does. (A
    dict, not a cached function: a hit is one subscript, on every new or changed row.)"""

    def __missing__(self, encoding: str) -> re.Pattern[str]:
        pattern = _SURROGATE
        if _single_byte(encoding):
            follow = bytes(range(0x80, 0xC0)).decode(encoding, "surrogateescape")
            pattern = re.compile(f"[\udc80-\udcff{re.escape(follow)}]")
        self[encoding] = pattern
        return pattern


_ODD = _Odd()


# what UTF-8 bytes read in cp1252 may happen to be, but no text pasted in from a UTF-8 file
# is: C1 controls (`Â€`), IPA (`É™` is ə, `Ê…` ʅ), spacing modifiers, Syriac, Thaana and
# NKo (`ß…`), private use. A cell whose UTF-8 reading holds one is taken as it reads (so
# Azerbaijani's ə, in IPA's block, pasted in as UTF-8 goes through mangled: `MÉ™mmÉ™d`).
_NOT_PASTED = re.compile("[\x80-\x9f\u0250-\u02ff\u0700-\u07ff\ue000-\uf8ff]")


def _pasted_utf8(row: list[str], header: list[str], encoding: str) -> str | None:
    """Why a row of an export read in a single-byte encoding cannot be sent: a cell whose
    bytes are UTF-8 (a row pasted in from a UTF-8 file; `_misread_utf8` refuses a file
    that is UTF-8 throughout), which would go to the vendors as `RenÃ©e`.

    Text in a single-byte encoding is almost never valid UTF-8: an accent is one byte, which
    UTF-8 never has alone, so `Renée` fails at its é. Only an accented capital (or ß, or
    a lower-case one with two) directly followed by a symbol such as ™, …, » or ’ forms a
    UTF-8 character, and what those read as (IPA, Syriac, NKo) is no text a CRM gets
    pasted: such cells are taken as they read (`_NOT_PASTED`). A cell the CRM itself holds
    mangled (`RenÃ©e` typed in) is caught too: it is mangled either way."""
    for name, cell in zip(header, row, strict=False):
        if cell.isascii():
            continue
        try:
            text = cell.encode(encoding, "surrogateescape").decode("utf-8")
        except UnicodeError:
            continue
        if _NOT_PASTED.search(text):
            continue
        shown = repr(cell).replace("\\udc", "\\x")  # bytes the encoding lacks as bytes
        return (
            f"column {name!r} is UTF-8 in this {encoding} export (a row pasted in from a "
            f"UTF-8 file?): it reads as {shown}, not {text!r}; fix the row in the CRM and "
            're-export, or export the whole file as UTF-8 and set [source] encoding = "utf-8"'
        )
    return None


def _hidden(row: list[str], header: list[str], key: int) -> str:
    """What is wrong with a key holding a character that does not print as itself: a
    zero-width space, joiner or soft hyphen pasted with it (`CRM-1\\u200b`), a no-break
    space, a control character. Sent, it would be a contact of its own beside the key it
    looks like, and the contact the row is (`visible`) would look gone."""
    cell = row[key].strip()
    at, char = next((i, c) for i, c in enumerate(cell) if not c.isprintable())
    name = unicodedata.name(char, "") or _UNNAMED.get(unicodedata.category(char), "")
    return (
        f"key column {header[key]!r} holds U+{ord(char):04X} {name} at character {at + 1} "
        f"({cell!r}), which does not show: it would be a contact of its own beside "
        f"{visible(cell)!r}; remove it from the key in the CRM (a copy-paste?) and re-export"
    )


_UNNAMED = {
    "Cc": "a control character",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
}


def visible(key: str) -> str:
    """What a key looks like: without the characters that do not show (`_hidden`), a
    no-break space or a tab as a space. Undecodable bytes stay, for `Bad` to show."""
    return "".join(
        c if c.isprintable() or _SURROGATE.match(c) else " "
        for c in key
        if c.isprintable() or c.isspace() or _SURROGATE.match(c)
    )


def _misread_utf8(data: bytes | Iterable[bytes], encoding: str) -> str | None:
    """How an export, non-ASCII and valid UTF-8 throughout, reads in `encoding` when that
    is another one (a CRM switched to UTF-8, the config still says cp1252): line 5001 'é'
    as 'Ã©'. A single-byte encoding decodes any byte, so nothing else would notice; text in
    such an encoding is almost never valid UTF-8 (an é is one byte, not a pair). Multi-byte
    ones (UTF-16, GBK, Shift JIS) are left alone: their own checks, or their text, differ.

    `data`: the export's bytes, or its chunks in order. The whole file counts: the first
    accented name may be on line 5,000. It costs little: an ASCII chunk is skipped at
    memory speed, and a real cp1252 export stops the look at its first accent. A file that
    starts with UTF-8's byte-order mark is UTF-8 even with other bytes further on (rows
    pasted in from elsewhere): those are quarantined when it is read as UTF-8, while in
    cp1252 its UTF-8 names would be sent mangled."""
    if not _single_byte(encoding):
        return None
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines, at, char = 0, 0, -1, ""
    for chunk in [data] if isinstance(data, bytes) else data:
        if not offset and chunk.startswith(codecs.BOM_UTF8):
            char = "\ufeff"  # UTF-8's own mark: the file says what it is, whatever follows
            break
        if at < 0:
            if chunk.isascii():  # nothing held by the decoder yet: nothing to look at
                offset += len(chunk)
                lines += chunk.count(b"\n")
                continue
            first = next(i for i, byte in enumerate(chunk) if byte >= 0x80)
            at, lines = offset + first, lines + chunk.count(b"\n", 0, first)
        try:
            text = decoder.decode(chunk)  # a character cut at the chunk's end waits for the next
        except UnicodeDecodeError:
            return None
        if not char and (found := _NON_ASCII.search(text)):
            char = found.group()
        offset += len(chunk)
    if not char:
        return None  # all ASCII (or one character cut at the file's end)
    as_read = char.encode("utf-8").decode(encoding, "replace")
    return f"line {lines + 1}: {char!r} as {as_read!r}"


def _chunks(fd: int, size: int) -> Iterator[bytes]:
    """The file's first `size` bytes, `SCAN_BYTES` at a time."""
    offset = 0
    while offset < size and (chunk := os.pread(fd, min(SCAN_BYTES, size - offset), offset)):
        yield chunk
        offset += len(chunk)


# the byte-order marks of the encodings a file announces (UTF-16: Excel's "Unicode Text"),
# longest first (UTF-32 LE's starts with UTF-16 LE's)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _line_breaks(encoding: str, head: bytes) -> tuple[bytes, bytes]:
    """LF and CR as the export's bytes: in UTF-16 and UTF-32, two and four of them, in the
    order its byte-order mark gives (a UTF-16 export ends in `\\n\\0`, not `\\n`)."""
    name = codecs.lookup(encoding).name
    if name in ("utf-16", "utf-32"):
        big = head.startswith(codecs.BOM_UTF16_BE if name == "utf-16" else codecs.BOM_UTF32_BE)
        name += "-be" if big else "-le"
    try:  # the second of two: an encoder that starts with a mark (utf-8-sig) gives it once
        lf, cr = (len(c.encode(name)) for c in "\n\r")
        return "\n\n".encode(name)[lf:], "\r\r".encode(name)[cr:]
    except (LookupError, UnicodeError):  # (an encoding without them has no lines anyway)
        return b"\n", b"\r"


_UNCLOSED = "the file ends inside a quoted field: the export looks truncated; re-export it"


def _explain(exc: csv.Error) -> str:
    """A csv module error in the operator's terms."""
    text = str(exc)
    if "unexpected end of data" in text:
        return _UNCLOSED
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
