"""The service's instance lock and schedule under an adversarial environment (adv-service)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from syncd import lock as lockmod
from syncd.errors import StoreError
from syncd.lock import InstanceLock


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
