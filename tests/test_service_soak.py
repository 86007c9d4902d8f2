"""`syncd run` left to run: what one job leaks, the service keeps for as long as it runs.

A service started once runs for months: a reconcile every night and a pull every few
minutes. A file descriptor or a thread left behind by each job (a store connection, an
HTTP session, a scheduler worker) is harmless in any one test and fatal in a year. Here
the service runs about forty jobs, a second apart, while the export changes, the config
is reloaded and the vendor fails calls, and it must hold as many descriptors and threads
at the end as once it had settled.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from syncd.sample import rows
from tests.test_daemon import Notify, daemon_world, logged, runs, sim, start, wait

__all__ = ["sim"]  # the fixture, imported to be used here


def held(pid: int) -> tuple[int, int]:
    """The process's open file descriptors and threads."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def test_the_service_holds_no_more_descriptors_or_threads_after_forty_jobs(
    tmp_path: Path, sim: tuple[object, object]
) -> None:
    app, server = sim
    world = daemon_world(tmp_path, server.url, "every 1s", "every 1s")  # type: ignore[attr-defined]
    notify = Notify(tmp_path / "notify.sock")
    proc = start(world, notify)
    rnd = random.Random(7)
    try:
        assert notify.wait_for("READY=1", 20), logged(world)
        assert wait(lambda: len(runs(world, "reconcile")) >= 2, 30), logged(world)
        settled = held(proc.pid)
        samples = [settled]
        deadline = time.monotonic() + 90
        while len(runs(world, "reconcile")) + len(runs(world, "pull")) < 40:
            assert time.monotonic() < deadline, logged(world)
            changed = list(rows(40 + rnd.randrange(5)))
            for row in rnd.sample(changed, 8):
                row[1] = f"{row[1]}{rnd.randrange(100)}"  # a first name edited in the CRM
            world.write(changed)
            if rnd.random() < 0.3:  # the vendor fails the next call, a read or a send
                app.faults.add("status", status=503)  # type: ignore[attr-defined]
            if rnd.random() < 0.1:
                proc.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            samples.append(held(proc.pid))
        assert wait(lambda: all(s != "running" for _t, s in runs(world, "reconcile")), 20)
        time.sleep(1.5)  # between two jobs: each job's own connection and workers are gone
        fds, threads = min(held(proc.pid), held(proc.pid))
        # one job may be under way at any sample: allow its own connection and workers
        assert fds <= settled[0] + 2, (settled, samples)
        assert threads <= settled[1] + 4, (settled, samples)
        assert max(f for f, _t in samples) <= settled[0] + 6, (settled, samples)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
