"""Named places where the crash test kills syncd, to prove that a crash anywhere loses
nothing and sends no trigger twice.

`SYNCD_CRASH_AT=name` (or `name:n`, the n-th time that point is reached) makes the
process SIGKILL itself there — no cleanup, no `finally`, exactly like a power cut or the
OOM killer. `SYNCD_HANG_AT=name` (or `name:n`) makes the thread that reaches it wait there
for good, the rest of the process running on — a deadlock, a SQLite call that never
returns, as far as anything outside that thread can tell: how `syncd run`'s watchdog is
shown to notice a stalled job. Unset (always, outside tests) a point costs two string
comparisons.
"""

from __future__ import annotations

import os
import signal
import threading

POINTS = (
    "diff_committed",  # the diff and its pending deliveries are committed, nothing sent
    "diff_piece_committed",  # a first sync committed a piece of its diff, not the rest
    "before_ack_recorded",  # the vendor answered a push; its outcome is not yet recorded
    "job_recorded",  # an async job (eSputnik import, SignalVine command) is about to be polled
    "settle_behind",  # an ended job's outcome is about to be written behind the next request
    "token_renewed",  # a Dropthought token was just renewed
    "page_fetched",  # a pull page was fetched; it and its cursor are not yet committed
)

_target, _, _nth = (os.environ.get("SYNCD_CRASH_AT") or "").partition(":")
_remaining = int(_nth or 1)
_hang, _, _hang_nth = (os.environ.get("SYNCD_HANG_AT") or "").partition(":")
_hang_remaining = int(_hang_nth or 1)


def crashpoint(name: str) -> None:
    """Die here, or hang here, if a test asked for it."""
    global _remaining, _hang_remaining
    if name == _target:
        _remaining -= 1
        if _remaining <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
    if name == _hang:
        _hang_remaining -= 1
        if _hang_remaining <= 0:
            threading.Event().wait()  # never set: this thread never goes on
