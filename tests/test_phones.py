"""The phone fast path gives what `phonenumbers` gives, for every region it serves."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from syncd.project import _trunk, normalise_phone, parse_phone

REGIONS = sorted(r for r in phonenumbers.SUPPORTED_REGIONS if _trunk(r))


def test_the_fast_path_serves_the_common_european_regions() -> None:
    assert {"BE", "FR", "DE", "NL", "GB"} & set(REGIONS) >= {"BE", "FR", "DE", "NL"}


@pytest.mark.parametrize("region", REGIONS)
def test_national_numbers_as_the_parser_reads_them(region: str) -> None:
    rng = random.Random(region)
    prefix = _trunk(region)[1]  # type: ignore[index]
    values = [
        phonenumbers.format_number(example, PhoneNumberFormat.NATIONAL)
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.VOIP)
        if (example := phonenumbers.example_number_for_type(region, kind))
    ]
    values += [  # not 00…: international shapes are folded on purpose, without the parser
        prefix + rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(n))
        for n in (rng.randint(0, 12) for _ in range(60))
    ]
    for value in values:
        assert normalise_phone.__wrapped__(value, region) == parse_phone(value, region), value
