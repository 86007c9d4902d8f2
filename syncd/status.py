"""`syncd status`: what an operator needs at a glance, as data (--json) or text.

The JSON shape is documented in the README ("syncd status --json") and checked against
`syncd/status.schema.json` by the tests.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from syncd.config import Config
from syncd.schedule import next_fire
from syncd.state import OPEN_STATUSES, Store

LIST_LIMIT = 50


def collect(cfg: Config, now: datetime, *, runs: int = 5) -> dict[str, Any]:
    store = Store.open(cfg.store.path)
    try:
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
        backlog = store.backlog()
        vendors = {
            name: {status: backlog.get(name, {}).get(status, 0) for status in OPEN_STATUSES}
            for name in cfg.vendors
        }
        attention = [
            dict(r)
            for r in store.query(
                "SELECT vendor, key, status, reason, attempts, updated_at FROM deliveries "
                "WHERE status IN ('unknown', 'dead') ORDER BY updated_at DESC LIMIT ?",
                (LIST_LIMIT,),
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
    finally:
        store.close()
    schedule = cfg.schedule
    return {
        "store": str(cfg.store.path),
        "now": now.isoformat(timespec="seconds"),
        "runs": recent,
        "vendors": vendors,
        "attention": attention,
        "cursors": cursors,
        "quarantine": {"run_id": last, "rows": quarantined or 0, "sample": quarantine},
        "next_runs": {
            job: _iso(next_fire(getattr(schedule, job), schedule.timezone, now))
            for job in ("reconcile", "pull")
        },
    }


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat(timespec="seconds") if ts else None


def render(data: dict[str, Any]) -> str:
    lines = [f"store {data['store']}"]
    lines.append("recent runs:")
    for r in data["runs"] or [{"id": None}]:
        if r["id"] is None:
            lines.append("  none yet")
            break
        lines.append(
            f"  #{r['id']} {r['kind']} {r['started_at']} {r['status']} exit {r['exit_code']}"
            f" ({r['seconds'] or 0:.1f}s) {r['message'] or ''}"
        )
    lines.append("open deliveries:")
    for name, counts in data["vendors"].items():
        shown = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "none"
        lines.append(f"  {name}: {shown}")
    if data["attention"]:
        lines.append(
            "need an operator (`syncd retry --unknown` re-sends unknown triggers: the vendor "
            "may already have them; `syncd retry --dead` retries dead ones):"
        )
        for d in data["attention"]:
            lines.append(f"  {d['vendor']} {d['key']} {d['status']}: {d['reason']}")
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
    return "\n".join(lines)
