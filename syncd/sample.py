"""Messy, realistic CRM exports for the demo, the tests and the benchmark.

What real exports do (DESIGN.md): a byte-order mark, CRLF, semicolons from European Excel,
quoting of every field or none, quoted commas and newlines, accented names, mixed-case and
padded emails, phones in several national shapes, dates in several formats, an empty
trailing column, and columns that change on every export without meaning anything.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

HEADER = [
    "Record ID",
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "City",
    "Country",
    "Language",
    "Segment",
    "Store",
    "Closed Date",
    "Ticket Type",
    "Created Date",
    "Last Activity Date",
    "Notes",
]
FIRST = [
    "Émile",
    "Zoë",
    "Ana",
    "Jürgen",
    "Siobhán",
    "Luc",
    "Marie-Claire",
    "Søren",
    "Inês",
    "Björn",
    "Chloé",
    "Åsa",
    "Noah",
    "Léa",
    "Mateo",
    "Olivia",
    "Lars",
    "Elif",
]
LAST = [
    "Dupont",
    "Van den Berg",
    "O'Neill",
    "Müller",
    "García",
    "Janssens",
    "Peeters",
    "Smith, Jr.",
    "Nowak",
    "Łukasiewicz",
    "De Smet",
    "Rossi",
    "Andersson",
    "Moreau",
]
CITIES = ["Brussels", "Antwerpen", "Gent", "Liège", "Brugge", "Leuven", "Namur", "Mons"]
LANGS = ["EN", "NL", "French", "fr", "German", "Dutch", "EN", "NL"]
SEGMENTS = ["Gold", "Silver", "Bronze", "Prospect"]
TICKETS = ["Billing", "Delivery", "Returns", "Product question"]


def _phone(rng: random.Random, i: int) -> str:
    n = 470000000 + (i * 7919) % 9999999
    s = str(n)
    shape = i % 4
    if shape == 0:
        return f"+32 {s[:3]} {s[3:5]} {s[5:7]} {s[7:9]}"
    if shape == 1:
        return f"0{s}"
    if shape == 2:
        return f"+1 (202) 555-{i % 10000:04d}"
    return f"0032{s}"


def _date(rng: random.Random, i: int) -> str:
    d, m = 1 + i % 28, 1 + (i // 28) % 12
    return (f"2026-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/2026", f"{m}/{d}/2026 14:{i % 60:02d}")[
        i % 3
    ]


def row(i: int, rng: random.Random, version: int = 0) -> list[str]:
    """Contact i's row. `version` changes the mapped columns (a real change)."""
    first, last = FIRST[i % len(FIRST)], LAST[(i // 3) % len(LAST)]
    email = f"{first.split('-')[0].lower()}.{i}@example.com"
    email = email.encode("ascii", "ignore").decode() or f"user.{i}@example.com"
    if i % 5 == 0:
        email = f"  {email.title()} "  # mixed case and padding, normalised away
    return [
        f"CRM-{i:07d}",
        first,
        last,
        email,
        _phone(rng, i),
        CITIES[(i + version) % len(CITIES)],
        "BE",
        LANGS[i % len(LANGS)],
        SEGMENTS[(i + version) % len(SEGMENTS)],
        f"Store {(i % 12) + 1}",
        _date(rng, i + version) if (i + version) % 3 == 0 else "",
        TICKETS[i % len(TICKETS)],
        _date(rng, i),
        f"2026-11-{1 + rng.randrange(28):02d} {rng.randrange(24):02d}:00",  # volatile
        "Called, left a message\nwill retry" if i % 17 == 0 else "",
    ]


def rows(n: int, seed: int = 7, *, start: int = 0) -> Iterator[list[str]]:
    rng = random.Random(seed)
    for i in range(start, start + n):
        yield row(i, rng)


def write_export(
    path: Path,
    data: Iterator[list[str]] | list[list[str]],
    *,
    delimiter: str = ";",
    bom: bool = True,
    crlf: bool = True,
    quote_all: bool = False,
    trailing_empty: bool = True,
) -> Path:
    """Write rows under HEADER the way a spreadsheet would."""
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
        writer = csv.writer(
            fh,
            delimiter=delimiter,
            lineterminator="\r\n" if crlf else "\n",
            quoting=csv.QUOTE_ALL if quote_all else csv.QUOTE_MINIMAL,
        )
        writer.writerow(HEADER + ([""] if trailing_empty else []))
        for r in data:
            writer.writerow(r + ([""] if trailing_empty else []))
    return path
