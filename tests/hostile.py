"""A hostile HTTP peer: a raw socket server that answers the way broken networks, gateways
and vendors do — cut bodies, chunked and gzip garbage, drips, floods, redirects — which a
well-behaved WSGI simulator cannot.

As a **proxy** it stands between a connector and its simulator: each request is either
answered before it reaches the vendor (the vendor cannot have acted) or forwarded, so the
simulator really acts, and then its answer is replaced by a hostile one. `ANSWERS` names
every answer; `HostileProxy.plan(answer, when, count)` arms the next requests."""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Answer = Callable[[socket.socket, bytes], None]  # (client socket, the upstream answer)


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _head(status: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers.items())]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(
    status: str, body: bytes, content_type: str = "application/json", **headers: str
) -> Answer:
    def answer(sock: socket.socket, _up: bytes) -> None:
        _send(sock, _head(status, {"Content-Type": content_type, **headers}, len(body)) + body)

    return answer


def cut_body(sock: socket.socket, upstream: bytes) -> None:
    """The vendor's own answer, cut in the middle of its body (IncompleteRead)."""
    body = upstream.partition(b"\r\n\r\n")[2]
    body = body or b'{"result": "ok", "padding": "' + b"x" * 200 + b'"}'
    _send(sock, _head("200 OK", {"Content-Type": "application/json"}, len(body)))
    _send(sock, body[: max(1, len(body) // 2)])


def truncated_json(sock: socket.socket, upstream: bytes) -> None:
    """The vendor's own answer, whole as HTTP, holding the first half of its JSON (a proxy
    that lost the rest and framed what it had)."""
    body = upstream.partition(b"\r\n\r\n")[2]
    body = body[: max(1, len(body) // 2)]
    _send(sock, _head("200 OK", {"Content-Type": "application/json"}, len(body)) + body)


def chunked_garbage(sock: socket.socket, _up: bytes) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    _send(sock, head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{\r\n")


def gzip_garbage(sock: socket.socket, _up: bytes) -> None:
    body = gzip.compress(b'{"ok": true}')[:6] + b"not gzip at all"
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    _send(sock, _head("200 OK", headers, len(body)) + body)


def drip(sock: socket.socket, _up: bytes) -> None:
    """Headers at once, then a body of a byte every 0.2 s for a minute."""
    _send(sock, _head("200 OK", {"Content-Type": "application/json"}, 300))
    for _ in range(300):
        try:
            sock.sendall(b" ")
        except OSError:
            return
        time.sleep(0.2)


def drip_headers(sock: socket.socket, _up: bytes) -> None:
    """The status line and headers a byte every 0.2 s: a read timeout per byte never fires."""
    for byte in _head("200 OK", {"Content-Type": "application/json", "X-Pad": "p" * 300}, 2):
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(0.2)


def flood(sock: socket.socket, _up: bytes) -> None:
    """An endless 200 body (no length, no end)."""
    _send(sock, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    block = b"[" * 65536
    for _ in range(100_000):
        try:
            sock.sendall(block)
        except OSError:
            return


NESTED = b"[" * 100_000 + b"]" * 100_000
HTML_502 = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

ANSWERS: dict[str, Answer] = {
    "cut body": cut_body,
    "truncated JSON": truncated_json,
    "chunked garbage": chunked_garbage,
    "gzip garbage": gzip_garbage,
    "HTML 500": whole("500 Internal Server Error", HTML_502.replace(b"502", b"500"), "text/html"),
    "HTML 502": whole("502 Bad Gateway", HTML_502, "text/html"),
    "HTML 504": whole("504 Gateway Timeout", HTML_502.replace(b"502", b"504"), "text/html"),
    "503 without Retry-After": whole("503 Service Unavailable", b"{}"),
    "401": whole("401 Unauthorized", b'{"message": "unauthorized"}'),
    "429": whole("429 Too Many Requests", b'{"message": "slow down"}', **{"Retry-After": "1"}),
    "429 for 2 s": whole(
        "429 Too Many Requests", b'{"message": "slow down"}', **{"Retry-After": "2"}
    ),
    "307 to another host": whole(
        "307 Temporary Redirect", b"", **{"Location": "http://127.0.0.2:9/steal"}
    ),
    "404": whole("404 Not Found", b"<html>Not Found</html>", "text/html"),
    "413": whole(
        "413 Payload Too Large", b"<html>413 Request Entity Too Large</html>", "text/html"
    ),
    # a proxy in front of the vendor that takes no JSON (the vendor's own 415 reads alike)
    "415": whole(
        "415 Unsupported Media Type", b"<html>415 Unsupported Media Type</html>", "text/html"
    ),
    "slow drip": drip,
    "header drip": drip_headers,
    "huge body": flood,
    "nested JSON": whole("200 OK", NESTED),
    "HTML 200": whole("200 OK", b"<html><body>Welcome</body></html>", "text/html"),
}


@dataclass
class _Plan:
    answer: str
    forward: bool  # True: the vendor acts first, then the answer is replaced
    count: int
    path: str | None = None  # only requests whose path starts with this
    method: str | None = None
    after: int = 0  # let this many matching requests through first

    def matches(self, method: str, path: str) -> bool:
        return (self.path is None or path.startswith(self.path)) and (
            self.method is None or method == self.method
        )


class HostileProxy:
    """A loopback HTTP/1.1 proxy to `upstream` (a simulator's URL) that can lie."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._plans: list[_Plan] = []
        self._lock = threading.Lock()
        self.seen: list[str] = []  # request lines received
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)  # how long stopping it may wait
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HostileProxy:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def plan(
        self,
        answer: str,
        *,
        acted: bool,
        count: int = 1,
        path: str | None = None,
        method: str | None = None,
        after: int = 0,
    ) -> None:
        """The next `count` matching requests (once `after` went through untouched) get
        `answer`, after (`acted`) or instead of the vendor's own."""
        assert answer in ANSWERS, answer
        with self._lock:
            self._plans.append(_Plan(answer, acted, count, path, method, after))

    def clear(self) -> None:
        """Forget every plan: from now on the vendor's own answers pass."""
        with self._lock:
            self._plans.clear()

    def _next(self, line: str) -> _Plan | None:
        method, _, rest = line.partition(" ")
        path = rest.partition(" ")[0].partition("?")[0]
        with self._lock:
            for plan in self._plans:
                if plan.matches(method, path):
                    if plan.after > 0:
                        plan.after -= 1
                        continue
                    plan.count -= 1
                    if plan.count <= 0:
                        self._plans.remove(plan)
                    return plan
            return None

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            client.settimeout(10)
            request = _read_request(client)
            if request is None:
                return
            line = request.split(b"\r\n", 1)[0].decode("latin-1")
            self.seen.append(line)
            plan = self._next(line)
            upstream = b""
            if plan is None or plan.forward:
                upstream = self._forward(request)
            if plan is None:
                _send(client, upstream)
                return
            ANSWERS[plan.answer](client, upstream)

    def _forward(self, request: bytes) -> bytes:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = [
            line
            for line in head.split(b"\r\n")
            if not line.lower().startswith((b"connection:", b"keep-alive:"))
        ]
        lines.append(b"Connection: close")
        with socket.create_connection(self.upstream, timeout=30) as up:
            up.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            chunks = []
            while chunk := up.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _read_request(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
