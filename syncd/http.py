"""One HTTP client per vendor: timeouts, retries with backoff, pacing, a circuit breaker.

This is the one place where HTTP outcomes become errors, and `OUTCOMES` below is the whole
table (the README's copy is generated from it). The question it answers for every answer
is: *can the vendor have acted?* An idempotent call (a read, a poll, an upsert: repeating
it is harmless) is retried whenever that is sensible. A trigger (`idempotent=False`: a
survey invitation, a campaign launch) is retried only where the vendor cannot have acted;
everywhere else its outcome is unknown and it is never re-sent on our own, because a
duplicate survey is worse than a late one.

Redirects are never followed: a 3xx would re-send credentials (a token in the body, a
password, a signed header) to wherever it points. An absolute URL (a `Location` a vendor
hands back to poll) is called only on the configured scheme, host and port. Every answer
is read under a size cap and every request under an overall deadline, so a vendor that
drips or floods its answer cannot hold a run or its memory; `json()` of an answer is
parsed by orjson, whose depth limit turns hostile nesting into an unreadable answer, and
`read_json` is how a connector reads an answer's JSON object or array: any other answer
is an error that says what came, retriable for an idempotent call, unknown for a trigger.
`HttpClient.read` is a read whose JSON is checked inside the attempt, so that half a
document (a proxy that framed what it had as a whole answer) is retried like an answer cut
mid-body, within the run; a trigger's answer is never read that way.

Connectors describe *what* to send and what acknowledges it; everything here is *how*.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import orjson
import requests
import structlog
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from syncd import liveness
from syncd.clock import SYSTEM, Clock
from syncd.errors import (
    AuthError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    RetriableError,
    VendorDownError,
)
from syncd.log import scrub
from syncd.settings import DeliveryConfig

log = structlog.get_logger("syncd.http")

USER_AGENT = "syncd/0.1 (+https://github.com/syncd)"


class Pacer:
    """At most one call per `interval` seconds, shared by every caller holding the same key.

    Hello Customer allows one call per second per token, across push and pull: both get the
    same Pacer from `pacer_for`, so the limit is kept by construction, not found by 429s.
    """

    def __init__(self, interval: float, clock: Clock) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        with self._lock:
            now = self.clock.monotonic()
            if now < self._next:
                self.clock.sleep(self._next - now)
                now = self.clock.monotonic()
            self._next = now + self.interval

    def push_back(self, seconds: float) -> None:
        """The vendor said to wait (Retry-After): nobody sharing the key calls before then."""
        with self._lock:
            self._next = max(self._next, self.clock.monotonic() + seconds)


_pacers: dict[tuple[str, str], Pacer] = {}
_pacers_lock = threading.Lock()


def pacer_for(vendor: str, key: str, interval: float, clock: Clock) -> Pacer:
    """The process-wide Pacer for (vendor, key) — key is usually the API token.

    The interval is the caller's: a reloaded config's `min_interval` is kept from the next
    call on (the service's connectors are made again, its pacers were not), and the wait a
    Retry-After asked for still holds."""
    with _pacers_lock:
        pacer = _pacers.get((vendor, key))
        if pacer is None or pacer.clock is not clock:
            pacer = _pacers[(vendor, key)] = Pacer(interval, clock)
        pacer.interval = interval
        return pacer


class Breaker:
    """After `threshold` consecutive failures, refuse every further call this run."""

    def __init__(self, vendor: str, threshold: int) -> None:
        self.vendor = vendor
        self.threshold = threshold
        self.failures = 0
        self.reason = ""

    @property
    def open(self) -> bool:
        return self.failures >= self.threshold

    def check(self) -> None:
        if self.open:
            raise VendorDownError(
                f"stopped calling after {self.failures} consecutive failures ({self.reason})",
                vendor=self.vendor,
                hint="its deliveries stay pending for the next run",
            )

    def success(self) -> None:
        self.failures = 0

    def failure(self, reason: str) -> None:
        self.failures += 1
        self.reason = reason


def parse_retry_after(value: str | None, clock: Clock) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max((when - clock.now()).total_seconds(), 0.0)


def error_text(resp: requests.Response, limit: int = 300) -> str:
    """The vendor's own words for a failed response, shortened for a log line or a reason."""
    text = resp.text.strip().replace("\n", " ")
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error_text", "errorMessage", "message", "error", "title", "detail"):
            if isinstance(body.get(key), str) and body[key]:
                text = body[key]
                break
    text = scrub(text or resp.reason or "")  # before cutting: half a secret is still one
    return f"HTTP {resp.status_code}: {text[:limit]}"


# What each answer means, by call: (idempotent call, trigger call). Actions:
#   retry     back off and try again (the vendor said to wait, or cannot have acted);
#             after the last retry a RetriableError: the contacts stay pending
#   unknown   OutcomeUnknownError: the vendor may have acted; a trigger becomes `unknown`
#   auth      AuthError: the credentials were refused before anything was done
#   endpoint  EndpointError: a configuration problem (wrong URL, path, port): the vendor is
#             stopped for the run and its contacts stay pending, their attempts unspent
#   refused   FatalError with the vendor's words: the row or batch was refused
#   answer    the response, for the connector to check against what its vendor documents
# A 413 (Payload Too Large) is decided here for every vendor and never handed to a
# connector's `ok` (`UNREAD`): whoever answered it (the vendor or a proxy in front of it) refused the
# body unread, so nothing was acted on and the delivery loop may split the batch and re-send
# its halves; a batch of one fails, its body too large. A 415 (Unsupported Media Type) is
# the body's kind refused unread, not a contact in it (`UNREAD` too): as wrong a
# configuration as a wrong URL (a proxy rewriting Content-Type), so no batch is split and
# failed for it, and nothing was acted on (a trigger's contacts stay pending).
UNREAD = (413, 415)  # the body refused unread: never handed to a connector's `ok`
OUTCOMES: dict[str, tuple[str, str]] = {
    "connection refused, DNS or TLS failure, connect timeout": ("retry", "retry"),
    "429": ("retry", "retry"),
    "503 with Retry-After": ("retry", "retry"),
    "500, 502, 504, other 5xx, 503 without Retry-After": ("retry", "unknown"),
    "read timeout, connection dropped after the request was written": ("retry", "unknown"),
    "answer cut short, bad chunked or gzip encoding": ("retry", "unknown"),
    "answer over the size cap, or past the request deadline": ("retry", "unknown"),
    "2xx to a read that is not the JSON it asks for (half a document, empty, HTML)": (
        "retry",
        "unknown",
    ),
    "401, 403": ("auth", "auth"),
    "413": ("refused", "refused"),
    "415": ("endpoint", "endpoint"),
    "3xx (never followed), 404, 405": ("endpoint", "endpoint"),
    "a request that cannot be written (a header outside latin-1, a line break in one)": (
        "endpoint",
        "endpoint",
    ),
    "other 4xx": ("refused", "refused"),
    "2xx": ("answer", "answer"),
}
MAX_ANSWER = 32 * 1024 * 1024  # bytes of one answer, decoded; no vendor documents more
# after a stop request (SIGTERM), how long a trigger's request in flight may still take to
# be answered: cut, its outcome would be unknown (well inside the unit's TimeoutStopSec)
STOP_GRACE = 30.0
# requests sent since the process started, by (vendor, outcome): "answer" for an answer
# handed to the connector, else its OUTCOMES action; `syncd.metrics` reads it at each scrape
REQUESTS: Counter[tuple[str, str]] = Counter()
_requests_lock = threading.Lock()


def _count(vendor: str, outcome: str) -> None:
    with _requests_lock:
        REQUESTS[(vendor, outcome)] += 1


def requests_sent() -> dict[tuple[str, str], int]:
    """A copy of `REQUESTS`."""
    with _requests_lock:
        return dict(REQUESTS)


class _Outcome(Exception):
    """Internal: which row of OUTCOMES an exchange fell in, and its text."""

    def __init__(
        self, case: str, text: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(text)
        self.case, self.text, self.status, self.retry_after = case, text, status, retry_after


def loads(data: str | bytes) -> Any:
    """A vendor's JSON, by orjson: nesting past 254 levels is a ValueError like any
    unreadable text, never a RecursionError. Use it for every piece of vendor JSON.

    orjson reads up to 1024 levels, but Python's json, which stores and logs vendor values
    (a response's raw record, an echoed contact), raises RecursionError from about 1000: a
    pulled answer 1000 levels deep stopped the whole pull, at every pull. No vendor's
    documents go past ten levels; orjson's encoder stops at 254, in C (a 4 MB answer in
    some 20 ms), so what it cannot write back is refused."""
    # a byte-order mark first (RFC 8259 §8.1: a parser "MAY ignore" it; Python's json reads
    # bytes with one) is no part of the document: orjson refused it, so an answer from a
    # server that writes one was never read, and an acknowledgement was an unknown outcome
    data = (
        data.removeprefix(b"\xef\xbb\xbf")
        if isinstance(data, bytes)
        else data.removeprefix("\ufeff")
    )
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    try:
        orjson.dumps(value)  # what orjson read is text, numbers and str keys: only depth fails
    except orjson.JSONEncodeError:
        raise ValueError("not JSON: nested deeper than 254 levels") from None
    return value


_JSON = TypeVar("_JSON", dict[str, Any], list[Any])
_T = TypeVar("_T")
# what a top-level JSON value is called in a message, by its Python type
_CALLED = {
    dict: "a JSON object",
    list: "a JSON array",
    str: "a JSON string",
    int: "a JSON number",
    float: "a JSON number",
    bool: "a JSON true or false",
    type(None): "a JSON null",
}


def read_json(
    resp: requests.Response,
    kind: type[_JSON],
    *,
    vendor: str,
    idempotent: bool = True,
    empty_ok: bool = False,
) -> _JSON:
    """The answer's JSON, parsed by `loads` (depth-limited; the client capped its size), when
    its top level is a `kind`: `dict` (an object) or `list` (an array). Any other answer
    acknowledges nothing: for an idempotent call that is a RetriableError (asking again is
    harmless), for a trigger (`idempotent=False`) an OutcomeUnknownError (the vendor may have
    acted). Its message names the vendor, the call, what came and what was expected, with
    the answer's start (scrubbed). `empty_ok`: an empty body reads as an empty `kind`.

    This checks the shape only; what the answer says is for the connector to check."""
    body = resp.content.strip()
    if not body and empty_ok:
        return kind()
    came = "an empty body"
    if body:
        try:
            data = loads(body)
        except ValueError as exc:
            why = str(exc).removeprefix("not JSON: ").partition(": line")[0]
            came = f"text that is not JSON ({why})"
        else:
            if isinstance(data, kind):
                return data
            came = _CALLED[type(data)]
    method = resp.request.method if resp.request is not None else "a call to"
    call = f"{method} {_path_only(resp.url)}"
    message = (
        f"{call} answered HTTP {resp.status_code} with {came} where {_CALLED[kind]} was expected"
    )
    if body:
        message += f": {snippet(resp)!r}"
    error = RetriableError if idempotent else OutcomeUnknownError
    hint = None if idempotent else "the vendor may have acted: check before `syncd retry --unknown`"
    raise error(message, vendor=vendor, status=resp.status_code, hint=hint)


class VendorResponse(requests.Response):
    """A response whose `json()` is `loads`."""

    def json(self, **_: Any) -> Any:
        return loads(self.content)


class _Watchdog:
    """Cuts the socket of a request that is past its deadline, or when a stop is requested
    (SIGTERM): a vendor dripping its answer a byte a second cannot outlive either. A
    trigger's request (not idempotent: cut after it was written, its outcome is unknown)
    is given `STOP_GRACE` seconds after the stop request to be answered first.

    urllib3 connections register themselves here when a request starts on them (see
    `_conn_class`); one daemon thread per client checks four times a second."""

    def __init__(self, stop: threading.Event | None) -> None:
        self.stop = stop
        self._lock = threading.Lock()
        self._current: tuple[float, Any] | None = None  # (deadline, connection)
        self._grace = 0.0  # the current request's STOP_GRACE (0: cut at once)
        self._stop_seen: float | None = None  # when the loop first saw the stop request
        self.cut = False
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    def arm(self, deadline: float, *, idempotent: bool = True) -> None:
        with self._lock:
            self._current = (deadline, None)
            self._grace = 0.0 if idempotent else STOP_GRACE
            self.cut = False
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="syncd-http-watchdog")
            self._thread.daemon = True
            self._thread.start()

    def attach(self, conn: Any) -> None:
        with self._lock:
            if self._current is not None:
                self._current = (self._current[0], conn)

    def disarm(self) -> None:
        with self._lock:
            self._current = None

    def close(self) -> None:
        self._closed.set()

    def _loop(self) -> None:
        while not self._closed.wait(0.25):
            with self._lock:
                if self._current is None:
                    continue
                deadline, conn = self._current
                now = time.monotonic()
                if self.stop is not None and self.stop.is_set():
                    self._stop_seen = self._stop_seen or now
                    deadline = min(deadline, self._stop_seen + self._grace)
                if now < deadline:
                    continue
                sock = getattr(conn, "watched_sock", None)
                if sock is None:
                    continue  # still connecting: the connect timeout bounds that
                self.cut = True
                self._current = None
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _conn_class(base: type[Any], watchdog: _Watchdog) -> type[Any]:
    """`base` (a urllib3 connection class) that tells `watchdog` when a request starts."""

    def request(self: Any, *args: Any, **kwargs: Any) -> Any:
        watchdog.attach(self)
        return base.request(self, *args, **kwargs)

    def connect(self: Any) -> None:
        base.connect(self)
        # http.client drops `sock` once a `Connection: close` answer's head is read, while
        # its body is still being read from the same socket: keep our own reference
        self.watched_sock = self.sock

    return type(base.__name__, (base,), {"request": request, "connect": connect})


class _Adapter(HTTPAdapter):
    """requests' adapter with watched connections."""

    def __init__(self, watchdog: _Watchdog) -> None:
        self.watchdog = watchdog
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = {}
        for scheme, pool in (("http", HTTPConnectionPool), ("https", HTTPSConnectionPool)):
            conn = _conn_class(pool.ConnectionCls, self.watchdog)
            pools[scheme] = type(pool.__name__, (pool,), {"ConnectionCls": conn})
        self.poolmanager.pool_classes_by_scheme = pools


def snippet(resp: requests.Response, limit: int = 120) -> str:
    """The start of an answer's text for a message, scrubbed before it is cut."""
    return scrub(resp.text)[:limit]


class Hints(NamedTuple):
    """One call's own hints, where they differ from its client's: what a 3xx, 404 or 405
    (`endpoint`) and a 401 or 403 (`auth`) tell the operator to check."""

    endpoint: str | None = None
    auth: str | None = None


class HttpClient:
    """A requests.Session bound to one vendor's base URL and delivery policy."""

    def __init__(
        self,
        vendor: str,
        base_url: str,
        policy: DeliveryConfig,
        *,
        clock: Clock = SYSTEM,
        pacer: Pacer | None = None,
        rng: random.Random | None = None,
        endpoint_hint: str = "check base_url (scheme://host[:port] only)",
        auth_hint: str = "check the vendor's credentials",
    ) -> None:
        self.vendor = vendor
        self.endpoint_hint = endpoint_hint  # what to check on a 3xx, 404 or 405
        self.auth_hint = auth_hint  # and on a 401 or 403
        self.base_url = base_url.rstrip("/")
        self._origin = _origin(self.base_url)
        self.policy = policy
        self.clock = clock
        self.pacer = pacer
        self.rng = rng or random.Random()
        self.breaker = Breaker(vendor, policy.breaker_threshold)
        self.watchdog = _Watchdog(getattr(clock, "stop", None))
        self.session = requests.Session()
        self.session.mount("http://", _Adapter(self.watchdog))
        self.session.mount("https://", _Adapter(self.watchdog))
        self.session.headers["User-Agent"] = USER_AGENT
        # called right before a request's first byte is written (after pacing and backoff),
        # and when an attempt ends in a way that proves the vendor did not act: the delivery
        # loop marks a batch `in_flight` only while a request carrying it may be out
        self.on_write: Callable[[], None] | None = None
        self.on_unsent: Callable[[str], None] | None = None  # given the answer's words

    def close(self) -> None:
        self.watchdog.close()
        self.session.close()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a vendor's Retry-After wins, up to the cap."""
        if retry_after is not None:
            return min(retry_after, self.policy.retry_after_cap)
        ceiling = min(self.policy.backoff_cap, self.policy.backoff_base * 2**attempt)
        return self.rng.uniform(ceiling / 2, ceiling)

    def url(self, path: str) -> str:
        """`path` under the base URL; an absolute URL only on the configured origin."""
        if not path.startswith(("http://", "https://")):
            return self.base_url + path
        if _origin(path) != self._origin:
            raise EndpointError(
                f"refusing to call {_origin(path)} (not the configured {self._origin}): "
                "syncd sends credentials only to base_url",
                vendor=self.vendor,
                hint="if the vendor really moved, change base_url",
            )
        return path

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        retries: int | None = None,
        ok: Callable[[requests.Response], bool] | None = None,
        carries: bool = True,
        hints: Hints | None = None,
        busy: Callable[[requests.Response], bool] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; return a 2xx response (or one `ok` accepts) or raise.

        `path` is appended to the base URL unless it is already absolute (a Location).
        A read whose answer is JSON goes through `read`, which checks it within the attempt.
        `carries=False`: the call carries nothing of the batch being delivered (a token
        renewed halfway through it), so the write hook does not mark the batch in flight.
        `hints`: what this call's 3xx/404/405 or 401/403 tells to check, where it differs
        from the client's (a login's 404 is base_url, not an option in another call's URL).
        `busy`: an answer it accepts (a 2xx, or one `ok` lets through) is the vendor's own
        "too many requests" in its body (Altcraft's HTTP 200 with `error` 429): it is the
        429 row of OUTCOMES, retried with backoff under the breaker, a trigger's too (the
        vendor refused it: it did not act).
        """

        def answer(resp: requests.Response) -> requests.Response:
            if busy is not None and busy(resp):
                wait = parse_retry_after(resp.headers.get("Retry-After"), self.clock)
                raise _Outcome("429", error_text(resp), resp.status_code, wait)
            return resp

        return self._attempts(method, path, idempotent, retries, ok, carries, kwargs, answer, hints)

    def read(
        self,
        method: str,
        path: str,
        kind: type[_JSON],
        *,
        empty_ok: bool = False,
        status: int | None = None,
        hints: Hints | None = None,
        carries: bool = True,
        **kwargs: Any,
    ) -> _JSON:
        """An idempotent read's answer as JSON, a `kind` (`read_json`'s rules, `empty_ok`
        too). An answer that is not (half a document, an empty body, a gateway's HTML page)
        is retried like an answer cut short: under the same retries, backoff and breaker,
        and raised only after the last. So is a 2xx other than `status`, when given (the
        one status the vendor's own client reads this call's answer from). A trigger is
        never sent here: its answer, cut, is an unknown outcome (`request(idempotent=False)`,
        then `read_json`). `carries` as for `request`."""

        def shaped(resp: requests.Response) -> _JSON:
            if status is not None and resp.status_code != status:
                raise RetriableError(
                    f"{method} {_path_only(resp.url)} answered HTTP {resp.status_code} where "
                    f"HTTP {status} was expected: {snippet(resp)!r}",
                    vendor=self.vendor,
                    status=resp.status_code,
                )
            return read_json(resp, kind, vendor=self.vendor, empty_ok=empty_ok)

        return self._attempts(method, path, True, None, None, carries, kwargs, shaped, hints)

    def _attempts(
        self,
        method: str,
        path: str,
        idempotent: bool,
        retries: int | None,
        ok: Callable[[requests.Response], bool] | None,
        carries: bool,
        kwargs: dict[str, Any],
        answer: Callable[[requests.Response], _T],
        hints: Hints | None = None,
    ) -> _T:
        url = self.url(path)
        kwargs.setdefault("timeout", (self.policy.connect_timeout, self.policy.read_timeout))
        kwargs["allow_redirects"] = False
        attempts = (self.policy.retries if retries is None else retries) + 1
        last: RetriableError | None = None
        for attempt in range(attempts):
            self.breaker.check()
            if attempt:
                assert last is not None
                delay = self.backoff(attempt - 1, last.retry_after)
                log.info(
                    "retrying",
                    vendor=self.vendor,
                    path=_path_only(url),
                    attempt=attempt + 1,
                    of=attempts,
                    delay=round(delay, 2),
                    error=last.reason,
                )
                self.clock.sleep(delay)
            try:
                return self._once(method, url, idempotent, ok, kwargs, carries, answer, hints)
            except RetriableError as exc:
                self.breaker.failure(exc.reason)
                if exc.retry_after is not None and self.pacer is not None:
                    self.pacer.push_back(min(exc.retry_after, self.policy.retry_after_cap))
                last = exc
            except OutcomeUnknownError as exc:
                self.breaker.failure(exc.reason)
                raise
        assert last is not None
        raise last

    def _once(
        self,
        method: str,
        url: str,
        idempotent: bool,
        ok: Callable[[requests.Response], bool] | None,
        kwargs: Mapping[str, Any],
        carries: bool,
        answer: Callable[[requests.Response], _T],
        hints: Hints | None = None,
    ) -> _T:
        if self.pacer is not None:
            self.pacer.wait()
        if self.on_write is not None and carries:
            self.on_write()
        started = self.clock.monotonic()
        status = None
        try:
            resp = self._exchange(method, url, kwargs, idempotent)
            status = resp.status_code
            if (ok is not None and status not in UNREAD and ok(resp)) or 200 <= status < 300:
                try:
                    read = answer(resp)
                except RetriableError as exc:  # a read's JSON, not there whole
                    raise _Outcome(_UNREAD, exc.reason, status) from None
                self.breaker.success()
                _count(self.vendor, "answer")
                return read
            self._raise_for(resp)
            raise AssertionError("unreachable")  # pragma: no cover
        except _Outcome as outcome:
            action = OUTCOMES[outcome.case][0 if idempotent else 1]
            _count(self.vendor, action)
            if action in ("retry", "auth") and self.on_unsent is not None and not idempotent:
                # a trigger is retried only where the vendor did not act, and 401/403 say
                # it did not: a kill while the connector renews its token loses nothing
                self.on_unsent(outcome.text)
            raise self._error(action, outcome, hints) from None
        finally:
            log.debug(
                "http",
                vendor=self.vendor,
                method=method,
                path=_path_only(url),
                status=status,
                ms=round((self.clock.monotonic() - started) * 1000),
            )

    def _exchange(
        self, method: str, url: str, kwargs: Mapping[str, Any], idempotent: bool = True
    ) -> requests.Response:
        """One request and its whole answer, read under the size cap and the deadline: to
        the daemon's watchdog (`syncd.liveness`) a wait of the deadline and the connect
        timeout (which bounds connecting, where the deadline cannot cut), and its outcome,
        whatever it is, progress."""
        with liveness.waiting(self.policy.request_deadline + self.policy.connect_timeout):
            return self._exchange_within(method, url, kwargs, idempotent)

    def _exchange_within(
        self, method: str, url: str, kwargs: Mapping[str, Any], idempotent: bool
    ) -> requests.Response:
        after = "read timeout, connection dropped after the request was written"
        cut = "answer cut short, bad chunked or gzip encoding"
        late = "answer over the size cap, or past the request deadline"
        self.watchdog.arm(time.monotonic() + self.policy.request_deadline, idempotent=idempotent)
        try:
            try:
                resp = self.session.request(method, url, stream=True, **kwargs)
            except requests.exceptions.ConnectTimeout as exc:
                raise _Outcome(_BEFORE, f"connect timeout: {_short(exc)}") from None
            except requests.exceptions.SSLError as exc:
                raise _Outcome(_BEFORE, f"TLS failure: {_short(exc)}") from None
            except requests.exceptions.ReadTimeout as exc:
                raise _Outcome(after, f"read timeout: {_short(exc)}") from None
            except requests.exceptions.ConnectionError as exc:
                if self.watchdog.cut:
                    raise _Outcome(late, self._late()) from None
                if _never_connected(exc):
                    raise _Outcome(_BEFORE, f"cannot connect: {_short(exc)}") from None
                raise _Outcome(after, f"connection dropped: {_short(exc)}") from None
            except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
                # raised while the request is made, before a byte is sent: the vendor cannot
                # have acted. Its words quote the header, a credential: not repeated
                raise _Outcome(
                    _UNWRITTEN, f"{method} {_path_only(url)}: {_UNWRITTEN_TEXT}"
                ) from None
            except requests.exceptions.RequestException as exc:
                raise _Outcome(after, f"request failed: {_short(exc)}") from None
            try:
                resp._content = self._read(resp)
            except (requests.exceptions.RequestException, OSError, ValueError) as exc:
                if self.watchdog.cut:
                    raise _Outcome(late, self._late(), resp.status_code) from None
                raise _Outcome(
                    cut, f"HTTP {resp.status_code} answer unreadable: {_short(exc)}"
                ) from None
            finally:
                resp.close()
        finally:
            self.watchdog.disarm()
        resp.__class__ = VendorResponse
        return resp

    def _read(self, resp: requests.Response) -> bytes:
        chunks, size = [], 0
        for chunk in resp.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_ANSWER:
                raise _Outcome(
                    "answer over the size cap, or past the request deadline",
                    f"HTTP {resp.status_code} answer larger than {MAX_ANSWER // 2**20} MiB",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _late(self) -> str:
        if self.watchdog.stop is not None and self.watchdog.stop.is_set():
            return "request cut short: syncd was asked to stop"
        return f"no whole answer within request_deadline = {self.policy.request_deadline:g} s"

    def _error(self, action: str, outcome: _Outcome, hints: Hints | None = None) -> Exception:
        text, status = outcome.text, outcome.status
        hints = hints or Hints()
        if action == "retry":
            return RetriableError(
                text, vendor=self.vendor, status=status, retry_after=outcome.retry_after
            )
        if action == "unknown":
            return OutcomeUnknownError(text, vendor=self.vendor, status=status)
        if action == "auth":
            hint = hints.auth or self.auth_hint
            return AuthError(text, vendor=self.vendor, status=status, hint=hint)
        if action == "endpoint":
            hint = _ENDPOINT_HINTS.get(outcome.case) or hints.endpoint or self.endpoint_hint
            return EndpointError(text, vendor=self.vendor, status=status, hint=hint)
        return FatalError(text, vendor=self.vendor, status=status)

    def _raise_for(self, resp: requests.Response) -> None:
        """Place a non-2xx answer in OUTCOMES (the single mapping point)."""
        status = resp.status_code
        text = error_text(resp)
        if status == 429 or (status == 503 and resp.headers.get("Retry-After")):
            case = "429" if status == 429 else "503 with Retry-After"
            wait = parse_retry_after(resp.headers.get("Retry-After"), self.clock)
            raise _Outcome(case, text, status, wait)
        if status >= 500:
            raise _Outcome("500, 502, 504, other 5xx, 503 without Retry-After", text, status)
        if status in (401, 403):
            raise _Outcome("401, 403", text, status)
        if 300 <= status < 400 or status in (404, 405):
            where = f"{resp.request.method} {_path_only(resp.url)}"
            moved = resp.headers.get("Location")
            text = f"{where} answered HTTP {status}" + (
                f", redirecting to {_origin(moved) if '://' in moved else moved} (not followed)"
                if moved
                else f": {text}"
            )
            raise _Outcome("3xx (never followed), 404, 405", text, status)
        if status == 413:
            raise _Outcome("413", f"{text} (the body refused unread)", status)
        if status == 415:
            where = f"{resp.request.method} {_path_only(resp.url)}"
            raise _Outcome("415", f"{where} answered HTTP 415 (media type refused): {text}", status)
        raise _Outcome("other 4xx", text, status)

    def raise_for(self, resp: requests.Response, *, idempotent: bool = True) -> None:
        """Raise the error OUTCOMES gives a non-2xx answer a connector received."""
        try:
            self._raise_for(resp)
        except _Outcome as outcome:
            raise self._error(OUTCOMES[outcome.case][0 if idempotent else 1], outcome) from None


_BEFORE = "connection refused, DNS or TLS failure, connect timeout"
_UNREAD = "2xx to a read that is not the JSON it asks for (half a document, empty, HTML)"
_UNWRITTEN = "a request that cannot be written (a header outside latin-1, a line break in one)"
_UNWRITTEN_TEXT = (
    "the request cannot be written: a header holds a character outside latin-1 or a line "
    "break; nothing was sent"
)
# the endpoint errors whose hint is their case's, whatever the call (`HttpClient._error`)
_ENDPOINT_HINTS = {
    "415": "syncd sends the media type the vendor documents (application/json, or its own): "
    "check that nothing between syncd and base_url rewrites Content-Type",
    _UNWRITTEN: "a credential or option sent in a header holds it (pasted with an invisible "
    "character?): retype it in the config",
}


def _origin(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request cannot have reached the vendor (refused, DNS, no route)."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "Connection refused", "NameResolutionError")
    )


def _short(exc: BaseException) -> str:
    text = scrub(str(exc))
    return text if len(text) < 200 else text[:200] + "…"


def _path_only(url: str) -> str:
    return urlsplit(url).path
