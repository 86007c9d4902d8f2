"""`syncd sandbox`: the five simulators on loopback, their ports and working vendor tables
printed, until SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import requests


def test_sandbox_serves_every_simulator_and_prints_their_tables() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd.cli", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving"):
                break
        text = "".join(lines)
        urls = dict(re.findall(r"^(\w+): (http://127\.0\.0\.1:\d+)", text, re.M))
        assert set(urls) == {"altcraft", "dropthought", "esputnik", "hellocustomer", "signalvine"}
        for name, url in urls.items():
            state = requests.get(f"{url}/_sandbox/state", timeout=5).json()
            assert state["vendor"] == name
            assert f'[vendors.{name}]\nbase_url = "{url}"' in text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
