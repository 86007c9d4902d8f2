"""Benchmark the delivery loop: run by hand, never by the test suite.

    python bench/bench_deliver.py                       # 1,000,000 pending deliveries
    python bench/bench_deliver.py --deliveries 200000   # smaller
    python bench/bench_deliver.py --batch 1000          # the fake vendor's max_batch

It fills a store with N pending deliveries to one upsert vendor, as the first sync's diff
leaves them (one per contact, nothing acknowledged yet), and runs `Deliverer` over them in
a fresh process against an in-process connector that acknowledges every contact: no HTTP,
so what is measured is the loop and its ledger writes. The connector calls the HTTP
client's write hook as a real request would, so every batch is marked in flight, then
settled. Prints the elapsed seconds of the delivery (and its CPU seconds, steadier on a busy
machine), the process's peak RSS (VmHWM), and its RSS before the delivery began (the
interpreter and the modules syncd imports, pandas hidden from sqlite-utils as the command
hides it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def status_mb(field: str) -> float:
    """A /proc/self/status memory line (VmHWM: peak RSS, VmRSS: now) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} in /proc/self/status (Linux only)")


def fill(path: Path, n: int) -> None:
    """A store with `n` pending deliveries to the fake vendor, one per contact."""
    from syncd.state import Store

    store = Store.open(path)
    run = store.start_run("reconcile", NOW)
    ts = NOW.isoformat(timespec="seconds")

    def rows() -> Iterator[tuple[int, str, str, str, str, str]]:
        for i in range(n):
            key = f"K{i:07d}"
            payload = {
                "fields": {
                    "email": f"contact{i}@example.com",
                    "sms": f"+3161{i:07d}",
                    "firstName": f"First{i}",
                    "lastName": f"Last{i}",
                    "externalCustomerId": key,
                },
                "metadata": {"101": f"Segment {i % 7}"},
            }
            yield (run, key, f"{i:016x}", json.dumps(payload), ts, ts)

    with store.write() as c:
        c.executemany(
            "INSERT INTO deliveries (run_id, vendor, key, kind, status, hash, payload, "
            "created_at, updated_at) VALUES (?, 'fake', ?, 'new', 'pending', ?, ?, ?, ?)",
            rows(),
        )
    store.close()


def measure(path: Path, batch: int) -> None:
    """Deliver every pending delivery in `path`; print one JSON line of figures."""
    # as `syncd` itself does (cli._store_libraries): sqlite-utils imports pandas when it is
    # installed (the test extra brings it) for nothing syncd stores, ~30 MB of RSS
    sys.modules["pandas"] = None  # type: ignore[assignment]  # the import system's "absent"
    from syncd.push import Deliverer
    from syncd.settings import DeliveryConfig, MappingConfig, VendorConfig
    from syncd.state import Store
    from syncd.vendors.base import Connector, Contact, OnJob, Result, Status

    class Fake(Connector):
        name = "fake"
        title = "Fake"
        kind = "upsert"
        max_batch = batch

        def push(self, contacts: Sequence[Contact], on_job: OnJob) -> list[Result]:
            if self.http.on_write is not None:
                self.http.on_write()  # the request's first byte would go now
            return [Result(c.key, Status.SENT, ref=f"ref-{c.key}") for c in contacts]

    config = VendorConfig(
        name="fake",
        base_url="http://127.0.0.1:9",
        mapping=MappingConfig(path=path, fields={"email": "Email"}),
        options={},
        delivery=DeliveryConfig(),
    )
    connector = Fake(config)
    store = Store.open(path)
    before = status_mb("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    out = Deliverer(store, connector, lambda: NOW, max_attempts=5).run()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    sent = store.scalar("SELECT count(*) FROM vendor_state WHERE vendor = 'fake'")
    store.close()
    figures = {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu, 1),
        "peak_mb": round(status_mb("VmHWM"), 1),
        "before_mb": round(before, 1),
        "counts": dict(out.counts),
        "acknowledged": sent,
        "stopped": out.stopped,
    }
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=3000, help="the fake vendor's max_batch")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.batch)
        return
    n = args.deliveries
    with tempfile.TemporaryDirectory(prefix="bench-deliver-") as tmp:
        template, work = Path(tmp) / "filled.db", Path(tmp) / "store.db"
        print(f"filling a store with {n:,} pending deliveries...", flush=True)
        fill(template, n)
        shutil.copy(template, work)
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(work), "--batch", str(args.batch)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    print(
        f"delivered {n:,} pending deliveries in batches of {args.batch:,}: "
        f"{figures['seconds']} s ({figures['cpu_seconds']} s of CPU), peak RSS (VmHWM) {figures['peak_mb']} MB "
        f"({figures['before_mb']} MB before the delivery began)"
    )
    print(f"counts {figures['counts']}, acknowledged {figures['acknowledged']:,}")
    if figures["stopped"] or figures["acknowledged"] != n:
        raise SystemExit(f"not every delivery was acknowledged: {figures}")


if __name__ == "__main__":
    main()
