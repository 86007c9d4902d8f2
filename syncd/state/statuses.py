"""What became of a delivery: the `deliveries.status` column's values.

A leaf module (it imports nothing of syncd), so that connectors, which return a Status per
contact, can name it without reaching for the store's queries.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What became of one contact's delivery (the `deliveries.status` column)."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    DEAD = "dead"
    SKIPPED = "skipped"
    SUPERSEDED = "superseded"


# still open: may yet be sent (a SQL tuple of plain strings: f"status IN {OPEN_STATUSES!r}")
OPEN_STATUSES: tuple[str, ...] = tuple(
    s.value for s in (Status.PENDING, Status.IN_FLIGHT, Status.FAILED, Status.UNKNOWN, Status.DEAD)
)
