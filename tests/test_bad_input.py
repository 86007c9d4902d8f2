"""The bad-input corpus: every shape of broken export a CRM has produced, through a real
sync, with the message and the quarantine rows it must give; then hostile configs and exports
through the `syncd` command itself, where the only outcome allowed is a one-line message and
exit 2 or 3, never a traceback. Then fuzzing of the reader and the config loader, where the
only outcomes allowed are a result or a clear SyncdError."""

from __future__ import annotations

import os
import string
import subprocess
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
from tests.helpers import World, esputnik_table, run_syncd

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
    "undecodable_key": (
        HEADER + b"1\xe9,Ann,Lee,ann@example.com,,Gold\r\n" + GOOD2,
        [(2, "column 'Record ID' has bytes that are not valid utf-8")],
        1,
    ),
    "undecodable_key_in_a_short_row": (
        HEADER + b"1\xe9,Ann\r\n" + GOOD2,
        [(2, "has 2 fields, the header has 6")],
        1,
    ),
    "undecodable_key_in_a_quoted_row": (  # the csv module's path, not the raw one
        HEADER + b'"1\xe9",Ann,Lee,ann@example.com,,Gold\r\n' + GOOD2,
        [(2, "column 'Record ID' has bytes that are not valid utf-8")],
        1,
    ),
    # the CRM's job appended tonight's export to last night's: its header was a contact
    # "Record ID" with email "Email" (sent to any vendor that does not check emails)
    "a_second_export_appended": (
        b"\xef\xbb\xbf" + HEADER + GOOD + GOOD2 + b"\xef\xbb\xbf" + HEADER + GOOD + GOOD2,
        [
            (4, "repeats the header line: two exports one after the other in one file"),
            (5, "duplicate key '1': line 2 has it too (the first wins)"),
            (6, "duplicate key '2': line 3 has it too (the first wins)"),
        ],
        2,
    ),
    "bad_email_for_the_vendor": (
        HEADER + b"1,Ann,Lee,ann@,,Gold\r\n" + GOOD2,
        [(2, "invalid email 'ann@' in column 'Email'")],
        1,
    ),
    # pasted with a zero-width space: a second contact at a vendor that dedupes on email
    "an_email_with_a_character_that_does_not_show": (
        HEADER + "1,Ann,Lee,ann@example.com\u200b,,Gold\r\n".encode() + GOOD2,
        [(2, "invalid email 'ann@example.com\\u200b' in column 'Email'")],
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
    # it said "the header names '' more than once": which columns, and what is wrong?
    "blank_column_names_between_named_ones": (
        b"Record ID,Email,,,Segment\r\n1,a@example.com,,,Gold\r\n",
        2,
        "the header's columns 3, 4 have no name",
    ),
    # Excel's "Unicode Text": it said "re-export as UTF-8, or set encoding to the file's"
    "utf16_from_excel": (
        (HEADER + GOOD).decode().replace(",", "\t").encode("utf-16"),
        2,
        'it starts with a UTF-16 byte-order mark: set [source] encoding = "utf-16"',
    ),
    "binary_garbage": (
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        2,
        "header has bytes that are not valid utf-8",
    ),
    # the CRM's job died mid-write: a key cut to `100` would be a new contact, an email cut
    # to `bob@example.co` a change
    "cut_in_the_key": (
        HEADER + GOOD + b"100",
        3,
        "ends mid-record at line 3 (its last line has no line break)",
    ),
    "cut_in_the_email": (
        HEADER + GOOD + b"2,Bob,Ray,bob@example.co",
        3,
        "ends mid-record at line 3 (its last line has no line break)",
    ),
    "cut_after_the_last_field": (HEADER + GOOD + GOOD2.rstrip(), 3, "ends mid-record at line 3"),
    "cut_in_a_quoted_field": (
        HEADER + GOOD2 + b'3,"Ann\r\nMar',
        3,
        "ends mid-record at line 3 (a quoted field is never closed)",
    ),
    "cut_in_a_quoted_field_after_a_line_break": (
        HEADER + GOOD2 + b'3,"Ann\r\n',
        3,
        "ends mid-record at line 3 (a quoted field is never closed)",
    ),
    # the csv module reads on from the next line as if a record began there: the text of
    # the field left open was read as rows, and `3,Eve` sent as a contact
    "a_quoted_field_past_1_mib_hiding_a_row": (
        HEADER
        + b'1,Ann,Lee,ann@example.com,,"'
        + b"x" * (2 << 20)
        + b'\r\n3,Eve,Row,eve@example.com,,Gold\r\nGold"\r\n'
        + GOOD2,
        2,
        "line 2 is unreadable (a field is larger than 1 MiB",
    ),
    "a_bad_quote_before_a_quoted_line_break": (
        HEADER + b'1,"Ann"x,Lee,"ann@example.com\r\n3,Eve,Row,eve@example.com,,Gold\r\n",,Gold\r\n',
        2,
        "line 2 is unreadable (bad quoting (',' expected after '\"'): a quote inside a quoted "
        'field must be doubled ("")), and a quoted field is still open at the end of line 2',
    ),
    "a_header_of_40000_columns": (
        b"Record ID," + b",".join(b"c%d" % i for i in range(40_000)) + b"\r\n" + GOOD,
        2,
        "the header has 40001 columns, more than 4096",
    ),
    "a_header_line_of_2_mib": (
        b"Record ID," + b"x" * (2 << 20) + b"\r\n" + GOOD,
        2,
        "the header line is longer than 1024 KiB",
    ),
}

# a cut export read with --force: the last record quarantined, the rest sent
FORCED: dict[str, tuple[bytes, tuple[int, str]]] = {
    "no_line_break": (
        HEADER + GOOD + b"100",
        (
            3,
            "the file ends mid-record: its last line has no line break; its key may be cut: "
            "it begins '100'",
        ),
    ),
    "no_line_break_after_a_full_record": (
        HEADER + GOOD + GOOD2.rstrip(),
        (3, "the file ends mid-record: its last line has no line break"),
    ),
    "a_quoted_field_never_closed": (
        HEADER + GOOD + b'3,"Ann\r\nMar',
        (3, "the file ends mid-record: a quoted field is never closed"),
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


@pytest.mark.parametrize("case", sorted(FORCED))
def test_force_reads_a_cut_export_with_its_last_record_quarantined(
    case: str, world: tuple[World, ESputnikSim]
) -> None:
    w, sim = world
    data, expected = FORCED[case]
    w.export.write_bytes(data)
    report = w.sync(force=True)
    assert report.exit_code == 0, report.summary()
    assert quarantined(w) == [expected]
    assert [c["externalCustomerId"] for c in sim.contacts()] == ["1"]


@pytest.mark.parametrize("key_last", [False, True])  # a row of the wrong width; of the header's
def test_force_never_marks_gone_the_contact_whose_key_the_file_is_cut_in(
    key_last: bool, world: tuple[World, ESputnikSim]
) -> None:
    """The file cut inside `1001`'s key ends `100`: under --force, contact 1001 (and 100,
    10012: any key beginning `100`) is in the file as far as anyone can tell, and stays;
    a contact no line holds (2) is gone. Before, 1001 was marked gone, its key taken for 100."""
    w, _ = world
    names = HEADER.decode().strip().split(",")
    order = names[1:] + names[:1] if key_last else names

    def line(key: str, name: str = "Ann") -> bytes:
        cells = dict(
            zip(names, [key, name, "Lee", f"{name.lower()}@example.com", "", "Gold"], strict=True)
        )
        return (",".join(cells[c] for c in order) + "\r\n").encode()

    head = ",".join(order).encode() + b"\r\n"
    w.export.write_bytes(head + b"".join(map(line, ["1", "100", "1001", "10012", "2"])))
    assert w.sync().exit_code == 0
    w.export.write_bytes(head + line("1") + line("100")[: -2 if key_last else 3])
    assert w.sync(force=True).exit_code == 0
    store = w.store()
    try:
        live = {r["key"] for r in store.query("SELECT key FROM contacts WHERE gone_at IS NULL")}
        reasons = [r["reason"] for r in store.query("SELECT reason FROM quarantine")]
    finally:
        store.close()
    assert live == {"1", "100", "1001", "10012"}
    assert len(reasons) == 1 and reasons[0].endswith("its key may be cut: it begins '100'")


def test_an_undecodable_key_is_quarantined_by_its_bytes_on_every_run(
    world: tuple[World, ESputnikSim],
) -> None:
    w, sim = world
    w.export.write_bytes(HEADER + b"1\xe9,Ann,Lee,ann@example.com,,Gold\r\n" + GOOD2)
    for _ in range(2):
        assert w.sync().exit_code == 0
    store = w.store()
    try:
        keys = [r["key"] for r in store.query("SELECT key FROM quarantine ORDER BY id")]
    finally:
        store.close()
    assert keys == ["1\\xe9", "1\\xe9"]
    assert len(sim.contacts()) == 1


# --- hostile input through the command -------------------------------------------------
def syncd(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_syncd(folder, *args, SYNCD_CONFIG=str(folder / "syncd.toml"))


def edit(w: World, old: str, new: str) -> None:
    config = w.folder / "syncd.toml"
    text = config.read_text(encoding="utf-8")
    assert old in text
    config.write_text(text.replace(old, new, 1), encoding="utf-8")


SOURCE = 'key = "Record ID"'
DELIVERY = "[delivery]"
VENDOR = "poll_every = 0.01"


def _prepare(w: World, case: str) -> list[str]:
    """Make `case` in `w`'s folder; the arguments to run syncd with."""
    folder = w.folder
    w.export.write_bytes(HEADER + GOOD)
    if case == "a_fifo_as_the_config":
        os.mkfifo(folder / "fifo.toml")
        return ["--config", "fifo.toml", "check"]
    if case == "dev_zero_as_the_config":
        return ["--config", "/dev/zero", "check"]
    if case == "a_3_mib_config":
        (folder / "syncd.toml").write_bytes(b"#" * (3 << 20))
    elif case == "deep_toml_nesting":
        (folder / "syncd.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    elif case == "a_fifo_as_the_mapping":
        os.mkfifo(folder / "fifo.toml")
        edit(w, 'mapping = "esputnik.toml"', 'mapping = "fifo.toml"')
    elif case in ("dev_zero_as_a_secret", "a_fifo_as_a_secret", "a_300_mib_secret"):
        target = {"dev_zero_as_a_secret": "/dev/zero", "a_fifo_as_a_secret": "fifo"}
        if case == "a_fifo_as_a_secret":
            os.mkfifo(folder / "fifo")
        if case == "a_300_mib_secret":
            with (folder / "big").open("wb") as fh:
                fh.truncate(300 << 20)  # sparse: no disk used
        edit(w, 'api_key = "sandbox-key"', f'api_key = "file:{target.get(case, "big")}"')
    elif case == "a_credential_that_is_a_fifo":
        os.mkfifo(folder / "esputnik")
        edit(w, 'api_key = "sandbox-key"', 'api_key = "credential:esputnik"')
    elif case == "store_path_under_a_file":
        (folder / "somefile").write_text("x")
        edit(w, 'path = "syncd.db"', 'path = "somefile/x.db"')
    elif case in CONFIG_LINES:
        anchor, line = CONFIG_LINES[case][0]
        config = folder / "syncd.toml"
        lines = config.read_text(encoding="utf-8").splitlines()
        key = line.split(" = ")[0]
        at = [i for i, old in enumerate(lines) if old.startswith(f"{key} = ")]
        if at:  # the world sets it already
            lines[at[0]] = line
        else:
            lines.insert(lines.index(anchor) + 1 if anchor else 0, line)
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif case == "a_directory_as_the_export":
        w.export.unlink()
        w.export.mkdir()
    elif case == "a_fifo_as_the_export":
        w.export.unlink()
        os.mkfifo(w.export)
    elif case == "a_symlink_loop_as_the_export":
        w.export.unlink()
        w.export.symlink_to(w.export)
    elif case == "invalid_utf16":
        edit(w, SOURCE, f'{SOURCE}\nencoding = "utf-16"')
        rows = b"".join(GOOD.replace(b"1,", b"%d," % i, 1) for i in range(3000))
        # a lone high surrogate, a line break after it (at the very end, the file would
        # be cut between a pair's halves: cut short, exit 3)
        w.export.write_bytes((HEADER + rows).decode().encode("utf-16") + b"\x00\xd8\n\x00")
    elif case == "utf8_read_as_utf16":
        edit(w, SOURCE, f'{SOURCE}\nencoding = "utf-16"')
    else:
        w.export.write_bytes(FATAL[case][0])
    return ["sync"]


# case: ((where the line goes, the line), exit status, message fragment)
CONFIG_LINES: dict[str, tuple[tuple[str, str], int, str]] = {
    "read_timeout_0": (
        (DELIVERY, "read_timeout = 0"),
        2,
        "[delivery] read_timeout: must be between 0.01 and 3600 (seconds), not 0.0",
    ),
    "retry_after_cap_1e12": (
        (DELIVERY, "retry_after_cap = 1e12"),
        2,
        "[delivery] retry_after_cap: must be between 0 and 3600",
    ),
    "retries_1e9": ((DELIVERY, "retries = 1e9"), 2, "[delivery] retries: must be int"),
    "backoff_base_1e10": (
        (DELIVERY, "backoff_base = 1e10"),
        2,
        "[delivery] backoff_base: must be between 0 and 600",
    ),
    "misfire_grace_seconds_negative": (
        ("", "[schedule]\nmisfire_grace_seconds = -1"),
        2,
        "[schedule] misfire_grace_seconds: must be between 1 and 604800",
    ),
    "max_drop_nan": ((SOURCE, "max_drop = nan"), 2, "[source] max_drop: must be between 0 and 1"),
    "settle_seconds_inf": (
        (SOURCE, "settle_seconds = inf"),
        2,
        "[source] settle_seconds: must be between 0 and 86400",
    ),
    "batch_size_0": (
        (VENDOR, "batch_size = 0"),
        2,
        "[vendors.esputnik] batch_size: must be between 1 and 3000",
    ),
    "poll_every_negative": (
        (VENDOR, "poll_every = -1"),
        2,
        "[vendors.esputnik] poll_every: must be between 0 and 86400",
    ),
    "encoding_rot13": (
        (SOURCE, 'encoding = "rot13"'),
        2,
        "[source] encoding: 'rot13' is not a text encoding",
    ),
}

# case: (exit status, message fragment); nothing may be sent
HOSTILE: dict[str, tuple[int, str]] = {
    **{case: (code, fragment) for case, (_line, code, fragment) in CONFIG_LINES.items()},
    "a_fifo_as_the_config": (2, "fifo.toml: cannot be read: is a FIFO, not a regular file"),
    "dev_zero_as_the_config": (2, "/dev/zero: cannot be read: is a device, not a regular file"),
    "a_3_mib_config": (2, "syncd.toml: cannot be read: is larger than 1024 KiB"),
    "deep_toml_nesting": (2, "syncd.toml: not valid TOML: nested too deeply"),
    "a_fifo_as_the_mapping": (2, "fifo.toml: cannot be read: is a FIFO, not a regular file"),
    "dev_zero_as_a_secret": (
        2,
        "[vendors.esputnik] api_key: secret file /dev/zero is a device, not a regular file",
    ),
    "a_fifo_as_a_secret": (2, "api_key: secret file {folder}/fifo is a FIFO, not a regular file"),
    "a_300_mib_secret": (2, "api_key: secret file {folder}/big is larger than 64 KiB"),
    "a_credential_that_is_a_fifo": (
        2,
        "api_key: credential {folder}/esputnik is a FIFO, not a regular file",
    ),
    "store_path_under_a_file": (
        2,
        "[store] path: {folder}/somefile is not a directory, so {folder}/somefile/x.db cannot",
    ),
    "a_directory_as_the_export": (2, "export {folder}/contacts.csv is a directory, not a regular"),
    "a_fifo_as_the_export": (2, "export {folder}/contacts.csv is a FIFO, not a regular file"),
    "a_symlink_loop_as_the_export": (
        2,
        "cannot read export {folder}/contacts.csv: Too many levels of symbolic links",
    ),
    "invalid_utf16": (2, "are not valid utf-16 (illegal UTF-16 surrogate)"),
    "utf8_read_as_utf16": (2, "contacts.csv: its first 64 KiB is not valid utf-16 (UTF-16 stream"),
    **{case: (code, fragment) for case, (_data, code, fragment) in FATAL.items()},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_gets_one_clear_line_and_exit_2_or_3_never_a_traceback(
    case: str, world: tuple[World, ESputnikSim], monkeypatch: pytest.MonkeyPatch
) -> None:
    w, sim = world
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(w.folder))  # the subprocess inherits it
    args = _prepare(w, case)
    code, fragment = HOSTILE[case]
    done = syncd(w.folder, *args)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr
    assert fragment.format(folder=w.folder) in done.stderr, done.stderr
    assert done.stderr.startswith("syncd: "), done.stderr
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
