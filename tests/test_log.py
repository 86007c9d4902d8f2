"""Secrets never leave through a log line or a stored vendor text."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest

from syncd import log as logmod
from syncd.errors import FatalError
from syncd.log import scrub

# each test registers its own values: the registry is per process and never forgets
SPECIAL = "p@ss/w+rd= ok"
ESCAPED = 'qu"ot\\e-ünï-€-😀'


def logged(message: str, **values: object) -> dict[str, object]:
    """The JSON event one `info` call writes."""
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    logmod.structlog.get_logger("t").info(message, **values)
    event: dict[str, object] = json.loads(out.getvalue().splitlines()[-1])
    return event


def test_secrets_and_authorization_are_redacted() -> None:
    out = io.StringIO()
    logmod.configure(level="DEBUG", json=True, stream=out)
    logmod.add_secrets(["s3cr3t-value-123"])
    logger = logmod.structlog.get_logger("t")
    logmod.bind(run_id=7, vendor="esputnik")
    try:
        raise ValueError("login failed with s3cr3t-value-123")
    except ValueError:
        logger.exception(
            "boom", headers={"Authorization": "Basic abc"}, password="pw", note="Bearer xyz.abc"
        )
    finally:
        logmod.unbind("run_id", "vendor")
    text = out.getvalue()
    event = json.loads(text.splitlines()[-1])
    assert event["run_id"] == 7 and event["vendor"] == "esputnik"
    assert event["headers"]["Authorization"] == "***"
    assert event["password"] == "***"
    assert "xyz" not in event["note"]
    assert "s3cr3t-value-123" not in text


@pytest.mark.parametrize(
    "form",
    [  # the raw form: test_secrets_and_authorization_are_redacted
        quote(SPECIAL),
        quote(SPECIAL, safe=""),
        quote_plus(SPECIAL),
        quote(SPECIAL, safe="").lower(),
    ],
)
def test_a_secret_is_scrubbed_url_encoded(form: str) -> None:
    logmod.add_secrets([SPECIAL])
    assert scrub(f"HTTP 400: got ?k={form}&x=1") == "HTTP 400: got ?k=***&x=1"


@pytest.mark.parametrize(
    "form",
    [
        json.dumps(ESCAPED),  # \" \\ and \uXXXX, a surrogate pair for the emoji
        json.dumps(ESCAPED, ensure_ascii=False),
        json.dumps(json.dumps(ESCAPED)),  # a JSON body quoted inside a JSON error
        repr(ESCAPED),
        repr(ESCAPED.encode()),  # bytes: \xNN
        quote(ESCAPED),
    ],
)
def test_a_secret_is_scrubbed_json_and_repr_escaped(form: str) -> None:
    logmod.add_secrets([ESCAPED])
    text = scrub(f'{{"error": "bad request", "body": {form}}}')
    assert "***" in text
    for piece in ("ot", "ünï", "\\u00fc", "%C3%BC", "\\xc3", "d83d"):
        assert piece not in text, text


@pytest.mark.parametrize("user", ["", "u", "us", "usr", "syncd", "a-long-user-name-9"])
@pytest.mark.parametrize("secret", [SPECIAL, ESCAPED, "MARKER-b64-key-19a"])
def test_a_secret_is_scrubbed_in_base64_alone_or_after_any_user_name(
    user: str, secret: str
) -> None:
    logmod.add_secrets([secret])
    plain = f"{user}:{secret}" if user else secret
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        blob = encode(plain.encode()).decode()
        # no scheme word in front: found by decoding, not by the header's shape
        assert scrub(f"echo: {blob}") == "echo: ***"
        assert scrub(f"echo: {blob.rstrip('=')}, done") == "echo: ***, done"
        assert scrub(f"x{blob}") == "***"  # glued to a word: every alignment is tried


def test_authorization_values_and_credential_shapes_are_scrubbed_unregistered() -> None:
    basic = base64.b64encode(b"someone:unregistered-pw-0").decode()
    assert (
        scrub(f"Authorization: Basic {basic}\r\nAccept: */*") == "Authorization: ***\r\nAccept: */*"
    )
    assert scrub(f"{{'Authorization': 'Basic {basic}'}}") == "{'Authorization': '***'}"
    assert scrub("Authorization:\nnext line") == "Authorization:\nnext line"  # no value
    assert scrub(f"sent Basic {basic} again") == "sent Basic *** again"
    assert scrub("auth Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig here") == "auth Bearer *** here"
    assert scrub("basic dXNlcjpwYXNz") == "basic ***"  # Hello Customer's lower-case scheme
    assert scrub("SignalVine tok-123:aGVsbG8rd29ybGQ= sent") == "SignalVine *** sent"
    assert scrub('{"refreshToken": "r\\"1", "ok": true}') == '{"refreshToken": "***", "ok": true}'


def test_ordinary_words_after_a_scheme_name_are_kept() -> None:
    for text in (
        "signalvine: nothing to send",
        "Basic validation failed",
        "token expired",
        "Bearer token expired",
        "no Bearer token.",
        "Authorization required",
        'HTTP 400: {"error": "token invalid"}',
    ):
        assert logged(text)["event"] == text


def test_registering_a_secret_again_is_free_and_short_values_eat_no_words() -> None:
    logmod.add_secrets(["MARKER-twice-77c1"])
    compiled = logmod._compiled
    logmod.add_secrets(["MARKER-twice-77c1", "abc", ""])
    assert logmod._compiled is compiled  # nothing new: not compiled again
    assert logged("abc abcdef MARKER-twice-77c1")["event"] == "abc abcdef ***"


def test_a_vendor_error_keeps_no_secret_in_its_reason_message_or_hint() -> None:
    key = "MARKER-vendor-error-0x5f"
    logmod.add_secrets([key])
    echo = json.dumps({"headers": {"X-Api-Key": key}, "body": quote(key)})
    exc = FatalError(f"HTTP 400: {echo}", vendor="esputnik", hint=f"key {key} refused")
    assert key not in exc.reason and key not in str(exc) and key not in (exc.hint or "")
    assert str(exc).startswith("esputnik: HTTP 400: ")


def test_lines_to_the_journal_carry_their_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stderr is the journal when $JOURNAL_STREAM names its device and inode: each line then
    starts with its syslog priority, so `journalctl -p err` shows the errors."""
    path = tmp_path / "journal"
    with path.open("w", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logmod.configure(level="DEBUG", stream=stream)
        logger = logmod.structlog.get_logger("t")
        logger.error("e")
        logger.warning("w")
        logger.info("i")
        logger.debug("d")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("x")
    lines = path.read_text(encoding="utf-8").splitlines()
    prefixes = [line[:3] for line in lines if line.startswith("<")]
    assert prefixes == ["<3>", "<4>", "<6>", "<7>", "<3>"], lines
    assert json.loads(lines[0][3:])["event"] == "e"  # the rest is the JSON line, unchanged


def test_no_priority_prefix_when_stderr_is_not_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")  # another file's
    path = tmp_path / "log"
    with path.open("w", encoding="utf-8") as stream:
        logmod.configure(level="DEBUG", stream=stream)
        logmod.structlog.get_logger("t").error("e")
    assert json.loads(path.read_text(encoding="utf-8"))["event"] == "e"
