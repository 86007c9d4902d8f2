"""Pull-back: responses, NPS and unsubscribes, from each vendor's cursor to now.

Every page is stored with its cursor in one transaction, so a crash between fetching a page
and committing it re-fetches that page next time (upserts by the vendor's own ids: nothing
is lost and nothing doubles). A connector owns its cursor's format; a bare ISO date is
understood by every connector as "start here" (`syncd pull --since`).

A record is checked against the types its table takes before it is stored (`clean`):
what converts without guessing does (a number sent as text, an id sent as a number), and
a record with a field that does not (a dict where a text belongs, "n/a" as a score) is
skipped, logged with its reason, and counted as `invalid`: the pull goes on, and ends
`partial`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import date
from threading import Event
from typing import Any

import structlog

from syncd import log as logmod
from syncd.clock import Clock
from syncd.config import Config
from syncd.crashpoints import crashpoint
from syncd.errors import FatalError, RetriableError
from syncd.pipeline import RunReport, ended, open_connectors
from syncd.push import Delivered
from syncd.state import Store, iso

log = structlog.get_logger("syncd.pull")


def pull(
    cfg: Config,
    store: Store,
    clock: Clock,
    *,
    vendors: Sequence[str] | None = None,
    since: date | None = None,
    stop: Event | None = None,
    on_page: Callable[[str, str, int], None] | None = None,
) -> RunReport:
    """Pull every stream of every (or the named) vendor; exit 1 if any stream failed."""
    connectors = open_connectors(cfg, clock, vendors)
    report = RunReport("pull", run_id=store.start_run("pull", clock.now()))
    logmod.bind(run_id=report.run_id)
    try:
        for name, connector in connectors.items():
            streams = connector.config.streams
            if not streams:
                continue  # a vendor we only send to, or whose streams are switched off
            out = report.delivered.setdefault(name, Delivered())
            for stream in streams:
                if stop is not None and stop.is_set():
                    break
                logmod.bind(vendor=name)
                try:
                    stored, invalid = _pull_stream(
                        store, connector.name, stream, connector.pull, clock, since, on_page
                    )
                    out.counts[stream] += stored
                    if invalid:
                        out.counts["invalid"] += invalid
                except (RetriableError, FatalError) as exc:
                    out.counts["errors"] += 1
                    out.stopped = str(exc)
                    log.error("pull failed", stream=stream, error=str(exc))
                finally:
                    logmod.unbind("vendor")
        trouble = any(d.stopped or d.counts["invalid"] for d in report.delivered.values())
        report.exit_code = 1 if trouble else 0
        interrupted = stop is not None and stop.is_set()
        store.finish_run(
            report.run_id or 0,
            clock.now(),
            status="interrupted" if interrupted else "partial" if trouble else "ok",
            exit_code=report.exit_code,
            counts=report.counts(),
            message=report.summary(),
        )
    except BaseException as exc:
        ended(store, clock, report, exc)
        raise
    finally:
        for c in connectors.values():
            c.close()
        logmod.unbind("run_id")
    return report


def _pull_stream(
    store: Store,
    vendor: str,
    stream: str,
    fetch: Callable[..., Any],
    clock: Clock,
    since: date | None,
    on_page: Callable[[str, str, int], None] | None,
) -> tuple[int, int]:
    """Pull one stream from its cursor: (records stored, records skipped as invalid)."""
    cursor = (
        since.isoformat()
        if since
        else store.scalar(
            "SELECT cursor FROM cursors WHERE vendor = ? AND stream = ?", (vendor, stream)
        )
    )
    stored = invalid = 0
    for page in fetch(stream, cursor, clock.now()):
        now = iso(clock.now())
        crashpoint("page_fetched")
        with store.write() as c:
            saver = SAVERS[stream]
            for record in page.records:
                try:
                    saver(c, vendor, clean(stream, record), now)
                except Invalid as exc:
                    invalid += 1
                    log.warning(
                        "pulled record skipped", stream=stream, record=exc.ident, reason=str(exc)
                    )
            c.execute(
                "INSERT INTO cursors (vendor, stream, cursor, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (vendor, stream) DO UPDATE SET cursor = excluded.cursor, "
                "updated_at = excluded.updated_at",
                (vendor, stream, page.cursor, now),
            )
        stored += len(page.records)
        log.info("pulled", stream=stream, records=len(page.records), cursor=page.cursor)
        if on_page:
            on_page(vendor, stream, len(page.records))
    return stored - invalid, invalid


def _match_key(c: Any, external: str | None, email: str | None, phone: str | None) -> str | None:
    """The CRM key of a pulled record: the vendor's copy of our key, else email, else phone."""
    if external:
        row = c.execute("SELECT key FROM contacts WHERE key = ?", (external,)).fetchone()
        if row:
            return str(row[0])
    for column, value in (("email", (email or "").strip().lower()), ("phone", phone)):
        if value:
            row = c.execute(
                f"SELECT key FROM contacts WHERE {column} = ? ORDER BY gone_at IS NOT NULL LIMIT 1",
                (value,),
            ).fetchone()
            if row:
                return str(row[0])
    return None


def _save_response(c: Any, vendor: str, r: dict[str, Any], now: str) -> None:
    key = _match_key(c, r.get("external_key"), r.get("email"), None)
    raw = json.dumps(r.get("raw"), sort_keys=True, ensure_ascii=False)
    c.execute(
        "INSERT INTO responses (vendor, response_id, key, email, campaign, language, surveyed_at, "
        "answered_at, raw, pulled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (vendor, response_id) DO UPDATE SET key = excluded.key, "
        "email = excluded.email, surveyed_at = excluded.surveyed_at, "
        "answered_at = excluded.answered_at, raw = excluded.raw, pulled_at = excluded.pulled_at "
        "WHERE responses.raw IS NOT excluded.raw OR responses.key IS NOT excluded.key",
        (
            vendor,
            r["response_id"],
            key,
            r.get("email"),
            r.get("campaign"),
            r.get("language"),
            r.get("surveyed_at"),
            r.get("answered_at"),
            raw,
            now,
        ),
    )
    for a in r.get("answers") or []:
        values = (
            vendor,
            a["answer_id"],
            r["response_id"],
            a.get("question_id"),
            a.get("question_text"),
            a.get("sort_order"),
            a.get("score"),
            a.get("text"),
            _bool(a.get("boolean")),
            _json(a.get("options")),
            _bool(a.get("is_nps")),
            _bool(a.get("is_ces")),
            _bool(a.get("is_csat")),
            _bool(a.get("is_score")),
            _json(a.get("paths")),
        )
        c.execute(
            "INSERT INTO answers (vendor, answer_id, response_id, question_id, question_text, "
            "sort_order, score, text, boolean, options, is_nps, is_ces, is_csat, is_score, paths) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (vendor, answer_id) DO UPDATE SET response_id = excluded.response_id, "
            "question_id = excluded.question_id, question_text = excluded.question_text, "
            "sort_order = excluded.sort_order, score = excluded.score, text = excluded.text, "
            "boolean = excluded.boolean, options = excluded.options, is_nps = excluded.is_nps, "
            "is_ces = excluded.is_ces, is_csat = excluded.is_csat, is_score = excluded.is_score, "
            "paths = excluded.paths",
            values,
        )


def _save_nps(c: Any, vendor: str, r: dict[str, Any], now: str) -> None:
    c.execute(
        "INSERT INTO nps (vendor, filter, period_start, period_end, nps, detractors, passives, "
        "promoters, vendor_id, computed_at, pulled_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (vendor, filter, period_start, period_end) DO UPDATE SET nps = excluded.nps, "
        "detractors = excluded.detractors, passives = excluded.passives, "
        "promoters = excluded.promoters, vendor_id = excluded.vendor_id, "
        "computed_at = excluded.computed_at, pulled_at = excluded.pulled_at",
        (
            vendor,
            r.get("filter") or "[]",
            r["period_start"],
            r["period_end"],
            r.get("nps"),
            r.get("detractors"),
            r.get("passives"),
            r.get("promoters"),
            r.get("vendor_id"),
            r.get("computed_at"),
            now,
        ),
    )


def _save_unsubscribe(c: Any, vendor: str, r: dict[str, Any], now: str) -> None:
    key = _match_key(c, r.get("external_key"), r.get("email"), r.get("phone"))
    c.execute(
        "INSERT INTO unsubscribes (vendor, vendor_id, key, email, phone, channel, at, pulled_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (vendor, vendor_id) DO UPDATE SET "
        "key = coalesce(excluded.key, unsubscribes.key), "
        "at = coalesce(excluded.at, unsubscribes.at)",  # a pull that does not know keeps it
        (
            vendor,
            r["vendor_id"],
            key,
            (r.get("email") or "").lower() or None,
            r.get("phone"),
            r.get("channel"),
            r.get("at") or None,  # NULL: the vendor did not say when
            now,
        ),
    )


class Invalid(Exception):
    """A pulled record with a field of a type its table cannot take."""

    def __init__(self, reason: str, ident: Any) -> None:
        super().__init__(reason)
        self.ident = ident if isinstance(ident, str | int) else None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # an id or a date sent as a number
    raise TypeError("is not text")


def _number(value: Any) -> int | float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                pass
    raise TypeError("is not a number")


def _whole(value: Any) -> int | None:
    number = _number(value)
    if number is None or isinstance(number, int):
        return number
    if number.is_integer():
        return int(number)
    raise TypeError("is not a whole number")


def _bool(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value in (0, 1):
        return int(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", ""):
        text = value.strip().lower()
        return None if not text else int(text in ("true", "1"))
    raise TypeError("is not true or false")


def _any(value: Any) -> Any:
    return value  # stored as JSON


# each stream's fields and how each is made the type its column takes; a field named
# without `?` is required
Spec = dict[str, Callable[[Any], Any]]
SPECS: dict[str, Spec] = {
    "responses": {
        "response_id": _text,
        "external_key?": _text,
        "email?": _text,
        "campaign?": _text,
        "language?": _text,
        "surveyed_at?": _text,
        "answered_at?": _text,
        "raw?": _any,
    },
    "nps": {
        "filter?": _text,
        "period_start": _text,
        "period_end": _text,
        "nps?": _number,
        "detractors?": _number,
        "passives?": _number,
        "promoters?": _number,
        "vendor_id?": _text,
        "computed_at?": _text,
    },
    "unsubscribes": {
        "vendor_id": _text,
        "external_key?": _text,
        "email?": _text,
        "phone?": _text,
        "channel?": _text,
        "at?": _text,
    },
}
ANSWER: Spec = {
    "answer_id": _text,
    "question_id?": _text,
    "question_text?": _text,
    "sort_order?": _whole,
    "score?": _number,
    "text?": _text,
    "boolean?": _bool,
    "options?": _any,
    "is_nps?": _bool,
    "is_ces?": _bool,
    "is_csat?": _bool,
    "is_score?": _bool,
    "paths?": _any,
}


def _checked(record: Any, spec: Spec, where: str) -> dict[str, Any]:
    """`record` with every field of `spec` converted, or `Invalid` naming the first that
    will not convert."""
    if not isinstance(record, dict):
        raise Invalid(f"{where or 'the record'} is {type(record).__name__}, not an object", None)
    out = dict(record)
    for name, convert in spec.items():
        field = name.rstrip("?")
        value = record.get(field)
        if value is None and not name.endswith("?"):
            raise Invalid(f"{where}{field} is missing", None)
        try:
            out[field] = convert(value)
        except TypeError as exc:
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:59] + "…"
            raise Invalid(f"{where}{field} {shown} {exc}", None) from None
    return out


def clean(stream: str, record: Any) -> dict[str, Any]:
    """A pulled record in the types its table takes, or `Invalid` (see the module)."""
    ident = (
        record.get("response_id" if stream == "responses" else "vendor_id")
        if isinstance(record, dict)
        else None
    )
    try:
        out = _checked(record, SPECS[stream], "")
        answers = out.get("answers")
        if stream == "responses" and answers is not None:
            if not isinstance(answers, list):
                raise Invalid(f"answers is {type(answers).__name__}, not a list", None)
            out["answers"] = [_checked(a, ANSWER, f"answers[{i}].") for i, a in enumerate(answers)]
    except Invalid as exc:
        raise Invalid(str(exc), ident) from None
    return out


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


SAVERS: dict[str, Callable[[Any, str, dict[str, Any], str], None]] = {
    "responses": _save_response,
    "nps": _save_nps,
    "unsubscribes": _save_unsubscribe,
}
