"""The diff's look-up of fingerprints among the known ones."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from syncd.diff import _finder

FINGERPRINTS = st.integers(0, 2**63 - 1)


@given(
    known=st.lists(st.one_of(FINGERPRINTS, st.integers(-(2**63), -1), st.integers(0, 40))),
    wanted=st.lists(st.one_of(FINGERPRINTS, st.integers(0, 40))),
)
def test_every_fingerprint_is_found_where_it_is_and_no_other(
    known: list[int], wanted: list[int]
) -> None:
    # negative: a gone contact revived by hand; small ones crowd one bucket
    table = np.array(sorted(known), dtype=np.int64)
    hashes = np.array(wanted + known[:5], dtype=np.int64)
    hashes = hashes[hashes >= 0]  # what the scan looks up is never negative
    where, hit = _finder(table)(hashes)
    assert hit.tolist() == [h in known for h in hashes.tolist()]
    assert (table[where[hit]] == hashes[hit]).all()
