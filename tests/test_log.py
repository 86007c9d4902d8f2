"""Secrets never leave through a log line."""

from __future__ import annotations

import io
import json

from syncd import log as logmod


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
