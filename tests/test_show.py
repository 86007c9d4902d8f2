"""`syncd show KEY|EMAIL` on a store a real sync against the simulators built: a contact
SignalVine rejects, a quarantined row, a pulled survey response, an unsubscribe and the
skips it causes; by key and by email, `--json` against its schema, and the refusals."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from syncd import show
from syncd.config import load
from syncd.demo import demo_rows
from syncd.pipeline import opened
from syncd.project import normalise_email
from syncd.pull import pull
from syncd.sample import write_export
from syncd.sandbox import Stack
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from tests.test_all_vendors import Fleet
from tests.test_query_plans import scans, trace_statements

SYNCD = [sys.executable, "-m", "syncd.cli"]
UNSUBSCRIBED = "CRM-0000003"  # unsubscribes at eSputnik; its export row is repeated too
REJECTED = "CRM-0000005"  # has CRM-0000001's phone: SignalVine refuses it
SHARED = ("CRM-0000007", "CRM-0000008")  # one email for two contacts
STOPPED = (0, 1, 2, 4, 6)  # Altcraft refuses these contacts' emails, all for one reason
STOP_REASON = "Email is in the stop list"


def export_rows(version: dict[int, int] | None = None) -> list[list[str]]:
    rows = demo_rows(10, version)
    rows[5][4] = rows[1][4]
    rows[8][3] = rows[7][3]
    return rows


def build(folder: Path) -> Path:
    """Two reconciles with a pull between them; the config's path."""
    with Stack() as stack:
        fleet = Fleet(folder, stack, days=0)
        hello = fleet.sims["hellocustomer"]
        assert isinstance(hello, HelloCustomerSim)
        hello.response_rate, hello.unsubscribe_rate = 1.0, 0.0  # everyone answers, nobody leaves
        rows = export_rows()
        for i in STOPPED:
            fleet.sims["altcraft"].faults.reject(normalise_email(rows[i][3]), STOP_REASON)
        write_export(fleet.export, rows)
        assert fleet.sync().exit_code == 1
        esputnik = fleet.sims["esputnik"]
        assert isinstance(esputnik, ESputnikSim)
        esputnik.unsubscribe(normalise_email(rows[3][3]))
        cfg = fleet.cfg
        with opened(cfg) as store:
            pull(cfg, store, fleet.clock, vendors=["esputnik", "hellocustomer"])
        write_export(fleet.export, export_rows({3: 1}))  # the unsubscribed contact changes
        fleet.sync()
        return fleet.config


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("show"))


def syncd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SYNCD, "--config", str(config), *args], capture_output=True, text=True, timeout=60
    )


def show_json(config: Path, who: str) -> dict[str, Any]:
    proc = syncd(config, "show", "--json", who)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    schema = json.loads(files("syncd").joinpath("show.schema.json").read_text("utf-8"))
    jsonschema.validate(data, schema)
    return data


def test_show_tells_an_unsubscribed_contacts_whole_story(config: Path) -> None:
    data = show_json(config, UNSUBSCRIBED)
    contact = data["contact"]
    assert contact["attributes"]["Record ID"] == UNSUBSCRIBED and not contact["gone"]
    assert list(data["vendors"]) == [
        "esputnik", "dropthought", "altcraft", "hellocustomer", "signalvine"
    ]  # fmt: skip
    for name, vendor in data["vendors"].items():
        assert vendor["state"]["acked_at"], name
        first, second = vendor["deliveries"]
        assert (first["kind"], first["status"], first["attempts"]) == ("new", "sent", 1), name
        assert (second["kind"], second["status"]) == ("changed", "skipped"), name
        assert second["reason"].startswith("unsubscribed at esputnik"), name
    assert data["vendors"]["esputnik"]["state"]["ref"]  # eSputnik's own contact id
    [quarantined] = data["quarantine"]
    assert quarantined["reason"].startswith(f"duplicate key '{UNSUBSCRIBED}'")
    assert quarantined["times"] == 2 and quarantined["line"] == 15
    [response] = data["responses"]
    assert response["vendor"] == "hellocustomer" and len(response["answers"]) == 3
    [nps] = [a for a in response["answers"] if a["is_nps"]]
    assert data["nps"] == [
        {
            "vendor": "hellocustomer",
            "response_id": response["response_id"],
            "answered_at": response["answered_at"],
            "score": nps["score"],
        }
    ]
    [unsubscribe] = data["unsubscribes"]
    assert unsubscribe["vendor"] == "esputnik" and unsubscribe["email"] == contact["email"]

    text = syncd(config, "show", UNSUBSCRIBED).stdout
    for heading in ("attributes:", "vendors:", "quarantined rows:", "response hellocustomer "):
        assert heading in text
    assert "  Record ID: CRM-0000003" in text
    assert "(run 3, 2 runs in all)" in text  # one line for the row every run quarantines
    assert f"{nps['question_text']} (NPS): {nps['score']}" in text
    assert "unsubscribed:\n  esputnik (email) at " in text
    # one line per delivery: two per vendor
    assert sum(line.startswith("    #") for line in text.splitlines()) == 10


def test_show_gives_a_rejected_contacts_reason_and_what_the_vendor_never_acknowledged(
    config: Path,
) -> None:
    data = show_json(config, REJECTED)
    signalvine = data["vendors"]["signalvine"]
    assert signalvine["state"] is None
    [delivery] = signalvine["deliveries"]  # the second run's retry re-used it
    assert delivery["status"] == "failed" and delivery["attempts"] == 2
    assert "is already used by participant" in delivery["reason"]
    assert data["vendors"]["esputnik"]["state"] is not None
    text = syncd(config, "show", REJECTED).stdout
    assert "  signalvine: nothing acknowledged\n" in text
    assert f"failed, 2 attempts, at {delivery['updated_at']} — phone +32" in text


def test_show_by_email_finds_the_contact_whatever_its_case_and_padding(config: Path) -> None:
    email = show_json(config, "CRM-0000002")["contact"]["email"]
    assert show_json(config, f"  {email.upper()} ")["key"] == "CRM-0000002"


def test_an_email_two_contacts_share_lists_them_and_asks_for_the_key(config: Path) -> None:
    email = show_json(config, SHARED[0])["contact"]["email"]
    proc = syncd(config, "show", email)
    assert proc.returncode == 2 and not proc.stdout
    assert proc.stderr.splitlines() == [
        f"syncd: {email} is the email of 2 contacts: {', '.join(SHARED)}",
        f"  → pass the key instead, e.g. `syncd show {SHARED[0]}`",
    ]


def test_an_unknown_key_or_email_is_one_line_and_exit_2(config: Path) -> None:
    for who in ("CRM-9999999", "nobody@example.com"):
        proc = syncd(config, "show", who)
        assert proc.returncode == 2 and not proc.stdout
        assert proc.stderr.startswith(f"syncd: no contact {who!r} in the store "), proc.stderr
        assert "Traceback" not in proc.stderr


def test_show_never_creates_a_store(tmp_path: Path) -> None:
    config = tmp_path / "syncd.toml"
    text = (
        '[source]\npath = "contacts.csv"\nkey = "Record ID"\n[store]\npath = "syncd.db"\n'
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "k"\n'
        'mapping = "esputnik.toml"\n'
    )
    config.write_text(text, encoding="utf-8")
    (tmp_path / "esputnik.toml").write_text('[fields]\nemail = "Email"\n', encoding="utf-8")
    proc = syncd(config, "show", "CRM-0000001")
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"syncd: there is no store at {tmp_path / 'syncd.db'}")
    assert not (tmp_path / "syncd.db").exists()


# the tables that grow with every night's history: a lookup of one contact must not read them
HISTORY = ("quarantine", "responses", "answers", "nps", "unsubscribes", "deliveries", "runs")


def test_show_reads_one_contacts_history_through_indexes(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`syncd show` answers a support question about one contact: it must cost that
    contact's rows, not a scan of the quarantine every reconcile adds to (90 days of a bad
    export's rows) or of every survey response. Each statement it runs — by key, and by
    email (which first looks for a key only ever quarantined) — is explained on the store
    its migrations built (no ANALYZE, as on an operator's store): no SCAN of a table that
    grows with history, nor of a whole index of one."""
    cfg = load(config)
    statements = trace_statements(monkeypatch)
    story = show.collect(cfg, UNSUBSCRIBED)
    assert story["quarantine"] and story["responses"] and story["unsubscribes"]
    email = show.collect(cfg, "CRM-0000002")["contact"]["email"]
    assert show.collect(cfg, email)["key"] == "CRM-0000002"
    reads = [s for s in statements if re.match(r"\s*(SELECT|WITH)\b", s, re.I)]
    read = " ".join(reads)
    assert all(f"FROM {table}" in read for table in ("quarantine", "responses", "answers"))
    conn = sqlite3.connect(f"file:{cfg.store.path}?mode=ro", uri=True)
    try:
        found = {" ".join(sql.split())[:160]: scans(conn, sql, HISTORY, ()) for sql in reads}
    finally:
        conn.close()
    assert {sql: plan for sql, plan in found.items() if plan} == {}
