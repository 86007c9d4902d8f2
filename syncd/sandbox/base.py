"""What every simulator shares: WSGI dispatch, a request log, fault switches, a server.

A simulator is written from the vendor's document and imports nothing from
`syncd.vendors` (shared code would share its mistakes). Subclasses declare werkzeug
`Rule`s whose endpoints are method names, and keep their own state.

Faults are switched from Python (`sim.faults.add(...)`) or over HTTP, so a test can drive a
`syncd run` subprocess:

    POST /_sandbox/faults   {"kind": "status", "status": 503, "count": 2, "path": "/api/v1/contacts"}
    POST /_sandbox/faults   {"kind": "down", "status": 503}          every call, until reset
    POST /_sandbox/reject   {"value": "bad@example.com", "reason": "invalid email"}
    POST /_sandbox/reset    clear faults (state is kept; ?all=1 clears state too)
    GET  /_sandbox/state    the simulator's state and request counts, as JSON

Fault kinds (each for the next `count` matching requests, or every one with "down"; with
`"after": n`, once n matching requests have gone through untouched):
    status      answer `status` (with `retry_after` if given) without processing
    drop        close the connection without processing (reset before the vendor acts)
    drop_after  process the request, then close without answering (outcome unknown)
    delay       process, then wait `seconds` before answering (slow answer, read timeout)
    malformed   process, then answer 200 with a body that is not JSON
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import orjson
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

FAULT_KINDS = ("status", "drop", "drop_after", "delay", "malformed", "down")
# an integer of 19 digits or more: every ASCII digit made "0", then one substring search
# (a tenth of the time `re.search(rb"\d{19}")` takes over a 3,000-contact import)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBER = b"0" * 19


class _JSON:
    """What `Request.get_json` parses with: orjson (a quarter of the json module's time for
    an import of 3,000 contacts), and the json module for what orjson refuses (NaN, a lone
    surrogate) or reads otherwise (an integer of 19 digits or more, which orjson makes a
    float), so a body is accepted or refused, and read, exactly as the json module would."""

    @staticmethod
    def loads(data: str | bytes, **kwargs: Any) -> Any:
        raw = data if isinstance(data, bytes) else data.encode()
        if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ZERO):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        return json.loads(data, **kwargs)

    dumps = staticmethod(json.dumps)


class _Request(Request):
    json_module = _JSON  # type: ignore[assignment]  # werkzeug calls its loads and dumps


@dataclass
class Fault:
    kind: str
    count: int = 1
    status: int = 503
    retry_after: str | None = None
    seconds: float = 0.0
    path: str | None = None  # only requests whose path starts with this
    method: str | None = None
    after: int = 0  # let this many matching requests through first (the n-th call fails)

    def matches(self, request: Request) -> bool:
        return (self.path is None or request.path.startswith(self.path)) and (
            self.method is None or request.method == self.method
        )


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    body: bytes
    headers: dict[str, str]
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


class Faults:
    """The switches. Thread-safe: the server answers on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self.rejections: dict[str, str] = {}

    def add(self, kind: str, **kw: Any) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        fault = Fault(kind=kind, **kw)
        if kind == "down":
            fault.count = -1
        with self._lock:
            self._queue.append(fault)
        return fault

    def reject(self, value: str, reason: str = "rejected by the sandbox") -> None:
        """Make the vendor refuse this one contact (matched on its identifying value)."""
        with self._lock:
            self.rejections[value.lower()] = reason

    def rejection(self, *values: str | None) -> str | None:
        with self._lock:
            for v in values:
                if v and v.lower() in self.rejections:
                    return self.rejections[v.lower()]
        return None

    def take(self, request: Request) -> Fault | None:
        with self._lock:
            for fault in self._queue:
                if fault.matches(request):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    if fault.count > 0:
                        fault.count -= 1
                        if fault.count == 0:
                            self._queue.remove(fault)
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self.rejections.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._queue]


class Simulator:
    """Base WSGI app of a vendor simulator."""

    name: ClassVar[str]
    rules: ClassVar[list[Rule]]
    # header values never kept in the request log
    secret_headers: ClassVar[tuple[str, ...]] = ("authorization",)

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.faults = Faults()
        self.log: list[Recorded] = []
        self.lock = threading.RLock()
        self.url_map = Map([rule.empty() for rule in self.rules])  # a rule binds to one Map

    # --- state a test or the control API can read -------------------------------------
    def state(self) -> dict[str, Any]:
        """The simulator's vendor-side state as JSON-able data (override to add more)."""
        return {}

    def reset_state(self) -> None:
        """Forget everything the vendor holds (override)."""

    def count(self, path: str = "", method: str | None = None) -> int:
        """How many requests reached the vendor logic (faulted ones excluded) under `path`."""
        with self.lock:
            return sum(
                1
                for r in self.log
                if r.path.startswith(path) and (method is None or r.method == method)
            )

    def requests(self, path: str = "", method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.log
                if r.path.startswith(path) and (method is None or r.method == method)
            ]

    # --- WSGI -------------------------------------------------------------------------
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = _Request(environ)
        if request.path.startswith("/_sandbox/"):
            return self._control(request)(environ, start_response)
        fault = self.faults.take(request)
        if fault is not None and fault.kind in ("status", "down"):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            body = json.dumps({"error": "injected by the sandbox", "status": fault.status})
            return Response(body, fault.status, headers, mimetype="application/json")(
                environ, start_response
            )
        if fault is not None and fault.kind == "drop":
            _drop(environ)
            return []
        data = request.get_data()
        with self.lock:
            self.log.append(
                Recorded(
                    request.method,
                    request.path,
                    request.query_string.decode("latin-1"),
                    data,
                    {
                        k: ("<redacted>" if k.lower() in self.secret_headers else v)
                        for k, v in request.headers.items()
                    },
                    self.clock(),
                )
            )
        response = self.dispatch(request)
        if fault is not None and fault.kind == "drop_after":
            _drop(environ)
            return []
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "malformed":
            response = Response("<html>upstream error", 200, mimetype="application/json")
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        adapter = self.url_map.bind_to_environ(request.environ)
        try:
            endpoint, args = adapter.match()
            handler = getattr(self, str(endpoint))
            result: Response = handler(request, **args)
            return result
        except HTTPException as exc:
            return Response(
                json.dumps({"error": exc.description}),
                exc.code or 500,
                mimetype="application/json",
            )

    def _control(self, request: Request) -> Response:
        action = request.path.removeprefix("/_sandbox/")
        if action == "state":
            counts = Counter(f"{r.method} {r.path}" for r in self.requests())
            return json_response(
                {
                    "vendor": self.name,
                    "state": self.state(),
                    "requests": dict(counts),
                    "faults": self.faults.describe(),
                }
            )
        if request.method != "POST":
            return json_response({"error": "use POST"}, 405)
        spec = request.get_json(silent=True) or {}
        if action == "faults":
            try:
                self.faults.add(**spec)
            except (TypeError, ValueError) as exc:
                return json_response({"error": str(exc)}, 400)
            return json_response({"ok": True})
        if action == "reject":
            self.faults.reject(spec["value"], spec.get("reason", "rejected by the sandbox"))
            return json_response({"ok": True})
        if action == "reset":
            self.faults.clear()
            if request.args.get("all"):
                with self.lock:
                    self.log.clear()
                    self.reset_state()
            return json_response({"ok": True})
        return json_response({"error": f"unknown control {action!r}"}, 404)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`data` as JSON: by orjson (a tenth of the json module's time for an import session's
    3,000-contact answer), by the json module where orjson refuses a value."""
    try:
        body: bytes | str = orjson.dumps(data)
    except TypeError:
        body = json.dumps(data)
    return Response(body, status, headers, mimetype="application/json")


def _drop(environ: dict[str, Any]) -> None:
    """Close the client connection at once, with a TCP reset."""
    sock: socket.socket | None = environ.get("werkzeug.socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# a dropped connection makes werkzeug log "write() before start_response": expected here
logging.getLogger("werkzeug").setLevel(logging.CRITICAL)


class Server:
    """Serve one simulator on loopback in a background thread. Use as a context manager."""

    def __init__(self, app: Simulator, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self._server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self._server.daemon_threads = True  # type: ignore[attr-defined]  # ThreadingMixIn
        self.host = host
        self.port = self._server.port
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"sandbox-{app.name}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Server:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Stack:
    """Several simulators served together (`syncd sandbox`, `syncd demo`, tests)."""

    servers: dict[str, Server] = field(default_factory=dict)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.servers.values():
            server.stop()

    def add(self, app: Simulator, port: int = 0) -> Server:
        server = Server(app, port=port).start()
        self.servers[app.name] = server
        return server
