"""Config and mapping files: every mistake names file, table and key."""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path

import pytest

from syncd.config import load
from syncd.errors import ConfigError
from tests.helpers import ESPUTNIK_MAPPING

BASE = """
[source]
path = "exports/*.csv"
key = "Record ID"
[store]
path = "data/syncd.db"
[vendors.esputnik]
base_url = "http://127.0.0.1:1"
api_key = "{key}"
mapping = "esputnik.toml"
"""


# a Dropthought table with its packaged mapping
DROPTHOUGHT = BASE.format(key="k").replace(
    '[vendors.esputnik]\nbase_url = "http://127.0.0.1:1"\napi_key = "k"\nmapping = "esputnik.toml"',
    '[vendors.dropthought]\nbase_url = "http://127.0.0.1:1"\nemail = "ops@example.com"\n'
    f'password = "pw"\nparticipant_group = "g"\nmapping = "{files("syncd.mappings")}/dropthought.toml"',
)


def write(tmp_path: Path, text: str, mapping: str = ESPUTNIK_MAPPING) -> Path:
    (tmp_path / "esputnik.toml").write_text(mapping, encoding="utf-8")
    path = tmp_path / "syncd.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, BASE.format(key="literal-secret")))
    assert cfg.store.path == (tmp_path / "data/syncd.db").resolve()
    assert cfg.source.path == str((tmp_path / "exports/*.csv").resolve())
    assert cfg.vendors["esputnik"].mapping.fields["email"] == "Email"
    assert cfg.secrets == ("literal-secret",)


def test_streams_default_to_every_stream_the_vendor_offers_and_may_be_switched_off(
    tmp_path: Path,
) -> None:
    assert load(write(tmp_path, BASE.format(key="k"))).vendors["esputnik"].streams == (
        "unsubscribes",
    )
    cfg = load(write(tmp_path, BASE.format(key="k") + "streams = []\n"))
    assert cfg.vendors["esputnik"].streams == ()


def test_secrets_from_env_file_and_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESP_KEY", "from-env")
    assert load(write(tmp_path, BASE.format(key="env:ESP_KEY"))).secrets == ("from-env",)
    (tmp_path / "key.txt").write_text("from-file\n", encoding="utf-8")
    assert load(write(tmp_path, BASE.format(key="file:key.txt"))).secrets == ("from-file",)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "esputnik").write_text("from-systemd", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load(write(tmp_path, BASE.format(key="credential:esputnik"))).secrets == (
        "from-systemd",
    )


def test_a_secrets_surrounding_whitespace_is_dropped_wherever_it_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file's was (its line break), an environment variable's and a literal's were sent
    as they came: an `EnvironmentFile=` line `KEY=abc ` or a pasted key with a space made
    every call a 401 that `check` could only call wrong credentials."""
    monkeypatch.setenv("ESP_KEY", "  from-env \t")
    assert load(write(tmp_path, BASE.format(key="env:ESP_KEY"))).secrets == ("from-env",)
    assert load(write(tmp_path, BASE.format(key=" pasted "))).secrets == ("pasted",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE.format(key="env:NOPE_NOT_SET"),
            "[vendors.esputnik] api_key: environment variable NOPE_NOT_SET is not set",
        ),
        (BASE.format(key="k").replace('key = "Record ID"', ""), "[source] key: is required"),
        (
            BASE.format(key="k") + '\n[schedule]\nreconcile = "61 * * * *"\n',
            "[schedule] reconcile: not a crontab line",
        ),
        (
            BASE.format(key="k") + "batch_size = 5000\n",
            "[vendors.esputnik] batch_size: must be between 1 and 3000",
        ),
        (
            BASE.format(key="k") + 'dedupe_on = "phone"\n',
            "[vendors.esputnik] dedupe_on: 'phone' is not one of",
        ),
        (BASE.format(key="k") + 'colour = "red"\n', "[vendors.esputnik] colour: unknown key"),
        (
            BASE.format(key="k").replace("esputnik]", "mailchimp]"),
            "[vendors.mailchimp] unknown vendor 'mailchimp'",
        ),
        (
            BASE.format(key="k").replace('"http://127.0.0.1:1"', '"127.0.0.1"'),
            "base_url: must start with http",
        ),
        # base_url is scheme://host[:port]: a path doubled the connector's (404 every night),
        # a port out of range was a traceback, a password in it was logged
        *(
            (
                BASE.format(key="k").replace('"http://127.0.0.1:1"', f'"{url}"'),
                f"[vendors.esputnik] base_url: {message}",
            )
            for url, message in (
                (
                    "https://esputnik.com/api/v1",
                    "'https://esputnik.com/api/v1' has more than scheme://host[:port]: '/api/v1' "
                    "(write scheme://host[:port] only; the connector adds the vendor's documented "
                    "paths)",
                ),
                ("https://esputnik.com?x=1", "'https://esputnik.com?x=1' has more than scheme://"),
                ("https://esputnik.com#top", "'https://esputnik.com#top' has more than scheme://"),
                ("https://esputnik.com:99999", "'https://esputnik.com:99999' has no valid port"),
                (
                    "https://esputnik.com:0",
                    "'https://esputnik.com:0' has no valid port (1 to 65535)",
                ),
                ("https://esputnik.com:https", "'https://esputnik.com:https' has no valid port"),
                ("https://:443", "'https://:443' names no valid host"),
                ("https://esputnik .com", "'https://esputnik .com' names no valid host"),
                (
                    "https://ops:hunter2@esputnik.com",
                    "https://…@esputnik.com holds a user name or password (write "
                    "scheme://host[:port]; credentials go in this table's secret keys)",
                ),
            )
        ),
        # opened as a store, each was "damaged", with the advice to move a copy into its place
        (
            BASE.format(key="k").replace("data/syncd.db", "syncd.toml"),
            "syncd.toml is the config file: the store needs a file of its own",
        ),
        (
            BASE.format(key="k").replace("data/syncd.db", "esputnik.toml"),
            "esputnik.toml is esputnik's mapping file: the store needs a file of its own",
        ),
        (
            BASE.format(key="k").replace("data/syncd.db", "exports/syncd.csv"),
            "exports/syncd.csv is a match of the export ([source] path ",
        ),
        ("[source\n", "not valid TOML"),
        (
            BASE.format(key="k").replace("[source]", "[sources]"),
            "[source] table is missing (the file has [sources]: did you mean [source]?)",
        ),
        (
            BASE.format(key="k").replace(
                'key = "Record ID"', 'key = "Record ID"\nignore_columns = ["Record ID"]'
            ),
            "[source] ignore_columns: names the key column 'Record ID'",
        ),
        (BASE.format(key="k").replace("max_drop", "") + "\n[source.x]\n", "[source]"),
        (
            BASE.format(key="k") + 'dedupe_on = "fieldId"\n',
            "[vendors.esputnik] field_id: is required when dedupe_on = 'fieldId'",
        ),
        (
            BASE.format(key="k") + "field_id = 101\n",
            "[vendors.esputnik] field_id: is used only with dedupe_on = 'fieldId'",
        ),
        (
            BASE.format(key="k") + 'dedupe_on = "id"\n',
            "[vendors.esputnik] dedupe_on: 'id' is not one of",
        ),
        (
            BASE.format(key="k") + 'event_key_new = "new contact"\n',
            "[vendors.esputnik] event_key_new: 'new contact' is not 1 to 100 latin letters",
        ),
        (
            BASE.format(key="k") + f'event_key_new = "{"k" * 101}"\n',
            "[vendors.esputnik] event_key_new: 'kkk",
        ),
        # the spec's groupNames is any array of strings: "" or "  " went into every request
        *(
            (BASE.format(key="k") + f"{key} = {value}\n", f"[vendors.esputnik] {key}: {message}")
            for key, value, message in (
                ("groups", '[""]', "'' is no segment name (name the segment, or leave it out)"),
                ("groups_exclude", '["  "]', "'  ' is no segment name"),
                ("groups", '[" VIP"]', "' VIP' has spaces around it (write 'VIP': segments"),
                ("groups", '["VIP", "VIP"]', "'VIP' is listed twice (list each segment once)"),
                ("groups", "[7]", "7 is not a segment name"),
            )
        ),
        (
            BASE.format(key="k") + 'groups = ["VIP"]\ngroups_exclude = ["New", "VIP"]\n',
            "[vendors.esputnik] groups_exclude: 'VIP' is in groups too: each contact would be "
            "added to the segment and taken out of it in the same request",
        ),
        (
            BASE.format(key="k") + 'streams = ["nps"]\n',
            "[vendors.esputnik] streams: esputnik offers no 'nps' stream (it offers: unsubscribes)",
        ),
        (
            DROPTHOUGHT + 'date_timezone = "Europe/Bruxelles"\n',
            "[vendors.dropthought] date_timezone: unknown time zone 'Europe/Bruxelles' (did you "
            """mean 'Europe/Brussels'? an IANA name such as "UTC" or "Europe/Brussels")""",
        ),
        (
            BASE.format(key="k") + '\n[schedule]\ntimezone = "europe/amsterdam"\n',
            "[schedule] timezone: unknown time zone 'europe/amsterdam' (did you mean "
            "'Europe/Amsterdam'?",
        ),
        # every key naming a zone says the same: a directory of zones, or a name too long
        # for a file, is no zone either (their OSError went out of the load as it was)
        (
            DROPTHOUGHT + 'date_timezone = "Europe"\n',
            "[vendors.dropthought] date_timezone: unknown time zone 'Europe' (",
        ),
        (
            BASE.format(key="k") + 'activity_timezone = "Europe/Kiev "\n',
            "[vendors.esputnik] activity_timezone: unknown time zone 'Europe/Kiev ' (did you "
            """mean 'Europe/Kiev'? an IANA name such as "UTC" or "Europe/Kyiv")""",
        ),
        (
            BASE.format(key="k") + '\n[schedule]\ntimezone = "Brussels"\n',
            "[schedule] timezone: unknown time zone 'Brussels' (did you mean 'Europe/Brussels'? "
            'an IANA name such as "UTC" or "Europe/Brussels")',
        ),
        (
            BASE.format(key="k") + f'\n[schedule]\ntimezone = "{"Europe/" + "x" * 300}"\n',
            "[schedule] timezone: unknown time zone 'Europe/xxx",
        ),
        (
            DROPTHOUGHT + 'date_order = "YMD"\n',
            "[vendors.dropthought] date_order: 'YMD' is not one of 'DMY', 'MDY'",
        ),
        # numbers out of their range hang, spin or divide by zero at night
        (
            BASE.format(key="k") + "\n[delivery]\nread_timeout = 0\n",
            "[delivery] read_timeout: must be between 0.01 and 3600 (seconds), not 0.0",
        ),
        (
            BASE.format(key="k") + "\n[delivery]\nretry_after_cap = 1e12\n",
            "[delivery] retry_after_cap: must be between 0 and 3600 (seconds)",
        ),
        (
            BASE.format(key="k") + "\n[delivery]\nretries = 1000000000\n",
            "[delivery] retries: must be between 0 and 20",
        ),
        (
            BASE.format(key="k") + "\n[delivery]\nbackoff_base = 1e10\n",
            "[delivery] backoff_base: must be between 0 and 600 (seconds)",
        ),
        (
            BASE.format(key="k") + "read_timeout = inf\n",
            "[vendors.esputnik] read_timeout: must be between 0.01 and 3600 (seconds), not inf",
        ),
        (
            BASE.format(key="k") + "poll_every = -1\n",
            "[vendors.esputnik] poll_every: must be between 0 and 86400, not -1.0",
        ),
        (
            BASE.format(key="k") + "open_sessions = 0\n",
            "[vendors.esputnik] open_sessions: must be between 1 and 16, not 0",
        ),
        (
            BASE.format(key="k") + "\n[schedule]\nmisfire_grace_seconds = -1\n",
            "[schedule] misfire_grace_seconds: must be between 1 and 604800 (seconds), not -1",
        ),
        # a job that shows no progress this long is stalled and the service restarted: 0 would
        # restart it at every job, nan or inf never
        (
            BASE.format(key="k") + "\n[schedule]\nstall_seconds = 0\n",
            "[schedule] stall_seconds: must be between 1 and 86400 (seconds a job may show no "
            "progress), not 0.0",
        ),
        (
            BASE.format(key="k") + "\n[schedule]\nstall_seconds = nan\n",
            "[schedule] stall_seconds: must be between 1 and 86400",
        ),
        (
            BASE.format(key="k") + "\n[schedule]\nstall_seconds = 1e9\n",
            "[schedule] stall_seconds: must be between 1 and 86400",
        ),
        (
            BASE.format(key="k") + '\n[schedule]\nstall_seconds = "10m"\n',
            "[schedule] stall_seconds: must be float, not str '10m'",
        ),
        (
            BASE.format(key="k").replace("[store]", "max_drop = nan\n[store]"),
            "[source] max_drop: must be between 0 and 1 (a fraction: 0.10 = 10%), not nan",
        ),
        (
            BASE.format(key="k").replace("[store]", "settle_seconds = inf\n[store]"),
            "[source] settle_seconds: must be between 0 and 86400 (seconds), not inf",
        ),
        (
            BASE.format(key="k").replace("[store]", 'encoding = "rot13"\n[store]'),
            "[source] encoding: 'rot13' is not a text encoding",
        ),
        ("a = " + "[" * 5000 + "]" * 5000 + "\n", "not valid TOML: nested too deeply"),
        # codecs.lookup's ValueError was a traceback
        (
            BASE.format(key="k").replace("[store]", 'encoding = "utf\\u0000"\n[store]'),
            "[source] encoding: unknown encoding 'utf\\x00'",
        ),
        # TOML's integers are 64-bit; tomllib reads any: one too large for a float key was
        # an OverflowError traceback, one past 4300 digits "use sys.set_int_max_str_digits()"
        (
            BASE.format(key="k") + "read_timeout = 1" + "0" * 400 + "\n",
            "[vendors.esputnik] read_timeout: a 401-digit integer is outside TOML's 64-bit range",
        ),
        (
            BASE.format(key="k") + "retries = 1" + "0" * 5000 + "\n",
            "not valid TOML: an integer of more than 4300 digits (TOML's are 64-bit)",
        ),
        # a NUL in a secret file's name was a ValueError traceback (and in env: or
        # credential:, a NUL went out to the terminal in the message)
        *(
            (
                BASE.format(key=f"{scheme}:a\\u0000b"),
                f"[vendors.esputnik] api_key: '{scheme}:a\\x00b' contains a NUL byte, which no "
                f"{what} can hold",
            )
            for scheme, what in (("file", "path"), ("env", "variable name"), ("credential", "path"))
        ),
        # urlsplit's ValueError was a traceback; a host requests cannot put in a URL (a
        # bidi control pasted with it) passed `check`, then failed every request at night
        (
            BASE.format(key="k").replace('"http://127.0.0.1:1"', '"http://[::1"'),
            "[vendors.esputnik] base_url: 'http://[::1' is not a valid URL (",
        ),
        (
            BASE.format(key="k").replace('"http://127.0.0.1:1"', '"https://esput\\u202enik.com"'),
            "[vendors.esputnik] base_url: 'https://esput\\u202enik.com' is not a valid URL (",
        ),
        # a table given twice, once through dotted keys: tomllib's words, and what to do
        *(
            (
                text,
                f"not valid TOML: {said} (a table is defined once: put its keys under its one "
                "[table] header, without repeating the table's name in dotted keys elsewhere)",
            )
            for text, said in (
                (
                    'vendors.esputnik.api_key = "k"\n' + BASE.format(key="k"),
                    "Cannot declare ('vendors', 'esputnik') twice (at line 8, column 18)",
                ),
                (
                    BASE.format(key="k") + "\n[vendors]\nesputnik.batch_size = 10\n",
                    "Cannot redefine namespace ('vendors', 'esputnik') (at line 13, column 25)",
                ),
            )
        ),
        # the wrong TOML type says what to write instead
        (
            BASE.format(key="k").replace("[store]", 'settle_seconds = "30"\n[store]'),
            "[source] settle_seconds: must be float, not str '30' (write settle_seconds = 30, a "
            "number without quotes)",
        ),
        (
            BASE.format(key="k") + "max_attempts = 5.0\n",
            "[vendors.esputnik] max_attempts: must be int, not float 5.0 (write max_attempts = "
            "5, a whole number without a decimal point)",
        ),
        (
            BASE.format(key="k") + "\n[delivery]\nretries = nan\n",
            "[delivery] retries: must be int, not float nan (write a whole number)",
        ),
        (
            BASE.format(key="k") + '\n[schedule]\nwatch_export = "true"\n',
            "[schedule] watch_export: must be bool, not str 'true' (write watch_export = true, "
            "without quotes)",
        ),
        (
            BASE.format(key="k") + "first_date = 2026-01-01\n",
            "[vendors.esputnik] first_date: must be str, not date datetime.date(2026, 1, 1) "
            '(write it in quotes: first_date = "2026-01-01")',
        ),
        (
            BASE.format(key="k") + 'streams = "unsubscribes"\n',
            "[vendors.esputnik] streams: must be list, not str 'unsubscribes' (write a list: "
            'streams = ["unsubscribes"])',
        ),
        (
            BASE.format(key="k") + "batch_size = -5\n",
            "[vendors.esputnik] batch_size: must be between 1 and 3000",
        ),
        (
            BASE.format(key="k") + "batch_size = 1" + "0" * 30 + "\n",
            "[vendors.esputnik] batch_size: a 31-digit integer is outside TOML's 64-bit range",
        ),
        (
            BASE.format(key="k") + "poll_every = nan\n",
            "[vendors.esputnik] poll_every: must be between 0 and 86400, not nan",
        ),
        (
            BASE.format(key="k") + "\n[delivery]\nbackoff_cap = -inf\n",
            "[delivery] backoff_cap: must be between 0 and 3600 (seconds), not -inf",
        ),
        (
            BASE.format(key="k").replace('"http://127.0.0.1:1"', '""'),
            "[vendors.esputnik] base_url: must start with http:// or https://",
        ),
        # what requests makes of it: a backslash became a path (`/%5Capi/...`, a 404 every
        # night), a `;` stayed in the host name (no such host)
        (
            BASE.format(key="k").replace('"http://127.0.0.1:1"', '"https://esputnik.com\\\\api"'),
            "[vendors.esputnik] base_url: 'https://esputnik.com\\\\api' has more than "
            "scheme://host[:port]: it is sent as 'https://esputnik.com/%5Capi/'",
        ),
        (
            BASE.format(key="k").replace('"http://127.0.0.1:1"', '"https://esputnik.com;v1"'),
            "[vendors.esputnik] base_url: 'https://esputnik.com;v1' names no valid host "
            "('esputnik.com;v1') (retype the host name",
        ),
    ],
)
def test_mistakes_name_file_table_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: ") or str(err.value).startswith(str(path))
    assert expected in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        ('[fields]\nemial = "Email"\n', "[fields] emial: esputnik has no field 'emial'"),
        ("[fields]\nemail = 3\n", "[fields] email: must be str"),
        (
            '[fields]\nemail = "Email"\n[trigger]\non_new = true\n',
            "esputnik is not a trigger vendor",
        ),
        ("", "[fields] table is missing"),
        (
            '[feilds]\nemail = "Email"\n',
            "[fields] table is missing (the file has [feilds]: did you mean [fields]?)",
        ),
        ('[fields]\nemial = "Email"\n', "(did you mean 'email'? known fields: "),
        (
            '[fields]\nemail = "Email"\n[types]\nemail = "DATE"\n',
            "[types] email: 'DATE' is not one of 'date', 'datetime', 'text'",
        ),
    ],
)
def test_mapping_mistakes_name_the_mapping_file(
    tmp_path: Path, mapping: str, expected: str
) -> None:
    path = write(tmp_path, BASE.format(key="k"), mapping)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(tmp_path / "esputnik.toml") in str(err.value)
    assert expected in str(err.value)


@pytest.mark.parametrize("value", ["123456789", '["s3cr3t-in-a-list"]', '{ v = "s3cr3t" }', "true"])
def test_a_secret_of_the_wrong_type_is_refused_without_showing_it(
    tmp_path: Path, value: str
) -> None:
    """`api_key = 123456789` (the quotes forgotten) was refused as `must be str, not int
    123456789`: the key, on the terminal and in the journal."""
    path = write(tmp_path, BASE.format(key="k").replace('api_key = "k"', f"api_key = {value}"))
    with pytest.raises(ConfigError) as err:
        load(path)
    text = str(err.value)
    assert "[vendors.esputnik] api_key: must be str, not " in text, text
    assert "123456789" not in text and "s3cr3t" not in text and "True" not in text, text


@pytest.mark.parametrize("target", ["mapdir", "."])
def test_a_mapping_that_is_a_directory_names_the_key_that_names_it(
    tmp_path: Path, target: str
) -> None:
    """It said only `cannot be read: Is a directory`, naming neither the key nor what to do."""
    (tmp_path / "mapdir").mkdir()
    path = write(tmp_path, BASE.format(key="k").replace('"esputnik.toml"', f'"{target}"'))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == (
        f"{(tmp_path / target).resolve()}: cannot be read: is a directory, not a regular file "
        f"(check [vendors.esputnik] mapping in {path} (relative to its folder))"
    )


def test_types_for_a_vendor_without_typed_values_are_refused(tmp_path: Path) -> None:
    (tmp_path / "hc.toml").write_text(
        '[fields]\nemail = "Email"\n[types]\nemail = "DATE"\n', encoding="utf-8"
    )
    text = BASE.format(key="k").replace(
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:1"\napi_key = "k"\nmapping = "esputnik.toml"',
        '[vendors.hellocustomer]\nbase_url = "http://127.0.0.1:1"\ntoken = "t"\n'
        'campaign = "c"\nmapping = "hc.toml"',
    )
    with pytest.raises(ConfigError, match=re.escape("[types] hellocustomer has no typed values")):
        load(write(tmp_path, text))


def test_a_missing_mapping_file_names_the_key_that_names_it(tmp_path: Path) -> None:
    """It said "file not found (pass --config or set $SYNCD_CONFIG)": the config was found,
    and it is its `mapping` key the operator must fix."""
    path = write(tmp_path, BASE.format(key="k").replace("esputnik.toml", "mappings/esputnik.toml"))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == (
        f"{tmp_path}/mappings/esputnik.toml: file not found (check [vendors.esputnik] mapping "
        f"in {path} (relative to its folder))"
    )


def test_a_store_path_under_a_file_or_on_a_directory_is_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a folder", encoding="utf-8")
    path = write(tmp_path, BASE.format(key="k"))
    with pytest.raises(ConfigError, match=r"\[store\] path: .*/data is not a directory, so"):
        load(path)
    (tmp_path / "data").unlink()
    (tmp_path / "data" / "syncd.db").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"\[store\] path: .*/data/syncd.db is a directory"):
        load(path)


def hostile_files(tmp_path: Path, size: int) -> dict[str, Path]:
    """A device that never ends, a FIFO with no writer, and a regular file of `size` bytes."""
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "big").write_bytes(b"x" * size)
    return {"a device": Path("/dev/zero"), "a FIFO": tmp_path / "fifo", "larger": tmp_path / "big"}


@pytest.mark.parametrize("kind", ["a device", "a FIFO", "larger"])
def test_a_secret_file_must_be_a_small_regular_file(tmp_path: Path, kind: str) -> None:
    target = hostile_files(tmp_path, 65 * 1024)[kind]
    path = write(tmp_path, BASE.format(key=f"file:{target}"))
    with pytest.raises(ConfigError) as err:
        load(path)  # at once: never blocked on the FIFO, never reading /dev/zero
    assert f"[vendors.esputnik] api_key: secret file {target} is " in str(err.value)
    assert ("larger than 64 KiB" if kind == "larger" else f"{kind}, not a regular file") in str(
        err.value
    )


@pytest.mark.parametrize("which", ["config", "mapping"])
@pytest.mark.parametrize("kind", ["a device", "a FIFO", "larger"])
def test_a_config_or_mapping_must_be_a_small_regular_file(
    tmp_path: Path, which: str, kind: str
) -> None:
    target = hostile_files(tmp_path, 2 * 1024 * 1024)[kind]
    if which == "config":
        path = target
    else:
        path = write(tmp_path, BASE.format(key="k").replace('"esputnik.toml"', f'"{target}"'))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{target}: cannot be read: is ")
    assert ("larger than 1024 KiB" if kind == "larger" else f"{kind}, not a regular file") in str(
        err.value
    )


# DESIGN.md's config reference and its Hello Customer mapping, verbatim: every build must
# accept them (the other mappings are the packaged examples)
DESIGN_CONFIG = """\
[source]
path = "exports/contacts-*.csv"   # a file or a glob: the newest settled match
key = "Record ID"                  # the CRM's unique id column
# encoding = "utf-8"  delimiter = ","  max_drop = 0.10  settle_seconds = 30

[store]
path = "syncd.db"

[schedule]
timezone = "Europe/Brussels"
reconcile = "0 2 * * *"            # crontab
pull = "*/30 * * * *"              # crontab
# watch_export = true

[suppression]
unsubscribed = true                # never trigger anyone who unsubscribed anywhere
min_days_between_surveys = 30

[vendors.esputnik]
base_url = "https://esputnik.com"  # scheme://host[:port] only, for every vendor:
api_key = "env:ESPUTNIK_API_KEY"   #   the connector adds the documented paths
dedupe_on = "email"
groups = ["Customers"]
mapping = "mappings/esputnik.toml"

[vendors.signalvine]
base_url = "https://theseus-api.signalvine.com"
token = "env:SIGNALVINE_TOKEN"
secret = "env:SIGNALVINE_SECRET"
program = "ed1b9efb-0ccf-4ea0-9585-0d7e57f28869"
mode = "row"                       # or "tx"
mapping = "mappings/signalvine.toml"

[vendors.hellocustomer]
base_url = "https://api.hellocustomer.com"
token = "env:HELLOCUSTOMER_TOKEN"
campaign = "c8dc5f94-a9e8-4743-8744-e66a73a7e724"
default_language = "EN"            # name, ISO code or GUID
batch_size = 100
mapping = "mappings/hellocustomer.toml"

[vendors.dropthought]
base_url = "https://api.dropthought.com"
email = "ops@example.com"
password = "credential:dropthought-password"
participant_group = "6f1c2a8e-1111-4a5b-9c0d-aaaaaaaaaaaa"
mapping = "mappings/dropthought.toml"

[vendors.altcraft]
base_url = "https://ru.altkraft.com"
token = "env:ALTCRAFT_TOKEN"
trigger_id = 7
matching = "email"                 # email | phone | profile_id | custom
mapping = "mappings/altcraft.toml"
"""
DESIGN_HC_MAPPING = """\
[fields]              # the vendor's own field name = the CRM column
email = "Email"
firstName = "First Name"
lastName = "Last Name"
language = "Language"
[metadata]            # extra named values (keyValues, Dropthought headers, custom fields)
"Store" = "Store"
[trigger]             # trigger vendors only
on_new = true
on_change = ["Closed Date"]
"""


def test_the_design_config_reference_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.resources import files

    (tmp_path / "syncd.toml").write_text(DESIGN_CONFIG, encoding="utf-8")
    (tmp_path / "mappings").mkdir()
    for vendor in ("esputnik", "signalvine", "dropthought", "altcraft"):
        text = files("syncd.mappings").joinpath(f"{vendor}.toml").read_text("utf-8")
        (tmp_path / "mappings" / f"{vendor}.toml").write_text(text, encoding="utf-8")
    (tmp_path / "mappings" / "hellocustomer.toml").write_text(DESIGN_HC_MAPPING, encoding="utf-8")
    (tmp_path / "dropthought-password").write_text("pw\n", encoding="utf-8")
    for name in (
        "ESPUTNIK_API_KEY",
        "SIGNALVINE_TOKEN",
        "SIGNALVINE_SECRET",
        "HELLOCUSTOMER_TOKEN",
        "ALTCRAFT_TOKEN",
    ):
        monkeypatch.setenv(name, f"value-of-{name}")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = load(tmp_path / "syncd.toml")
    assert list(cfg.vendors) == [
        "esputnik",
        "signalvine",
        "hellocustomer",
        "dropthought",
        "altcraft",
    ]
    assert cfg.vendors["dropthought"].options["password"] == "pw"
    assert cfg.vendors["hellocustomer"].batch_size == 100
    assert cfg.vendors["hellocustomer"].mapping.trigger is not None


def test_a_bad_schedule_is_refused_by_the_commands_that_schedule(tmp_path: Path) -> None:
    """`sync`, `retry`, `pull`... never import APScheduler to check `[schedule]`; `run`
    (and its reloads), `check` and `status` refuse a bad crontab line as ever."""
    import subprocess
    import sys

    path = write(tmp_path, BASE.format(key="k") + '\n[schedule]\nreconcile = "61 * * * *"\n')
    assert load(path, check_schedule=False).schedule.reconcile == "61 * * * *"
    for command in ("check", "status", "run"):
        done = subprocess.run(
            [sys.executable, "-m", "syncd", "--config", str(path), command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, (command, done.stderr)
        assert "[schedule] reconcile: not a crontab line" in done.stderr


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_config_is_named_as_such(tmp_path: Path, encoding: str) -> None:
    """Windows PowerShell 5's `>` and Out-File write UTF-16 with a byte-order mark: the
    message said "byte 0xff on line 1 (... a Latin-1 or cp1252 accent is the usual cause)",
    sending the operator to look for an accent in a file that has none."""
    path = tmp_path / "syncd.toml"
    path.write_bytes(
        ("\ufeff" if encoding == "utf-16-be" else "").encode(encoding)
        + BASE.format(key="k").encode(encoding)
    )
    with pytest.raises(ConfigError) as err:
        load(path)
    name = "UTF-32" if encoding == "utf-32" else "UTF-16"
    assert str(err.value) == (
        f"{path}: is {name} (it starts with a {name} byte-order mark), not UTF-8 (save the "
        "file as UTF-8; in PowerShell: Out-File -Encoding utf8, or Set-Content -Encoding utf8)"
    )


def test_signalvines_active_is_refused_in_a_mapping(tmp_path: Path) -> None:
    """SignalVine records a participant's STOP in `active`; the article's own `existing`
    example updates it. Mapped from a CRM column holding `true`, every upload re-activated
    the participants who had texted STOP (only the packaged mapping's comment warned)."""
    (tmp_path / "sv.toml").write_text(
        '[fields]\ncustomer_id = "Record ID"\nphone = "Phone"\nactive = "Active"\n',
        encoding="utf-8",
    )
    text = BASE.format(key="k").replace(
        '[vendors.esputnik]\nbase_url = "http://127.0.0.1:1"\napi_key = "k"\nmapping = "esputnik.toml"',
        '[vendors.signalvine]\nbase_url = "http://127.0.0.1:1"\ntoken = "t"\n'
        'secret = "s"\nprogram = "p"\nmapping = "sv.toml"',
    )
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    assert str(tmp_path / "sv.toml") in str(err.value)
    assert "[fields] active: signalvine may not be sent 'active': it is how SignalVine " in str(
        err.value
    )
    assert err.value.hint == "remove active from [fields]"
