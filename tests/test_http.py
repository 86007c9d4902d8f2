"""http.py: backoff, Retry-After, pacing and the breaker, on a fake clock."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import ClassVar

import pytest
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.clock import FakeClock
from syncd.config import DeliveryConfig
from syncd.errors import AuthError, FatalError, OutcomeUnknownError, RetriableError, VendorDownError
from syncd.http import HttpClient, Pacer, parse_retry_after
from syncd.sandbox.base import Server, Simulator, json_response


class Echo(Simulator):
    name = "echo"
    rules: ClassVar[list[Rule]] = [
        Rule("/ok", endpoint="ok"),
        Rule("/status/<int:code>", endpoint="status"),
    ]

    def ok(self, request: Request) -> Response:
        return json_response({"ok": True})

    def status(self, request: Request, code: int) -> Response:
        return json_response({"message": f"status {code}"}, code)


@pytest.fixture
def echo() -> Iterator[tuple[Echo, str]]:
    app = Echo()
    with Server(app) as server:
        yield app, server.url


def client(url: str, clock: FakeClock, **policy: float) -> HttpClient:
    kw = {"retries": 3, "backoff_base": 1.0, "backoff_cap": 8.0, "read_timeout": 0.5, **policy}
    return HttpClient("echo", url, DeliveryConfig(**kw), clock=clock, rng=random.Random(1))  # type: ignore[arg-type]


def test_5xx_and_429_are_retried_with_growing_jittered_backoff(echo: tuple[Echo, str]) -> None:
    app, url = echo
    clock = FakeClock()
    app.faults.add("status", status=503, count=2)
    app.faults.add("status", status=429, count=1)
    assert client(url, clock).request("GET", "/ok").json() == {"ok": True}
    assert len(clock.slept) == 3
    assert 0.5 <= clock.slept[0] <= 1 and 1 <= clock.slept[1] <= 2 and 2 <= clock.slept[2] <= 4


def test_retry_after_is_honoured_up_to_the_cap(echo: tuple[Echo, str]) -> None:
    app, url = echo
    clock = FakeClock()
    app.faults.add("status", status=429, retry_after="7", count=1)
    app.faults.add("status", status=429, retry_after="9999", count=1)
    client(url, clock, retry_after_cap=60).request("GET", "/ok")
    assert clock.slept == [7.0, 60.0]


def test_retry_after_as_an_http_date() -> None:
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    when = format_datetime(clock.now() + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(when, clock) == 30
    assert parse_retry_after("soon", clock) is None


def test_giving_up_raises_retriable_and_the_breaker_opens(echo: tuple[Echo, str]) -> None:
    app, url = echo
    app.faults.add("down", status=503)
    c = client(url, FakeClock(), breaker_threshold=5)
    with pytest.raises(RetriableError, match="HTTP 503"):
        c.request("GET", "/ok")
    with pytest.raises(VendorDownError, match="5 consecutive failures"):
        c.request("GET", "/ok")


def test_4xx_are_fatal_and_401_is_auth(echo: tuple[Echo, str]) -> None:
    _app, url = echo
    c = client(url, FakeClock())
    with pytest.raises(AuthError):
        c.request("GET", "/status/401")
    with pytest.raises(FatalError, match="HTTP 422: status 422"):
        c.request("GET", "/status/422")


def test_a_read_timeout_is_unknown_for_non_idempotent_calls(echo: tuple[Echo, str]) -> None:
    app, url = echo
    clock = FakeClock()
    app.faults.add("delay", seconds=1.0, count=1)
    with pytest.raises(OutcomeUnknownError, match="read timeout"):
        client(url, clock).request("POST", "/ok", idempotent=False)
    assert app.count("/ok") == 1  # sent once, never again
    app.faults.add("drop_after", count=1)
    with pytest.raises(OutcomeUnknownError, match="connection dropped"):
        client(url, clock).request("POST", "/ok", idempotent=False)


def test_a_dropped_connection_is_retried_for_idempotent_calls(echo: tuple[Echo, str]) -> None:
    app, url = echo
    app.faults.add("drop", count=1)
    assert client(url, FakeClock()).request("GET", "/ok").status_code == 200


def test_connection_refused_is_retriable() -> None:
    with pytest.raises(RetriableError, match="cannot connect"):
        client("http://127.0.0.1:9", FakeClock(), retries=0).request("GET", "/ok")


def test_the_pacer_spaces_calls_for_everyone_sharing_it() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock)
    for _ in range(3):
        pacer.wait()
    assert clock.slept == [1.0, 1.0]
    pacer.push_back(5)
    pacer.wait()
    assert clock.slept[-1] == 5.0
