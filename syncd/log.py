"""structlog set-up: JSON lines for journald, a readable console on a TTY, secrets redacted.

Every event passes `redact`, which replaces every configured secret value (wherever it
appears: a message, an exception text, a nested value) and the value of any key that
names a credential (authorization, password, token, secret, api_key) with `***`.
`run_id` and `vendor` are bound through contextvars, so every event of a run carries them.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "***"
_SECRET_KEYS = re.compile(r"authorization|password|passwd|secret|token|api_?key", re.I)
_AUTH_HEADER = re.compile(
    r"((?:Authorization|Bearer|Basic|SignalVine)[\"']?\s*[:=]?\s*)[^\s,\"'}]+", re.I
)

_secrets: set[str] = set()


def add_secrets(values: Iterable[str]) -> None:
    """Register secret values to redact from every event from now on."""
    _secrets.update(v for v in values if v and len(v) >= 4)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in sorted(_secrets, key=len, reverse=True):
            if secret in value:
                value = value.replace(secret, REDACTED)
        return _AUTH_HEADER.sub(lambda m: m.group(1) + REDACTED, value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return _scrub(f"{type(value).__name__}: {value}")
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret leaves the process through a log line."""
    for key in list(event):
        if _SECRET_KEYS.search(key) and key != "event":
            event[key] = REDACTED
        else:
            event[key] = _scrub(event[key])
    return event


def configure(
    *, level: str = "INFO", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Set up structlog (and route stdlib logging through the same redaction)."""
    stream = stream or sys.stderr
    if json is None:
        json = not stream.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(sort_keys=True)
        if json
        else structlog.dev.ConsoleRenderer(colors=False, sort_keys=True)
    )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    for noisy in ("urllib3", "werkzeug", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def bind(**values: Any) -> None:
    """Bind values (run_id, vendor) to every following event in this context."""
    structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
