"""Throw-away: a made-up upsert vendor, small enough to read in one go.

`POST /contacts` with `{"contacts": [{"id": key, ...fields}]}` and a bearer token; the
answer names the ids it refused, `{"refused": {"id": "reason"}}`. `GET /me` proves the
token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from syncd.settings import Option, VendorConfig
from syncd.vendors.base import Connector, Contact, OnJob, Result, Status


class Throwaway(Connector):
    name = "throwaway"
    title = "Throw-away"
    kind = "upsert"
    max_batch = 50
    options: ClassVar[dict[str, Option]] = {
        "token": Option(required=True, secret=True, help="the API token")
    }
    field_names = frozenset({"email"})
    required_fields = ("email",)

    def __init__(self, config: VendorConfig, **kw: Any) -> None:
        super().__init__(config, **kw)
        self.http.session.headers["Authorization"] = f"Bearer {self.opts['token']}"

    def push(self, batch: Sequence[Contact], on_job: OnJob) -> list[Result]:
        body = {"contacts": [{"id": c.key, **c.fields} for c in batch]}
        refused = self.http.request("POST", "/contacts", json=body).json()["refused"]
        return [
            Result(c.key, Status.FAILED, refused[c.key])
            if c.key in refused
            else Result(c.key, Status.SENT)
            for c in batch
        ]

    def check(self) -> str:
        self.http.request("GET", "/me")
        return "token accepted"
