"""Prometheus metrics for `syncd run`: `/metrics` on the `[metrics] listen` address.

What comes from the store is read at each scrape, on a read-only connection of its own,
in one short read transaction (one snapshot): the open deliveries from the
`delivery_backlog` view (its partial index), the runs, the latest reconcile and pull, the
cursors. The vendor requests are counted in this process by `syncd.http`. Each server has
its own registry, never prometheus_client's global one.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd.errors import SyncdError
from syncd.http import requests_sent
from syncd.state import OPEN_STATUSES, parse_iso

log = structlog.get_logger("syncd.metrics")

READ_TIMEOUT = 5.0  # seconds a scrape waits for a lock (WAL readers hardly ever wait)


class StoreCollector(Collector):
    """The store's gauges and this process's vendor requests, computed at each scrape.

    `vendors` names the configured vendors, so each has its open-delivery series even at 0
    (an alert on `> 0` needs a series to compare), and only they have one: a vendor removed
    from the config leaves open deliveries that nothing sends and no operator need act on
    (`syncd status` shows them apart), which an alert would count for ever. `now` is the
    wall clock, in seconds."""

    def __init__(
        self,
        path: Path,
        vendors: Callable[[], Iterable[str]] = tuple,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.vendors = vendors
        self.now = now

    def collect(self) -> Iterator[Metric]:
        try:
            yield from self._store()
        except sqlite3.Error as exc:  # this scrape goes without them; the next tries again
            log.warning("metrics: cannot read the store", store=str(self.path), error=str(exc))
        requests = CounterMetricFamily(
            "syncd_vendor_requests",
            "HTTP requests to vendors since syncd started, by outcome: answer (2xx), "
            "retry, unknown, auth, endpoint, refused (README: the outcome table)",
            labels=["vendor", "outcome"],
        )
        for (vendor, outcome), n in sorted(requests_sent().items()):
            requests.add_metric([vendor, outcome], n)
        yield requests

    def _store(self) -> list[Metric]:
        conn = sqlite3.connect(
            f"{self.path.absolute().as_uri()}?mode=ro",
            uri=True,
            timeout=READ_TIMEOUT,
            isolation_level=None,
        )
        try:
            conn.execute("BEGIN")  # one snapshot for every number below
            metrics = self._read(conn)
            conn.execute("COMMIT")
            return metrics
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection) -> list[Metric]:
        runs = GaugeMetricFamily(
            "syncd_runs",
            "Runs recorded in the store, by kind and status",
            labels=["kind", "status"],
        )
        for kind, status, n in conn.execute(
            "SELECT kind, status, count(*) FROM runs GROUP BY kind, status ORDER BY 1, 2"
        ):
            runs.add_metric([kind, status], n)

        open_ = {(v, s): 0 for v in self.vendors() for s in OPEN_STATUSES}
        for vendor, status, n in conn.execute("SELECT vendor, status, n FROM delivery_backlog"):
            if (vendor, status) in open_:
                open_[(vendor, status)] = n
        deliveries = GaugeMetricFamily(
            "syncd_deliveries",
            "Open deliveries by configured vendor and status (pending, in_flight, failed, "
            "unknown, dead)",
            labels=["vendor", "status"],
        )
        for (vendor, status), n in sorted(open_.items()):
            deliveries.add_metric([vendor, status], n)

        out: list[Metric] = [runs, deliveries]
        applied = conn.execute(
            "SELECT rows_read, quarantined FROM runs WHERE kind = 'reconcile' "
            "AND status IN ('ok', 'partial') ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if applied:
            rows_read, quarantined = applied[0] or 0, applied[1] or 0
            out.append(
                GaugeMetricFamily(
                    "syncd_export_contacts",
                    "Rows of the last export a reconcile applied, less its quarantined rows",
                    value=rows_read - quarantined,
                )
            )
            out.append(
                GaugeMetricFamily(
                    "syncd_export_quarantined_rows",
                    "Rows of the last export a reconcile applied that were quarantined",
                    value=quarantined,
                )
            )

        success = GaugeMetricFamily(
            "syncd_last_success_timestamp_seconds",
            "When the latest run of this kind with status ok finished (absent: none yet)",
            labels=["kind"],
        )
        for kind in ("reconcile", "pull"):
            finished = conn.execute(
                "SELECT finished_at FROM runs WHERE kind = ? AND status = 'ok' "
                "ORDER BY id DESC LIMIT 1",
                (kind,),
            ).fetchone()
            when = _epoch(finished[0]) if finished else None
            if when is not None:
                success.add_metric([kind], when)
        out.append(success)

        lag = GaugeMetricFamily(
            "syncd_pull_cursor_lag_seconds",
            "Seconds from each pull stream's cursor to now, where the cursor is a time",
            labels=["vendor", "stream"],
        )
        now = self.now()
        for vendor, stream, cursor in conn.execute(
            "SELECT vendor, stream, cursor FROM cursors ORDER BY vendor, stream"
        ):
            at = _epoch(cursor)
            if at is not None:
                lag.add_metric([vendor, stream], now - at)
        out.append(lag)
        return out


def _epoch(text: object) -> float | None:
    """A store's time (or a cursor that is one) as seconds since the epoch, else None."""
    when = parse_iso(text)
    return None if when is None else when.timestamp()


class MetricsServer:
    """`/metrics` served on its own thread until `close()`."""

    def __init__(self, listen: tuple[str, int], collector: Collector) -> None:
        host, port = listen
        self.registry = CollectorRegistry()
        self.registry.register(collector)
        try:
            self.httpd: WSGIServer = start_http_server(port, host, self.registry)[0]
        except OSError as exc:
            raise SyncdError(
                f"cannot serve metrics on {_show(listen)}: {exc.strerror or exc}",
                hint="another process holds that port (`ss -ltnp`), or the address is not "
                "this host's: change [metrics] listen",
            ) from None
        log.info("serving metrics", url=f"http://{_show(listen)}/metrics")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _show(listen: tuple[str, int]) -> str:
    host, port = listen
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
