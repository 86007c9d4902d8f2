"""The frozen types connectors and the HTTP client are built from: a connector's
`Option`s, and the `VendorConfig` (mapping, delivery policy) `syncd.config` reads for it.

A leaf but for the exception tree (`syncd.errors`, a leaf itself), so `syncd.vendors` and
`syncd.http` use it while `syncd.config` uses the connectors' facts to check a config, and
no import goes round.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncd.errors import OptionError


@dataclass(frozen=True)
class Option:
    """One vendor-specific config key, as a connector declares it."""

    type: type | tuple[type, ...] = str
    required: bool = False
    default: Any = None
    secret: bool = False
    # a secret the vendor issued (an API key, token or signing secret), not a password a
    # person chose: printable ASCII only (`secret_problem`)
    issued: bool = False
    choices: tuple[Any, ...] | None = None
    help: str = ""
    # (low, high) for a number; a float option without bounds is seconds, 0 to a day
    bounds: tuple[float, float] | None = None


@dataclass(frozen=True)
class DeliveryConfig:
    """Retry, timeout and breaker policy; every vendor table may override any key."""

    max_attempts: int = 5
    retries: int = 3
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    retry_after_cap: float = 120.0
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # the whole request, from the first byte written to the last byte read: a vendor that
    # drips its answer cannot hold a run for longer than this
    request_deadline: float = 120.0
    breaker_threshold: int = 5


@dataclass(frozen=True)
class TriggerRule:
    on_new: bool = True
    on_change: tuple[str, ...] = ()


@dataclass(frozen=True)
class MappingConfig:
    path: Path
    fields: Mapping[str, str]
    metadata: Mapping[str, str] = field(default_factory=dict)
    trigger: TriggerRule | None = None
    # a vendor-side type per mapped field or metadata name (`[types]`), for vendors whose
    # values have types (Dropthought: "DATE", "PHONE", ...); see `Connector.value_types`
    types: Mapping[str, str] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every CRM column this mapping reads, in a stable order."""
        cols = list(self.fields.values()) + list(self.metadata.values())
        if self.trigger:
            cols += self.trigger.on_change
        return tuple(dict.fromkeys(cols))


@dataclass(frozen=True)
class VendorConfig:
    name: str
    base_url: str
    mapping: MappingConfig
    options: Mapping[str, Any]
    delivery: DeliveryConfig
    batch_size: int | None = None
    secrets: tuple[str, ...] = ()
    # the pull streams this installation reads (a subset of the connector's `streams`)
    streams: tuple[str, ...] = ()


# what to call a character that has no Unicode name
_UNNAMED = {"Cc": "a control character", "Co": "a private-use character", "Cn": "unassigned"}


def secret_problem(vendor: str, key: str, value: str, opt: Option) -> OptionError | None:
    """What refuses the secret `value` of `opt` (the key `key` of `vendor`), or None: the
    one check of every connector's secrets, made once they are resolved.

    No secret holds a character that does not show (a zero-width or no-break space, a
    line break, a bidi or other control): it came with a copy-paste. A secret the vendor
    issued is printable ASCII too: one holding an en dash or an accent was pasted from a
    page that "prettified" it. Sent, it went into an HTTP header (a bare UnicodeEncodeError
    at every call outside latin-1, "Invalid header value" for a line break, else a 401),
    a body or a signature (a 401 or 403), at night, where `check` said "ok". The message
    names the code point and its place, never the secret."""
    at = next(
        (i for i, c in enumerate(value) if not c.isprintable() or (opt.issued and not c.isascii())),
        None,
    )
    if at is None:
        return None
    char = value[at]
    name = unicodedata.name(char, "") or _UNNAMED.get(unicodedata.category(char), "")
    what = (
        f"no {vendor} {key} holds it (they are printable ASCII)"
        if char.isprintable()
        else "it does not show, and no secret holds it"
    )
    return OptionError(
        key,
        f"holds U+{ord(char):04X} {name} at character {at + 1}: {what}; it came with a copy-paste",
        hint=f"retype it, or copy it again from {vendor} without what is around it",
    )


def zone_hint(name: str, example: str = "Europe/Brussels") -> str:
    """What to write instead of the unknown time zone `name`: the nearest IANA name, if
    one is near (`Europe/Brussel`, `europe/brussels`), and the form they take."""
    from difflib import get_close_matches
    from zoneinfo import available_timezones

    zones = {zone.casefold(): zone for zone in available_timezones()}
    near = get_close_matches(name.casefold(), sorted(zones), 1)
    return (f"did you mean {zones[near[0]]!r}? " if near else "") + (
        f'an IANA name such as "UTC" or "{example}"'
    )


def time_zone(name: str, key: str, example: str = "Europe/Brussels") -> ZoneInfo:
    """The IANA time zone `name`, the value of the config key `key`: the one check of every
    key that names a zone. An `OptionError` naming the key, with `example` of a zone, when
    there is none by that name (a typo, "", a path, a directory of zones such as "Europe",
    a name too long for a file name)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise OptionError(
            key, f"unknown time zone {name!r}", hint=zone_hint(name, example)
        ) from None
