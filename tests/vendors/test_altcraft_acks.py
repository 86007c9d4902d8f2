"""Altcraft acknowledgements: only HTTP 200 with `error` 0 (and, for start_batch, one
`result` id per profile) marks contacts sent; an answer that does not prove Altcraft
refused the launch leaves them `unknown`: launched at most once, never split or re-sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from werkzeug.wrappers import Request, Response

from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server, json_response
from syncd.state import Store
from tests.kits.altcraft import KIT
from tests.vendors.test_contract import deliver, make_connector


class AnswersOddly(AltcraftSim):
    """Launches as Altcraft does, then answers `answer` instead of its envelope."""

    def __init__(self, answer: Response) -> None:
        super().__init__()
        self.answer = answer

    def start_batch(self, request: Request) -> Response:
        super().start_batch(request)
        return self.answer

    def start(self, request: Request) -> Response:
        super().start(request)
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [
        json_response({"error": 0, "error_text": "Successful operation"}),
        json_response({"error": 0, "error_text": "Successful operation", "result": ["x"]}),
        json_response(
            {"error": 0, "error_text": "Successful operation", "result": ["a", "b", "c"]}, 202
        ),
        json_response({"error": 1, "error_text": "Internal error"}),
        json_response({"error": 500, "error_text": "Internal server error"}),
        Response("<html>400 Bad Request</html>", 400, mimetype="text/html"),
        json_response([{"error": 0, "result": ["a", "b", "c"]}]),
        json_response({"error": "0", "result": ["a", "b", "c"]}),
    ],
    ids=[
        "no-result",
        "short-result",
        "http-202",
        "error-1",
        "error-500",
        "400-html",
        "array",
        "string-code",
    ],
)
def test_an_answer_that_is_not_an_acknowledgement_nor_a_refusal_is_unknown(
    tmp_path: Path, answer: Response
) -> None:
    sim = AnswersOddly(answer)
    contacts = [KIT.contact(i) for i in range(3)]
    with Server(sim) as server:
        outcome, _ = deliver(make_connector(KIT, server.url, tmp_path), contacts, tmp_path)
    assert {status for status, _reason in outcome.values()} == {"unknown"}, outcome
    assert len(sim.requests(KIT.push_path)) == 1  # not split, not retried
    assert sim.triggers() == {c.key: 1 for c in contacts}


class AnswersIds(AltcraftSim):
    """Launches as Altcraft does, then answers `ids` as the batch's result."""

    def __init__(self, ids: list[object]) -> None:
        super().__init__()
        self.ids = ids

    def start_batch(self, request: Request) -> Response:
        super().start_batch(request)
        return json_response({"error": 0, "error_text": "Successful operation", "result": self.ids})


@pytest.mark.parametrize("missing", [None, "", {}], ids=["null", "empty", "object"])
def test_a_result_entry_that_is_no_profile_id_leaves_its_contact_unknown(
    tmp_path: Path, missing: object
) -> None:
    """NOTES.md: start_batch "answers {error, error_text, result: [profile ids]}": an entry that
    is no profile id acknowledges no launch (the old code marked all three sent); the ids that
    came are the contacts' refs."""
    sim = AnswersIds(["65a1f0c2e4b0a1b2c3d4e5f6", missing, "65a1f0c2e4b0a1b2c3d4e5f8"])
    contacts = [KIT.contact(i) for i in range(3)]
    with Server(sim) as server:
        outcome, _ = deliver(make_connector(KIT, server.url, tmp_path), contacts, tmp_path)
    assert [outcome[c.key][0] for c in contacts] == ["sent", "unknown", "sent"], outcome
    assert "result[1]" in (outcome[contacts[1].key][1] or "")
    assert len(sim.requests(KIT.push_path)) == 1
    store = Store.open(tmp_path / "s.db")
    refs = {
        r["key"]: r["vendor_ref"] for r in store.query("SELECT key, vendor_ref FROM deliveries")
    }
    store.close()
    assert refs[contacts[0].key] == "65a1f0c2e4b0a1b2c3d4e5f6"
    assert refs[contacts[2].key] == "65a1f0c2e4b0a1b2c3d4e5f8"
