"""Benchmark the nightly diff: run by hand, never by the test suite.

    python bench/bench_diff.py                 # 1,000,000 rows (a few minutes)
    python bench/bench_diff.py --rows 200000   # smaller
    python bench/bench_diff.py --csv-diff      # also compare with csv-diff at 200,000 rows

It writes a messy 15-column export of N contacts and a copy with 1% changed, 1% new and
0.5% removed rows, records the first export in a store as if every vendor had acknowledged
it, and then measures, each in a fresh process so peak RSS is the diff's own:

- the second sync's diff: reading, hashing, comparing and recording the deltas (everything
  but HTTP), committed to the store;
- a bare `csv.reader` pass over the same file, in the same process, once before the diff
  and once after (the ratio uses their mean, so a drift in the machine's speed during the
  run does not land on one side);
- with --csv-diff: `csv-diff`'s load-and-compare of the two files, keyed on Record ID.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

MAPPING = """
[fields]
email = "Email"
sms = "Phone"
firstName = "First Name"
lastName = "Last Name"
externalCustomerId = "Record ID"
[metadata]
"101" = "Segment"
"""


def peak_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux a child inherits its
    parent's ru_maxrss across fork and exec, so the data generator's footprint would be
    reported as the diff's."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_data(folder: Path, n: int) -> tuple[Path, Path]:
    from syncd.sample import row, write_export

    first, second = folder / f"first-{n}.csv", folder / f"second-{n}.csv"
    if first.exists() and second.exists():
        return first, second
    rng = random.Random(42)
    data = [row(i, rng) for i in range(n)]
    write_export(first, data)
    pick = random.Random(7)
    removed = set(pick.sample(range(n), n // 200))
    changed = set(pick.sample(sorted(set(range(n)) - removed), n // 100))
    out = []
    for i, r in enumerate(data):
        if i in removed:
            continue
        if i in changed:
            r = list(r)
            r[8] = r[8] + " Plus"  # Segment: mapped
        r = list(r)
        r[13] = "2026-11-30 09:00"  # Last Activity Date: volatile, unmapped
        out.append(r)
    out += [row(n + i, rng) for i in range(n // 100)]
    write_export(second, out)
    return first, second


def write_config(folder: Path, export: Path) -> Path:
    (folder / "esputnik.toml").write_text(MAPPING, encoding="utf-8")
    cfg = folder / "syncd.toml"
    cfg.write_text(
        f'[source]\npath = "{export}"\nkey = "Record ID"\nsettle_seconds = 0\n'
        f'phone_region = "BE"\nignore_columns = ["Last Activity Date"]\n'
        f'[store]\npath = "{folder / "bench.db"}"\n'
        f'[vendors.esputnik]\nbase_url = "http://127.0.0.1:9"\napi_key = "bench"\n'
        f'mapping = "esputnik.toml"\n',
        encoding="utf-8",
    )
    return cfg


def diff_once(folder: Path, export: Path, *, acknowledge: bool) -> dict[str, float]:
    """One diff of `export` against the store, committed; optionally acknowledge it all."""
    from syncd.config import load
    from syncd.diff import Differ
    from syncd.runs import open_connectors
    from syncd.source import Export
    from syncd.state import Store

    cfg = load(write_config(folder, export))
    store = Store.open(cfg.store.path)
    now = datetime.now(UTC)
    started = time.perf_counter()
    with (
        open_connectors(cfg, __import__("syncd.clock").clock.SYSTEM) as connectors,
        Export(export, cfg.source) as exp,
        store.write(),
    ):
        run_id = store.insert_run("reconcile", now, str(export))
        plan = Differ(cfg, store, connectors, run_id, now).run(exp)
    seconds = time.perf_counter() - started
    if acknowledge:  # as if the vendor acknowledged everything
        with store.write() as c:
            c.execute(
                "INSERT OR REPLACE INTO vendor_state (vendor, key, hash, acked_at) "
                "SELECT vendor, key, hash, ? FROM deliveries WHERE status = 'pending'",
                (now.isoformat(),),
            )
            c.execute("UPDATE deliveries SET status = 'sent' WHERE status = 'pending'")
    store.close()
    counts = plan.vendors["esputnik"].counts
    return {
        "seconds": seconds,
        "rows": plan.rows_read,
        "new": counts["new"],
        "changed": counts["changed"],
        "gone": plan.gone,
        "quarantined": plan.quarantined,
    }


def bare_csv(export: Path) -> float:
    started = time.perf_counter()
    with export.open(encoding="utf-8-sig", newline="") as fh:
        for _row in csv.reader(fh, delimiter=";"):
            pass
    return time.perf_counter() - started


def phase(args: argparse.Namespace) -> None:
    folder, export = Path(args.folder), Path(args.export)
    if args.phase == "first":
        result = diff_once(folder, export, acknowledge=True)
    elif args.phase == "second":
        # the bare pass before and after the diff, averaged: this VM's speed drifts by a
        # quarter within a minute, and one pass on one side would carry the drift whole
        before = bare_csv(export)
        result = diff_once(folder, export, acknowledge=False)
        after = bare_csv(export)
        result["bare_csv_seconds"] = (before + after) / 2
        result["bare_csv_spread"] = [round(before, 2), round(after, 2)]
    else:  # csv-diff
        from csv_diff import compare, load_csv

        csv.register_dialect("crm", delimiter=";")  # the exports are semicolon-separated
        started = time.perf_counter()
        with (
            Path(args.first).open(encoding="utf-8-sig", newline="") as a,
            export.open(encoding="utf-8-sig", newline="") as b,
        ):
            diff = compare(
                load_csv(a, key="Record ID", dialect="crm"),
                load_csv(b, key="Record ID", dialect="crm"),
            )
        result = {"seconds": time.perf_counter() - started, "changed": len(diff["changed"])}
    result["peak_rss_mb"] = peak_mb()
    print(json.dumps(result))


def run_phase(name: str, folder: Path, export: Path, first: Path | None = None) -> dict[str, float]:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        name,
        "--folder",
        str(folder),
        "--export",
        str(export),
    ]
    if first:
        cmd += ["--first", str(first)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def bench(n: int, folder: Path, with_csv_diff: bool) -> dict[str, object]:
    work = folder / f"n{n}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "bench.db").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (work / f"bench.db{suffix}").unlink(missing_ok=True)
    first, second = make_data(work, n)
    setup = run_phase("first", work, first)
    result = run_phase("second", work, second)
    report: dict[str, object] = {
        "rows": n,
        "first_sync_seconds": round(setup["seconds"], 2),
        "second_diff_seconds": round(result["seconds"], 2),
        "bare_csv_seconds": round(result["bare_csv_seconds"], 2),
        "bare_csv_before_after": result["bare_csv_spread"],
        "ratio": round(result["seconds"] / result["bare_csv_seconds"], 2),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "deltas": {k: result[k] for k in ("new", "changed", "gone", "quarantined")},
    }
    if with_csv_diff:
        ref = run_phase("csv-diff", work, second, first)
        report["csv_diff_seconds"] = round(ref["seconds"], 2)
        report["csv_diff_peak_rss_mb"] = round(ref["peak_rss_mb"], 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--csv-diff", action="store_true", help="also run csv-diff at 200,000 rows")
    parser.add_argument("--data", default=str(HERE / "data"), help="where exports and stores go")
    parser.add_argument("--phase", choices=["first", "second", "csv-diff"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--export", help=argparse.SUPPRESS)
    parser.add_argument("--first", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return
    folder = Path(args.data)
    print(json.dumps(bench(args.rows, folder, False), indent=2))
    if args.csv_diff:
        print(json.dumps(bench(200_000, folder, True), indent=2))


if __name__ == "__main__":
    main()
