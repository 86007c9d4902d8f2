"""sd_notify(3) without a dependency: one datagram to $NOTIFY_SOCKET per message."""

from __future__ import annotations

import os
import socket

from syncd.log import printable


def notify(*lines: str) -> bool:
    """Send `READY=1`, `WATCHDOG=1`, `STATUS=…`, `STOPPING=1`; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    # one line each, as `printable` shows it: `systemctl status` prints STATUS= to the
    # operator's terminal, and a vendor's words in it (a failed run's error) may hold escapes
    message = "\n".join(printable(line.replace("\n", " ")) for line in lines).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            # never block the daemon on a receiver that is not reading (the message is
            # dropped instead: systemd reads its socket; a stalled test harness may not)
            sock.send(message, socket.MSG_DONTWAIT)
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), if it watches this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(int(usec) / 1_000_000 / 2, 0.5)
    except ValueError:
        return None
