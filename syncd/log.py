"""structlog set-up: JSON lines for journald, a readable console on a TTY, secrets scrubbed.

`scrub(text)` is the one scrubber: every log event passes it (through the `redact`
processor), and so does every vendor text syncd stores (`VendorError` scrubs its own
message). It replaces with `***`:

- every registered secret (`add_secrets`) in each form a request can carry it: raw,
  URL-encoded (`quote`, `quote_plus`, either hex case), JSON- or repr-escaped (`\\"`,
  `\\\\`, `\\uXXXX`, at any depth of nesting), and base64 — of the secret alone or of
  `user:secret`: every base64-looking run of the text is decoded, at each alignment, and
  searched for a secret in any of those forms, so no encoding has to be enumerated;
- credentials by their shape, registered or not: the value of an `Authorization` header
  (to the end of the value), `Basic <token>`, `Bearer <token>`, `SignalVine
  <token>:<signature>`, and a JSON string whose key names a credential. A scheme word is
  taken as a credential only before a token-shaped value, so "Basic validation failed"
  and "signalvine: nothing to send" are kept.

In an event, the value of a key that names a credential (authorization, password, token,
secret, api_key) is `***` whatever it is. `run_id` and `vendor` are bound through
contextvars, so every event of a run carries them.

When stderr is the journal (`$JOURNAL_STREAM` names its device and inode, as systemd
documents), each line starts with its syslog priority (`<3>` error, `<4>` warning, `<6>`
info, `<7>` debug), so `journalctl -p err` finds the errors.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Within this block, `import name` raises ImportError for each of these optional
    modules that is not imported yet, so a library that merely probes for one does without
    it; after the block they import as usual (the ones imported already are left alone)."""
    mine = [name for name in names if name not in sys.modules]
    for name in mine:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "absent"
    try:
        yield
    finally:
        for name in mine:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


# structlog's `__init__` imports `structlog.dev` and `structlog.tracebacks`, which import
# rich (and pygments) when installed: ~35 ms of every command's start-up, for rich
# tracebacks syncd never draws (`format_exc_info` turns an exception into text before any
# renderer sees it, and the console renderer is given `plain_traceback`)
with hidden("rich"):
    import structlog

REDACTED = "***"
# shorter values would match inside ordinary words and make every log line unreadable
MIN_SECRET = 4
_SECRET_KEYS = re.compile(r"authorization|password|passwd|secret|token|api_?key", re.I)

# a token-shaped value: 6 or more token characters with a digit, inner punctuation or a
# case change (random tokens have one; "validation", "token." and "authentication" do not)
_TOKEN = (
    r"(?=[A-Za-z0-9._~+/=-]{6})"
    r"(?=[A-Za-z0-9._~+/-]*?(?:[0-9]|[._+/=][A-Za-z0-9]|(?-i:[a-z][A-Z])))"
    r"[A-Za-z0-9._~+/-]+=*"
)
_CREDENTIALS = re.compile(
    # the key, with the quotes or escaped quotes of a JSON or repr dump around it
    r"(?P<key>\bauthorization(?:\\*[\"'])?[ \t]*[:=][ \t]*(?:\\*[\"'])?)[^\r\n\"'\\]+"
    rf"|(?P<scheme>\b(?:basic|bearer)\s+){_TOKEN}"
    r"|(?P<sv>\bsignalvine\s+)[A-Za-z0-9._~+/-]+:[A-Za-z0-9+/=_-]+"
    rf"|(?P<json>\"[^\"\\]*(?:{_SECRET_KEYS.pattern})[^\"\\]*\"\s*:\s*\")(?:[^\"\\]|\\.)*\"",
    re.I,
)
# what each branch above starts with: `in` on the lower-cased text is ten times faster than
# the case-insensitive pattern on a line that has none of them
_CUES = ("authorization", "basic", "bearer", "signalvine", '"')


class _Compiled:
    """Every registered secret as one pattern, built once per change of the registry."""

    def __init__(self, secrets: Iterable[str]) -> None:
        ordered = sorted(secrets, key=len, reverse=True)  # the longest wins where two overlap
        self.pattern = re.compile("|".join("".join(map(_char, s)) for s in ordered))
        self.shortest = min(map(len, ordered))  # no form of a secret is shorter than it raw
        # the fewest base64 characters that can encode the shortest secret
        self.base64 = re.compile(
            rf"[A-Za-z0-9+/_-]{{{min(len(s.encode()) for s in ordered) * 4 // 3},}}={{0,2}}"
        )


_lock = threading.Lock()
_secrets: set[str] = set()
_compiled: _Compiled | None = None  # replaced whole, so a reader never sees half an update


def add_secrets(values: Iterable[str]) -> None:
    """Register secret values to scrub from every text from now on.

    Registering a value again changes nothing (and costs nothing: the pattern is compiled
    again only when a new value arrives). A value shorter than `MIN_SECRET` characters is
    not searched for, since it would match inside ordinary words; it is still scrubbed
    where it has a credential's shape (an `Authorization` value, a JSON `"token"`).
    Secrets are never forgotten: a rotated key stays a secret.
    """
    global _compiled
    with _lock:
        new = {v for v in values if len(v) >= MIN_SECRET} - _secrets
        if new:
            _secrets.update(new)
            _compiled = _Compiled(_secrets)


def _char(ch: str) -> str:
    """A pattern for one character of a secret in any of the forms it can be sent in."""
    if ch.isascii() and ch.isalnum():
        return ch  # never escaped by URL, JSON or repr encoders
    utf8 = ch.encode()
    utf16 = ch.encode("utf-16-be")
    units = [utf16[i : i + 2].hex() for i in range(0, len(utf16), 2)]
    forms = [
        (r"\\*" if ch in "\"'/\\" else "") + re.escape(ch),
        "(?i:" + "".join(f"%{b:02x}" for b in utf8) + ")",
        "(?i:" + "".join(rf"\\+u{u}" for u in units) + ")",
    ]
    if ch == " ":
        forms.append(r"\+")
    if ch in "\b\f\n\r\t":
        forms.append(r"\\+" + "bfnrt"["\b\f\n\r\t".index(ch)])
    if not ch.isascii():
        forms.append("(?i:" + "".join(rf"\\x{b:02x}" for b in utf8) + ")")
    return "(?:" + "|".join(forms) + ")"


def scrub(text: str) -> str:
    """`text` with every registered secret, in any encoding, and every credential-shaped
    header or value replaced by `***`."""
    compiled = _compiled
    if compiled is not None and len(text) >= compiled.shortest:
        text = compiled.pattern.sub(REDACTED, text)
        text = compiled.base64.sub(
            lambda m: REDACTED if _hides_secret(m.group(), compiled.pattern) else m.group(),
            text,
        )
    lower = text.lower()
    if any(cue in lower for cue in _CUES):
        text = _CREDENTIALS.sub(_credential, text)
    return text


def printable(text: str) -> str:
    """`text` for a terminal, on one line: each character that is not printable (a line
    break, a carriage return, an escape sequence's ESC, a bell, a bidi override) as its
    Python escape (`\\n`, `\\x1b`, `\\u202e`), so a vendor's or an export's words can
    neither start a line of their own (a fake one) nor move the cursor or recolour the
    screen. Whatever was written is still there to read."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _hides_secret(run: str, pattern: re.Pattern[str]) -> bool:
    """Whether this base64-looking run decodes, at some alignment, to text holding a secret."""
    run = run.rstrip("=").replace("-", "+").replace("_", "/")
    for start in range(4):
        chunk = run[start:]
        chunk = chunk[: len(chunk) - 1] if len(chunk) % 4 == 1 else chunk
        try:
            decoded = base64.b64decode(chunk + "=" * (-len(chunk) % 4))
        except binascii.Error:
            continue
        if pattern.search(decoded.decode("utf-8", "replace")):
            return True
    return False


def _credential(m: re.Match[str]) -> str:
    """The credential's key or scheme word, then `***` (and the closing quote of a JSON value)."""
    if m["json"]:
        return m["json"] + REDACTED + '"'
    return (m["key"] or m["scheme"] or m["sv"]) + REDACTED


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEYS.search(k) else _scrub_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub_value(v) for v in value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no secret leaves the process through a log line."""
    for key in list(event):
        if _SECRET_KEYS.search(key) and key != "event":
            event[key] = REDACTED
        else:
            event[key] = _scrub_value(event[key])
    return event


# syslog priorities by structlog method name (`exception` and `critical` are errors too)
PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "info": 6, "debug": 7}


def is_journal(stream: TextIO) -> bool:
    """Whether `stream` is connected to the journal: `$JOURNAL_STREAM` is its "dev:inode"."""
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or no file (a StringIO)
        return False
    return os.environ.get("JOURNAL_STREAM") == f"{st.st_dev}:{st.st_ino}"


def _priority(_: Any, method: str, line: Any) -> str:
    """structlog's last step for the journal: the rendered line after its `<N>` prefix."""
    return f"<{PRIORITIES.get(method, 6)}>{line}"


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
        else structlog.dev.ConsoleRenderer(
            colors=False, sort_keys=True, exception_formatter=structlog.dev.plain_traceback
        )
    )
    tail = [_priority] if is_journal(stream) else []
    structlog.configure(
        processors=[*shared, renderer, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    for noisy in ("urllib3", "werkzeug", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _ToStructlog)]:
        root.removeHandler(handler)
    root.addHandler(_ToStructlog())


class _ToStructlog(logging.Handler):
    """The libraries' stdlib records (APScheduler's "skipped: maximum number of running
    instances reached", a job's traceback, urllib3's warnings) as structlog events: JSON,
    scrubbed, with their priority. Without a handler, logging's last resort printed them
    to stderr as bare text, secrets and all."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format arguments: keep what it meant
            message = str(record.msg)
        method = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}
        name = method.get(
            record.levelno, "error" if record.levelno < logging.CRITICAL else "critical"
        )
        extra: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            extra["exc_info"] = record.exc_info
        getattr(structlog.get_logger(record.name), name)(message, **extra)


def bind(**values: Any) -> None:
    """Bind values (run_id, vendor) to every following event in this context."""
    structlog.contextvars.bind_contextvars(**values)


def unbind(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
