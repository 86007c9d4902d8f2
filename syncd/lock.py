"""The instance lock: a lock file beside the store (not the database file itself)."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from syncd.errors import LockHeldError, StoreError

NOTE_BYTES = 64 * 1024  # the most of a lock file read: its pid and what its owner says


def lock_path(store_path: Path) -> Path:
    """The lock file of the store at `store_path`: `<store>.lock`, beside it. Only a command
    that then sets up or writes the store makes it (`sync`, `pull`, the service; `prune`,
    `retry`, `withdraw` refuse a 0-byte store before they take the lock), and it stays when
    released: a 0-byte store with its lock file beside it is one syncd used before."""
    return store_path.with_name(store_path.name + ".lock")


class InstanceLock:
    """An exclusive `flock` on `<store>.lock`, holding the owner's pid (its first line) and
    what the owner says to other processes (`note`, its second). Released on exit, and by
    the kernel when the process dies, so a crash never leaves a stale lock."""

    def __init__(self, store_path: Path) -> None:
        self.path = lock_path(store_path)
        self._fd: int | None = None

    def acquire(self) -> InstanceLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:  # a lock file a command run as root left behind
            raise StoreError(
                f"the lock file {self.path} cannot be opened by uid {os.geteuid()}: {exc.strerror}",
                hint="make it (and the store beside it) belong to the user syncd runs as, "
                "e.g. `chown syncd:syncd-analysts` it, or remove it while no syncd runs",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").partition("\n")[0].strip()
            os.close(fd)
            raise LockHeldError(
                f"another syncd (pid {holder or 'unknown'}) is running on this store ({self.path})",
                hint="wait for it to finish, or stop the service first",
            ) from None
        try:
            os.ftruncate(fd, 0)  # (a dead owner's note goes with its pid)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:  # a full disk (ENOSPC), an I/O error: the flock goes with fd
            os.close(fd)
            raise StoreError(
                f"the lock file {self.path} cannot be written: {exc.strerror or exc}",
                hint="free space on its file system (`df`), then start syncd again",
            ) from None
        self._fd = fd
        return self

    def check(self) -> bool:
        """Whether the lock file is still the one held (True), after making it so again if
        it was removed or replaced (`rm syncd.db.lock`, taken for a stale one): the flock
        stays on the removed file, and a `syncd sync` would make a new one and run beside
        the holder. False: another process took the new file first; the lock is lost. True
        also when the file cannot be looked at (a hung or failing file system: nothing
        tells it is gone). No-op (True) unless held."""
        if self._fd is None:
            return True
        try:
            held, there = os.fstat(self._fd), os.stat(self.path)
            if (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino):
                return True
        except FileNotFoundError:
            pass
        except OSError:
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError:
            return True  # (nobody else can make it either)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        note = os.pread(self._fd, NOTE_BYTES, 0)  # the pid, and a stall said
        try:
            os.ftruncate(fd, 0)
            os.write(fd, note)
        except OSError:
            pass  # held all the same: the pid is for people to read
        os.close(self._fd)
        self._fd = fd
        return True

    def note(self, said: dict[str, Any] | None) -> None:
        """Say `said` to other processes (`read_note`), or nothing more (None): the service's
        watchdog says a stalled job so, for `syncd status`. No-op unless held."""
        if self._fd is None:
            return
        data = f"{os.getpid()}\n".encode()
        if said is not None:
            data += json.dumps(said, separators=(",", ":")).encode() + b"\n"
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> InstanceLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_note(store_path: Path) -> tuple[int, dict[str, Any]] | None:
    """The pid and the `note` of the syncd holding the store's lock, read without taking
    it; None when there is none: no lock file, no note, or its process is gone (a note a
    killed process left stays until the next takes the lock): no flock held on the file
    (its pid may be another process's since), or no process of that pid."""
    try:
        with lock_path(store_path).open("rb") as fh:
            ino = os.fstat(fh.fileno()).st_ino
            pid_line, _, rest = fh.read(NOTE_BYTES).partition(b"\n")
        pid = int(pid_line)
        said = json.loads(rest) if rest.strip() else None
    except (OSError, ValueError):  # (a note read while it was rewritten: none this time)
        return None
    if not isinstance(said, dict) or pid <= 0:
        return None
    if not _flocked(ino):  # a killed owner's, its pid since reused by another process
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's (the service's, to an analyst): running
    return pid, said


def held(store_path: Path) -> bool:
    """Whether some process holds the store's lock (as `_flocked` tells it; True when that
    cannot be told), read without taking it. No lock file: none does."""
    try:
        ino = os.stat(lock_path(store_path)).st_ino
    except OSError:
        return False
    return _flocked(ino)


def _flocked(ino: int) -> bool:
    """Whether some process holds a flock on the file of inode `ino`, as /proc/locks tells
    it, without taking one (a shared lock taken to look would refuse a syncd starting that
    instant). Matched by the inode alone: /proc/locks names a file's device as its super
    block does, which a btrfs subvolume's stat does not. True when it cannot be read (not
    Linux, no /proc): the pid's process alone tells it then."""
    try:
        with open("/proc/locks", "rb") as fh:
            table = fh.read()
    except OSError:
        return True
    for line in table.splitlines():
        fields = line.split()  # 1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
        if b"FLOCK" in fields and b"WRITE" in fields:
            where = next((f for f in fields if f.count(b":") == 2), b"")
            if where.rpartition(b":")[2] == str(ino).encode():
                return True
    return False
