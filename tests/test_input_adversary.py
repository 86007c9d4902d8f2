"""Hostile input the other bad-input tests do not reach: configs whose values load but
would quietly weaken a promise (an ignored column a vendor reads, a suppression channel
that matches nothing, a phone region that does not exist), values that crashed the loader
with a traceback, and exports whose bad rows made present contacts look gone."""

from __future__ import annotations

import codecs
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from syncd import pipeline, project, source
from syncd.config import SourceConfig, load
from syncd.errors import ConfigError, GuardError, NotSettledError, SourceError
from syncd.pipeline import opened, reconcile
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.source import Export, visible
from tests.helpers import World, assert_fingerprint_cache_holds, esputnik_table

HEADER = b"Record ID,First Name,Last Name,Email,Phone,Segment\r\n"


def row(i: int, name: bytes = b"Ann") -> bytes:
    return b"%d,%s,Lee,p%d@example.com,+3247000%04d,Gold\r\n" % (i, name, i, i)


def rows(n: int, bad: set[int] = frozenset(), name: bytes = b"Ren\xe9") -> bytes:  # type: ignore[assignment]
    """`n` rows; those in `bad` with a First Name in Latin-1 (not UTF-8)."""
    return HEADER + b"".join(row(i, name if i in bad else b"Ann") for i in range(1, n + 1))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, ESputnikSim]]:
    sim = ESputnikSim()
    with Server(sim) as server:
        yield World(tmp_path, {"esputnik": esputnik_table(server.url)}), sim


def gone(w: World) -> list[str]:
    store = w.store()
    try:
        return [r["key"] for r in store.query("SELECT key FROM contacts WHERE gone_at IS NOT NULL")]
    finally:
        store.close()


# --- a quarantined row is not a contact gone ---------------------------------------------
def test_a_known_contact_whose_row_is_quarantined_is_not_marked_gone(
    world: tuple[World, ESputnikSim],
) -> None:
    w, sim = world
    w.export.write_bytes(rows(20))
    assert w.sync().exit_code == 0
    w.export.write_bytes(rows(20, bad={5}))
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None
    assert (report.plan.quarantined, report.plan.gone) == (1, 0)
    assert gone(w) == []
    assert len(sim.contacts()) == 20
    store = w.store()
    try:
        assert_fingerprint_cache_holds(store.conn)
    finally:
        store.close()
    # the next run reads the same rows the same way: still there, nothing sent
    report = w.sync()
    assert report.plan is not None and (report.plan.quarantined, report.plan.gone) == (1, 0)
    assert gone(w) == []
    # and a bad row of a key that a good row of later in the file has is a mere repeat
    w.export.write_bytes(rows(20, bad={5}) + row(5, b"Annie"))
    report = w.sync()
    assert report.plan is not None and report.plan.gone == 0
    assert {c["firstName"] for c in sim.contacts() if c["externalCustomerId"] == "5"} == {"Annie"}


def test_a_row_of_the_wrong_width_is_not_quarantined_under_a_cell_shifted_into_the_key(
    world: tuple[World, ESputnikSim],
) -> None:
    """The key column is the fifth. An unquoted comma in a First Name (`Ann, Jr`) pushes
    every cell after it one column right: the row was quarantined under the phone that
    landed in the key's column (`key '+32470000005'`), and contact 5, present in the
    file, was marked gone. A cell left out moves the key the other way; which cell is the key
    of such a row cannot be told, so each it may be holds its contact back."""
    header = b"First Name,Last Name,Email,Phone,Record ID,Segment\r\n"

    def line(i: int, first: bytes = b"Ann") -> bytes:
        return b"%s,Lee,p%d@example.com,+3247000%04d,%d,Gold\r\n" % (first, i, i, i)

    w, sim = world
    w.export.write_bytes(header + b"".join(line(i) for i in range(1, 21)))
    assert w.sync().exit_code == 0
    body = b"".join(line(i, b"Ann, Jr" if i == 5 else b"Ann") for i in range(1, 21))
    body = body.replace(b"Lee,p7@example.com,", b"Lee,")  # 7: its Email left out
    body = body.replace(b",9,Gold\r\n", b",9\r\n")  # 9: its Segment left out
    w.export.write_bytes(header + body)
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None
    assert (report.plan.quarantined, report.plan.gone) == (3, 0)
    assert gone(w) == []
    assert len(sim.contacts()) == 20
    store = w.store()
    try:
        held = {r["line"]: (r["key"], r["reason"]) for r in store.query("SELECT * FROM quarantine")}
    finally:
        store.close()
    why = (
        "has {} fields, the header has 6 (key column 'Record ID' may be {}: a cell holds "
        "the delimiter unquoted, or one is missing)"
    )
    assert held == {
        6: (None, why.format(7, "'+32470000005', '5'")),
        8: (None, why.format(5, "'7', 'Gold'")),
        10: (None, why.format(5, "'+32470000009', '9'")),
    }


def test_a_line_holding_the_change_texts_separator_is_not_another_contact_unchanged(
    tmp_path: Path,
) -> None:
    """A record the csv module reads has its cells joined by `source.SEP` (UTF-8
    `\\xed\\xa0\\x80`) for its fingerprint; a line read raw is its own bytes. Contact `7,`
    (a quoted key holding the delimiter) was recorded; then a line of contact 7 holding
    those bytes, which are no UTF-8, had the same text: it was taken for `7,` unchanged,
    not quarantined, and contact 7 marked gone."""
    mapping = (
        '[fields]\nemail = "Email"\nfirstName = "First Name"\nexternalCustomerId = "Record ID"\n'
    )
    with Server(ESputnikSim()) as server:
        table = esputnik_table(server.url, dedupe_on="externalCustomerId")[0]
        w = World(tmp_path, {"esputnik": (table, mapping)}, delimiter=",", max_drop=1.0)
        header = b"Record ID,First Name,Email\n"
        w.export.write_bytes(header + b'"7,","x,y",a@b.co\n7,Ann,c@d.co\n')
        assert w.sync().exit_code == 0
        w.export.write_bytes(header + b"7,\xed\xa0\x80x,y\xed\xa0\x80a@b.co\n8,Bo,e@f.co\n")
        report = w.sync()
        assert report.exit_code == 0 and report.plan is not None
        assert (report.plan.quarantined, report.plan.unchanged) == (1, 0)
        store = w.store()
        try:
            assert [(r["line"], r["key"]) for r in store.query("SELECT * FROM quarantine")] == [
                (2, "7")
            ]
        finally:
            store.close()
        assert gone(w) == ["7,"]  # absent from the export: 7 is held back


def test_an_export_mostly_quarantined_is_not_refused_as_missing_contacts(
    world: tuple[World, ESputnikSim],
) -> None:
    """15 of 20 rows in Latin-1: the contacts are in the file. The guard said they were
    missing and that `--force` would do ("if the export really lost these contacts"),
    and `--force` marked the 15 gone."""
    w, _sim = world
    w.export.write_bytes(rows(20))
    assert w.sync().exit_code == 0
    w.export.write_bytes(rows(20, bad=set(range(6, 21))))
    report = w.sync()
    assert report.plan is not None and report.plan.gone == 0
    assert report.plan.quarantined == 15
    assert gone(w) == []
    # a real loss is still refused
    w.export.write_bytes(rows(2))
    with pytest.raises(GuardError, match="18 of 20 known contacts"):
        w.sync()


@pytest.mark.parametrize(
    ("char", "named"),
    [
        ("\u200b", "U+200B ZERO WIDTH SPACE"),
        ("\u200c", "U+200C ZERO WIDTH NON-JOINER"),
        ("\u200d", "U+200D ZERO WIDTH JOINER"),
        ("\u2060", "U+2060 WORD JOINER"),
        ("\u00ad", "U+00AD SOFT HYPHEN"),
        ("\u00a0", "U+00A0 NO-BREAK SPACE"),
        ("\x1a", "U+001A a control character"),
    ],
)
def test_a_key_with_a_character_that_does_not_show_is_quarantined_not_a_new_contact(
    world: tuple[World, ESputnikSim], char: str, named: str
) -> None:
    """A copy-paste in the CRM puts a zero-width space into a key: `1\u200b` was sent as a
    contact of its own (a second one at the vendor, a survey again), and contact 1 looked
    gone. The row is quarantined naming the column and the character; contact 1 is held
    back (kept as it was), as for any quarantined row of a known contact."""
    w, sim = world
    w.export.write_bytes(rows(3))
    assert w.sync().exit_code == 0
    extra = f"4{char}4,Bo,Lee,bo@example.com,+32470009999,Gold\r\n".encode()
    w.export.write_bytes(rows(3).replace(b"\r\n3,", f"\r\n3{char},".encode()) + extra)
    report = w.sync()
    # a no-break space at either end is stripped, as any space around a key: contact 3
    held = [] if char.isspace() else [(4, "3")]
    assert report.plan is not None and (report.plan.quarantined, report.plan.gone) == (
        len(held) + 1,
        0,
    )
    assert gone(w) == []
    assert sorted(c["externalCustomerId"] for c in sim.contacts()) == ["1", "2", "3"]
    store = w.store()
    try:
        got = store.query("SELECT line, key, reason FROM quarantine ORDER BY line")
        looks = "4" + visible(char) + "4"
        assert [(r["line"], r["key"]) for r in got] == [*held, (5, looks)]
        assert got[-1]["reason"] == (
            f"key column 'Record ID' holds {named} at character 2 ({'4' + char + '4'!r}), which "
            f"does not show: it would be a contact of its own beside {looks!r}; remove it from "
            "the key in the CRM (a copy-paste?) and re-export"
        )
    finally:
        store.close()


def test_a_key_that_shows_as_itself_is_a_key() -> None:
    """Accents, other scripts, spaces and ASCII punctuation are keys as they are; the
    existing reasons (a NUL, a byte-order mark) still name theirs."""
    header = ["Record ID", "Name"]
    for key in ("Zoë-1", "ЖК 17", "客户-9", "CRM 1/2", "A_b.c#1"):
        assert source.defect([key, "Ann"], header, "utf-8", 0) is None
    assert "NUL byte" in (source.defect(["1\x00", "Ann"], header, "utf-8", 0) or "")
    assert "byte-order mark" in (source.defect(["1\ufeff", "Ann"], header, "utf-8", 0) or "")
    # a character with no name is named by its kind
    for key, kind in (
        ("1\ue000", "a private-use character"),
        ("1\u0378", "an unassigned code point"),
    ):
        assert f"holds U+{ord(key[1]):04X} {kind} at character 2" in (
            source.defect([key, "Ann"], header, "utf-8", 0) or ""
        )
    # a name may hold a joiner (Persian, Indic scripts, emoji): only the key is held to it
    assert (
        source.defect(["1", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"], header, "utf-8", 0)
        is None
    )


# --- config values that loaded but weakened a promise, or crashed the loader ---------------
BASE = """\
[source]
path = "contacts.csv"
key = "Record ID"
[store]
path = "syncd.db"
[vendors.esputnik]
base_url = "http://127.0.0.1:1"
api_key = "k"
mapping = "esputnik.toml"
"""
MAPPING = '[fields]\nemail = "Email"\nexternalCustomerId = "Record ID"\n'


def _source(line: str) -> str:
    return BASE.replace('key = "Record ID"\n', f'key = "Record ID"\n{line}\n')


# case: (config text, the message it must give)
CONFIGS: dict[str, tuple[str, str]] = {
    # an ignored column is cut out of the change text: the vendor never got a new email
    "ignore_a_mapped_column": (
        _source('ignore_columns = ["Email"]'),
        "[source] ignore_columns: names 'Email', which esputnik's mapping",
    ),
    # no unsubscribe has channel "emial": every unsubscribed contact was surveyed again
    "a_misspelt_suppression_channel": (
        BASE + '[suppression]\nchannels = ["emial"]\n',
        "[suppression] channels: unknown channel 'emial': it would match no unsubscribe "
        "(did you mean 'email'?",
    ),
    "no_suppression_channel": (
        BASE + "[suppression]\nchannels = []\n",
        "[suppression] channels: is empty: no unsubscribe would suppress anyone",
    ),
    # every national phone quarantined, and `check` said ok
    "an_unknown_phone_region": (
        _source('phone_region = "XX"'),
        "[source] phone_region: unknown region 'XX'",
    ),
    # tracebacks
    "a_nul_in_the_export_path": (
        BASE.replace('"contacts.csv"', '"a\\u0000b.csv"'),
        "[source] path: 'a\\x00b.csv' contains a NUL byte",
    ),
    "a_nul_in_the_store_path": (
        BASE.replace('"syncd.db"', '"a\\u0000b.db"'),
        "[store] path: 'a\\x00b.db' contains a NUL byte",
    ),
    "an_interval_too_large": (
        BASE + '[schedule]\nreconcile = "every 999999999999999h"\n',
        "[schedule] reconcile: not a crontab line nor 'every N[s|m|h]'",
    ),
    # a scheme with no name was taken as the literal secret "env:"
    "env_with_no_name": (
        BASE.replace('api_key = "k"', 'api_key = "env:"'),
        "[vendors.esputnik] api_key: 'env:' names no variable",
    ),
    "file_with_no_name": (
        BASE.replace('api_key = "k"', 'api_key = "file:"'),
        "[vendors.esputnik] api_key: 'file:' names no file",
    ),
    "a_blank_secret": (
        BASE.replace('api_key = "k"', 'api_key = "   "'),
        "[vendors.esputnik] api_key: is empty",
    ),
    "a_blank_environment_variable": (
        BASE.replace('api_key = "k"', 'api_key = "env:SYNCD_TEST_BLANK"'),
        "[vendors.esputnik] api_key: environment variable SYNCD_TEST_BLANK is not set or empty",
    ),
    # `""` resolved to the config's folder, or named a column the header had no name for
    "an_empty_mapping_path": (
        BASE.replace('mapping = "esputnik.toml"', 'mapping = ""'),
        "[vendors.esputnik] mapping: is empty",
    ),
    "an_empty_key": (BASE.replace('key = "Record ID"', 'key = ""'), "[source] key: is empty"),
    # the export was read as one column, and the key was said to be missing
    "a_quote_as_delimiter": (
        _source('delimiter = "\\""'),
        "[source] delimiter: '\"' cannot separate columns",
    ),
    "a_line_break_as_delimiter": (
        _source('delimiter = "\\n"'),
        "[source] delimiter: '\\n' cannot separate columns",
    ),
    "a_typo_is_named_with_a_suggestion": (
        _source("max_dorp = 0.2"),
        "[source] max_dorp: unknown key (did you mean 'max_drop'?)",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIGS))
def test_config_values_that_would_weaken_a_promise_are_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    monkeypatch.setenv("SYNCD_TEST_BLANK", " ")
    text, expected = CONFIGS[case]
    (tmp_path / "esputnik.toml").write_text(MAPPING, encoding="utf-8")
    path = tmp_path / "syncd.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: "), str(err.value)
    assert expected in str(err.value)


def test_a_config_not_in_utf8_names_the_line_and_one_with_a_bom_loads(tmp_path: Path) -> None:
    (tmp_path / "esputnik.toml").write_text(MAPPING, encoding="utf-8")
    path = tmp_path / "syncd.toml"
    path.write_bytes(BASE.replace("Record ID", "Réf").encode("cp1252"))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == (
        f"{path}: is not UTF-8: byte 0xe9 on line 3 (save the file as UTF-8 (a Latin-1 or "
        "cp1252 accent is the usual cause))"
    )
    # Notepad's UTF-8 starts with a byte-order mark: "Invalid statement (at line 1, column 1)"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    (tmp_path / "esputnik.toml").write_bytes(b"\xef\xbb\xbf" + MAPPING.encode())
    assert load(path).vendors["esputnik"].mapping.fields["email"] == "Email"


# --- an export replaced or written to while it is read -------------------------------------
def test_an_export_replaced_while_it_is_read_is_refused_not_read_under_the_old_header(
    tmp_path: Path,
) -> None:
    """The CRM's job writes a new file and renames it over the export between the header's
    read and the rows': the rows were read under the old header, every column shifted."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Record ID,Email,Name\n1,a@example.com,Ann\n")
    cfg = SourceConfig(path=str(path), key="Record ID", settle_seconds=0)
    for encoding in ("utf-8", "cp1252"):  # the raw path, the csv module's
        with Export(path, replace(cfg, encoding=encoding)) as export:
            new = tmp_path / "new.csv"
            new.write_bytes(b"Record ID,Name,Email\n1,Ann,a@example.com\n")
            os.replace(new, path)
            if encoding == "utf-8":  # the rows are read from a file of their own
                with pytest.raises(NotSettledError, match="changed while it was read"):
                    list(export.rows(lambda bad: None))
            else:  # from the file the header came from: the old export, whole
                assert list(export.rows(lambda bad: None)) == [(2, ["1", "a@example.com", "Ann"])]
        path.write_bytes(b"Record ID,Email,Name\n1,a@example.com,Ann\n")


@pytest.mark.parametrize("how", ["replaced", "written to"])
def test_an_export_changed_between_its_settle_check_and_its_open_is_refused(
    world: tuple[World, ESputnikSim], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """`find_export` judged the file settled on one look; `Export` opened the path again.
    The CRM's job renamed a new file over it in between (or went on writing it), and syncd
    read a file nobody had judged settled: a half-written export's rows were sent."""
    w, sim = world
    w.export.write_bytes(rows(3))
    hour_ago = time.time() - 3600
    os.utime(w.export, (hour_ago, hour_ago))
    cfg = w.cfg
    cfg = replace(cfg, source=replace(cfg.source, settle_seconds=30))
    real = pipeline.find_export

    def find_then_change(*args: object) -> source.Found:
        found = real(*args)  # type: ignore[arg-type]
        if how == "replaced":
            new = w.folder / "new.csv"
            new.write_bytes(HEADER + row(1, b"Half") + row(2))  # being written, a line at a time
            os.utime(new, (hour_ago, hour_ago))  # even with the old file's times
            os.replace(new, w.export)
        else:
            with w.export.open("ab") as fh:
                fh.write(row(4))
            os.utime(w.export, (hour_ago, hour_ago))
        return found

    monkeypatch.setattr(pipeline, "find_export", find_then_change)
    with opened(cfg) as store, pytest.raises(NotSettledError) as err:
        reconcile(cfg, store, w.clock)
    assert err.value.exit_code == 3
    assert err.value.message == (
        f"export {w.export} changed since syncd found it settled; nothing was sent"
    )
    assert err.value.hint == "the CRM's job is writing a new export: try again shortly"
    assert sim.contacts() == []
    # with settle_seconds = 0 nothing was judged (the CRM renames whole files into place)
    w.export.write_bytes(rows(3))
    cfg = replace(cfg, source=replace(cfg.source, settle_seconds=0))
    monkeypatch.setattr(pipeline, "find_export", real)
    with opened(cfg) as store:
        assert reconcile(cfg, store, w.clock).exit_code == 0
    assert len(sim.contacts()) == 3


def test_an_export_written_to_while_it_is_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Record ID,Email,Name\n1,a@example.com,Ann\n")
    cfg = SourceConfig(path=str(path), key="Record ID", settle_seconds=0)
    with Export(path, cfg) as export:
        with path.open("ab") as fh:
            fh.write(b"2,b@example.com,Bob\n")
        with pytest.raises(NotSettledError, match="changed while it was read"):
            list(export.rows(lambda bad: None))


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])  # the raw path, the csv module's
@pytest.mark.parametrize("to", [0, len(b"Record ID,Email,Name\n")])
def test_an_export_emptied_while_it_is_read_is_refused_not_read_as_no_contacts(
    tmp_path: Path, encoding: str, to: int
) -> None:
    """The CRM's job truncates the export to write it again, just after the header was
    read: the rows came back as none, unchecked, and `sync --force` (or a first sync's
    "no usable rows" guard read as "the export is empty") marked every contact gone."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(b"Record ID,Email,Name\n1,a@example.com,Ann\n")
    cfg = SourceConfig(path=str(path), key="Record ID", settle_seconds=0, encoding=encoding)
    with Export(path, cfg) as export:
        os.truncate(path, to)
        with pytest.raises(NotSettledError, match=r"changed while it was read \(written to\)"):
            list(export.rows(lambda bad: None))


def test_an_export_whose_every_row_is_quarantined_says_why_not_that_contacts_were_lost(
    world: tuple[World, ESputnikSim],
) -> None:
    """A Latin-1 export of accented names: refused as "no usable rows", with `--force` as
    the remedy "if the export really lost these contacts"; the reason was rolled back."""
    w, sim = world
    w.export.write_bytes(rows(3, bad={1, 2, 3}))
    with pytest.raises(GuardError) as err:
        w.sync()
    assert (
        f"every one of the 3 rows of {w.export} is quarantined (line 2: column 'First Name' "
        "has bytes that are not valid utf-8; re-export as UTF-8 or set [source] encoding)"
    ) in str(err.value)
    assert err.value.hint is not None and "--force" not in err.value.hint
    assert sim.contacts() == []


def test_an_export_whose_rows_one_vendor_refuses_is_sent_to_the_others(tmp_path: Path) -> None:
    """Every row without a phone, which SignalVine needs (quarantined for it only): the
    guard took them for an export of nothing usable and refused it whole, naming no reason
    ("quarantined (None)"), and eSputnik, which takes them, was sent nothing."""
    import random

    from syncd.demo import SANDBOX_TABLES, mapping_text
    from syncd.sample import row, write_export
    from syncd.sandbox.signalvine import SignalVineSim

    es, sv = ESputnikSim(), SignalVineSim()
    with Server(es) as es_server, Server(sv) as sv_server:
        w = World(
            tmp_path,
            {
                "esputnik": esputnik_table(es_server.url),
                "signalvine": (
                    f'base_url = "{sv_server.url}"\n{SANDBOX_TABLES["signalvine"]}',
                    mapping_text("signalvine"),
                ),
            },
        )
        data = [row(i, random.Random(i)) for i in range(2)]
        for r in data:
            r[4] = ""  # Phone
        write_export(w.export, data)
        report = w.sync()
        assert report.exit_code == 0, report.summary()
        assert report.plan is not None and report.plan.quarantined == 2
        assert report.plan.vendors["signalvine"].counts["quarantined"] == 2
        assert sorted(c["externalCustomerId"] for c in es.contacts()) == [r[0] for r in data]
        assert sv.participants_by_customer() == {}


@pytest.mark.parametrize(
    ("data", "delimiter", "hint"),
    [
        (
            b"record id,Email\n1,a@example.com\n",
            ",",
            "the header has 'record id': set [source] key = 'record id'",
        ),
        (b"Record\xc2\xa0ID,Email\n1,a@example.com\n", ",", "set [source] key = 'Record\\xa0ID'"),
        (b"sep=;\nRecord ID;Email\n1;a@example.com\n", ";", "a spreadsheet's delimiter line"),
        (b"Record ID;Email\n1;a@example.com\n", ",", "set [source] delimiter = ';'"),
        (b"\0" * 100 + b"\n", ",", "holds NUL bytes: this is not a CSV export"),
        # UTF-16 without its byte-order mark: "this is not a CSV export"
        ("Record ID,Email\n".encode("utf-16-le"), ",", 'set [source] encoding = "utf-16-le"'),
        ("Record ID,Email\n".encode("utf-16-be"), ",", 'set [source] encoding = "utf-16-be"'),
        (b"Id,Email\n1,a@example.com\n", ",", "set [source] key to one of: 'Id', 'Email'"),
    ],
)
def test_a_key_not_in_the_header_says_what_it_most_likely_is(
    tmp_path: Path, data: bytes, delimiter: str, hint: str
) -> None:
    """A key that differs in case or spacing, an Excel `sep=` line, a wrong delimiter or a
    binary file all said only "not in the header", listing mangled header cells."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(data)
    cfg = SourceConfig(path=str(path), key="Record ID", delimiter=delimiter, settle_seconds=0)
    with pytest.raises(SourceError, match="is not in the header") as caught:
        Export(path, cfg)
    assert hint in (caught.value.hint or ""), caught.value.hint


# --- an export behind a symlink ------------------------------------------------------------
def test_an_export_behind_a_symlink_is_read_where_the_link_points_at_each_run(
    world: tuple[World, ESputnikSim],
) -> None:
    """The CRM's job writes `contacts-<date>.csv` and moves `contacts.csv` on to it. The
    config was loaded once (the service loads it at start): the link was resolved then, and
    every later reconcile read the first night's file, finding nothing new, ever."""
    w, sim = world
    (w.folder / "day1.csv").write_bytes(rows(2))
    w.export.symlink_to("day1.csv")
    cfg = w.cfg  # as `syncd run` holds it, night after night
    with opened(cfg) as store:
        assert reconcile(cfg, store, w.clock).exit_code == 0
    (w.folder / "day2.csv").write_bytes(rows(2).replace(b"Ann", b"Anna", 1))
    w.export.unlink()
    w.export.symlink_to("day2.csv")
    with opened(cfg) as store:
        report = reconcile(cfg, store, w.clock)
    assert report.plan is not None and report.plan.export == str(w.export)
    assert report.counts()["esputnik"].get("changed") == 1
    assert [c["firstName"] for c in sim.contacts()] == ["Anna", "Ann"]


# --- a UTF-8 export read in the single-byte encoding the config names -------------------------
@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "iso-8859-15"])
def test_a_utf8_export_is_not_read_in_the_single_byte_encoding_the_config_still_names(
    world: tuple[World, ESputnikSim], encoding: str
) -> None:
    """The CRM started exporting UTF-8; the config says cp1252, as `syncd init` wrote it for
    last year's export. Every byte decodes in cp1252, so nothing was quarantined and every
    accented name went to the vendors as `RenÃ©e`."""
    w, sim = world
    config = w.folder / "syncd.toml"
    config.write_text(
        config.read_text().replace(
            'key = "Record ID"', f'key = "Record ID"\nencoding = "{encoding}"'
        )
    )
    w.export.write_bytes(rows(2, bad={2}, name="Renée".encode()))
    with pytest.raises(SourceError) as err:
        w.sync()
    assert err.value.message == (
        f"export {w.export} is UTF-8, but [source] encoding = {encoding!r} reads it otherwise "
        "(line 3: 'é' as 'Ã©'): every accented name would be sent mangled"
    )
    assert (
        err.value.hint == 'set [source] encoding = "utf-8" (or leave it out): the CRM exports UTF-8'
    )
    assert sim.contacts() == []
    # the export in that encoding is read as ever
    w.export.write_bytes(rows(2, bad={2}, name="Renée".encode(encoding)))
    assert w.sync().exit_code == 0
    assert sorted(c["firstName"] for c in sim.contacts()) == ["Ann", "Renée"]


def test_a_header_only_export_offers_force_only_when_there_are_contacts_to_lose(
    world: tuple[World, ESputnikSim],
) -> None:
    """A first sync of a header-only export said "if the export really lost these contacts,
    run `syncd sync --force`": there were none, and --force sends nothing."""
    w, _sim = world
    w.export.write_bytes(HEADER)
    with pytest.raises(GuardError) as err:
        w.sync()
    assert err.value.hint == "the CRM's export wrote its header and no contact: re-run it"
    w.export.write_bytes(rows(2))
    assert w.sync().exit_code == 0
    w.export.write_bytes(HEADER)
    with pytest.raises(GuardError) as err:
        w.sync()
    assert err.value.hint == "if the export really lost these contacts, run `syncd sync --force`"


@pytest.mark.parametrize(("column", "near"), [("segment", "Segment"), ("Segmnt", "Segment")])
def test_a_mapped_column_not_in_the_header_names_the_one_it_most_likely_is(
    world: tuple[World, ESputnikSim], column: str, near: str
) -> None:
    """It listed the first 20 columns only: in a 60-column export, the one meant was often
    not among them."""
    w, sim = world
    mapping = w.folder / "esputnik.toml"
    mapping.write_text(mapping.read_text().replace('"Segment"', f'"{column}"'))
    wide = HEADER.rstrip() + b"".join(b",Extra %d" % i for i in range(40)) + b"\r\n"
    w.export.write_bytes(wide + b"1,Ann,Lee,a@example.com,,Gold" + b"," * 40 + b"\r\n")
    with pytest.raises(ConfigError) as err:
        w.sync()
    assert err.value.bare == f"column {column!r} is not in the export header"
    assert err.value.hint is not None
    assert err.value.hint.startswith(f"did you mean {near!r}? export columns: 'Record ID', ")
    assert err.value.hint.endswith(", 'Extra 13', … (46 in all)")
    assert sim.contacts() == []


def test_only_single_byte_encodings_are_held_to_a_utf8_export() -> None:
    """A multi-byte encoding does not decode every byte: it has its own errors to give."""
    data = "Record ID,Name\n1,Renée\n".encode()
    for encoding in ("utf-8", "UTF8", "utf-8-sig", "utf-16", "gbk", "shift_jis"):
        assert source._misread_utf8(data, encoding) is None, encoding
    for encoding in ("cp1252", "latin-1", "ascii", "koi8-r", "mac-roman"):
        assert source._misread_utf8(data, encoding), encoding
    assert source._misread_utf8("Renée".encode("cp1252"), "cp1252") is None


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_a_utf8_export_whose_first_accent_is_deep_in_it_is_refused_before_anything_is_sent(
    world: tuple[World, ESputnikSim], monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """Only the first 64 KiB were looked at: 2,000 rows of plain ASCII, then `Renée` on
    line 2,001, and every vendor got `RenÃ©e`. Refused before a row is read, nothing sent
    or recorded; the same rows in that encoding are read as ever."""
    w, sim = world
    monkeypatch.setattr(source, "SCAN_BYTES", 4096)  # the file is many chunks
    config = w.folder / "syncd.toml"
    config.write_text(
        config.read_text().replace(
            'key = "Record ID"', f'key = "Record ID"\nencoding = "{encoding}"'
        )
    )
    assert len(rows(2000)) > source.SNIFF_BYTES
    w.export.write_bytes(rows(2001, bad={2000}, name="Renée".encode()))
    with pytest.raises(SourceError) as err:
        w.sync()
    assert err.value.message == (
        f"export {w.export} is UTF-8, but [source] encoding = {encoding!r} reads it otherwise "
        "(line 2001: 'é' as 'Ã©'): every accented name would be sent mangled"
    )
    assert sim.contacts() == []
    store = w.store()
    try:
        assert store.query("SELECT count(*) AS n FROM contacts")[0]["n"] == 0
        assert store.query("SELECT count(*) AS n FROM vendor_state")[0]["n"] == 0
    finally:
        store.close()
    w.export.write_bytes(rows(2001, bad={2000}, name="Renée".encode(encoding)))
    assert w.sync().exit_code == 0
    assert {c["firstName"] for c in sim.contacts()} == {"Ann", "Renée"}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 20])
def test_the_look_for_utf8_is_the_same_whatever_the_chunks(size: int) -> None:
    """A character cut between two chunks, the first accent at a chunk's last byte."""
    for data in (
        b"Record ID,Name\n" + b"1,Ann\n" * 40 + "2,Åsa Renée\n".encode(),
        b"Record ID,Name\n1,\xc3\xa9\n2,Ren\xe9e\n",  # UTF-8, then cp1252: cp1252
        b"Record ID,Name\n1,Ann\n",
        "Record ID,Name\n1,€\n".encode(),
    ):
        whole = source._misread_utf8(data, "cp1252")
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        assert source._misread_utf8(chunks, "cp1252") == whole, (data, size)
    assert source._misread_utf8([b"a\n", "b\nÅ".encode()], "cp1252") == "line 3: 'Å' as 'Ã…'"
    assert source._misread_utf8("\n€".encode(), "latin-1") == "line 2: '€' as 'â\\x82¬'"


@pytest.mark.parametrize("encoding", ["utf-8", "cp1252"])  # the raw path, the csv module's
def test_a_record_the_csv_module_gives_up_on_inside_a_quoted_field_stops_the_run(
    world: tuple[World, ESputnikSim], encoding: str
) -> None:
    """A quoted note runs past 1 MiB (an unclosed quote): the csv module gave up on line 2
    and went on at line 3, inside the note, as if a record began there. The note's text
    `3,Eve,...` was sent as a contact, and every quote after it read the wrong way round.
    Where the record's quotes close on the line given up on, it is quarantined as before."""
    w, sim = world
    config = w.folder / "syncd.toml"
    config.write_text(
        config.read_text().replace(
            'key = "Record ID"', f'key = "Record ID"\nencoding = "{encoding}"'
        )
    )
    note = b"x" * (source.FIELD_LIMIT + 1)
    hidden = b"\r\n3,Eve,Row,eve@example.com,,Gold\r\nend"
    w.export.write_bytes(HEADER + b'1,Ann,Lee,a@example.com,,"' + note + hidden + b'"\r\n' + row(2))
    with pytest.raises(SourceError) as err:
        w.sync()
    assert err.value.message == (
        f"export {w.export}: line 2 is unreadable (a field is larger than 1 MiB: an unclosed "
        "quote or binary data; fix the export from this line on), and a quoted field is still "
        "open at the end of line 2: the lines after it cannot be told from that field's text, "
        "so the export is not read; nothing was sent"
    )
    assert err.value.hint == "fix the quoting from line 2 on, and re-export"
    assert sim.contacts() == []
    # the note closed on its own line: that record quarantined, the rest read
    w.export.write_bytes(HEADER + b'1,Ann,Lee,a@example.com,,"' + note + b'"\r\n' + row(2))
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None and report.plan.quarantined == 1
    assert [c["externalCustomerId"] for c in sim.contacts()] == ["2"]


def test_a_byte_order_mark_inside_the_export_is_quarantined_not_sent_as_part_of_a_key(
    world: tuple[World, ESputnikSim],
) -> None:
    """Two files joined into one, the second with its BOM: `\\ufeff2` was a contact of its
    own, sent as `externalCustomerId` "\\ufeff2" (and, deduplicated on email, put over
    contact 2's id at the vendor). Now quarantined by its key, which is held back."""
    w, sim = world
    w.export.write_bytes(rows(3))
    assert w.sync().exit_code == 0
    w.export.write_bytes(rows(3).replace(b"\r\n2,Ann", b"\r\n\xef\xbb\xbf2,Annie"))
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None
    assert (report.plan.quarantined, report.plan.gone) == (1, 0)
    store = w.store()
    try:
        assert [tuple(r) for r in store.query("SELECT line, key, reason FROM quarantine")] == [
            (
                3,
                "2",
                "column 'Record ID' holds a byte-order mark (U+FEFF), which only starts a file: "
                "two files joined into one? re-export the file or remove the mark",
            )
        ]
    finally:
        store.close()
    assert sorted(c["externalCustomerId"] for c in sim.contacts()) == ["1", "2", "3"]
    assert {c["firstName"] for c in sim.contacts()} == {"Ann"}


EXCEL_UNICODE_TEXT = (
    "Record ID\tFirst Name\tEmail\r\n1\tRenée\ta@example.com\r\n2\tBob\tb@example.com\r\n"
)


@pytest.mark.parametrize(
    ("encoding", "data"),
    [
        ("utf-16", codecs.BOM_UTF16_LE + EXCEL_UNICODE_TEXT.encode("utf-16-le")),
        ("utf-16", codecs.BOM_UTF16_BE + EXCEL_UNICODE_TEXT.encode("utf-16-be")),
        ("utf-16-le", EXCEL_UNICODE_TEXT.encode("utf-16-le")),
        ("utf-32", EXCEL_UNICODE_TEXT.encode("utf-32")),
        ("utf-8-sig", EXCEL_UNICODE_TEXT.encode("utf-8-sig")),  # a mark of its own, once
    ],
)
def test_a_utf16_export_is_read_whole_not_refused_as_cut_short(
    tmp_path: Path, encoding: str, data: bytes
) -> None:
    """Excel's "Unicode Text": syncd names `encoding = "utf-16"` for it, and then refused
    every one as "ends mid-record (its last line has no line break)": its last byte is the
    NUL of `\\n\\0`. `--force` read it with its last contact quarantined."""
    path = tmp_path / "contacts.csv"
    path.write_bytes(data)
    cfg = SourceConfig(path=str(path), key="Record ID", settle_seconds=0, encoding=encoding)
    with Export(path, cfg) as export:
        got = list(export.rows(lambda bad: pytest.fail(str(bad))))
    assert got == [(2, ["1", "Renée", "a@example.com"]), (3, ["2", "Bob", "b@example.com"])]
    path.write_bytes(data[: -2 * (4 if "32" in encoding else 2)])  # no CRLF at the end
    with Export(path, cfg) as export, pytest.raises(GuardError, match="ends mid-record at line 3"):
        list(export.rows(lambda bad: None))
    # read in a single-byte encoding, the NULs say which one to set
    path.write_bytes(EXCEL_UNICODE_TEXT.encode("utf-16"))
    with pytest.raises(SourceError) as err:
        Export(path, replace(cfg, encoding="cp1252"))
    assert err.value.hint == 'the file is UTF-16 text: set [source] encoding = "utf-16"'


def test_a_utf8_export_with_its_bom_is_not_read_in_cp1252_for_a_few_other_bytes(
    world: tuple[World, ESputnikSim],
) -> None:
    """Excel's UTF-8 CSV, with one row pasted in from a cp1252 file: not valid UTF-8 as a
    whole, so it was read in cp1252 as configured and `Renée` sent as `RenÃ©e`. Its BOM
    says what it is: refused, and read as UTF-8 the odd row is quarantined."""
    w, sim = world
    config = w.folder / "syncd.toml"
    config.write_text(
        config.read_text().replace('key = "Record ID"', 'key = "Record ID"\nencoding = "cp1252"')
    )
    header = b"\xef\xbb\xbfNotes," + HEADER
    w.export.write_bytes(
        header + b"x," + row(1, "Renée".encode()) + b"y," + row(2, "Zoë".encode("cp1252"))
    )
    with pytest.raises(SourceError) as err:
        w.sync()
    assert "(line 1: '\\ufeff' as 'ï»¿'): every accented name would be sent mangled" in str(
        err.value
    )
    assert sim.contacts() == []
    config.write_text(config.read_text().replace('encoding = "cp1252"', 'encoding = "utf-8"'))
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None and report.plan.quarantined == 1
    assert [c["firstName"] for c in sim.contacts()] == ["Renée"]


@pytest.mark.parametrize(("stored", "looks"), [("3\u200b", "3"), ("\ufeff3", "3")])
def test_a_contact_stored_with_a_hidden_character_in_its_key_is_held_back_not_gone(
    world: tuple[World, ESputnikSim], monkeypatch: pytest.MonkeyPatch, stored: str, looks: str
) -> None:
    """A release before the check stored `3\\u200b` (or `\\ufeff3`) as it was, and queued
    a change of it that its vendor was down for. Once its row changed again, the row was
    quarantined under the key it looks like, `3`, which no stored contact has: `3\\u200b`
    was marked gone and its pending change withdrawn. It is held back by the row's own
    key (and by the one it looks like), and the quarantine shows the visible one."""
    w, sim = world
    export = rows(20).replace(b"\r\n3,", f"\r\n{stored},".encode())
    with monkeypatch.context() as old_release:
        old_release.setattr(project, "defect", lambda *args: None)
        w.export.write_bytes(export)
        assert w.sync().exit_code == 0
        sim.faults.add("down", status=503)
        w.export.write_bytes(export.replace(b",Ann,Lee,p3@", b",Annie,Lee,p3@"))
        assert w.sync().exit_code == 1
    assert stored in {c["externalCustomerId"] for c in sim.contacts()}
    w.export.write_bytes(export.replace(b",Ann,Lee,p3@", b",Anna,Lee,p3@"))
    report = w.sync()
    assert report.plan is not None
    assert (report.plan.quarantined, report.plan.gone, report.plan.withdrawn) == (1, 0, 0)
    assert gone(w) == []
    store = w.store()
    try:
        got = store.query("SELECT line, key, reason FROM quarantine WHERE run_id = 3")
        assert [(r["line"], r["key"]) for r in got] == [(4, looks)]
        kept = store.query("SELECT attributes FROM contacts WHERE key = ?", (stored,))
        assert [orjson.loads(r["attributes"])["First Name"] for r in kept] == ["Annie"]
        pending = store.query("SELECT key, status FROM deliveries WHERE status = 'pending'")
        assert [tuple(r) for r in pending] == [(stored, "pending")]
    finally:
        store.close()


def test_rows_pasted_in_as_utf8_into_a_cp1252_export_are_quarantined_not_sent_mangled(
    world: tuple[World, ESputnikSim],
) -> None:
    """A cp1252 export with a few rows pasted in from a UTF-8 file (no BOM): the file is no
    UTF-8 as a whole, so it was read in cp1252 as configured, and `Renée` went to every
    vendor as `RenÃ©e`, nothing quarantined. Those rows are quarantined saying what they
    read as; the cp1252 rows go through, and a known contact's pasted row is held back."""
    w, sim = world
    config = w.folder / "syncd.toml"
    config.write_text(
        config.read_text().replace('key = "Record ID"', 'key = "Record ID"\nencoding = "cp1252"')
    )
    w.export.write_bytes(rows(4, bad={2}, name="Zoë".encode("cp1252")))
    assert w.sync().exit_code == 0
    pasted = {3: "Renée", 4: "Ðorđe", 5: "Ann “A”"}  # (Ð and ” hold bytes cp1252 lacks)
    data = rows(5, bad={2}, name="Zoë".encode("cp1252"))
    for i, name in pasted.items():
        data = data.replace(b"\n%d,Ann," % i, b"\n%d,%s," % (i, name.encode()))
    w.export.write_bytes(data)
    report = w.sync()
    assert report.exit_code == 0 and report.plan is not None
    assert (report.plan.quarantined, report.plan.gone) == (3, 0)
    assert sorted(c["firstName"] for c in sim.contacts()) == ["Ann", "Ann", "Ann", "Zoë"]
    store = w.store()
    try:
        got = store.query("SELECT line, key, reason FROM quarantine ORDER BY line")
        assert [(r["line"], r["key"]) for r in got] == [(4, "3"), (5, "4"), (6, "5")]
        assert got[0]["reason"] == (
            "column 'First Name' is UTF-8 in this cp1252 export (a row pasted in from a UTF-8 "
            "file?): it reads as 'RenÃ©e', not 'Renée'; fix the row in the CRM and re-export, "
            'or export the whole file as UTF-8 and set [source] encoding = "utf-8"'
        )
        assert "reads as 'Ã\\x90orÄ‘e', not 'Ðorđe'" in got[1]["reason"]
        assert "not 'Ann “A”'" in got[2]["reason"]
    finally:
        store.close()
    assert gone(w) == []


def test_cp1252_text_that_happens_to_be_valid_utf8_is_read_as_cp1252() -> None:
    """The bytes of a cp1252 accent followed by a symbol may form a UTF-8 character (`É™`
    is C9 99, `ə`): such readings (IPA, C1 controls, NKo, private use) are not taken for
    UTF-8. Readings a pasted name gives (Latin, Greek, Cyrillic, punctuation, CJK, emoji)
    are; so is text the CRM holds mangled (`RenÃ©e` typed in), mangled either way."""
    header = ["Record ID", "Name"]
    for text in ("CAFÉ™", "«ÉTÉ»", "PRÊT…", "Straß…", "Â€", "Zoë", "Ann’s", "SÃO", "Ã"):
        assert source.defect(["1", text], header, "cp1252", 0) is None, text
    # the key is looked at as ever in a row the look for UTF-8 went through
    assert "U+00A0 NO-BREAK SPACE" in (
        source.defect(["3\xa04", "Ann’s"], header, "cp1252", 0) or ""
    )
    for text in ("Renée", "Łódź", "Ελένη", "Ольга", "Nguyễn", "王芳", "Ann 🙂", "£5"):
        as_read = text.encode().decode("cp1252", "surrogateescape")
        why = source.defect(["1", as_read], header, "cp1252", 0)
        assert why is not None and f"not {text!r}" in why, text
    # nor in a UTF-8 export, or a multi-byte encoding
    assert source.defect(["1", "RenÃ©e"], header, "utf-8", 0) is None
    assert source.defect(["1", "RenÃ©e"], header, "gbk", 0) is None
