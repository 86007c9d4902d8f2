"""Run a generator in a forked child process and consume what it yields in this one.

The nightly diff has two halves that need not wait for each other: parsing and
fingerprinting a million-row export (pure CPU in Python, which holds the GIL) and comparing
and recording the few new and changed rows (mostly SQLite). A forked child does the first
while the parent does the second, on the second core that a thread could not use.

The child inherits what the parent had built (the sorted known fingerprints, the open
export) without copying, sends items over a pipe as it makes them, and leaves with
`os._exit` through multiprocessing: it never closes or touches the parent's SQLite
connection. If the parent stops early (an error, a guard, a signal), the child is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import multiprocessing
import pickle
import threading
import traceback
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import TypeVar

from syncd.errors import SourceError

T = TypeVar("T")
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1024 * 1024  # the most an unprivileged process may ask for by default
INBOX_BYTES = 2 * 1024 * 1024


def forked(items: Iterator[T], *, what: str) -> Iterator[T]:
    """Yield what `items` yields, computed in a forked child. `what` names the work in
    the error raised when the child fails.

    A thread drains the pipe into an inbox as items arrive, so the child does not wait
    while this process is busy (SQLite releases the GIL) and the two halves overlap. The
    inbox holds at most `INBOX_BYTES` of pickled items: when this side is the slower (a
    first sync, where every row is new) the child waits, and memory stays bounded.
    """
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    with contextlib.suppress(OSError):  # Linux: room for a few items, so the child rarely waits
        fcntl.fcntl(receive.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    child = ctx.Process(target=_child, args=(items, send), daemon=True, name="syncd-scan")
    child.start()
    send.close()
    inbox = _Inbox(INBOX_BYTES)
    drain = threading.Thread(target=_drain, args=(receive, inbox), daemon=True)
    drain.start()
    try:
        while True:
            message = inbox.get()
            kind, item = ("eof", None) if message is None else pickle.loads(message)
            if kind == "item":
                yield item  # type: ignore[misc]
            elif kind == "error":
                raise SourceError(f"{what}: {item}")
            elif kind == "eof":
                child.join()
                raise SourceError(
                    f"{what}: the reading process ended without finishing "
                    f"(exit code {child.exitcode})",
                    hint="look for an out-of-memory kill in the system log, then run again",
                )
            else:
                return
    finally:
        if child.is_alive():
            child.kill()
        inbox.close()
        child.join()
        drain.join()
        receive.close()


class _Inbox:
    """Messages read ahead of the consumer, up to `limit` bytes; `None` is the end."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size, self.closed = limit, 0, False
        self.messages: deque[bytes | None] = deque()
        self.changed = threading.Condition()

    def put(self, message: bytes | None) -> None:
        with self.changed:
            while self.size > self.limit and not self.closed:
                self.changed.wait()
            self.messages.append(message)
            self.size += len(message or b"")
            self.changed.notify_all()

    def get(self) -> bytes | None:
        with self.changed:
            while not self.messages:
                self.changed.wait()
            message = self.messages.popleft()
            self.size -= len(message or b"")
            self.changed.notify_all()
            return message

    def close(self) -> None:
        """The consumer stopped: never make the drain wait again."""
        with self.changed:
            self.closed = True
            self.changed.notify_all()


def _drain(receive: Connection, inbox: _Inbox) -> None:
    """Move messages from the pipe to the queue; unpickling is left to the consumer, so
    this thread needs the GIL only briefly (the consumer is busy in Python)."""
    while True:
        try:
            inbox.put(receive.recv_bytes())
        except (EOFError, OSError):
            inbox.put(None)
            return


def _child(items: Iterator[object], send: Connection) -> None:
    gc.freeze()  # the parent's objects are never collected here: no copy-on-write of them
    try:
        for item in items:
            send.send(("item", item))
    except BrokenPipeError:
        return  # the parent stopped listening
    except BaseException as exc:  # reported to the parent, which raises it
        detail = "".join(traceback.format_exception_only(exc)).strip()
        send.send(("error", str(exc) if getattr(exc, "hint", None) else detail))
        return
    send.send(("done", None))
