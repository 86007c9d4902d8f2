"""eSputnik's import sessions as the vendor's advocate reads them: sessions a restart
finds eSputnik no longer knows, refusals and ERROR descriptions that run on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.wrappers import Request, Response

from syncd.errors import RetriableError
from syncd.push import Deliverer
from syncd.sandbox.base import Server, json_response
from syncd.sandbox.esputnik import ESputnikSim
from syncd.state import Store
from syncd.vendors.base import Status
from tests.kits.esputnik import KIT
from tests.test_push import NOW, queue
from tests.vendors.test_contract import make_connector


def test_sessions_a_restart_finds_expired_are_sent_again_without_stopping_the_vendor(
    tmp_path: Path,
) -> None:
    """syncd stopped with import sessions open and came back after eSputnik had forgotten
    them (how long it keeps a session's status is not documented). Every recorded session
    answers 404: each is a session lost, not a moved endpoint -- the contacts go again in
    this run, and eSputnik is not stopped as if its base_url were wrong."""
    app = ESputnikSim(polls_to_finish=1)
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        store = Store.open(tmp_path / "s.db")
        contacts = [KIT.contact(i) for i in range(4)]
        queue(
            store, "esputnik", [(c, "in_flight", f"gone-{i // 2}") for i, c in enumerate(contacts)]
        )
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        rows = {r["key"]: r["status"] for r in store.query("SELECT key, status FROM deliveries")}
        store.close()
    assert out.stopped is None, out.stopped
    assert rows == {c.key: "sent" for c in contacts}
    assert {c["externalCustomerId"] for c in app.contacts()} == {c.key for c in contacts}


def test_a_moved_status_call_still_stops_the_vendor_after_reopened_sessions(
    tmp_path: Path,
) -> None:
    """Reopened sessions are left out of the row of 404s, not the sessions posted after
    them: when every import status is a 404 (a moved call), the first two posted in this
    run still stop eSputnik, everything pending."""
    app = ESputnikSim(polls_to_finish=1)
    app.faults.add("down", status=404, path="/api/v1/importstatus/")
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path, extra="batch_size = 2\n")
        store = Store.open(tmp_path / "s.db")
        contacts = [KIT.contact(i) for i in range(6)]
        queue(store, "esputnik", [(c, "in_flight", f"gone-{i}") for i, c in enumerate(contacts)])
        out = Deliverer(store, connector, lambda: NOW, max_attempts=3).run()
        rows = {r["key"]: r["status"] for r in store.query("SELECT key, status FROM deliveries")}
        store.close()
    assert out.stopped and "2 import sessions in a row" in out.stopped, out.stopped
    assert set(rows.values()) == {"pending"}
    assert app.count("/api/v1/contacts", "POST") == 2


class Verbose(ESputnikSim):
    """eSputnik whose words run on: every refusal and every ERROR description is `WORDS`."""

    WORDS = "the import was cancelled: " + "x" * 1_000_000

    def _invalid(self, contact: dict[str, Any]) -> str | None:
        refused = super()._invalid(contact)
        return refused and self.WORDS

    def importstatus(self, request: Request, session: str) -> Response:
        answer = {"status": "ERROR", "timestamp": "2026-01-01T00:00:00", "description": self.WORDS}
        return json_response(answer)


def test_the_vendors_words_are_kept_short_in_every_contacts_reason(tmp_path: Path) -> None:
    """A refusal's `error` and an ERROR session's `description` went whole into the reason
    of each contact: a megabyte of words in an answer (under the 32 MiB cap) was a
    megabyte in every delivery row of the batch -- 3,000 of them a session. The reason
    keeps the vendor's first words, cut as an HTTP error's text is."""
    app = Verbose(polls_to_finish=1)
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        contacts = [KIT.contact(i) for i in range(3)]
        KIT.reject(app, contacts[0], "refused")
        results = connector.push(contacts, lambda job, refused=(): None)
    assert {r.status for r in results} == {Status.FAILED}
    for r in results:
        assert r.reason and r.reason.startswith(("the import was", "import session failed: the"))
        assert len(r.reason) < 400, len(r.reason)


class Named(ESputnikSim):
    """eSputnik giving its import sessions ids of the test's choosing."""

    session_id = ""

    def contacts_post(self, request: Request) -> Response:
        response = super().contacts_post(request)
        answer = json.loads(response.get_data())
        with self.lock:
            self._sessions[self.session_id] = self._sessions.pop(answer["asyncSessionId"])
        answer["asyncSessionId"] = self.session_id
        response.set_data(json.dumps(answer))
        return response


@pytest.mark.parametrize("session_id", ["S?x=1", "S#1", "S 1", "S%41", "../contacts"])
def test_a_session_id_is_polled_as_one_path_segment(tmp_path: Path, session_id: str) -> None:
    """The spec's `sessionId` is a path parameter: its value is one segment of the path.
    Put in the URL as it came, `S?x=1` polled session `S` (another session's status would
    have answered for this batch), `S#1` session `S`, and `../contacts` polled
    `GET /api/v1/contacts`, whose 405 stopped eSputnik as if base_url were wrong."""
    app = Named(polls_to_finish=1)
    app.session_id = session_id
    with Server(app) as server:
        connector = make_connector(KIT, server.url, tmp_path)
        if "/" in session_id:  # werkzeug routes no decoded slash to `<session>`: a 404
            with pytest.raises(RetriableError, match="does not know import session"):
                connector.push([KIT.contact(1)], lambda job, refused=(): None)
        else:
            results = connector.push([KIT.contact(1)], lambda job, refused=(): None)
            assert [r.status for r in results] == [Status.SENT], results
        polled = [r.path for r in app.requests(method="GET")]
    assert polled and all(p.startswith("/api/v1/importstatus/") for p in polled), polled
