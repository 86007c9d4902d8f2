"""Each simulator answers in the shape its vendor's document shows, and each connector reads
the document's own example answer, verbatim.

For every example answer in the vendors' articles (and SignalVine's docbox), the simulator's
answer to the same call is recorded while the connector drives it, and compared with the
example: the same keys, the same JSON types, the same envelope and status. Then the
example itself, byte for byte (tests/vendors/documented.py), is played to the connector
through the simulator's own routes, so a connector that reads only our simulator's
answers is caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server, Simulator
from syncd.sandbox.dropthought import DropthoughtSim
from syncd.sandbox.hellocustomer import HelloCustomerSim
from syncd.sandbox.signalvine import PROGRAM, SignalVineSim
from syncd.vendors.base import Status
from tests.kits import kit_for
from tests.vendors import documented
from tests.vendors.test_contract import deliver, make_connector

Answer = tuple[str, str, int, bytes]  # method, path, status, body


def recording(app: Simulator) -> list[Answer]:
    """Every answer `app` gives from now on (faults excepted), in order."""
    answers: list[Answer] = []
    dispatch = app.dispatch

    def recorded(request: Request) -> Response:
        response = dispatch(request)
        answers.append((request.method, request.path, response.status_code, response.get_data()))
        return response

    app.dispatch = recorded  # type: ignore[method-assign]
    return answers


def answered(answers: list[Answer], method: str, part: str) -> list[tuple[int, Any]]:
    """(status, parsed body or None) of every recorded answer to `method` on a path with `part`."""
    return [
        (status, json.loads(body) if body.strip() else None)
        for m, path, status, body in answers
        if m == method and part in path
    ]


def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"


def differences(ours: Any, theirs: Any, where: str = "$", *, extra_ok: bool = False) -> list[str]:
    """How `ours` differs in shape from `theirs` (the document's): keys, JSON types, and for
    an array, each of our items against the document's items (each of ours must have the
    shape of one of theirs, each of theirs be matched by one of ours; a document's empty
    array says nothing of its items, nor its empty object of its keys: a map, such as
    Hello Customer's `keyValues`). `extra_ok`: our objects may carry more keys (for a
    representation the document shows only in part)."""
    if kind(ours) != kind(theirs):
        return [f"{where}: {kind(ours)} where the document has {kind(theirs)}"]
    found: list[str] = []
    if isinstance(theirs, dict) and theirs:  # an empty object (keyValues: {}) is a map
        missing = [k for k in theirs if k not in ours]
        extra = [k for k in ours if k not in theirs]
        if missing:
            found.append(f"{where}: no {missing}")
        if extra and not extra_ok:
            found.append(f"{where}: keys the document does not show: {extra}")
        for key in theirs:
            if key in ours:
                found += differences(ours[key], theirs[key], f"{where}.{key}", extra_ok=extra_ok)
    elif isinstance(theirs, list) and theirs:
        if not ours:
            return [f"{where}: empty, so its items cannot be compared"]
        matched: set[int] = set()
        for i, item in enumerate(ours):
            tried = [differences(item, t, f"{where}[{i}]", extra_ok=extra_ok) for t in theirs]
            fits = [j for j, d in enumerate(tried) if not d]
            if fits:
                matched.update(fits)
            else:
                found += min(tried, key=len)
        unmatched = [j for j in range(len(theirs)) if j not in matched]
        if unmatched and not found:
            found.append(f"{where}: no item shaped like the document's items {unmatched}")
    return found


def served(app: Simulator, kit_name: str, tmp_path: Path, run: Callable[[Any], Any]) -> Any:
    kit = kit_for(kit_name)
    with Server(app) as server:
        return run(make_connector(kit, server.url, tmp_path))


# --- Hello Customer -----------------------------------------------------------------------
SEPT_29 = datetime(2020, 9, 29, 13, 42, 37, tzinfo=UTC)  # the example's dateAnswer


def test_hellocustomer_answers_are_shaped_like_the_documents_examples(tmp_path: Path) -> None:
    app = HelloCustomerSim(min_interval=0.0)
    answers = recording(app)
    app.add_responses(3, SEPT_29, SEPT_29)
    kit = kit_for("hellocustomer")

    def run(connector: Any) -> None:
        outcome, _ = deliver(connector, [kit.contact(1)], tmp_path)
        assert [s for s, _r in outcome.values()] == ["sent"]
        list(connector.pull("responses", "2020-09-29", datetime(2020, 9, 30, tzinfo=UTC)))
        list(connector.pull("nps", "2020-09-01", datetime(2020, 9, 30, tzinfo=UTC)))

    served(app, "hellocustomer", tmp_path, run)
    # "8. API-Call 2": "If you get a response 200 from our server, the respondent was
    # successfully added" (no body is shown)
    assert [s for s, _b in answered(answers, "POST", "/addmultipletocache")] == [200]
    (status, body), *_ = answered(answers, "GET", "/answers/getall/")
    assert status == 200
    assert differences(body, json.loads(documented.HELLOCUSTOMER_GETALL)) == []
    (status, body), *_ = answered(answers, "POST", "/getnpsscore/")
    assert status == 200
    assert differences(body, json.loads(documented.HELLOCUSTOMER_NPS)) == []


class HelloCustomerExamples(HelloCustomerSim):
    """Hello Customer answering the document's own example bodies."""

    def answers(
        self, request: Request, culture: str, campaign: str, start: str, end: str
    ) -> Response:
        return Response(documented.HELLOCUSTOMER_GETALL, 200, mimetype="application/json")

    def nps(self, request: Request, culture: str, campaign: str, start: str, end: str) -> Response:
        return Response(documented.HELLOCUSTOMER_NPS, 200, mimetype="application/json")


def test_hellocustomer_connector_reads_the_documents_examples_verbatim(tmp_path: Path) -> None:
    def run(connector: Any) -> tuple[list[Any], list[Any]]:
        until = datetime(2020, 9, 30, tzinfo=UTC)
        responses = [r for p in connector.pull("responses", "2020-09-29", until) for r in p.records]
        until = datetime(2015, 12, 17, tzinfo=UTC)
        nps = [r for p in connector.pull("nps", "2015-12-01", until) for r in p.records]
        return responses, nps

    responses, nps = served(HelloCustomerExamples(min_interval=0.0), "hellocustomer", tmp_path, run)
    (response,) = responses
    assert response["response_id"] == "36e2cd3f-8ae9-449a-90d0-5270b9e4ceb9"
    assert response["email"] == "john.doe@gmail.com"
    assert response["answered_at"] == "2020-09-29T13:42:37Z"
    assert len(response["answers"]) == 2
    assert [r["nps"] for r in nps] == [31]


# --- Dropthought --------------------------------------------------------------------------
def test_dropthought_answers_are_shaped_like_the_documents_examples(tmp_path: Path) -> None:
    app = DropthoughtSim()
    answers = recording(app)
    kit = kit_for("dropthought")

    def run(connector: Any) -> None:
        outcome, _ = deliver(connector, [kit.contact(1)], tmp_path)
        assert [s for s, _r in outcome.values()] == ["sent"]

    served(app, "dropthought", tmp_path, run)
    ((status, login),) = answered(answers, "POST", "/authenticate/login")
    assert status == 200
    assert differences(login, json.loads(documented.DROPTHOUGHT_LOGIN)) == []
    ((status, added),) = answered(answers, "POST", "/participant/")
    assert status == 200
    example = json.loads(documented.DROPTHOUGHT_PARTICIPANT)
    assert differences(added, example) == []
    # data, header, meta_data and phi_data are JSON-encoded arrays, one entry a column
    ours, theirs = added["result"][0], example["result"][0]
    for key in ("data", "header", "meta_data", "phi_data"):
        assert differences(json.loads(ours[key]), json.loads(theirs[key])) == [], key
    assert len({len(json.loads(ours[k])) for k in ("data", "header", "meta_data", "phi_data")}) == 1


class DropthoughtExamples(DropthoughtSim):
    """Dropthought answering the login with the document's example (tokens that are no
    JWTs, which then open the participant call)."""

    def login(self, request: Request) -> Response:
        self.logins += 1
        return Response(documented.DROPTHOUGHT_LOGIN, 200, mimetype="application/json")

    def _valid(self, token: str, kind: str) -> bool:
        example = json.loads(documented.DROPTHOUGHT_LOGIN)["result"]
        return token == example["accessToken" if kind == "access" else "refreshToken"]


def test_dropthought_connector_reads_the_documents_examples_verbatim(tmp_path: Path) -> None:
    app = DropthoughtExamples()
    app.answer = json.loads(documented.DROPTHOUGHT_PARTICIPANT)
    kit = kit_for("dropthought")
    results = served(
        app, "dropthought", tmp_path, lambda c: c.push([kit.contact(1)], lambda j, r=(): None)
    )
    assert [(r.status, r.ref) for r in results] == [
        (Status.SENT, "e29272f4-f572-421f-8662-58428a2cba47")
    ]


def test_the_simulators_take_the_documents_own_requests() -> None:
    """A simulator as strict as the vendor still takes the vendor's own example requests:
    Dropthought's participant (on a list typed as its Sample Response's meta_data) and Hello
    Customer's addmultipletocache and NPS filter bodies."""
    example = json.loads(documented.DROPTHOUGHT_PARTICIPANT_REQUEST)
    types = json.loads(json.loads(documented.DROPTHOUGHT_PARTICIPANT)["result"][0]["meta_data"])
    dropthought = DropthoughtSim(
        participant_group="dddd", metadata=dict(zip(example["header"], types, strict=False))
    )
    client = Client(dropthought)
    login = client.post(
        "/dtapp/api/authenticate/login",
        json={"email": "ops@example.com", "password": "sandbox-password"},
    )
    token = login.get_json()["result"]["accessToken"]
    added = client.post(
        "/dtapp/api/participant/?participantgroupuuid=dddd",
        data=documented.DROPTHOUGHT_PARTICIPANT_REQUEST,
        headers={
            "Accept": "application/json",
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        },
    )
    assert added.status_code == 200, added.get_data(as_text=True)
    [participant] = dropthought.participants()
    assert participant["primary_key"] == "Sudhakarsudhakar1@dropthought.com"

    hellocustomer = HelloCustomerSim(min_interval=0.0)
    client = Client(hellocustomer)
    base = "/V1.0/EN/campaign/c8dc5f94-a9e8-4743-8744-e66a73a7e724"
    auth = {"Authorization": "basic sandbox-token", "Content-Type": "application/json"}
    pushed = client.post(
        f"{base}/respondent/addmultipletocache",
        data=documented.HELLOCUSTOMER_ADDMULTIPLE_REQUEST,
        headers=auth,
    )
    assert pushed.status_code == 200, pushed.get_data(as_text=True)
    assert len(hellocustomer.respondents()) == 2
    nps = client.post(
        f"{base}/analysis/nps/getnpsscore/20151201000000/20151231000000",
        data=documented.HELLOCUSTOMER_NPS_REQUEST,
        headers=auth,
    )
    assert nps.status_code == 200, nps.get_data(as_text=True)


# --- SignalVine ---------------------------------------------------------------------------
# signalvine.md, "What happened to my update?": the command status in its three states.
# The article's values are placeholders ("<command id>", "<time the server received the
# command>"), so the keys are the article's and the types what the placeholders say.
COMMAND_RUNNING = {
    "commandId": "<command id>",
    "name": "<name of command issued>",
    "from": "<the person / token that issued the command>",
    "created": "<time the server received the command>",
    "error": False,
    "complete": False,
}
COMMAND_DONE = {**COMMAND_RUNNING, "complete": True, "message": {}}
COMMAND_FAILED = {
    **COMMAND_DONE,
    "error": True,
    "trace": "<stack trace used for debugging>",
    "processor": "<the name of the processing agent>",
}


def test_signalvine_answers_are_shaped_like_the_article_and_docbox(tmp_path: Path) -> None:
    app = SignalVineSim(polls_to_complete=2)
    answers = recording(app)
    kit = kit_for("signalvine")
    bad = kit.contact(2)
    assert kit.reject is not None
    kit.reject(app, bad, "blocked")

    def run(connector: Any) -> None:
        outcome, _ = deliver(connector, [kit.contact(1)], tmp_path / "ok")
        assert [s for s, _r in outcome.values()] == ["sent"]
        outcome, _ = deliver(connector, [bad], tmp_path / "bad")
        assert [s for s, _r in outcome.values()] == ["failed"]
        app.opt_out(kit.contact(1).fields["phone"])
        app.seed("", "+15552813987")  # docbox's participant without a customerId
        list(connector.pull("unsubscribes", None, datetime.now(UTC)))

    (tmp_path / "ok").mkdir()
    (tmp_path / "bad").mkdir()
    served(app, "signalvine", tmp_path, run)
    # "If your API POST is accepted, you will receive a 202 response back"
    # (and its Location header; no body is shown, and none is given)
    uploads = answered(answers, "POST", "/participants")
    assert uploads and all(upload == (202, None) for upload in uploads), uploads
    polls = answered(answers, "GET", "/v2/commands/")
    assert {s for s, _b in polls} == {200}
    states = {(b["complete"], b["error"]): b for _s, b in polls}
    assert set(states) == {(False, False), (True, False), (True, True)}
    assert differences(states[(False, False)], COMMAND_RUNNING) == []
    assert differences(states[(True, False)], COMMAND_DONE, extra_ok=True) == []
    assert differences(states[(True, True)], COMMAND_FAILED, extra_ok=True) == []
    ((status, page),) = answered(answers, "GET", "/v1/programs/")
    assert status == 200
    # docbox shows the simple representation of an item; syncd asks type=full, which
    # holds it and more (active, profile, ...): the document's keys, with its types
    assert differences(page, json.loads(documented.SIGNALVINE_PARTICIPANTS), extra_ok=True) == []
    envelope = set(json.loads(documented.SIGNALVINE_PARTICIPANTS))
    assert set(page) == envelope


class SignalVineExamples(SignalVineSim):
    """SignalVine answering the participant list with docbox's example, verbatim, and every
    poll with one of the article's command states."""

    status: dict[str, Any] = COMMAND_DONE

    def participants(self, request: Request, program: str) -> Response:
        return Response(documented.SIGNALVINE_PARTICIPANTS, 200, mimetype="application/json")

    def command(self, request: Request, command: str) -> Response:
        return Response(json.dumps(self.status), 200, mimetype="application/json")


def test_signalvine_connector_reads_docbox_participants_verbatim(tmp_path: Path) -> None:
    pages = served(
        SignalVineExamples(),
        "signalvine",
        tmp_path,
        lambda c: list(c.pull("unsubscribes", None, datetime.now(UTC))),
    )
    # three participants and none says `active: false`: no opt-out, and the pull ends
    assert [r for p in pages for r in p.records] == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (COMMAND_DONE, Status.SENT),
        (COMMAND_FAILED, Status.FAILED),
        (COMMAND_RUNNING, Status.IN_FLIGHT),  # held, polled again by the next run
    ],
    ids=["complete", "complete-with-errors", "not-complete"],
)
def test_signalvine_connector_reads_the_articles_command_states(
    tmp_path: Path, status: dict[str, Any], expected: Status
) -> None:
    """Through the delivery loop: a command with errors that name no row (the article's
    `message` is only a placeholder) refuses the upload whole, which fails a lone row."""
    app = SignalVineExamples()
    app.status = status
    kit = kit_for("signalvine")
    outcome, _ = served(
        app, "signalvine", tmp_path, lambda c: deliver(c, [kit.contact(1)], tmp_path)
    )
    assert [s for s, _r in outcome.values()] == [expected.value]


# --- Altcraft -----------------------------------------------------------------------------
# altcraft.md shows its answers only as pictures ("If the request is successful, the
# following message will appear"); NOTES.md gives the envelope from the developer guide:
# `{"error": 0, "error_text": "Successful operation", ...}`, start_batch adding `result`
ENVELOPE = {"error": 0, "error_text": "Successful operation"}


def test_altcraft_answers_are_the_guides_envelope_and_take_the_articles_requests(
    tmp_path: Path,
) -> None:
    app = AltcraftSim(trigger_ids=(1, 5, 7))
    answers = recording(app)
    kit = kit_for("altcraft")

    def run(connector: Any) -> None:
        outcome, _ = deliver(connector, [kit.contact(i) for i in range(3)], tmp_path)
        assert {s for s, _r in outcome.values()} == {"sent"}
        connector.push([kit.contact(9)], lambda job, refused=(): None)
        assert connector.check()

    served(app, "altcraft", tmp_path, run)
    assert {s for _m, _p, s, _b in answers} == {200}
    for _status, body in answered(answers, "POST", "/api/v1.1/"):
        assert body["error"] == 0 and body["error_text"] == "Successful operation"
    ((_s, batch),) = answered(answers, "POST", "/start_batch")
    assert differences(batch, {**ENVELOPE, "result": ["profile id"]}) == []
    # the article's own requests, verbatim but for the token (the sandbox's)
    client = Client(app)
    for body in (
        {
            "token": "abcdefghklmnopqrstzxc",
            "id": 1,
            "matching": "email",
            "email": "zaycev@example.com",
        },
        {
            "token": "abcdefghklmnopqrstzxc",
            "id": 5,
            "matching": "custom",
            "field_name": "vk_id",
            "field_value": "123456",
        },
    ):
        answer = client.post(
            "/api/v1.1/campaigns/triggers/start", json={**body, "token": app.token}
        )
        assert answer.status_code == 200
        assert differences(answer.get_json(), ENVELOPE, extra_ok=True) == []
        assert answer.get_json()["error"] == 0
    refused = client.post(
        "/api/v1.1/campaigns/triggers/start", json={"token": "abcdefghklmnopqrstzxc", "id": 1}
    )
    assert refused.status_code == 200  # "Every answer is HTTP 200 with an envelope"
    assert differences(refused.get_json(), ENVELOPE) == []
    assert refused.get_json()["error"] != 0


class AltcraftBare(AltcraftSim):
    """Altcraft answering a single launch with the bare envelope the guide documents."""

    def start(self, request: Request) -> Response:
        return Response(json.dumps(ENVELOPE), 200, mimetype="application/json")


def test_altcraft_connector_reads_the_bare_envelope(tmp_path: Path) -> None:
    kit = kit_for("altcraft")
    results = served(
        AltcraftBare(),
        "altcraft",
        tmp_path,
        lambda c: c.push([kit.contact(1)], lambda j, r=(): None),
    )
    assert [r.status for r in results] == [Status.SENT]


def test_signalvine_lists_the_simple_representation_unless_asked_for_the_full(
    tmp_path: Path,
) -> None:
    """docbox: "you can append the type parameter to any route to select either the simple
    or full representation", and its lists show the simple one (id, customerId, programId,
    phone). The simulator answered every list in full, so a client that forgot type=full
    would have read `active` there and never from SignalVine."""
    app = SignalVineSim()
    app.seed("C1", "+15552813987")
    app.opt_out("C1")
    path = f"/v1/programs/{PROGRAM}/participants"

    def run(connector: Any) -> tuple[Any, Any, Any]:
        simple = connector.read(path, params={"active": "all"})
        full = connector.read(path, params={"active": "all", "type": "full"})
        pulled = list(connector.pull("unsubscribes", None, datetime.now(UTC)))
        return simple, full, pulled

    simple, full, pulled = served(app, "signalvine", tmp_path, run)
    (documented_item, *_) = json.loads(documented.SIGNALVINE_PARTICIPANTS)["items"]
    assert [set(i) for i in simple["items"]] == [set(documented_item)]
    assert full["items"][0]["active"] is False and "profile" in full["items"][0]
    assert [r["external_key"] for p in pulled for r in p.records] == ["C1"]  # it asks in full
