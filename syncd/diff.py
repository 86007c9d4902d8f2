"""Export × store → per-vendor deltas, recorded as `pending` deliveries before anything is sent.

The wiring of parts that each have their own home:

- `syncd.fastpath`: which rows are byte-for-byte what the store last recorded (nothing
  else is done for those: most rows of a night);
- `syncd.project`: what each new or changed row is for each vendor (normalised,
  projected, digested), or why it cannot be sent to it;
- `syncd.decide`: what each vendor needs of it, given what the store holds;
- `syncd.state.diffed`: the store's side, read and written a chunk at a time;
- `syncd.redefine`: what a changed digest definition does to the stored digests;
- `syncd.plan`: what the diff found, for the pipeline and the CLI.

Everything is written inside one transaction; the caller commits it, or rolls it back for a
dry run or when the truncation guard refuses the export. A first sync (`pieces`) is the
exception: it commits every `PIECE` contacts, so the WAL holds one piece, not the whole
store, and what it committed is undone by the caller or by the next run if it does not
finish (`syncd.state.Store.undo_first_sync`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from threading import Event
from typing import Any

import numpy as np

from syncd import liveness
from syncd.config import Config
from syncd.crashpoints import crashpoint
from syncd.decide import SURVEYS, Act, Decision, Facts, decide
from syncd.errors import StopRequested
from syncd.fastpath import FirstLines, Known, fingerprint, scan
from syncd.plan import Plan, VendorPlan
from syncd.project import (
    Candidate,
    Projector,
    config_salt,
    prepare,
    renamed,
    salted,
    stored_row,
)
from syncd.redefine import Redefinitions, same_data
from syncd.source import Bad, Export
from syncd.state import Store, iso
from syncd.state.diffed import Chunk, DiffStore, Stored
from syncd.state.statuses import SPARED
from syncd.vendors.base import Connector

CHUNK = 2000  # candidates compared and written at a time (3 x CHUNK SQL parameters at most)
PIECE = 20_000  # contacts a first sync writes between commits (about 20-50 MB of WAL)
SAMPLES = 5
_NONE = object()  # no digest: equal to none


class Differ:
    """Runs one diff inside an open write transaction on `store`."""

    def __init__(
        self,
        cfg: Config,
        store: Store,
        connectors: dict[str, Connector],
        run_id: int,
        now: datetime,
        *,
        baseline: Iterable[str] = (),
        rebaseline: bool = True,
        pieces: bool = False,
        stop: Event | None = None,
    ) -> None:
        self.cfg, self.connectors, self.now = cfg, connectors, now
        # SIGTERM: the diff stops between blocks and is rolled back (a first sync undone),
        # instead of reading on for as long as a big first sync takes (~30 s a million rows)
        self.stop = stop
        self.baseline = set(baseline)
        self.may_rebaseline = rebaseline
        self.pieces = pieces  # a first sync may commit as it goes: its caller undoes that
        self.uncommitted = 0  # contacts written since the last commit of a first sync
        self.plan = Plan(run_id=run_id, export="")
        self.db = DiffStore(store, run_id, iso(now), "")
        self.projectors: dict[str, Projector] = {}
        self.triggers = [n for n, c in connectors.items() if c.kind == "trigger"]
        # keys of the rows quarantined for every vendor, with their first line (`_keep_held_back`)
        self.held_back: dict[str, int] = {}
        # what the key of a record cut inside its key's cell begins with (`Bad.starts`)
        self.held_starts: dict[str, int] = {}
        # decisions for a contact the store holds nothing of at a vendor (`_vendors`)
        self.fresh: dict[tuple[str, str | None], Decision] = {}

    def run(self, export: Export) -> Plan:
        plan = self.plan
        plan.export = self.db.export = str(export.path)
        self.header = export.header
        named, before = self.db.header()
        salted_with = salted(self.cfg, self.header, before)
        self.salt = config_salt(self.cfg, export, salted_with)
        for name, vcfg in self.cfg.vendors.items():
            connector = self.connectors[name]
            self.projectors[name] = Projector(
                vcfg, connector, export.header, self.cfg.source.phone_region
            )
            plan.vendors[name] = VendorPlan(name, connector.kind)
        self.redefinitions = Redefinitions(self.db, self.projectors, plan)
        self.redefinitions.compare(self.baseline, self.may_rebaseline)
        self.known = Known(self.db)
        plan.known = len(self.known)
        self.next_rowid = self.db.next_rowid()
        self.firsts = FirstLines(self.salt ^ self.plan.run_id)
        # known rows counted unchanged that a changed row of their contact before them
        # displaced (quarantined as its repeat): no longer unchanged
        self.displaced = 0
        with self.db.session():
            self.pieces = self.pieces and self.db.pieces()
            if renames := renamed(named, self.header):
                self.db.rename(renames)
            self._baseline_queued()
            with self.db.writing():
                self._compare(export)
            del self.firsts  # 12 bytes a new key: let go before the cache is rebuilt
            self._gone()
            self._baseline_unchanged()
            self.redefinitions.absent(self.header)
        self.redefinitions.settle()
        self.db.write_cache(*self.known.after())
        self.db.record_header(self.header, salted_with)
        if self.pieces:
            self.db.finished()
        return plan

    def _baseline_queued(self) -> None:
        """`--baseline`, before the rows: the fast path hides the unchanged ones, whose
        queued sends only this acknowledges, each contact as its stored row (the export's,
        under this header) is for the vendor. A row the diff meets is then compared with
        that, and its own acknowledgement (of newer data) is the one that stays."""
        for name in self.baseline:
            if acked := self.db.baseline_queued(name, self._digest_of(name)):
                self.plan.vendors[name].counts["baseline_queued"] = acked

    def _baseline_unchanged(self) -> None:
        """`--baseline`, after the rows: an unchanged row with nothing queued whose vendor
        acknowledged other data (its survey skipped, a send withdrawn) is acknowledged as
        the export holds it too; the diff acknowledged the rows it met already."""
        for name in self.baseline:
            if acked := self.db.baseline_unchanged(name, self._digest_of(name)):
                self.plan.vendors[name].counts["baseline_unchanged"] = acked

    def _digest_of(self, name: str) -> Callable[[str, str], int | None]:
        """A stored row's digest for the vendor (its key, `contacts.attributes`), under this
        header; None where the row cannot be sent to it."""
        proj = self.projectors[name]

        def now(key: str, attributes: str) -> int | None:
            seen = proj.digested(key, stored_row(attributes, self.header))
            return None if seen is None else seen[0]

        return now

    def _compare(self, export: Export) -> None:
        """Every row of the export against the known ones: unchanged rows marked seen, new
        and changed ones prepared and compared with the store a chunk at a time."""
        plan, unchanged, buffer = self.plan, 0, []
        for part in scan(export, self.known.fps, self.salt):
            if self.stop is not None and self.stop.is_set():
                raise StopRequested("stop requested during the diff: nothing of it was kept")
            liveness.beat()  # a block read: one transaction holds the whole diff, no commit
            plan.rows_read += part.records
            for item in part.bad:
                self._quarantine(item.line, item.key, None, item.reason, held=item.held)
                for start in item.starts:
                    self.held_starts.setdefault(start, item.line)
            hits, repeats = self.known.see(part.hits, part.lines)
            unchanged += hits
            for line, key, first in repeats:
                self._duplicate(line, key, first)
            cands = []
            for line, row, text in part.misses:
                cand = prepare(line, row, text, export, self.projectors, self.cfg.source)
                if isinstance(cand, Bad):
                    self._quarantine(cand.line, cand.key, None, cand.reason, held=cand.held)
                else:
                    cands.append(cand)
            firsts = self.firsts.first([c.key for c in cands], [c.line for c in cands])
            for cand, first in zip(cands, firsts.tolist(), strict=True):
                if first:
                    self._duplicate(cand.line, cand.key, first)
                    continue
                buffer.append(cand)
                if len(buffer) >= CHUNK:
                    self._flush(buffer)
                    buffer = []
        if buffer:
            self._flush(buffer)
        plan.unchanged = unchanged = unchanged - self.displaced
        for vplan in plan.vendors.values():
            vplan.counts["unchanged"] += unchanged

    def _quarantine(
        self,
        line: int | None,
        key: str | None,
        vendor: str | None,
        why: str,
        row: bool = True,
        held: Iterable[str] = (),
    ) -> None:
        """Record a quarantined row (for `vendor` only, or for all). `row=False`: the row was
        quarantined for another vendor already; `plan.quarantined` counts rows, not entries.
        `held`: the keys a known contact of the row may have (`Bad.held`), else `key`."""
        self.plan.quarantined += row
        if row and vendor is None:
            self._unusable(line, why)
        if vendor:
            self.plan.vendors[vendor].counts["quarantined"] += 1
        elif line:
            for each in held or ([key] if key else []):
                self.held_back.setdefault(each, line)
        self.db.quarantine(line, key, vendor, why)

    def _unusable(self, line: int | None, why: str) -> None:
        """A row quarantined for every vendor (the guard refuses an export of only such)."""
        self.plan.unusable += 1
        if self.plan.first_bad is None:
            self.plan.first_bad = f"line {line}: {why}"

    def _duplicate(self, line: int, key: str, first: int) -> None:
        why = f"duplicate key {key!r}: line {first} has it too (the first wins)"
        self._quarantine(line, key, None, why)

    # --- a chunk of new and changed rows -----------------------------------------------
    def _flush(self, chunk: list[Candidate]) -> None:
        keys = [c.key for c in chunk]
        held = self.db.chunk(keys, list(self.projectors))
        sup = self.cfg.suppression
        reach = {c.key: c.reach for c in chunk}
        suppressed = self.db.suppressions(sup.channels, reach) if sup.unsubscribed else {}
        days = sup.min_days_between_surveys
        since = iso(self.now - timedelta(days=days))
        surveyed = self.db.surveyed(keys, self.triggers, since) if days > 0 else {}
        deliveries: list[tuple[str, str, str, Any, str, str, str | None]] = []
        inserts, updates, reached = [], [], []
        for cand in chunk:
            old = held.stored.get(cand.key)
            first, replaces = self.known.claim(old.rhash, cand.line) if old else (0, -1)
            if first and replaces < 0:
                self._duplicate(cand.line, cand.key, first)
                continue
            if first:
                self._duplicate(first, cand.key, cand.line)
                self.displaced += 1
            last = surveyed.get(cand.key)
            when = last and (f"on {last[1]}" if last[1] else "(planned, not sent yet)")
            clean = self._vendors(
                cand, old, held, suppressed.get(cand.key), last and last[0], when, deliveries
            )
            # a row quarantined for a vendor is looked at again next run
            text = cand.text if clean else f"\x00requarantine\x00{cand.key}".encode()
            rhash = fingerprint(text, self.salt)
            email, phone = cand.reach
            if old is None:
                inserts.append((cand.key, cand.attrs, email, phone, rhash))
                continue
            updates.append((old.rowid, cand.attrs, rhash))
            if (email, phone) != (old.email, old.phone):  # else their index is left alone
                reached.append((old.rowid, email, phone))
            self.known.add(rhash, old.rowid, replaces)
        # new contacts get rowids in key order: each B-tree page is visited once, not once
        # per row, which is most of the cost of recording deltas into big tables
        inserts.sort()
        rows = []
        for rowid, new in enumerate(inserts, self.next_rowid):
            rows.append((rowid, *new))
            self.known.add(new[4], rowid)
        self.next_rowid += len(inserts)
        self.db.deliveries(deliveries)
        self.db.contacts(rows, updates, reached)
        self.uncommitted += len(chunk)
        if self.pieces and self.uncommitted >= PIECE:
            self.db.commit()
            self.uncommitted = 0
            crashpoint("diff_piece_committed")

    def _vendors(
        self,
        cand: Candidate,
        old: Stored | None,
        held: Chunk,
        suppressed: str | None,
        surveyor: str | None,
        when: str | None,
        deliveries: list[Any],
    ) -> bool:
        """Decide and record each vendor's delta for one row; False if it was quarantined
        for any. `surveyor` surveyed the contact lately (`when`), or does in this run."""
        clean, sup = True, self.cfg.suppression
        refused = [v for v in cand.views.values() if isinstance(v, str)]
        if refused and len(refused) == len(self.projectors):
            self._unusable(cand.line, refused[0])
        for name, proj in self.projectors.items():
            vplan, view = self.plan.vendors[name], cand.views[name]
            if isinstance(view, str):
                self._quarantine(cand.line, cand.key, name, view, row=clean)
                clean = False
                continue
            digest, data = view
            acked, opened = held.acked.get((name, cand.key)), held.open.get((name, cand.key))
            if isinstance(acked, str) or (opened and isinstance(opened[2], str)):
                acked, opened = self.redefinitions.convert(
                    name, proj, cand, digest, data, acked, opened
                )
            attributes = old.attributes if old else None
            spared = held.spared.get((name, cand.key), _NONE)
            # nothing stored of the contact at this vendor, no opt-out and no survey but one in
            # this run (every row of a first sync): the decision is the digest's to make no
            # more, the same for every such row (`decide` compares it with stored ones only)
            fresh = acked is None and opened is None and spared is _NONE and suppressed is None
            memo = (name, surveyor) if fresh and when in (None, "in this run") else None
            d = self.fresh.get(memo) if memo else None
            if d is None:
                d = decide(
                    Facts(
                        digest,
                        acked,
                        opened[1] if opened else None,
                        opened[2] if opened else None,
                        trigger=proj.trigger is not None,
                        on_new=proj.on_new,
                        baseline=name in self.baseline,
                        rebaseline=vplan.rebaseline
                        and proj.same_before(cand.row, attributes, self.header),
                        suppressed=suppressed,
                        suppress_upserts=sup.upserts,
                        too_soon=f"surveyed by {surveyor} {when}: {SPARED}"
                        f" = {sup.min_days_between_surveys}"
                        if surveyor and sup.min_days_between_surveys > 0
                        else None,
                        spared=same_data(proj, spared, digest, data, cand.row),
                    )
                )
                if memo:
                    self.fresh[memo] = d
            vplan.counts[d.count] += 1
            if d.act is Act.WITHDRAW and opened:
                self.db.withdraw(opened[0])
            elif d.act in (Act.ACK, Act.REBASELINE):
                self.db.ack(name, cand.key, digest)
                if d.act is Act.REBASELINE and opened:  # a real change still to send
                    self.db.rehash(name, cand.key, digest)
            elif d.act is Act.REPLACE and opened:
                self.db.replace(opened[0], str(d.kind), digest, data)
            elif d.act in (Act.RESEND, Act.SKIP, Act.SEND):
                status = "skipped" if d.act is Act.SKIP else "pending"
                deliveries.append((name, cand.key, d.kind, digest, data, status, d.reason))
                if d.act is Act.SEND and len(vplan.samples) < SAMPLES:
                    sample = proj.sample(
                        cand.key, str(d.kind), attributes, self.header, data, cand.row
                    )
                    vplan.samples.append(sample)
            if d.act in SURVEYS and proj.trigger is not None and surveyor is None:
                surveyor, when = name, "in this run"
        return clean

    def _keep_held_back(self) -> None:
        """A known contact whose row is quarantined is in the export: it keeps its last
        good row (and fingerprint) rather than look gone. Marked seen only now, after the
        whole export, so a good row of the same key later in the file is not a repeat."""
        fps, seen, lines = self.known.fps, self.known.seen, dict(self.held_back)
        held = self.db.live_fingerprints(list(lines))
        for start, line in self.held_starts.items():
            for key, rhash in self.db.live_fingerprints_starting(start).items():
                held[key] = rhash
                lines.setdefault(key, line)
        for key, rhash in held.items():
            i = int(np.searchsorted(fps, rhash))
            if i < len(fps) and fps[i] == rhash and not seen[i]:
                seen[i] = lines[key]

    def _gone(self) -> None:
        """Mark the known contacts not seen gone, by rowid (checked against the fingerprint)."""
        self._keep_held_back()
        gone = self.known.gone()
        self.plan.gone = len(gone)
        for vplan in self.plan.vendors.values():
            vplan.counts["gone"] = len(gone)
        rowids, rhashes = self.known.located(gone)
        if self.db.mark_gone(rowids, rhashes) < len(gone) and not self.known.renumbered:
            self.known.renumber()  # the rowids moved under the cache: the rest again
            rowids, rhashes = self.known.located(gone)
            self.db.mark_gone(rowids, rhashes)
        if gone.size:
            self.plan.withdrawn = self.db.withdraw_gone(rowids)
