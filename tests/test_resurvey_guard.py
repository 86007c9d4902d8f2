"""The guard against a mass re-survey: a CRM that starts writing a watched column another
way (a date's format) changes it in every row, and a trigger vendor would survey everyone
again. More than `[suppression] max_resurvey` of the known contacts at one vendor is
refused (exit 3) like a truncated export, until the operator records the export or forces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.demo import SANDBOX_TABLES, mapping_text
from syncd.errors import GuardError
from syncd.sandbox.altcraft import AltcraftSim
from syncd.sandbox.base import Server
from tests.helpers import World

N = 200


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, AltcraftSim]]:
    sim = AltcraftSim()
    with Server(sim) as server:
        table = f'base_url = "{server.url}"\n{SANDBOX_TABLES["altcraft"]}'
        yield World(tmp_path, {"altcraft": (table, mapping_text("altcraft"))}), sim


def export(w: World, closed: list[str], extra: str = "") -> None:
    rows = [f"{i},c{i}@example.com,support,Gold,{d}\r\n" for i, d in enumerate(closed)]
    w.export.write_text("Record ID,Email,Ticket Type,Segment,Closed Date\r\n" + "".join(rows))
    if extra:
        config = w.folder / "syncd.toml"
        config.write_text(config.read_text("utf-8") + extra, "utf-8")


def launched(sim: AltcraftSim) -> int:
    return sum(sim.triggers().values())


def test_a_watched_date_written_another_way_surveys_nobody_until_the_operator_says(
    world: tuple[World, AltcraftSim],
) -> None:
    w, sim = world
    export(w, [f"2026-11-{1 + i % 28:02d}" for i in range(N)])
    assert w.sync().exit_code == 0
    assert launched(sim) == N  # on_new: every contact new to Altcraft, once
    # the CRM's job now writes the same dates day first
    export(w, [f"{1 + i % 28:02d}/11/2026" for i in range(N)])
    with pytest.raises(GuardError) as refused:
        w.sync()
    assert (
        f"altcraft would survey {N} of {N} known contacts again (100%), more than "
        "[suppression] max_resurvey = 50%: their [trigger] on_change columns changed"
    ) in str(refused.value)
    assert "(contact 0: Closed Date '2026-11-01' → '01/11/2026')" in str(refused.value)
    assert "syncd sync --baseline --vendor altcraft" in refused.value.hint
    # the dry run shows why: each sample names the watched column's change
    shown = w.sync(dry_run=True, force=True).plan
    assert shown is not None
    assert shown.vendors["altcraft"].samples[1]["changes"] == {
        "Closed Date (on_change)": ["2026-11-02", "02/11/2026"]
    }
    assert launched(sim) == N
    assert w.deliveries()[N:] == []  # nothing recorded either: the diff was rolled back
    # the operator records the export as surveyed: the next run surveys nobody
    assert w.sync(baseline=("altcraft",)).exit_code == 0
    assert w.sync().exit_code == 0
    assert launched(sim) == N


def test_many_contacts_really_changed_go_with_force_or_a_higher_share(
    world: tuple[World, AltcraftSim],
) -> None:
    w, sim = world
    export(w, ["2026-11-01"] * N)
    assert w.sync().exit_code == 0
    # 60% of the tickets closed again: refused, then forced
    export(w, ["2026-11-30"] * (N * 6 // 10) + ["2026-11-01"] * (N * 4 // 10))
    with pytest.raises(GuardError, match="survey 120 of 200 known contacts again"):
        w.sync()
    assert w.sync(force=True).exit_code == 0
    assert launched(sim) == N + 120
    # 40%: under the share, sent as ever; with max_resurvey = 1 even all of them go
    export(w, ["2026-12-01"] * 80 + ["2026-11-30"] * 40 + ["2026-11-01"] * 80)
    assert w.sync().exit_code == 0
    assert launched(sim) == N + 120 + 80
    export(w, ["2026-12-02"] * N, extra="[suppression]\nmax_resurvey = 1\n")
    assert w.sync().exit_code == 0
    assert launched(sim) == N + 120 + 80 + N


def test_fewer_than_a_hundred_contacts_surveyed_again_are_never_refused(
    world: tuple[World, AltcraftSim],
) -> None:
    w, sim = world
    export(w, ["2026-11-01"] * 99)
    assert w.sync().exit_code == 0
    export(w, ["01/11/2026"] * 99)
    assert w.sync().exit_code == 0
    assert launched(sim) == 2 * 99
