"""The fast path: which rows of the export are byte-for-byte what the store last recorded.

A 64-bit fingerprint of each raw row (salted with everything vendors' views depend on) is
looked up, a block of rows at a time, among the sorted fingerprints of the live contacts.
A hit means no vendor can need the row: only its position goes on. No dict of a million
keys is ever built, and no Python code runs per row here.

`Known` holds the known fingerprints and what this diff learns about each (seen on which
line, replaced by a changed row, gone), and the fingerprints and rowids live after the
diff, for the store's cache. It knows nothing of vendors; it reads the contacts table
through a `Rows` (`syncd.state.diffed.DiffStore`).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Protocol

import numpy as np
from xxhash import xxh3_64_intdigest

from syncd.source import Bad, Export

# the known fingerprints dealt with at a time where a whole-size temporary would do (the
# finder's table, the next cache): 512 KB of int64
_SLICE = 1 << 16


def fingerprint(text: bytes, seed: int) -> int:
    """A seeded 63-bit XXH3 of a row's text (fits a signed SQLite integer).

    XXH3 rather than a cryptographic hash: it is one C call per row, which is most of what
    keeps the fast path near a bare CSV pass; the rows are not adversarial.
    """
    return xxh3_64_intdigest(text, seed) >> 1


class Rows(Protocol):
    """What `Known` reads of the contacts table."""

    def cached(self) -> np.ndarray | None:
        """The cache's fingerprints, None if stale."""

    def cached_rowids(self, at: np.ndarray) -> np.ndarray | None:
        """The cache's rowids at the places `at` (ascending), None if stale: read from the
        cache as needed, never all of them at once."""

    def live(self) -> tuple[np.ndarray, np.ndarray]:
        """Every live contact's fingerprint, sorted, and its rowid (a table scan)."""

    def key_at(self, rowid: int, rhash: int) -> str | None:
        """The key of the contact at `rowid` if its fingerprint is `rhash`."""


class Known:
    """The live contacts' fingerprints, sorted, and what this diff found of each.

    Per contact it holds 12 bytes: the fingerprint and the line it was seen on. The rowids
    stay in the store's cache, read where needed (`_rowids`); the few rows replaced are
    a list (`replacing`), not a flag per contact.
    """

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        cached = rows.cached()
        # each fingerprint's contact, when read from the table; None: in the cache
        self.rowids: np.ndarray | None = None
        if cached is None:
            cached, self.rowids = rows.live()
        self.fps = cached
        self.seen = np.zeros(len(cached), dtype=np.int32)  # the line each was seen on, 0 = none
        self.added = array("q")  # the fingerprints written for changed and new rows
        self.added_rows = array("q")  # and the rowids they were written to
        self.replacing = array("q")  # the known rows replaced, in the order of `added`
        self.replacing_at = array("q")  # and where in `added` their new fingerprint is
        self.renumbered = False  # a cached rowid named the wrong row: all were read again

    def __len__(self) -> int:
        return len(self.fps)

    def see(self, found: np.ndarray, lines: np.ndarray) -> tuple[int, list[tuple[int, str, int]]]:
        """Mark the known rows at `found` seen on `lines`: how many were unchanged, and the
        rows repeated byte for byte as (line, key, first line) (the first one wins)."""
        seen = self.seen
        if not seen[found].any():  # the usual part: every hit a known row not seen before
            seen[found] = lines
            if (seen[found] == lines).all():  # and none twice in the part
                return int(found.size), []
            seen[found] = 0
        unchanged, repeats = 0, []
        for i, line in sorted(zip(found.tolist(), lines.tolist(), strict=True), key=itemgetter(1)):
            first = int(seen[i])
            if first:
                repeats.append((line, self._key_of(i), first))
            else:
                seen[i] = line
                unchanged += 1
        return unchanged, repeats

    def claim(self, rhash: int, line: int) -> tuple[int, int]:
        """A changed row of the known contact whose fingerprint was `rhash`, on `line`:
        (the line its key was seen on already, 0 if none; where it is among the known, -1
        if it is not). Below `line`, this row is the repeat; above, the row on that line
        is, and this one takes the contact: pass the place to `add`."""
        i = int(np.searchsorted(self.fps, rhash))
        if i == len(self.fps) or self.fps[i] != rhash:
            return 0, -1
        first = int(self.seen[i])
        if first and first < line:
            return first, -1
        self.seen[i] = line
        return first, i

    def add(self, rhash: int, rowid: int, replaces: int = -1) -> None:
        """A fingerprint written for a new row, or for a changed one at `rowid` that
        `replaces` the known one there (`claim`)."""
        if replaces >= 0:
            self.replacing.append(replaces)
            self.replacing_at.append(len(self.added))
        self.added.append(rhash)
        self.added_rows.append(rowid)

    def gone(self) -> np.ndarray:
        """Where the known fingerprints not seen in this export are."""
        return np.flatnonzero(self.seen == 0)

    def located(self, at: np.ndarray) -> tuple[list[int], list[int]]:
        """The rowids and fingerprints of the known contacts at `at` (ascending), in rowid
        order."""
        rows = self._rowids(at)
        order = np.argsort(rows)
        return rows[order].tolist(), self.fps[at][order].tolist()

    def after(self) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
        """How many fingerprints are live after this diff, and they, sorted, with their
        rowids (little-endian int64), a slice at a time, for the cache of the next diff.

        The last use of this `Known`: the lines seen become one flag a contact, and the
        kept fingerprints are merged with the added ones a slice of the known at a time,
        so nothing the size of the known is made beside the fingerprints.
        """
        keep = self.seen != 0
        keep[np.frombuffer(self.replacing, dtype=np.int64)] = False
        self.seen = np.empty(0, dtype=np.int32)
        # each sorted copy made, its source goes: a first sync of a million new contacts
        # held 72 MB more here when the sources, the order and the merge's arrays stayed
        order = np.argsort(np.frombuffer(self.added, dtype=np.int64))
        added_rows = np.frombuffer(self.added_rows, dtype=np.int64)[order]
        self.added_rows = array("q")
        added = np.frombuffer(self.added, dtype=np.int64)[order]
        self.added = array("q")
        del order
        # where each added one goes: before the known at this place (and the ones after)
        into = np.searchsorted(self.fps, added)
        return int(np.count_nonzero(keep)) + len(added), self._merged(keep, added, added_rows, into)

    def _merged(
        self, keep: np.ndarray, added: np.ndarray, added_rows: np.ndarray, into: np.ndarray
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """`after`'s slices: in each slice of the known, the ones kept and the added ones
        that go among them; then the added ones past the last known, a slice at a time."""
        n = len(self.fps)
        for start in range(0, n, _SLICE):
            stop = min(start + _SLICE, n)
            kept = keep[start:stop]
            live = self.fps[start:stop][kept]
            rows = self._rowids(np.arange(start, stop))[kept]
            lo, hi = (int(i) for i in np.searchsorted(into, (start, stop)))
            # each added one goes after the kept ones before its place in the slice
            before = np.concatenate(([0], np.cumsum(kept)))[into[lo:hi] - start]
            live = np.insert(live, before, added[lo:hi]).astype("<i8", copy=False)
            yield live, np.insert(rows, before, added_rows[lo:hi]).astype("<i8", copy=False)
        for lo in range(int(np.searchsorted(into, n)), len(into), _SLICE):
            hi = lo + _SLICE
            yield (
                added[lo:hi].astype("<i8", copy=False),
                added_rows[lo:hi].astype("<i8", copy=False),
            )

    def _rowids(self, at: np.ndarray) -> np.ndarray:
        """The contacts rowids of the known fingerprints at `at` (ascending), from the cache
        unless the table was read.

        A rowid can be wrong (a VACUUM may renumber rows without a trigger firing), so
        whatever uses one checks the fingerprint too, and calls `renumber` when it did
        not match.
        """
        if self.rowids is None:
            rows = self.rows.cached_rowids(at)
            if rows is not None:
                return rows
            self.renumber()  # the cache went stale under us: read the table
        assert self.rowids is not None
        picked: np.ndarray = self.rowids[at]
        return picked

    def renumber(self) -> None:
        """The cached rowids are wrong: read every known contact's again, once (a table
        scan), and hold them from then on. Known rows rewritten in this run get 0:
        `replacing` lists those."""
        live, rows = self.rows.live()
        self.rowids = np.zeros(len(self.fps), dtype=np.int64)
        if len(live):
            at = np.minimum(np.searchsorted(live, self.fps), len(live) - 1)
            found = live[at] == self.fps
            self.rowids[found] = rows[at[found]]
        self.renumbered = True

    def _key_of(self, i: int) -> str:
        """The key of the known contact at `i`."""
        where = np.flatnonzero(np.frombuffer(self.replacing, dtype=np.int64) == i)
        if where.size:  # its row was rewritten in this run
            j = self.replacing_at[int(where[0])]
            return str(self.rows.key_at(self.added_rows[j], self.added[j]))
        key = self.rows.key_at(int(self._rowids(np.array([i]))[0]), int(self.fps[i]))
        if key is None and not self.renumbered:  # the rowids moved under the cache
            self.renumber()
            key = self.rows.key_at(int(self._rowids(np.array([i]))[0]), int(self.fps[i]))
        return str(key)


def _offsets(
    starts: np.ndarray, n: int, buckets: int
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The finder's table as each bucket start's distance from its even share of the known
    (`b * n // buckets`), in 16 bits when every one fits (1 byte a contact): random
    fingerprints stray from their share by about the root of their number, a few thousand
    at millions. With one that does not (a crowd of revived gone contacts in bucket 0, or
    billions), the starts themselves, each share 0."""
    table = np.empty(len(starts), dtype=np.int16)
    for at in range(0, len(starts), _SLICE):
        part = starts[at : at + _SLICE].astype(np.int64)
        part -= np.arange(at, at + len(part), dtype=np.int64) * n // buckets
        if part.min() < -(1 << 15) or part.max() >= 1 << 15:
            return starts.astype(np.int64) if starts.dtype == np.uint64 else starts, _none
        table[at : at + len(part)] = part
    return table, lambda at: at * n // buckets


def _none(at: np.ndarray) -> np.ndarray:
    return np.zeros_like(at)


class FirstLines:
    """The line each key was first met on, among the new and changed rows of one export:
    a 64-bit hash of the key and its line, 12 bytes a key, in sorted runs merged as they
    grow (no dict of a million keys).

    The hash is seeded per diff: two keys sharing one (about one chance in 10^7 for a
    million of them) make the later row a "duplicate" for one run only; the next run
    looks at it again.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted hashes, their lines)

    def first(self, keys: list[str], lines: list[int]) -> np.ndarray:
        """For each key (given in line order), the line it was first met on before, or
        0 if this is its first; the firsts are remembered."""
        if not keys:
            return np.zeros(0, dtype=np.int32)
        hashes = np.fromiter(
            (xxh3_64_intdigest(k.encode("utf-8", "surrogatepass"), self.seed) for k in keys),
            dtype=np.uint64,
            count=len(keys),
        )
        at_line = np.asarray(lines, dtype=np.int32)
        out = np.zeros(len(keys), dtype=np.int32)
        for known, known_lines in self.runs:
            where = np.minimum(np.searchsorted(known, hashes), len(known) - 1)
            hit = known[where] == hashes
            out[hit] = known_lines[where[hit]]
        fresh = np.flatnonzero(out == 0)
        order = fresh[np.argsort(hashes[fresh], kind="stable")]  # a key's first line first
        sorted_hashes = hashes[order]
        repeat = np.zeros(len(order), dtype=bool)
        repeat[1:] = sorted_hashes[1:] == sorted_hashes[:-1]
        heads = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))
        out[order[repeat]] = at_line[order[heads[repeat]]]
        self._remember(sorted_hashes[~repeat], at_line[order[~repeat]])
        return out

    def _remember(self, hashes: np.ndarray, lines: np.ndarray) -> None:
        if not len(hashes):
            return
        self.runs.append((hashes, lines))
        while len(self.runs) > 1 and len(self.runs[-2][0]) <= 2 * len(self.runs[-1][0]):
            (a, la), (b, lb) = self.runs.pop(-2), self.runs.pop()
            merged, merged_lines = np.concatenate((a, b)), np.concatenate((la, lb))
            order = np.argsort(merged, kind="stable")
            self.runs.append((merged[order], merged_lines[order]))


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

    A table of where each bucket of the top bits starts takes a look-up to its place in
    about two probes; a binary search takes twenty, most of them cache misses (it was a
    tenth of the diff). A bucket for about every two known fingerprints, each start held
    as its distance from an even share (`_offsets`), keeps the table at 1 byte a contact;
    it is counted a slice of the known at a time, so building it holds nothing the size
    of the known beside it.
    """
    n = len(known)
    buckets = max(1, (n + 1) // 2)
    # a fingerprint's bucket is its top 32 bits scaled to `buckets`: any number of them,
    # in the fingerprints' order, and the product fits an int64 (buckets < 2**31)
    assert buckets < 1 << 31, "more than four billion contacts"
    scale = np.int64(buckets)
    starts = np.zeros(buckets + 1, dtype=np.min_scalar_type(n))

    def bucket(hashes: np.ndarray) -> np.ndarray:
        return ((hashes >> 31) * scale) >> 32

    for at in range(0, n, _SLICE):
        # fingerprints are not negative; a revived gone contact's may be: bucket 0
        part = bucket(np.maximum(known[at : at + _SLICE], 0))
        first = int(part[0])
        counts = np.bincount(part - first).astype(starts.dtype, copy=False)
        starts[first + 1 : first + 1 + len(counts)] += counts  # a bucket may span two slices
    np.cumsum(starts, out=starts)
    table, share = _offsets(starts, n, buckets)

    def find(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = bucket(hashes)
        where = table[at] + share(at)
        end = table[at + 1] + share(at + 1)
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
