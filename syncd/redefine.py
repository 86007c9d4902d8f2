"""What a changed digest definition does to what the store holds (`syncd.project`'s
`definition` and `DIGEST_VERSION`): a trigger vendor is re-baselined rather than
surveying everyone, a version-1 digest is converted to this version's, and both reach the
contacts absent from the export too, so that one coming back unchanged is sent nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import orjson

from syncd.plan import Plan
from syncd.project import Candidate, Projector, stored_row
from syncd.state.diffed import DiffStore

UNRECORDED = "no digest definition was recorded (a store from before syncd kept them)"


def redefinition(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between two digest definitions (`Projector.definition`), in a phrase."""
    labels = {
        "on_change": "[trigger] on_change",
        "fields": "[fields]",
        "metadata": "[metadata]",
        "types": "[types]",
        "phone_region": "[source] phone_region",
    }
    parts = []
    if old.get("digest") != new.get("digest"):
        parts.append(f"syncd's digest changed (version {old.get('digest')} → {new.get('digest')})")
    for name, label in labels.items():
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, dict | None) and isinstance(after, dict | None):
            before, after = before or {}, after or {}
            edits = [f"+ {k} = {v!r}" for k, v in after.items() if k not in before]
            edits += [f"- {k}" for k in before if k not in after]
            edits += [
                f"{k}: {before[k]!r} → {v!r}"
                for k, v in after.items()
                if k in before and before[k] != v
            ]
        elif isinstance(before, list | None) and isinstance(after, list | None):
            before, after = before or [], after or []
            edits = [f"+ {c!r}" for c in after if c not in before]
            edits += [f"- {c!r}" for c in before if c not in after]
            edits = edits or ["reordered"]  # the digest is positional
        else:
            edits = [f"{before!r} → {after!r}"]
        parts.append(f"{label} changed: " + ", ".join(edits))
    return "; ".join(parts)


def redefined(
    old: Mapping[str, Any] | None, new: Mapping[str, Any], has_state: Callable[[], bool]
) -> str | None:
    """Why a vendor's stored hashes were made another way than `new` makes them (`old` is
    the definition recorded with them), or None. A store from before definitions were
    recorded (`old` None, but the vendor acknowledged contacts: `has_state`) is checked
    once: its hashes were made by the digest of version 1, but perhaps under another
    mapping, and only the contacts' previous rows can tell (a trigger vendor's re-baseline
    compares them: `Projector.same_before`)."""
    if old is not None:
        if old.get("digest") == 1:  # its digests are converted as the diff meets them
            old = {**old, "digest": new.get("digest")}
        return redefinition(old, new) or None
    return UNRECORDED if has_state() else None


def same_data(proj: Projector, stored: Any, digest: int, data: str, row: list[str]) -> bool:
    """Whether a digest a delivery was recorded with is of this very data: this version's
    (`digest`), or one an older syncd stored as text (`Projector.legacy`), which no diff
    converts once the delivery is closed (a survey held back for min_days_between_surveys
    before the upgrade: only `vendor_state` and open deliveries are converted)."""
    if isinstance(stored, str):
        return stored == proj.legacy(data, row, stored)
    return bool(stored == digest)


class Redefinitions:
    """The digest definitions of one diff's vendors, against the store's."""

    def __init__(self, db: DiffStore, projectors: dict[str, Projector], plan: Plan) -> None:
        self.db, self.projectors, self.plan = db, projectors, plan

    def compare(self, baseline: set[str], may_rebaseline: bool) -> None:
        """Compare each vendor's digest definition with the one its stored hashes were made
        with (`project.redefined`), and record the current one. A trigger vendor whose
        definition changed is re-baselined, unless `may_rebaseline` is off."""
        stored = self.db.definitions()
        for name, proj in self.projectors.items():
            new = proj.definition()
            old = orjson.loads(stored[name]) if name in stored else None
            if old == new:
                continue
            vplan = self.plan.vendors[name]
            vplan.convert = old is None or old.get("digest") == 1
            if name not in baseline:  # else everyone is acknowledged anyway
                vplan.redefined = redefined(old, new, partial(self.db.has_state, name))
            vplan.rebaseline = bool(vplan.redefined and proj.trigger and may_rebaseline)
            self.db.define(name, orjson.dumps(new, option=orjson.OPT_SORT_KEYS).decode())

    def convert(
        self,
        name: str,
        proj: Projector,
        cand: Candidate,
        digest: int,
        data: str,
        acked: int | str | None,
        opened: tuple[int, str, int | str] | None,
    ) -> tuple[int | str | None, tuple[int, str, int | str] | None]:
        """A version-1 digest of this very data, acknowledged or in an open delivery, is
        this version's from now on (`acked`, `opened` as they then are)."""
        if isinstance(acked, str) and acked == proj.legacy(data, cand.row, acked):
            self.db.ack(name, cand.key, digest)
            self.plan.vendors[name].converted += 1
            acked = digest
        stored = opened[2] if opened else None
        if opened and isinstance(stored, str) and stored == proj.legacy(data, cand.row, stored):
            self.db.rehash(name, cand.key, digest)
            opened = (opened[0], opened[1], digest)
        return acked, opened

    def absent(self, header: list[str]) -> None:
        """The contacts not in this export, from their last row: version-1 digests are
        converted, and a re-baselined vendor's are re-baselined, so that one coming back
        unchanged is not sent anything for it."""
        for name, proj in self.projectors.items():
            vplan = self.plan.vendors[name]
            if not (vplan.rebaseline or vplan.convert):
                continue
            for key, stored, attributes in self.db.absent(name):
                row = stored_row(attributes, header)
                if (seen := proj.digested(key, row)) is None:
                    continue  # never sendable as it was: nothing to keep
                digest, data = seen
                legacy = vplan.convert and isinstance(stored, str)
                if legacy and proj.legacy(data, row, stored) == stored:
                    self.db.ack(name, key, digest)
                    self.db.rehash(name, key, digest)
                    vplan.converted += 1
                    continue
                if vplan.rebaseline and digest != stored:
                    self.db.ack(name, key, digest)
                    self.db.rehash(name, key, digest)
                    vplan.counts["rebaselined"] += 1

    def settle(self) -> None:
        """A store from before definitions were recorded whose hashes turned out to be this
        definition's: nothing to say."""
        for vplan in self.plan.vendors.values():
            if vplan.redefined == UNRECORDED and not vplan.counts["rebaselined"]:
                vplan.redefined = None
