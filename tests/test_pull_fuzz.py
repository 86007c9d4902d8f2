"""Whatever a vendor answers a pull with, as long as it is JSON, the pull raises nothing but
vendor errors: every answer of the three pulling connectors (eSputnik, SignalVine, Hello
Customer) replaced by random JSON built from their own field names and hostile values
(times UTC cannot hold, integers past SQLite's, numbers as text, lists where objects go),
and each record cleaned and stored as `syncd.pull` does.

Against the code before this test, 300 rounds found five ways out of the pull (an
OverflowError converting a time, another storing an integer, a TypeError on a profile that
was a number, another on an id that was an object, one iterating items that were a
number), each of which stopped the whole pull at every pull. Each has a test of its own in
`tests/test_pull_adversary.py`; this one looks for the next.
"""

from __future__ import annotations

import json
import random
import traceback
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.clock import FakeClock
from syncd.config import load
from syncd.errors import VendorError
from syncd.http import VendorResponse
from syncd.pull import Invalid, clean
from syncd.state import Store, pulled
from syncd.vendors import REGISTRY
from tests.kits import kit_for

KEYS = (
    "offset", "contactId", "email", "sms", "externalCustomerId", "mediaType", "activityStatus",
    "activityDateTime", "items", "nextOffset", "total", "lastOffset", "id", "customerId",
    "phone", "active", "updatedAt", "created", "profile", "name", "value", "updated",
    "uniqueID", "respondent_UniqueID", "answerQuestions", "dateAnswer", "date", "nps",
    "detractors", "passive", "promoters", "question_SortOrder", "answer_Value", "prediction",
    "paths", "path", "order",
)  # fmt: skip
VALUES: tuple[Any, ...] = (
    None, True, False, 0, 1, -1, 500, 1000, 2**63, 2**64 - 1, 1.5, 1e308, "", "x",
    "UNSUBSCRIBED", "false", "true", "2026-03-01T10:00:00Z", "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00", "2026-03-01", "NaN", "a@b.example", "+32470000001",
)  # fmt: skip


def value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.45:
        return rng.choice(VALUES)
    if roll < 0.7:
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(KEYS): value(rng, depth + 1) for _ in range(rng.randint(0, 7))}


def answer(rng: random.Random) -> bytes:
    def record() -> dict[str, Any]:
        return {rng.choice(KEYS): value(rng, 1) for _ in range(rng.randint(0, 8))}

    roll = rng.random()
    if roll < 0.4:
        return json.dumps([record() for _ in range(rng.randint(0, 4))]).encode()
    return json.dumps(record() if roll < 0.8 else value(rng)).encode()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["esputnik", "signalvine", "hellocustomer"])
def test_no_json_answer_makes_a_pull_raise_anything_but_a_vendor_error(
    tmp_path: Path, name: str
) -> None:
    rng = random.Random(f"pull-fuzz:{name}")

    def exchange(method: str, url: str, kwargs: Any, idempotent: bool = True) -> Any:
        resp = VendorResponse()
        resp.status_code, resp._content, resp.encoding = 200, answer(rng), "utf-8"
        resp.headers = requests.structures.CaseInsensitiveDict({"Content-Type": "application/json"})
        resp.url, resp.request = url, requests.Request(method, url).prepare()
        return resp

    kit = kit_for(name)
    (tmp_path / "mapping.toml").write_text(kit.mapping_toml, encoding="utf-8")
    (tmp_path / "syncd.toml").write_text(
        '[source]\npath = "x.csv"\nkey = "Record ID"\n[store]\npath = "s.db"\n'
        f"[vendors.{name}]\n{kit.vendor_toml('http://127.0.0.1:1', False)}\nretries = 0\n",
        encoding="utf-8",
    )
    cfg = load(tmp_path / "syncd.toml")
    store = Store.open(cfg.store.path)
    escaped: dict[tuple[str, str], str] = {}
    try:
        for _ in range(300):
            clock = FakeClock()
            connector = REGISTRY[name](cfg.vendors[name], clock=clock)
            connector.http._exchange = exchange  # type: ignore[method-assign]
            for stream in connector.streams:
                try:
                    for n, page in enumerate(connector.pull(stream, None, clock.now())):
                        for record in page.records:
                            try:
                                row = clean(stream, record)
                                with store.write():
                                    pulled.SAVERS[stream](store.db, name, row, "2026-01-01")
                            except (Invalid, pulled.Refused):
                                pass
                        if n > 30:  # paging that goes on: not what this looks for
                            break
                except VendorError:
                    pass
                except Exception as exc:  # what would have left the pull
                    where = traceback.extract_tb(exc.__traceback__)[-1]
                    spot = f"{Path(where.filename).name}:{where.lineno}"
                    escaped.setdefault((type(exc).__name__, spot), str(exc)[:120])
            connector.close()
    finally:
        store.close()
    assert escaped == {}
