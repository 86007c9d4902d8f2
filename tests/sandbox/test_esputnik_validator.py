"""The eSputnik simulator checks an import body with the schema compiled to Python
(fastjsonschema) before jsonschema walks it: the two must give the same verdict on any
body, valid or mutated anywhere, so the faster check never lets through what the vendor's
OpenAPI document refuses."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator

from syncd.sandbox.esputnik import BULK_UPDATE, SPEC

WALK = Draft4Validator(
    {"$ref": "#/components/schemas/ContactsBulkUpdate", "components": SPEC["components"]}
)
VALID: dict[str, Any] = {
    "dedupeOn": "email",
    "contactFields": ["firstName", "lastName", "email", "sms"],
    "contacts": [
        {
            "firstName": "Anne",
            "lastName": "Dupont",
            "channels": [
                {"type": "email", "value": "anne@example.be"},
                {"type": "sms", "value": "+32470123456"},
            ],
            "externalCustomerId": "CRM-1",
            "fields": [{"id": 101, "value": "gold"}],
        }
    ],
}
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=5,
)


def paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON value: dict keys and list indexes, the root included."""
    found = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*at, i))
    return found


PLACES = paths(VALID)[1:]


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(
        st.tuples(st.sampled_from(PLACES), st.sampled_from(["set", "drop"]), VALUES), max_size=3
    )
)
def test_the_compiled_check_and_jsonschema_agree_on_any_body(
    changes: list[tuple[tuple[Any, ...], str, Any]],
) -> None:
    body = copy.deepcopy(VALID)
    for place, how, value in changes:
        parent: Any = body
        try:
            for step in place[:-1]:
                parent = parent[step]
            if how == "drop" and isinstance(parent, dict):
                parent.pop(place[-1], None)
            else:
                parent[place[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier change took this place away
    walked = next(iter(WALK.iter_errors(body)), None)
    assert (BULK_UPDATE(body) is None) == (walked is None), (body, walked)


def test_a_valid_body_passes_and_a_refusal_is_worded_by_jsonschema() -> None:
    assert BULK_UPDATE(VALID) is None
    bad = copy.deepcopy(VALID)
    bad["contacts"][0]["channels"][0]["type"] = "fax"
    refused = BULK_UPDATE(bad)
    assert refused is not None
    assert refused.startswith("'fax' is not one of")
    assert refused.endswith("(at $.contacts[0].channels[0].type)")
