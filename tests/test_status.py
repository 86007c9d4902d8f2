"""`syncd status` gives reasons, not only counts: open problems per vendor and reason with
example keys, and the last reconcile's skips per kind of reason, in the text and in
`--json` (against its schema)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import jsonschema
import pytest

from syncd.config import load
from syncd.status import REASON_WIDTH, collect, render
from tests.test_show import REJECTED, STOP_REASON, UNSUBSCRIBED, build


@pytest.fixture(scope="module")
def status(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = load(build(tmp_path_factory.mktemp("status")))
    data: dict[str, Any] = json.loads(json.dumps(collect(cfg, datetime.now(UTC))))
    schema = json.loads(files("syncd").joinpath("status.schema.json").read_text("utf-8"))
    jsonschema.validate(data, schema)
    return data


def test_problems_are_grouped_by_vendor_and_reason_with_a_few_keys(
    status: dict[str, Any],
) -> None:
    by_vendor = {g["vendor"]: g for g in status["problems"]}
    assert set(by_vendor) == {"altcraft", "signalvine"}, status["problems"]
    stopped = by_vendor["altcraft"]
    assert (stopped["status"], stopped["count"]) == ("failed", 5)
    assert STOP_REASON in stopped["reason"]
    assert stopped["keys"] == ["CRM-0000000", "CRM-0000001", "CRM-0000002"]  # the first three
    taken = by_vendor["signalvine"]
    assert (taken["status"], taken["count"], taken["keys"]) == ("failed", 1, [REJECTED])
    assert "is already used by participant" in taken["reason"]
    # the biggest group first
    assert [g["vendor"] for g in status["problems"]] == ["altcraft", "signalvine"]

    text = render(status)
    assert f"  signalvine: 1 failed — {taken['reason']} (keys: {REJECTED})\n" in text
    assert (
        f"  altcraft: 5 failed — {stopped['reason']} "
        "(keys: CRM-0000000, CRM-0000001, CRM-0000002, …)\n"
    ) in text


def test_the_last_reconciles_skips_are_counted_per_kind_of_reason_and_vendor(
    status: dict[str, Any],
) -> None:
    skipped = status["skipped"]
    assert skipped["run_id"] == status["quarantine"]["run_id"] == 3
    [group] = skipped["groups"]
    assert group["reason"] == "unsubscribed" and group["keys"] == [UNSUBSCRIBED]
    # triggers and (suppression.upserts) upserts alike: every vendor held it back
    assert group["vendors"] == dict.fromkeys(
        ("altcraft", "dropthought", "esputnik", "hellocustomer", "signalvine"), 1
    )
    assert group["count"] == 5 and group["example"].startswith("unsubscribed at esputnik (")
    text = render(status)
    assert "skipped in the last reconcile:\n  unsubscribed: 5 (altcraft 1, dropthought 1, " in text
    assert f"— e.g. {group['example']} (keys: {UNSUBSCRIBED})\n" in text


def test_a_long_vendor_reason_is_cut_to_one_line_in_the_text(status: dict[str, Any]) -> None:
    group = {**status["problems"][0], "reason": "refused:\n" + "x" * 400}
    [line] = [ln for ln in render({**status, "problems": [group]}).splitlines() if "refused" in ln]
    kept = "x" * (REASON_WIDTH - 1 - len("refused: "))
    assert line.startswith(f"  altcraft: 5 failed — refused: {kept}… (keys: CRM-0000000, ")
