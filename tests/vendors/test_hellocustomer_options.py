"""Hello Customer options refused at load (`check_options`), and the streams a pull reads."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import ConfigError, EndpointError
from syncd.pull import pull
from syncd.sandbox.base import Server
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.state import Store
from syncd.vendors.hellocustomer import HelloCustomer
from tests.kits.hellocustomer import CAMPAIGN, KIT, MAPPING, contact


def write(folder: Path, table: str) -> Path:
    (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    path = folder / "syncd.toml"
    path.write_text(
        '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "syncd.db"\n'
        f'[vendors.hellocustomer]\nmapping = "mapping.toml"\ntoken = "sandbox-token"\n'
        f'campaign = "{CAMPAIGN}"\n{table}',
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'base_url = "http://api.hellocustomer.com"\n',
            "[vendors.hellocustomer] base_url: http://api.hellocustomer.com is plain http: "
            "Hello Customer takes HTTPS (TLS 1.2) calls only (use https://",
        ),
        ('base_url = "http://10.0.0.5:8080"\n', "base_url: http://10.0.0.5:8080 is plain http"),
        (
            'base_url = "https://api.hellocustomer.com"\nunsubscribes_path = "/V1.0/EN/{nope}"\n',
            "[vendors.hellocustomer] unsubscribes_path: '/V1.0/EN/{nope}' has the placeholder "
            "{nope}, which syncd cannot fill in (e.g. ",
        ),
        (
            'base_url = "https://api.hellocustomer.com"\nunsubscribes_path = "/x/{start/{end}"\n',
            "unsubscribes_path: '/x/{start/{end}' is not a path template",
        ),
        (
            'base_url = "https://api.hellocustomer.com"\nunsubscribes_path = "/x/{}/{end}"\n',
            "unsubscribes_path: '/x/{}/{end}' has the placeholder {}",
        ),
        (
            'base_url = "https://api.hellocustomer.com"\nunsubscribes_path = "/x/{start!r}"\n',
            "has the placeholder {start!r}",
        ),
        (
            'base_url = "https://api.hellocustomer.com"\nwindow_days = 32\n',
            "[vendors.hellocustomer] window_days: 32 is not an hour (0.0417) to 31 days "
            "(Hello Customer refuses",
        ),
        ('base_url = "https://api.hellocustomer.com"\nwindow_days = 0\n', "window_days: 0 is"),
        (
            'base_url = "https://api.hellocustomer.com"\nwindow_days = 0.04\n',
            "window_days: 0.04 is not an hour",
        ),
        (
            'base_url = "https://api.hellocustomer.com"\nunsubscribes_path = "x/{start}"\n',
            "unsubscribes_path: 'x/{start}' must be a path starting with /",
        ),
    ],
)
def test_refused_at_load_naming_file_table_and_key(
    tmp_path: Path, table: str, expected: str
) -> None:
    path = write(tmp_path, table)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_plain_http_is_accepted_only_on_loopback(tmp_path: Path) -> None:
    for url in (
        "http://127.0.0.1:8080",
        "http://127.9.9.9",
        "http://[::1]:8080",
        "http://localhost",
    ):
        assert (
            load(write(tmp_path, f'base_url = "{url}"\n')).vendors["hellocustomer"].base_url == url
        )
    for url in ("http://128.0.0.1", "http://[::2]", "http://localhost.example.com"):
        with pytest.raises(ConfigError, match=r"base_url: .* is plain http"):
            load(write(tmp_path, f'base_url = "{url}"\n'))


def test_unsubscribes_path_takes_only_campaign_start_and_end(tmp_path: Path) -> None:
    table = 'base_url = "https://api.hellocustomer.com"\nunsubscribes_path = "{}"\n'
    custom = "/V1.0/EN/campaign/{campaign}/unsubscribed?from={start}&to={end}"
    cfg = load(write(tmp_path, table.format(custom)))
    assert cfg.vendors["hellocustomer"].options["unsubscribes_path"] == custom
    with pytest.raises(ConfigError, match=r"has the placeholder \{campaignId\}"):
        load(write(tmp_path, table.format(custom.replace("{campaign}", "{campaignId}"))))


def test_streams_without_unsubscribes_never_call_the_unsubscribes_path(tmp_path: Path) -> None:
    clock = FakeClock()
    sim = HelloCustomerSim(clock=clock.monotonic, now=clock.now)
    now = clock.now()
    sim.add_responses(5, now - timedelta(days=3), now - timedelta(days=1))
    sim.unsubscribe("gone@example.com", now - timedelta(days=2))
    unsubscribed = f"/V1.0/EN/campaign/{CAMPAIGN}/respondent/unsubscribed/"
    first = (now - timedelta(days=7)).date()
    counts: dict[str, tuple[dict[str, int], int]] = {}
    with Server(sim) as server:
        for streams in ('["responses", "nps"]', '["unsubscribes"]'):
            folder = tmp_path / str(len(counts))
            folder.mkdir()
            table = f'base_url = "{server.url}"\nstreams = {streams}\nfirst_date = "{first}"\n'
            cfg = load(write(folder, table))
            store = Store.open(cfg.store.path)
            try:
                report = pull(cfg, store, clock)
            finally:
                store.close()
            assert report.exit_code == 0
            counts[streams] = (
                report.counts()["hellocustomer"],
                sim.count(unsubscribed),
            )
    read, calls = counts['["responses", "nps"]']
    assert (read["responses"], "unsubscribes" in read, calls) == (5, False, 0)
    # the path works when asked, in windows of 7 days (the default window_days)
    assert counts['["unsubscribes"]'] == ({"unsubscribes": 1}, 2)


def test_a_404_on_the_unsubscribes_call_names_unsubscribes_path(tmp_path: Path) -> None:
    """The one call whose path is configured: its 404 hinted at "the vendor's path options"
    (none named); a 404 elsewhere names campaign, never unsubscribes_path."""
    clock = FakeClock()
    sim = HelloCustomerSim(clock=clock.monotonic, now=clock.now)
    with Server(sim) as server:
        table = f'base_url = "{server.url}"\nunsubscribes_path = "/V1.0/EN/gone/{{start}}"\n'
        hc = HelloCustomer(load(write(tmp_path, table)).vendors["hellocustomer"], clock=clock)
        with pytest.raises(EndpointError) as caught:
            list(hc.pull("unsubscribes", None, clock.now()))
        assert caught.value.status == 404
        assert "check unsubscribes_path" in str(caught.value)
        sim.faults.add("status", status=404, path=KIT.push_path)
        with pytest.raises(EndpointError) as pushed:
            hc.push([contact(1)], lambda job, refused=(): None)
    assert "campaign in [vendors.hellocustomer]" in str(pushed.value)
    assert "unsubscribes_path" not in str(pushed.value)


def test_a_check_on_the_unsubscribes_call_names_unsubscribes_path_too(tmp_path: Path) -> None:
    """With `streams = ["unsubscribes"]` `check` reads that call: its 404 names the path."""
    clock = FakeClock()
    sim = HelloCustomerSim(clock=clock.monotonic, now=clock.now)
    with Server(sim) as server:
        table = (
            f'base_url = "{server.url}"\nstreams = ["unsubscribes"]\n'
            'unsubscribes_path = "/V1.0/EN/gone/{start}"\n'
        )
        hc = HelloCustomer(load(write(tmp_path, table)).vendors["hellocustomer"], clock=clock)
        with pytest.raises(EndpointError) as caught:
            hc.check()
    assert caught.value.status == 404
    assert "check unsubscribes_path" in str(caught.value)


@pytest.mark.parametrize(
    ("streams", "calls", "read"),
    [
        ("[]", {"add_many"}, None),
        ('["nps"]', {"add_many", "nps"}, "/analysis/nps/getnpsscore/"),
        ('["unsubscribes"]', {"add_many", "unsubscribed"}, "/respondent/unsubscribed/"),
    ],
    ids=["push-only", "nps", "unsubscribes"],
)
def test_check_reads_with_a_call_the_configured_streams_use(
    tmp_path: Path, streams: str, calls: set[str], read: str | None
) -> None:
    """hellocustomer.md, "5. Validation messages", 401: "API token does not contain the
    right API call permissions". `check` read `getall` whatever the streams, so a token
    made for the push and the configured streams failed `syncd check --online`."""
    clock = FakeClock()
    sim = HelloCustomerSim(clock=clock.monotonic, now=clock.now, calls=calls)
    with Server(sim) as server:
        cfg = load(write(tmp_path, f'base_url = "{server.url}"\nstreams = {streams}\n'))
        proven = HelloCustomer(cfg.vendors["hellocustomer"], clock=clock).check()
    base = f"/V1.0/EN/campaign/{CAMPAIGN}"
    assert sim.count(f"{base}/answers/getall/") == 0
    if read is None:
        assert proven is None  # no read-only call proves the push: the first push tells
        assert sim.count("/V1.0/") == 0
    else:
        assert proven is not None and proven.startswith("token accepted")
        assert sim.count(base + read) == 1
