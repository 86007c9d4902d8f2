"""http.py: backoff, Retry-After, pacing and the breaker, on a fake clock."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import ClassVar

import pytest
import requests
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd import http
from syncd.clock import FakeClock, SystemClock
from syncd.config import DeliveryConfig
from syncd.errors import (
    AuthError,
    EndpointError,
    FatalError,
    OutcomeUnknownError,
    RetriableError,
    VendorDownError,
)
from syncd.http import HttpClient, Pacer, pacer_for, parse_retry_after, read_json
from syncd.log import add_secrets
from syncd.sandbox.base import Server, Simulator, json_response
from tests.hostile import HostileProxy


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


def test_a_reloaded_interval_is_kept_by_the_shared_pacer() -> None:
    """The service makes its connectors again on a reload: a new `min_interval` for the
    same token was ignored, the process-wide pacer keeping the first config's."""
    clock = FakeClock()
    token = "pacer-reload-token"
    pacer_for("hellocustomer", token, 1.0, clock).wait()
    pacer_for("hellocustomer", token, 3.0, clock).wait()
    assert clock.slept == [1.0]  # the wait set by the first call's interval
    same = pacer_for("hellocustomer", token, 3.0, clock)
    same.wait()
    assert clock.slept == [1.0, 3.0]


# --- the outcome table against a hostile peer --------------------------------------------
@pytest.fixture
def hostile(echo: tuple[Echo, str]) -> Iterator[tuple[Echo, HostileProxy]]:
    app, url = echo
    with HostileProxy(url) as proxy:
        yield app, proxy


def _raised(c: HttpClient, idempotent: bool) -> type[Exception] | None:
    try:
        c.request("POST", "/ok", idempotent=idempotent, json={"a": 1})
    except (RetriableError, OutcomeUnknownError, FatalError) as exc:
        return type(exc)
    return None


@pytest.mark.parametrize(
    ("answer", "upsert", "trigger"),
    [
        ("cut body", RetriableError, OutcomeUnknownError),
        ("chunked garbage", RetriableError, OutcomeUnknownError),
        ("gzip garbage", RetriableError, OutcomeUnknownError),
        ("HTML 500", RetriableError, OutcomeUnknownError),
        ("HTML 502", RetriableError, OutcomeUnknownError),
        ("HTML 504", RetriableError, OutcomeUnknownError),
        ("503 without Retry-After", RetriableError, OutcomeUnknownError),
        ("401", AuthError, AuthError),
        ("307 to another host", EndpointError, EndpointError),
        ("404", EndpointError, EndpointError),
    ],
)
def test_answers_after_the_vendor_acted_are_unknown_for_a_trigger_and_never_resent(
    hostile: tuple[Echo, HostileProxy],
    answer: str,
    upsert: type[Exception],
    trigger: type[Exception],
) -> None:
    app, proxy = hostile
    proxy.plan(answer, acted=True, count=99)
    assert _raised(client(proxy.url, FakeClock(), retries=2), idempotent=False) is trigger
    acted = app.count("/ok")
    assert acted == 1  # one request reached the vendor, and was never repeated
    assert _raised(client(proxy.url, FakeClock(), retries=2), idempotent=True) is upsert
    retried = upsert is RetriableError
    assert app.count("/ok") == acted + (3 if retried else 1)


@pytest.mark.parametrize("answer", ["cut body", "truncated JSON"])
def test_a_read_whose_answer_is_cut_is_asked_again_and_a_trigger_never(
    hostile: tuple[Echo, HostileProxy], answer: str
) -> None:
    """An answer cut mid-body, or whole as HTTP but holding half its JSON: a read is asked
    again, after the same backoff as a dropped connection, and its second answer read; a
    trigger, which the vendor may have acted on, is sent once and its outcome is unknown."""
    app, proxy = hostile
    clock = FakeClock()
    proxy.plan(answer, acted=True)
    assert client(proxy.url, clock).read("GET", "/ok", dict) == {"ok": True}
    assert app.count("/ok") == 2 and len(clock.slept) == 1
    proxy.plan(answer, acted=True, count=99)
    with pytest.raises(OutcomeUnknownError):
        resp = client(proxy.url, clock).request("POST", "/ok", idempotent=False, json={"a": 1})
        read_json(resp, dict, vendor="echo", idempotent=False)
    assert app.count("/ok") == 3  # sent once, never again


def test_a_read_never_answered_whole_fails_after_its_retries(
    hostile: tuple[Echo, HostileProxy],
) -> None:
    """Bounded: `retries` more asks, each a failure for the breaker, then the error saying
    what came."""
    app, proxy = hostile
    proxy.plan("truncated JSON", acted=True, count=99)
    c = client(proxy.url, FakeClock(), retries=2, breaker_threshold=3)
    with pytest.raises(RetriableError) as caught:
        c.read("GET", "/ok", dict)
    assert str(caught.value).startswith(
        "echo: GET /ok answered HTTP 200 with text that is not JSON (unexpected end of data) "
        "where a JSON object was expected"
    )
    assert app.count("/ok") == 3
    assert c.breaker.open


def test_a_trigger_is_retried_where_the_vendor_cannot_have_acted(
    hostile: tuple[Echo, HostileProxy],
) -> None:
    app, proxy = hostile
    proxy.plan("429", acted=False)
    clock = FakeClock()
    c = client(proxy.url, clock, retries=3)
    unsent: list[int] = []
    c.on_unsent = lambda _reason: unsent.append(1)
    assert _raised(c, idempotent=False) is None  # 429 retried, then sent
    assert app.count("/ok") == 1 and unsent == [1]
    proxy.plan("503 without Retry-After", acted=False)
    with pytest.raises(OutcomeUnknownError):  # 503 without Retry-After: it may have acted
        c.request("POST", "/ok", idempotent=False)


def test_a_redirect_is_never_followed_and_credentials_stay_home(
    hostile: tuple[Echo, HostileProxy],
) -> None:
    _app, proxy = hostile
    thief = Echo()
    with Server(thief) as other:
        proxy.plan("307 to another host", acted=False)
        c = client(proxy.url, FakeClock())
        c.session.headers["Authorization"] = "Bearer secret-token"
        with pytest.raises(EndpointError, match=r"POST /ok answered HTTP 307.*not followed"):
            c.request("POST", "/ok", json={"token": "secret-token"})
        with pytest.raises(EndpointError, match="refusing to call"):
            c.request("GET", other.url + "/ok")  # a Location on another host
        assert thief.count("/ok") == 0


@pytest.mark.parametrize("answer", ["slow drip", "header drip"])
def test_a_dripping_vendor_cannot_hold_a_request_past_its_deadline(
    hostile: tuple[Echo, HostileProxy], answer: str
) -> None:
    _app, proxy = hostile
    proxy.plan(answer, acted=True)
    c = client(proxy.url, FakeClock(), retries=0, read_timeout=5, request_deadline=1.0)
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError, match="request_deadline"):
        c.request("POST", "/ok", idempotent=False)
    assert time.monotonic() - started < 3


def test_a_stop_request_cuts_a_request_in_flight(
    hostile: tuple[Echo, HostileProxy], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At once for an idempotent call; a trigger's is given STOP_GRACE to be answered (cut,
    its outcome is unknown), here shortened to 1 s."""
    _app, proxy = hostile
    monkeypatch.setattr(http, "STOP_GRACE", 1.0)
    for idempotent, error, within in ((True, RetriableError, 2), (False, OutcomeUnknownError, 3)):
        proxy.plan("slow drip", acted=True)
        clock = SystemClock()
        c = HttpClient("echo", proxy.url, DeliveryConfig(retries=0, read_timeout=30), clock=clock)
        threading.Timer(0.5, clock.stop.set).start()
        started = time.monotonic()
        with pytest.raises(error, match="asked to stop"):
            c.request("POST", "/ok", idempotent=idempotent)
        took = time.monotonic() - started
        assert took < within
        if not idempotent:
            assert took > 1.4  # the grace was given


def test_a_huge_answer_is_refused_within_the_cap(hostile: tuple[Echo, HostileProxy]) -> None:
    _app, proxy = hostile
    proxy.plan("huge body", acted=True)
    with pytest.raises(OutcomeUnknownError, match="larger than 32 MiB"):
        client(proxy.url, FakeClock(), retries=0).request("POST", "/ok", idempotent=False)


def test_nested_json_is_an_unreadable_answer_not_a_recursion_error(
    hostile: tuple[Echo, HostileProxy],
) -> None:
    _app, proxy = hostile
    proxy.plan("nested JSON", acted=True)
    resp = client(proxy.url, FakeClock()).request("GET", "/ok")
    with pytest.raises(ValueError, match="not JSON"):
        resp.json()
    with pytest.raises(
        RetriableError, match=r"^echo: GET /ok .* not JSON \(depth limit exceeded\)"
    ):
        read_json(resp, dict, vendor="echo")


def test_the_write_hook_runs_after_pacing_right_before_the_request(
    echo: tuple[Echo, str],
) -> None:
    _app, url = echo
    clock = FakeClock()
    order: list[str] = []
    pacer = Pacer(1.0, clock)
    c = HttpClient("echo", url, DeliveryConfig(), clock=clock, pacer=pacer)
    pacer.wait()
    c.on_write = lambda: order.append(f"write after {len(clock.slept)} sleep(s)")
    c.request("GET", "/ok")
    assert order == ["write after 1 sleep(s)"]


def answered(body: bytes, status: int = 200, method: str = "GET") -> requests.Response:
    """A response as HttpClient hands it over, to a call with a secret in its query."""
    resp = requests.Response()
    resp._content, resp.status_code, resp.encoding = body, status, "utf-8"
    resp.url = "https://api.vendor.test/api/things?api_key=k-in-the-query"
    resp.request = requests.Request(method, resp.url).prepare()
    return resp


def test_read_json_gives_the_object_or_array_asked_for() -> None:
    assert read_json(answered(b'{"a": [1]}'), dict, vendor="v") == {"a": [1]}
    assert read_json(answered(b' [{"a": 1}, 2]\n'), list, vendor="v") == [{"a": 1}, 2]
    assert read_json(answered(b"[]"), list, vendor="v") == []
    assert read_json(answered(b" \n", status=204), dict, vendor="v", empty_ok=True) == {}
    assert read_json(answered(b""), list, vendor="v", empty_ok=True) == []


def test_a_byte_order_mark_before_the_json_is_read_past() -> None:
    """RFC 8259 §8.1: a parser "MAY ignore" a byte-order mark, and Python's json reads bytes
    with one. orjson refused it: every answer of a server that writes one was unreadable, a
    pull's stream failed at every pull and a trigger's acknowledgement was unknown."""
    bom = b"\xef\xbb\xbf"
    assert read_json(answered(bom + b'{"error": 0}'), dict, vendor="v", idempotent=False) == {
        "error": 0
    }
    assert read_json(answered(bom + b"[1]"), list, vendor="v") == [1]
    assert http.loads("\ufeff[2]") == [2]
    with pytest.raises(RetriableError, match="not JSON"):
        read_json(answered(bom), dict, vendor="v")


def test_json_deeper_than_syncd_can_write_back_is_unreadable() -> None:
    """orjson reads 1024 levels, but Python's json (storing a raw record, logging an echo)
    raises RecursionError from about 1000: the limit is 254, orjson's encoder's."""
    assert http.loads(b"[" * 254 + b"]" * 254)
    with pytest.raises(RetriableError, match=r"not JSON \(nested deeper than 254 levels\)"):
        read_json(answered(b"[" * 1000 + b"]" * 1000), list, vendor="v")


@pytest.mark.parametrize(
    ("body", "kind", "came"),
    [
        (b"[1, 2]", dict, "a JSON array"),
        (b'{"items": []}', list, "a JSON object"),
        (b'"queued"', dict, "a JSON string"),
        (b"5", list, "a JSON number"),
        (b"2.5", dict, "a JSON number"),
        (b"null", dict, "a JSON null"),
        (b"true", list, "a JSON true or false"),
    ],
)
def test_read_json_refuses_another_top_level_type(body: bytes, kind: type, came: str) -> None:
    expected = "a JSON object" if kind is dict else "a JSON array"
    with pytest.raises(RetriableError) as caught:
        read_json(answered(body), kind, vendor="v")
    assert str(caught.value) == (
        f"v: GET /api/things answered HTTP 200 with {came} where {expected} was expected: "
        f"{body.decode()!r}"
    )
    assert caught.value.status == 200 and caught.value.vendor == "v"


@pytest.mark.parametrize(
    ("body", "came"),
    [
        (b"<html><body>Welcome</body></html>", r"text that is not JSON \(unexpected character"),
        (b'{"failedContacts": ', r"text that is not JSON \(unexpected end of data\)"),
        (b"[" * 2000 + b"]" * 2000, r"text that is not JSON \(depth limit exceeded\)"),
        (b"", "an empty body where a JSON object was expected$"),
        (b" \r\n ", "an empty body where a JSON object was expected$"),
    ],
    ids=["html", "cut", "too deep", "empty", "blank"],
)
def test_read_json_refuses_what_is_not_json(body: bytes, came: str) -> None:
    with pytest.raises(RetriableError, match=f"^v: POST /api/things answered HTTP 200 with {came}"):
        read_json(answered(body, method="POST"), dict, vendor="v")


def test_read_json_after_a_trigger_is_an_unknown_outcome() -> None:
    with pytest.raises(OutcomeUnknownError, match="HTTP 202 with an empty body") as caught:
        read_json(answered(b"", status=202, method="POST"), dict, vendor="v", idempotent=False)
    assert caught.value.status == 202
    assert "syncd retry --unknown" in str(caught.value)
    with pytest.raises(OutcomeUnknownError, match="with a JSON array where a JSON object"):
        read_json(answered(b"[]", method="POST"), dict, vendor="v", idempotent=False)


def test_read_json_names_the_vendor_and_keeps_secrets_out() -> None:
    add_secrets(["answer-secret-5b1d"])
    body = b'{"echo": "answer-secret-5b1d", "token": "tok-in-the-body"}' + b" " * 300
    with pytest.raises(RetriableError) as caught:
        read_json(answered(body), list, vendor="esputnik")
    message = str(caught.value)
    assert message.startswith("esputnik: GET /api/things answered HTTP 200 with a JSON object")
    for secret in ("answer-secret-5b1d", "tok-in-the-body", "k-in-the-query"):
        assert secret not in message
    assert len(message) < 300  # the answer's start, not all of it


@pytest.mark.parametrize(
    "value",
    [pytest.param("basic to\u200bken", id="outside-latin-1"), pytest.param("a\nb", id="newline")],
)
def test_a_request_that_cannot_be_written_is_an_endpoint_error_never_unknown(
    echo: tuple[Echo, str], value: str
) -> None:
    """A header syncd cannot write (a value outside latin-1, a line break: what a secret
    pasted with an invisible character makes, were it not refused at load) fails before a
    byte leaves the machine: the vendor is stopped with its contacts pending, never a
    trigger's outcome `unknown` (the vendor cannot have acted), and nothing is retried."""
    app, url = echo
    clock = FakeClock()
    with pytest.raises(EndpointError, match="cannot be written") as raised:
        client(url, clock).request(
            "POST", "/ok", idempotent=False, headers={"Authorization": value}
        )
    assert "to\u200bken" not in str(raised.value)
    assert app.count("/ok") == 0 and clock.slept == []
