"""What a diff found and decided: per vendor counts, samples and notices, and the guard
that refuses a truncated export, or one that would survey again most known contacts. Written by `syncd.diff`, read by the pipeline, the CLI
and `runs.counts`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# a trigger vendor surveying again fewer contacts than this is never refused (`_surge`)
SURGE_FLOOR = 100


@dataclass
class VendorPlan:
    name: str
    kind: str
    counts: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)
    # why the stored hashes were made another way (`redefinition`), and whether this run
    # re-baselines the vendor for it (a trigger vendor, unless --no-rebaseline)
    redefined: str | None = None
    rebaseline: bool = False
    # its stored digests may be of version 1 (`project.digest`): converted as met
    convert: bool = False
    converted: int = 0

    def notice(self, dry_run: bool) -> str | None:
        """The one line a digest definition change deserves, if any."""
        if self.redefined is None:
            if not self.converted:
                return None
            done = "would convert" if dry_run else "converted"
            return f"{self.name}: {done} {self.converted} stored digests to version 2; none re-sent"
        if self.rebaseline:
            n = self.counts["rebaselined"]
            done = "would re-baseline" if dry_run else "re-baselined"
            return (
                f"{self.name}: {done} {n} contacts, surveying none: {self.redefined} "
                "(to survey them instead, apply the change with `syncd sync --no-rebaseline`)"
            )
        n = self.counts["changed"]
        sent = "surveyed" if self.kind == "trigger" else "re-sent"
        return (
            f"{self.name}: {self.redefined}: {n} contacts {'will be' if dry_run else 'are'} {sent}"
        )


@dataclass
class Plan:
    run_id: int
    export: str
    rows_read: int = 0
    quarantined: int = 0  # rows quarantined for any vendor
    unusable: int = 0  # rows quarantined for every vendor: sendable to none
    known: int = 0
    unchanged: int = 0
    gone: int = 0
    withdrawn: int = 0  # pending deliveries of the contacts gone, superseded
    refused: str | None = None
    first_bad: str | None = None  # the first row quarantined for every vendor, and why
    vendors: dict[str, VendorPlan] = field(default_factory=dict)

    def counts(self) -> dict[str, Any]:
        return {name: dict(v.counts) for name, v in self.vendors.items()}

    def notices(self, dry_run: bool = False) -> list[str]:
        return [n for v in self.vendors.values() if (n := v.notice(dry_run))]

    def all_quarantined(self) -> bool:
        """Every row read is quarantined for every vendor: nothing was lost, and --force
        would not help. (A row quarantined for some vendors only is still sent to the
        others: an export of such rows is no export to refuse.)"""
        return self.rows_read > 0 and self.rows_read - self.unusable <= 0

    def guard(self, max_drop: float, max_resurvey: float, force: bool) -> tuple[str, str] | None:
        """Why this export must not be applied (truncated, empty, or surveying again most of
        the known contacts), and what to do about it; or None."""
        lost = "if the export really lost these contacts, run `syncd sync --force`"
        if self.rows_read == 0:
            reason = f"the export {self.export} has no usable rows"
            hint = (
                lost
                if self.known
                else "the CRM's export wrote its header and no contact: re-run it"
            )
        elif self.all_quarantined():
            rows = (
                "the one row" if self.rows_read == 1 else f"every one of the {self.rows_read} rows"
            )
            reason = f"{rows} of {self.export} is quarantined ({self.first_bad}): fix the export"
            hint = "re-export the file; see the reason above"
        elif self.known and self.gone / self.known > max_drop:
            reason = (
                f"{self.gone} of {self.known} known contacts ({self.gone / self.known:.0%}) are "
                f"missing from {self.export}, more than max_drop = {max_drop:.0%}"
            )
            hint = lost
        elif surge := self._surge(max_resurvey):
            reason, hint = surge
        else:
            return None
        if force:
            return None
        self.refused = reason
        return reason, hint

    def _surge(self, max_resurvey: float) -> tuple[str, str] | None:
        """A trigger vendor about to survey again more than `max_resurvey` of the known
        contacts: more likely the CRM changed how it writes a watched column (a date's
        format, a time zone) than that many contacts changed since the last export. Not
        when the operator asked for it (`--no-rebaseline` applying a new `on_change`), nor
        for fewer than `SURGE_FLOOR` contacts (a pilot of a few dozen: the operator sees it)."""
        for v in self.vendors.values() if max_resurvey < 1 else ():  # 1: never refused
            n = v.counts["changed"]
            if v.kind != "trigger" or n < SURGE_FLOOR or n <= max_resurvey * self.known:
                continue
            if v.redefined is not None and not v.rebaseline:
                continue
            example = next(
                (
                    f" (contact {s['key']}: {name.removesuffix(' (on_change)')} {was!r} → {now!r})"
                    for s in v.samples
                    for name, (was, now) in s["changes"].items()
                    if name.endswith(" (on_change)")
                ),
                "",
            )
            return (
                f"{v.name} would survey {n} of {self.known} known contacts again "
                f"({n / max(self.known, n):.0%}), more than [suppression] max_resurvey = "
                f"{max_resurvey:.0%}: their [trigger] on_change columns changed in {self.export}"
                + example,
                "`syncd sync --dry-run --force` shows more, sending nothing; if the CRM only "
                "writes those columns "
                f"another way now, record the export as surveyed with `syncd sync --baseline "
                f"--vendor {v.name}`; if those contacts really changed, run `syncd sync --force`",
            )
        return None
