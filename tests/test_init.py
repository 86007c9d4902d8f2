"""`syncd init`: the key and the fields it recognises in real CRM headers, that `syncd check`
accepts what it writes once the secrets' variables are set, that it never overwrites a
file, and what it says when no column can be the key."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from syncd.config import load
from syncd.errors import ConfigError, SyncdError
from syncd.init import ALIASES, ROLES, init
from syncd.vendors import REGISTRY

SYNCD = [sys.executable, "-m", "syncd.cli"]
SECRETS = {
    "ESPUTNIK_API_KEY": "k1",
    "SIGNALVINE_TOKEN": "k2",
    "SIGNALVINE_SECRET": "k3",
    "HELLOCUSTOMER_TOKEN": "k4",
    "DROPTHOUGHT_PASSWORD": "k5",
    "ALTCRAFT_TOKEN": "k6",
}


def export(path: Path, header: list[str], sep: str = ",", encoding: str = "utf-8") -> Path:
    """A settled export: the header and two rows, CRLF line ends."""
    rows = [
        header,
        [f"{i} Émile" for i in range(len(header))],
        [f"{i}b" for i in range(len(header))],
    ]
    path.write_bytes("".join(sep.join(r) + "\r\n" for r in rows).encode(encoding))
    hour_ago = path.stat().st_mtime - 3600  # past settle_seconds, so `syncd check` reads it
    os.utime(path, (hour_ago, hour_ago))
    return path


def written(folder: Path) -> tuple[dict[str, object], dict[str, dict[str, str]]]:
    """The written [source] table and each mapping's [fields]."""
    config = tomllib.loads((folder / "syncd.toml").read_text(encoding="utf-8"))
    fields = {
        p.stem: tomllib.loads(p.read_text(encoding="utf-8"))["fields"]
        for p in (folder / "mappings").glob("*.toml")
    }
    return config["source"], fields


HUBSPOT = [
    "Record ID",
    "First Name",
    "Last Name",
    "Email",
    "Phone Number",
    "Mobile Phone Number",
    "Street Address",
    "City",
    "State/Region",
    "Postal Code",
    "Preferred language",
    "Lifecycle Stage",
    "Last Activity Date",
]
SALESFORCE_REPORT = [
    "Contact ID",
    "Account Name",
    "First Name",
    "Last Name",
    "Title",
    "Email",
    "Phone",
    "Mobile",
    "Mailing Street",
    "Mailing City",
    "Mailing Zip/Postal Code",
    "Account ID",
]
SALESFORCE_DATALOADER = [  # Data Loader writes the API names in capitals
    "ID",
    "ACCOUNTID",
    "FIRSTNAME",
    "LASTNAME",
    "EMAIL",
    "PHONE",
    "MOBILEPHONE",
    "MAILINGCITY",
    "MAILINGPOSTALCODE",
    "LANGUAGES__C",
    "LASTMODIFIEDDATE",
]
ZOHO = [
    "Record Id",
    "Contact Owner",
    "First Name",
    "Last Name",
    "Email",
    "Phone",
    "Mobile",
    "Mailing City",
    "Mailing Zip",
    "Modified Time",
]
PIPEDRIVE = [
    "Person - ID",
    "Person - Name",
    "Person - First name",
    "Person - Last name",
    "Person - Organization",
    "Person - Email - Work",
    "Person - Email - Home",
    "Person - Phone - Work",
    "Person - Phone - Mobile",
    "Person - Update time",
]
EXCEL_NL = ["Klantnummer", "Voornaam", "Achternaam", "E-mail", "GSM", "Taal", "Stad"]
SNAKE = ["customer_id", "first_name", "last_name", "email_address", "mobile_phone", "language"]
FRENCH = ["Numéro de client", "Prénom", "Nom", "Courriel", "Téléphone portable", "Ville"]

CASES = {
    # name: (header, delimiter, encoding written, BOM, key, vendor → its [fields])
    "hubspot": (
        HUBSPOT,
        ",",
        "utf-8",
        False,
        "Record ID",
        {
            "esputnik": {
                "email": "Email",
                "sms": "Mobile Phone Number",
                "firstName": "First Name",
                "lastName": "Last Name",
                "externalCustomerId": "Record ID",
                "languageCode": "Preferred language",
                "address.town": "City",
                "address.postcode": "Postal Code",
                "address.address": "Street Address",
                "address.region": "State/Region",
            },
            "hellocustomer": {
                "email": "Email",
                "firstName": "First Name",
                "lastName": "Last Name",
                "phoneNumber": "Mobile Phone Number",
                "language": "Preferred language",
            },
        },
    ),
    "salesforce report": (
        SALESFORCE_REPORT,
        ",",
        "utf-8",
        False,
        "Contact ID",
        {
            "signalvine": {
                "customer_id": "Contact ID",
                "phone": "Mobile",
                "first_name": "First Name",
                "last_name": "Last Name",
                "email": "Email",
            },
            "dropthought": {"email": "Email", "phone": "Mobile", "name": "First Name"},
        },
    ),
    "salesforce data loader": (
        SALESFORCE_DATALOADER,
        ",",
        "utf-8",
        False,
        "ID",
        {
            "esputnik": {
                "email": "EMAIL",
                "sms": "MOBILEPHONE",
                "firstName": "FIRSTNAME",
                "lastName": "LASTNAME",
                "externalCustomerId": "ID",
                "languageCode": "LANGUAGES__C",
                "address.town": "MAILINGCITY",
                "address.postcode": "MAILINGPOSTALCODE",
            },
        },
    ),
    "zoho": (
        ZOHO,
        ",",
        "utf-8",
        False,
        "Record Id",
        {
            "hellocustomer": {
                "email": "Email",
                "firstName": "First Name",
                "lastName": "Last Name",
                "phoneNumber": "Mobile",
            },
            "altcraft": {"email": "Email"},
        },
    ),
    "pipedrive": (
        PIPEDRIVE,
        ",",
        "utf-8",
        False,
        "Person - ID",
        {
            "dropthought": {
                "email": "Person - Email - Work",
                "phone": "Person - Phone - Mobile",
                "name": "Person - Name",
            },
            "signalvine": {
                "customer_id": "Person - ID",
                "phone": "Person - Phone - Mobile",
                "first_name": "Person - First name",
                "last_name": "Person - Last name",
                "email": "Person - Email - Work",
            },
        },
    ),
    "excel, semicolons and a BOM": (
        EXCEL_NL,
        ";",
        "utf-8",
        True,
        "Klantnummer",
        {
            "esputnik": {
                "email": "E-mail",
                "sms": "GSM",
                "firstName": "Voornaam",
                "lastName": "Achternaam",
                "externalCustomerId": "Klantnummer",
                "languageCode": "Taal",
                "address.town": "Stad",
            },
        },
    ),
    "snake case, tabs": (
        SNAKE,
        "\t",
        "utf-8",
        False,
        "customer_id",
        {"altcraft": {"email": "email_address"}, "signalvine": {"customer_id": "customer_id"}},
    ),
    "cp1252 from Excel": (
        FRENCH,
        ";",
        "cp1252",
        False,
        "Numéro de client",
        {
            "hellocustomer": {
                "email": "Courriel",
                "firstName": "Prénom",
                "lastName": "Nom",
                "phoneNumber": "Téléphone portable",
            },
        },
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_init_recognises_the_crm_header_and_syncd_check_accepts_the_result(
    tmp_path: Path, case: str
) -> None:
    header, sep, encoding, bom, key, expected = CASES[case]
    path = export(tmp_path / "contacts.csv", header, sep, encoding)
    if bom:
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
        os.utime(path, (path.stat().st_mtime - 3600,) * 2)
    out: list[str] = []
    init(path, [",".join(REGISTRY)], tmp_path / "etc", echo=out.append)

    source, fields = written(tmp_path / "etc")
    assert (source["key"], source["delimiter"], source["encoding"]) == (key, sep, encoding)
    for vendor, mapped in expected.items():
        if vendor == "signalvine" and case.startswith("snake"):
            assert fields[vendor].items() >= mapped.items()
        else:
            assert fields[vendor] == mapped, vendor
    assert f"key {key!r}" in out[0]

    proc = subprocess.run(
        [*SYNCD, "--config", str(tmp_path / "etc" / "syncd.toml"), "check"],
        capture_output=True,
        text=True,
        env={**os.environ, **SECRETS},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every mapped column present" in proc.stdout, proc.stdout


def test_the_rows_decide_the_encoding_when_the_header_is_ascii(tmp_path: Path) -> None:
    path = export(tmp_path / "contacts.csv", HUBSPOT, ";", "cp1252")  # "Émile" in the rows
    init(path, ["esputnik"], tmp_path, echo=lambda _line: None)
    assert written(tmp_path)[0]["encoding"] == "cp1252"


def test_a_cp1252_export_with_a_row_pasted_in_as_utf8_is_still_taken_for_cp1252(
    tmp_path: Path,
) -> None:
    """Read as cp1252 such a row is quarantined (`source._pasted_utf8`), and read as UTF-8
    every other accented row is: the encoding fewer rows are quarantined in is written."""
    path = export(tmp_path / "contacts.csv", HUBSPOT, ";", "cp1252")  # one row "Émile"
    more = "".join(";".join(f"{i}{n} Zoë" for i in range(len(HUBSPOT))) + "\r\n" for n in "cd")
    pasted = ";".join(f"{i}e Zoë" for i in range(len(HUBSPOT))) + "\r\n"
    path.write_bytes(path.read_bytes() + more.encode("cp1252") + pasted.encode())
    init(path, ["esputnik"], tmp_path, echo=lambda _line: None)
    assert written(tmp_path)[0]["encoding"] == "cp1252"


def test_placeholders_and_secrets_are_marked_and_named(tmp_path: Path) -> None:
    path = export(tmp_path / "contacts.csv", ZOHO)
    out: list[str] = []
    init(path, ["hellocustomer", "altcraft"], tmp_path, echo=out.append)
    text = (tmp_path / "syncd.toml").read_text(encoding="utf-8")
    lines = text.splitlines()
    for key in ("campaign", "trigger_id", "default_language"):  # Zoho has no language column
        at = next(i for i, line in enumerate(lines) if line.startswith(f"{key} = "))
        above = next(line for line in reversed(lines[:at]) if not line.startswith("#   "))
        assert above.startswith("# CHANGE ME"), (key, above)
    assert 'token = "env:HELLOCUSTOMER_TOKEN"' in text and 'token = "env:ALTCRAFT_TOKEN"' in text
    said = "\n".join(out)
    assert "HELLOCUSTOMER_TOKEN, ALTCRAFT_TOKEN" in said
    assert "[vendors.hellocustomer] campaign" in said and "[vendors.altcraft] trigger_id" in said
    assert "'Contact Owner'" in said  # a column no mapping uses


def test_a_required_field_without_a_column_is_said_and_check_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = export(tmp_path / "contacts.csv", ["Record ID", "Email", "City"])
    out: list[str] = []
    init(path, ["signalvine"], tmp_path, echo=out.append)
    assert "  REQUIRED, no column found: phone: name one in the mapping" in out
    mapping = (tmp_path / "mappings" / "signalvine.toml").read_text(encoding="utf-8")
    assert "# REQUIRED, not mapped: phone." in mapping
    assert 'Export columns not used here: "City".' in mapping
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="signalvine needs 'phone' mapped"):
        load(tmp_path / "syncd.toml")


def run_init(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SYNCD, "init", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_init_never_overwrites_and_writes_nothing_when_one_file_exists(tmp_path: Path) -> None:
    export(tmp_path / "contacts.csv", HUBSPOT)
    (tmp_path / "mappings").mkdir()
    kept = tmp_path / "mappings" / "dropthought.toml"
    kept.write_text("# mine\n", encoding="utf-8")
    proc = run_init(tmp_path, "contacts.csv", "--vendors", "esputnik,dropthought")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[0] == (
        "syncd: mappings/dropthought.toml already exists: init never overwrites a file; "
        "nothing was written"
    )
    assert kept.read_text(encoding="utf-8") == "# mine\n"
    assert not (tmp_path / "syncd.toml").exists()
    assert not (tmp_path / "mappings" / "esputnik.toml").exists()


def test_init_run_again_over_what_it_wrote_says_each_file_is_unchanged_and_leaves_it(
    tmp_path: Path,
) -> None:
    """Run again over the files it wrote (a second try, a script's re-run), init said
    `wrote …` for each one, as if it had made them anew. Each is said unchanged now, and
    left as it is; a mapping removed since is written, and said so."""
    path = export(tmp_path / "contacts.csv", HUBSPOT)
    first: list[str] = []
    init(path, ["esputnik,hellocustomer"], tmp_path / "etc", echo=first.append)
    config, mappings = tmp_path / "etc" / "syncd.toml", tmp_path / "etc" / "mappings"
    assert [line.split(":")[0] for line in first if line.startswith("wrote ")] == [
        f"wrote {config}",
        f"wrote {mappings / 'esputnik.toml'}",
        f"wrote {mappings / 'hellocustomer.toml'}",
    ]
    files = [config, mappings / "esputnik.toml", mappings / "hellocustomer.toml"]
    stats = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files]
    (mappings / "hellocustomer.toml").unlink()
    again: list[str] = []
    init(path, ["esputnik,hellocustomer"], tmp_path / "etc", echo=again.append)
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in files[:2]] == stats[:2]
    said = {  # the second run's lines are the first's, but for these
        f"wrote {config}": f"{config} unchanged: it holds what init writes",
        f"wrote {mappings / 'esputnik.toml'}": f"{mappings / 'esputnik.toml'} unchanged: it "
        "holds what init writes",
    }
    assert again == [
        next((said[w] + line[len(w) :] for w in said if line.startswith(w)), line) for line in first
    ], again
    assert again != first


def test_no_recognisable_key_says_so_and_what_to_do(tmp_path: Path) -> None:
    export(tmp_path / "list.csv", ["Naam", "E-mail", "Telefoon"], ";")
    proc = run_init(tmp_path, "list.csv", "--vendors", "esputnik")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first, hint = proc.stderr.splitlines()
    assert first.startswith("syncd: export list.csv: no column looks like a unique contact id")
    assert hint == (
        "  → pass --key COLUMN naming the CRM's unique id column, one of: "
        "'Naam', 'E-mail', 'Telefoon'"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "list.csv"]

    proc = run_init(tmp_path, "list.csv", "--vendors", "esputnik", "--key", "e-mail")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert written(tmp_path)[0]["key"] == "E-mail"


@pytest.mark.parametrize(
    ("vendors", "said"),
    [
        ((), "syncd: name the vendors to set up"),
        (("esputnik,hubspot",), "unknown vendor 'hubspot'"),
    ],
)
def test_vendors_are_named_and_known(tmp_path: Path, vendors: tuple[str, ...], said: str) -> None:
    path = export(tmp_path / "contacts.csv", HUBSPOT)
    with pytest.raises(SyncdError, match=said.removeprefix("syncd: ")) as caught:
        init(path, vendors, tmp_path)
    assert caught.value.hint and "esputnik" in caught.value.hint
    assert not (tmp_path / "syncd.toml").exists()


def test_every_alias_means_one_thing() -> None:
    assert len(ALIASES) == sum(len(names) for names in ROLES.values())
