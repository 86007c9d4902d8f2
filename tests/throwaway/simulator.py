"""The throw-away vendor's simulator, written from its connector's docstring alone."""

from __future__ import annotations

from typing import Any, ClassVar

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from syncd.sandbox.base import Simulator, json_response


class ThrowawaySim(Simulator):
    name = "throwaway"
    rules: ClassVar[list[Rule]] = [
        Rule("/contacts", methods=["POST"], endpoint="contacts"),
        Rule("/me", methods=["GET"], endpoint="me"),
    ]

    def __init__(self, *, token: str = "sandbox-token") -> None:
        super().__init__()
        self.token = token
        self.held: dict[str, dict[str, Any]] = {}

    def _authorised(self, request: Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.token}"

    def contacts(self, request: Request) -> Response:
        if not self._authorised(request):
            return json_response({"error": "bad token"}, 401)
        refused: dict[str, str] = {}
        for contact in (request.get_json() or {})["contacts"]:
            reason = self.faults.rejection(contact["id"])
            if reason:
                refused[contact["id"]] = reason
            else:
                with self.lock:
                    self.held[contact["id"]] = contact
        return json_response({"refused": refused})

    def me(self, request: Request) -> Response:
        if not self._authorised(request):
            return json_response({"error": "bad token"}, 401)
        return json_response({"ok": True})
