"""What a vendor needs of one new or changed row: a pure function of the facts.

`decide` is the whole rule book of the diff, for one row and one vendor, given what the
vendor acknowledged (`acked`), any open delivery of the contact, the suppression facts
and the vendor's kind. It reads nothing and writes nothing: `syncd.diff` gathers the
facts from the store and records what it returns. tests/test_decide.py holds every
action to a row of its table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Act(StrEnum):
    NOTHING = "nothing"  # the vendor has this data
    WITHDRAW = "withdraw"  # ... and a pending survey is no longer wanted: superseded
    RESEND = "resend"  # ... but other data is in flight to it: queue this data after it
    ACK = "ack"  # recorded as acknowledged without sending (baseline, on_new = false)
    REBASELINE = "rebaseline"  # only the digest's definition changed: acknowledged as is
    ALREADY = "already"  # an open delivery carries this very data
    SKIP = "skip"  # recorded as skipped, with the reason (unsubscribed, surveyed lately)
    REPLACE = "replace"  # the open delivery not acknowledged is given this data instead
    SEND = "send"  # a new pending delivery


# the acts that make a trigger vendor survey the contact in this run
SURVEYS = (Act.REPLACE, Act.SEND)
# open statuses whose delivery can take newer data: it has not reached the vendor
REPLACEABLE = ("pending", "failed", "dead")


@dataclass(frozen=True)
class Facts:
    """Everything `decide` looks at, for one contact and one vendor."""

    digest: object  # what must differ for the vendor to be sent the contact again
    acked: object | None  # the digest the vendor acknowledged, None if never
    open_status: str | None = None  # the newest open delivery's status, if any
    open_digest: object | None = None  # ... and its digest
    trigger: bool = False  # a trigger vendor (a send is a survey), else upsert
    on_new: bool = True  # a trigger vendor surveys contacts new to it
    baseline: bool = False  # `syncd sync --baseline`: the vendor has everyone already
    rebaseline: bool = False  # the definition changed and the watched columns did not
    suppressed: str | None = None  # why an opt-out stops it (unsubscribed at a vendor)
    suppress_upserts: bool = False  # `[suppression] upserts`: opt-outs stop upserts too
    too_soon: str | None = None  # why a survey now would come too soon after another
    # a trigger vendor's newest delivery of the contact is a skip of this very data for
    # min_days, or for its profile launched for another contact in that run (Altcraft): a
    # suppression, not a deferral (sent again only when the watched columns change)
    spared: bool = False


@dataclass(frozen=True)
class Decision:
    act: Act
    count: str  # the plan count it adds one to
    kind: str | None = None  # the delivery's kind: new or changed
    reason: str | None = None  # a skip's reason


def decide(f: Facts) -> Decision:
    """The action for one contact at one vendor (the table in tests/test_decide.py)."""
    if f.acked == f.digest:
        if f.trigger:  # a survey still pending for it is no longer wanted
            return Decision(
                Act.WITHDRAW if f.open_status == "pending" else Act.NOTHING, "unchanged"
            )
        if f.open_status is None or f.open_digest == f.digest or f.open_status == "unknown":
            return Decision(Act.NOTHING, "unchanged")
        # the export went back to what the vendor acknowledged while a delivery of other
        # data is open: that one may have reached the vendor already (a pending one too: a
        # crash or a lost answer after the vendor acted leaves it pending), so the
        # acknowledged data goes again, after it or instead of it
        if f.open_status == "in_flight":
            return Decision(Act.RESEND, "unchanged", "changed")
        return Decision(Act.REPLACE, "unchanged", "changed")
    kind = "new" if f.acked is None else "changed"
    if f.baseline:
        return Decision(Act.ACK, "baseline", kind)
    if f.trigger and kind == "new" and not f.on_new:
        return Decision(Act.ACK, "not_triggered", kind)
    if kind == "changed" and f.rebaseline:
        return Decision(Act.REBASELINE, "rebaselined", kind)
    if f.open_status is not None and f.open_digest == f.digest:
        return Decision(Act.ALREADY, "already_" + f.open_status, kind)
    if f.trigger and f.spared:  # looked at again (another column changed, it came back)
        return Decision(Act.NOTHING, "unchanged")
    if f.suppressed and (f.trigger or f.suppress_upserts):
        return Decision(Act.SKIP, "skipped", kind, f.suppressed)
    if f.trigger and f.too_soon:
        return Decision(Act.SKIP, "skipped", kind, f.too_soon)
    if f.open_status in REPLACEABLE:
        return Decision(Act.REPLACE, kind, kind)
    return Decision(Act.SEND, kind, kind)
