"""/metrics: scraped over HTTP after real syncs against simulators, checked against the store."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from syncd.config import load
from syncd.errors import ConfigError
from syncd.http import requests_sent
from syncd.metrics import MetricsServer, StoreCollector
from syncd.pipeline import opened
from syncd.pull import pull
from syncd.sample import rows
from syncd.sandbox.base import Server
from syncd.sandbox.esputnik import ESputnikSim
from syncd.sandbox.signalvine import SignalVineSim
from syncd.state import OPEN_STATUSES
from tests.helpers import World, esputnik_table
from tests.kits.signalvine import KIT as SIGNALVINE
from tests.test_daemon import SYNCD, Notify, daemon_world, logged, start, wait

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(url: str) -> Samples:
    """Every sample of a scrape: name → sorted label pairs → value."""
    resp = requests.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture
def sims() -> Iterator[tuple[ESputnikSim, Server, SignalVineSim, Server]]:
    esputnik, signalvine = ESputnikSim(), SignalVineSim()
    with Server(esputnik) as es_server, Server(signalvine) as sv_server:
        yield esputnik, es_server, signalvine, sv_server


def test_a_scrape_after_a_sync_and_a_pull_tells_what_the_store_holds(
    tmp_path: Path, sims: tuple[ESputnikSim, Server, SignalVineSim, Server]
) -> None:
    esputnik, es_server, signalvine, sv_server = sims
    sv_table = SIGNALVINE.vendor_toml(sv_server.url, False).replace(
        'mapping = "mapping.toml"\n', ""
    )
    world = World(
        tmp_path,
        {
            "esputnik": esputnik_table(es_server.url),
            "signalvine": (sv_table, SIGNALVINE.mapping_toml),
        },
    )
    data = list(rows(40))
    data[3][3] = "not an email"  # quarantined
    world.write(data)
    esputnik.faults.reject(data[5][3].strip().lower(), "blocked address")
    esputnik.faults.add("status", status=503, path="/api/v1/contacts")  # one retried request
    before = requests_sent()
    world.sync()
    signalvine.opt_out(data[7][0])
    esputnik.unsubscribe(data[8][3].strip().lower())
    cfg = world.cfg
    with opened(cfg) as store:
        pull(cfg, store, world.clock)

    now = time.time()
    server = MetricsServer(
        ("127.0.0.1", free_port()), StoreCollector(cfg.store.path, lambda: cfg.vendors, lambda: now)
    )
    try:
        port = server.httpd.server_address[1]
        got = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.close()

    conn = sqlite3.connect(cfg.store.path)
    runs = conn.execute("SELECT kind, status, count(*) FROM runs GROUP BY 1, 2").fetchall()
    assert (
        got["syncd_runs"]
        == {(("kind", k), ("status", s)): n for k, s, n in runs}
        == {
            (("kind", "pull"), ("status", "ok")): 1,
            (("kind", "reconcile"), ("status", "partial")): 1,
        }
    )

    backlog = {
        (v, s): n for v, s, n in conn.execute("SELECT vendor, status, n FROM delivery_backlog")
    }
    assert backlog[("esputnik", "failed")] == 1
    assert got["syncd_deliveries"] == {
        (("status", s), ("vendor", v)): backlog.get((v, s), 0)
        for v in ("esputnik", "signalvine")
        for s in OPEN_STATUSES
    }

    rows_read, quarantined = conn.execute(
        "SELECT rows_read, quarantined FROM runs WHERE kind = 'reconcile'"
    ).fetchone()
    assert quarantined >= 1
    assert got["syncd_export_contacts"] == {(): rows_read - quarantined}
    assert got["syncd_export_quarantined_rows"] == {(): quarantined}

    # the reconcile was partial (a contact refused): only the pull succeeded
    (pulled,) = conn.execute("SELECT finished_at FROM runs WHERE kind = 'pull'").fetchone()
    assert got["syncd_last_success_timestamp_seconds"] == {(("kind", "pull"),): epoch(pulled)}

    cursors = dict(conn.execute("SELECT vendor || '/' || stream, cursor FROM cursors"))
    conn.close()
    assert "|" in cursors["esputnik/unsubscribes"]  # date|offset: not a time, no lag
    lag = got["syncd_pull_cursor_lag_seconds"]
    assert lag == {
        (("stream", "unsubscribes"), ("vendor", "signalvine")): pytest.approx(
            now - epoch(cursors["signalvine/unsubscribes"])
        )
    }

    counted = {k: n - before.get(k, 0) for k, n in requests_sent().items() if n != before.get(k)}
    requests_total = {
        tuple(dict(labels).values()): n for labels, n in got["syncd_vendor_requests_total"].items()
    }
    assert counted[("esputnik", "retry")] == 1
    assert counted[("esputnik", "answer")] == esputnik.count()
    assert counted[("signalvine", "answer")] == signalvine.count()
    for key, n in counted.items():
        assert requests_total[(key[1], key[0])] == before.get(key, 0) + n


def test_a_store_that_cannot_be_read_leaves_the_rest_of_the_scrape(tmp_path: Path) -> None:
    server = MetricsServer(("127.0.0.1", free_port()), StoreCollector(tmp_path / "missing.db"))
    try:
        resp = requests.get(
            f"http://127.0.0.1:{server.httpd.server_address[1]}/metrics", timeout=10
        )
    finally:
        server.close()
    assert resp.status_code == 200
    assert "# TYPE syncd_vendor_requests_total counter" in resp.text
    assert "syncd_runs" not in resp.text


def test_the_daemon_serves_metrics_and_stops_serving_at_sigterm(
    tmp_path: Path, sims: tuple[ESputnikSim, Server, SignalVineSim, Server]
) -> None:
    esputnik, es_server, _signalvine, _sv = sims
    world = daemon_world(tmp_path, es_server.url, "every 2s", "0 4 * * *")
    port = free_port()
    config = world.folder / "syncd.toml"
    config.write_text(config.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    notify = Notify(tmp_path / "notify.sock")
    proc = start(world, notify)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert notify.wait_for("READY=1", 20), logged(world)
        success = "syncd_last_success_timestamp_seconds"
        assert wait(lambda: scrape(url).get(success), 20), logged(world)
        got = scrape(url)
        conn = sqlite3.connect(world.folder / "syncd.db")
        finished = [
            epoch(t)
            for (t,) in conn.execute(
                "SELECT finished_at FROM runs WHERE kind = 'reconcile' AND status = 'ok'"
            )
        ]
        conn.close()
        # another reconcile may have finished between the scrape and the query
        assert got[success][(("kind", "reconcile"),)] in finished
        # the daemon's own requests, counted in its process
        assert (
            got["syncd_vendor_requests_total"][(("outcome", "answer"), ("vendor", "esputnik"))] >= 1
        )
        assert esputnik.count() >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_the_daemon_says_so_when_the_metrics_port_is_taken(
    tmp_path: Path, sims: tuple[ESputnikSim, Server, SignalVineSim, Server]
) -> None:
    _es, es_server, _sv, _sv_server = sims
    world = daemon_world(tmp_path, es_server.url, "0 3 * * *", "0 4 * * *")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = world.folder / "syncd.toml"
        config.write_text(config.read_text() + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        done = subprocess.run(
            [*SYNCD, "--config", str(config), "run"], capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}: Address already in use" in done.stderr


@pytest.mark.parametrize(
    ("table", "error"),
    [
        ('listen = "localhost:9464"', "'localhost:9464' is not IP:port"),
        ('listen = "127.0.0.1"', "'127.0.0.1' is not IP:port"),
        ('listen = "127.0.0.1:0"', "'127.0.0.1:0' is not IP:port"),
        ('listen = "127.0.0.1:65536"', "is not IP:port"),
        ('listen = "::1:9464"', "is not IP:port"),
        ("listen = 9464", "must be str, not int 9464"),
        ('listen = "10.1.2.3:9464"', "10.1.2.3 is not a loopback address"),
        ('listen = "0.0.0.0:9464"', "0.0.0.0 is not a loopback address"),
        ('listen = "127.0.0.1:9464"\nport = 1', "[metrics] port: unknown key"),
    ],
)
def test_the_config_refuses_a_bad_listen_value(tmp_path: Path, table: str, error: str) -> None:
    World(tmp_path, {"esputnik": esputnik_table("http://127.0.0.1:1")})
    config = tmp_path / "syncd.toml"
    config.write_text(config.read_text() + f"[metrics]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert error in str(caught.value)
    assert "[metrics]" in str(caught.value)


@pytest.mark.parametrize(
    ("table", "listen"),
    [
        ("", None),
        ('listen = "127.0.0.1:9464"', ("127.0.0.1", 9464)),
        ('listen = "127.9.9.9:9464"', ("127.9.9.9", 9464)),
        ('listen = "[::1]:9464"', ("::1", 9464)),
        ('listen = "0.0.0.0:9464"\nallow_remote = true', ("0.0.0.0", 9464)),
    ],
)
def test_the_config_takes_a_loopback_address_or_an_allowed_remote_one(
    tmp_path: Path, table: str, listen: tuple[str, int] | None
) -> None:
    World(tmp_path, {"esputnik": esputnik_table("http://127.0.0.1:1")})
    config = tmp_path / "syncd.toml"
    config.write_text(config.read_text() + f"[metrics]\n{table}\n")
    assert load(config).metrics.listen == listen
