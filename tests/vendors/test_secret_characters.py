"""Every vendor's secrets, pasted with a character that is no part of them, are refused at
load (`syncd check` as much as `syncd sync`), naming the table, the key, the character and
where it is, never the secret; nothing reaches the vendor.

A key, token or secret a vendor issues is printable ASCII. One holding anything else was
pasted with it: in an HTTP header (eSputnik's Basic password, Hello Customer's
`Authorization: basic`, SignalVine's `Authorization: SignalVine <token>:...`) a character
outside latin-1 was a bare UnicodeEncodeError at every call, a line break an "Invalid
header value", a no-break space or a control character a 401; in a body or a signature
(Altcraft's token, SignalVine's secret) a 401 or 403 at night. A password a person chose
(Dropthought's) may hold any character that shows, an accent or a dash, but not one that
does not (a zero-width space, a control character)."""

from __future__ import annotations

import os
import re
import sqlite3
import unicodedata
from pathlib import Path

import pytest

from syncd.config import load
from syncd.demo import SANDBOX_TABLES, demo_rows, write_config
from syncd.errors import ConfigError
from syncd.sample import write_export
from syncd.sandbox import SIMULATORS, Stack
from syncd.vendors import REGISTRY
from tests.helpers import run_syncd

# the secrets a person chose rather than the vendor issued
PASSWORDS = {("dropthought", "password")}
# every registered vendor's every secret option: a vendor without a sandbox table or a
# simulator fails here (KeyError), it is never skipped
SECRETS = [
    (name, key, (name, key) not in PASSWORDS)
    for name, connector in REGISTRY.items()
    for key, opt in connector.options.items()
    if opt.secret
]
IDS = [f"{name}.{key}" for name, key, _issued in SECRETS]
NEVER = {  # no secret holds these: they do not show
    "zero-width-space": "\u200b",
    "no-break-space": "\u00a0",
    "bell": "\x07",
    "line-break": "\n",
    "bidi-override": "\u202e",
}
SHOWN = {"en-dash": "\u2013", "e-acute": "\u00e9"}  # they show: only no issued secret has them


def folder_for(tmp: Path, vendor: str, key: str, url: str = "http://127.0.0.1:9") -> Path:
    """A demo config for `vendor` alone, its secret `key` read from $SYNCD_TEST_SECRET."""
    table, n = re.subn(
        rf'^{key} = "[^"]*"$',
        f'{key} = "env:SYNCD_TEST_SECRET"',
        SANDBOX_TABLES[vendor],
        flags=re.M,
    )
    assert n == 1, (vendor, key)
    write_config(tmp, {vendor: url}, {vendor: table})
    (tmp / "exports").mkdir()
    write_export(tmp / "exports" / "contacts-1.csv", demo_rows(5))
    return tmp / "syncd.toml"


def sandbox_value(vendor: str, key: str) -> str:
    found = re.search(rf'^{key} = "([^"]*)"$', SANDBOX_TABLES[vendor], flags=re.M)
    assert found, (vendor, key)
    return found.group(1)


def assert_refusal(text: str, vendor: str, key: str, char: str, secret: str) -> None:
    assert f"[vendors.{vendor}] {key}:" in text, text
    assert f"U+{ord(char):04X}" in text and "at character 5" in text, text
    name = unicodedata.name(char, "")
    assert name in text, text
    assert "retype" in text, text
    assert secret not in text and sandbox_value(vendor, key)[4:] not in text, text


@pytest.mark.parametrize("char", [*NEVER.values(), *SHOWN.values()], ids=[*NEVER, *SHOWN])
@pytest.mark.parametrize(("vendor", "key", "issued"), SECRETS, ids=IDS)
def test_a_secret_pasted_with_what_it_never_holds_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor: str, key: str, issued: bool, char: str
) -> None:
    value = sandbox_value(vendor, key)
    secret = value[:4] + char + value[4:]
    monkeypatch.setenv("SYNCD_TEST_SECRET", secret)
    config = folder_for(tmp_path, vendor, key)
    if char in SHOWN.values() and not issued:  # a password may hold an accent or a dash
        assert load(config).vendors[vendor].options[key] == secret
        return
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert_refusal(str(caught.value), vendor, key, char, secret)
    assert os.environ["SYNCD_TEST_SECRET"] == secret


@pytest.mark.parametrize(("vendor", "key", "issued"), SECRETS, ids=IDS)
def test_check_and_sync_refuse_a_pasted_secret_and_send_nothing(
    tmp_path: Path, vendor: str, key: str, issued: bool
) -> None:
    """What an operator sees: `syncd check` said "ok" and `syncd sync` stopped at the
    first call (a bare UnicodeEncodeError, and Hello Customer's surveys left "unknown",
    so never sent again without `syncd retry`), or was a 401 or 403 naming the secret only
    as one that may be wrong."""
    value = sandbox_value(vendor, key)
    secret = value[:4] + "\u200b" + value[4:]
    with Stack() as stack:
        sim = SIMULATORS[vendor]()
        config = folder_for(tmp_path, vendor, key, stack.add(sim).url)
        for command in (["check"], ["check", "--online"], ["sync"]):
            proc = run_syncd(tmp_path, "--config", str(config), *command, SYNCD_TEST_SECRET=secret)
            assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert_refusal(proc.stderr, vendor, key, "\u200b", secret)
        assert sim.requests() == []
    db = tmp_path / "syncd.db"
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)
