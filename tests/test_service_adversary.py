"""The service's instance lock and schedule under an adversarial environment (adv-service)."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
from pathlib import Path

import pytest

from syncd import lock as lockmod
from syncd.errors import LockHeldError, StoreError
from syncd.lock import InstanceLock
from tests.test_daemon import Notify, daemon_world, logged, start, wait


def test_a_lock_file_on_a_full_disk_stops_the_start_with_one_line_and_holds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock file is truncated, then the owner's pid written into it: on a full disk
    (ENOSPC) or one that errors (EIO), that write raised a bare OSError, a traceback
    (exit 1, restarted every 10 s), and the fd, still holding the flock, was never closed.
    Now one StoreError naming the file, and the lock is not held."""
    store = tmp_path / "syncd.db"
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(lockmod.os, "write", full)
    with pytest.raises(StoreError) as caught:
        InstanceLock(store).acquire()
    monkeypatch.setattr(lockmod.os, "write", real_write)
    message = str(caught.value)
    assert str(lockmod.lock_path(store)) in message, message
    assert "No space left on device" in message, message
    # nothing is left holding the lock: the next start (space freed) takes it
    again = InstanceLock(store).acquire()
    again.release()


def test_a_lock_file_removed_under_the_holder_is_taken_back_before_another_syncd_runs(
    tmp_path: Path,
) -> None:
    """`rm syncd.db.lock` while the service runs (an operator taking it for a stale one): the
    service's flock stayed on the removed file, and a `syncd sync` by hand made a new one,
    locked it, and ran beside the service on the same store. The holder's `check` (the
    service's main loop, each second) makes the path its own again; the next is refused."""
    store = tmp_path / "syncd.db"
    held = InstanceLock(store).acquire()
    try:
        lockmod.lock_path(store).unlink()
        assert held.check() is True
        with pytest.raises(LockHeldError):
            InstanceLock(store).acquire()
        assert lockmod.lock_path(store).read_text() == f"{os.getpid()}\n"
    finally:
        held.release()


def test_a_lock_file_another_syncd_took_after_its_removal_is_said_lost(tmp_path: Path) -> None:
    """Removed, and taken by another syncd before the holder looked: `check` says the lock
    is lost (False), and leaves the other's lock as it is."""
    store = tmp_path / "syncd.db"
    held = InstanceLock(store).acquire()
    lockmod.lock_path(store).unlink()
    other = InstanceLock(store).acquire()
    try:
        assert held.check() is False
        with pytest.raises(LockHeldError):
            InstanceLock(store).acquire()
    finally:
        held.release()
        other.release()


def test_the_service_takes_back_a_removed_lock_file_and_stops_when_another_took_it(
    tmp_path: Path,
) -> None:
    """The running service: its lock file removed, it makes it again within seconds (a
    `syncd sync` is refused); removed and taken by another first, it stops, exit 3 (systemd
    starts it again, and it waits the other out), rather than run beside it."""
    world = daemon_world(tmp_path, "http://127.0.0.1:9", "0 3 * * *", "0 4 * * *")
    store, path = world.folder / "syncd.db", lockmod.lock_path(world.folder / "syncd.db")
    notify = Notify(tmp_path / "notify.sock").read_on()
    proc = start(world, notify)
    try:
        assert notify.wait_for("READY=1", 20), logged(world)
        path.unlink()
        assert wait(lambda: path.exists() and path.read_text() == f"{proc.pid}\n", 5)
        with pytest.raises(LockHeldError):
            InstanceLock(store).acquire()
        path.unlink()
        with InstanceLock(store):  # another syncd, faster than the service's look
            assert proc.wait(timeout=10) == 3, logged(world)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "another syncd took the new one" in logged(world)


def test_a_stall_note_a_killed_service_left_is_not_shown_for_a_process_that_reused_its_pid(
    tmp_path: Path,
) -> None:
    """The service killed while stalled (systemd's SIGABRT) leaves its note; its pid then
    reused by another process (a pid wraps, a container's few pids): `read_note` took that
    process for the service, and `syncd status` said a job stalled in a service that was not
    running. A note whose file no process holds a flock on is nobody's."""
    store = tmp_path / "syncd.db"
    path = lockmod.lock_path(store)
    other = subprocess.Popen(["sleep", "30"])  # the pid's new owner
    try:
        path.write_text(f'{other.pid}\n{{"stalled": {{"job": "reconcile"}}}}\n')
        assert lockmod.read_note(store) is None
        fd = os.open(path, os.O_RDONLY)  # held (here by this process: the pid is the file's)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert lockmod.read_note(store) == (other.pid, {"stalled": {"job": "reconcile"}})
        finally:
            os.close(fd)
    finally:
        other.kill()
        other.wait()
