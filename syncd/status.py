"""`syncd status`: what an operator needs at a glance, as data (--json) or text.

The JSON shape is documented in the README ("syncd status --json") and checked against
`syncd/status.schema.json` by the tests.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from syncd.config import Config
from syncd.lock import held, read_note
from syncd.log import printable
from syncd.state import OPEN_STATUSES, Store, parse_iso

LIST_LIMIT = 50
EXAMPLE_KEYS = 3  # keys shown per group of problems or skips
REASON_WIDTH = 160  # a vendor's reason is cut to this in the text (--json has all of it)
SKIP_KIND = (
    "CASE WHEN reason LIKE 'unsubscribed at %' THEN 'unsubscribed' "
    "WHEN reason LIKE 'surveyed by %' THEN 'min_days_between_surveys' ELSE reason END"
)


def collect(cfg: Config, now: datetime, *, runs: int = 5) -> dict[str, Any]:
    # a missing store is an error (exit 2), not an empty status: a mistyped [store] path
    # must not look like a healthy installation to a monitoring script
    store = Store.read(cfg.store.path)
    try:
        locked = held(cfg.store.path)  # before the runs are read: one may start, not end
        recent = [
            {
                "id": r["id"],
                "kind": r["kind"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
                "status": r["status"],
                "exit_code": r["exit_code"],
                "seconds": r["seconds"],
                "rows_read": r["rows_read"],
                "quarantined": r["quarantined"],
                "counts": json.loads(r["counts"] or "{}"),
                "message": r["message"],
            }
            for r in store.query("SELECT * FROM runs ORDER BY id DESC LIMIT ?", (runs,))
        ]
        if not locked and not held(cfg.store.path):
            _killed(recent)
        backlog = store.backlog()
        vendors = {name: _open(backlog.get(name, {})) for name in cfg.vendors}
        # a vendor removed from the config leaves its open deliveries: nothing sends them
        # (unless it is added back) and no operator need act, so they are shown apart and
        # are neither attention nor problems (`syncd withdraw` closes them)
        removed = {
            name: _open(counts)
            for name, counts in sorted(backlog.items())
            if name not in cfg.vendors
        }
        configured = json.dumps(list(cfg.vendors))
        attention = [
            dict(r)
            for r in store.query(
                # the IN list is deliveries_open's, so that index (open work only) is
                # read, not every delivery
                "SELECT vendor, key, status, reason, attempts, updated_at FROM deliveries "
                f"WHERE status IN {OPEN_STATUSES!r} AND status IN ('unknown', 'dead')"
                f"{CONFIGURED} ORDER BY updated_at DESC LIMIT ?",
                (configured, LIST_LIMIT),
            )
        ]
        cursors = [
            dict(r)
            for r in store.query(
                "SELECT vendor, stream, cursor, updated_at FROM cursors ORDER BY vendor, stream"
            )
        ]
        last = store.scalar(
            "SELECT max(id) FROM runs WHERE kind = 'reconcile' AND status != 'running'"
        )
        quarantine = [
            dict(r)
            for r in store.query(
                "SELECT line, key, vendor, reason FROM quarantine WHERE run_id = ? "
                "ORDER BY line LIMIT ?",
                (last, LIST_LIMIT),
            )
        ]
        quarantined = store.scalar("SELECT count(*) FROM quarantine WHERE run_id = ?", (last,))
        # open deliveries with a reason: rejected (failed, dead), outcome unknown, or left
        # pending by a retriable fault; the IN list is the partial index deliveries_open's
        problems = _grouped(store, PROBLEMS + CONFIGURED, (configured,), "reason")
        # a skip's reason names a vendor and a date: grouped by its kind, as the
        # skipped_reasons view groups them
        skipped = _grouped(store, "status = 'skipped' AND run_id = ?", (last,), SKIP_KIND)
        stalled = _stalled(store, cfg, now)
    finally:
        store.close()
    # here, not at the top: the pipeline imports this module for `run_reasons`, and a sync
    # has no use for APScheduler
    from syncd.schedule import next_fire

    schedule = cfg.schedule
    return {
        "store": str(cfg.store.path),
        "now": now.isoformat(timespec="seconds"),
        "runs": recent,
        "vendors": vendors,
        "removed_vendors": removed,
        "attention": attention,
        "cursors": cursors,
        "quarantine": {"run_id": last, "rows": quarantined or 0, "sample": quarantine},
        "problems": [_drop(g, "example") for g in problems],
        "skipped": {"run_id": last, "groups": _by_reason(skipped)},
        "stalled": stalled,
        "next_runs": {
            job: _iso(next_fire(getattr(schedule, job), schedule.timezone, now))
            for job in ("reconcile", "pull")
        },
    }


def _killed(runs: list[dict[str, Any]]) -> None:
    """Runs the store still calls `running` while no syncd holds its lock (before or after
    they were read) were killed: shown `crashed`, as the next run records them, not
    `running for 259200s` until then."""
    for run in runs:
        if run["status"] == "running":
            run["status"] = "crashed"
            run["message"] = (
                "killed: left running, and no syncd holds the store's lock (the next run "
                "records it crashed)"
            )


def _stalled(store: Store, cfg: Config, now: datetime) -> dict[str, Any] | None:
    """The service's job its watchdog found stalled, as it says in the lock file (it cannot
    be said in the store: the job may hold its write lock, or be stuck in SQLite itself):
    the job, since when it has shown no progress, and its run (the newest `running` one of
    its kind; none for the export watch's look at the folder). None while none is."""
    held = read_note(cfg.store.path)
    said = held[1].get("stalled") if held else None
    if not held or not isinstance(said, dict) or not isinstance(said.get("job"), str):
        return None
    since, bound = parse_iso(said.get("since")), said.get("stall_seconds")
    if since is None or not isinstance(bound, int | float):
        return None
    run_id = store.scalar(
        "SELECT max(id) FROM runs WHERE status = 'running' AND kind = ?", (said["job"],)
    )
    return {
        "job": said["job"],
        "run_id": run_id,
        "since": since.isoformat(timespec="seconds"),
        "seconds": max(round((now - since).total_seconds()), 0),
        "stall_seconds": bound,
        "pid": held[0],
    }


def _grouped(
    store: Store, where: str, params: tuple[Any, ...], reason: str
) -> list[dict[str, Any]]:
    """Deliveries matching `where`, counted per vendor, status and `reason` (an SQL
    expression), the largest groups first: each with a full reason and the first few keys."""
    rows = store.query(
        f"""WITH d AS (
                SELECT vendor, status, {reason} AS grp, reason, key,
                       count(*) OVER g AS n, row_number() OVER (g ORDER BY key) AS i
                FROM deliveries WHERE {where}
                WINDOW g AS (PARTITION BY vendor, status, {reason}))
            SELECT vendor, status, grp, n, min(reason) AS example, json_group_array(key) AS keys
            FROM d WHERE i <= ? GROUP BY vendor, status, grp
            ORDER BY n DESC, vendor, status, grp LIMIT ?""",
        (*params, EXAMPLE_KEYS, LIST_LIMIT),
    )
    return [
        {
            "vendor": r["vendor"],
            "status": r["status"],
            "reason": r["grp"],
            "count": r["n"],
            "example": r["example"],
            "keys": sorted(json.loads(r["keys"])),
        }
        for r in rows
    ]


# the open deliveries worth a reason (see `collect`); the IN list is deliveries_open's.
# In flight with a reason: a job the connector stopped polling, held (an eSputnik session
# still open at poll_timeout), not a request of a run going on
PROBLEMS = (
    f"status IN {OPEN_STATUSES!r} "
    "AND (status NOT IN ('pending', 'in_flight') OR reason IS NOT NULL)"
)


# of the configured vendors (a JSON array of their names)
CONFIGURED = " AND vendor IN (SELECT value FROM json_each(?))"


def _open(counts: dict[str, int]) -> dict[str, int]:
    """A vendor's open deliveries by status, each status counted."""
    return {status: counts.get(status, 0) for status in OPEN_STATUSES}


def run_reasons(store: Store, run_id: int, since: str | None) -> list[dict[str, Any]]:
    """One run's reasons, grouped as `collect` groups them: the deliveries it left failed,
    dead, unknown or pending with a reason (those changed `since` its start; None: none),
    then the ones it skipped, by kind of reason."""
    groups = _grouped(store, PROBLEMS + " AND updated_at >= ?", (since,), "reason") if since else []
    return groups + _grouped(store, "status = 'skipped' AND run_id = ?", (run_id,), SKIP_KIND)


def reason_lines(groups: list[dict[str, Any]]) -> list[str]:
    """A run's reason groups as lines: `signalvine: 1 failed — phone … (keys: …)`."""
    lines = []
    for g in groups:
        more = g["count"] > len(g["keys"])
        if g["status"] == "skipped":
            shown = f"{g['reason']}, e.g. {_line(g['example'], g['keys'], more)}"
        else:
            shown = _line(g["reason"], g["keys"], more)
        lines.append(printable(f"  {g['vendor']}: {g['count']} {g['status']} — {shown}"))
    return lines


def _line(reason: str | None, keys: list[str], more: bool) -> str:
    """A reason, cut to a line, and example keys."""
    text = " ".join(str(reason).split())
    text = text if len(text) <= REASON_WIDTH else text[: REASON_WIDTH - 1] + "…"
    return f"{text} (keys: {', '.join(keys)}{', …' if more else ''})"


def _drop(group: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in group.items() if k != name}


def _by_reason(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-vendor groups merged by reason, with each vendor's count."""
    merged: dict[str, dict[str, Any]] = {}
    for g in groups:
        m = merged.setdefault(
            g["reason"],
            {"reason": g["reason"], "count": 0, "vendors": {}, "example": g["example"], "keys": []},
        )
        m["count"] += g["count"]
        m["vendors"][g["vendor"]] = g["count"]
        m["keys"] = sorted({*m["keys"], *g["keys"]})[:EXAMPLE_KEYS]
    return sorted(merged.values(), key=lambda m: (-m["count"], m["reason"]))


def _run_state(run: dict[str, Any], now: str) -> str:
    """How a run ended, or how long it has been running."""
    if run["status"] == "running":
        started = datetime.fromisoformat(run["started_at"])
        elapsed = (datetime.fromisoformat(now) - started).total_seconds()
        return f"running for {max(elapsed, 0):.0f}s"
    if run["status"] == "crashed":  # when it died is not known
        return f"crashed: {run['message'] or ''}"
    return f"{run['status']} exit {run['exit_code']} ({run['seconds'] or 0:.1f}s) {run['message'] or ''}"


def _counts(counts: dict[str, int]) -> str:
    """`2 pending, 1 failed`, or `none`."""
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat(timespec="seconds") if ts else None


def render(data: dict[str, Any]) -> str:
    lines = [f"store {data['store']}"]
    stalled = data["stalled"]
    if stalled:
        run = f" (run #{stalled['run_id']})" if stalled["run_id"] is not None else ""
        lines.append(
            f"STALLED: the service's {stalled['job']}{run} has shown no progress since "
            f"{stalled['since']} ({stalled['seconds']} s; stall_seconds = "
            f"{stalled['stall_seconds']:g}): `journalctl -u syncd` says where it is stuck (`job "
            "stalled`); under systemd's watchdog syncd is restarted, else restart it"
        )
    lines.append("recent runs:")
    for r in data["runs"] or [{"id": None}]:
        if r["id"] is None:
            lines.append("  none yet")
            break
        state = _run_state(r, data["now"])
        if stalled and r["id"] == stalled["run_id"]:
            state += f", stalled since {stalled['since']}"
        lines.append(f"  #{r['id']} {r['kind']} {r['started_at']} {state}")
    lines.append("open deliveries:")
    for name, counts in data["vendors"].items():
        lines.append(f"  {name}: {_counts(counts)}")
    if data["removed_vendors"]:
        lines.append(
            "open deliveries of vendors no longer in the config (never sent unless the "
            "vendor is added back):"
        )
        for name, counts in data["removed_vendors"].items():
            lines.append(
                f"  {name}: {_counts(counts)}; `syncd withdraw --vendor {name}` closes them"
            )
    if data["problems"]:
        lines.append("problems (by vendor and reason; `syncd show KEY` tells one contact's story):")
        for g in data["problems"]:
            shown = _line(g["reason"], g["keys"], g["count"] > len(g["keys"]))
            lines.append(f"  {g['vendor']}: {g['count']} {g['status']} — {shown}")
    if data["attention"]:
        lines.append(
            "need an operator: `syncd retry --unknown` re-sends unknown triggers (the vendor "
            "may already have them); `syncd retry --dead` retries dead ones"
        )
    skipped = data["skipped"]["groups"]
    if skipped:
        lines.append("skipped in the last reconcile:")
        for g in skipped:
            vendors = ", ".join(f"{v} {n}" for v, n in g["vendors"].items())
            shown = _line(g["example"], g["keys"], False)
            lines.append(f"  {g['reason']}: {g['count']} ({vendors}) — e.g. {shown}")
    if data["cursors"]:
        lines.append("cursors:")
        for c in data["cursors"]:
            lines.append(f"  {c['vendor']}/{c['stream']}: {c['cursor']} (at {c['updated_at']})")
    q = data["quarantine"]
    lines.append(f"quarantined rows in the last export: {q['rows']}")
    for row in q["sample"][:10]:
        vendor = f" [{row['vendor']}]" if row["vendor"] else ""
        lines.append(f"  line {row['line']}{vendor}: {row['reason']}")
    lines.append(
        f"next runs: reconcile {data['next_runs']['reconcile']}, pull {data['next_runs']['pull']}"
    )
    # a vendor's words (reasons, cursors, a run's message) and the export's (keys) are shown
    # as written, each on its own line: never a line break or an escape sequence of theirs
    return "\n".join(map(printable, lines))
