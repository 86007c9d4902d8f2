"""Hello Customer acknowledgements: only a 200 or 201 ("Validation messages": "200/201:
Success") that does not say it failed marks respondents sent; any other answer after the
request went out leaves them `unknown`, sent once, never split and re-sent."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Server
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.vendors.base import Contact
from tests.kits.hellocustomer import KIT
from tests.vendors.test_contract import deliver, make_connector


class AnswersOddly(HelloCustomerSim):
    """Adds the respondents as Hello Customer does, then answers `answer` instead."""

    def __init__(self, answer: Response) -> None:
        super().__init__(min_interval=0.0)
        self.answer = answer

    def add_many(self, request: Request, culture: str, campaign: str) -> Response:
        super().add_many(request, culture, campaign)
        return self.answer


@pytest.mark.parametrize(
    "answer",
    [
        Response("", 204),
        Response('{"success": false}', 201, mimetype="application/json"),
        Response("<html><body>Service OK</body></html>", 200, mimetype="text/html"),
        Response('{"success": false}', 200, mimetype="application/json"),
        Response('{"errors": ["cache unavailable"]}', 200, mimetype="application/json"),
        Response("<html>400 Bad Request</html>", 400, mimetype="text/html"),
    ],
    ids=["204", "201-false", "200-html", "200-false", "200-errors", "400-html"],
)
def test_an_answer_that_is_not_the_documented_acknowledgement_is_unknown(
    tmp_path: Path, answer: Response
) -> None:
    sim = AnswersOddly(answer)
    contacts = [KIT.contact(i) for i in range(4)]
    with Server(sim) as server:
        outcome, _ = deliver(make_connector(KIT, server.url, tmp_path), contacts, tmp_path)
    assert {status for status, _reason in outcome.values()} == {"unknown"}, outcome
    assert sim.count(KIT.push_path) == 1  # not split, not re-sent
    assert {key: len(adds) for key, adds in sim.by_key().items()} == {c.key: 1 for c in contacts}
    reason = next(iter(outcome.values()))[1] or ""
    assert reason.startswith(f"HTTP {answer.status_code} ")


class RefusesLargeBodies(HelloCustomerSim):
    """A front proxy's 413: a body of more than two respondents never reaches the cache."""

    def __init__(self, answer: Response) -> None:
        super().__init__(min_interval=0.0)
        self.answer = answer

    def add_many(self, request: Request, culture: str, campaign: str) -> Response:
        if len(request.get_json()) > 2:
            return self.answer
        return super().add_many(request, culture, campaign)


@pytest.mark.parametrize(
    "answer",
    [
        Response("", 413),
        Response("<html>413 Request Entity Too Large</html>", 413, mimetype="text/html"),
        Response('"Request body too large"', 413, mimetype="application/json"),
    ],
    ids=["empty", "html", "message"],
)
def test_a_413_was_refused_unread_so_the_batch_is_split_and_sent(
    tmp_path: Path, answer: Response
) -> None:
    """A 413 says the body was refused unread, by Hello Customer or a proxy: nothing was
    added, so the halves may be sent (the old code left the batch unknown without a
    validation message)."""
    sim = RefusesLargeBodies(answer)
    contacts = [KIT.contact(i) for i in range(4)]
    with Server(sim) as server:
        outcome, _ = deliver(make_connector(KIT, server.url, tmp_path), contacts, tmp_path)
    assert {status for status, _reason in outcome.values()} == {"sent"}, outcome
    assert sim.count(KIT.push_path) == 3  # the whole, then its two halves
    assert {key: len(adds) for key, adds in sim.by_key().items()} == {c.key: 1 for c in contacts}


@pytest.mark.parametrize("status", [200, 201])
def test_a_200_or_a_201_acknowledges_the_respondents(tmp_path: Path, status: int) -> None:
    """hellocustomer.md, "5. Validation messages": "a. 200/201: Success" (the old code left a
    201 unknown and stopped Hello Customer for the run)."""
    sim = AnswersOddly(Response("", status))
    contacts = [KIT.contact(i) for i in range(4)]
    with Server(sim) as server:
        outcome, _ = deliver(make_connector(KIT, server.url, tmp_path), contacts, tmp_path)
    assert {status for status, _reason in outcome.values()} == {"sent"}, outcome
    assert sim.count(KIT.push_path) == 1


@pytest.mark.parametrize(
    "fault",
    [{"kind": "status", "status": 500}, {"kind": "drop_after"}, {"kind": "delay", "seconds": 1}],
    ids=["500", "answer-lost", "read-timeout"],
)
def test_a_contact_the_connector_refuses_is_failed_whatever_its_batchs_request_answers(
    tmp_path: Path, fault: dict[str, Any]
) -> None:
    """A contact whose language no longer resolves (queued before default_language was
    taken out) is never sent: it fails, with the connector's reason, even when the request
    that carries the rest of its batch ends unknown. Before, it shared that request's fate
    and was left `unknown`, as if Hello Customer might have it."""
    sim = HelloCustomerSim(min_interval=0.0)
    contacts = [KIT.contact(i) for i in range(4)]
    contacts[2] = Contact(contacts[2].key, {**contacts[2].fields, "language": "Klingon"})
    sim.faults.add(path=KIT.push_path, count=1, **fault)
    kit = replace(KIT, vendor_toml=lambda url, bad: _without_default(KIT.vendor_toml(url, bad)))
    with Server(sim) as server:
        connector = make_connector(kit, server.url, tmp_path, read_timeout=0.3)
        outcome, _ = deliver(connector, contacts, tmp_path)
    assert outcome[contacts[2].key] == (
        "failed",
        "unknown language 'Klingon' and no default_language (needed by hellocustomer)",
    )
    others = {status for key, (status, _r) in outcome.items() if key != contacts[2].key}
    assert others == {"unknown"}, outcome
    assert contacts[2].key not in sim.by_key()


def _without_default(table: str) -> str:
    assert 'default_language = "EN"\n' in table
    return table.replace('default_language = "EN"\n', "")
