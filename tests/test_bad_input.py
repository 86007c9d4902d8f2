"""The bad-input corpus: every shape of broken export a CRM has produced, through a real
sync, with the message and the quarantine rows it must give. Then fuzzing of the reader and
the config loader, where the only outcomes allowed are a result or a clear SyncdError."""

from __future__ import annotations

import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.config import SourceConfig, load
from syncd.errors import SyncdError
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.source import Export
from tests.helpers import World, esputnik_table

HEADER = b"Record ID,First Name,Last Name,Email,Phone,Segment\r\n"
GOOD = b"1,Ann,Lee,ann@example.com,+32470000001,Gold\r\n"
GOOD2 = b"2,Bob,Ray,bob@example.com,+32470000002,Gold\r\n"

# name: (file bytes, [(line, reason fragment)] expected in quarantine, rows acknowledged)
CORPUS: dict[str, tuple[bytes, list[tuple[int, str]], int]] = {
    "bom": (b"\xef\xbb\xbf" + HEADER + GOOD, [], 1),
    "crlf_and_lf_mixed": (HEADER + GOOD.replace(b"\r\n", b"\n") + GOOD2, [], 2),
    "quoted_newlines": (
        HEADER + b'1,"Ann\r\nMarie",Lee,ann@example.com,,Gold\r\n' + GOOD2.replace(b"2,", b"2,", 1),
        [],
        2,
    ),
    "nul_byte": (
        HEADER + b"1,A\x00nn,Lee,ann@example.com,,Gold\r\n" + GOOD2,
        [(2, "column 'First Name' contains a NUL byte")],
        1,
    ),
    "cp1252_in_utf8": (
        HEADER + b"1,Ren\xe9,Lee,ann@example.com,,Gold\r\n" + GOOD2,
        [(2, "column 'First Name' has bytes that are not valid utf-8")],
        1,
    ),
    "duplicate_keys": (
        HEADER + GOOD + GOOD2 + GOOD.replace(b"Ann", b"Anna"),
        [(4, "duplicate key '1': line 2 has it too (the first wins)")],
        2,
    ),
    "missing_columns": (
        HEADER + b"1,Ann,Lee\r\n" + GOOD2,
        [(2, "has 3 fields, the header has 6")],
        1,
    ),
    "extra_columns": (
        HEADER + b"1,Ann,Lee,ann@example.com,,Gold,surprise\r\n" + GOOD2,
        [(2, "has 7 fields, the header has 6")],
        1,
    ),
    "a_10mb_field": (
        HEADER + b'1,Ann,Lee,ann@example.com,,"' + b"x" * (10 * 1024 * 1024) + b'"\r\n' + GOOD2,
        [(2, "a field is larger than 1 MiB")],
        1,
    ),
    "truncated_mid_row": (
        HEADER + GOOD2 + b'3,"Ann\r\nMar',
        [(3, "the file ends inside a quoted field: the export looks truncated")],
        1,
    ),
    "bad_email_for_the_vendor": (
        HEADER + b"1,Ann,Lee,ann@,,Gold\r\n" + GOOD2,
        [(2, "invalid email 'ann@' in column 'Email'")],
        1,
    ),
}

# name: (file bytes, exit code, message fragment): the run stops, nothing is sent
FATAL: dict[str, tuple[bytes, int, str]] = {
    "empty_file": (b"", 2, "is empty"),
    "header_only": (HEADER, 3, "has no usable rows; nothing was sent"),
    "missing_key_column": (
        b"Id,Email\r\n1,a@b.co\r\n",
        2,
        "key column 'Record ID' is not in the header",
    ),
    "binary_garbage": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        2,
        "header has bytes that are not valid utf-8",
    ),
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, ESputnikSim]]:
    sim = ESputnikSim()
    with Server(sim) as server:
        yield World(tmp_path, {"esputnik": esputnik_table(server.url)}), sim


def quarantined(world: World) -> list[tuple[int, str]]:
    store = world.store()
    try:
        return [
            (r["line"], r["reason"]) for r in store.query("SELECT * FROM quarantine ORDER BY line")
        ]
    finally:
        store.close()


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_bad_rows_are_quarantined_and_the_rest_is_sent(
    case: str, world: tuple[World, ESputnikSim]
) -> None:
    w, sim = world
    data, expected, sent = CORPUS[case]
    w.export.write_bytes(data)
    report = w.sync()
    assert report.exit_code == 0, report.summary()
    found = quarantined(w)
    assert len(found) == len(expected), found
    for (line, reason), (want_line, fragment) in zip(found, expected, strict=True):
        assert line == want_line and fragment in reason, (line, reason)
    assert len(sim.contacts()) == sent


@pytest.mark.parametrize("case", sorted(FATAL))
def test_unusable_exports_stop_the_run_with_a_clear_message(
    case: str, world: tuple[World, ESputnikSim]
) -> None:
    w, sim = world
    data, code, fragment = FATAL[case]
    w.export.write_bytes(data)
    with pytest.raises(SyncdError) as caught:
        w.sync()
    assert caught.value.exit_code == code
    assert fragment in str(caught.value)
    assert str(w.export) in str(caught.value)
    assert sim.contacts() == []


# --- fuzzing ---------------------------------------------------------------------------
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@FUZZ
@given(
    body=st.binary(max_size=400)
    | st.lists(
        st.sampled_from(
            [b"1", b"2", b",", b";", b'"', b'""', b"\r\n", b"\n", b"\x00", b"\xe9", b"a@b.co", b" "]
        ),
        max_size=60,
    ).map(b"".join),
    bom=st.booleans(),
)
def test_the_reader_gives_rows_or_a_syncd_error_never_a_traceback(
    tmp_path: Path, body: bytes, bom: bool
) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"Record ID,Email\n" + body)
    bad: list[object] = []
    try:
        with Export(
            path, SourceConfig(path=str(path), key="Record ID", settle_seconds=0)
        ) as export:
            for line, row in export.rows(bad.append):
                assert line >= 2 and len(row) == len(export.header)
    except SyncdError as exc:
        assert str(exc)


VALID = """\
[source]
path = "contacts.csv"
key = "Record ID"
max_drop = 0.1
[store]
path = "syncd.db"
[schedule]
reconcile = "0 2 * * *"
pull = "every 30m"
[delivery]
retries = 3
[vendors.esputnik]
base_url = "http://127.0.0.1:9"
mapping = "esputnik.toml"
api_key = "env:FUZZ_UNSET_VARIABLE"
"""
MAPPING = '[fields]\nemail = "Email"\nexternalCustomerId = "Record ID"\n'

toml_values = st.recursive(
    st.none().map(lambda _: '""')
    | st.integers(-(2**40), 2**40).map(str)
    | st.floats(allow_nan=False, allow_infinity=False).map(repr)
    | st.booleans().map(lambda b: str(b).lower())
    | st.text(string.printable, max_size=12).map(
        lambda t: (
            '"'
            + t.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\r", "\\r")
            .replace("\t", "\\t")
            .replace("\x0b", "\\u000b")
            .replace("\x0c", "\\f")
            + '"'
        )
    ),
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=5,
)


@FUZZ
@given(
    line=st.integers(0, VALID.count("\n") - 1),
    value=toml_values,
    cut=st.integers(0, len(VALID)),
    junk=st.text(max_size=8),
    mode=st.sampled_from(["replace_value", "insert_junk", "truncate"]),
)
def test_the_config_loader_gives_a_config_or_a_config_error_never_a_traceback(
    tmp_path: Path, line: int, value: str, cut: int, junk: str, mode: str
) -> None:
    lines = VALID.splitlines()
    if mode == "replace_value" and "=" in lines[line]:
        lines[line] = lines[line].split("=")[0] + "= " + value
        text = "\n".join(lines) + "\n"
    elif mode == "insert_junk":
        text = VALID[:cut] + junk + VALID[cut:]
    else:
        text = VALID[:cut]
    (tmp_path / "esputnik.toml").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "syncd.toml").write_text(text, encoding="utf-8")
    try:
        load(tmp_path / "syncd.toml")
    except SyncdError as exc:
        assert str(exc).startswith(str(tmp_path)), str(exc)
