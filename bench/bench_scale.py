"""Benchmark syncd at scale, end to end: run by hand, never by the test suite.

    python bench/bench_scale.py --rows 200000 --rounds 3
    python bench/bench_scale.py --rows 100000,1000000 --rounds 2 --only first,second
    python bench/bench_scale.py --rows 3000000 --rounds 1 --only second --fast-setup
    python bench/bench_scale.py --rows 200000 --ref HEAD --compare HEAD~5 --json out.json

Every measured run is a real `python -m syncd sync` child process against the vendor
simulators, which are served over loopback HTTP by another child process (so neither the
simulators' memory nor their start-up is the figure). The exports are bench_diff's
(`make_data`: 15 messy columns; the second has 1% changed, 1% new, 0.5% gone rows), cached
under --data by size. A bare `csv.reader` pass over the same file is timed in this process
just before and just after each measured run; the ratio uses their mean.

A round, for each size N (each in a fresh folder and store, the simulators reset):

    first     `syncd sync` of first-N.csv, every contact new, to eSputnik (poll_every 0.01):
              the child's peak RSS (VmHWM, read by an atexit hook in the child), its time
              from `main()` to exit, and the -wal file's size, sampled every 20 ms by this
              process while the child runs and once after it exits (the "wal" row)
    second    `syncd sync` of second-N.csv (poll_every 0.1): the child's peak RSS, and the
              whole process's wall clock from spawn to exit (the "whole" row: interpreter
              start and imports included, the tree byte-compiled first as pip leaves it); with several sizes, the peak RSS's growth per
              extra contact between consecutive sizes
    header    second-N.csv again with an unmapped column renamed in the header (every row's
              fingerprint changes, so every row is re-examined): time, and what was sent
              (should be nothing)
    mapping   the same export with `"address.town" = "City"` added to the eSputnik mapping:
              time, and what was sent (every contact with a city differs, so all of them)
    store     a separate first sync with all five vendors configured as the demo does
              (their packaged mappings, the sandbox accounts): the trigger vendors
              baselined first as the README says a first run with one should be
              (`sync --baseline --vendor dropthought --vendor hellocustomer --vendor
              altcraft`), then `sync` sends to eSputnik and SignalVine (--store-send sends
              to all five instead: Dropthought takes one contact a request and Hello
              Customer one request a second, so only for small N); then each table's and
              index's size from SQLite's dbstat, per contact and against the export's size

With --fast-setup, the store the second sync starts from is made as bench_diff makes it
(its diff, recorded as acknowledged, no HTTP) instead of by a first sync: for 3M rows.

The simulators' share: their process's CPU time and the wall time spent in their request
handlers (and in eSputnik's OpenAPI validation of each request body) are read from the
simulator process after each run; the report says what fraction of the sync's time that is.

--ref R runs syncd from a `git worktree` of commit R in /tmp (stable code while others edit
the working tree); --compare R2 runs every measure against R2 too, alternating, for side by
side figures. The simulators are always this tree's.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_diff import MAPPING, bare_csv, make_data  # noqa: E402

ALL = ("first", "second", "whole", "header", "mapping", "store", "wal")
TRIGGER = ("dropthought", "hellocustomer", "altcraft")
FIVE = ("dropthought", "hellocustomer", "altcraft", "esputnik", "signalvine")
RENAMED = ("Notes", "Remarks")  # an unmapped column, renamed for the "header" measure
MB = 1024 * 1024

# the child: `syncd sync` with an atexit hook that writes its own VmHWM and times
CHILD = r"""
import atexit, json, sys, time
t0 = time.perf_counter()
out, argv = sys.argv[1], sys.argv[2:]
marks = {}
def _report():
    status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    end = time.perf_counter()
    with open(out, "w") as fh:
        json.dump({
            "hwm_kb": int(status["VmHWM"].split()[0]),
            "seconds": end - marks.get("main", t0),
            "import_seconds": marks.get("main", t0) - t0,
            "syncd": __import__("syncd").__file__,
        }, fh)
atexit.register(_report)
sys.argv = ["syncd", *argv]
from syncd.cli import main
marks["main"] = time.perf_counter()
main()
"""

# ---------------------------------------------------------------- the simulator process


def serve(names: list[str], ready: Path) -> None:
    """Serve the named simulators, each wrapped in a timer; write their URLs to `ready`.

    The wrapper adds `GET /_bench/timing` and `POST /_bench/reset` beside the simulator's
    own `/_sandbox/` controls; the simulator itself is the package's, unchanged (the
    eSputnik module's `BULK_UPDATE`, its validator of each import's body, is timed by
    rebinding the module's name to a timed call of the same function).
    """
    import threading

    from werkzeug.serving import make_server

    import syncd.sandbox.esputnik as esp
    from syncd.sandbox import SIMULATORS

    lock = threading.Lock()
    validate = {"seconds": 0.0, "calls": 0}
    original = esp.BULK_UPDATE

    def timed_validator(body: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(body)
        finally:
            with lock:
                validate["seconds"] += time.perf_counter() - started
                validate["calls"] += 1

    esp.BULK_UPDATE = timed_validator

    servers = {}
    for name in names:
        sim = SIMULATORS[name]()
        counters = {"wall": 0.0, "cpu": 0.0, "requests": 0}

        def app(environ: Any, start_response: Any, sim: Any = sim, c: Any = counters) -> Any:
            path = environ.get("PATH_INFO", "")
            if path.startswith("/_bench/"):
                if path == "/_bench/reset":
                    with lock:
                        c.update(wall=0.0, cpu=0.0, requests=0)
                        if sim.name == "esputnik":
                            validate.update(seconds=0.0, calls=0)
                    with sim.lock:
                        sim.log.clear()
                        sim.reset_state()
                    sim.faults.clear()
                body = dict(c)
                if sim.name == "esputnik":
                    body["validate"] = validate["seconds"]
                    body["validate_calls"] = validate["calls"]
                body["process_cpu"] = time.process_time()
                data = json.dumps(body).encode()
                start_response("200 OK", [("Content-Type", "application/json")])
                return [data]
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return list(sim(environ, start_response))
            finally:
                with lock:
                    c["wall"] += time.perf_counter() - wall
                    c["cpu"] += time.thread_time() - cpu
                    c["requests"] += 1
                # the request log keeps every body: a million contacts' worth is the
                # simulator's memory, not syncd's, but it is dropped to keep it small
                with sim.lock:
                    if len(sim.log) > 1000:
                        del sim.log[:-100]

        server = make_server("127.0.0.1", 0, app, threaded=True)
        server.daemon_threads = True  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers[name] = f"http://127.0.0.1:{server.port}"
    tmp = ready.with_suffix(".tmp")
    tmp.write_text(json.dumps(servers))
    tmp.rename(ready)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


class Sims:
    """The simulator process, started once for the whole benchmark."""

    def __init__(self, names: tuple[str, ...], folder: Path) -> None:
        ready = folder / "sims.json"
        ready.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", ",".join(names), "--ready", str(ready)],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the simulators did not start")
            time.sleep(0.05)
        self.urls: dict[str, str] = json.loads(ready.read_text())

    def _get(self, name: str, path: str, post: bool = False) -> dict[str, Any]:
        req = urllib.request.Request(self.urls[name] + path, data=b"" if post else None)
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        for name in self.urls:
            self._get(name, "/_bench/reset", post=True)

    def timing(self) -> dict[str, Any]:
        return {name: self._get(name, "/_bench/timing") for name in self.urls}

    def held(self, name: str) -> int:
        return int(self._get(name, "/_sandbox/state")["state"].get("contacts", 0))

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- configs and children


def write_config(
    folder: Path,
    export: Path,
    urls: dict[str, str],
    vendors: tuple[str, ...],
    poll_every: float,
    city: bool = False,
) -> Path:
    """A config for one run: the export, a store in `folder`, the vendors at their
    simulators. eSputnik alone gets bench_diff's mapping (so --fast-setup's store is the
    same digest definition), with `city` the town added; with all five, the demo's."""
    from syncd.demo import SANDBOX_TABLES, mapping_text

    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    parts = [
        "[source]",
        f'path = "{export}"',
        'key = "Record ID"',
        "settle_seconds = 0",
        'phone_region = "BE"',
        'ignore_columns = ["Last Activity Date"]',
        "[store]",
        f'path = "{folder / "bench.db"}"',
        "[suppression]",
        "min_days_between_surveys = 0",
        "[delivery]",
        "backoff_base = 0.2",
        "read_timeout = 60",
    ]
    for name in vendors:
        if vendors == ("esputnik",):
            text = MAPPING.replace(
                "[metadata]", '"address.town" = "City"\n[metadata]' if city else "[metadata]"
            )
        else:
            text = mapping_text(name)
        (folder / "mappings" / f"{name}.toml").write_text(text, encoding="utf-8")
        table = SANDBOX_TABLES.get(name, "")
        if name == "esputnik":
            table = table.replace("poll_every = 0.2", f"poll_every = {poll_every}")
        parts += [
            f"[vendors.{name}]",
            f'base_url = "{urls[name]}"',
            f'mapping = "mappings/{name}.toml"',
            table.rstrip(),
        ]
    path = folder / "syncd.toml"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def run_child(tree: Path, cfg: Path, *args: str, wal_of: Path | None = None) -> dict[str, Any]:
    """One `syncd sync` child process; its own report plus the wall clock and WAL samples."""
    out = cfg.parent / "child.json"
    out.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "SYNCD_LOG_LEVEL": "WARNING"}
    env.pop("SYNCD_CONFIG", None)
    cmd = [sys.executable, "-c", CHILD, str(out), "--config", str(cfg), "sync", *args]
    wal = Path(str(wal_of) + "-wal") if wal_of else None
    wal_max = 0
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cfg.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if wal is None:
        stdout, stderr = proc.communicate()
    else:
        while proc.poll() is None:
            with contextlib.suppress(OSError):
                wal_max = max(wal_max, wal.stat().st_size)
            time.sleep(0.02)
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"sync failed ({proc.returncode}):\n{stdout}\n{stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    result.update(wall=wall, exit=proc.returncode, stdout=stdout.strip())
    if wal is not None:
        result["wal_max"] = wal_max
        result["wal_after"] = wal.stat().st_size if wal.exists() else 0
    db = sqlite3.connect(f"file:{cfg.parent / 'bench.db'}?mode=ro", uri=True)
    row = db.execute(
        "SELECT counts, rows_read, exit_code FROM runs WHERE kind = 'reconcile' "
        "ORDER BY id DESC LIMIT 1"
    ).fetchone()
    db.close()
    result["counts"] = json.loads(row[0] or "{}")
    result["rows_read"] = row[1]
    return result


def fresh(folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def timed(export: Path, fn: Any) -> tuple[Any, float, list[float]]:
    """fn() between two bare csv.reader passes over `export`."""
    before = bare_csv(export)
    result = fn()
    after = bare_csv(export)
    return result, (before + after) / 2, [before, after]


def sim_share(sims: Sims, before: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What the simulators did during one run: the counters' growth since `before`."""
    after = sims.timing()
    share: dict[str, Any] = {}
    for name, t in after.items():
        b = before[name]
        part = {
            "requests": t["requests"] - b["requests"],
            "handler_wall": round(t["wall"] - b["wall"], 3),
            "handler_cpu": round(t["cpu"] - b["cpu"], 3),
            "process_cpu": round(t["process_cpu"] - b["process_cpu"], 3),
        }
        if "validate" in t:
            part["validate"] = round(t["validate"] - b["validate"], 3)
        part["handler_share"] = round(part["handler_wall"] / seconds, 3) if seconds else None
        share[name] = part
    return share


# ---------------------------------------------------------------- the measures


def header_copy(export: Path) -> Path:
    """The export with one unmapped column renamed in its header (cached beside it)."""
    out = export.with_name(export.stem + "-renamed.csv")
    if not out.exists():
        with export.open("rb") as src, out.open("wb") as dst:
            head = src.readline()
            old, new = (s.encode() for s in RENAMED)
            assert old in head, head
            dst.write(head.replace(old, new, 1))
            shutil.copyfileobj(src, dst, 16 * MB)
    return out


def fast_setup(work: Path, first: Path, tree: Path) -> None:
    """bench_diff's first phase: the diff of first-N recorded as acknowledged, no HTTP."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(
        [
            sys.executable,
            str(HERE / "bench_diff.py"),
            "--phase",
            "first",
            "--folder",
            str(work),
            "--export",
            str(first),
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=tree,
    )


def round_esputnik(
    n: int, data: Path, tree: Path, sims: Sims, only: set[str], fast: bool, label: str
) -> dict[str, Any]:
    first, second = make_data(data, n)
    work = fresh(Path(tempfile.gettempdir()) / f"bench-scale-{label}-{n}-{os.getpid()}")
    urls = sims.urls
    out: dict[str, Any] = {}
    sims.reset()
    need_second = only & {"second", "whole", "header", "mapping"}
    if fast and not only & {"first", "wal"}:
        fast_setup(work, first, tree)
    else:
        cfg = write_config(work, first, urls, ("esputnik",), 0.01)
        t0 = sims.timing()
        r, bare, spread = timed(first, lambda: run_child(tree, cfg, wal_of=work / "bench.db"))
        r["share"] = sim_share(sims, t0, r["seconds"])
        r["held"] = sims.held("esputnik")
        r.update(bare=bare, bare_spread=spread, db_bytes=(work / "bench.db").stat().st_size)
        out["first"] = r
    if not need_second:
        return out
    cfg = write_config(work, second, urls, ("esputnik",), 0.1)
    t0 = sims.timing()
    r, bare, spread = timed(second, lambda: run_child(tree, cfg))
    r["share"] = sim_share(sims, t0, r["seconds"])
    r.update(bare=bare, bare_spread=spread)
    out["second"] = r
    if "header" in only:
        renamed = header_copy(second)
        cfg = write_config(work, renamed, urls, ("esputnik",), 0.01)
        t0 = sims.timing()
        r, bare, spread = timed(renamed, lambda: run_child(tree, cfg))
        r["share"] = sim_share(sims, t0, r["seconds"])
        r.update(bare=bare, bare_spread=spread)
        out["header"] = r
    if "mapping" in only:
        export = header_copy(second) if "header" in only else second
        cfg = write_config(work, export, urls, ("esputnik",), 0.01, city=True)
        t0 = sims.timing()
        r, bare, spread = timed(export, lambda: run_child(tree, cfg))
        r["share"] = sim_share(sims, t0, r["seconds"])
        r.update(bare=bare, bare_spread=spread)
        out["mapping"] = r
    shutil.rmtree(work, ignore_errors=True)
    return out


def dbstat(db: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # no dbstat: page counts of the whole file only
        pages, size = (
            con.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "page_size")
        )
        rows = [("(whole file: no dbstat)", pages * size)]
    con.close()
    return {name: int(size) for name, size in rows}


def round_store(
    n: int, data: Path, tree: Path, sims: Sims, send_all: bool, label: str
) -> dict[str, Any]:
    first, _ = make_data(data, n)
    work = fresh(Path(tempfile.gettempdir()) / f"bench-scale-store-{label}-{n}-{os.getpid()}")
    sims.reset()
    cfg = write_config(work, first, sims.urls, FIVE, 0.01)
    db = work / "bench.db"
    runs = []
    if not send_all:
        args = ["--baseline"] + [a for v in TRIGGER for a in ("--vendor", v)]
        runs.append(run_child(tree, cfg, *args, wal_of=db))
    t0 = sims.timing()
    r, bare, _spread = timed(first, lambda: run_child(tree, cfg, wal_of=db))
    r["share"] = sim_share(sims, t0, r["seconds"])
    runs.append(r)
    tables = dbstat(db)
    wal = Path(str(db) + "-wal")
    result = {
        "runs": [
            {
                k: x[k]
                for k in ("seconds", "wall", "hwm_kb", "counts", "wal_max", "wal_after", "exit")
            }
            for x in runs
        ],
        "tables": tables,
        "db_bytes": db.stat().st_size,
        "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        "export_bytes": first.stat().st_size,
        "bare": bare,
        "share": r["share"],
        "held": {v: sims.held(v) for v in ("esputnik",)},
    }
    shutil.rmtree(work, ignore_errors=True)
    return result


# ---------------------------------------------------------------- the report


def mmm(values: list[float], fmt: str = "{:.2f}") -> str:
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def summarize(n: int, rounds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows for one size and one tree, from its rounds."""
    rows: list[dict[str, Any]] = []

    def add(
        measure: str,
        values: list[float],
        unit: str,
        target: str,
        ok: bool | None,
        ratios: list[float] | None = None,
        note: str = "",
        fmt: str = "{:.2f}",
    ) -> None:
        rows.append(
            {
                "measure": measure,
                "rows": n,
                "unit": unit,
                "values": values,
                "ratios": ratios or [],
                "target": target,
                "met": None if ok is None else bool(ok),
                "note": note,
                "fmt": fmt,
            }
        )

    def of(kind: str) -> list[dict[str, Any]]:
        return [r[kind] for r in rounds if kind in r]

    firsts = of("first")
    if firsts:
        mb = [r["hwm_kb"] / 1024 for r in firsts]
        add(
            "first sync: peak RSS (MB)",
            mb,
            "MB",
            "<= 150 MB at 1M",
            statistics.median(mb) <= 150,
            fmt="{:.0f}",
        )
        secs = [r["seconds"] for r in firsts]
        ratios = [r["seconds"] / r["bare"] for r in firsts]
        share = [r["share"]["esputnik"]["handler_wall"] / r["seconds"] for r in firsts]
        valid = [r["share"]["esputnik"].get("validate", 0) / r["seconds"] for r in firsts]
        cpu = [r["share"]["esputnik"]["process_cpu"] / r["seconds"] for r in firsts]
        sent = {str(r["counts"].get("esputnik", {}).get("sent")) for r in firsts}
        less = [(r["seconds"] - r["share"]["esputnik"]["handler_wall"]) / r["bare"] for r in firsts]
        add(
            "first sync: time (s)",
            secs,
            "s",
            "<= 10x bare",
            statistics.median(ratios) <= 10,
            ratios,
            f"sent {'/'.join(sorted(sent))}; simulator: handlers {mmm(share, '{:.0%}')} of the "
            f"time (validation {mmm(valid, '{:.0%}')}), its process CPU {mmm(cpu, '{:.0%}')} of "
            f"the time; less the handlers' time {mmm(less, '{:.1f}')}x bare",
        )
    seconds = of("second")
    if seconds:
        mb = [r["hwm_kb"] / 1024 for r in seconds]
        add(
            "second sync: peak RSS (MB)",
            mb,
            "MB",
            "<= 150 MB",
            statistics.median(mb) <= 150,
            fmt="{:.0f}",
        )
        walls = [r["wall"] for r in seconds]
        ratios = [r["wall"] / r["bare"] for r in seconds]
        c = seconds[0]["counts"].get("esputnik", {})
        add(
            "whole second sync process (s)",
            walls,
            "s",
            "<= 3.0x bare",
            statistics.median(ratios) <= 3.0,
            ratios,
            f"{c.get('new')} new, {c.get('changed')} changed, {c.get('sent')} sent; "
            f"imports {mmm([r['import_seconds'] for r in seconds])} s",
        )
    for kind, label, expect in (
        ("header", "header change: sync time (s)", "nothing"),
        ("mapping", "mapping change: sync time (s)", "every contact"),
    ):
        runs = of(kind)
        if runs:
            secs = [r["seconds"] for r in runs]
            ratios = [r["seconds"] / r["bare"] for r in runs]
            sent = [int(r["counts"].get("esputnik", {}).get("sent", 0)) for r in runs]
            held = rounds[0]["first"]["held"] if "first" in rounds[0] else None
            right = (
                all(s == 0 for s in sent)
                if kind == "header"
                else (held is None or all(s >= held * 0.98 for s in sent))
            )
            add(
                label,
                secs,
                "s",
                "<= 10x bare, only what differs",
                statistics.median(ratios) <= 10 and right,
                ratios,
                f"sent {'/'.join(map(str, sorted(set(sent))))} (expected {expect})",
            )
    if firsts:
        wal = [r["wal_max"] / MB for r in firsts]
        after = [r["wal_after"] / MB for r in firsts]
        add(
            "first sync: largest -wal (MB)",
            wal,
            "MB",
            "bounded",
            None,
            note=f"after: {mmm(after, '{:.1f}')} MB; store {firsts[0]['db_bytes'] / MB:.0f} MB",
            fmt="{:.1f}",
        )
    stores = of("store")
    if stores:
        per = [s["db_bytes"] / n for s in stores]
        x = [s["db_bytes"] / s["export_bytes"] for s in stores]
        add(
            "store after first sync, 5 vendors (B/contact)",
            per,
            "B",
            "<= 3x the export",
            statistics.median(x) <= 3,
            x,
            f"export {stores[0]['export_bytes'] / n:.0f} B/contact",
            fmt="{:.0f}",
        )
        rows[-1]["ratio_label"] = "x export"
        median = sorted(stores, key=lambda s: s["db_bytes"])[len(stores) // 2]
        rows[-1]["tables"] = {
            name: size for name, size in sorted(median["tables"].items(), key=lambda kv: -kv[1])
        }
        wal = [max(r["wal_max"] for r in s["runs"]) / MB for s in stores]
        add(
            "5-vendor first sync: largest -wal (MB)",
            wal,
            "MB",
            "bounded",
            None,
            note=f"after: {mmm([s['wal_bytes'] / MB for s in stores], '{:.1f}')} MB",
            fmt="{:.1f}",
        )
    return rows


def slopes(all_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Peak RSS growth per extra contact between consecutive sizes (median figures)."""
    out = []
    for measure in ("first sync: peak RSS (MB)", "second sync: peak RSS (MB)"):
        pts = sorted(
            (r["rows"], statistics.median(r["values"])) for r in all_rows if r["measure"] == measure
        )
        for (n1, m1), (n2, m2) in itertools.pairwise(pts):
            b = (m2 - m1) * MB / (n2 - n1)
            out.append(
                {
                    "measure": measure.replace("(MB)", "growth (B/extra contact)"),
                    "rows": f"{n1}->{n2}",
                    "unit": "B",
                    "values": [b],
                    "ratios": [],
                    "target": "<= 16 B",
                    "met": b <= 16,
                    "note": "",
                    "fmt": "{:.1f}",
                }
            )
    return out


def print_rows(rows: list[dict[str, Any]], label: str) -> None:
    print(f"\n## {label}")
    print("measure | N | min / median / max | x bare | target | met? | notes")
    print("---|---:|---|---|---|---|---")
    for r in rows:
        met = "-" if r["met"] is None else ("yes" if r["met"] else "NO")
        n = f"{r['rows']:,}" if isinstance(r["rows"], int) else r["rows"]
        print(
            f"{r['measure']} | {n} | {mmm(r['values'], r['fmt'])} | "
            f"{mmm(r['ratios']) + r.get('ratio_label', 'x') if r['ratios'] else ''} | "
            f"{r['target']} | {met} | {r['note']}"
        )
    for r in rows:
        if "tables" in r:
            n = r["rows"]
            print(f"\nstore at {n:,} contacts, by table and index (dbstat, median round):")
            print("table or index | MB | B/contact")
            print("---|---:|---:")
            for name, size in r["tables"].items():
                print(f"{name} | {size / MB:.1f} | {size / n:.0f}")


def worktree(ref: str) -> tuple[Path, str]:
    sha = subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"syncd-bench-{sha[:10]}"
    if not path.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), sha],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
    return path, sha


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--rows", default="200000", help="sizes, comma-separated (e.g. 100000,1000000)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(ALL), help=f"measures, of {','.join(ALL)}")
    parser.add_argument("--data", default=str(HERE / "data" / "scale"), help="cached exports")
    parser.add_argument(
        "--ref", help="run syncd from a worktree of this commit (default: this tree)"
    )
    parser.add_argument("--compare", help="also run every measure against this commit")
    parser.add_argument(
        "--fast-setup", action="store_true", help="second-sync store by bench_diff's first phase"
    )
    parser.add_argument("--store-send", action="store_true", help="store: send to all five vendors")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve.split(","), Path(args.ready))
        return
    sizes = [int(s.replace("_", "")) for s in args.rows.split(",")]
    only = set(args.only.split(","))
    if unknown := only - set(ALL):
        parser.error(f"unknown measures {sorted(unknown)}")
    if "whole" in only or "header" in only or "mapping" in only:
        only.add("second")
    if "wal" in only:
        only.add("first")
    trees: dict[str, tuple[Path, str]] = {}
    if args.ref:
        trees["ref"] = worktree(args.ref)
    else:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "syncd"], cwd=ROOT, capture_output=True, text=True
        )
        trees["tree"] = (
            ROOT,
            head.stdout.strip() + (" + uncommitted edits" if dirty.stdout.strip() else ""),
        )
    if args.compare:
        trees["compare"] = worktree(args.compare)
    for tree, _sha in trees.values():
        # as `pip install` leaves it: byte-compiled. Without, a child with
        # PYTHONDONTWRITEBYTECODE set (as on the development VM) compiles syncd's modules at
        # every start, ~70 ms that no installed syncd spends
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "syncd")], check=True)
    names = FIVE if "store" in only else ("esputnik",)
    sims_dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    sims = Sims(names, sims_dir)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "cpus": os.cpu_count(),
        "trees": {k: {"path": str(p), "commit": c} for k, (p, c) in trees.items()},
        "sizes": {},
    }
    try:
        for n in sizes:
            data = Path(args.data) / f"n{n}"
            data.mkdir(parents=True, exist_ok=True)
            make_data(data, n)
            per_tree: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
            for i in range(args.rounds):
                for label, (tree, _sha) in trees.items():  # alternating, round by round
                    r: dict[str, Any] = {}
                    if only & {"first", "second"}:
                        r.update(round_esputnik(n, data, tree, sims, only, args.fast_setup, label))
                    if "store" in only:
                        r["store"] = round_store(n, data, tree, sims, args.store_send, label)
                    per_tree[label].append(r)
                    print(
                        f"[{n} round {i + 1} {label}] "
                        + "; ".join(
                            f"{k}: {v['seconds']:.1f}s {v['hwm_kb'] / 1024:.0f}MB"
                            for k, v in r.items()
                            if "seconds" in v
                        ),
                        file=sys.stderr,
                        flush=True,
                    )
            results["sizes"][str(n)] = per_tree
    finally:
        sims.close()
        shutil.rmtree(sims_dir, ignore_errors=True)
    report: dict[str, list[dict[str, Any]]] = {}
    for label, (_tree, sha) in trees.items():
        rows = [row for n in sizes for row in summarize(n, results["sizes"][str(n)][label])]
        rows += slopes(rows)
        report[label] = rows
        print_rows(rows, f"{label}: {sha}")
    results["table"] = report
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
