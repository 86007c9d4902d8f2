"""Time as an argument: core code asks a `Clock`, tests pass a fake one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock. When `stop` is set (SIGTERM), `sleep` raises `StopRequested` at once,
    so no backoff or polling wait outlives a stop request. Every sleep is announced to
    `syncd.liveness` as a wait of its length: a long one is not a stalled job."""

    def __init__(self) -> None:
        import threading

        self.stop = threading.Event()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        from syncd import liveness
        from syncd.errors import StopRequested

        with liveness.waiting(seconds):
            stopped = self.stop.wait(max(seconds, 0))
        if stopped:
            raise StopRequested("stop requested")

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when slept on: backoff and polling run instantly in tests."""

    def __init__(self, start: datetime | None = None) -> None:
        self._mono = 1000.0
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self._mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._mono += max(seconds, 0.0)

    def now(self) -> datetime:
        from datetime import timedelta

        return self._start + timedelta(seconds=self._mono - 1000.0)


SYSTEM = SystemClock()
