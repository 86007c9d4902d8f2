"""One HTTP client per vendor: timeouts, retries with backoff, pacing, a circuit breaker.

This is the one place where HTTP outcomes become errors:

- 2xx                                  → the response
- 429, 5xx, connection never made      → retried with backoff, then `RetriableError`
- read timeout, connection dropped     → retried if the call is idempotent, else
  after the request went out             `OutcomeUnknownError` at once (a trigger must
                                         never be sent twice on our own)
- 401, 403                             → `AuthError`
- any other 4xx                        → `FatalError` with the vendor's text

Connectors describe *what* to send; everything here is *how*.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import structlog

from syncd.clock import SYSTEM, Clock
from syncd.config import DeliveryConfig
from syncd.errors import (
    AuthError,
    FatalError,
    OutcomeUnknownError,
    RetriableError,
    VendorDownError,
)

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
    """The process-wide Pacer for (vendor, key) — key is usually the API token."""
    with _pacers_lock:
        pacer = _pacers.get((vendor, key))
        if pacer is None or pacer.clock is not clock:
            pacer = _pacers[(vendor, key)] = Pacer(interval, clock)
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
    text = text or resp.reason or ""
    return f"HTTP {resp.status_code}: {text[:limit]}"


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
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self.policy = policy
        self.clock = clock
        self.pacer = pacer
        self.rng = rng or random.Random()
        self.breaker = Breaker(vendor, policy.breaker_threshold)
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        self.requests_sent = 0

    def close(self) -> None:
        self.session.close()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff; a vendor's Retry-After wins, up to the cap."""
        if retry_after is not None:
            return min(retry_after, self.policy.retry_after_cap)
        ceiling = min(self.policy.backoff_cap, self.policy.backoff_base * 2**attempt)
        return self.rng.uniform(ceiling / 2, ceiling)

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        retries: int | None = None,
        ok: Callable[[requests.Response], bool] | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with retries; return a 2xx response (or one `ok` accepts) or raise.

        `path` is appended to the base URL unless it is already absolute (a Location).
        """
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        kwargs.setdefault("timeout", (self.policy.connect_timeout, self.policy.read_timeout))
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
                return self._once(method, url, idempotent, ok, kwargs)
            except RetriableError as exc:
                self.breaker.failure(exc.reason)
                if exc.retry_after is not None and self.pacer is not None:
                    self.pacer.push_back(min(exc.retry_after, self.policy.retry_after_cap))
                last = exc
        assert last is not None
        raise last

    def _once(
        self,
        method: str,
        url: str,
        idempotent: bool,
        ok: Callable[[requests.Response], bool] | None,
        kwargs: Mapping[str, Any],
    ) -> requests.Response:
        if self.pacer is not None:
            self.pacer.wait()
        started = self.clock.monotonic()
        self.requests_sent += 1
        try:
            resp = self.session.request(method, url, **kwargs)
        except requests.exceptions.ConnectTimeout as exc:
            raise RetriableError(f"connect timeout: {_short(exc)}", vendor=self.vendor) from None
        except requests.exceptions.ReadTimeout as exc:
            return self._unsent_or_unknown(idempotent, f"read timeout: {_short(exc)}")
        except requests.exceptions.ConnectionError as exc:
            if _never_connected(exc):
                raise RetriableError(f"cannot connect: {_short(exc)}", vendor=self.vendor) from None
            return self._unsent_or_unknown(idempotent, f"connection dropped: {_short(exc)}")
        except requests.exceptions.RequestException as exc:
            raise FatalError(f"request failed: {_short(exc)}", vendor=self.vendor) from None
        log.debug(
            "http",
            vendor=self.vendor,
            method=method,
            path=_path_only(url),
            status=resp.status_code,
            ms=round((self.clock.monotonic() - started) * 1000),
        )
        if (ok is not None and ok(resp)) or 200 <= resp.status_code < 300:
            self.breaker.success()
            return resp
        return self.raise_for(resp)

    def _unsent_or_unknown(self, idempotent: bool, reason: str) -> requests.Response:
        if idempotent:
            raise RetriableError(reason, vendor=self.vendor)
        raise OutcomeUnknownError(reason, vendor=self.vendor)

    def raise_for(self, resp: requests.Response) -> requests.Response:
        """Turn a non-2xx response into the right error (the single mapping point)."""
        status = resp.status_code
        text = error_text(resp)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(resp.headers.get("Retry-After"), self.clock)
            raise RetriableError(text, vendor=self.vendor, status=status, retry_after=retry_after)
        if status in (401, 403):
            raise AuthError(
                text, vendor=self.vendor, status=status, hint="check the vendor's credentials"
            )
        raise FatalError(text, vendor=self.vendor, status=status)


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request cannot have reached the vendor (refused, DNS, no route)."""
    text = repr(exc)
    return any(
        marker in text
        for marker in ("NewConnectionError", "Connection refused", "NameResolutionError")
    )


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"


def _path_only(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path
