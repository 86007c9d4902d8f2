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


# A skip whose reason holds one of these is a suppression of its data, not a deferral: the
# diff never queues that data again, only a new change of the contact's trigger columns
# (`DiffStore.chunk`'s `spared`, `decide`'s `Facts.spared`; README *Suppression*)
SPARED = "within min_days_between_surveys"  # surveyed lately (`Differ._vendors`)
# another contact of the run has the same profile, launched for it (`Altcraft.unsendable`)
ONE_PROFILE = "not launched twice"
SPARING = (SPARED, ONE_PROFILE)
