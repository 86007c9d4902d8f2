"""Pull-back: responses, NPS and unsubscribes, from each vendor's cursor to now.

Every page is stored with its cursor in one transaction, so a crash between fetching a page
and committing it re-fetches that page next time (upserts by the vendor's own ids: nothing
is lost and nothing doubles). A connector owns its cursor's format; a bare ISO date is
understood by every connector as "start here" (`syncd pull --since`).

A record is checked against the types its table takes before it is stored (`clean`):
what converts without guessing does (a number sent as text, an id sent as a number), and
a record with a field that does not (a dict where a text belongs, "n/a" as a score) is
skipped, logged with its reason, and counted as `invalid`: the pull goes on, and ends
`partial`. So is a response that names one answer id twice, or an answer id another
response holds (`state.pulled.Refused`): answers are keyed by their id, and taking it
would drop one answer or move another response's.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from threading import Event
from typing import Any, ClassVar

import structlog

from syncd import log as logmod
from syncd.clock import Clock
from syncd.config import Config
from syncd.crashpoints import crashpoint
from syncd.errors import FatalError, RetriableError, SyncdError
from syncd.runs import Report, ended, finish, open_connectors
from syncd.state import Store, iso, parse_iso, pulled

log = structlog.get_logger("syncd.pull")

STREAMS = ("responses", "nps", "unsubscribes")
# how far a stream's cursor may be ahead of this machine's clock (two clocks a little apart,
# a cursor of the vendor's own time) before it is taken for a clock that was wrong
AHEAD = timedelta(hours=1)


@dataclass
class Pulled:
    """What one vendor's pull did."""

    read: list[str] = field(default_factory=list)  # the streams read to their end
    # new or changed per stream, `unchanged` (re-read as stored: the lookback), `invalid`
    counts: Counter[str] = field(default_factory=Counter)
    errors: dict[str, str] = field(default_factory=dict)  # stream → why it failed


@dataclass
class PullReport(Report):
    """A pull's report: each pulling vendor's streams."""

    vendors: dict[str, Pulled] = field(default_factory=dict)

    WORDS: ClassVar[dict[str, str]] = {
        "responses": "{} responses",
        "nps": "{} NPS figures",
        "unsubscribes": "{} unsubscribes",
        "invalid": "{} records skipped (fields of the wrong type; see the log)",
        "errors": "{} streams failed",
    }

    def counts(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        stops = self.stops()
        for name, p in self.vendors.items():
            out[name] = {k: n for k, n in p.counts.items() if n > 0}
            if p.errors:
                out[name]["errors"] = len(p.errors)
                out[name]["stopped"] = stops[name]
        return out

    def stops(self) -> dict[str, str]:
        """vendor → each failed stream and why: `nps: POST … answered HTTP 200 with …`."""
        return {
            name: "; ".join(f"{s}: {why.removeprefix(f'{name}: ')}" for s, why in p.errors.items())
            for name, p in self.vendors.items()
            if p.errors
        }

    def nothing(self, name: str) -> str:
        """`no new responses or unsubscribes`: the streams read, when none brought a record."""
        done = self.vendors.get(name)
        streams = [s for s in STREAMS if done and s in done.read]
        listed = (
            ", ".join(streams[:-1]) + " or " + streams[-1] if len(streams) > 1 else "".join(streams)
        )
        return f"no new {listed or 'records'}"

    def trouble(self) -> bool:
        """Exit 1: a stream failed, or records were skipped."""
        return any(p.errors or p.counts["invalid"] for p in self.vendors.values())


def pull(
    cfg: Config,
    store: Store,
    clock: Clock,
    *,
    vendors: Sequence[str] | None = None,
    since: date | None = None,
    stop: Event | None = None,
    on_page: Callable[[str, str, int], None] | None = None,
) -> PullReport:
    """Pull every stream of every (or the named) vendor; exit 1 if any stream failed."""
    if since is not None and since > clock.now().date():
        # SignalVine's cursor is where a read started when it read nothing: it would stay
        # in the future, and every later pull be refused as ahead of the clock
        raise SyncdError(
            f"--since {since.isoformat()} is after today ({clock.now().date().isoformat()}): "
            "nothing would be read, and a stream's cursor would be set past what is to come",
            hint="give a date in the past: `syncd pull --since YYYY-MM-DD`",
        )
    with open_connectors(cfg, clock, vendors) as connectors:
        report = PullReport("pull", run_id=store.start_run("pull", clock.now()))
        logmod.bind(run_id=report.run_id)
        try:
            for name, connector in connectors.items():
                streams = connector.config.streams
                if not streams:
                    continue  # a vendor we only send to, or whose streams are switched off
                out = report.vendors[name] = Pulled()
                for stream in streams:
                    if stop is not None and stop.is_set():
                        break
                    logmod.bind(vendor=name)
                    try:
                        fresh, same, invalid = _pull_stream(
                            store, name, stream, connector.pull, clock, since, on_page
                        )
                    except (RetriableError, FatalError) as exc:
                        out.errors[stream] = str(exc)
                        log.error("pull failed", stream=stream, error=str(exc))
                    except (SyncdError, sqlite3.Error):
                        raise  # the store, a stop request: every stream would meet it
                    except Exception as exc:
                        # a vendor's answer that syncd could not read (a bug in reading it):
                        # its page was not stored and the cursor stays, and the other streams
                        # and vendors are read; raised, it stopped the whole pull at every pull
                        out.errors[stream] = (
                            f"{name}: could not read its answer ({type(exc).__name__}: {exc}); "
                            "the stream stays where it was (a bug in syncd: report it, with the "
                            "log's traceback)"
                        )
                        log.exception("pull failed", stream=stream, error=out.errors[stream])
                    else:
                        out.read.append(stream)
                        out.counts[stream] += fresh
                        if same:
                            out.counts["unchanged"] += same
                        out.counts["invalid"] += invalid
                    finally:
                        logmod.unbind("vendor")
            finish(store, clock, report, stop, trouble=report.trouble())
        except BaseException as exc:
            ended(store, clock, report, exc)
            raise
        finally:
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
) -> tuple[int, int, int]:
    """Pull one stream from its cursor: (records new or changed, records re-read as they were
    stored, records skipped as invalid)."""
    cursor = (
        since.isoformat()
        if since
        else store.scalar(
            "SELECT cursor FROM cursors WHERE vendor = ? AND stream = ?", (vendor, stream)
        )
    )
    if not since:
        _not_ahead(vendor, stream, cursor, clock.now())
    fresh = same = invalid = 0
    for page in fetch(stream, cursor, clock.now()):
        now = iso(clock.now())
        crashpoint("page_fetched")
        with store.write():
            saver = pulled.SAVERS[stream]
            for record in page.records:
                try:
                    row = clean(stream, record)
                    try:
                        stored = saver(store.db, vendor, row, now)
                    except pulled.Refused as exc:
                        raise Invalid(str(exc), row.get("response_id")) from None
                    if stored:
                        fresh += 1
                    else:
                        same += 1
                except Invalid as exc:
                    invalid += 1
                    log.warning(
                        "pulled record skipped", stream=stream, record=exc.ident, reason=str(exc)
                    )
            pulled.save_cursor(store.db, vendor, stream, page.cursor, now)
        log.info("pulled", stream=stream, records=len(page.records), cursor=page.cursor)
        if on_page:
            on_page(vendor, stream, len(page.records))
    return fresh, same, invalid


def _not_ahead(vendor: str, stream: str, cursor: str | None, now: datetime) -> None:
    """Refuse a cursor that is a time further ahead of `now` than `AHEAD`.

    A connector whose cursor is the end of what it read, cut at this machine's `now`
    (Hello Customer's windows), moves it into the future while the clock runs ahead; once
    the clock is put right, whatever the vendor timestamps before that future is behind
    the cursor and would never be read, each pull saying ok. Which pull went wrong, and
    so where to read from again, only the operator can tell. A cursor that is no time (a
    connector's own format) is not judged here."""
    at = parse_iso(cursor)
    if at is not None and at - now > AHEAD:
        raise FatalError(
            f"the {stream} cursor {cursor} is {_span(at - now)} ahead of this "
            f"machine's clock ({iso(now)}): the clock is wrong now, or was ahead when an earlier "
            "pull set the cursor, and what the vendor recorded between then and the cursor "
            "would never be read",
            hint="check the clock (`timedatectl`), then read again from a day before it went "
            f"wrong: `syncd pull --vendor {vendor} --since YYYY-MM-DD` (records already "
            "stored are kept once)",
            vendor=vendor,
        )


def _span(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


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


def _when(value: Any) -> str | None:
    """A vendor's time as the store writes its own (UTC, `YYYY-MM-DDTHH:MM:SS+00:00`), so
    that text order is time order when the views compare it with a survey's `sent_at`
    (`Z`, milliseconds, a space, another offset all sorted wrongly against it). A time
    without an offset is taken to be UTC; one that does not read as ISO 8601 is kept as
    it came (its raw record has it too), and so is one UTC cannot hold (year 1 at +01:00,
    9999-12-31 at -01:00: converting it raised, and the whole pull stopped)."""
    text = _text(value)
    when = parse_iso(text.strip()) if text else None
    try:
        return text if when is None else iso(when.astimezone(UTC))
    except OverflowError:
        return text


# the integers an SQLite column holds: a larger one (a JSON number up to 2**64 reads as an
# int) raised as it was stored, and the whole pull stopped
INTEGERS = range(-(2**63), 2**63)


def _number(value: Any) -> int | float | None:
    number = value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = int(text)
        except ValueError:
            with contextlib.suppress(ValueError):
                number = float(text)
    if isinstance(number, float) and math.isnan(number):
        return None  # the text "NaN" (.NET's for 0/0): no number, as SQLite would store it
    if isinstance(number, float) and math.isinf(number):
        raise TypeError("is not a finite number")  # the text "inf", "-Infinity"
    if number is None or isinstance(number, float):
        return number
    if isinstance(number, int) and not isinstance(number, bool):
        return _stored(number)
    raise TypeError("is not a number")


def _stored(number: int) -> int:
    if number not in INTEGERS:
        raise TypeError("is too large a number to store")
    return number


def _whole(value: Any) -> int | None:
    number = _number(value)
    if number is None or isinstance(number, int):
        return number
    if number.is_integer():
        return _stored(int(number))  # 1e308 is a whole number too
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
        "surveyed_at?": _when,
        "answered_at?": _when,
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
        "at?": _when,
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
        blank = value is None or (isinstance(value, str) and not value.strip())
        if blank and not name.endswith("?"):  # an id "" would merge every such record
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
            first: dict[str, int] = {}
            for i, a in enumerate(out["answers"]):  # keyed by id: the second would replace it
                if (j := first.setdefault(a["answer_id"], i)) != i:
                    raise Invalid(
                        f"answers[{i}].answer_id {a['answer_id']!r} is answers[{j}]'s", None
                    )
    except Invalid as exc:
        raise Invalid(str(exc), ident) from None
    return out
