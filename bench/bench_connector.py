"""Benchmark a connector's own work per contact, no HTTP: run by hand, never by the tests.

    python bench/bench_connector.py                 # 3,000 contacts (an import), 20 rounds
    python bench/bench_connector.py --contacts 1000 --rounds 50

eSputnik's side of a first sync that is not the vendor's: building an import's body (each
contact shaped as `POST /api/v1/contacts` takes it, the whole encoded by orjson), and
reading a FINISHED session's `mapping` back into one result per contact
(`ESputnik._finished`, the dedupe values compared as `_key` has them). Each is timed over
`--rounds` rounds; min and median microseconds a contact are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from syncd.vendors.base import Contact, Job
from syncd.vendors.esputnik import ESputnik, _json


def timed(what: str, n: int, rounds: int, fn: Callable[[], object]) -> None:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / n * 1e6)
    print(f"{what}: min {min(times):.1f} / median {statistics.median(times):.1f} µs a contact")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    n = args.contacts
    contacts = [
        Contact(
            key=f"CRM-{i:07d}",
            fields={
                "email": f"mile.{i}@example.com",
                "externalCustomerId": f"CRM-{i:07d}",
                "firstName": "Émile",
                "lastName": "Dupont",
                "sms": f"+3247{i:07d}",
                "address.town": "Brussels",
            },
            metadata={"101": "Gold"},
        )
        for i in range(n)
    ]
    # eSputnik's answer as its simulator gives it under dedupe_on = "email", the default
    mapping = [{"dedupeValue": f"mile.{i}@example.com", "contactId": 1000 + i} for i in range(n)]
    connector = ESputnik.__new__(ESputnik)  # its options only: no config, no HTTP client
    connector.opts = {"dedupe_on": "email", "field_id": 0, "trust_mapping": True}
    job = Job("session", contacts, 0.01, 0.0, [])
    timed(
        "import body",
        n,
        args.rounds,
        lambda: _json({"contacts": [connector._contact(c) for c in contacts]}),
    )
    timed("FINISHED mapping read", n, args.rounds, lambda: connector._finished(job, mapping))


if __name__ == "__main__":
    main()
