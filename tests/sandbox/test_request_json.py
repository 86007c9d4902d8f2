"""The simulators read request bodies with orjson where it reads them as the json module
does, and with the json module otherwise: the same body is accepted, refused and read
alike either way (the simulator must stay as strict as it was, only faster)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.sandbox.base import _JSON

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # of any size: orjson reads one of 19 digits or more as a float
    | st.floats()  # NaN and infinities too: json writes them, orjson refuses them
    | st.text(),  # lone surrogates too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def read(text: str) -> tuple[str, Any]:
    """What a parser made of the text: the value (as its repr, so 1 and 1.0 differ, and
    NaN equals NaN), or that it refused it."""
    try:
        return "ok", repr(_JSON.loads(text.encode("utf-8", "surrogatepass")))
    except ValueError:
        return "refused", None


def expected(text: str) -> tuple[str, Any]:
    try:
        return "ok", repr(json.loads(text.encode("utf-8", "surrogatepass")))
    except ValueError:
        return "refused", None


@settings(max_examples=300, deadline=None)
@given(value=values, cut=st.integers(min_value=0, max_value=3))
def test_a_body_is_read_as_the_json_module_reads_it(value: Any, cut: int) -> None:
    text = json.dumps(value, ensure_ascii=bool(cut % 2))
    if cut == 3:
        text = text[: len(text) // 2]  # a cut body: refused by both
    assert read(text) == expected(text)
