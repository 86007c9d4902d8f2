"""The eSputnik simulator's activity list holds its query parameters to the spec's types:
`maxrows` is an `integer` of `"format": "int32"`."""

from __future__ import annotations

import base64

import pytest
from werkzeug.test import Client

from syncd.sandbox.esputnik import ESputnikSim

AUTH = {"Authorization": "Basic " + base64.b64encode(b"any:sandbox-key").decode()}
QUERY = "/api/v2/contacts/activity?dateFrom=2026-01-01&dateTo=2026-01-02&maxrows="


@pytest.mark.parametrize("maxrows", ["²", "2147483648", "1.5", ""])
def test_a_maxrows_that_is_no_int32_is_a_400_naming_it(maxrows: str) -> None:
    """`"²".isdigit()` is true and `int("²")` fails: the simulator crashed (an answer the
    spec does not list) where a bad parameter is a 400; a number past int32 was taken."""
    answer = Client(ESputnikSim()).get(QUERY + maxrows, headers=AUTH)
    assert answer.status_code == 400
    assert "maxrows" in answer.get_data(as_text=True)


def test_an_int32_maxrows_is_taken() -> None:
    app = ESputnikSim()
    for i in range(3):
        app.unsubscribe(f"p{i}@example.com")
    answer = Client(app).get(
        QUERY.replace("2026-01-01", "2000-01-01").replace("2026-01-02", "2100-01-01") + "2",
        headers=AUTH,
    )
    assert answer.status_code == 200 and len(answer.get_json()) == 2
